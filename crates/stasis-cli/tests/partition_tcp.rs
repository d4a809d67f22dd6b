//! An established TCP connection from a `--net veth` partition to a server on the host side of
//! its veth pair survives a checkpoint that ends the partition and its restore: the partition's
//! network namespace is recreated with the same addresses and the socket is repaired into it.
#![cfg(target_os = "linux")]

mod common;

use common::{serial, workload_bin};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{ok_stdout as ok, stasis_at as st};

fn wait_file(p: &Path, limit: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if p.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

struct Cleanup(std::path::PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = st(&self.0, &["rm", "-f", "tcpv"]);
    }
}

#[test]
fn veth_partition_keeps_its_tcp_connection() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("state");
    let ctl = tmp.path().join("ctl");
    let img = tmp.path().join("img");
    std::fs::create_dir_all(&ctl).unwrap();
    let _c = Cleanup(root.clone());
    let wl = workload_bin("tcp_client");
    // The workload starts once the test has written the server's address.
    let script = format!(
        "while [ ! -s {c}/addr ]; do sleep 0.05; done; exec {wl} {c} $(cat {c}/addr)",
        c = ctl.display(),
        wl = wl.display()
    );
    ok(
        &st(
            &root,
            &[
                "run", "--name", "tcpv", "--net", "veth", "--", "/bin/sh", "-c", &script,
            ],
        ),
        "run",
    );
    let rec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join("partitions/tcpv/partition.json")).unwrap(),
    )
    .unwrap();
    let host = rec["spec"]["veth"]["host_addr"]
        .as_str()
        .expect("a veth partition records its addresses")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    // An echo server on the host end of the pair only.
    let srv = TcpListener::bind((host.as_str(), 0)).unwrap();
    let port = srv.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in srv.incoming() {
            let Ok(mut c) = c else { return };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                loop {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if c.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    std::fs::write(ctl.join("addr"), format!("{host}:{port}")).unwrap();
    assert!(
        wait_file(&ctl.join("ready"), Duration::from_secs(10)),
        "workload not ready"
    );
    std::thread::sleep(Duration::from_millis(300));
    ok(
        &st(
            &root,
            &[
                "checkpoint",
                "--name",
                "tcpv",
                "--dir",
                img.to_str().unwrap(),
            ],
        ),
        "checkpoint",
    );
    // Down for a while: the peer's retransmissions meet no socket and no address.
    std::thread::sleep(Duration::from_millis(800));
    ok(
        &st(&root, &["restore", "--dir", img.to_str().unwrap()]),
        "restore",
    );
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(ctl.join("verify"), b"1").unwrap();
    assert!(
        wait_file(&ctl.join("result"), Duration::from_secs(20)),
        "no result; log: {}",
        std::fs::read_to_string(root.join("partitions/tcpv/output.log")).unwrap_or_default()
    );
    let result = std::fs::read_to_string(ctl.join("result")).unwrap();
    assert!(result.starts_with("PASS"), "{result}");
}
