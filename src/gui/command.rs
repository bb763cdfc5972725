//! Everything the user can ask of the studio, as data. Panels and keys only queue these;
//! `FoleyApp::execute` carries them out in one place after the frame is drawn.

use std::path::PathBuf;

use super::views::clip::ClipAction;

/// Which clip on screen: one on the compare board, or the one opened from the library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipRef {
    Board(usize),
    Opened,
}

/// Where the arrow keys and Home/End move the board's selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    Previous,
    Next,
    First,
    Last,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StudioCommand {
    /// Load the model the settings name (a second Load cancels the first one's download).
    LoadModel,
    /// Ask for a local model folder with the system's dialog, then load it.
    ChooseModelFolder,
    CancelDownload,
    Generate,
    /// Esc: closes the shortcuts list if it is open, else cancels the run.
    Escape,
    Cancel,
    Clip(ClipRef, ClipAction),
    ClearBoard,
    /// Open library clip `id` in the clip view.
    OpenFromLibrary(String),
    /// Open audio files as clips (dropped on the window or chosen in the file dialog).
    OpenFiles(Vec<PathBuf>),
    /// Ask for audio files with the system's file dialog.
    ChooseFiles,
    EmptyTrash,
    UndoDelete,
    DismissDeleted,
    DismissMessages,
    /// Hand an exported file to the platform's drag-and-drop.
    DragFile(PathBuf),
    CopyFile(PathBuf),
    /// Open the folder holding the file.
    Reveal(PathBuf),
    CloseExport,
    ClosePicture,
    /// Play the selected clip, or stop playback.
    PlayStop,
    Select(Move),
    /// A/B: board clip N (0-based) at the current position.
    SwitchTo(usize),
    ToggleLoop,
    ToggleHelp,
}
