//! Files that appear whole or not at all. A blob or an output is written into an unnamed
//! file (`O_TMPFILE`) in its destination directory and given its name only when complete
//! (`linkat`, then `rename` over an existing one), so a failure, Ctrl-C or even SIGKILL
//! leaves nothing half-written. Where `O_TMPFILE` is not supported the file gets a temp name
//! that is removed on error and by a SIGINT/SIGTERM/SIGHUP handler.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

/// A file being written in `dir`, named only by [`Pending::persist`].
pub struct Pending {
    pub file: File,
    dir: PathBuf,
    named: Option<(PathBuf, usize)>,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn unique_name(dir: &Path, hint: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{hint}.imgbuild-tmp-{}-{n}", std::process::id()))
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other)
}

impl Pending {
    /// A new unnamed file in `dir` (which must exist).
    pub fn new_in(dir: &Path, hint: &str) -> io::Result<Pending> {
        let c = cpath(dir)?;
        // SAFETY: plain syscall with a valid C string; the fd is owned by the File below.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC,
                0o644 as libc::c_uint,
            )
        };
        if fd >= 0 {
            // SAFETY: fd is a fresh, owned descriptor.
            let file = unsafe { File::from_raw_fd(fd) };
            return Ok(Pending {
                file,
                dir: dir.to_path_buf(),
                named: None,
            });
        }
        let path = unique_name(dir, hint);
        let slot = cleanup_register(&path);
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .inspect_err(|_| cleanup_release(slot))?;
        Ok(Pending {
            file,
            dir: dir.to_path_buf(),
            named: Some((path, slot)),
        })
    }

    /// Gives the file its final name, replacing what was there. `replace = false` keeps an
    /// existing file (content-addressed blobs: same name, same bytes).
    pub fn persist(mut self, dest: &Path, replace: bool) -> io::Result<File> {
        if let Some((path, slot)) = self.named.take() {
            let r = if !replace && dest.exists() {
                std::fs::remove_file(&path)
            } else {
                replace_with(&path, dest)
            };
            cleanup_release(slot);
            r?;
            return self.file.try_clone();
        }
        let proc = CString::new(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
            .map_err(io::Error::other)?;
        let link_to = |p: &Path| -> io::Result<()> {
            let c = cpath(p)?;
            // SAFETY: valid C strings; linkat does not keep them.
            let r = unsafe {
                libc::linkat(
                    libc::AT_FDCWD,
                    proc.as_ptr(),
                    libc::AT_FDCWD,
                    c.as_ptr(),
                    libc::AT_SYMLINK_FOLLOW,
                )
            };
            if r == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        };
        match link_to(dest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && !replace => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let tmp = unique_name(&self.dir, "out");
                let slot = cleanup_register(&tmp);
                let r = link_to(&tmp).and_then(|_| replace_with(&tmp, dest));
                if r.is_err() {
                    let _ = std::fs::remove_file(&tmp);
                }
                cleanup_release(slot);
                r?;
            }
            Err(e) => return Err(e),
        }
        self.file.try_clone()
    }
}

/// Puts `from` at `dest`. An existing regular file at `dest` is swapped out atomically
/// (`renameat2(RENAME_EXCHANGE)`: `dest` always names a whole file) and then removed. A plain
/// `rename` over it would cost far more on ext4: replacing a file by rename makes the kernel
/// allocate and start writing back the new file's blocks at once (its `auto_da_alloc`
/// safeguard), 0.4 s for a 600 MB image, where the exchange and removing the old file take
/// 0.2 s. Anything else (no file there, a directory, a filesystem without the exchange) gets
/// the plain `rename`, which also reports what is wrong with such a `dest`.
fn replace_with(from: &Path, dest: &Path) -> io::Result<()> {
    if std::fs::symlink_metadata(dest).is_ok_and(|m| m.file_type().is_file()) {
        let (f, d) = (cpath(from)?, cpath(dest)?);
        // SAFETY: valid C strings; renameat2 does not keep them.
        let r = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                f.as_ptr(),
                libc::AT_FDCWD,
                d.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if r == 0 {
            // `from` now names the old file: the new one is in place whatever happens here.
            if let Err(e) = std::fs::remove_file(from) {
                tracing::warn!(path = %from.display(), error = %e, "could not remove the replaced file");
            }
            return Ok(());
        }
    }
    std::fs::rename(from, dest)
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some((path, slot)) = self.named.take() {
            let _ = std::fs::remove_file(&path);
            cleanup_release(slot);
        }
    }
}

/// An anonymous scratch file (unlinked at once): gone when dropped or when the process dies.
pub fn scratch_in(dir: &Path) -> io::Result<File> {
    let path = unique_name(dir, "scratch");
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

// --- Signal-time cleanup of named temp files --------------------------------------------

const SLOTS: usize = 64;
static CLEANUP: [AtomicPtr<libc::c_char>; SLOTS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; SLOTS];
/// Per slot, the device and inode the path must still name to be unlinked (both 0: any).
static IDENTITY: [[AtomicU64; 2]; SLOTS] =
    [const { [AtomicU64::new(0), AtomicU64::new(0)] }; SLOTS];
/// What a slot holds while [`cleanup_register_file`] sets its identity: claimed, not yet a
/// path (the handler skips it).
static CLAIMED: libc::c_char = 0;
static INSTALLED: std::sync::Once = std::sync::Once::new();

fn claimed() -> *mut libc::c_char {
    std::ptr::addr_of!(CLAIMED).cast_mut()
}

extern "C" fn on_signal(sig: libc::c_int) {
    for (slot, identity) in CLEANUP.iter().zip(&IDENTITY) {
        let p = slot.load(Ordering::SeqCst);
        if !p.is_null() && p != claimed() {
            let dev = identity[0].load(Ordering::SeqCst);
            let ino = identity[1].load(Ordering::SeqCst);
            unlink_if_it_names(p, dev, ino);
        }
    }
    // SAFETY: restore the default action and re-raise, so the exit status says "signal".
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Installs the unlink-and-die handler for each signal whose disposition is still the default.
/// A signal the process already handles (a command such as `up` or `boot` that turns it into
/// a flag and removes what it made on the way out) or ignores keeps its disposition: replacing
/// it would kill that command on Ctrl-C before its own cleanup ran, leaving its containers and
/// networks behind.
fn install() {
    INSTALLED.call_once(|| {
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: a null new action only reads the current one into `old`.
            let default = unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                    && old.sa_sigaction == libc::SIG_DFL
            };
            if default {
                // SAFETY: installing a handler that only calls async-signal-safe functions.
                unsafe {
                    libc::signal(sig, on_signal as *const () as libc::sighandler_t);
                }
            }
        }
    });
}

/// Unlinks `p` unless an identity is given (`ino` not 0) and `p` no longer names that file
/// (another process replaced it, or it is gone). Only async-signal-safe calls (`lstat`,
/// `unlink`): the signal handler calls it.
fn unlink_if_it_names(p: *const libc::c_char, dev: u64, ino: u64) {
    if ino != 0 {
        // SAFETY: lstat is async-signal-safe; p is NUL-terminated, st is written by lstat.
        let same = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            libc::lstat(p, &mut st) == 0 && st.st_dev == dev && st.st_ino == ino
        };
        if !same {
            return;
        }
    }
    // SAFETY: unlink is async-signal-safe; p is a NUL-terminated string.
    unsafe { libc::unlink(p) };
}

/// Registers a path to unlink if the process is interrupted; returns its slot.
pub fn cleanup_register(path: &Path) -> usize {
    register(path, (0, 0))
}

/// [`cleanup_register`] for a path that another process may replace while it is registered
/// (an output updated in place, which a concurrent build that found it locked writes anew):
/// it is unlinked only while it still names `file`.
pub fn cleanup_register_file(path: &Path, file: &File) -> usize {
    use std::os::unix::fs::MetadataExt;
    match file.metadata() {
        Ok(m) if m.ino() != 0 => register(path, (m.dev(), m.ino())),
        // Without its identity the path is not registered: left as it is rather than removed
        // when it may be another build's file.
        _ => usize::MAX,
    }
}

fn register(path: &Path, (dev, ino): (u64, u64)) -> usize {
    install();
    let Ok(c) = cpath(path) else {
        return usize::MAX;
    };
    for (i, slot) in CLEANUP.iter().enumerate() {
        if slot
            .compare_exchange(
                std::ptr::null_mut(),
                claimed(),
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
        {
            // Claimed: the handler skips the slot until its path is stored, after its identity.
            IDENTITY[i][0].store(dev, Ordering::SeqCst);
            IDENTITY[i][1].store(ino, Ordering::SeqCst);
            slot.store(c.into_raw(), Ordering::SeqCst);
            return i;
        }
    }
    usize::MAX
}

/// Forgets a registered path (after it was renamed or removed).
pub fn cleanup_release(slot: usize) {
    if slot < SLOTS {
        let p = CLEANUP[slot].swap(std::ptr::null_mut(), Ordering::SeqCst);
        if !p.is_null() && p != claimed() {
            // SAFETY: p came from CString::into_raw in cleanup_register.
            drop(unsafe { CString::from_raw(p) });
        }
    }
}

/// The directory an output path is written in (`.` for a bare file name).
pub fn output_dir(output: &Path) -> PathBuf {
    output
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The one-line error for an output path whose directory does not exist (checked before any
/// work, so nothing is built for an output that cannot be written).
pub fn missing_output_dir(output: &Path) -> Option<String> {
    let dir = output_dir(output);
    (!dir.is_dir()).then(|| {
        format!(
            "output directory {} does not exist; create it or give -o a path in an existing directory",
            dir.display()
        )
    })
}

/// A directory written under a temp name and renamed into place when complete; removed on
/// drop unless persisted. Registered for signal-time cleanup (top level only).
pub struct PendingDir {
    pub path: PathBuf,
    slot: usize,
    done: bool,
}

impl PendingDir {
    pub fn new_for(dest: &Path) -> io::Result<PendingDir> {
        let parent = output_dir(dest);
        let hint = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "oci".into());
        let path = unique_name(&parent, &hint);
        std::fs::create_dir(&path)?;
        let slot = usize::MAX; // a directory cannot be unlinked in one call; see Drop.
        Ok(PendingDir {
            path,
            slot,
            done: false,
        })
    }

    pub fn persist(mut self, dest: &Path) -> io::Result<()> {
        if dest.exists() {
            std::fs::remove_dir_all(dest)?;
        }
        std::fs::rename(&self.path, dest)?;
        self.done = true;
        Ok(())
    }
}

impl Drop for PendingDir {
    fn drop(&mut self) {
        cleanup_release(self.slot);
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_signal_time_unlink_spares_a_file_that_replaced_the_registered_one() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out.tar");
        std::fs::write(&out, b"ours").unwrap();
        let ours = File::open(&out).unwrap();
        let c = cpath(&out).unwrap();
        let m = ours.metadata().unwrap();
        // Another build puts a new file at the name (rename over it, as it persists).
        let theirs = d.path().join("theirs");
        std::fs::write(&theirs, b"theirs").unwrap();
        std::fs::rename(&theirs, &out).unwrap();
        unlink_if_it_names(c.as_ptr(), m.dev(), m.ino());
        assert_eq!(
            std::fs::read(&out).unwrap(),
            b"theirs",
            "another build's file"
        );
        // The name still holding the registered file: it goes.
        let now = std::fs::metadata(&out).unwrap();
        unlink_if_it_names(c.as_ptr(), now.dev(), now.ino());
        assert!(!out.exists());
        // No identity (a temp file's unique name): unlinked whatever it holds.
        std::fs::write(&out, b"x").unwrap();
        unlink_if_it_names(c.as_ptr(), 0, 0);
        assert!(!out.exists());
        // Registered with its identity and released: nothing removed.
        std::fs::write(&out, b"y").unwrap();
        let slot = cleanup_register_file(&out, &File::open(&out).unwrap());
        assert!(slot < SLOTS);
        assert_eq!(
            IDENTITY[slot][1].load(Ordering::SeqCst),
            std::fs::metadata(&out).unwrap().ino()
        );
        cleanup_release(slot);
        assert!(out.exists());
    }

    #[test]
    fn a_pending_file_has_no_name_until_persisted() {
        let d = tempfile::tempdir().unwrap();
        let mut p = Pending::new_in(d.path(), "x").unwrap();
        p.file.write_all(b"hello").unwrap();
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
        let dest = d.path().join("out.tar");
        std::fs::write(&dest, b"old").unwrap();
        p.persist(&dest, true).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_dropped_pending_file_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        {
            let mut p = Pending::new_in(d.path(), "x").unwrap();
            p.file.write_all(b"partial").unwrap();
        }
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    fn persist_in(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<File> {
        let mut p = Pending::new_in(dir, "t").unwrap();
        io::Write::write_all(&mut p.file, bytes).unwrap();
        p.persist(&dir.join(name), true)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn persisting_over_a_file_replaces_it_and_leaves_nothing_else() {
        let d = std::env::temp_dir().join(format!("imgbuild-files-{}-over", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        persist_in(&d, "out.tar", b"old old old").unwrap();
        let held = File::open(d.join("out.tar")).unwrap();
        persist_in(&d, "out.tar", b"new").unwrap();
        assert_eq!(std::fs::read(d.join("out.tar")).unwrap(), b"new");
        assert_eq!(names(&d), ["out.tar"]);
        // A reader that had the old file open still reads the old bytes.
        let mut old = String::new();
        io::Read::read_to_string(&mut &held, &mut old).unwrap();
        assert_eq!(old, "old old old");
        // A symlink at the destination is replaced, not followed (as rename does).
        std::os::unix::fs::symlink("out.tar", d.join("link")).unwrap();
        persist_in(&d, "link", b"mine").unwrap();
        assert!(std::fs::symlink_metadata(d.join("link")).unwrap().is_file());
        assert_eq!(std::fs::read(d.join("out.tar")).unwrap(), b"new");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn persisting_over_a_directory_fails_and_leaves_it_alone() {
        let d = std::env::temp_dir().join(format!("imgbuild-files-{}-dir", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("out.tar")).unwrap();
        std::fs::write(d.join("out.tar/keep"), b"k").unwrap();
        assert!(persist_in(&d, "out.tar", b"new").is_err());
        assert_eq!(std::fs::read(d.join("out.tar/keep")).unwrap(), b"k");
        assert_eq!(names(&d), ["out.tar"]);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
