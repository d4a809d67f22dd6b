//! Fuzzing of image decoding, on stable (proptest): the manifest decoder and its consistency
//! check, the framed-file reader, the chunk reader, the signature parser and the kernel-object
//! records. Each target gets arbitrary bytes and mutations (bit flips, inserted and deleted
//! bytes, truncation) of the valid encodings in `tests/corpus/` (committed: `manifest.img` and
//! `objects.img` of the format-version-1 fixture, one of its chunks, a `signature.img`). Every
//! input must give an `Err` or a value, never a panic, and no allocation beyond the input's
//! own bounds. The whole file runs in well under a minute.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use prost::Message;
use stasis_image::records as rec;
use stasis_image::safefs::{Dir, PRIVATE_FILE};
use stasis_image::trust::Signature;
use stasis_image::{read_chunk_file, read_framed, Manifest, KIND_MANIFEST, KIND_OBJECTS};

fn corpus(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(name);
    fs::read(&p).unwrap_or_else(|e| panic!("corpus file {}: {e}", p.display()))
}

fn chunk_corpus() -> (PathBuf, [u8; 32]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let e = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("chunk-")
        })
        .expect("a chunk in the corpus");
    let hex = e.file_name().unwrap().to_string_lossy()["chunk-".len()..].to_string();
    let mut id = [0u8; 32];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    (e, id)
}

fn payload_of(name: &str) -> Vec<u8> {
    corpus(name).split_off(56)
}

#[derive(Clone, Debug)]
enum Op {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize, usize),
    Truncate(usize),
    Set(usize, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(p, b)| Op::Flip(p, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Op::Insert(p, b)),
        (any::<usize>(), 1usize..16).prop_map(|(p, n)| Op::Delete(p, n)),
        any::<usize>().prop_map(Op::Truncate),
        (
            any::<usize>(),
            prop_oneof![Just(0u8), Just(0xff), Just(0x80), any::<u8>()]
        )
            .prop_map(|(p, b)| Op::Set(p, b)),
    ]
}

fn mutate(mut v: Vec<u8>, ops: &[Op]) -> Vec<u8> {
    for o in ops {
        let len = v.len();
        match *o {
            Op::Flip(p, b) if len > 0 => v[p % len] ^= 1 << b,
            Op::Set(p, b) if len > 0 => v[p % len] = b,
            Op::Insert(p, b) => v.insert(p % (len + 1), b),
            Op::Delete(p, n) if len > 0 => {
                let s = p % len;
                v.drain(s..(s + n).min(len));
            }
            Op::Truncate(p) => v.truncate(p % (len + 1)),
            _ => {}
        }
    }
    v
}

/// Mutations of one of `seeds`, or arbitrary bytes.
fn input(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = seeds.len();
    prop_oneof![
        3 => (0..n, prop::collection::vec(op(), 1..8))
            .prop_map(move |(i, ops)| mutate(seeds[i].clone(), &ops)),
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ]
}

fn cfg(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A scratch directory and a writer of one file in it.
struct Scratch {
    _t: tempfile::TempDir,
    dir: Dir,
}

impl Scratch {
    fn new() -> Scratch {
        let t = tempfile::tempdir().unwrap();
        let dir = Dir::open(t.path()).unwrap();
        Scratch { _t: t, dir }
    }
    fn put(&self, name: &str, bytes: &[u8]) -> fs::File {
        let _ = self.dir.remove_file(name);
        let mut f = self.dir.create_file(name, PRIVATE_FILE).unwrap();
        f.write_all(bytes).unwrap();
        drop(f);
        self.dir.open_file(name).unwrap()
    }
}

#[test]
fn corpus_is_valid() {
    let (h, payload) = {
        let s = Scratch::new();
        s.put("m.img", &corpus("manifest.img"));
        read_framed(&s.dir, "m.img", KIND_MANIFEST).unwrap()
    };
    assert_eq!(&h[..8], b"STASISIM");
    Manifest::decode(payload.as_slice())
        .unwrap()
        .check()
        .unwrap();
    let s = Scratch::new();
    s.put("o.img", &corpus("objects.img"));
    let (_, objects) = read_framed(&s.dir, "o.img", KIND_OBJECTS).unwrap();
    rec::Checkpoint::decode(objects.as_slice()).unwrap();
    let (p, id) = chunk_corpus();
    let raw = u64::from_le_bytes(fs::read(&p).unwrap()[16..24].try_into().unwrap());
    let mut buf = Vec::new();
    read_chunk_file(fs::File::open(&p).unwrap(), &p, &id, raw, &mut buf).unwrap();
    Signature::decode(&corpus("signature.img")).unwrap();
}

proptest! {
    #![proptest_config(cfg(20_000))]

    #[test]
    fn manifest_decoder_and_check(bytes in input(vec![payload_of("manifest.img")])) {
        if let Ok(m) = Manifest::decode(bytes.as_slice()) {
            let _ = m.check();
            let _ = m.label("kernel");
        }
    }

    #[test]
    fn records_decoder(bytes in input(vec![payload_of("objects.img")])) {
        if let Ok(c) = rec::Checkpoint::decode(bytes.as_slice()) {
            // Re-encoding a decoded value never panics either.
            let _ = c.encode_to_vec();
        }
    }

    #[test]
    fn signature_parser(bytes in input(vec![corpus("signature.img")])) {
        if let Ok(s) = Signature::decode(&bytes) {
            prop_assert_eq!(bytes.len(), stasis_image::trust::SIGNATURE_LEN);
            prop_assert_eq!(&s.encode()[..], &bytes[..]);
        }
    }
}

proptest! {
    #![proptest_config(cfg(8_000))]

    #[test]
    fn framed_file_reader(
        bytes in input(vec![corpus("manifest.img"), corpus("objects.img")]),
        kind in prop_oneof![Just(KIND_MANIFEST), Just(KIND_OBJECTS), any::<u16>()],
    ) {
        let s = Scratch::new();
        s.put("f.img", &bytes);
        if let Ok((h, payload)) = read_framed(&s.dir, "f.img", kind) {
            prop_assert_eq!(h.len() + payload.len(), bytes.len());
            let want = *blake3::hash(&payload).as_bytes();
            prop_assert_eq!(&h[24..56], &want[..]);
        }
    }

    #[test]
    fn chunk_reader(bytes in input(vec![fs::read(chunk_corpus().0).unwrap()]), raw_guess in 0u64..70_000) {
        let (_, id) = chunk_corpus();
        let s = Scratch::new();
        let f = s.put("c", &bytes);
        let expected = if bytes.len() >= 24 {
            u64::from_le_bytes(bytes[16..24].try_into().unwrap())
        } else {
            raw_guess
        };
        let mut buf = Vec::new();
        if read_chunk_file(f, Path::new("c"), &id, expected, &mut buf).is_ok() {
            let got = *blake3::hash(&buf).as_bytes();
            prop_assert_eq!(got, id);
        }
    }
}
