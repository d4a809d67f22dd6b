//! `stasis image trust|verify|ls|gc|export|import|quota`: image trust, the agent's image
//! repository and its per-workload chunk stores, and moving images as one archive.

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
        /// Image directory, or a workload of the agent's repository (NAME: its newest image;
        /// NAME/ID: that image; see `stasis image ls`).
        #[arg(value_name = "DIR|NAME")]
        dir: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// List the images of the agent's repository (ROOT/images): per workload its chunk store,
    /// quota and usage; per image its size in its own directory, the bytes of store chunks it
    /// uses, how many of those other images of the workload use too (shared), and its parent.
    Ls {
        /// Only this workload.
        #[arg(long)]
        workload: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Remove the chunks of the workloads' stores that no committed or pending image lists
    /// (and temporaries left by a crashed checkpoint). Waits for a checkpoint in progress.
    Gc {
        /// Only this workload.
        #[arg(long)]
        workload: Option<String>,
        /// Count only; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Write an image as one streamable archive: its manifest first, then its record files and
    /// exactly the chunks it needs (from its directory or its workload's store).
    Export {
        /// Image directory, NAME (newest image of a workload) or NAME/ID.
        #[arg(value_name = "DIR|NAME")]
        image: String,
        /// Archive file (created, or replaced), or `-` for stdout.
        #[arg(short = 'o', long = "output", value_name = "FILE|-")]
        output: String,
    },
    /// Read an archive written by `export` into a new image directory, verifying every frame
    /// as it arrives (nothing is kept of a corrupt or truncated archive); then sign the image
    /// with this root's host key so that `stasis restore` accepts it. Check where it comes
    /// from first: an image is code (credentials, memory, registers).
    Import {
        /// Archive file, or `-` for stdin.
        #[arg(value_name = "FILE|-")]
        input: String,
        /// New image directory (created; an existing one must hold no image files).
        #[arg(long)]
        dir: PathBuf,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show or set a workload's image quota: the most bytes its chunk store and images take
    /// together. A checkpoint that would exceed it fails and the previous images stay.
    Quota {
        /// Workload name.
        workload: String,
        /// New quota (e.g. 512M, 4G), or `none` to remove it; omitted: show it.
        #[arg(value_name = "SIZE|none")]
        size: Option<String>,
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
        ImageCmd::Verify { dir, json } => verify(root, &resolve(root, &dir)?, json),
        ImageCmd::Ls { workload, json } => crate::image_store::ls(root, workload.as_deref(), json),
        ImageCmd::Gc {
            workload,
            dry_run,
            json,
        } => crate::image_store::gc(root, workload.as_deref(), dry_run, json),
        ImageCmd::Export { image, output } => {
            crate::image_store::export(&resolve(root, &image)?, &output)
        }
        ImageCmd::Import { input, dir, json } => {
            crate::image_store::import(root, &input, &dir, json)
        }
        ImageCmd::Quota {
            workload,
            size,
            json,
        } => crate::image_store::quota(root, &workload, size.as_deref(), json),
    }
}

/// An image directory, or `NAME` (the workload's newest image) or `NAME/ID` in the agent's
/// repository under `root`.
pub fn resolve(root: &Path, what: &str) -> Result<PathBuf, Failed> {
    let p = Path::new(what);
    if p.is_dir() {
        return Ok(p.to_owned());
    }
    crate::image_store::resolve_in_repo(root, what)
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
