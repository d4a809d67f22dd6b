//! `stasis image trust|verify`: image trust from the command line.

use anyhow::anyhow;
use clap::Subcommand;
use serde_json::json;
use stasis_image::trust::{self, Keyring, SignatureStatus, Trust};
use stasis_image::ImageReader;
use std::path::{Path, PathBuf};

use crate::Failed;

/// What `--insecure-unsigned` prints on stderr.
pub const INSECURE_WARNING: &str = "stasis: warning: --insecure-unsigned: the image's signature \
is not checked. An image is code: it sets credentials, memory and registers; anyone who could \
write its directory gets a process with the saved credentials (root, capabilities).";

#[derive(Subcommand)]
pub enum ImageCmd {
    /// Accept an image from elsewhere (another root, another host): verify every record and
    /// chunk, check that only root can write its files, then sign it with this root's host key
    /// (ROOT/keys/host.key) so that `stasis restore` accepts it. Check where it comes from
    /// first: an image is code (credentials, memory, registers).
    Trust {
        /// Image directory.
        dir: PathBuf,
    },
    /// Check an image: integrity of every record and chunk, ownership and modes, and who
    /// signed it. Exit 0 if `stasis restore` would accept it, 4 otherwise.
    Verify {
        /// Image directory.
        dir: PathBuf,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

fn bad(e: impl Into<anyhow::Error>) -> Failed {
    (4, e.into())
}

/// The trust `stasis restore` applies (prints the warning for `--insecure-unsigned`).
pub fn trust_for_restore(root: &Path, insecure_unsigned: bool) -> Result<Trust, Failed> {
    if insecure_unsigned {
        eprintln!("{INSECURE_WARNING}");
        return Ok(Trust::InsecureUnsigned);
    }
    Keyring::load(root)
        .map(Trust::Verify)
        .map_err(|e| (1, anyhow::Error::new(e).context("loading the root's keys")))
}

/// The signature status of an image under `root`'s keys (for `inspect`; never refuses).
pub fn signature_status(root: &Path, reader: &ImageReader) -> SignatureStatus {
    match Keyring::load(root) {
        Ok(k) => trust::status(reader, &k),
        Err(e) => SignatureStatus::Invalid {
            reason: format!("cannot load the keys of {}: {e}", root.display()),
        },
    }
}

pub fn run(root: &Path, cmd: ImageCmd) -> Result<(), Failed> {
    match cmd {
        ImageCmd::Trust { dir } => trust_image(root, &dir),
        ImageCmd::Verify { dir, json } => verify(root, &dir, json),
    }
}

fn ownership_hint(dir: &Path, e: trust::TrustError) -> Failed {
    let d = dir.display();
    bad(anyhow::Error::new(e).context(format!(
        "image {d} is not trusted: only root may be able to write it; if you know where it comes \
         from, run `chown -R root: {d} && chmod -R go-w {d}` and try again"
    )))
}

fn trust_image(root: &Path, dir: &Path) -> Result<(), Failed> {
    let reader = ImageReader::open(dir).map_err(bad)?;
    let report = reader
        .verify_all()
        .map_err(|e| bad(anyhow::Error::new(e).context("image verification failed")))?;
    trust::check_ownership(&reader).map_err(|e| ownership_hint(dir, e))?;
    let keyring = Keyring::load_or_create(root).map_err(|e| {
        (
            1,
            anyhow::Error::new(e).context("the root's image signing key"),
        )
    })?;
    let before = trust::status(&reader, &keyring);
    let id = trust::sign(&reader, &keyring)
        .map_err(|e| (1, anyhow::Error::new(e).context("signing the image")))?;
    eprintln!(
        "trusted {}: {} record file(s), {} chunk(s) verified; was {before}; now signed by this host's key {id}",
        dir.display(),
        report.files,
        report.chunks
    );
    Ok(())
}

fn verify(root: &Path, dir: &Path, json_out: bool) -> Result<(), Failed> {
    let reader = ImageReader::open(dir).map_err(bad)?;
    let integrity = reader.verify_all();
    let ownership = trust::check_ownership(&reader);
    let keyring =
        Keyring::load(root).map_err(|e| (1, anyhow::Error::new(e).context("loading keys")))?;
    let signature = trust::status(&reader, &keyring);
    let signed = matches!(
        signature,
        SignatureStatus::Host { .. } | SignatureStatus::Trusted { .. }
    );
    let ok = integrity.is_ok() && ownership.is_ok() && signed;
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "dir": dir.display().to_string(),
                "integrity": match &integrity {
                    Ok(r) => json!({"ok": true, "files": r.files, "chunks": r.chunks}),
                    Err(e) => json!({"ok": false, "error": stasis_partition::monitor::chain(e)}),
                },
                "ownership": match &ownership {
                    Ok(()) => json!({"ok": true}),
                    Err(e) => json!({"ok": false, "error": e.to_string()}),
                },
                "signature": signature,
                "restorable": ok,
            }))
            .expect("serialisable")
        );
    } else {
        match &integrity {
            Ok(r) => println!(
                "integrity: ok ({} record file(s), {} chunk(s))",
                r.files, r.chunks
            ),
            Err(e) => println!("integrity: FAILED: {}", stasis_partition::monitor::chain(e)),
        }
        match &ownership {
            Ok(()) => println!("ownership: ok (only root can write it)"),
            Err(e) => println!("ownership: REFUSED: {e}"),
        }
        println!("signature: {signature}");
    }
    if ok {
        Ok(())
    } else {
        Err((
            4,
            anyhow!(
                "image {} would be refused by restore (see above; `stasis image trust {}` signs it)",
                dir.display(),
                dir.display()
            ),
        ))
    }
}
