//! A spinner on stderr with the engine's phase while `stasis checkpoint` or `stasis restore`
//! works: the engine stores its phase and page bytes in a [`Progress`]; a thread of ours polls
//! it every 100 ms. Drawn only when stderr is a terminal and `--json` is not given, so pipes,
//! files and journald get nothing from it.

use stasis_engine::progress::{Phase, Progress};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The spinner of one operation; cleared from the terminal when dropped.
pub struct Spinner {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Show `what` and the phase of `progress` on stderr, when it is a terminal and `json` is
/// false (None otherwise: nothing is drawn).
pub fn show(what: &'static str, progress: &Arc<Progress>, json: bool) -> Option<Spinner> {
    if json || !std::io::stderr().is_terminal() {
        return None;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (p, s) = (progress.clone(), stop.clone());
    let thread = std::thread::Builder::new()
        .name("spinner".into())
        .spawn(move || {
            let pb = indicatif::ProgressBar::with_draw_target(
                None,
                indicatif::ProgressDrawTarget::stderr(),
            );
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{spinner} {prefix}: {msg} [{elapsed}]")
            {
                pb.set_style(style);
            }
            pb.set_message(message(p.phase(), p.bytes()));
            pb.set_prefix(what);
            // Drawn at least once, however short the operation.
            loop {
                pb.set_message(message(p.phase(), p.bytes()));
                pb.tick();
                if s.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            pb.finish_and_clear();
        })
        .ok()?;
    Some(Spinner {
        stop,
        thread: Some(thread),
    })
}

/// The spinner's text: the phase, and the page bytes handled once there are some.
fn message(phase: Phase, bytes: u64) -> String {
    if bytes > 0 {
        format!("{} ({})", phase.as_str(), indicatif::HumanBytes(bytes))
    } else {
        phase.as_str().to_string()
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Run `f` under a spinner on stderr saying `what` with the elapsed time, for work whose
/// phases we cannot see (it runs in another process): drawn only on a terminal and without
/// `--json`.
pub fn busy<T>(what: String, json: bool, f: impl FnOnce() -> T) -> T {
    if json || !std::io::stderr().is_terminal() {
        return f();
    }
    let pb = indicatif::ProgressBar::new_spinner();
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg} [{elapsed}]") {
        pb.set_style(style);
    }
    pb.set_message(what);
    pb.enable_steady_tick(Duration::from_millis(100));
    let r = f();
    pb.finish_and_clear();
    r
}

/// Like [`busy`] for work that forks and so needs this process single-threaded (a partition's
/// checkpointer and restorer): no spinner thread, one line on the terminal while `f` runs,
/// cleared after it.
pub fn note<T>(what: String, json: bool, f: impl FnOnce() -> T) -> T {
    if json || !std::io::stderr().is_terminal() {
        return f();
    }
    eprint!("{what}…");
    let r = f();
    eprint!("\r\x1b[2K");
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_the_phase_and_bytes_once_known() {
        assert_eq!(message(Phase::Freezing, 0), "freezing the tree");
        assert_eq!(
            message(Phase::WritingPages, 2048),
            "writing memory pages (2.00 KiB)"
        );
    }
}
