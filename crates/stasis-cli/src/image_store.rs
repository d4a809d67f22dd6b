//! `stasis image ls|gc|export|import|quota`: the agent's per-workload chunk stores and the
//! image archive.

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use serde::Serialize;
use serde_json::json;
use stasis_agent::repo::{LocalRepo, Repository};
use stasis_image::archive::{self, ImportError};
use stasis_image::trust::{self, Keyring};
use stasis_image::{ChunkId, ImageReader};

use crate::Failed;

fn fail(code: u8) -> impl FnOnce(anyhow::Error) -> Failed {
    move |e| (code, e)
}

/// The agent's image repository under `root` (`ROOT/images`); not created.
fn repo(root: &Path) -> Result<LocalRepo, Failed> {
    let dir = stasis_agent::daemon::AgentPaths::new(root).images();
    if !dir.is_dir() {
        return Err((
            7,
            anyhow!(
                "{} holds no image repository (the agent under --root {} has kept no image yet)",
                dir.display(),
                root.display()
            ),
        ));
    }
    LocalRepo::new(dir).map_err(|e| (1, anyhow::Error::new(e)))
}

/// `NAME` (newest image) or `NAME/ID` in the repository.
pub fn resolve_in_repo(root: &Path, what: &str) -> Result<PathBuf, Failed> {
    let (name, id) = match what.split_once('/') {
        Some((n, i)) => (n, Some(i)),
        None => (what, None),
    };
    let not_found = || {
        (
            7,
            anyhow!(
                "{what:?} is neither an image directory nor an image of the agent's repository \
                 under --root {}: give a directory, a workload NAME (its newest image) or NAME/ID \
                 (see `stasis image ls`)",
                root.display()
            ),
        )
    };
    let id_like = id.is_none_or(|i| i.parse::<stasis_agent::repo::ImageId>().is_ok());
    if stasis_image::name::Name::check(name).is_err() || !id_like {
        // A path after all (its absence is reported as such when it is opened).
        return Ok(PathBuf::from(what));
    }
    let repo = repo(root).map_err(|_| not_found())?;
    let list = repo.list(name).map_err(|e| (1, anyhow::Error::new(e)))?;
    let found = match id {
        None => list.last(),
        Some(i) => list.iter().find(|im| im.id.to_string() == i),
    };
    found.map(|im| im.dir.clone()).ok_or_else(not_found)
}

#[derive(Serialize)]
struct ImageRow {
    id: String,
    dir: PathBuf,
    created_unix_ms: u64,
    /// Bytes in the image's own directory (records, manifest, signature, own chunks).
    own_bytes: u64,
    /// Bytes of the store chunks it uses.
    store_bytes: u64,
    /// Of those, bytes of chunks another image of the workload uses too.
    shared_bytes: u64,
    chunks: usize,
    parent: Option<String>,
    error: Option<String>,
}

#[derive(Serialize)]
struct WorkloadRow {
    name: String,
    store: Option<PathBuf>,
    quota_bytes: Option<u64>,
    /// Bytes of the store and every image directory together (what the quota bounds).
    used_bytes: u64,
    store_chunks: usize,
    store_bytes: u64,
    images: Vec<ImageRow>,
}

fn workloads(repo: &LocalRepo, only: Option<&str>) -> Result<Vec<String>, Failed> {
    match only {
        Some(w) => {
            if !repo
                .workloads()
                .map_err(|e| (1, e.into()))?
                .iter()
                .any(|n| n == w)
            {
                return Err((
                    7,
                    anyhow!(
                        "no workload {w:?} in {} (see `stasis image ls`)",
                        repo.root().display()
                    ),
                ));
            }
            Ok(vec![w.to_owned()])
        }
        None => repo.workloads().map_err(|e| (1, e.into())),
    }
}

fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) if m.is_file() => m.len(),
            _ => 0,
        })
        .sum()
}

fn workload_row(repo: &LocalRepo, name: &str) -> Result<WorkloadRow, Failed> {
    let store = repo.store(name).map_err(|e| (1, e.into()))?;
    let images = repo.list(name).map_err(|e| (1, e.into()))?;
    let mut uses: HashMap<ChunkId, usize> = HashMap::new();
    let mut per_image: Vec<(ImageRow, Vec<(ChunkId, u64)>)> = Vec::new();
    for im in images {
        let mut row = ImageRow {
            id: im.id.to_string(),
            dir: im.dir.clone(),
            created_unix_ms: im.created_unix_ms,
            own_bytes: dir_bytes(&im.dir),
            store_bytes: 0,
            shared_bytes: 0,
            chunks: 0,
            parent: None,
            error: None,
        };
        let mut in_store = Vec::new();
        match ImageReader::open(&im.dir) {
            Ok(r) => {
                row.chunks = r.manifest().chunks.len();
                row.parent = r.manifest().label("parent").map(str::to_owned);
                for c in &r.manifest().chunks {
                    let Ok(id) = <[u8; 32]>::try_from(c.id.as_slice()) else {
                        continue;
                    };
                    if r.chunk_is_own(&id) {
                        continue;
                    }
                    let size = r.store().and_then(|s| s.chunk_file_bytes(&id)).unwrap_or(0);
                    *uses.entry(id).or_default() += 1;
                    in_store.push((id, size));
                }
            }
            Err(e) => row.error = Some(stasis_partition::monitor::chain(&e)),
        }
        per_image.push((row, in_store));
    }
    let rows = per_image
        .into_iter()
        .map(|(mut row, in_store)| {
            for (id, size) in in_store {
                row.store_bytes += size;
                if uses.get(&id).copied().unwrap_or(0) > 1 {
                    row.shared_bytes += size;
                }
            }
            row
        })
        .collect();
    let (quota, chunks, sbytes, used) = match &store {
        Some(s) => {
            let quota = s.config().map_err(|e| (1, e.into()))?.quota_bytes;
            let (chunks, _) = s.scan().map_err(|e| (1, e.into()))?;
            let sb = chunks.iter().map(|c| c.file_bytes).sum();
            (
                quota,
                chunks.len(),
                sb,
                s.usage().map_err(|e| (1, e.into()))?,
            )
        }
        None => (
            None,
            0,
            0,
            dir_bytes(&repo.images_dir(name).map_err(|e| (1, e.into()))?),
        ),
    };
    Ok(WorkloadRow {
        name: name.to_owned(),
        store: store.as_ref().map(|s| s.path().to_owned()),
        quota_bytes: quota,
        used_bytes: used,
        store_chunks: chunks,
        store_bytes: sbytes,
        images: rows,
    })
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

pub fn ls(root: &Path, only: Option<&str>, json_out: bool) -> Result<(), Failed> {
    let repo = repo(root)?;
    let rows = workloads(&repo, only)?
        .iter()
        .map(|w| workload_row(&repo, w))
        .collect::<Result<Vec<_>, _>>()?;
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "workloads": rows })).expect("serialisable")
        );
        return Ok(());
    }
    for w in &rows {
        let quota = w.quota_bytes.map_or("none".to_owned(), mib);
        println!(
            "{}: {} image(s), store {} chunk(s) {}, used {}, quota {}",
            w.name,
            w.images.len(),
            w.store_chunks,
            mib(w.store_bytes),
            mib(w.used_bytes),
            quota
        );
        for im in &w.images {
            let parent = im
                .parent
                .as_deref()
                .map(|p| format!(" parent {p}"))
                .unwrap_or_default();
            match &im.error {
                Some(e) => println!("  {}  does not open: {e}", im.id),
                None => println!(
                    "  {}  {} chunk(s): own {}, store {} (shared {}){parent}",
                    im.id,
                    im.chunks,
                    mib(im.own_bytes),
                    mib(im.store_bytes),
                    mib(im.shared_bytes)
                ),
            }
        }
    }
    if rows.is_empty() {
        println!("no workload has images in {}", repo.root().display());
    }
    Ok(())
}

pub fn gc(root: &Path, only: Option<&str>, dry_run: bool, json_out: bool) -> Result<(), Failed> {
    let repo = repo(root)?;
    let mut reports = Vec::new();
    for w in workloads(&repo, only)? {
        let r = repo
            .gc(&w, dry_run)
            .with_context(|| format!("collecting the chunk store of workload {w}"))
            .map_err(fail(1))?;
        if let Some(r) = r {
            reports.push((w, r));
        }
    }
    if json_out {
        let v: Vec<_> = reports
            .iter()
            .map(|(w, r)| json!({"workload": w, "report": r}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "stores": v })).expect("serialisable")
        );
        return Ok(());
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    for (w, r) in &reports {
        println!(
            "{w}: {verb} {} chunk(s) ({}) and {} temporar{}; kept {} chunk(s) ({}) of {} image(s)",
            r.removed_chunks,
            mib(r.removed_bytes),
            r.removed_temps,
            if r.removed_temps == 1 { "y" } else { "ies" },
            r.kept_chunks,
            mib(r.kept_bytes),
            r.images
        );
    }
    if reports.is_empty() {
        println!("no chunk store in {}", repo.root().display());
    }
    Ok(())
}

pub fn export(dir: &Path, output: &str) -> Result<(), Failed> {
    let reader = ImageReader::open(dir)
        .with_context(|| format!("cannot export {}", dir.display()))
        .map_err(fail(4))?;
    let stats = if output == "-" {
        let out = std::io::stdout().lock();
        archive::export(&reader, BufWriter::with_capacity(1 << 20, out))
    } else {
        let path = Path::new(output);
        let f = std::fs::File::create(path)
            .with_context(|| format!("cannot create the archive {}", path.display()))
            .map_err(fail(1))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        let r = archive::export(&reader, &mut w).and_then(|s| {
            let f = w
                .into_inner()
                .map_err(|e| archive::ExportError::Write(e.into_error()))?;
            f.sync_all().map_err(archive::ExportError::Write)?;
            Ok(s)
        });
        if r.is_err() {
            let _ = std::fs::remove_file(path);
        }
        r
    }
    .with_context(|| format!("exporting {}", dir.display()))
    .map_err(fail(1))?;
    eprintln!(
        "exported {}: {} record file(s), {} chunk(s), {} bytes{}",
        dir.display(),
        stats.files,
        stats.chunks,
        stats.bytes,
        if stats.signed {
            ", with its signature"
        } else {
            ""
        }
    );
    Ok(())
}

pub fn import(root: &Path, input: &str, dir: &Path, json_out: bool) -> Result<(), Failed> {
    let stats = if input == "-" {
        archive::import(
            BufReader::with_capacity(1 << 20, std::io::stdin().lock()),
            dir,
        )
    } else {
        let f = std::fs::File::open(input)
            .with_context(|| format!("cannot open the archive {input}"))
            .map_err(fail(1))?;
        archive::import(BufReader::with_capacity(1 << 20, f), dir)
    };
    let stats = stats.map_err(|e| {
        let code = match e {
            ImportError::Io { .. } | ImportError::Read(_) => 1,
            ImportError::NotEmpty { .. } => 6,
            _ => 4,
        };
        (
            code,
            anyhow::Error::new(e).context(format!("importing into {}", dir.display())),
        )
    })?;
    // Every record and chunk was verified as it came; now the directory as restore sees it.
    let reader = ImageReader::open(dir).map_err(|e| (4, e.into()))?;
    trust::check_ownership(&reader).map_err(|e| (4, e.into()))?;
    let keyring = Keyring::load_or_create(root)
        .context("the root's image signing key")
        .map_err(fail(1))?;
    let before = trust::status(&reader, &keyring);
    let key = trust::sign(&reader, &keyring)
        .context("signing the image")
        .map_err(fail(1))?;
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "dir": dir, "files": stats.files, "chunks": stats.chunks, "bytes": stats.bytes,
                "was": before, "signed_by": key.to_string(),
            }))
            .expect("serialisable")
        );
    } else {
        println!(
            "imported {}: {} record file(s), {} chunk(s), {} bytes, each verified; was {before}; \
             now signed by this host's key {key}",
            dir.display(),
            stats.files,
            stats.chunks,
            stats.bytes
        );
    }
    std::io::stdout().flush().ok();
    Ok(())
}

pub fn quota(
    root: &Path,
    workload: &str,
    size: Option<&str>,
    json_out: bool,
) -> Result<(), Failed> {
    let dir = stasis_agent::daemon::AgentPaths::new(root).images();
    let repo = LocalRepo::new(&dir).map_err(|e| (1, e.into()))?;
    repo.images_dir(workload).map_err(|e| {
        (
            2,
            anyhow::Error::new(e).context(format!("workload {workload:?}")),
        )
    })?;
    if let Some(s) = size {
        let q = match s {
            "none" => None,
            s => Some(crate::partition::parse_size(s).map_err(fail(2))?),
        };
        repo.set_quota(workload, q).map_err(|e| (1, e.into()))?;
    }
    let store = repo.store(workload).map_err(|e| (1, e.into()))?;
    let (quota, used) = match &store {
        Some(s) => (
            s.config().map_err(|e| (1, e.into()))?.quota_bytes,
            s.usage().map_err(|e| (1, e.into()))?,
        ),
        None => (None, 0),
    };
    if json_out {
        println!(
            "{}",
            json!({"workload": workload, "quota_bytes": quota, "used_bytes": used})
        );
    } else {
        println!(
            "{workload}: quota {}, used {}",
            quota.map_or("none".to_owned(), mib),
            mib(used)
        );
    }
    Ok(())
}
