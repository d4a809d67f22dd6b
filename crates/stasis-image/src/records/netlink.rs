//! Netlink sockets.

/// A netlink socket (any protocol) with no message waiting to be read.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NetlinkSocketState {
    /// SOCK_RAW or SOCK_DGRAM.
    #[prost(int32, tag = "1")]
    pub sock_type: i32,
    /// NETLINK_ROUTE, NETLINK_KOBJECT_UEVENT, …
    #[prost(int32, tag = "2")]
    pub protocol: i32,
    /// Port id the socket is bound to (0: not bound yet).
    #[prost(uint32, tag = "3")]
    pub portid: u32,
    /// Multicast groups joined: bit `g - 1` of word `(g - 1) / 32` for group `g`
    /// (`NETLINK_LIST_MEMBERSHIPS`).
    #[prost(uint32, repeated, tag = "4")]
    pub groups: Vec<u32>,
    /// Connected to this port id (0: not connected).
    #[prost(uint32, tag = "5")]
    pub dst_portid: u32,
    /// Connected to this group (0: none).
    #[prost(uint32, tag = "6")]
    pub dst_group: u32,
    /// Socket options (NETLINK_PKTINFO, NETLINK_BROADCAST_ERROR, NETLINK_NO_ENOBUFS,
    /// NETLINK_LISTEN_ALL_NSID, NETLINK_CAP_ACK, NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK,
    /// buffer sizes, …) as read back.
    #[prost(message, repeated, tag = "7")]
    pub options: Vec<super::SockOpt>,
    /// Classic BPF filter (8 bytes per instruction); empty: none.
    #[prost(bytes = "vec", tag = "8")]
    pub filter: Vec<u8>,
}
