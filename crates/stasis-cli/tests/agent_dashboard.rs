//! The agent's web dashboard in a real browser: `stasis agent` serves it at `/`, headless
//! Chromium (driven through chromedriver with the W3C WebDriver protocol) loads it, and the
//! DOM must show what the API says: a workload restarted from its image after a SIGKILL, its
//! images and resource charts, the FFDC bundle of the failure, the event backlog, and a new
//! event arriving live over the event stream. The page asks for the agent's token first: the
//! test types it into the login form, as an operator would.
//!
//! Needs the Debian packages `chromium` and `chromium-driver`; without them the test fails
//! (it is never skipped).
#![cfg(target_os = "linux")]

mod common;

use common::{ok_stdout, pid_alive, reap_comm, send_signal, serial, stasis, stasis_at, Background};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const WL: &str = "dash1";

/// Tail of a (possibly long) text, for failure messages.
fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

// ---------------------------------------------------------------------------
// plain HTTP (ureq) for the agent's API and the WebDriver protocol

struct Http(ureq::Agent, Option<String>);

impl Http {
    /// A client that sends `Authorization: Bearer TOKEN` to the agent.
    fn with_token(token: &str) -> Http {
        Http(Http::new().0, Some(token.to_string()))
    }

    fn new() -> Http {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(90)))
            .build();
        Http(ureq::Agent::new_with_config(config), None)
    }

    /// Send a request; (status, body as JSON — Null when the body is empty or not JSON).
    fn call(&self, method: &str, url: &str, body: Option<&Value>) -> Result<(u16, Value), String> {
        let auth = self.1.as_ref().map(|t| format!("Bearer {t}"));
        let auth = auth.as_deref().unwrap_or("");
        let resp = match (method, body) {
            ("GET", _) if !auth.is_empty() => self.0.get(url).header("Authorization", auth).call(),
            ("GET", _) => self.0.get(url).call(),
            ("DELETE", _) => self.0.delete(url).call(),
            ("POST", b) => self
                .0
                .post(url)
                .header("Content-Type", "application/json")
                .send(b.unwrap_or(&json!({})).to_string()),
            _ => return Err(format!("unsupported method {method}")),
        };
        let mut resp = resp.map_err(|e| format!("{method} {url}: {e}"))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("{method} {url}: reading the body: {e}"))?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// GET a JSON document that must answer 200 (None otherwise).
    fn get_ok(&self, url: &str) -> Option<Value> {
        match self.call("GET", url, None) {
            Ok((200, v)) => Some(v),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------
// the agent under test

/// `stasis agent` running in the background; on drop it is stopped (SIGTERM, SIGKILL after
/// 10 s) and waited for, and the partitions of the named workloads are removed.
struct AgentProc {
    bg: Option<Background>,
    root: PathBuf,
    base: String,
    workloads: Vec<&'static str>,
}

impl AgentProc {
    fn start(root: &Path, workloads: Vec<&'static str>) -> AgentProc {
        let port = common::free_port();
        let mut cmd = Command::new(stasis());
        cmd.arg("agent")
            .arg("--root")
            .arg(root)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("STASIS_BIN", stasis())
            .env("NO_COLOR", "1");
        let agent = AgentProc {
            bg: Some(Background::spawn(&mut cmd)),
            root: root.to_path_buf(),
            base: format!("http://127.0.0.1:{port}"),
            workloads,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(t) = std::fs::read_to_string(root.join("agent/token")) {
                if Http::with_token(t.trim())
                    .get_ok(&agent.url("/v1/health"))
                    .is_some()
                {
                    return agent;
                }
            }
            assert!(
                pid_alive(agent.pid()),
                "stasis agent exited before answering /v1/health:\n{}",
                agent.stderr()
            );
            assert!(
                Instant::now() < deadline,
                "stasis agent did not answer {} within 30 s:\n{}",
                agent.url("/v1/health"),
                agent.stderr()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The agent's API token.
    fn token(&self) -> String {
        std::fs::read_to_string(self.root.join("agent/token"))
            .expect("the agent's token")
            .trim()
            .to_string()
    }

    fn pid(&self) -> i32 {
        self.bg.as_ref().map_or(0, Background::pid)
    }

    /// The end of what the agent logged so far.
    fn stderr(&self) -> String {
        let s = self
            .bg
            .as_ref()
            .map(Background::stderr_so_far)
            .unwrap_or_default();
        format!("--- agent stderr (tail) ---\n{}", tail(&s, 4000))
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if let Some(bg) = self.bg.take() {
            send_signal(bg.pid(), libc::SIGTERM);
            let _ = bg.wait(Duration::from_secs(10));
        }
        for name in &self.workloads {
            let _ = stasis_at(&self.root, &["rm", "-f", name]);
        }
    }
}

// ---------------------------------------------------------------------------
// chromedriver + a headless Chromium session

/// chromedriver on a free port; stopped (and waited for) on drop.
struct Driver {
    bg: Option<Background>,
    base: String,
}

impl Driver {
    fn start() -> Driver {
        for (bin, pkg) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: this test needs headless Chromium and chromedriver \
                 (install the Debian packages chromium and chromium-driver: \
                 apt-get install -y {pkg})"
            );
        }
        // Browser helpers left behind become our children (we are a subreaper): reap them.
        reap_comm("chromium");
        reap_comm("chrome_crashpad_handler");
        let port = common::free_port();
        let mut cmd = Command::new(CHROMEDRIVER);
        cmd.arg(format!("--port={port}"));
        let driver = Driver {
            bg: Some(Background::spawn(&mut cmd)),
            base: format!("http://127.0.0.1:{port}"),
        };
        let http = Http::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = http
                .get_ok(&format!("{}/status", driver.base))
                .is_some_and(|v| v["value"]["ready"] == json!(true));
            if ready {
                return driver;
            }
            let pid = driver.bg.as_ref().map_or(0, Background::pid);
            assert!(
                pid_alive(pid) && Instant::now() < deadline,
                "chromedriver did not become ready on {} within 30 s:\n{}",
                driver.base,
                driver
                    .bg
                    .as_ref()
                    .map(Background::stderr_so_far)
                    .unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(bg) = self.bg.take() {
            send_signal(bg.pid(), libc::SIGTERM);
            let _ = bg.wait(Duration::from_secs(10));
        }
    }
}

/// A WebDriver session (one headless Chromium); deleted (the browser quits) on drop.
struct Browser {
    http: Http,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start(driver: &Driver) -> Browser {
        let profile = tempfile::Builder::new()
            .prefix("stasis-chromium-")
            .tempdir()
            .expect("create a Chromium profile dir");
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": CHROMIUM,
                        "args": [
                            "--headless",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-quic",
                            "--no-first-run",
                            "--disable-background-networking",
                            "--disable-component-update",
                            "--disable-sync",
                            "--window-size=1400,1000",
                            format!("--user-data-dir={}", profile.path().display()),
                        ]
                    }
                }
            }
        });
        let http = Http::new();
        let url = format!("{}/session", driver.base);
        let (status, v) = http
            .call("POST", &url, Some(&caps))
            .unwrap_or_else(|e| panic!("WebDriver new session: {e}"));
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("WebDriver new session failed ({status}): {v}"))
            .to_string();
        Browser {
            http,
            session: format!("{}/session/{session}", driver.base),
            _profile: profile,
        }
    }

    /// A WebDriver command on this session; its `value` (panics on a WebDriver error).
    fn cmd(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let url = format!("{}{path}", self.session);
        let (status, v) = self
            .http
            .call(method, &url, body)
            .unwrap_or_else(|e| panic!("WebDriver: {e}"));
        assert!(
            status == 200,
            "WebDriver {method} {path} failed ({status}): {}",
            v["value"]
        );
        v["value"].clone()
    }

    /// Type `text` into the element matching `css`.
    fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css);
        self.cmd(
            "POST",
            &format!("/element/{el}/value"),
            Some(&json!({ "text": text })),
        );
    }

    /// Click the element matching `css`.
    fn click(&self, css: &str) {
        let el = self.find(css);
        self.cmd("POST", &format!("/element/{el}/click"), Some(&json!({})));
    }

    fn find(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "/element",
            Some(&json!({ "using": "css selector", "value": css })),
        );
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(&json!({ "url": url })));
    }

    /// Run `script` (a function body; `arguments[0..]` are `args`) in the page.
    fn js(&self, script: &str, args: &[Value]) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": script, "args": args })),
        )
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.http.call("DELETE", &self.session, None);
    }
}

// ---------------------------------------------------------------------------
// what the dashboard shows

/// Everything the test reads from the page, for one workload, as one JSON snapshot.
const SNAPSHOT_JS: &str = r##"
const name = arguments[0];
const esc = CSS.escape(name);
const all = (sel, root) => Array.from((root || document).querySelectorAll(sel));
const text = (el) => (el ? el.textContent.trim() : null);
const row = document.querySelector(`#workloads tr[data-workload="${esc}"]`);
const cell = (c) => (row ? text(row.querySelector(`td.${c}`)) : null);
const err = document.querySelector("#error");
return {
  ready: document.body.dataset.ready || null,
  title: document.title,
  row: !!row,
  state: cell("state"),
  pid: cell("pid"),
  restarts: cell("restarts"),
  last_restart: cell("last-restart"),
  images_cell: cell("images"),
  images: all(`[data-images="${esc}"] [data-image]`).map((e) => e.dataset.image),
  charts: all(`svg.chart[data-workload="${esc}"]`).map((e) => e.dataset.chart),
  memory_line: all(`svg.chart[data-chart="memory"][data-workload="${esc}"] polyline`).length > 0,
  bundles: all("#ffdc [data-bundle]").map((e) => ({ id: e.dataset.bundle, text: e.textContent })),
  ffdc_detail: text(document.querySelector("#ffdc-detail")),
  events: all("#events li[data-seq]").map((e) => ({
    seq: Number(e.dataset.seq), kind: e.dataset.kind, text: e.textContent,
  })),
  stream: text(document.querySelector("#stream-status")),
  error: err && !err.hidden ? err.textContent : null,
};
"##;

type Check<'a> = (&'a str, Box<dyn Fn(&Value) -> bool + 'a>);

/// Poll the page until every check holds on its snapshot; panics naming the checks that
/// still fail, with the last snapshot and the agent's log.
fn wait_page(b: &Browser, agent: &AgentProc, timeout: Duration, checks: &[Check]) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let snap = b.js(SNAPSHOT_JS, &[json!(WL)]);
        let failing: Vec<&str> = checks
            .iter()
            .filter(|(_, f)| !f(&snap))
            .map(|(what, _)| *what)
            .collect();
        if failing.is_empty() {
            return snap;
        }
        if Instant::now() >= deadline {
            panic!(
                "the dashboard did not show, within {timeout:?}: {failing:?}\n\
                 page snapshot: {}\n{}",
                describe(&snap),
                agent.stderr()
            );
        }
        thread::sleep(Duration::from_millis(250));
    }
}

/// A page snapshot for a failure message (events as "SEQ KIND: TEXT", newest first, at
/// most 40).
fn describe(snap: &Value) -> String {
    let mut s = snap.clone();
    let events: Vec<Value> = events_of(snap)
        .iter()
        .take(40)
        .map(|e| {
            let kind = e["kind"].as_str().unwrap_or("?");
            let text = e["text"].as_str().unwrap_or("");
            json!(format!("{} {kind}: {text}", e["seq"]))
        })
        .collect();
    s["events"] = Value::Array(events);
    serde_json::to_string_pretty(&s).unwrap_or_default()
}

fn events_of(snap: &Value) -> Vec<Value> {
    snap["events"].as_array().cloned().unwrap_or_default()
}

fn has_event(snap: &Value, kind: &str) -> bool {
    events_of(snap).iter().any(|e| e["kind"] == kind)
}

fn max_seq(snap: &Value) -> u64 {
    events_of(snap)
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .max()
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------

/// Poll the agent's API until `pred` holds on GET `path` (200); returns that document.
fn wait_api(
    http: &Http,
    agent: &AgentProc,
    path: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    let mut last = Value::Null;
    loop {
        if let Some(v) = http.get_ok(&agent.url(path)) {
            if pred(&v) {
                return v;
            }
            last = v;
        }
        assert!(
            Instant::now() < deadline,
            "waiting {timeout:?} for {what}: GET {path} last answered {last}\n{}",
            agent.stderr()
        );
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn dashboard_shows_restart_images_ffdc_and_live_events() {
    let _g = serial();
    let tmp = tempfile::Builder::new()
        .prefix("stasis-dash-")
        .tempdir()
        .expect("temp dir");
    let root = tmp.path().join("root");
    let agent = AgentProc::start(&root, vec![WL]);
    let http = Http::with_token(&agent.token());

    // A supervised workload with consistency images every second.
    let out = stasis_at(
        &root,
        &[
            "workload",
            "add",
            WL,
            "--checkpoint-every",
            "1s",
            "--failover-window",
            "30s",
            "--",
            "sleep",
            "1000",
        ],
    );
    ok_stdout(&out, "stasis workload add");
    let path = format!("/v1/workloads/{WL}");
    wait_api(
        &http,
        &agent,
        &path,
        "a first consistency image",
        Duration::from_secs(30),
        |v| v["images"].as_u64().unwrap_or(0) >= 1,
    );

    // SIGKILL it: the agent must bring it back from its image and keep an FFDC bundle.
    let v = http.get_ok(&agent.url(&path)).expect("GET the workload");
    let pid = v["pid"].as_i64().expect("a running workload has a pid") as i32;
    assert!(send_signal(pid, libc::SIGKILL), "kill -9 {pid}");
    wait_api(
        &http,
        &agent,
        &path,
        "an image restart after the kill",
        Duration::from_secs(30),
        |v| v["restarts"] == json!(1) && v["last_restart"] == "image" && v["state"] == "running",
    );
    let ffdc = wait_api(
        &http,
        &agent,
        &format!("/v1/ffdc?workload={WL}"),
        "an FFDC bundle of the kill",
        Duration::from_secs(30),
        |v| v["bundles"].as_array().is_some_and(|b| !b.is_empty()),
    );
    let bundle = ffdc["bundles"][0]["id"]
        .as_str()
        .expect("bundle id")
        .to_string();

    // The dashboard, in a real browser.
    let driver = Driver::start();
    let b = Browser::start(&driver);
    b.goto(&agent.url("/"));
    // Without a session the page asks for the token; a wrong one is refused.
    let login_shown =
        "!document.querySelector('#login').hidden && document.querySelector('main').hidden";
    let deadline = Instant::now() + Duration::from_secs(20);
    while b.js(&format!("return {login_shown};"), &[]) != json!(true) {
        assert!(
            Instant::now() < deadline,
            "the login form did not show\n{}",
            agent.stderr()
        );
        thread::sleep(Duration::from_millis(100));
    }
    b.type_into("#login-token", "0123");
    b.click("#login-submit");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b
        .js(
            "return document.querySelector('#login-error').textContent;",
            &[],
        )
        .as_str()
        .unwrap_or("")
        .contains("wrong token")
    {
        assert!(
            Instant::now() < deadline,
            "a wrong token was not refused\n{}",
            agent.stderr()
        );
        thread::sleep(Duration::from_millis(100));
    }
    b.js("document.querySelector('#login-token').value = '';", &[]);
    b.type_into("#login-token", &agent.token());
    b.click("#login-submit");
    let snap = wait_page(
        &b,
        &agent,
        Duration::from_secs(20),
        &[(
            "document.body.dataset.ready == \"1\"",
            Box::new(|s| s["ready"] == "1"),
        )],
    );
    assert_eq!(snap["title"], "Stasis agent");
    let bundle_in_page = bundle.clone();
    let snap = wait_page(
        &b,
        &agent,
        Duration::from_secs(20),
        &[
            ("a row for the workload", Box::new(|s| s["row"] == true)),
            ("state running", Box::new(|s| s["state"] == "running")),
            ("1 restart", Box::new(|s| s["restarts"] == "1")),
            (
                "last restart from an image",
                Box::new(|s| s["last_restart"] == "image"),
            ),
            (
                "its images listed",
                Box::new(|s| s["images"].as_array().is_some_and(|a| !a.is_empty())),
            ),
            (
                "cpu and memory charts",
                Box::new(|s| {
                    let c = s["charts"].as_array().cloned().unwrap_or_default();
                    c.contains(&json!("cpu")) && c.contains(&json!("memory"))
                }),
            ),
            (
                "a memory line drawn",
                Box::new(|s| s["memory_line"] == true),
            ),
            (
                "the FFDC bundle of the kill (workload, signal)",
                Box::new(move |s| {
                    s["bundles"].as_array().is_some_and(|a| {
                        a.iter().any(|x| {
                            let t = x["text"].as_str().unwrap_or("");
                            x["id"] == bundle_in_page.as_str()
                                && t.contains(WL)
                                && t.contains("signal")
                        })
                    })
                }),
            ),
            (
                "the event backlog",
                Box::new(|s| {
                    [
                        "workload.added",
                        "workload.checkpointed",
                        "workload.failed",
                        "workload.restarted",
                        "workload.ffdc",
                    ]
                    .iter()
                    .all(|k| has_event(s, k))
                }),
            ),
            ("the event stream live", Box::new(|s| s["stream"] == "live")),
            ("no error banner", Box::new(|s| s["error"].is_null())),
        ],
    );
    let seqs: Vec<u64> = events_of(&snap)
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "events are listed newest first: {seqs:?}"
    );

    // Clicking the bundle shows its detail.
    b.js(
        "document.querySelector(`#ffdc [data-bundle=\"${CSS.escape(arguments[0])}\"]`).click();",
        &[json!(bundle)],
    );
    let bundle_in_detail = bundle.clone();
    wait_page(
        &b,
        &agent,
        Duration::from_secs(10),
        &[(
            "the bundle's detail in #ffdc-detail",
            Box::new(move |s| {
                let t = s["ffdc_detail"].as_str().unwrap_or("");
                t.contains(bundle_in_detail.as_str()) && t.contains(WL) && t.contains("signal")
            }),
        )],
    );

    // A new event arrives over the live stream (the page polls no event list after loading).
    let before = max_seq(&snap);
    let out = stasis_at(&root, &["workload", "checkpoint", WL]);
    ok_stdout(&out, "stasis workload checkpoint");
    wait_page(
        &b,
        &agent,
        Duration::from_secs(20),
        &[(
            "a new workload.checkpointed event from the stream",
            Box::new(move |s| {
                events_of(s).iter().any(|e| {
                    e["kind"] == "workload.checkpointed"
                        && e["seq"].as_u64().unwrap_or(0) > before
                        && e["text"].as_str().unwrap_or("").contains(WL)
                })
            }),
        )],
    );

    // Removed: its row goes away and the removal is in the event list.
    let out = stasis_at(&root, &["workload", "rm", WL]);
    ok_stdout(&out, "stasis workload rm");
    wait_page(
        &b,
        &agent,
        Duration::from_secs(20),
        &[
            ("the workload's row gone", Box::new(|s| s["row"] == false)),
            (
                "a workload.removed event",
                Box::new(|s| has_event(s, "workload.removed")),
            ),
        ],
    );
}

// ---------------------------------------------------------------------------
// loading states and actions

const WL2: &str = "dash2";

/// What the page shows of its loading state, and how many of its API requests have
/// completed. A fetch gets its Resource Timing entry (`performance.getEntriesByType
/// ("resource")`) only once its response has ended, so `api_done == 0` proves the snapshot
/// was taken before any answer of the API reached the page.
const LOADING_JS: &str = r##"
const api = performance.getEntriesByType("resource")
  .filter((e) => new URL(e.name).pathname.startsWith("/v1/"));
const visible = (el) => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
return {
  api_done: api.length,
  api_done_urls: api.map((e) => e.name),
  main_shown: !document.querySelector("main").hidden,
  markers: Array.from(document.querySelectorAll("[data-loading]")).map((e) => ({
    what: e.dataset.loading, text: e.textContent.trim(), visible: visible(e),
    failed: e.dataset.failed || null,
  })),
  workload_rows: document.querySelectorAll("#workloads tr[data-workload]").length,
  ready: document.body.dataset.ready || null,
};
"##;

/// The row of `name`: its state, its action buttons (verb → enabled) and the action outcome.
const ACTIONS_JS: &str = r##"
const esc = CSS.escape(arguments[0]);
const row = document.querySelector(`#workloads tr[data-workload="${esc}"]`);
const st = document.querySelector("#action-status");
const buttons = {};
if (row) for (const b of row.querySelectorAll("button[data-action]")) buttons[b.dataset.action] = !b.disabled;
return {
  row: !!row,
  state: row ? row.querySelector("td.state").textContent.trim() : null,
  buttons,
  outcome: st.hidden ? null : st.dataset.outcome || null,
  status: st.hidden ? null : st.textContent.trim(),
};
"##;

impl Http {
    /// GET `url` as text (status, body).
    fn get_text(&self, url: &str) -> (u16, String) {
        let mut resp = self
            .0
            .get(url)
            .call()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .read_to_string()
            .unwrap_or_else(|e| panic!("GET {url}: reading the body: {e}"));
        (status, body)
    }
}

impl Browser {
    /// A Chrome DevTools Protocol command through chromedriver.
    fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.cmd(
            "POST",
            "/goog/cdp/execute",
            Some(&json!({ "cmd": cmd, "params": params })),
        )
    }

    /// Every request of the page answered `latency_ms` late (0: no emulation).
    fn latency(&self, latency_ms: u64) {
        self.cdp("Network.enable", json!({}));
        self.cdp(
            "Network.emulateNetworkConditions",
            json!({
                "offline": false,
                "latency": latency_ms,
                "downloadThroughput": -1,
                "uploadThroughput": -1,
            }),
        );
    }

    /// Wait for a JavaScript dialog (confirm) and return its text.
    fn wait_dialog(&self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let url = format!("{}/alert/text", self.session);
            if let Ok((200, v)) = self.http.call("GET", &url, None) {
                return v["value"].as_str().unwrap_or("").to_string();
            }
            assert!(Instant::now() < deadline, "no dialog within {timeout:?}");
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Log in through the page's form with the agent's token and wait for the first load.
fn log_in(b: &Browser, agent: &AgentProc) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while b.js(
        "return !document.querySelector('#login').hidden && document.querySelector('main').hidden;",
        &[],
    ) != json!(true)
    {
        assert!(
            Instant::now() < deadline,
            "the login form did not show\n{}",
            agent.stderr()
        );
        thread::sleep(Duration::from_millis(100));
    }
    b.type_into("#login-token", &agent.token());
    b.click("#login-submit");
    wait_js(
        b,
        agent,
        LOADING_JS,
        &[],
        Duration::from_secs(20),
        "the first load",
        |s| s["ready"] == "1",
    );
}

/// Poll `script` until `pred` holds on its value; panics with the last value otherwise.
fn wait_js(
    b: &Browser,
    agent: &AgentProc,
    script: &str,
    args: &[Value],
    timeout: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let v = b.js(script, args);
        if pred(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "the dashboard did not show {what} within {timeout:?}: {v}\n{}",
            agent.stderr()
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// Loading states and actions. The loading state is checked twice, with nothing in the page
/// made for the test: (1) the markup served at `/` carries the loading markers
/// (`data-loading=...`, "Loading workloads…") that the script removes once the first answer
/// is shown, so the browser's first paint shows them; (2) in Chromium, every request is
/// delayed 1.5 s (DevTools network emulation), the page is loaded, and right after navigation
/// the DOM (and a screenshot taken then) shows the loading markers while the Resource Timing
/// API proves no request of the API has completed yet. Then, with the delay lifted, each
/// action button is clicked and the API must show its effect: checkpoint → one more image,
/// hibernate → hibernated, resume → running, remove (after its confirm dialog) → gone.
#[test]
fn dashboard_shows_loading_first_and_its_actions_work() {
    let _g = serial();
    let tmp = tempfile::Builder::new()
        .prefix("stasis-dash-")
        .tempdir()
        .expect("temp dir");
    let root = tmp.path().join("root");
    let agent = AgentProc::start(&root, vec![WL2]);
    let http = Http::with_token(&agent.token());

    // (1) The served markup.
    let (status, html) = Http::new().get_text(&agent.url("/"));
    assert_eq!(status, 200, "GET / answered {status}");
    for marker in [
        r#"<tr data-loading="workloads"><td colspan="10" class="loading">Loading workloads…</td></tr>"#,
        r#"data-loading="details">Loading workload details…"#,
        r#"data-loading="ffdc">Loading FFDC bundles…"#,
        r#"data-loading="events">Loading events…"#,
    ] {
        assert!(
            html.contains(marker),
            "GET / lacks the loading marker {marker}"
        );
    }

    // A workload without periodic images: its image count changes only by the actions.
    let out = stasis_at(&root, &["workload", "add", WL2, "--", "sleep", "1000"]);
    ok_stdout(&out, "stasis workload add");
    let path = format!("/v1/workloads/{WL2}");
    wait_api(
        &http,
        &agent,
        &path,
        "running",
        Duration::from_secs(30),
        |v| v["state"] == "running",
    );

    let driver = Driver::start();
    let b = Browser::start(&driver);
    b.goto(&agent.url("/"));
    log_in(&b, &agent);

    // (2) In the browser, before any answer arrives.
    b.latency(1500);
    b.goto(&agent.url("/"));
    let first = b.js(LOADING_JS, &[]);
    let shot = b.cmd("GET", "/screenshot", None);
    let after_shot = b.js(LOADING_JS, &[]);
    let shown: Vec<&str> = first["markers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|m| m["visible"] == true && m["failed"].is_null())
                .filter_map(|m| m["what"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        first["api_done"], 0,
        "the snapshot came too late (an API answer had arrived): {first}"
    );
    assert_eq!(
        after_shot["api_done"], 0,
        "the screenshot came too late (an API answer had arrived): {after_shot}"
    );
    assert!(first["main_shown"] == true, "main is hidden: {first}");
    for what in ["workloads", "details", "ffdc", "events"] {
        assert!(
            shown.contains(&what),
            "no visible loading state for {what} before the first answer: {first}"
        );
    }
    assert_eq!(first["workload_rows"], 0, "rows before any answer: {first}");
    assert!(
        shot.as_str().is_some_and(|s| s.starts_with("iVBORw0KGgo")),
        "the screenshot is not a PNG"
    );
    b.latency(0);
    wait_js(
        &b,
        &agent,
        LOADING_JS,
        &[],
        Duration::from_secs(20),
        "the workload and no loading marker once loaded",
        |s| {
            s["ready"] == "1"
                && s["workload_rows"] == 1
                && s["markers"].as_array().is_some_and(Vec::is_empty)
        },
    );

    // Actions. Running: checkpoint, hibernate and remove offered, resume not.
    let row_js = |what: &str, pred: Box<dyn Fn(&Value) -> bool>| {
        wait_js(
            &b,
            &agent,
            ACTIONS_JS,
            &[json!(WL2)],
            Duration::from_secs(60),
            what,
            pred,
        )
    };
    row_js(
        "running with checkpoint/hibernate/remove enabled, resume disabled",
        Box::new(|s| {
            s["state"] == "running"
                && s["buttons"]
                    == json!({"checkpoint": true, "hibernate": true, "resume": false, "remove": true})
        }),
    );
    let btn = |verb: &str| {
        format!("#workloads tr[data-workload=\"{WL2}\"] button[data-action=\"{verb}\"]")
    };
    let images = |v: &Value| v["images"].as_u64().unwrap_or(0);
    let before = images(&http.get_ok(&agent.url(&path)).expect("GET the workload"));

    // An error of the API is shown as the API words it: resume on a running workload (the
    // button is enabled by hand, as a stale page would have it) answers 409.
    b.js(
        "document.querySelector(arguments[0]).disabled = false;",
        &[json!(btn("resume"))],
    );
    b.click(&btn("resume"));
    let s = row_js(
        "the API's refusal of resume",
        Box::new(|s| s["outcome"] == "error"),
    );
    assert_eq!(
        s["status"],
        format!(
            "Resume {WL2} failed: workload '{WL2}' is running: only a hibernated workload can be resumed"
        ),
        "{s}"
    );

    b.click(&btn("checkpoint"));
    let s = row_js(
        "the checkpoint's outcome",
        Box::new(|s| s["outcome"] == "ok" || s["outcome"] == "error"),
    );
    assert_eq!(s["outcome"], "ok", "checkpoint failed in the page: {s}");
    let status = s["status"].as_str().unwrap_or("").to_string();
    assert!(
        status.starts_with(&format!("Checkpointed {WL2}: image ")),
        "{status}"
    );
    wait_api(
        &http,
        &agent,
        &path,
        "one more image",
        Duration::from_secs(10),
        |v| images(v) == before + 1,
    );
    let listed = http
        .get_ok(&agent.url(&format!("{path}/images")))
        .expect("GET the workload's images");
    let ids: Vec<&str> = listed["images"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["id"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        ids.iter().any(|id| status.contains(id)),
        "the page names an image the API lists ({ids:?}): {status}"
    );

    b.click(&btn("hibernate"));
    wait_api(
        &http,
        &agent,
        &path,
        "hibernated",
        Duration::from_secs(60),
        |v| v["state"] == "hibernated",
    );
    row_js(
        "hibernated with only resume and remove enabled",
        Box::new(|s| {
            s["outcome"] == "ok"
                && s["state"] == "hibernated"
                && s["buttons"]
                    == json!({"checkpoint": false, "hibernate": false, "resume": true, "remove": true})
        }),
    );

    b.click(&btn("resume"));
    wait_api(
        &http,
        &agent,
        &path,
        "running again",
        Duration::from_secs(60),
        |v| v["state"] == "running" && v["pid"].as_i64().is_some(),
    );
    let s = row_js(
        "running again after resume",
        Box::new(|s| s["outcome"] == "ok" && s["state"] == "running"),
    );
    assert!(
        s["status"]
            .as_str()
            .unwrap_or("")
            .starts_with(&format!("Resumed {WL2}")),
        "{s}"
    );

    // Remove asks first; accepted, the workload is gone from the API and the page.
    b.click(&btn("remove"));
    let text = b.wait_dialog(Duration::from_secs(10));
    assert!(
        text.contains(&format!("Remove workload {WL2}?")),
        "dialog: {text}"
    );
    b.cmd("POST", "/alert/accept", Some(&json!({})));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (st, _) = http
            .call("GET", &agent.url(&path), None)
            .unwrap_or_else(|e| panic!("{e}"));
        if st == 404 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the workload is still there after remove ({st})\n{}",
            agent.stderr()
        );
        thread::sleep(Duration::from_millis(200));
    }
    row_js(
        "the row gone and the removal reported",
        Box::new(|s| {
            s["row"] == false
                && s["outcome"] == "ok"
                && s["status"] == format!("Removed {WL2}").as_str()
        }),
    );
}
