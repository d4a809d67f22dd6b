//! `FileObject`'s kind-specific state became a prost `oneof` (tags 15–23), replacing nine
//! optional message fields with the same tags. These tests prove the wire format did not
//! change: records written with the old definition decode into the new one with the same
//! state and re-encode to the same bytes, in both directions, and the committed images written
//! by earlier builds (the `image-v1` fixture, the fuzz corpus) decode and re-encode unchanged.

use prost::Message;
use stasis_image::records::{self as rec, file_object::State, FileObject};
use std::path::Path;

/// `FileObject` exactly as it was defined before the `oneof` (tags 1–23).
#[derive(Clone, PartialEq, prost::Message)]
struct LegacyFileObject {
    #[prost(uint32, tag = "1")]
    id: u32,
    #[prost(enumeration = "rec::FileKind", tag = "2")]
    kind: i32,
    #[prost(string, tag = "3")]
    path: String,
    #[prost(uint32, tag = "4")]
    flags: u32,
    #[prost(uint64, tag = "5")]
    pos: u64,
    #[prost(bool, tag = "6")]
    deleted: bool,
    #[prost(message, repeated, tag = "7")]
    content: Vec<rec::PageRun>,
    #[prost(uint64, tag = "8")]
    size: u64,
    #[prost(uint32, tag = "9")]
    pipe_id: u32,
    #[prost(bool, tag = "10")]
    write_end: bool,
    #[prost(uint32, tag = "11")]
    shmem_id: u32,
    #[prost(uint64, tag = "12")]
    rdev: u64,
    #[prost(uint32, tag = "13")]
    mode: u32,
    #[prost(message, optional, tag = "14")]
    file_id: Option<rec::FileIdentity>,
    #[prost(message, optional, tag = "15")]
    eventfd: Option<rec::EventfdState>,
    #[prost(message, optional, tag = "16")]
    epoll: Option<rec::EpollState>,
    #[prost(message, optional, tag = "17")]
    timerfd: Option<rec::TimerfdState>,
    #[prost(message, optional, tag = "18")]
    signalfd: Option<rec::SignalfdState>,
    #[prost(message, optional, tag = "19")]
    inotify: Option<rec::InotifyState>,
    #[prost(message, optional, tag = "20")]
    unix: Option<rec::UnixSocketState>,
    #[prost(message, optional, tag = "21")]
    pty: Option<rec::PtyState>,
    #[prost(message, optional, tag = "22")]
    inet: Option<rec::InetSocketState>,
    #[prost(message, optional, tag = "23")]
    mq: Option<rec::MqueueState>,
}

fn legacy_base() -> LegacyFileObject {
    LegacyFileObject {
        id: 3,
        kind: rec::FileKind::Regular as i32,
        path: "/dev/null".into(),
        flags: 2,
        pos: 17,
        pipe_id: 0,
        mode: 0o600,
        ..Default::default()
    }
}

/// One legacy object per state kind (default state and a non-default one), with the state
/// the new definition must decode.
fn cases() -> Vec<(LegacyFileObject, Option<State>)> {
    let mut out = vec![(legacy_base(), None)];
    let pty = rec::PtyState {
        index: 4,
        winsize: vec![24, 80, 0, 0],
        locked: true,
        ..Default::default()
    };
    let eventfd = rec::EventfdState {
        count: 7,
        semaphore: true,
    };
    type Case = (fn(&mut LegacyFileObject), State);
    let set: Vec<Case> = vec![
        (
            |l| {
                l.eventfd = Some(rec::EventfdState {
                    count: 7,
                    semaphore: true,
                })
            },
            State::Eventfd(eventfd),
        ),
        (
            |l| l.epoll = Some(Default::default()),
            State::Epoll(Default::default()),
        ),
        (
            |l| l.timerfd = Some(Default::default()),
            State::Timerfd(Default::default()),
        ),
        (
            |l| l.signalfd = Some(Default::default()),
            State::Signalfd(Default::default()),
        ),
        (
            |l| l.inotify = Some(Default::default()),
            State::Inotify(Default::default()),
        ),
        (
            |l| l.unix = Some(Default::default()),
            State::Unix(Default::default()),
        ),
        (
            |l| {
                l.pty = Some(rec::PtyState {
                    index: 4,
                    winsize: vec![24, 80, 0, 0],
                    locked: true,
                    ..Default::default()
                })
            },
            State::Pty(pty),
        ),
        (
            |l| l.inet = Some(Default::default()),
            State::Inet(Default::default()),
        ),
        (
            |l| l.mq = Some(Default::default()),
            State::Mq(Default::default()),
        ),
    ];
    for (f, state) in set {
        let mut l = legacy_base();
        f(&mut l);
        out.push((l, Some(state)));
    }
    out
}

#[test]
fn legacy_file_objects_decode_into_the_oneof_and_back_byte_for_byte() {
    for (legacy, want) in cases() {
        let old_bytes = legacy.encode_to_vec();
        let new = FileObject::decode(old_bytes.as_slice()).expect("old record decodes");
        assert_eq!(new.state, want, "state of {legacy:?}");
        assert_eq!(
            (new.id, new.pos, new.mode),
            (legacy.id, legacy.pos, legacy.mode)
        );
        assert_eq!(
            new.encode_to_vec(),
            old_bytes,
            "re-encoding changes the bytes"
        );
        // And an older reader still reads what the new definition writes.
        let back = LegacyFileObject::decode(new.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(back, legacy);
    }
}

#[test]
fn accessors_see_only_their_own_kind() {
    let mut f = FileObject {
        state: Some(State::Pty(rec::PtyState {
            index: 9,
            ..Default::default()
        })),
        ..Default::default()
    };
    assert_eq!(f.pty().map(|p| p.index), Some(9));
    assert!(f.unix().is_none() && f.inet().is_none() && f.eventfd().is_none());
    f.pty_mut().expect("pty").index = 10;
    assert_eq!(f.pty().map(|p| p.index), Some(10));
    assert!(f.unix_mut().is_none());
}

/// The payload of a framed record file (56-byte header, checked loosely: this is about the
/// protobuf inside).
fn payload(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..8], b"STASISIM", "{}", path.display());
    bytes[56..].to_vec()
}

#[test]
fn committed_images_from_earlier_builds_decode_and_reencode_unchanged() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for img in [
        root.join("../stasis-cli/tests/fixtures/image-v1/objects.img"),
        root.join("tests/corpus/objects.img"),
    ] {
        let bytes = payload(&img);
        let ck = rec::Checkpoint::decode(bytes.as_slice())
            .unwrap_or_else(|e| panic!("{}: {e}", img.display()));
        assert!(!ck.processes.is_empty(), "{}: no process", img.display());
        assert_eq!(
            ck.encode_to_vec(),
            bytes,
            "{}: re-encoding with the current records changes the bytes",
            img.display()
        );
    }
}
