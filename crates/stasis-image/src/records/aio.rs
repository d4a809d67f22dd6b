//! Linux AIO contexts (`io_setup`): the ring the kernel maps into the process.

/// The ring of an AIO context of the process (`Vma.aio`, on a `VmaKind::Aio` mapping). The
/// context id (`aio_context_t`) is the ring's address, `Vma.start`. Restored by `io_setup`
/// in the task (a request count giving a ring of the same length), `mremap` to the saved
/// address (the kernel moves the context id with it), requests completed at once until the
/// kernel's tail is `tail`, then `head` and `events` written over the ring.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AioRing {
    /// Index of the context in the process's table (`aio_ring.id`; informational).
    #[prost(uint32, tag = "1")]
    pub id: u32,
    /// Number of io_events the ring holds (`aio_ring.nr`).
    #[prost(uint32, tag = "2")]
    pub nr: u32,
    /// Next event to reap (`aio_ring.head`).
    #[prost(uint32, tag = "3")]
    pub head: u32,
    /// Where the kernel writes the next completion (`aio_ring.tail`).
    #[prost(uint32, tag = "4")]
    pub tail: u32,
    /// `aio_ring.magic` (0xa10a10a1).
    #[prost(uint32, tag = "5")]
    pub magic: u32,
    /// `aio_ring.compat_features` (1).
    #[prost(uint32, tag = "6")]
    pub compat_features: u32,
    /// `aio_ring.incompat_features` (0: a ring with others is refused).
    #[prost(uint32, tag = "7")]
    pub incompat_features: u32,
    /// `aio_ring.header_length` (32).
    #[prost(uint32, tag = "8")]
    pub header_length: u32,
    /// The completed, unreaped `struct io_event`s from `head` to `tail` (32 bytes each, in
    /// order, wrapping around the ring).
    #[prost(bytes = "vec", tag = "9")]
    pub events: Vec<u8>,
}
