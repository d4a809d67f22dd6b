//! Pipes and FIFOs.

/// A pipe (or FIFO) and the bytes buffered in it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PipeObject {
    #[prost(uint32, tag = "1")]
    pub id: u32,
    #[prost(uint64, tag = "2")]
    pub ino: u64,
    #[prost(bytes = "vec", tag = "3")]
    pub data: Vec<u8>,
    /// F_GETPIPE_SZ.
    #[prost(uint32, tag = "4")]
    pub capacity: u32,
    /// The tree holds no read end (its reader is outside the tree).
    #[prost(bool, tag = "5")]
    pub external_reader: bool,
    /// The tree holds no write end (its writer is outside the tree).
    #[prost(bool, tag = "6")]
    pub external_writer: bool,
    /// FIFO path (empty for an unnamed pipe).
    #[prost(string, tag = "7")]
    pub fifo_path: String,
}
