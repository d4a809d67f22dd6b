//! Progress of a checkpoint or a restore, for the caller to show: the engine stays
//! synchronous and only stores the phase it is in and the page bytes it has handled so far
//! (atomics); a caller that wants a display polls them from another thread.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// A phase of a checkpoint or a restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Not started yet.
    Starting = 0,
    /// Checkpoint: seizing and freezing the tree.
    Freezing,
    /// Checkpoint: reading the tree's state from /proc and the kernel.
    Inspecting,
    /// Checkpoint: collecting state from inside the tasks (parasites).
    Collecting,
    /// Checkpoint: writing memory pages.
    WritingPages,
    /// Checkpoint: writing records and committing the image.
    Committing,
    /// Restore: verifying and loading the image.
    Loading,
    /// Restore: creating the tasks.
    CreatingTasks,
    /// Restore: mapping memory and filling pages.
    ReadingPages,
    /// Restore: files, credentials, registers.
    RestoringState,
    /// Finished.
    Done,
}

impl Phase {
    const ALL: [Phase; 11] = [
        Phase::Starting,
        Phase::Freezing,
        Phase::Inspecting,
        Phase::Collecting,
        Phase::WritingPages,
        Phase::Committing,
        Phase::Loading,
        Phase::CreatingTasks,
        Phase::ReadingPages,
        Phase::RestoringState,
        Phase::Done,
    ];

    /// What the phase does, in a few words.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Freezing => "freezing the tree",
            Phase::Inspecting => "inspecting the tree",
            Phase::Collecting => "collecting task state",
            Phase::WritingPages => "writing memory pages",
            Phase::Committing => "committing the image",
            Phase::Loading => "verifying and loading the image",
            Phase::CreatingTasks => "creating the tasks",
            Phase::ReadingPages => "restoring memory pages",
            Phase::RestoringState => "restoring files, credentials and registers",
            Phase::Done => "done",
        }
    }
}

/// Shared between the engine (which stores) and a display (which polls).
#[derive(Debug, Default)]
pub struct Progress {
    phase: AtomicU8,
    bytes: AtomicU64,
}

impl Progress {
    /// Enter `phase`.
    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// The phase entered last.
    pub fn phase(&self) -> Phase {
        let n = self.phase.load(Ordering::Relaxed) as usize;
        Phase::ALL.get(n).copied().unwrap_or(Phase::Starting)
    }

    /// Count `n` more page bytes handled.
    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Page bytes handled so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// Enter `phase` if there is a progress to report to.
pub(crate) fn enter(p: &Option<std::sync::Arc<Progress>>, phase: Phase) {
    if let Some(p) = p {
        p.set_phase(phase);
    }
}

/// Count `n` page bytes if there is a progress to report to.
pub(crate) fn add(p: &Option<std::sync::Arc<Progress>>, n: u64) {
    if let Some(p) = p {
        p.add_bytes(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_round_trip_through_the_atomic() {
        let p = Progress::default();
        assert_eq!(p.phase(), Phase::Starting);
        for ph in Phase::ALL {
            p.set_phase(ph);
            assert_eq!(p.phase(), ph);
            assert!(!ph.as_str().is_empty());
        }
        p.add_bytes(4096);
        p.add_bytes(4096);
        assert_eq!(p.bytes(), 8192);
    }
}
