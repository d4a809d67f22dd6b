//! `stasis demo`: the node agent keeps a stateful workload alive through two `kill -9`s.
//!
//! The demo starts `stasis agent --root ROOT --listen off` as a child (ROOT is `--dir`, or a
//! fresh `/tmp/stasis-demo-PID`; the agent's stdout and stderr go to `ROOT/agent-stdout.log`)
//! and drives it only through its API on `ROOT/api/agent.sock`, with the library client:
//!
//! 1. starts the agent and waits until it answers;
//! 2. adds workload `demo` (`POST /v1/workloads`): this binary in its hidden `demo-worker`
//!    mode, a single-threaded loop printing "tick N" every 200 ms with N kept only in memory,
//!    with a consistency image every second and a 30 s failover window; waits for an image and
//!    a couple of seconds of ticks (read from `ROOT/partitions/demo/output.log`);
//! 3. `kill -9`s it (a moment after an image, so a few ticks are lost) and waits until the API
//!    shows it running again from that image; checks in the output log that the counter
//!    carried on from the image's count (it did not start over from 1) and that it lost at most
//!    the ticks since the image;
//! 4. `kill -9`s it again within the window: the image it came back from is now suspect, so
//!    the agent restarts it cold from its boot command, discards the old images, and the
//!    counter starts over from 1;
//! 5. lists the two first-failure data capture bundles (`GET /v1/ffdc`), one per failure,
//!    and shows the summary and files of the last one;
//! 6. prints the agent's event log (`GET /v1/events`).
//!
//! Every check that fails ends the demo with an error (non-zero exit). On every path —
//! success, failed check, Ctrl-C — the workload is removed through the API, the agent is
//! stopped (SIGTERM, then waited for), and `stasis --root ROOT rm -f demo` is run as a last
//! resort, so nothing is left running. ROOT keeps the agent's log and the FFDC bundles.

use crate::child_agent::ChildAgent;
use anyhow::{bail, Context};
use serde_json::{json, Value};
use stasis_agent::client::Client;
use stasis_agent::ffdc::FailureKind;
use stasis_agent::unix_ms;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The workload's name.
const NAME: &str = "demo";
/// How often the counter ticks.
const TICK_MS: u64 = 200;
/// Consistency image period, in seconds.
const EVERY_S: u64 = 1;
/// Failover window, in seconds.
const WINDOW_S: u64 = 30;
/// A kill lands this long after the last image was committed (the next one is due a second
/// after it), so the image is clearly older than the last ticks and no checkpoint is under way.
const KILL_AFTER_IMAGE_MS: std::ops::Range<u64> = 400..750;

/// The demo workload.
pub fn worker() -> ! {
    let mut n: u64 = 0;
    loop {
        n += 1;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "tick {n}");
        let _ = out.flush();
        drop(out);
        std::thread::sleep(Duration::from_millis(TICK_MS));
    }
}

/// Every "tick N" of the output log, in order (none if it does not exist yet).
fn ticks(log: &Path) -> Vec<u64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("tick ").and_then(|n| n.trim().parse().ok()))
        .collect()
}

/// Poll `f` every `every` until it gives a value, for at most `bound`.
fn wait_for<T>(
    what: &str,
    bound: Duration,
    every: Duration,
    mut f: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + bound;
    loop {
        crate::check_interrupt()?;
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("gave up after {} s waiting for {what}", bound.as_secs());
        }
        std::thread::sleep(every);
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn failure_text(kind: &Value) -> String {
    serde_json::from_value::<FailureKind>(kind.clone())
        .map(|k| k.to_string())
        .unwrap_or_else(|_| kind.to_string())
}

/// An event's payload in a few words: `key=value` without the event name and workload.
fn short_payload(p: &Value) -> String {
    payload_words(p, &["event", "workload"])
}

/// An event's payload as `key=value` words (durations in ms), leaving out the keys `skip` and
/// null values; `-` if nothing is left.
pub(crate) fn payload_words(p: &Value, skip: &[&str]) -> String {
    let Some(o) = p.as_object() else {
        return p.to_string();
    };
    let words = o
        .iter()
        .filter(|(k, v)| !skip.contains(&k.as_str()) && !v.is_null())
        .map(|(k, v)| match (k.strip_suffix("_secs"), v.as_f64()) {
            (Some(base), Some(s)) if !v.is_u64() => format!("{base}={:.0}ms", s * 1000.0),
            _ => format!("{k}={}", text(v)),
        })
        .collect::<Vec<_>>();
    if words.is_empty() {
        "-".into()
    } else {
        words.join(" ")
    }
}

/// The agent and the demo's workload; dropping it removes the workload and stops the agent.
struct Agent {
    agent: ChildAgent,
}

impl Agent {
    fn start(root: &Path, exe: &Path) -> anyhow::Result<Agent> {
        let mut agent = ChildAgent::start(exe, root, &[], &root.join("agent-stdout.log"))?;
        agent.client_mut().timeout = Duration::from_secs(60);
        Ok(Agent { agent })
    }

    fn client(&self) -> &Client {
        self.agent.client()
    }

    fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.client()
            .get(path)
            .with_context(|| format!("GET {path}"))
    }

    fn view(&self) -> anyhow::Result<Value> {
        self.get(&format!("/v1/workloads/{NAME}"))
    }

    /// Image ids and creation times, oldest first.
    fn images(&self) -> anyhow::Result<Vec<(String, u64)>> {
        let v = self.get(&format!("/v1/workloads/{NAME}/images"))?;
        let mut l: Vec<(String, u64)> = v["images"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|i| {
                (
                    text(&i["id"]),
                    i["created_unix_ms"].as_u64().unwrap_or_default(),
                )
            })
            .collect();
        l.sort_by_key(|i| i.1);
        Ok(l)
    }

    /// Wait for a moment to kill the workload: running, with an image committed
    /// [`KILL_AFTER_IMAGE_MS`] ago. Returns its view then.
    fn kill_moment(&self) -> anyhow::Result<Value> {
        wait_for(
            "a fresh consistency image",
            Duration::from_secs(15),
            Duration::from_millis(20),
            || {
                let v = self.view()?;
                let age = v["last_checkpoint_unix_ms"]
                    .as_u64()
                    .map(|t| unix_ms().saturating_sub(t));
                Ok((v["state"] == "running"
                    && v["pid"].is_i64()
                    && v["images"].as_u64().unwrap_or(0) >= 1
                    && age.is_some_and(|a| KILL_AFTER_IMAGE_MS.contains(&a)))
                .then_some(v))
            },
        )
    }

    /// Wait until the API shows the workload running again after `restarts` restarts, as a
    /// process other than `old_pid`.
    fn wait_restart(&self, restarts: u64, old_pid: i64) -> anyhow::Result<Value> {
        wait_for(
            &format!("restart number {restarts}"),
            Duration::from_secs(20),
            Duration::from_millis(20),
            || {
                let v = self.view()?;
                if v["state"] == "failed" {
                    bail!(
                        "the agent marked the workload failed: {}",
                        text(&v["last_failure"])
                    );
                }
                Ok((v["restarts"].as_u64() >= Some(restarts)
                    && v["state"] == "running"
                    && v["pid"].as_i64().is_some_and(|p| p != old_pid))
                .then_some(v))
            },
        )
    }

    /// Remove the workload and stop the agent; also end any leftover partition.
    fn shutdown(&mut self) -> anyhow::Result<()> {
        self.agent.shutdown(Some(NAME))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("stasis demo: cleaning up: {e:#}");
        }
    }
}

/// A fresh directory for the demo: /tmp/stasis-demo-PID (or -PID-2, …).
fn fresh_dir() -> anyhow::Result<PathBuf> {
    let base = std::env::temp_dir().join(format!("stasis-demo-{}", std::process::id()));
    for i in 1..100 {
        let p = if i == 1 {
            base.clone()
        } else {
            PathBuf::from(format!("{}-{i}", base.display()))
        };
        match std::fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", p.display())),
        }
    }
    bail!("no fresh directory next to {}", base.display())
}

pub fn run(dir: Option<PathBuf>) -> anyhow::Result<()> {
    let root = match dir {
        Some(d) => {
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            std::fs::canonicalize(&d)?
        }
        None => fresh_dir()?,
    };
    let exe = std::env::current_exe().context("finding the stasis binary")?;
    let log = stasis_partition::state::Root::new(root.clone())
        .paths(NAME)
        .log();
    let started_ms = unix_ms();

    // 1. The agent.
    let mut agent = Agent::start(&root, &exe)?;
    println!(
        "1) started the node agent (pid {}) on {} — API on {}",
        agent.agent.pid(),
        root.display(),
        agent.client().endpoint()
    );
    // A --dir reused after an interrupted demo may still hold its workload.
    if agent.view().is_ok() {
        agent
            .client()
            .delete(&format!("/v1/workloads/{NAME}"))
            .context("removing the workload of an earlier demo")?;
    }

    // 2. The workload.
    let exe_s = exe
        .to_str()
        .context("the stasis binary's path is not UTF-8")?;
    let body = json!({
        "name": NAME,
        "partition": {
            "cmd": [exe_s, "demo-worker"],
            "net": "host",
            "hostname": NAME,
            "cwd": "/",
            "env": [],
            "limits": {},
        },
        "checkpoint_every": format!("{EVERY_S}s"),
        "policy": { "failover_window": format!("{WINDOW_S}s") },
    });
    let v = agent
        .client()
        .post("/v1/workloads", Some(&body))
        .context("adding the workload")?;
    let added = Instant::now();
    let pid0 = v["pid"].as_i64().context("the new workload has no pid")?;
    println!(
        "2) added workload \"{NAME}\" (pid {pid0}): a counter printing \"tick N\" every {TICK_MS} ms \
         that keeps N only in memory;"
    );
    println!(
        "   the agent takes a consistency image of it every {EVERY_S} s and has a {WINDOW_S} s failover window"
    );
    println!("   (its output goes to {})", log.display());
    let v = wait_for(
        "the first consistency image",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            let v = agent.view()?;
            Ok((v["images"].as_u64().unwrap_or(0) >= 1
                && added.elapsed() >= Duration::from_secs(2)
                && !ticks(&log).is_empty())
            .then_some(v))
        },
    )?;
    println!(
        "   after {:.1} s it has counted to {}; {} image(s) so far, the last froze it for {:.1} ms",
        added.elapsed().as_secs_f64(),
        ticks(&log).last().copied().unwrap_or(0),
        text(&v["images"]),
        v["last_frozen_secs"].as_f64().unwrap_or(0.0) * 1000.0
    );

    // 3. kill -9: back from the latest image.
    let v = agent.kill_moment()?;
    let pid1 = v["pid"].as_i64().context("no pid")?;
    let (image, image_ms) = agent
        .images()?
        .pop()
        .context("the agent lists no image of the workload")?;
    let lines_before = ticks(&log).len();
    let at_kill = ticks(&log).last().copied().unwrap_or(0);
    stasis_sys::sys::kill(pid1 as i32, libc::SIGKILL).context("kill -9 of the workload")?;
    let killed = Instant::now();
    let kill_ms = unix_ms();
    println!(
        "3) kill -9 {pid1} at about tick {at_kill}, {} ms after image {image} was begun",
        kill_ms.saturating_sub(image_ms)
    );
    let v = agent.wait_restart(1, pid1)?;
    let back = Instant::now();
    let took = back - killed;
    let pid2 = v["pid"].as_i64().context("no pid")?;
    if v["last_restart"] != "image" {
        bail!(
            "the workload was restarted from {} instead of its image",
            text(&v["last_restart"])
        );
    }
    if v["last_image"] != image.as_str() {
        bail!(
            "it came back from image {} instead of the latest, {image}",
            text(&v["last_image"])
        );
    }
    println!(
        "   the agent noticed, captured the failure, and it came back from image {image} as pid {pid2} \
         in {} ms",
        took.as_millis()
    );
    let t = wait_for(
        "ticks after the restart",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let t = ticks(&log);
            Ok((t.len() >= lines_before + 4).then_some(t))
        },
    )?;
    // Where the restored counter starts: the first break in the sequence (none if the image
    // was taken after the last tick, in which case the old run's lines end where they did).
    let cut = (1..t.len())
        .find(|&i| t[i] != t[i - 1] + 1)
        .unwrap_or(lines_before.min(t.len() - 1).max(1));
    let (b, a) = (t[cut - 1], t[cut]);
    if a == 1 {
        bail!("after the image restart the counter started over from tick 1 (it was at {b}): its count was lost");
    }
    if a > b + 1 || t[cut..].windows(2).any(|w| w[1] != w[0] + 1) {
        bail!(
            "after the image restart the counter went on oddly: ... {:?} | {:?}",
            &t[cut.saturating_sub(3)..cut],
            &t[cut..]
        );
    }
    let lost = b + 1 - a;
    // Ticks since the image began (it captured the state a little after that).
    let since_image = kill_ms.saturating_sub(image_ms) / TICK_MS + 2;
    if lost > since_image {
        bail!("the counter lost {lost} ticks, more than the {since_image} since its image: it came back from older state");
    }
    println!(
        "   it carried on from tick {a} (it was at {b} when killed; the image was begun {:.1} s before \
         the kill, images come every {EVERY_S} s): only the {lost} tick(s) since the image were lost, \
         the count itself came back with the image's memory",
        kill_ms.saturating_sub(image_ms) as f64 / 1000.0
    );

    // 4. kill -9 again within the window: a cold restart.
    let v = agent.kill_moment()?;
    let pid2 = v["pid"].as_i64().context("no pid")?;
    let old_images: Vec<String> = agent.images()?.into_iter().map(|i| i.0).collect();
    let lines_before = ticks(&log).len();
    let at_kill = ticks(&log).last().copied().unwrap_or(0);
    stasis_sys::sys::kill(pid2 as i32, libc::SIGKILL).context("kill -9 of the workload")?;
    let killed = Instant::now();
    println!(
        "4) kill -9 {pid2} again at about tick {at_kill}, {:.1} s after it came back from image {image} \
         (within the {WINDOW_S} s window)",
        killed.duration_since(back).as_secs_f64()
    );
    let v = agent.wait_restart(2, pid2)?;
    let took = killed.elapsed();
    let pid3 = v["pid"].as_i64().context("no pid")?;
    if v["last_restart"] != "boot" {
        bail!(
            "a second failure within the window should be a cold (boot) restart, but it was: {}",
            text(&v["last_restart"])
        );
    }
    println!(
        "   the image it came back from is suspect: it was restarted cold from its boot command as pid {pid3} \
         in {} ms",
        took.as_millis()
    );
    let left: Vec<String> = agent.images()?.into_iter().map(|i| i.0).collect();
    if let Some(kept) = left.iter().find(|i| old_images.contains(i)) {
        bail!("image {kept}, taken before the cold restart, was not discarded");
    }
    println!(
        "   the {} image(s) it had ({}) were discarded: they hold the state that failed (images now: {})",
        old_images.len(),
        old_images.join(", "),
        left.len()
    );
    let t = wait_for(
        "ticks after the cold restart",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let t = ticks(&log);
            Ok((t.len() >= lines_before + 3).then_some(t))
        },
    )?;
    let Some(start) = t
        .iter()
        .skip(lines_before)
        .position(|&n| n == 1)
        .map(|p| p + lines_before)
    else {
        bail!(
            "after the cold restart the counter did not start over from tick 1: ... {:?}",
            &t[lines_before.saturating_sub(3)..]
        );
    };
    if t[start..].windows(2).any(|w| w[1] != w[0] + 1) {
        bail!(
            "after the cold restart the counter went on oddly: {:?}",
            &t[start..]
        );
    }
    println!(
        "   it started over from tick 1 (it was at {} when killed): a cold restart loses the count, as it must",
        t[start - 1]
    );

    // 5. First-failure data capture.
    let v = agent.get(&format!("/v1/ffdc?workload={NAME}"))?;
    let mut bundles: Vec<Value> = v["bundles"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|b| b["failure"]["at_unix_ms"].as_u64().unwrap_or(0) >= started_ms)
        .collect();
    bundles.sort_by_key(|b| b["failure"]["at_unix_ms"].as_u64().unwrap_or(0));
    if bundles.len() != 2 {
        bail!(
            "expected 2 FFDC bundles, one per failure, the agent lists {}",
            bundles.len()
        );
    }
    println!("5) first-failure data capture: one bundle per failure");
    for b in &bundles {
        let f = &b["failure"];
        let what = failure_text(&f["kind"]);
        let kind = serde_json::from_value::<FailureKind>(f["kind"].clone()).ok();
        if kind
            != Some(FailureKind::Signal {
                signo: libc::SIGKILL,
            })
        {
            bail!(
                "bundle {} records \"{what}\", not the kill -9",
                text(&b["id"])
            );
        }
        println!(
            "   {}  {what}  (incarnation {}, running from {})",
            text(&b["id"]),
            text(&f["incarnation"]),
            f["image_in_use"]
                .as_str()
                .map_or("its boot command".to_string(), |i| format!("image {i}")),
        );
    }
    let last = text(&bundles[1]["id"]);
    let b = agent.get(&format!("/v1/ffdc/{last}"))?;
    println!("   the last one, {}:", text(&b["info"]["path"]));
    for l in b["summary"]
        .as_str()
        .unwrap_or("")
        .lines()
        .take_while(|l| !l.is_empty())
    {
        println!("   | {l}");
    }
    if let Some(tail) = b["output_tail"].as_str() {
        if let Some(l) = tail.lines().rev().find(|l| !l.trim().is_empty()) {
            println!("   its copy of the workload's output ends with \"{l}\"");
        }
    }
    let files: Vec<String> = b["files"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|f| format!("{} ({} B)", text(&f["path"]), text(&f["size"])))
        .collect();
    println!("   files: {}", files.join(", "));

    // 6. The event log.
    let v = agent.get("/v1/events?since=0")?;
    // A reused --dir holds the events of earlier demos too: show this one's.
    let events: Vec<Value> = v["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["unix_ms"].as_u64().unwrap_or(0) >= started_ms)
        .collect();
    println!("6) the agent's event log ({} events):", events.len());
    for e in &events {
        println!(
            "   {:>3}  {:<22} {}",
            text(&e["seq"]),
            text(&e["kind"]),
            short_payload(&e["payload"])
        );
    }

    agent.shutdown()?;
    println!(
        "demo passed (workload removed, agent stopped; its log and the FFDC bundles stay in {})",
        root.display()
    );
    Ok(())
}
