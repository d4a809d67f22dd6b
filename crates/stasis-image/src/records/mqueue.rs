//! POSIX message queues.

/// One queued POSIX message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MqMessage {
    #[prost(uint32, tag = "1")]
    pub prio: u32,
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
}

/// A POSIX message queue (on the first description that refers to it: its messages).
#[derive(Clone, PartialEq, prost::Message)]
pub struct MqueueState {
    /// Name, with its leading '/'.
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint32, tag = "2")]
    pub mode: u32,
    #[prost(uint32, tag = "3")]
    pub uid: u32,
    #[prost(uint32, tag = "4")]
    pub gid: u32,
    #[prost(int64, tag = "5")]
    pub maxmsg: i64,
    #[prost(int64, tag = "6")]
    pub msgsize: i64,
    /// Messages in delivery order (highest priority first), when `holds_messages`.
    #[prost(message, repeated, tag = "7")]
    pub messages: Vec<MqMessage>,
    /// This record carries the queue's messages (the first description seen for the queue).
    #[prost(bool, tag = "8")]
    pub holds_messages: bool,
}
