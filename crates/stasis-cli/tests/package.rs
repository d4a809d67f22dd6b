//! The Debian package (issue 12): `scripts/package.sh` builds it with cargo-deb, `dpkg -i`
//! installs it on this machine, and the installed `stasis` works as a system tool: `check`,
//! `run`, `checkpoint`/`restore`, the agent started from the unit's `ExecStart` line, `man
//! stasis-checkpoint`, bash completion; the unit passes `systemd-analyze verify` (these
//! machines do not run systemd as pid 1). The package is removed again at the end unless it
//! was installed before the test.
#![cfg(target_os = "linux")]

mod common;

use common::{run_cmd, serial, spawn_owned};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = "/usr/bin/stasis";
const UNIT: &str = "/lib/systemd/system/stasis-agent.service";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Every command goes through the harness's `run_cmd`: its zombie sweep reaps exited children
/// named like a workload or "stasis" unless told to keep off, and would steal the status.
fn run(cmd: &mut Command) -> Output {
    let o = run_cmd(cmd);
    assert!(
        o.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
    o
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Removes the package on drop (if the test installed it), and the partitions it made.
struct Installed {
    was_installed: bool,
    root: PathBuf,
}

impl Drop for Installed {
    fn drop(&mut self) {
        for n in ["pkg1", "pkg2"] {
            let _ = Command::new(BIN)
                .arg("--root")
                .arg(&self.root)
                .args(["rm", "-f", n])
                .output();
        }
        if !self.was_installed {
            let _ = Command::new("dpkg").args(["-r", "stasis"]).output();
        }
    }
}

fn stasis(root: &Path, args: &[&str]) -> Output {
    run(Command::new(BIN).arg("--root").arg(root).args(args))
}

#[test]
fn the_package_installs_a_working_system_tool() {
    let _g = serial();
    // Build it.
    let o = run(Command::new("bash")
        .arg(repo().join("scripts/package.sh"))
        .current_dir(repo()));
    let deb = PathBuf::from(text(&o.stdout).lines().last().unwrap_or("").trim());
    assert!(
        deb.extension().is_some_and(|e| e == "deb") && deb.exists(),
        "no package path on stdout: {:?}\n{}",
        text(&o.stdout),
        text(&o.stderr)
    );

    // What it holds and declares.
    let contents = text(&run(Command::new("dpkg-deb").arg("-c").arg(&deb)).stdout);
    for f in [
        "./usr/bin/stasis",
        "./usr/share/man/man1/stasis.1.gz",
        "./usr/share/man/man1/stasis-checkpoint.1.gz",
        "./usr/share/man/man1/stasis-logs.1.gz",
        "./usr/share/bash-completion/completions/stasis",
        "./usr/share/zsh/vendor-completions/_stasis",
        "./usr/share/fish/vendor_completions.d/stasis.fish",
        "./lib/systemd/system/stasis-agent.service",
    ] {
        assert!(
            contents.contains(f),
            "{f} missing from the package:\n{contents}"
        );
    }
    let field = |f: &str| text(&run(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(f)).stdout);
    let depends = field("Depends");
    assert!(
        depends.contains("nftables") && depends.contains("iproute2"),
        "Depends: {depends}"
    );
    assert!(field("Recommends").contains("etcd-server"));

    // Install it.
    let was_installed = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "stasis"])
        .output()
        .is_ok_and(|o| text(&o.stdout).contains("install ok installed"));
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let _installed = Installed {
        was_installed,
        root: root.clone(),
    };
    run(Command::new("dpkg").arg("-i").arg(&deb));

    // Stripped, and it names its commit.
    let sections = text(&run(Command::new("readelf").args(["-S", "-W", BIN])).stdout);
    assert!(!sections.contains(".debug_info"), "{BIN} is not stripped");
    let v = text(&run(Command::new(BIN).arg("--version")).stdout);
    assert!(v.starts_with("stasis ") && v.contains("(commit "), "{v}");
    stasis(&root, &["check"]);

    // A partition: run, checkpoint (ends it), restore under another name.
    stasis(
        &root,
        &[
            "run",
            "--name",
            "pkg1",
            "--",
            "/bin/sh",
            "-c",
            "echo hi; sleep 1000",
        ],
    );
    let img = tmp.path().join("img");
    stasis(
        &root,
        &[
            "checkpoint",
            "--name",
            "pkg1",
            "--dir",
            img.to_str().unwrap(),
        ],
    );
    stasis(
        &root,
        &["restore", "--dir", img.to_str().unwrap(), "--name", "pkg2"],
    );
    let ps = text(&stasis(&root, &["ps"]).stdout);
    assert!(ps.contains("pkg2"), "{ps}");
    stasis(&root, &["rm", "-f", "pkg1", "pkg2"]);

    // The unit: verified, and its ExecStart line (with a test root) runs the agent.
    run(Command::new("systemd-analyze").args(["verify", UNIT]));
    let unit = std::fs::read_to_string(UNIT).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let words: Vec<String> = exec
        .split_whitespace()
        .map(|w| {
            if w == "/var/lib/stasis" {
                root.to_str().unwrap().to_string()
            } else {
                w.to_string()
            }
        })
        .collect();
    assert_eq!(words[0], BIN, "{exec}");
    assert!(words.iter().any(|w| w == root.to_str().unwrap()), "{exec}");
    let mut agent = spawn_owned(
        Command::new(&words[0])
            .args(&words[1..])
            .args(["--listen", "off"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let ls = run_cmd(Command::new(BIN).arg("--root").arg(&root).args([
        "workload",
        "ls",
        "--agent-wait",
        "20s",
    ]));
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(ls.status.success(), "{}", text(&ls.stderr));
    assert!(text(&ls.stdout).starts_with("NAME"), "{}", text(&ls.stdout));

    // man stasis-checkpoint, and bash completion of the verbs.
    let page = text(
        &run(Command::new("man")
            .arg("stasis-checkpoint")
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100"))
        .stdout,
    );
    assert!(
        page.contains("stasis-checkpoint") && page.contains("--leave-running"),
        "{page}"
    );
    let words = text(
        &run(Command::new("bash").arg("-c").arg(
            "source /usr/share/bash-completion/completions/stasis; \
             COMP_WORDS=(stasis chec); COMP_CWORD=1; COMP_LINE='stasis chec'; COMP_POINT=11; \
             _stasis stasis chec stasis; printf '%s\\n' \"${COMPREPLY[@]}\"",
        ))
        .stdout,
    );
    let words: Vec<&str> = words.lines().collect();
    assert!(
        words.contains(&"checkpoint") && words.contains(&"check"),
        "{words:?}"
    );
}
