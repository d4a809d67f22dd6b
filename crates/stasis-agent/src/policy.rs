//! The HA restart policy (DESIGN.md C8), as pure decisions.
//!
//! On a failure — an exit the operator did not ask for, a signal, an OOM kill, a failed health
//! probe — the workload is restarted from its latest consistency image. If a workload restarted
//! from an image fails again within the failover window, the image itself is suspect and the
//! workload is restarted from its boot command (a cold restart). A failure before any image
//! exists is a boot restart. A workload restarted from its boot command that fails again within
//! the window counts as a failed boot; after `boot_restarts` of those in a row, restarts wait a
//! growing back-off, and once that is exhausted too the workload is marked failed.
//!
//! A workload that ran longer than the window since its last restart is healthy again: its next
//! failure starts over with an image restart, and the run of failed boots is forgotten.
//!
//! After a boot restart the images taken before it belong to the state that failed: the caller
//! must not restore them ([`Decision::BootRestart::discard_images`]).

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The policy an operator sets.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// A failure this soon after a restart means the restart did not help.
    #[serde(with = "crate::duration::human")]
    pub failover_window: Duration,
    /// Boot restarts in a row (each failing within the window) allowed before backing off.
    pub boot_restarts: u32,
    /// First back-off delay; doubled at every further failed boot.
    #[serde(with = "crate::duration::human")]
    pub backoff: Duration,
    /// Back-off restarts allowed before the workload is marked failed.
    pub backoff_restarts: u32,
    /// Longest back-off delay.
    #[serde(with = "crate::duration::human")]
    pub backoff_max: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            failover_window: Duration::from_secs(30),
            boot_restarts: 3,
            backoff: Duration::from_secs(1),
            backoff_restarts: 5,
            backoff_max: Duration::from_secs(60),
        }
    }
}

/// How the workload was last (re)started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestartKind {
    /// From a consistency image.
    Image,
    /// From the boot command.
    Boot,
}

/// What the policy remembers between failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct History {
    /// The last restart and when it happened (agent clock, milliseconds).
    pub last_restart: Option<(RestartKind, u64)>,
    /// When the workload was first started (agent clock, ms).
    pub started_ms: u64,
    /// Boot restarts in a row that failed within the window.
    pub failed_boots: u32,
}

/// What to do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Restore the latest consistency image.
    ImageRestart,
    /// Run the boot command again, after `delay`.
    BootRestart {
        /// Wait this long first (back-off; zero for the first boot restarts).
        delay: Duration,
        /// Images taken before this restart hold the state that failed: do not use them.
        discard_images: bool,
    },
    /// Give up: the workload is failed until an operator acts.
    MarkFailed,
}

/// Decide about a failure at `now_ms`, with `has_image` telling whether a consistency image of
/// the current run exists. Returns the decision and the history to keep.
pub fn decide(p: &Policy, h: &History, now_ms: u64, has_image: bool) -> (Decision, History) {
    let window = p.failover_window.as_millis() as u64;
    let since = |t: u64| now_ms.saturating_sub(t);
    let (last_kind, last_at) = h.last_restart.unwrap_or((RestartKind::Boot, h.started_ms));
    let within = since(last_at) < window;
    let mut next = *h;
    // A workload that stayed up longer than the window is healthy again.
    if !within {
        next.failed_boots = 0;
    }
    let boot_failed_again = within && last_kind == RestartKind::Boot && h.last_restart.is_some();
    if boot_failed_again {
        next.failed_boots = h.failed_boots.saturating_add(1);
    }
    let image_useless = within && h.last_restart.is_some() && last_kind == RestartKind::Image;
    if has_image && !image_useless && !boot_failed_again {
        next.last_restart = Some((RestartKind::Image, now_ms));
        return (Decision::ImageRestart, next);
    }
    // A cold restart: how many have failed in a row decides the delay, or the end.
    let fb = next.failed_boots;
    if fb > p.boot_restarts.saturating_add(p.backoff_restarts) {
        return (Decision::MarkFailed, next);
    }
    let delay = if fb <= p.boot_restarts {
        Duration::ZERO
    } else {
        let exp = (fb - p.boot_restarts - 1).min(30);
        p.backoff
            .checked_mul(1u32 << exp)
            .unwrap_or(p.backoff_max)
            .min(p.backoff_max)
    };
    next.last_restart = Some((RestartKind::Boot, now_ms));
    (
        Decision::BootRestart {
            delay,
            discard_images: true,
        },
        next,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pol() -> Policy {
        Policy {
            failover_window: Duration::from_secs(30),
            boot_restarts: 2,
            backoff: Duration::from_secs(1),
            backoff_restarts: 3,
            backoff_max: Duration::from_secs(3),
        }
    }

    const S: u64 = 1000;

    #[test]
    fn no_image_means_boot_restart() {
        let (d, h) = decide(&pol(), &History::default(), 100 * S, false);
        assert!(matches!(d, Decision::BootRestart { delay, .. } if delay.is_zero()));
        assert_eq!(h.last_restart, Some((RestartKind::Boot, 100 * S)));
    }

    #[test]
    fn image_then_boot_within_window() {
        let p = pol();
        let h0 = History {
            started_ms: 0,
            ..Default::default()
        };
        // Failure long after start: image.
        let (d, h1) = decide(&p, &h0, 100 * S, true);
        assert_eq!(d, Decision::ImageRestart);
        // Fails again within the window after the image restart: boot, images discarded.
        let (d, h2) = decide(&p, &h1, 110 * S, true);
        assert_eq!(
            d,
            Decision::BootRestart {
                delay: Duration::ZERO,
                discard_images: true
            }
        );
        // The boot restart runs past the window, then fails: image again.
        let (d, h3) = decide(&p, &h2, 200 * S, true);
        assert_eq!(d, Decision::ImageRestart);
        assert_eq!(h3.failed_boots, 0);
    }

    #[test]
    fn failing_boots_back_off_then_fail() {
        let p = pol();
        let mut h = History::default();
        let mut t = 0;
        let mut delays = Vec::new();
        loop {
            t += S; // always within the window
            let (d, nh) = decide(&p, &h, t, true);
            h = nh;
            match d {
                Decision::BootRestart { delay, .. } => delays.push(delay.as_secs()),
                Decision::ImageRestart => delays.push(999),
                Decision::MarkFailed => break,
            }
            assert!(delays.len() < 50);
        }
        // First failure after start (within the window, no restart yet): an image restart.
        // Then boots: 0, 0 (the first failed boots), then 1, 2, 3 (capped), 3, then failed.
        assert_eq!(delays, vec![999, 0, 0, 0, 1, 2, 3]);
    }

    proptest! {
        /// Whatever happens, a failure without an image never restores one, delays never
        /// exceed the cap, and a healthy stretch longer than the window resets the count.
        #[test]
        fn invariants(gaps in proptest::collection::vec((0u64..120, any::<bool>()), 1..40)) {
            let p = pol();
            let mut h = History::default();
            let mut t = 0;
            for (gap, img) in gaps {
                t += gap * S;
                let (d, nh) = decide(&p, &h, t, img);
                match d {
                    Decision::ImageRestart => prop_assert!(img),
                    Decision::BootRestart { delay, .. } => prop_assert!(delay <= p.backoff_max),
                    Decision::MarkFailed => {
                        prop_assert!(nh.failed_boots > p.boot_restarts + p.backoff_restarts);
                        prop_assert!(gap * S < p.failover_window.as_millis() as u64);
                        break;
                    }
                }
                if gap * S >= p.failover_window.as_millis() as u64 {
                    prop_assert_eq!(nh.failed_boots, 0);
                }
                h = nh;
            }
        }
    }
}
