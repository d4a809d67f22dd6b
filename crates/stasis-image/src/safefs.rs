//! Safe file handling: every file and directory is created and opened *relative to an opened
//! directory*, never through a path that a symlink could redirect.
//!
//! Stasis runs as root and writes into directories other users may be able to reach (an image
//! directory given on the command line, a repository, FFDC bundles). A symlink planted there
//! must make the operation fail and touch nothing, so:
//!
//! - a [`Dir`] holds an `O_DIRECTORY` file descriptor; its children are reached with the `*at`
//!   system calls and a single path component (a name with a `/`, `.`, `..` or empty is
//!   refused with `InvalidInput`);
//! - opening never follows a symlink (`O_NOFOLLOW`; `fstatat(AT_SYMLINK_NOFOLLOW)`), creating
//!   never reuses an existing entry (`O_CREAT|O_EXCL`), and modes are set with `fchmod` after
//!   creation, so the umask does not matter;
//! - removal walks directories through their descriptors and unlinks entries, so a link is
//!   removed as a link and never followed.
//!
//! [`Dir::open`] of a whole path refuses a symlink as the *last* component only: the path the
//! operator chose may legitimately pass through symlinks above it (`/var/run` …).
//! [`open_beneath`] resolves a path a workload controls inside its root with `openat2`
//! (`RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS`): no symlink at all, no escape with `..`.

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, ResolveFlags};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Mode of private files.
pub const PRIVATE_FILE: u32 = 0o600;
/// Mode of private directories.
pub const PRIVATE_DIR: u32 = 0o700;

/// Why a file or directory cannot be trusted to hold what only root (or we) wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Untrusted {
    /// Owned by this uid, neither root nor us.
    Owner(u32),
    /// Group or others may write it (mode bits).
    Writable(u32),
}

/// The one ownership rule for what Stasis trusts (images, journals): owned by root or by our
/// effective user, and writable by nobody else. `uid`/`mode` as `stat` gives them.
pub fn check_owner_and_mode(uid: u32, mode: u32) -> Result<(), Untrusted> {
    if uid != 0 && uid != rustix::process::geteuid().as_raw() {
        return Err(Untrusted::Owner(uid));
    }
    if mode & 0o022 != 0 {
        return Err(Untrusted::Writable(mode & 0o7777));
    }
    Ok(())
}

/// An opened directory; children are reached relative to it without following symlinks.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

fn invalid(name: &OsStr, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{:?} is not a plain file name: {why}", name),
    )
}

/// Checks that `name` is one path component.
pub fn check_name(name: &OsStr) -> io::Result<()> {
    let b = name.as_bytes();
    if b.is_empty() {
        return Err(invalid(name, "empty"));
    }
    if b == b"." || b == b".." {
        return Err(invalid(name, "a dot entry"));
    }
    if b.contains(&b'/') {
        return Err(invalid(name, "contains '/'"));
    }
    if b.contains(&0) {
        return Err(invalid(name, "contains a NUL byte"));
    }
    Ok(())
}

fn mode(m: u32) -> Mode {
    Mode::from_raw_mode(m)
}

const DIR_FLAGS: OFlags = OFlags::DIRECTORY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC)
    .union(OFlags::RDONLY);

impl Dir {
    /// Opens the directory at `path`; fails if its last component is a symlink or not a
    /// directory.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Dir> {
        let path = path.as_ref();
        let fd = rfs::open(path, DIR_FLAGS, Mode::empty())?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Opens the directory at `path`, following symlinks in every component (the last one
    /// included): for a path the operator chose that may legitimately be a link, a
    /// `/proc/self/fd/N` handle, or a magic link such as `/proc/PID/root` (the root a process
    /// sees, to resolve beneath with [`open_beneath`]). Children are still reached without
    /// following links.
    pub fn open_following(path: impl AsRef<Path>) -> io::Result<Dir> {
        let path = path.as_ref();
        let fd = rfs::open(
            path,
            OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::RDONLY,
            Mode::empty(),
        )?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Creates `path` (and missing parents, 0700 each) if it does not exist, opens it without
    /// following a symlink in its last component, and sets its mode to `dir_mode`.
    pub fn create_all(path: impl AsRef<Path>, dir_mode: u32) -> io::Result<Dir> {
        let path = path.as_ref();
        match rfs::mkdir(path, mode(dir_mode)) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => {}
            Err(rustix::io::Errno::NOENT) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    Dir::create_all(parent, PRIVATE_DIR)?;
                }
                match rfs::mkdir(path, mode(dir_mode)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
        let d = Dir::open(path)?;
        d.chmod(dir_mode)?;
        Ok(d)
    }

    /// The path this directory was opened by (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of a child (for messages).
    pub fn child_path(&self, name: impl AsRef<OsStr>) -> PathBuf {
        self.path.join(name.as_ref())
    }

    /// Sets this directory's mode.
    pub fn chmod(&self, m: u32) -> io::Result<()> {
        rfs::fchmod(&self.fd, mode(m))?;
        Ok(())
    }

    /// Sets this directory's owner (None keeps one).
    pub fn chown(&self, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        rfs::fchown(
            &self.fd,
            uid.map(rustix::fs::Uid::from_raw),
            gid.map(rustix::fs::Gid::from_raw),
        )?;
        Ok(())
    }

    /// Metadata of this directory itself.
    pub fn stat_self(&self) -> io::Result<rfs::Stat> {
        Ok(rfs::fstat(&self.fd)?)
    }

    /// Creates the regular file `name` (it must not exist, whatever it would be: file, link,
    /// anything) for writing, with mode `m`.
    pub fn create_file(&self, name: impl AsRef<OsStr>, m: u32) -> io::Result<File> {
        let name = name.as_ref();
        check_name(name)?;
        let fd = rfs::openat(
            &self.fd,
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::WRONLY,
            mode(m),
        )?;
        rfs::fchmod(&fd, mode(m))?;
        Ok(File::from(fd))
    }

    /// Opens the regular file `name` for reading; a symlink or anything but a regular file
    /// fails.
    pub fn open_file(&self, name: impl AsRef<OsStr>) -> io::Result<File> {
        let name = name.as_ref();
        check_name(name)?;
        let fd = rfs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        )?;
        regular(&fd, name)?;
        // Back to blocking (NONBLOCK only kept a FIFO from hanging the open).
        rfs::fcntl_setfl(&fd, OFlags::empty())?;
        Ok(File::from(fd))
    }

    /// Opens the regular file at the relative path `rel` (several components allowed) for
    /// reading, beneath this directory: no symlink anywhere on the way, no `..` escape
    /// (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`).
    pub fn open_file_beneath(&self, rel: impl AsRef<Path>) -> io::Result<File> {
        let rel = rel.as_ref();
        let fd = rfs::openat2(
            &self.fd,
            rel,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )?;
        regular(&fd, rel.as_os_str())?;
        rfs::fcntl_setfl(&fd, OFlags::empty())?;
        Ok(File::from(fd))
    }

    /// Opens (creating with mode `m` if missing) the regular file `name` for appending; a
    /// symlink or anything but a regular file fails.
    pub fn open_append(&self, name: impl AsRef<OsStr>, m: u32) -> io::Result<File> {
        let name = name.as_ref();
        check_name(name)?;
        let fd = rfs::openat(
            &self.fd,
            name,
            OFlags::CREATE
                | OFlags::APPEND
                | OFlags::WRONLY
                | OFlags::NOFOLLOW
                | OFlags::CLOEXEC
                | OFlags::NONBLOCK,
            mode(m),
        )?;
        regular(&fd, name)?;
        rfs::fcntl_setfl(&fd, OFlags::APPEND)?;
        rfs::fchmod(&fd, mode(m))?;
        Ok(File::from(fd))
    }

    /// Creates the directory `name` (it must not exist) with mode `m` and opens it.
    pub fn create_dir(&self, name: impl AsRef<OsStr>, m: u32) -> io::Result<Dir> {
        let name = name.as_ref();
        check_name(name)?;
        rfs::mkdirat(&self.fd, name, mode(m))?;
        let d = self.open_dir(name)?;
        d.chmod(m)?;
        Ok(d)
    }

    /// Opens the directory `name`, creating it with mode `m` if missing; an existing one gets
    /// mode `m` too. A symlink fails.
    pub fn ensure_dir(&self, name: impl AsRef<OsStr>, m: u32) -> io::Result<Dir> {
        let name = name.as_ref();
        check_name(name)?;
        match rfs::mkdirat(&self.fd, name, mode(m)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        let d = self.open_dir(name)?;
        d.chmod(m)?;
        Ok(d)
    }

    /// Opens the directory `name`; a symlink fails.
    pub fn open_dir(&self, name: impl AsRef<OsStr>) -> io::Result<Dir> {
        let name = name.as_ref();
        check_name(name)?;
        let fd = rfs::openat(&self.fd, name, DIR_FLAGS, Mode::empty())?;
        Ok(Dir {
            fd,
            path: self.path.join(name),
        })
    }

    /// Metadata of `name` itself (a symlink is described, not followed).
    pub fn metadata(&self, name: impl AsRef<OsStr>) -> io::Result<rfs::Stat> {
        let name = name.as_ref();
        check_name(name)?;
        Ok(rfs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)?)
    }

    /// Whether `name` exists (as anything, a dangling link included).
    pub fn exists(&self, name: impl AsRef<OsStr>) -> io::Result<bool> {
        match self.metadata(name) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Renames `from` to `to`, both in this directory (replacing `to` if it exists: a link
    /// named `to` is replaced, never followed).
    pub fn rename(&self, from: impl AsRef<OsStr>, to: impl AsRef<OsStr>) -> io::Result<()> {
        let (from, to) = (from.as_ref(), to.as_ref());
        check_name(from)?;
        check_name(to)?;
        rfs::renameat(&self.fd, from, &self.fd, to)?;
        Ok(())
    }

    /// Renames `from` to `to`, both in this directory, failing with `AlreadyExists` if `to`
    /// exists (whatever it is): `renameat2(RENAME_NOREPLACE)`.
    pub fn rename_noreplace(
        &self,
        from: impl AsRef<OsStr>,
        to: impl AsRef<OsStr>,
    ) -> io::Result<()> {
        let (from, to) = (from.as_ref(), to.as_ref());
        check_name(from)?;
        check_name(to)?;
        rfs::renameat_with(&self.fd, from, &self.fd, to, rfs::RenameFlags::NOREPLACE)?;
        Ok(())
    }

    /// Renames `from` in this directory to `to` in `dest`.
    pub fn rename_to(
        &self,
        from: impl AsRef<OsStr>,
        dest: &Dir,
        to: impl AsRef<OsStr>,
    ) -> io::Result<()> {
        let (from, to) = (from.as_ref(), to.as_ref());
        check_name(from)?;
        check_name(to)?;
        rfs::renameat(&self.fd, from, &dest.fd, to)?;
        Ok(())
    }

    /// Removes the entry `name` if it is not a directory (a link is removed as a link).
    pub fn remove_file(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        let name = name.as_ref();
        check_name(name)?;
        rfs::unlinkat(&self.fd, name, AtFlags::empty())?;
        Ok(())
    }

    /// Removes `name` whatever it is: a directory with everything under it (walked through
    /// descriptors, links never followed), or any other entry.
    pub fn remove_all(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        let name = name.as_ref();
        let st = self.metadata(name)?;
        if rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::Directory {
            let sub = self.open_dir(name)?;
            for child in sub.entries()? {
                sub.remove_all(&child)?;
            }
            rfs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR)?;
        } else {
            rfs::unlinkat(&self.fd, name, AtFlags::empty())?;
        }
        Ok(())
    }

    /// Names of the entries (without `.` and `..`), in no particular order.
    pub fn entries(&self) -> io::Result<Vec<OsString>> {
        let fd = rfs::openat(&self.fd, ".", DIR_FLAGS, Mode::empty())?;
        let mut dir = rfs::Dir::read_from(&fd)?;
        let mut out = Vec::new();
        while let Some(e) = dir.read() {
            let e = e?;
            let n = e.file_name().to_bytes();
            if n == b"." || n == b".." {
                continue;
            }
            out.push(OsStr::from_bytes(n).to_os_string());
        }
        Ok(out)
    }

    /// fsync of the directory (makes created, renamed and removed entries durable).
    pub fn sync(&self) -> io::Result<()> {
        rfs::fsync(&self.fd)?;
        Ok(())
    }

    /// Writes `name` atomically: a temporary file created exclusively (mode `m`), the bytes,
    /// fsync, rename over `name`, fsync of the directory. A link named `name` is replaced.
    pub fn write_atomic(&self, name: impl AsRef<OsStr>, bytes: &[u8], m: u32) -> io::Result<()> {
        let name = name.as_ref();
        check_name(name)?;
        let mut tmp = OsString::from(".");
        tmp.push(name);
        tmp.push(format!(".tmp{}", std::process::id()));
        // A temporary left by a killed writer of the same pid is ours to replace.
        match self.remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let r = (|| {
            let mut f = self.create_file(&tmp, m)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            drop(f);
            self.rename(&tmp, name)?;
            self.sync()
        })();
        if r.is_err() {
            let _ = self.remove_file(&tmp);
        }
        r
    }

    /// Reads the whole regular file `name` (no symlink followed).
    pub fn read(&self, name: impl AsRef<OsStr>) -> io::Result<Vec<u8>> {
        use std::io::Read;
        let mut f = self.open_file(name)?;
        let mut v = Vec::new();
        f.read_to_end(&mut v)?;
        Ok(v)
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn regular(fd: &OwnedFd, name: &OsStr) -> io::Result<()> {
    let st = rfs::fstat(fd)?;
    if rfs::FileType::from_raw_mode(st.st_mode) != rfs::FileType::RegularFile {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{:?} is not a regular file", name),
        ));
    }
    Ok(())
}

/// Opens `path` as seen from inside `root` (an opened directory standing for `/` of a
/// workload): absolute paths and `..` stay inside `root`, and any symlink on the way fails
/// (`openat2` with `RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`). With
/// `O_PATH` the result can name a socket (connect through `/proc/self/fd/N`).
///
/// A scoped lookup answers EAGAIN when a rename or mount elsewhere raced it (openat2(2) asks
/// callers to retry): it is tried again a few times before the error is returned.
pub fn open_beneath(root: &Dir, path: impl AsRef<Path>, flags: OFlags) -> io::Result<OwnedFd> {
    let open = || {
        rfs::openat2(
            &root.fd,
            path.as_ref(),
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
    };
    let mut tries = 0;
    loop {
        match open() {
            Err(rustix::io::Errno::AGAIN) if tries < 20 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            r => return Ok(r?),
        }
    }
}

pub use rustix::fs::OFlags as OpenFlags;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn names_are_single_components() {
        for bad in ["", ".", "..", "a/b", "/a"] {
            assert!(check_name(OsStr::new(bad)).is_err(), "{bad}");
        }
        check_name(OsStr::new("manifest.img")).unwrap();
    }

    #[test]
    fn create_refuses_a_planted_link_and_touches_nothing() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("victim");
        std::fs::write(&target, b"precious").unwrap();
        let d = Dir::create_all(t.path().join("img"), PRIVATE_DIR).unwrap();
        symlink(&target, d.child_path("objects.img")).unwrap();
        assert!(d.create_file("objects.img", PRIVATE_FILE).is_err());
        assert!(d.open_file("objects.img").is_err());
        assert!(d.open_append("objects.img", PRIVATE_FILE).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        // Atomic write replaces the link itself.
        d.write_atomic("objects.img", b"new", PRIVATE_FILE).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        assert_eq!(d.read("objects.img").unwrap(), b"new");
    }

    #[test]
    fn modes_ignore_the_umask() {
        let t = tempfile::tempdir().unwrap();
        let d = Dir::create_all(t.path().join("a/b"), PRIVATE_DIR).unwrap();
        let f = d.create_file("x", PRIVATE_FILE).unwrap();
        assert_eq!(f.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        let m = std::fs::metadata(t.path().join("a/b")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o700);
    }

    #[test]
    fn remove_all_never_follows_links() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"k").unwrap();
        let d = Dir::create_all(t.path().join("img"), PRIVATE_DIR).unwrap();
        let sub = d.create_dir("chunks", PRIVATE_DIR).unwrap();
        symlink(&outside, sub.child_path("link")).unwrap();
        sub.create_file("c", PRIVATE_FILE).unwrap();
        d.remove_all("chunks").unwrap();
        assert!(!d.exists("chunks").unwrap());
        assert!(outside.join("keep").exists());
    }

    #[test]
    fn open_file_beneath_refuses_links_on_the_way() {
        let t = tempfile::tempdir().unwrap();
        let d = Dir::create_all(t.path().join("img"), PRIVATE_DIR).unwrap();
        let sub = d.create_dir("ab", PRIVATE_DIR).unwrap();
        sub.create_file("c", PRIVATE_FILE).unwrap();
        std::fs::create_dir(t.path().join("out")).unwrap();
        std::fs::write(t.path().join("out/c"), b"x").unwrap();
        symlink(t.path().join("out"), d.child_path("cd")).unwrap();
        symlink(t.path().join("out/c"), sub.child_path("l")).unwrap();
        assert!(d.open_file_beneath("ab/c").is_ok());
        assert!(d.open_file_beneath("cd/c").is_err());
        assert!(d.open_file_beneath("ab/l").is_err());
        assert!(d.open_file_beneath("../img/ab/c").is_err());
        assert!(d.open_file_beneath("ab").is_err());
        // rename_noreplace keeps the winner.
        d.create_file("a", PRIVATE_FILE).unwrap();
        d.create_file("b", PRIVATE_FILE).unwrap();
        let e = d.rename_noreplace("a", "b").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        d.rename_noreplace("a", "z").unwrap();
    }

    #[test]
    fn open_beneath_stays_inside_and_refuses_links() {
        let t = tempfile::tempdir().unwrap();
        let root = Dir::create_all(t.path().join("root"), PRIVATE_DIR).unwrap();
        let run = root.create_dir("run", PRIVATE_DIR).unwrap();
        run.create_file("ok", PRIVATE_FILE).unwrap();
        symlink("/etc/passwd", run.child_path("bad")).unwrap();
        assert!(open_beneath(&root, "/run/ok", OFlags::PATH).is_ok());
        assert!(open_beneath(&root, "../../run/ok", OFlags::PATH).is_ok());
        assert!(open_beneath(&root, "/run/bad", OFlags::PATH).is_err());
    }

    #[test]
    fn open_following_takes_proc_root() {
        assert!(Dir::open("/proc/self/root").is_err());
        let r = Dir::open_following("/proc/self/root").unwrap();
        assert!(open_beneath(&r, "/proc/self/root/etc", OFlags::PATH).is_err());
        open_beneath(&r, "/etc", OFlags::PATH).unwrap();
    }
}
