//! System V IPC: semaphore sets and message queues (segments are shmem objects).

/// A System V semaphore set.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SysvSem {
    #[prost(int32, tag = "1")]
    pub id: i32,
    #[prost(int32, tag = "2")]
    pub key: i32,
    #[prost(uint32, tag = "3")]
    pub mode: u32,
    #[prost(uint32, repeated, tag = "4")]
    pub values: Vec<u32>,
}

/// One message of a System V queue.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SysvMessage {
    #[prost(int64, tag = "1")]
    pub mtype: i64,
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
}

/// A System V message queue with its messages in order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SysvMsg {
    #[prost(int32, tag = "1")]
    pub id: i32,
    #[prost(int32, tag = "2")]
    pub key: i32,
    #[prost(uint32, tag = "3")]
    pub mode: u32,
    #[prost(message, repeated, tag = "4")]
    pub messages: Vec<SysvMessage>,
}
