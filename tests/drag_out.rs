//! Dragging a clip out of the studio on X11: Foley's XDND source against a drop target written
//! here, on a private Xvfb server, with the user's pointer played through XTest.
//!
//! Needs the `Xvfb` binary (`.ci/run` installs it); without it the tests say so and pass.
#![cfg(feature = "studio")]
#![cfg(all(unix, not(target_os = "macos")))]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use foley::gui::drag_out::DragOutcome;
use foley::gui::drag_out::x11::drag_file;
use x11rb::connection::Connection;
use x11rb::protocol::Event;
use x11rb::protocol::xproto::{
    Atom, AtomEnum, ClientMessageEvent, ConnectionExt as _, CreateWindowAux, EventMask, PropMode,
    WindowClass,
};
use x11rb::protocol::xtest::ConnectionExt as _;
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;

struct Xvfb {
    server: Child,
    display: String,
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        // SIGTERM, so that the server removes its socket and lock file (SIGKILL leaves them).
        let terminated = Command::new("kill")
            .arg(self.server.id().to_string())
            .status()
            .is_ok_and(|status| status.success());
        if !terminated {
            self.server.kill().ok();
        }
        self.server.wait().ok();
    }
}

/// A fresh X server, or `None` where Xvfb is not installed. The server picks a free display
/// itself and names it on stdout once it accepts connections (`-displayfd`): guessing a number
/// and waiting for its socket file raced with stale sockets of servers that died earlier.
fn xvfb() -> Option<Xvfb> {
    let server = Command::new("Xvfb")
        .args([
            "-displayfd",
            "1",
            "-screen",
            "0",
            "640x480x24",
            "-nolisten",
            "tcp",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut server) = server else {
        eprintln!("skipped: Xvfb is not installed (apt-get install xvfb)");
        return None;
    };
    let stdout = server.stdout.take().expect("piped stdout");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).ok();
        sender.send(line).ok();
    });
    let line = receiver
        .recv_timeout(Duration::from_secs(10))
        .expect("Xvfb did not start within 10 s");
    let number: u32 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("Xvfb named no display: {line:?}"));
    Some(Xvfb {
        server,
        display: format!(":{number}"),
    })
}

fn atom(conn: &RustConnection, name: &str) -> Atom {
    conn.intern_atom(false, name.as_bytes())
        .unwrap()
        .reply()
        .unwrap()
        .atom
}

/// The user: pointer moves and button 1 through XTest.
fn pointer(conn: &RustConnection, root: u32, kind: u8, x: i16, y: i16) {
    // 6 = MotionNotify, 4 = ButtonPress, 5 = ButtonRelease
    let detail = if kind == 6 { 0 } else { 1 };
    conn.xtest_fake_input(kind, detail, 0, root, x, y, 0)
        .unwrap();
    conn.flush().unwrap();
}

/// A 200×200 XDND-aware window at (100, 100) that accepts text/uri-list.
fn drop_target(conn: &RustConnection, root: u32) -> u32 {
    let window = conn.generate_id().unwrap();
    conn.create_window(
        0,
        window,
        root,
        100,
        100,
        200,
        200,
        0,
        WindowClass::INPUT_OUTPUT,
        0,
        &CreateWindowAux::new(),
    )
    .unwrap();
    let aware = atom(conn, "XdndAware");
    conn.change_property32(PropMode::REPLACE, window, aware, AtomEnum::ATOM, &[5])
        .unwrap();
    conn.map_window(window).unwrap();
    conn.sync().unwrap();
    window
}

fn wav(dir: &Path) -> PathBuf {
    let path = dir.join("glass shatter #1.wav");
    std::fs::write(&path, b"RIFF").unwrap();
    path
}

#[test]
fn a_drop_target_receives_the_file_as_a_uri() {
    let Some(server) = xvfb() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = wav(dir.path());
    let (conn, screen) = x11rb::connect(Some(&server.display)).unwrap();
    let root = conn.setup().roots[screen].root;
    let target = drop_target(&conn, root);
    let names = [
        "XdndEnter",
        "XdndPosition",
        "XdndStatus",
        "XdndDrop",
        "XdndFinished",
        "XdndSelection",
        "XdndActionCopy",
        "text/uri-list",
        "FOLEY_TEST_DROP",
    ];
    let [
        enter,
        position,
        status,
        drop,
        finished,
        selection,
        copy,
        uri_list,
        property,
    ] = names.map(|name| atom(&conn, name));

    // The user presses the button outside the target and drags into it.
    pointer(&conn, root, 6, 20, 20);
    pointer(&conn, root, 4, 20, 20);
    let display = server.display.clone();
    let dragged = file.clone();
    let source = std::thread::spawn(move || drag_file(Some(&display), &dragged, None));
    std::thread::sleep(Duration::from_millis(100));
    pointer(&conn, root, 6, 150, 160);

    let mut entered = false;
    let mut released = false;
    let mut uri = None;
    let deadline = Instant::now() + Duration::from_secs(15);
    while uri.is_none() {
        assert!(Instant::now() < deadline, "the drag did not reach the drop");
        let Some(event) = conn.poll_for_event().unwrap() else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let Event::ClientMessage(message) = event else {
            continue;
        };
        let data = message.data.as_data32();
        let from = data[0];
        if message.type_ == enter {
            assert_eq!(data[1] >> 24, 5, "protocol version");
            assert!(data[2..].contains(&uri_list), "offers text/uri-list");
            entered = true;
        } else if message.type_ == position {
            assert!(entered, "position before enter");
            assert_eq!((data[2] >> 16, data[2] & 0xffff), (150, 160));
            assert_eq!(data[4], copy, "asks to copy");
            let accept = [target, 1, 0, 0, copy];
            let reply = ClientMessageEvent::new(32, from, status, accept);
            conn.send_event(false, from, EventMask::NO_EVENT, reply)
                .unwrap();
            conn.flush().unwrap();
            if !released {
                pointer(&conn, root, 5, 150, 160);
                released = true;
            }
        } else if message.type_ == drop {
            conn.convert_selection(target, selection, uri_list, property, data[2])
                .unwrap();
            conn.flush().unwrap();
            // Remember who to tell when the file is read.
            let finish = [target, 1, copy, 0, 0];
            let done = ClientMessageEvent::new(32, from, finished, finish);
            uri = Some((from, done));
        }
    }
    // Read the selection the drop asked for, then finish.
    let (source_window, done) = uri.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        assert!(Instant::now() < deadline, "no SelectionNotify");
        match conn.poll_for_event().unwrap() {
            Some(Event::SelectionNotify(notify)) => {
                assert_eq!(notify.property, property, "the source served the URI list");
                let value = conn
                    .get_property(true, target, property, AtomEnum::ANY, 0, 4096)
                    .unwrap()
                    .reply()
                    .unwrap();
                break String::from_utf8(value.value).unwrap();
            }
            Some(_) => {}
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    conn.send_event(false, source_window, EventMask::NO_EVENT, done)
        .unwrap();
    conn.flush().unwrap();

    let outcome = source.join().unwrap().expect("the drag succeeds");
    assert_eq!(outcome, DragOutcome::Dropped);
    let expected = format!(
        "file://{}\r\n",
        file.display()
            .to_string()
            .replace(' ', "%20")
            .replace('#', "%23")
    );
    assert_eq!(text, expected);
}

#[test]
fn releasing_over_nothing_drops_nothing() {
    let Some(server) = xvfb() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = wav(dir.path());
    let (conn, screen) = x11rb::connect(Some(&server.display)).unwrap();
    let root = conn.setup().roots[screen].root;
    pointer(&conn, root, 6, 20, 20);
    pointer(&conn, root, 4, 20, 20);
    let display = server.display.clone();
    let source = std::thread::spawn(move || drag_file(Some(&display), &file, None));
    std::thread::sleep(Duration::from_millis(100));
    pointer(&conn, root, 6, 400, 300);
    pointer(&conn, root, 5, 400, 300);
    let outcome = source.join().unwrap().expect("the drag ends cleanly");
    assert_eq!(outcome, DragOutcome::NoTarget);
}
