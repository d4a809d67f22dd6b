//! `partition.img`: what an image of a partition holds beside the engine's `objects.img`.
//!
//! A framed file of kind [`stasis_image::KIND_PARTITION`] holding one [`PartitionImage`]
//! (protobuf). The spec and accounting are stasis's own JSON documents (their fields are
//! versioned by serde defaults); the private mounts are protobuf records whose file contents
//! live in the image's chunk store like pages do.

use crate::accounting::Sample;
use crate::cgroup::Usage;
use crate::mounts::MountRecord;
use crate::state::Spec;
use prost::Message;

/// A partition's records in an image.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PartitionImage {
    /// Partition name at checkpoint.
    #[prost(string, tag = "1")]
    pub name: String,
    /// [`Spec`] as JSON: `cmd`, `net` (`host`/`none`/`veth`), `veth` (`host_if`, `inner_if`,
    /// `host_addr`, `inner_addr`), `rootfs`, `hostname`, `cwd`, `env`, `limits`
    /// (`memory_bytes`, `cpus`, `pids`); unknown keys are ignored, missing optional ones take
    /// their defaults.
    #[prost(string, tag = "2")]
    pub spec_json: String,
    /// Accounting totals at checkpoint ([`Usage`] as JSON: `cpu_ns`, `memory_bytes`,
    /// `memory_peak_bytes`, `io_read_bytes`, `io_write_bytes`, `pids`, `oom_kills`).
    #[prost(string, tag = "3")]
    pub usage_json: String,
    /// Accounting history (JSON lines of [`Sample`]: `t_ms` plus the usage fields).
    #[prost(bytes = "vec", tag = "4")]
    pub history: Vec<u8>,
    /// Hostname at checkpoint (the partition may have changed it).
    #[prost(string, tag = "5")]
    pub hostname: String,
    /// Private mounts, parents before children.
    #[prost(message, repeated, tag = "6")]
    pub mounts: Vec<MountRecord>,
    /// Inode of the pipe the partition's stdout/stderr went to (its monitor's); replaced by
    /// the new monitor's pipe at restore.
    #[prost(uint64, tag = "7")]
    pub log_pipe_ino: u64,
    /// Incarnation number at checkpoint.
    #[prost(uint32, tag = "8")]
    pub incarnation: u32,
    /// The partition's `CLOCK_MONOTONIC` (in its time namespace) when it was frozen, ns; the
    /// restore sets the new namespace's offsets so that it goes on from there (0: an image
    /// from before partitions had a time namespace).
    #[prost(uint64, tag = "9")]
    pub monotonic_ns: u64,
    /// The partition's `CLOCK_BOOTTIME` when it was frozen, ns (0: not recorded).
    #[prost(uint64, tag = "10")]
    pub boottime_ns: u64,
}

/// The clocks of the time namespace `pid` lives in: (`CLOCK_MONOTONIC`, `CLOCK_BOOTTIME`), ns.
pub fn clocks_of(pid: i32) -> std::io::Result<(u64, u64)> {
    use stasis_sys::sys::clock_ns;
    let off = stasis_sys::ns::timens_offsets(Some(pid))?;
    let mono = clock_ns(libc::CLOCK_MONOTONIC)? as i64 + off.monotonic;
    let boot = clock_ns(libc::CLOCK_BOOTTIME)? as i64 + off.boottime;
    Ok((mono.max(0) as u64, boot.max(0) as u64))
}

/// Offsets that make a new time namespace's clocks read `mono` and `boot` now (the saved
/// ones: the partition's clocks go on from where they were, whatever this boot's clocks say).
pub fn offsets_continuing(mono: u64, boot: u64) -> std::io::Result<stasis_sys::ns::TimeOffsets> {
    use stasis_sys::sys::clock_ns;
    if mono == 0 && boot == 0 {
        return Ok(Default::default());
    }
    Ok(stasis_sys::ns::TimeOffsets {
        monotonic: mono as i64 - clock_ns(libc::CLOCK_MONOTONIC)? as i64,
        boottime: boot as i64 - clock_ns(libc::CLOCK_BOOTTIME)? as i64,
    })
}

/// A decoded, checked partition image.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The raw record.
    pub raw: PartitionImage,
    /// The spec.
    pub spec: Spec,
    /// Accounting totals at checkpoint.
    pub usage: Usage,
    /// Accounting history.
    pub history: Vec<Sample>,
}

impl PartitionImage {
    /// Encode.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }
}

/// Why `partition.img` is refused: what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadPartitionImage(pub String);

impl std::ops::Deref for BadPartitionImage {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// Decode and check `partition.img` bytes; the error says what is wrong.
pub fn decode(bytes: &[u8]) -> Result<Decoded, BadPartitionImage> {
    decode_checked(bytes).map_err(BadPartitionImage)
}

fn decode_checked(bytes: &[u8]) -> Result<Decoded, String> {
    let raw = PartitionImage::decode(bytes).map_err(|e| format!("does not decode: {e}"))?;
    stasis_image::name::Name::check(&raw.name).map_err(|e| e.to_string())?;
    let spec: Spec = serde_json::from_str(&raw.spec_json).map_err(|e| format!("bad spec: {e}"))?;
    if spec.cmd.is_empty() {
        return Err("spec has no command".into());
    }
    let usage: Usage =
        serde_json::from_str(&raw.usage_json).map_err(|e| format!("bad accounting: {e}"))?;
    for m in &raw.mounts {
        crate::mounts::validate(m).map_err(|e| format!("mount {}: {e}", m.mountpoint))?;
    }
    let history = crate::accounting::parse(&String::from_utf8_lossy(&raw.history));
    Ok(Decoded {
        raw,
        spec,
        usage,
        history,
    })
}

/// Read `partition.img` of an image, if it is a partition image.
pub fn read(reader: &stasis_image::ImageReader) -> Result<Option<Decoded>, BadPartitionImage> {
    if !reader
        .manifest()
        .files
        .iter()
        .any(|f| f.name == stasis_image::PARTITION_FILE)
    {
        return Ok(None);
    }
    let bytes = reader
        .read_file(stasis_image::PARTITION_FILE)
        .map_err(|e| {
            BadPartitionImage(format!("cannot read {}: {e}", stasis_image::PARTITION_FILE))
        })?;
    decode(&bytes).map(Some)
}
