//! Dragging an exported clip out of the studio onto a DAW, file manager or desktop.
//!
//! egui and winit can take drops but not start them, so the drag is run by the platform's
//! protocol on a thread of its own. Implemented: X11 (XDND, `x11.rs`). Elsewhere (Wayland,
//! Windows, macOS) `start` says dragging out is unavailable and the studio offers "Copy file".

#[cfg(all(unix, not(target_os = "macos")))]
pub mod x11;

use std::path::PathBuf;

use crossbeam_channel::Receiver;
use raw_window_handle::RawWindowHandle;

/// How a drag ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DragOutcome {
    /// A target accepted the file and finished reading it.
    Dropped,
    /// Released over a window that declined the file.
    Refused,
    /// Released where nothing takes drops.
    NoTarget,
}

#[derive(Debug, thiserror::Error)]
pub enum DragError {
    #[error("dragging out of the window is not available here ({0}); use Copy file instead")]
    Unsupported(&'static str),
    #[error("X11 connection: {0}")]
    Connect(String),
    #[error("XDND: {0}")]
    Protocol(String),
    #[error("{0}")]
    Io(std::io::Error),
}

#[cfg(all(unix, not(target_os = "macos")))]
mod x11_errors {
    use super::DragError;

    impl From<x11rb::errors::ConnectError> for DragError {
        fn from(error: x11rb::errors::ConnectError) -> Self {
            Self::Connect(error.to_string())
        }
    }

    impl From<x11rb::errors::ConnectionError> for DragError {
        fn from(error: x11rb::errors::ConnectionError) -> Self {
            Self::Connect(error.to_string())
        }
    }

    impl From<x11rb::errors::ReplyError> for DragError {
        fn from(error: x11rb::errors::ReplyError) -> Self {
            Self::Protocol(error.to_string())
        }
    }

    impl From<x11rb::errors::ReplyOrIdError> for DragError {
        fn from(error: x11rb::errors::ReplyOrIdError) -> Self {
            Self::Protocol(error.to_string())
        }
    }
}

/// Starts dragging `file` from a window with the given handle (the pointer button that began
/// the drag must still be down); the result arrives on the returned channel.
pub fn start(
    file: PathBuf,
    window: Option<RawWindowHandle>,
) -> Result<Receiver<Result<DragOutcome, DragError>>, DragError> {
    let own_window = match window {
        Some(RawWindowHandle::Xlib(handle)) => Some(handle.window as u32),
        Some(RawWindowHandle::Xcb(handle)) => Some(handle.window.get()),
        Some(RawWindowHandle::Wayland(_)) => return Err(DragError::Unsupported("Wayland")),
        Some(_) => return Err(DragError::Unsupported("this platform")),
        None => return Err(DragError::Unsupported("no window handle")),
    };
    let (sender, receiver) = crossbeam_channel::bounded(1);
    spawn(file, own_window, sender)?;
    Ok(receiver)
}

type Reply = crossbeam_channel::Sender<Result<DragOutcome, DragError>>;

#[cfg(all(unix, not(target_os = "macos")))]
fn spawn(file: PathBuf, own_window: Option<u32>, reply: Reply) -> Result<(), DragError> {
    std::thread::Builder::new()
        .name("drag-out".into())
        .spawn(move || {
            reply.send(x11::drag_file(None, &file, own_window)).ok();
        })
        .map(|_| ())
        .map_err(DragError::Io)
}

#[cfg(not(all(unix, not(target_os = "macos"))))]
fn spawn(_: PathBuf, _: Option<u32>, _: Reply) -> Result<(), DragError> {
    Err(DragError::Unsupported("this platform"))
}
