//! Packet sockets (AF_PACKET).

/// A packet socket without an mmap ring.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PacketSocketState {
    /// SOCK_RAW or SOCK_DGRAM.
    #[prost(int32, tag = "1")]
    pub sock_type: i32,
    /// Protocol given to socket() (network byte order, as in `sockaddr_ll`).
    #[prost(int32, tag = "2")]
    pub protocol: i32,
    /// Raw `sockaddr_ll` from getsockname (protocol and interface index bound).
    #[prost(bytes = "vec", tag = "3")]
    pub local: Vec<u8>,
    /// Socket options as read back (PACKET_VERSION, PACKET_AUXDATA, PACKET_ORIGDEV,
    /// PACKET_RESERVE, PACKET_TIMESTAMP, PACKET_QDISC_BYPASS, buffer sizes, …).
    #[prost(message, repeated, tag = "4")]
    pub options: Vec<super::SockOpt>,
    /// Memberships (PACKET_ADD_MEMBERSHIP).
    #[prost(message, repeated, tag = "5")]
    pub memberships: Vec<PacketMembership>,
    /// Classic BPF filter (8 bytes per instruction); empty: none.
    #[prost(bytes = "vec", tag = "6")]
    pub filter: Vec<u8>,
    /// PACKET_FANOUT as read back (group id | type << 16; 0: none).
    #[prost(uint32, tag = "7")]
    pub fanout: u32,
    /// Packets that were waiting to be read at checkpoint (not restored: a packet socket
    /// sees what the network delivers, and these are lost as on a busy link).
    #[prost(uint32, tag = "8")]
    pub dropped: u32,
}

/// One `struct packet_mreq`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PacketMembership {
    #[prost(int32, tag = "1")]
    pub ifindex: i32,
    /// PACKET_MR_MULTICAST, PACKET_MR_PROMISC, PACKET_MR_ALLMULTI, PACKET_MR_UNICAST.
    #[prost(uint32, tag = "2")]
    pub mr_type: u32,
    #[prost(bytes = "vec", tag = "3")]
    pub address: Vec<u8>,
}
