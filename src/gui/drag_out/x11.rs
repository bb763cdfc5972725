//! An XDND (version 5) drag source that offers one file as `text/uri-list`.
//!
//! winit can receive drops but not start drags, so this runs its own X connection. The pointer
//! button that began the drag in the studio is still held, so the implicit grab stays with the
//! studio window and this side cannot grab: it follows the pointer by polling instead, and ends
//! the drag when the button comes up. Spec: <https://freedesktop.org/wiki/Specifications/XDND/>.

use std::path::Path;
use std::time::{Duration, Instant};

use x11rb::connection::Connection;
use x11rb::protocol::Event;
use x11rb::protocol::xproto::{
    Atom, AtomEnum, ClientMessageEvent, ConnectionExt as _, CreateWindowAux, EventMask, KeyButMask,
    PropMode, SELECTION_NOTIFY_EVENT, SelectionNotifyEvent, SelectionRequestEvent, Window,
    WindowClass,
};
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;

use super::{DragError, DragOutcome};

/// Protocol version spoken (the current one).
const VERSION: u32 = 5;
/// How often the pointer is sampled while the button is held.
const POLL: Duration = Duration::from_millis(8);
/// How long a target may take to fetch the file and finish after the drop.
const FINISH_TIMEOUT: Duration = Duration::from_secs(10);

struct Atoms {
    aware: Atom,
    selection: Atom,
    enter: Atom,
    position: Atom,
    status: Atom,
    leave: Atom,
    drop: Atom,
    finished: Atom,
    action_copy: Atom,
    uri_list: Atom,
    targets: Atom,
}

impl Atoms {
    fn intern(conn: &RustConnection) -> Result<Self, DragError> {
        let atom = |name: &str| -> Result<Atom, DragError> {
            Ok(conn.intern_atom(false, name.as_bytes())?.reply()?.atom)
        };
        Ok(Self {
            aware: atom("XdndAware")?,
            selection: atom("XdndSelection")?,
            enter: atom("XdndEnter")?,
            position: atom("XdndPosition")?,
            status: atom("XdndStatus")?,
            leave: atom("XdndLeave")?,
            drop: atom("XdndDrop")?,
            finished: atom("XdndFinished")?,
            action_copy: atom("XdndActionCopy")?,
            uri_list: atom("text/uri-list")?,
            targets: atom("TARGETS")?,
        })
    }
}

/// The window under the pointer that takes drops, with the protocol version it speaks.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Target {
    window: Window,
    version: u32,
}

struct Source {
    conn: RustConnection,
    atoms: Atoms,
    root: Window,
    window: Window,
    /// The studio's own window: never a target (winit would take the file as a drop on itself).
    own: Option<Window>,
    uri_list: Vec<u8>,
}

/// Drags `file` from the pointer's current position until the held button is released.
/// `display` is an X display name (`None`: `$DISPLAY`).
pub fn drag_file(
    display: Option<&str>,
    file: &Path,
    own_window: Option<u32>,
) -> Result<DragOutcome, DragError> {
    let (conn, screen) = x11rb::connect(display)?;
    let root = conn.setup().roots[screen].root;
    let atoms = Atoms::intern(&conn)?;
    let window = conn.generate_id()?;
    conn.create_window(
        0,
        window,
        root,
        -1,
        -1,
        1,
        1,
        0,
        WindowClass::INPUT_ONLY,
        0,
        &CreateWindowAux::new().event_mask(EventMask::PROPERTY_CHANGE),
    )?;
    conn.set_selection_owner(window, atoms.selection, x11rb::CURRENT_TIME)?;
    conn.flush()?;
    let source = Source {
        conn,
        atoms,
        root,
        window,
        own: own_window,
        uri_list: file_uri_list(file)?,
    };
    let outcome = source.run();
    source.conn.destroy_window(source.window).ok();
    source.conn.flush().ok();
    outcome
}

/// `file:///…\r\n` with everything outside RFC 3986's unreserved set and `/` percent-encoded.
fn file_uri_list(file: &Path) -> Result<Vec<u8>, DragError> {
    let absolute = std::path::absolute(file).map_err(DragError::Io)?;
    let mut uri = b"file://".to_vec();
    for byte in absolute.as_os_str().as_encoded_bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(byte) {
            uri.push(*byte);
        } else {
            uri.extend(format!("%{byte:02X}").bytes());
        }
    }
    uri.extend(b"\r\n");
    Ok(uri)
}

impl Source {
    fn run(&self) -> Result<DragOutcome, DragError> {
        let mut current: Option<Target> = None;
        let mut accepted = false;
        let mut awaiting_status = false;
        let mut last_position = None;
        loop {
            while let Some(event) = self.conn.poll_for_event()? {
                match event {
                    Event::ClientMessage(message) if message.type_ == self.atoms.status => {
                        let data = message.data.as_data32();
                        if current.is_some_and(|target| target.window == data[0]) {
                            accepted = data[1] & 1 == 1;
                            awaiting_status = false;
                        }
                    }
                    Event::SelectionRequest(request) => self.answer(&request)?,
                    _ => {}
                }
            }
            let pointer = self.conn.query_pointer(self.root)?.reply()?;
            let target = self.target_under_pointer()?;
            if target != current {
                if let Some(old) = current {
                    self.send(old.window, self.atoms.leave, [self.window, 0, 0, 0, 0])?;
                }
                if let Some(new) = target {
                    let version = new.version.min(VERSION);
                    let data = [self.window, version << 24, self.atoms.uri_list, 0, 0];
                    self.send(new.window, self.atoms.enter, data)?;
                }
                current = target;
                (accepted, awaiting_status, last_position) = (false, false, None);
            }
            let position = (pointer.root_x, pointer.root_y);
            if let Some(target) = current
                && !awaiting_status
                && last_position != Some(position)
            {
                let packed = ((position.0 as u16 as u32) << 16) | position.1 as u16 as u32;
                let data = [
                    self.window,
                    0,
                    packed,
                    x11rb::CURRENT_TIME,
                    self.atoms.action_copy,
                ];
                self.send(target.window, self.atoms.position, data)?;
                (awaiting_status, last_position) = (true, Some(position));
            }
            if !pointer.mask.contains(KeyButMask::BUTTON1) {
                return match current {
                    Some(target) if accepted => self.finish_drop(target),
                    Some(target) => {
                        self.send(target.window, self.atoms.leave, [self.window, 0, 0, 0, 0])?;
                        Ok(DragOutcome::Refused)
                    }
                    None => Ok(DragOutcome::NoTarget),
                };
            }
            std::thread::sleep(POLL);
        }
    }

    /// Sends the drop and serves the file's URI until the target says it has finished.
    fn finish_drop(&self, target: Target) -> Result<DragOutcome, DragError> {
        let data = [self.window, 0, x11rb::CURRENT_TIME, 0, 0];
        self.send(target.window, self.atoms.drop, data)?;
        let deadline = Instant::now() + FINISH_TIMEOUT;
        while Instant::now() < deadline {
            while let Some(event) = self.conn.poll_for_event()? {
                match event {
                    Event::SelectionRequest(request) => self.answer(&request)?,
                    Event::ClientMessage(message) if message.type_ == self.atoms.finished => {
                        let data = message.data.as_data32();
                        // Version 5 targets say whether they took the file (bit 0 of data[1]).
                        let taken = target.version < 5 || data[1] & 1 == 1;
                        return Ok(if taken {
                            DragOutcome::Dropped
                        } else {
                            DragOutcome::Refused
                        });
                    }
                    _ => {}
                }
            }
            std::thread::sleep(POLL);
        }
        Err(DragError::Protocol(
            "the drop target did not finish within 10 s".into(),
        ))
    }

    /// Hands the URI list (or the list of types it comes in) to a requestor.
    fn answer(&self, request: &SelectionRequestEvent) -> Result<(), DragError> {
        let property = if request.property == x11rb::NONE {
            request.target
        } else {
            request.property
        };
        let served = if request.selection != self.atoms.selection {
            false
        } else if request.target == self.atoms.uri_list {
            self.conn.change_property8(
                PropMode::REPLACE,
                request.requestor,
                property,
                self.atoms.uri_list,
                &self.uri_list,
            )?;
            true
        } else if request.target == self.atoms.targets {
            let types = [self.atoms.targets, self.atoms.uri_list];
            self.conn.change_property32(
                PropMode::REPLACE,
                request.requestor,
                property,
                AtomEnum::ATOM,
                &types,
            )?;
            true
        } else {
            false
        };
        let notify = SelectionNotifyEvent {
            response_type: SELECTION_NOTIFY_EVENT,
            sequence: 0,
            time: request.time,
            requestor: request.requestor,
            selection: request.selection,
            target: request.target,
            property: if served { property } else { x11rb::NONE },
        };
        self.conn
            .send_event(false, request.requestor, EventMask::NO_EVENT, notify)?;
        self.conn.flush()?;
        Ok(())
    }

    /// Walks down from the root to the deepest window under the pointer that is XdndAware.
    fn target_under_pointer(&self) -> Result<Option<Target>, DragError> {
        let mut window = self.root;
        let mut found = None;
        loop {
            let child = self.conn.query_pointer(window)?.reply()?.child;
            if child == x11rb::NONE {
                return Ok(found);
            }
            window = child;
            if Some(window) == self.own {
                return Ok(None);
            }
            let aware = self
                .conn
                .get_property(false, window, self.atoms.aware, AtomEnum::ATOM, 0, 1)?
                .reply()?;
            if let Some(version) = aware.value32().and_then(|mut values| values.next()) {
                found = Some(Target { window, version });
            }
        }
    }

    fn send(&self, target: Window, kind: Atom, data: [u32; 5]) -> Result<(), DragError> {
        let message = ClientMessageEvent::new(32, target, kind, data);
        self.conn
            .send_event(false, target, EventMask::NO_EVENT, message)?;
        self.conn.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_list_percent_encodes_what_uris_cannot_hold() {
        let list = file_uri_list(Path::new("/tmp/rain on tin #2 ä.wav")).unwrap();
        assert_eq!(
            String::from_utf8(list).unwrap(),
            "file:///tmp/rain%20on%20tin%20%232%20%C3%A4.wav\r\n"
        );
    }
}
