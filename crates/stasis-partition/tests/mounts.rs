//! Tests of the partition's private mounts: mount-table parsing and classification from
//! hand-written tables, record validation, and round trips on the real kernel (tmpfs with
//! content, nested and read-only tmpfs, bind mounts of directories and files).
//!
//! The kernel tests need root: each runs in a thread with its own private mount namespace
//! (`unshare(CLONE_FS)` + `unshare(CLONE_NEWNS)`), so their mounts never leak to the host or
//! to each other and vanish with the thread. A missing capability fails the test.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{chown, lchown, symlink, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;

use proptest::prelude::*;
use prost::Message;
use stasis_image::{chunk_id_of, ChunkId, ImageReader, ImageWriter, WriteOptions};
use stasis_partition::mounts::{
    classify, dump_mount, mount_flags, parse_mountinfo, read_thread_mountinfo, restore_mount,
    tmpfs_options, validate, Disposition, EntryKind, Extent, MountError, MountInfo, MountKind,
    MountRecord, TmpfsSpec, TreeEntry, Xattr, CONTENT_CHUNK,
};
use stasis_sys::mount::{self as sm, MNT_DETACH, MS_BIND, MS_NODEV, MS_NOSUID, MS_REC};

const MIB: u64 = 1 << 20;
/// Framed-file kind used for the test's record file.
const KIND_MOUNTS: u16 = 0x4d4e;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Runs `f` in a new thread that has its own private mount namespace; panics (never skips) if
/// the namespace cannot be created.
fn in_private_mount_ns<F: FnOnce() + Send + 'static>(f: F) {
    let h = std::thread::spawn(move || {
        sm::unshare_fs_and_mount_ns().expect(
            "unshare(CLONE_FS) + unshare(CLONE_NEWNS) failed: these tests must run as root \
             (CAP_SYS_ADMIN)",
        );
        f()
    });
    if let Err(panic) = h.join() {
        std::panic::resume_unwind(panic);
    }
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

/// The mount visible at `mp` in `table`.
fn top_mount<'a>(table: &'a [MountInfo], mp: &Path) -> Option<&'a MountInfo> {
    let mp = s(mp);
    let at: Vec<&MountInfo> = table.iter().filter(|m| m.mount_point == mp).collect();
    at.iter()
        .find(|m| {
            !at.iter()
                .any(|o| o.parent_id == m.mount_id && o.mount_id != m.mount_id)
        })
        .copied()
}

fn mounts_at(mp: &Path) -> usize {
    let mp = s(mp);
    read_thread_mountinfo()
        .unwrap()
        .iter()
        .filter(|m| m.mount_point == mp)
        .count()
}

/// Deterministic incompressible bytes.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Everything observable about one file that a restore must reproduce.
#[derive(Debug, Clone, PartialEq)]
struct Snap {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    size: u64,
    blocks: u64,
    nlink: u64,
    rdev: u64,
    target: Option<String>,
    content: Option<ChunkId>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Every file below `root` (not crossing mounts), by relative path ("" = root), with the
/// inode number separately.
fn snapshot(root: &Path) -> (BTreeMap<String, Snap>, BTreeMap<String, u64>) {
    let dev = fs::symlink_metadata(root).unwrap().dev();
    let mut out = BTreeMap::new();
    let mut inos = BTreeMap::new();
    let mut stack = vec![(String::new(), root.to_path_buf())];
    while let Some((rel, abs)) = stack.pop() {
        let m = fs::symlink_metadata(&abs).unwrap();
        let ft = m.file_type();
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_socket() {
            "socket"
        } else if ft.is_char_device() {
            "chardev"
        } else {
            "blockdev"
        };
        let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = sm::llistxattr(&abs)
            .unwrap()
            .into_iter()
            .map(|n| {
                let v = sm::lgetxattr(&abs, &n).unwrap();
                (n, v)
            })
            .collect();
        xattrs.sort();
        out.insert(
            rel.clone(),
            Snap {
                kind,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                mtime: (m.mtime(), m.mtime_nsec()),
                size: m.size(),
                blocks: m.blocks(),
                nlink: m.nlink(),
                rdev: m.rdev(),
                target: ft.is_symlink().then(|| s(&fs::read_link(&abs).unwrap())),
                content: ft.is_file().then(|| chunk_id_of(&fs::read(&abs).unwrap())),
                xattrs,
            },
        );
        inos.insert(rel.clone(), m.ino());
        if ft.is_dir() && m.dev() == dev {
            for e in fs::read_dir(&abs).unwrap() {
                let e = e.unwrap();
                let name = e.file_name().into_string().unwrap();
                let crel = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                stack.push((crel, e.path()));
            }
        }
    }
    (out, inos)
}

/// Groups of paths that share an inode (hard links), as sets of paths.
fn link_groups(inos: &BTreeMap<String, u64>) -> BTreeSet<BTreeSet<String>> {
    let mut by_ino: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for (p, i) in inos {
        by_ino.entry(*i).or_default().insert(p.clone());
    }
    by_ino.into_values().filter(|g| g.len() > 1).collect()
}

/// Dumps every mount of `classified` into a new image at `img`, stores the records in a record
/// file and commits; returns the records as dumped.
fn dump_all(classified: &[(MountInfo, Disposition)], img: &Path) -> Vec<MountRecord> {
    let writer = ImageWriter::create(img, WriteOptions::default()).unwrap();
    let mut recs = Vec::new();
    let mut payload = Vec::new();
    for (m, d) in classified {
        if let Some(r) = dump_mount(m, d, &writer).unwrap() {
            validate(&r).unwrap();
            r.encode_length_delimited(&mut payload).unwrap();
            recs.push(r);
        }
    }
    writer
        .put_file("mounts.img", KIND_MOUNTS, &payload)
        .unwrap();
    writer
        .commit(1, vec![("test".into(), "mounts".into())])
        .unwrap();
    recs
}

/// Opens the image at `img` and decodes its records.
fn load_all(img: &Path) -> (ImageReader, Vec<MountRecord>) {
    let reader = ImageReader::open(img).unwrap();
    let payload = reader.read_file("mounts.img").unwrap();
    let mut buf = payload.as_slice();
    let mut recs = Vec::new();
    while !buf.is_empty() {
        recs.push(MountRecord::decode_length_delimited(&mut buf).unwrap());
    }
    (reader, recs)
}

fn entry<'a>(rec: &'a MountRecord, path: &str) -> &'a TreeEntry {
    rec.entries
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("no entry {path:?} in the record of {}", rec.mountpoint))
}

fn write_fails_with(path: &Path, errno: i32) {
    let err = fs::write(path, b"x").expect_err("the write should have failed");
    assert_eq!(err.raw_os_error(), Some(errno), "{}: {err}", path.display());
}

// ---------------------------------------------------------------------------------------------
// Tmpfs round trip on the real kernel
// ---------------------------------------------------------------------------------------------

/// Fills the tmpfs at `mp` with every kind of file, odd modes, owners, mtimes and xattrs.
fn populate(mp: &Path) {
    let p = |r: &str| mp.join(r);
    for (d, mode) in [
        ("a", 0o755),
        ("a/b", 0o700),
        ("a/b/c", 0o1777),
        ("empty", 0o555),
        ("ro-dir", 0o500),
        ("sockdir", 0o750),
    ] {
        fs::create_dir(p(d)).unwrap();
        fs::set_permissions(p(d), fs::Permissions::from_mode(mode)).unwrap();
    }
    // A file over two chunks long with random content.
    fs::write(p("a/big.bin"), noise(1, (9 * MIB + 12345) as usize)).unwrap();
    chown(p("a/big.bin"), Some(1234), Some(5678)).unwrap();
    // A sparse file: data, a hole, data, a trailing hole.
    {
        use std::os::unix::fs::FileExt;
        let f = fs::File::create(p("a/b/sparse")).unwrap();
        f.write_all_at(&noise(2, 100 * 1024), 0).unwrap();
        f.write_all_at(&noise(3, 64 * 1024), 10 * MIB).unwrap();
        f.set_len(20 * MIB).unwrap();
    }
    fs::set_permissions(p("a/b/sparse"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(p("empty-file"), b"").unwrap();
    fs::set_permissions(p("empty-file"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::write(p("ro-dir/inside"), b"inside a read-only directory").unwrap();
    fs::set_permissions(p("ro-dir/inside"), fs::Permissions::from_mode(0o400)).unwrap();
    // Set-uid survives only if the mode is set after the owner.
    fs::write(p("setuid"), b"#!/bin/sh\n").unwrap();
    chown(p("setuid"), Some(1000), Some(1000)).unwrap();
    fs::set_permissions(p("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(p("name with spaces and ünïcode"), b"odd name").unwrap();
    symlink("a/big.bin", p("link")).unwrap();
    lchown(p("link"), Some(42), Some(43)).unwrap();
    symlink("/nonexistent/target with space", p("dangling")).unwrap();
    sm::mkfifo(&p("fifo"), 0o640).unwrap();
    fs::set_permissions(p("fifo"), fs::Permissions::from_mode(0o640)).unwrap();
    chown(p("fifo"), Some(7), Some(8)).unwrap();
    sm::mknod(&p("null"), libc::S_IFCHR | 0o666, libc::makedev(1, 3)).unwrap();
    fs::set_permissions(p("null"), fs::Permissions::from_mode(0o666)).unwrap();
    sm::mknod(&p("blk"), libc::S_IFBLK | 0o660, libc::makedev(7, 0)).unwrap();
    fs::set_permissions(p("blk"), fs::Permissions::from_mode(0o660)).unwrap();
    // Three names of one inode.
    fs::write(p("a/small.txt"), b"hello").unwrap();
    fs::hard_link(p("a/small.txt"), p("a/b/c/small-link")).unwrap();
    fs::hard_link(p("a/small.txt"), p("hardlink2")).unwrap();
    chown(p("a/small.txt"), Some(99), Some(98)).unwrap();
    // Extended attributes on a file and a directory.
    fs::write(p("a/xattr-file"), b"with attributes").unwrap();
    sm::lsetxattr(&p("a/xattr-file"), b"user.comment", b"hi there").unwrap();
    sm::lsetxattr(&p("a/xattr-file"), b"user.empty", b"").unwrap();
    sm::lsetxattr(&p("a"), b"user.dir", &[0, 1, 2, 255]).unwrap();
    // A unix socket file: recorded, left to the socket restore.
    drop(UnixListener::bind(p("sockdir/sock")).unwrap());

    // Distinct mtimes everywhere; directories last, deepest first.
    let (snap, _) = snapshot(mp);
    let mut paths: Vec<&String> = snap.keys().collect();
    paths.sort_by_key(|r| {
        (
            snap[*r].kind == "dir",
            std::cmp::Reverse(r.matches('/').count()),
        )
    });
    for (i, r) in paths.iter().enumerate() {
        let path = if r.is_empty() { mp.to_path_buf() } else { p(r) };
        let sec = 1_600_000_000 + i as i64 * 1000;
        sm::set_mtime_nofollow(&path, sec, (i as u32 * 7_777_777) % 1_000_000_000).unwrap();
    }
}

#[test]
fn tmpfs_round_trip_keeps_content_metadata_holes_and_links() {
    let base = tempfile::tempdir().unwrap();
    let base_path = base.path().to_owned();
    in_private_mount_ns(move || {
        let host = read_thread_mountinfo().unwrap();
        let mp = base_path.join("part/data");
        let img = base_path.join("img");
        fs::create_dir_all(&mp).unwrap();
        sm::mount(
            "scratch",
            &mp,
            "tmpfs",
            MS_NOSUID | MS_NODEV,
            "size=64m,nr_inodes=4096,mode=1750,uid=1000,gid=1001",
        )
        .unwrap();
        populate(&mp);
        let (before, before_inos) = snapshot(&mp);

        // Classification: the new tmpfs, and everything else as on the "host".
        let part = read_thread_mountinfo().unwrap();
        let classified = classify(&part, &host, &[]);
        assert_eq!(classified.len(), part.len());
        for (m, d) in &classified {
            if m.mount_point == s(&mp) {
                assert_eq!(
                    d,
                    &Disposition::Tmpfs(TmpfsSpec {
                        fs_options: "size=65536k,nr_inodes=4096,mode=1750,uid=1000,gid=1001".into(),
                        flags: MS_NOSUID | MS_NODEV | sm::MS_RELATIME,
                    })
                );
            } else {
                assert_eq!(d, &Disposition::Inherited, "{m:?}");
            }
        }

        let recs = dump_all(&classified, &img);
        assert_eq!(recs.len(), 1);
        let rec = &recs[0];
        assert_eq!(rec.kind, MountKind::Tmpfs as i32);
        assert_eq!(rec.source, "scratch");
        assert_eq!(rec.entries[0].path, "");
        // Parents before children.
        for (i, e) in rec.entries.iter().enumerate().skip(1) {
            let parent = e.path.rsplit_once('/').map_or("", |(p, _)| p);
            assert!(
                rec.entries[..i].iter().any(|p| p.path == parent),
                "{}",
                e.path
            );
        }
        // Chunks cut at 4 MiB offsets; holes not stored.
        let big = entry(rec, "a/big.bin");
        let offsets: Vec<(u64, u64)> = big.extents.iter().map(|x| (x.offset, x.len)).collect();
        assert_eq!(
            offsets,
            [
                (0, CONTENT_CHUNK),
                (CONTENT_CHUNK, CONTENT_CHUNK),
                (2 * CONTENT_CHUNK, MIB + 12345)
            ]
        );
        let sparse = entry(rec, "a/b/sparse");
        let offsets: Vec<(u64, u64)> = sparse.extents.iter().map(|x| (x.offset, x.len)).collect();
        assert_eq!(offsets, [(0, 100 * 1024), (10 * MIB, 64 * 1024)]);
        assert_eq!(sparse.size, 20 * MIB);
        assert!(entry(rec, "empty-file").chunks.is_empty());
        // One of the three names carries the inode, the two others point to it.
        let names = ["a/b/c/small-link", "a/small.txt", "hardlink2"];
        assert_eq!(entry(rec, names[0]).hardlink_of, "");
        assert_eq!(entry(rec, names[1]).hardlink_of, names[0]);
        assert_eq!(entry(rec, names[2]).hardlink_of, names[0]);
        assert_eq!(entry(rec, "sockdir/sock").kind, EntryKind::Socket as i32);
        assert_eq!(entry(rec, "link").target, "a/big.bin");
        assert_eq!(
            entry(rec, "a/xattr-file").xattrs,
            [
                Xattr {
                    name: "user.comment".into(),
                    value: b"hi there".to_vec()
                },
                Xattr {
                    name: "user.empty".into(),
                    value: vec![]
                }
            ]
        );

        // Gone: unmount and remove the mount point and its parent.
        sm::umount(&mp, 0).unwrap();
        assert!(top_mount(&read_thread_mountinfo().unwrap(), &mp).is_none());
        fs::remove_dir_all(base_path.join("part")).unwrap();

        let (reader, loaded) = load_all(&img);
        assert_eq!(&loaded, &recs);
        restore_mount(&loaded[0], &reader).unwrap();

        let (after, after_inos) = snapshot(&mp);
        let mut expected = before.clone();
        // The socket file is the socket restore's business; its directory's size (a tmpfs
        // directory's size counts its entries) differs by that one entry.
        expected.remove("sockdir/sock");
        expected.get_mut("sockdir").unwrap().size = after["sockdir"].size;
        for (path, want) in &expected {
            assert_eq!(
                after.get(path),
                Some(want),
                "{path:?} differs after the restore"
            );
        }
        assert_eq!(
            after.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>()
        );
        // Still sparse: the same pages allocated, far fewer than the size needs.
        assert_eq!(after["a/b/sparse"].blocks, before["a/b/sparse"].blocks);
        assert!(after["a/b/sparse"].blocks * 512 < 1024 * 1024);
        // Hard links share an inode again.
        assert_eq!(link_groups(&after_inos), link_groups(&before_inos));
        assert_eq!(
            link_groups(&after_inos),
            BTreeSet::from([names.iter().map(|n| n.to_string()).collect()])
        );
        assert_eq!(after[""].mode, 0o1750);
        assert_eq!((after[""].uid, after[""].gid), (1000, 1001));
        assert_eq!(after["setuid"].mode, 0o4755);

        // The mount itself: same type, source, flags and options.
        let table = read_thread_mountinfo().unwrap();
        let m = top_mount(&table, &mp).expect("the tmpfs is mounted again");
        assert_eq!(m.fs_type, "tmpfs");
        assert_eq!(m.source, "scratch");
        assert_eq!(
            mount_flags(&m.mount_options),
            MS_NOSUID | MS_NODEV | sm::MS_RELATIME
        );
        assert_eq!(
            tmpfs_options(&m.super_options),
            "size=65536k,nr_inodes=4096,mode=1750,uid=1000,gid=1001"
        );
    });
    drop(base);
}

#[test]
fn read_only_tmpfs_with_a_nested_tmpfs() {
    let base = tempfile::tempdir().unwrap();
    let base_path = base.path().to_owned();
    in_private_mount_ns(move || {
        let host = read_thread_mountinfo().unwrap();
        let outer = base_path.join("ro");
        let inner = outer.join("inner");
        let img = base_path.join("img");
        fs::create_dir(&outer).unwrap();
        sm::mount("tmpfs", &outer, "tmpfs", 0, "size=1m").unwrap();
        fs::write(outer.join("x"), b"xx").unwrap();
        fs::create_dir(&inner).unwrap();
        fs::write(outer.join("under-inner-is-hidden"), b"").unwrap();
        sm::mount("tmpfs", &inner, "tmpfs", 0, "size=512k,mode=700").unwrap();
        fs::write(inner.join("y"), b"yy").unwrap();
        sm::mount(
            "",
            &outer,
            "",
            sm::MS_REMOUNT | MS_BIND | sm::MS_RDONLY | sm::MS_NOEXEC,
            "",
        )
        .unwrap();
        write_fails_with(&outer.join("new"), libc::EROFS);

        let part = read_thread_mountinfo().unwrap();
        let classified = classify(&part, &host, &[]);
        let ours: Vec<&(MountInfo, Disposition)> = classified
            .iter()
            .filter(|(_, d)| *d != Disposition::Inherited)
            .collect();
        assert_eq!(ours.len(), 2, "{ours:?}");
        assert_eq!(ours[0].0.mount_point, s(&outer), "parents first");
        assert_eq!(ours[1].0.mount_point, s(&inner));
        assert_eq!(
            ours[0].1,
            Disposition::Tmpfs(TmpfsSpec {
                fs_options: "size=1024k".into(),
                flags: sm::MS_RDONLY | sm::MS_NOEXEC | sm::MS_RELATIME,
            })
        );
        assert_eq!(
            ours[1].1,
            Disposition::Tmpfs(TmpfsSpec {
                fs_options: "size=512k,mode=700".into(),
                flags: sm::MS_RELATIME,
            })
        );

        let recs = dump_all(&classified, &img);
        assert_eq!(recs.len(), 2);
        // The outer tmpfs records the nested mount point as an empty directory and nothing
        // of the nested tmpfs.
        let paths: Vec<&str> = recs[0].entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["", "inner", "under-inner-is-hidden", "x"]);
        let placeholder = entry(&recs[0], "inner");
        assert_eq!(placeholder.kind, EntryKind::Dir as i32);
        assert_eq!(placeholder.mode, 0o755);
        let paths: Vec<&str> = recs[1].entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["", "y"]);
        assert_eq!(entry(&recs[1], "").mode, 0o700);

        sm::umount(&outer, MNT_DETACH).unwrap();
        assert_eq!(mounts_at(&outer) + mounts_at(&inner), 0);

        let (reader, loaded) = load_all(&img);
        for rec in &loaded {
            restore_mount(rec, &reader).unwrap();
        }
        assert_eq!(fs::read(outer.join("x")).unwrap(), b"xx");
        assert_eq!(fs::read(inner.join("y")).unwrap(), b"yy");
        write_fails_with(&outer.join("new"), libc::EROFS);
        fs::write(inner.join("z"), b"the nested tmpfs is writable").unwrap();
        let table = read_thread_mountinfo().unwrap();
        let o = top_mount(&table, &outer).unwrap();
        assert_eq!(
            mount_flags(&o.mount_options),
            sm::MS_RDONLY | sm::MS_NOEXEC | sm::MS_RELATIME
        );
        assert_eq!(tmpfs_options(&o.super_options), "size=1024k");
        let i = top_mount(&table, &inner).unwrap();
        assert_eq!(i.parent_id, o.mount_id);
        assert_eq!(mount_flags(&i.mount_options), sm::MS_RELATIME);
    });
    drop(base);
}

// ---------------------------------------------------------------------------------------------
// Bind mounts on the real kernel
// ---------------------------------------------------------------------------------------------

#[test]
fn bind_mounts_of_host_paths_round_trip() {
    let base = tempfile::tempdir().unwrap();
    let base_path = base.path().to_owned();
    in_private_mount_ns(move || {
        let b = |r: &str| base_path.join(r);
        // "Host" state: a directory with a mount below it, and a file.
        fs::create_dir_all(b("src/sub")).unwrap();
        fs::create_dir(b("src/subm")).unwrap();
        fs::write(b("src/f"), b"file").unwrap();
        fs::write(b("src/sub/g"), b"gee").unwrap();
        fs::write(b("srcfile"), b"single").unwrap();
        sm::mount("tmpfs", &b("src/subm"), "tmpfs", 0, "size=64k").unwrap();
        fs::write(b("src/subm/h"), b"h").unwrap();
        let host = read_thread_mountinfo().unwrap();

        // The "partition" binds: recursive and read-only, a subdirectory, a file.
        fs::create_dir(b("dst")).unwrap();
        sm::mount(&s(&b("src")), &b("dst"), "", MS_BIND | MS_REC, "").unwrap();
        sm::mount(
            "",
            &b("dst"),
            "",
            sm::MS_REMOUNT | MS_BIND | sm::MS_RDONLY | MS_NOSUID,
            "",
        )
        .unwrap();
        fs::create_dir(b("dst2")).unwrap();
        sm::mount(&s(&b("src/sub")), &b("dst2"), "", MS_BIND, "").unwrap();
        fs::write(b("dstfile"), b"").unwrap();
        sm::mount(&s(&b("srcfile")), &b("dstfile"), "", MS_BIND, "").unwrap();

        let part = read_thread_mountinfo().unwrap();
        let classified = classify(&part, &host, &[]);
        let binds: BTreeMap<String, Disposition> = classified
            .iter()
            .filter(|(_, d)| *d != Disposition::Inherited)
            .map(|(m, d)| (m.mount_point.clone(), d.clone()))
            .collect();
        let bind = |r: &str| Disposition::Bind {
            host_path: s(&b(r)),
        };
        assert_eq!(
            binds,
            BTreeMap::from([
                (s(&b("dst")), bind("src")),
                (s(&b("dst/subm")), bind("src/subm")),
                (s(&b("dst2")), bind("src/sub")),
                (s(&b("dstfile")), bind("srcfile")),
            ])
        );

        let recs = dump_all(&classified, &b("img"));
        assert_eq!(recs.len(), 4);
        let dst = recs.iter().find(|r| r.mountpoint == s(&b("dst"))).unwrap();
        assert_eq!(dst.kind, MountKind::Bind as i32);
        assert_eq!(dst.flags, sm::MS_RDONLY | MS_NOSUID | sm::MS_RELATIME);
        assert!(dst.entries.is_empty());

        sm::umount(&b("dst"), MNT_DETACH).unwrap();
        sm::umount(&b("dst2"), 0).unwrap();
        sm::umount(&b("dstfile"), 0).unwrap();
        // Mount points are created again.
        fs::remove_dir(b("dst")).unwrap();
        fs::remove_dir(b("dst2")).unwrap();
        fs::remove_file(b("dstfile")).unwrap();

        let (reader, loaded) = load_all(&b("img"));
        for rec in &loaded {
            restore_mount(rec, &reader).unwrap();
        }
        assert_eq!(fs::read(b("dst/f")).unwrap(), b"file");
        assert_eq!(fs::read(b("dst/subm/h")).unwrap(), b"h");
        assert_eq!(fs::read(b("dst2/g")).unwrap(), b"gee");
        assert_eq!(fs::read(b("dstfile")).unwrap(), b"single");
        write_fails_with(&b("dst/new"), libc::EROFS);
        fs::write(b("dst2/new"), b"writable").unwrap();
        assert_eq!(fs::read(b("src/sub/new")).unwrap(), b"writable");
        // Exactly one mount below the recursive bind, as before the checkpoint.
        assert_eq!(mounts_at(&b("dst/subm")), 1);
        let table = read_thread_mountinfo().unwrap();
        let d = top_mount(&table, &b("dst")).unwrap();
        assert_eq!(
            mount_flags(&d.mount_options),
            sm::MS_RDONLY | MS_NOSUID | sm::MS_RELATIME
        );
        // The restored table classifies the same way.
        let again = classify(&table, &host, &[]);
        let again: BTreeMap<String, Disposition> = again
            .into_iter()
            .filter(|(_, d)| *d != Disposition::Inherited)
            .map(|(m, d)| (m.mount_point, d))
            .collect();
        assert_eq!(again, binds);
    });
    drop(base);
}

#[test]
fn bind_of_a_part_of_a_saved_tmpfs_is_restored_after_it() {
    let base = tempfile::tempdir().unwrap();
    let base_path = base.path().to_owned();
    in_private_mount_ns(move || {
        let host = read_thread_mountinfo().unwrap();
        let t = base_path.join("t");
        let u = base_path.join("u");
        fs::create_dir(&t).unwrap();
        fs::create_dir(&u).unwrap();
        sm::mount("tmpfs", &t, "tmpfs", 0, "size=64k").unwrap();
        fs::create_dir(t.join("sub")).unwrap();
        fs::write(t.join("sub/f"), b"shared").unwrap();
        sm::mount(&s(&t.join("sub")), &u, "", MS_BIND, "").unwrap();

        let part = read_thread_mountinfo().unwrap();
        let classified = classify(&part, &host, &[]);
        let ours: Vec<(String, Disposition)> = classified
            .iter()
            .filter(|(_, d)| *d != Disposition::Inherited)
            .map(|(m, d)| (m.mount_point.clone(), d.clone()))
            .collect();
        assert_eq!(ours.len(), 2);
        assert_eq!(ours[0].0, s(&t));
        assert!(matches!(ours[0].1, Disposition::Tmpfs(_)));
        assert_eq!(
            ours[1],
            (
                s(&u),
                Disposition::BindFromTmpfs {
                    path: s(&t.join("sub"))
                }
            )
        );

        let img = base_path.join("img");
        let recs = dump_all(&classified, &img);
        assert_eq!(recs.len(), 2);
        assert!(!recs[0].source_in_partition);
        assert_eq!(recs[1].kind, MountKind::Bind as i32);
        assert_eq!(recs[1].host_path, s(&t.join("sub")));
        assert!(recs[1].source_in_partition);
        sm::umount(&u, 0).unwrap();
        sm::umount(&t, 0).unwrap();
        let (reader, loaded) = load_all(&img);
        for rec in &loaded {
            restore_mount(rec, &reader).unwrap();
        }
        assert_eq!(fs::read(u.join("f")).unwrap(), b"shared");
        fs::write(u.join("g"), b"one file system").unwrap();
        assert_eq!(fs::read(t.join("sub/g")).unwrap(), b"one file system");
    });
    drop(base);
}

#[test]
fn a_proc_mounted_by_the_partition_is_refused() {
    let base = tempfile::tempdir().unwrap();
    let base_path = base.path().to_owned();
    in_private_mount_ns(move || {
        let host = read_thread_mountinfo().unwrap();
        let p = base_path.join("p");
        fs::create_dir(&p).unwrap();
        sm::mount("proc", &p, "proc", 0, "").unwrap();
        let part = read_thread_mountinfo().unwrap();
        let classified = classify(&part, &host, &[]);
        let (m, d) = classified
            .iter()
            .find(|(m, _)| m.mount_point == s(&p))
            .unwrap();
        let Disposition::Unsupported(why) = d else {
            panic!("{d:?}")
        };
        assert!(why.contains(&s(&p)), "{why}");
        assert!(why.contains("/proc, /dev/pts and /dev/mqueue"), "{why}");
        // Listed as stasis's own, it is fine.
        let mine = classify(&part, &host, &[s(&p)]);
        assert!(mine
            .iter()
            .any(|(m, d)| m.mount_point == s(&p) && *d == Disposition::Ours));
        // dump_mount never drops it silently.
        let writer = ImageWriter::create(&base_path.join("img"), WriteOptions::default()).unwrap();
        let err = dump_mount(m, d, &writer).unwrap_err();
        assert!(matches!(err, MountError::Unsupported { .. }), "{err}");
        assert!(err.to_string().contains(&s(&p)), "{err}");
    });
    drop(base);
}

#[test]
fn dump_refuses_a_covered_mount() {
    let base = tempfile::tempdir().unwrap();
    let base_path = base.path().to_owned();
    in_private_mount_ns(move || {
        let host = read_thread_mountinfo().unwrap();
        let t = base_path.join("t");
        fs::create_dir(&t).unwrap();
        sm::mount("tmpfs", &t, "tmpfs", 0, "size=64k").unwrap();
        let part = read_thread_mountinfo().unwrap();
        let classified = classify(&part, &host, &[]);
        let (m, d) = classified
            .iter()
            .find(|(m, _)| m.mount_point == s(&t))
            .unwrap()
            .clone();
        // Something else is mounted on top of it now.
        sm::mount("tmpfs", &t, "tmpfs", 0, "size=32k").unwrap();
        let writer = ImageWriter::create(&base_path.join("img"), WriteOptions::default()).unwrap();
        let err = dump_mount(&m, &d, &writer).unwrap_err();
        assert!(matches!(err, MountError::NotVisible { .. }), "{err}");
        assert!(err.to_string().contains("covered"), "{err}");
    });
    drop(base);
}

#[test]
fn failed_restores_say_why_and_leave_no_mount_behind() {
    let base = tempfile::tempdir().unwrap();
    let base_path = base.path().to_owned();
    in_private_mount_ns(move || {
        // An image holding one 64 KiB chunk.
        let img = base_path.join("img");
        let writer = ImageWriter::create(&img, WriteOptions::default()).unwrap();
        let data = noise(9, 64 * 1024);
        let id = writer.put_chunk(&data).unwrap();
        writer.commit(1, vec![]).unwrap();
        let reader = ImageReader::open(&img).unwrap();

        let mp = base_path.join("t");
        let file = |chunk: &[u8], len: u64| TreeEntry {
            path: "f".into(),
            kind: EntryKind::File as i32,
            mode: 0o644,
            size: len,
            chunks: vec![chunk.to_vec()],
            extents: vec![Extent { offset: 0, len }],
            ..Default::default()
        };
        let rec = |fs_options: &str, f: TreeEntry| MountRecord {
            mountpoint: s(&mp),
            kind: MountKind::Tmpfs as i32,
            fs_options: fs_options.into(),
            flags: sm::MS_RELATIME,
            entries: vec![
                TreeEntry {
                    path: String::new(),
                    kind: EntryKind::Dir as i32,
                    mode: 0o755,
                    ..Default::default()
                },
                f,
            ],
            ..Default::default()
        };

        // Too small a tmpfs: "no space" with a hint.
        let err = restore_mount(&rec("size=16k", file(&id, 64 * 1024)), &reader).unwrap_err();
        assert!(matches!(err, MountError::Io { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains(&s(&mp.join("f"))) && msg.contains("no space"),
            "{msg}"
        );
        assert_eq!(mounts_at(&mp), 0, "the partly filled tmpfs is unmounted");

        // A chunk the image does not have.
        let err = restore_mount(&rec("size=1m", file(&[7; 32], 10)), &reader).unwrap_err();
        assert!(matches!(err, MountError::ReadChunk { .. }), "{err}");
        assert!(err.to_string().contains(&s(&mp.join("f"))), "{err}");
        assert_eq!(mounts_at(&mp), 0);

        // A chunk whose length does not match its extent.
        let err = restore_mount(&rec("size=1m", file(&id, 1000)), &reader).unwrap_err();
        assert!(matches!(err, MountError::ChunkLength { .. }), "{err}");
        assert_eq!(mounts_at(&mp), 0);

        // The right record works.
        restore_mount(&rec("size=1m", file(&id, 64 * 1024)), &reader).unwrap();
        assert_eq!(fs::read(mp.join("f")).unwrap(), data);
        sm::umount(&mp, 0).unwrap();

        // An invalid record touches nothing, not even the mount point.
        let bad_mp = base_path.join("never");
        let mut bad = rec("size=1m", file(&id, 64 * 1024));
        bad.mountpoint = s(&bad_mp);
        bad.entries[1].path = "../escape".into();
        let err = restore_mount(&bad, &reader).unwrap_err();
        assert!(matches!(err, MountError::Invalid { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains(&s(&bad_mp)) && msg.contains("corrupt"),
            "{msg}"
        );
        assert!(!bad_mp.exists());

        // A bind from a path this host does not have.
        let bind = MountRecord {
            mountpoint: s(&base_path.join("b")),
            kind: MountKind::Bind as i32,
            host_path: "/nonexistent/stasis-test".into(),
            ..Default::default()
        };
        let err = restore_mount(&bind, &reader).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/stasis-test"),
            "{err}"
        );
        assert!(!base_path.join("b").exists());
    });
    drop(base);
}

// ---------------------------------------------------------------------------------------------
// Parsing and classification of hand-written tables
// ---------------------------------------------------------------------------------------------

const HOST: &str = "\
22 27 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:5 - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
30 27 254:0 /srv/data /data rw,relatime shared:1 - ext4 /dev/vda rw,discard
25 27 0:23 / /dev/shm rw,nosuid,nodev shared:3 - tmpfs tmpfs rw,size=24683656k
26 27 0:24 / /dev/pts rw,nosuid,noexec,relatime - devpts devpts rw,mode=600,ptmxmode=000
31 27 7:1 /a /loop rw,relatime - ext4 /dev/loop1 rw
";

const PARTITION: &str = "\
101 101 254:0 / / rw,relatime master:1 - ext4 /dev/vda rw,discard
110 109 0:61 / /scratch/inner rw,relatime - tmpfs tmpfs rw,size=1024k
109 101 0:60 / /scratch rw,nosuid,nodev,noatime - tmpfs tmpfs rw,size=65536k,nr_inodes=1000,mode=1777,uid=1000,gid=1000,inode64
102 101 0:21 / /proc rw,nosuid,nodev,noexec,relatime master:5 - proc proc rw
103 102 0:50 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
104 101 254:0 /srv/data /data rw,relatime master:1 - ext4 /dev/vda rw,discard
105 101 254:0 /srv/data/app /mnt/app ro,nosuid,relatime - ext4 /dev/vda rw,discard
106 101 254:0 /home/u\\040v /mnt/with\\040space rw,relatime - ext4 /dev/vda rw,discard
107 101 0:23 /sub /mnt/shm rw,nosuid,nodev - tmpfs tmpfs rw,size=24683656k
111 101 0:60 /part /scratch-view rw,relatime - tmpfs tmpfs rw,size=65536k
119 101 0:60 / /again rw,relatime - tmpfs tmpfs rw,size=65536k
112 101 0:70 / /proc2 rw,relatime - proc proc rw
113 101 0:71 / /mnt/pts rw,relatime - devpts devpts rw,mode=600
114 101 0:80 / /mnt/cg rw,relatime - cgroup2 cgroup2 rw
115 101 0:90 / /ovl rw,relatime - overlay overlay rw,lowerdir=/a,upperdir=/b,workdir=/c
116 101 8:17 / /mnt/disk rw,relatime - ext4 /dev/sdb1 rw
117 101 254:0 /tmp/gone//deleted /mnt/del rw,relatime - ext4 /dev/vda rw
118 101 7:1 /b /mnt/hidden rw,relatime - ext4 /dev/loop1 rw
120 101 0:62 / /dev/mqueue rw,relatime - mqueue mqueue rw
";

#[test]
fn classify_hand_written_tables() {
    let host = parse_mountinfo(HOST).unwrap();
    let part = parse_mountinfo(PARTITION).unwrap();
    let ours = vec!["/proc".to_owned(), "/dev/mqueue".to_owned()];
    let out = classify(&part, &host, &ours);
    let order: Vec<u32> = out.iter().map(|(m, _)| m.mount_id).collect();
    // Table order, but /scratch/inner (110) after /scratch (109), which it sits on.
    assert_eq!(
        order,
        [
            101, 109, 110, 102, 103, 104, 105, 106, 107, 111, 119, 112, 113, 114, 115, 116, 117,
            118, 120
        ]
    );
    let d: BTreeMap<u32, &Disposition> = out.iter().map(|(m, d)| (m.mount_id, d)).collect();
    let bind = |p: &str| Disposition::Bind {
        host_path: p.to_owned(),
    };
    assert_eq!(d[&101], &Disposition::Inherited);
    assert_eq!(d[&102], &Disposition::Ours); // in `ours` (under stasis's own /proc)
    assert_eq!(d[&103], &Disposition::Ours);
    assert_eq!(d[&104], &Disposition::Inherited);
    assert_eq!(d[&120], &Disposition::Ours);
    assert_eq!(
        d[&109],
        &Disposition::Tmpfs(TmpfsSpec {
            fs_options: "size=65536k,nr_inodes=1000,mode=1777,uid=1000,gid=1000".into(),
            flags: MS_NOSUID | MS_NODEV | sm::MS_NOATIME,
        })
    );
    assert_eq!(
        d[&110],
        &Disposition::Tmpfs(TmpfsSpec {
            fs_options: "size=1024k".into(),
            flags: sm::MS_RELATIME,
        })
    );
    // Longest host root prefix: /srv/data at /data, not / at /.
    assert_eq!(d[&105], &bind("/data/app"));
    assert_eq!(d[&106], &bind("/home/u v"));
    assert_eq!(d[&107], &bind("/dev/shm/sub"));
    // Parts of the tmpfs saved at /scratch.
    let inside = |p: &str| Disposition::BindFromTmpfs { path: p.to_owned() };
    assert_eq!(d[&111], &inside("/scratch/part"));
    assert_eq!(d[&119], &inside("/scratch"));
    let why = |id: u32| match d[&id] {
        Disposition::Unsupported(w) => w.clone(),
        other => panic!("{id}: {other:?}"),
    };
    for (id, mp, fstype) in [
        (112, "/proc2", "proc"),
        (113, "/mnt/pts", "devpts"),
        (114, "/mnt/cg", "cgroup2"),
    ] {
        let w = why(id);
        assert!(w.contains(mp) && w.contains(fstype), "{w}");
        assert!(
            w.contains("stasis recreates /proc, /dev/pts and /dev/mqueue"),
            "{w}"
        );
    }
    assert!(why(115).contains("overlay") && why(115).contains("only tmpfs"));
    assert!(why(116).contains("/dev/sdb1") && why(116).contains("8:17"));
    assert!(why(117).contains("deleted"));
    assert!(why(118).contains("/mnt/hidden") && why(118).contains("no host mount"));
}

#[test]
fn a_part_of_a_tmpfs_outside_the_saved_part_is_refused() {
    let part = parse_mountinfo(
        "1 1 254:0 / / rw - ext4 /dev/vda rw\n\
         2 1 0:60 /a /x rw - tmpfs tmpfs rw\n\
         3 1 0:60 /b /y rw - tmpfs tmpfs rw\n\
         4 1 0:60 /a/c /z rw - tmpfs tmpfs rw\n",
    )
    .unwrap();
    let host = parse_mountinfo("1 1 254:0 / / rw - ext4 /dev/vda rw\n").unwrap();
    let out = classify(&part, &host, &[]);
    assert!(matches!(out[1].1, Disposition::Tmpfs(_)));
    assert!(
        matches!(&out[2].1, Disposition::Unsupported(w) if w.contains("/y") && w.contains("/x"))
    );
    assert_eq!(
        out[3].1,
        Disposition::BindFromTmpfs {
            path: "/x/c".into()
        }
    );
}

#[test]
fn parse_mountinfo_escapes_and_optional_fields() {
    let text = "36 35 98:0 /mnt\\0401 /mnt/a\\011b\\012c\\134d rw,noatime master:1 shared:7 propagate_from:2 - ext3 /dev/root\\040x rw,errors=continue\n\
                40 36 0:45 / /empty\\040source rw - tmpfs  rw\n";
    let rows = parse_mountinfo(text).unwrap();
    assert_eq!(
        rows[0],
        MountInfo {
            mount_id: 36,
            parent_id: 35,
            major: 98,
            minor: 0,
            root: "/mnt 1".into(),
            mount_point: "/mnt/a\tb\nc\\d".into(),
            mount_options: "rw,noatime".into(),
            optional_fields: vec![
                "master:1".into(),
                "shared:7".into(),
                "propagate_from:2".into()
            ],
            fs_type: "ext3".into(),
            source: "/dev/root x".into(),
            super_options: "rw,errors=continue".into(),
        }
    );
    assert_eq!(rows[1].mount_point, "/empty source");
    assert_eq!(rows[1].source, "");
    assert_eq!(rows[1].fs_type, "tmpfs");
    let err = parse_mountinfo("36 35 98:0 / /x rw no-separator\n").unwrap_err();
    assert!(matches!(err, MountError::Table { .. }), "{err}");
}

#[test]
fn flags_and_tmpfs_options() {
    assert_eq!(
        mount_flags("ro,nosuid,nodev,noexec,relatime"),
        sm::MS_RDONLY | MS_NOSUID | MS_NODEV | sm::MS_NOEXEC | sm::MS_RELATIME
    );
    assert_eq!(
        mount_flags("rw,noatime,nodiratime,nosymfollow"),
        sm::MS_NOATIME | sm::MS_NODIRATIME | sm::MS_NOSYMFOLLOW
    );
    // Neither noatime nor relatime: strict atime must be asked for.
    assert_eq!(mount_flags("rw"), sm::MS_STRICTATIME);
    assert_eq!(
        tmpfs_options(
            "rw,size=65536k,nr_inodes=4096,mode=1777,uid=1000,gid=1001,inode64,huge=never"
        ),
        "size=65536k,nr_inodes=4096,mode=1777,uid=1000,gid=1001"
    );
    assert_eq!(tmpfs_options("rw,inode64"), "");
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

fn good_record() -> MountRecord {
    let e = |path: &str, kind: EntryKind| TreeEntry {
        path: path.into(),
        kind: kind as i32,
        mode: 0o644,
        ..Default::default()
    };
    MountRecord {
        mountpoint: "/scratch".into(),
        kind: MountKind::Tmpfs as i32,
        fs_options: "size=1m,mode=755".into(),
        flags: MS_NOSUID | sm::MS_RELATIME,
        entries: vec![
            e("", EntryKind::Dir),
            e("d", EntryKind::Dir),
            TreeEntry {
                size: 10,
                chunks: vec![vec![0; 32]],
                extents: vec![Extent { offset: 0, len: 10 }],
                xattrs: vec![Xattr {
                    name: "user.x".into(),
                    value: b"v".to_vec(),
                }],
                ..e("d/f", EntryKind::File)
            },
            TreeEntry {
                target: "d/f".into(),
                ..e("l", EntryKind::Symlink)
            },
            TreeEntry {
                hardlink_of: "d/f".into(),
                ..e("d/g", EntryKind::File)
            },
            e("p", EntryKind::Fifo),
            e("s", EntryKind::Socket),
        ],
        ..Default::default()
    }
}

#[test]
fn validate_accepts_a_good_record_and_refuses_corruption() {
    validate(&good_record()).unwrap();
    let refused = |f: &dyn Fn(&mut MountRecord), expect: &str| {
        let mut r = good_record();
        f(&mut r);
        let err = validate(&r).expect_err(expect);
        assert!(err.contains(expect), "{err:?} should mention {expect:?}");
    };
    refused(
        &|r| r.entries[2].path = "d/../../etc/passwd".into(),
        "\"..\"",
    );
    refused(&|r| r.entries[2].path = "/etc/passwd".into(), "relative");
    refused(&|r| r.entries[2].path = "d//f".into(), "component");
    refused(
        &|r| r.entries[2].chunks.push(vec![1; 32]),
        "2 chunks but 1 extents",
    );
    refused(&|r| r.entries[2].chunks[0] = vec![0; 31], "31 bytes");
    refused(&|r| r.entries[2].extents[0].len = 11, "beyond the size");
    refused(&|r| r.entries[2].extents[0].len = 0, "length 0");
    refused(
        &|r| {
            r.entries[2].size = 100;
            r.entries[2].chunks.push(vec![1; 32]);
            r.entries[2].extents.push(Extent { offset: 5, len: 10 });
        },
        "overlaps",
    );
    refused(
        &|r| r.entries[5].chunks = vec![vec![0; 32]],
        "1 chunks but 0 extents",
    );
    refused(
        &|r| {
            r.entries[5].chunks = vec![vec![0; 32]];
            r.entries[5].extents = vec![Extent { offset: 0, len: 1 }];
        },
        "only a regular file",
    );
    refused(&|r| r.entries[5].kind = 99, "unknown entry kind 99");
    refused(&|r| r.entries[5].mode = 0o170644, "beyond 0o7777");
    refused(&|r| r.entries[2].path = "x/f".into(), "parent \"x\"");
    refused(
        &|r| r.entries[4].hardlink_of = "p2".into(),
        "hard link to \"p2\"",
    );
    refused(
        &|r| r.entries[4].hardlink_of = "d".into(),
        "hard link to \"d\"",
    );
    refused(&|r| r.entries[3].target = String::new(), "target");
    refused(
        &|r| r.entries[2].xattrs[0].name = "trusted.x".into(),
        "user.*",
    );
    refused(&|r| r.entries.swap(0, 1), "root directory");
    refused(&|r| r.entries[6].path = "d".into(), "twice");
    refused(&|r| r.kind = 7, "unknown mount kind 7");
    refused(&|r| r.flags |= sm::MS_MOVE, "unknown mount flags");
    refused(&|r| r.fs_options = "size=1m,context=x".into(), "context=x");
    refused(&|r| r.fs_options = "size=1m,mode=755,uid=0\0".into(), "uid");
    refused(&|r| r.mountpoint = "scratch".into(), "absolute");
    refused(&|r| r.mountpoint = "/a/../etc".into(), "\"..\"");
    refused(&|r| r.mountpoint = "/".into(), "at /");
    refused(&|r| r.host_path = "/x".into(), "no host path");
    // Bind records.
    let bind = MountRecord {
        mountpoint: "/mnt/x".into(),
        kind: MountKind::Bind as i32,
        host_path: "/srv/x".into(),
        flags: sm::MS_RDONLY,
        ..Default::default()
    };
    validate(&bind).unwrap();
    let mut b = bind.clone();
    b.host_path = "srv/x".into();
    assert!(validate(&b).unwrap_err().contains("absolute"));
    let mut b = bind.clone();
    b.entries = good_record().entries;
    assert!(validate(&b).unwrap_err().contains("no entries"));
    let mut b = bind.clone();
    b.source_in_partition = true;
    validate(&b).unwrap();
    b.host_path = b.mountpoint.clone();
    assert!(validate(&b).unwrap_err().contains("own mount point"));
    let mut t = good_record();
    t.source_in_partition = true;
    assert!(validate(&t).unwrap_err().contains("no host path"));
}

// ---------------------------------------------------------------------------------------------
// Property: parse_mountinfo inverts the kernel's formatting
// ---------------------------------------------------------------------------------------------

/// The kernel's escaping of mountinfo fields (`seq_escape` of " \t\n\\").
fn escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            ' ' | '\t' | '\n' | '\\' => out.push_str(&format!("\\{:03o}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn format_line(m: &MountInfo) -> String {
    let mut fields = vec![
        m.mount_id.to_string(),
        m.parent_id.to_string(),
        format!("{}:{}", m.major, m.minor),
        escape(&m.root),
        escape(&m.mount_point),
        m.mount_options.clone(),
    ];
    fields.extend(m.optional_fields.iter().cloned());
    fields.push("-".into());
    fields.push(escape(&m.fs_type));
    fields.push(escape(&m.source));
    fields.push(m.super_options.clone());
    fields.join(" ")
}

fn arb_path() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-zA-Z0-9 \t\n\\\\#,é.-]{1,8}", 0..4)
        .prop_map(|parts| format!("/{}", parts.join("/")))
}

fn arb_mount() -> impl Strategy<Value = MountInfo> {
    (
        (any::<u32>(), any::<u32>(), 0u32..4096, 0u32..1_048_576),
        (arb_path(), arb_path()),
        "(rw|ro)(,(nosuid|nodev|noexec|relatime|noatime)){0,3}",
        "[a-z0-9][a-z0-9._]{0,9}",
        "[a-zA-Z0-9/ \\\\:_-]{0,12}",
        "(rw|ro)(,[a-z_]{1,8}(=[a-z0-9\\\\]{1,6})?){0,4}",
        prop::collection::vec("(shared|master|propagate_from):[0-9]{1,4}|unbindable", 0..3),
    )
        .prop_map(
            |(
                (id, parent, major, minor),
                (root, mountpoint),
                options,
                fstype,
                source,
                sup,
                opt,
            )| {
                MountInfo {
                    mount_id: id,
                    parent_id: parent,
                    major,
                    minor,
                    root,
                    mount_point: mountpoint,
                    mount_options: options,
                    optional_fields: opt,
                    fs_type: fstype,
                    source,
                    super_options: sup,
                }
            },
        )
}

proptest! {
    #[test]
    fn parse_mountinfo_round_trips(mounts in prop::collection::vec(arb_mount(), 1..6)) {
        let text: String = mounts
            .iter()
            .map(|m| format_line(m) + "\n")
            .collect();
        let parsed = parse_mountinfo(&text).unwrap();
        prop_assert_eq!(parsed, mounts);
    }
}
