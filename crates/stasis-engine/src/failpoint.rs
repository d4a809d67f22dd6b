//! Failpoints and interruption.
//!
//! Tests make a checkpoint or restore fail at a named step by setting
//! `STASIS_FAILPOINTS=step[,step…]`; `step=pause` makes the engine sleep (up to 60 s) at that
//! step instead, so a test can deliver SIGINT/SIGTERM/SIGKILL to stasis at a known moment. The
//! step names are listed in docs/testing.md. The agent reuses the variable for its own
//! failpoints, named `agent.*` (e.g. `agent.tick.panic=NAME`: see [`action`]); the engine
//! ignores those. Signals: the CLI installs SIGINT/SIGTERM handlers
//! that call [`request_interrupt`]; the engine polls [`check`] at each step and unwinds through
//! its guards.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Ask the running operation to stop at its next step (async-signal-safe).
pub fn request_interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Whether an interruption was requested.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst) || stasis_sys::sys::interrupt_requested()
}

/// Every step name the engine checks.
pub const STEPS: &[&str] = &[
    "seize", "inspect", "parasite", "tasks", "memory", "write", "commit", "validate", "prepare",
    "root", "mappings", "pages", "state", "detach",
];

/// Check `STASIS_FAILPOINTS` names only known steps and actions (a typo would otherwise turn a
/// failure test into a real checkpoint).
pub fn validate_config() -> Result<(), String> {
    let Ok(v) = std::env::var("STASIS_FAILPOINTS") else {
        return Ok(());
    };
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, action) = item.split_once('=').unwrap_or((item, "error"));
        if name.starts_with("agent.") {
            continue;
        }
        if !STEPS.contains(&name) {
            return Err(format!(
                "STASIS_FAILPOINTS: unknown step {name:?} (known: {})",
                STEPS.join(", ")
            ));
        }
        if action != "error" && action != "pause" {
            return Err(format!(
                "STASIS_FAILPOINTS: unknown action {action:?} for {name} (error or pause)"
            ));
        }
    }
    Ok(())
}

/// Outcome of a step check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// A failpoint named this step.
    Failpoint(String),
    /// SIGINT/SIGTERM arrived.
    Interrupted(String),
}

fn configured(step: &str) -> Option<String> {
    let v = std::env::var("STASIS_FAILPOINTS").ok()?;
    v.split(',').map(str::trim).find_map(|item| {
        let (name, action) = item.split_once('=').unwrap_or((item, "error"));
        (name == step).then(|| action.to_string())
    })
}

/// The action configured for failpoint `name` (`error` when none is written), if any. The
/// agent's failpoints carry their argument here (`agent.tick.panic=web` → `web`).
pub fn action(name: &str) -> Option<String> {
    configured(name)
}

/// Called by the engine at each named step.
pub fn check(step: &str) -> Result<(), Stop> {
    if let Some(action) = configured(step) {
        if action == "pause" {
            tracing::info!(step, "failpoint: pausing");
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(60) && !interrupted() {
                std::thread::sleep(Duration::from_millis(10));
            }
        } else {
            return Err(Stop::Failpoint(step.to_string()));
        }
    }
    if interrupted() {
        return Err(Stop::Interrupted(step.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_failpoint_list() {
        std::env::set_var("STASIS_FAILPOINTS", "a, b=error");
        assert_eq!(configured("a").as_deref(), Some("error"));
        assert_eq!(configured("b").as_deref(), Some("error"));
        assert_eq!(configured("c"), None);
        assert!(check("a").is_err());
        assert!(validate_config().is_err());
        std::env::set_var("STASIS_FAILPOINTS", "seize,memory=pause");
        assert!(validate_config().is_ok());
        std::env::set_var("STASIS_FAILPOINTS", "memory=later");
        assert!(validate_config().is_err());
        std::env::set_var("STASIS_FAILPOINTS", "agent.tick.panic=web,seize");
        assert!(validate_config().is_ok());
        assert_eq!(action("agent.tick.panic").as_deref(), Some("web"));
        std::env::remove_var("STASIS_FAILPOINTS");
    }
}
