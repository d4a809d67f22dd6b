//! Incremental images: the image a checkpoint was taken relative to.

/// The parent of an incremental image (`Checkpoint.parent`). Page runs of the image may name
/// chunks that only the parent (or one of its own parents) holds; restore opens the chain and
/// reads each chunk from the first image that has it. The parent's manifest is checked against
/// `manifest_blake3`, so an image authenticates its whole chain (a signed child signs the hash
/// of its parent's manifest, which lists the blake3 of every file and chunk).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ParentRef {
    /// The parent's directory, relative to this image's directory (`../base`); or absolute.
    #[prost(string, tag = "1")]
    pub dir: String,
    /// blake3 of the parent's `manifest.img` as stored (framed header and payload).
    #[prost(bytes = "vec", tag = "2")]
    pub manifest_blake3: Vec<u8>,
}
