//! The layer cache: a layer's content key, and what the cache keeps under it — the digests
//! and sizes of every layer (`keys/<key>`), compressed blobs whole (`blobs/sha256/…`), and for
//! a plain layer where its bytes are in the archive last written ([`ArchiveRef`]) — the
//! layout of the docker-archive file last written at each output path ([`ArchiveLayout`]),
//! and [`write_layer`], which produces a layer blob through it.
//!
//! The cache key is a sha256 over everything that decides the layer's bytes: the format
//! version, compression, mtime, and per entry its path, kind, mode, owner, link target and
//! content identity — inline bytes by their hash, host files by path, size, device, inode,
//! mtime and ctime (nanoseconds). ctime changes on every write, chmod, rename-over or
//! hard-link count change and cannot be set by a user, so a host file whose key is unchanged
//! has not been modified; content hashing every file on each build would cost as much as the
//! build itself.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use sha2::{Digest, Sha256};

use super::compress::Compression;
use super::files::{scratch_in, Pending};
use super::layer::{
    hex, planned_entry, produce, resolve_link, Blob, BlobSource, LayerOptions, Link, Origin,
    Produced, Store,
};
use super::OciError;
use crate::plan::Layer;
use crate::tree::{Content, Kind, Tree};

/// Bumped whenever the tar or compression output for the same input changes.
const FORMAT: &str = "imgbuild-layer-v1";

/// The layer's content key (see the module doc).
pub fn cache_key(
    tree: &Tree,
    layer: &Layer,
    epoch: u64,
    compression: Compression,
) -> Result<String, OciError> {
    let mut h = Sha256::new();
    let mut put = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    put(FORMAT.as_bytes());
    put(compression.as_str().as_bytes());
    put(&epoch.to_le_bytes());
    // `c` is the content of the entry at `at`.
    let content_id = |at: &[u8], c: &Content| -> Result<Vec<u8>, OciError> {
        Ok(match c {
            Content::Bytes(b) => {
                let mut v = b"bytes:".to_vec();
                v.extend_from_slice(&Sha256::digest(b));
                v
            }
            Content::Host { path, size, stamp } => {
                // The stamp taken when the file was added (the closure walk's lstat), else
                // a stat now: the same fields either way.
                let path = &path.resolve(at);
                let stamp = match stamp {
                    Some(s) => *s,
                    None => crate::tree::HostStamp::of(
                        &std::fs::metadata(path).map_err(|e| OciError::io(path, e))?,
                    )
                    .print(),
                };
                let mut v = b"host:".to_vec();
                v.extend_from_slice(path.as_os_str().as_encoded_bytes());
                v.extend_from_slice(&size.to_le_bytes());
                v.extend_from_slice(&stamp.get().to_le_bytes());
                v
            }
        })
    };
    for (p, e) in layer.entries(tree) {
        let e = planned_entry(p, e)?;
        put(p);
        put(&[e.mode, e.uid, e.gid].map(u32::to_le_bytes).concat());
        match &e.kind {
            Kind::Dir => put(b"dir"),
            Kind::File(c) => {
                put(b"file");
                put(&content_id(p, c)?);
            }
            Kind::Symlink(t) => {
                put(b"symlink");
                put(t);
            }
            Kind::HardLink(t) => match resolve_link(tree, layer, p, t)? {
                Link::Tar(t) => {
                    put(b"hardlink");
                    put(t);
                }
                Link::File(at, target) => {
                    put(b"linkfile");
                    put(&[target.mode, target.uid, target.gid]
                        .map(u32::to_le_bytes)
                        .concat());
                    if let Kind::File(c) = &target.kind {
                        put(&content_id(at, c)?);
                    }
                }
            },
            Kind::CharDevice { major, minor } => {
                put(b"chardev");
                put(&[*major, *minor].map(u32::to_le_bytes).concat());
            }
        }
    }
    Ok(hex(h.finalize()))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct KeyRecord {
    diff_id: String,
    digest: String,
    size: u64,
    tar_size: u64,
    /// Where an uncompressed layer's bytes were last written whole (see [`ArchiveRef`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    archive: Option<ArchiveRef>,
}

/// An uncompressed layer's bytes inside the docker-archive tar last written with it: the
/// archive's absolute path and the layer's offset in it. A rebuild copies the layer from there
/// in the kernel (`copy_file_range`, a reflink where the filesystem has them) instead of
/// reading every source file again, if the file at that path is still the one the cache's
/// [`ArchiveLayout`] of it describes — any write, chmod or rename-over changes its ctime — and
/// that layout has the layer's blob at this offset. Otherwise the layer is streamed from its
/// sources as before. The cache thus keeps no second copy of plain layers: the previous output
/// is the copy.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArchiveRef {
    pub path: PathBuf,
    pub offset: u64,
}

impl ArchiveRef {
    /// The archive, opened, if it is still the file its layout was recorded of and holds the
    /// blob `digest` of `size` bytes at the offset. `layouts` keeps the layouts read so far.
    /// `header` is the blob's tar header, which must be right before the offset too.
    pub fn open_if_unchanged(
        &self,
        layouts: &mut Layouts,
        digest: &str,
        size: u64,
        header: &[u8],
    ) -> Option<File> {
        let layout = layouts.get(&self.path)?;
        let member = Member {
            digest: digest.to_string(),
            offset: self.offset,
            size,
        };
        if !layout.members.contains(&member) {
            return None;
        }
        let f = File::open(&self.path).ok()?;
        let m = f.metadata().ok()?;
        (crate::tree::HostStamp::of(&m).0 == layout.stamp && header_at(&f, self.offset, header))
            .then_some(f)
    }
}

/// Whether `header` is in `f` right before `offset` (the header of the blob there).
pub fn header_at(f: &File, offset: u64, header: &[u8]) -> bool {
    use std::os::unix::fs::FileExt;
    let Some(at) = offset.checked_sub(header.len() as u64) else {
        return false;
    };
    let mut got = vec![0u8; header.len()];
    f.read_exact_at(&mut got, at).is_ok() && got == header
}

/// A docker-archive file as the build that wrote it left it: its absolute path, its stamp
/// (length, device, inode, mtime, ctime) then, the mtime of its tar headers, and its blobs in
/// the order they are in it. Kept as `archives/<sha256 of the path>`, one per output path,
/// replaced by each build that writes there. While the file has that stamp, the cache knows
/// every byte of it: plain layers are copied out of it ([`ArchiveRef`]), and the next build
/// to the same path keeps the blobs it would write at the same offsets where they are and
/// rewrites only the rest (see `oci::image::kept_prefix`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ArchiveLayout {
    pub path: PathBuf,
    pub stamp: [u64; 7],
    pub mtime: u64,
    pub members: Vec<Member>,
}

/// A blob in an archive: its digest, where its bytes start and how many there are.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    pub digest: String,
    pub offset: u64,
    pub size: u64,
}

/// Where the layout of the archive at `path` (absolute, canonical) is kept.
fn layout_file(dir: &Path, path: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    dir.join("archives")
        .join(hex(Sha256::digest(path.as_os_str().as_bytes())))
}

/// The recorded layout of the archive at `path` (absolute, canonical), if there is one.
pub fn read_layout(dir: &Path, path: &Path) -> Option<ArchiveLayout> {
    let l: ArchiveLayout =
        serde_json::from_slice(&std::fs::read(layout_file(dir, path)).ok()?).ok()?;
    (l.path == path).then_some(l)
}

/// Forgets the layout of the archive at `path` (absolute, canonical): done before that file is
/// changed in place, so a build that dies on the way leaves no record claiming its bytes.
pub fn forget_layout(dir: &Path, path: &Path) -> Result<(), OciError> {
    let f = layout_file(dir, path);
    match std::fs::remove_file(&f) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(OciError::io(&f, e)),
        _ => Ok(()),
    }
}

/// Records the layout of the archive `file` just written and named `archive`: its stamp,
/// its headers' mtime and its blobs in order. Nothing is recorded when `archive` no longer
/// names `file` (another build replaced it meanwhile): the layout would describe the wrong file.
pub fn store_layout(
    dir: &Path,
    archive: &Path,
    file: &File,
    mtime: u64,
    members: Vec<Member>,
) -> Result<(), OciError> {
    use std::os::unix::fs::MetadataExt;
    let path = std::fs::canonicalize(archive).map_err(|e| OciError::io(archive, e))?;
    let named = std::fs::metadata(&path).map_err(|e| OciError::io(&path, e))?;
    let m = file.metadata().map_err(|e| OciError::io(&path, e))?;
    if (named.dev(), named.ino()) != (m.dev(), m.ino()) {
        return Ok(());
    }
    let layout = ArchiveLayout {
        stamp: crate::tree::HostStamp::of(&m).0,
        path,
        mtime,
        members,
    };
    let adir = dir.join("archives");
    std::fs::create_dir_all(&adir).map_err(|e| OciError::io(&adir, e))?;
    let mut p = Pending::new_in(&adir, "archive").map_err(|e| OciError::io(&adir, e))?;
    p.file
        .write_all(&serde_json::to_vec(&layout).expect("json"))
        .map_err(OciError::Write)?;
    let dest = layout_file(dir, &layout.path);
    p.persist(&dest, true).map_err(|e| OciError::io(&dest, e))?;
    Ok(())
}

/// The docker-archive file at `output` opened for writing, with its layout, when it is still
/// exactly what the build that recorded the layout wrote (same stamp), `output` names it
/// itself (not through a symlink), no other name links to it (an update in place would change
/// that name's bytes too) and no other build is updating it: the file is returned locked
/// (`flock`, exclusive, until it is closed), and a build that finds it locked writes a new file.
pub fn previous_output(dir: &Path, output: &Path) -> Option<(File, ArchiveLayout)> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    if !std::fs::symlink_metadata(output).ok()?.is_file() {
        return None;
    }
    let path = std::fs::canonicalize(output).ok()?;
    let layout = read_layout(dir, &path)?;
    let f = File::options().read(true).write(true).open(&path).ok()?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return None;
    }
    let m = f.metadata().ok()?;
    (m.is_file() && m.nlink() == 1 && crate::tree::HostStamp::of(&m).0 == layout.stamp)
        .then_some((f, layout))
}

/// The archive layouts of the cache in `dir` a build has read, by path (a build asks for the
/// same one for every plain layer).
pub struct Layouts {
    dir: PathBuf,
    read: std::collections::HashMap<PathBuf, Option<ArchiveLayout>>,
}

impl Layouts {
    pub fn new(dir: &Path) -> Layouts {
        Layouts {
            dir: dir.to_path_buf(),
            read: Default::default(),
        }
    }

    /// The layout of the archive at `path`, read once per build.
    fn get(&mut self, path: &Path) -> Option<&ArchiveLayout> {
        let dir = &self.dir;
        self.read
            .entry(path.to_path_buf())
            .or_insert_with(|| read_layout(dir, path))
            .as_ref()
    }
}

/// What the cache knows about a layer.
pub enum Cached {
    /// A compressed blob, stored whole.
    Blob(Blob),
    /// An uncompressed layer: its digests and size, and where its bytes were last written
    /// (the previous output archive, [`ArchiveRef`]). Storing a copy of every plain layer
    /// would double the bytes written by every cold build and the disk used.
    Record(Produced, Option<ArchiveRef>),
}

/// The layer's cache key (when there is a cache) and what the cache holds for it.
pub fn lookup(
    tree: &Tree,
    layer: &Layer,
    o: &LayerOptions,
) -> Result<(Option<String>, Option<Cached>), OciError> {
    let Store::Cache(dir) = &o.store else {
        return Ok((None, None));
    };
    let key = cache_key(tree, layer, o.mtime, o.compression)?;
    let found = (|| {
        let rec: KeyRecord =
            serde_json::from_slice(&std::fs::read(dir.join("keys").join(&key)).ok()?).ok()?;
        let archive = rec.archive;
        let produced = Produced {
            diff_id: rec.diff_id,
            tar_size: rec.tar_size,
            digest: rec.digest,
            size: rec.size,
        };
        if o.compression == Compression::None {
            return Some(Cached::Record(produced, archive));
        }
        let path = dir
            .join("blobs/sha256")
            .join(produced.digest.strip_prefix("sha256:")?);
        (std::fs::metadata(&path).ok()?.len() == produced.size).then_some(Cached::Blob(Blob {
            diff_id: produced.diff_id,
            digest: produced.digest,
            size: produced.size,
            tar_size: produced.tar_size,
            media_type: o.compression.media_type(),
            source: BlobSource::Path(path),
            cached: true,
            origin: Origin::Cache,
        }))
    })();
    Ok((Some(key), found))
}

/// An uncompressed layer as placed in the archive being written: its key, digests, the
/// offset of its bytes, and where its cache record said they were before this build.
#[derive(Clone, Debug)]
pub struct Placed {
    pub key: String,
    pub produced: Produced,
    pub offset: u64,
    pub was: Option<ArchiveRef>,
}

/// Points the cache records of the plain layers in `placed` at the archive now named
/// `archive` (after its rename); a record that already points there is left as it is.
pub fn record_placed(dir: &Path, placed: &[Placed], archive: &Path) -> Result<(), OciError> {
    let path = std::fs::canonicalize(archive).map_err(|e| OciError::io(archive, e))?;
    for p in placed {
        let at = ArchiveRef {
            path: path.clone(),
            offset: p.offset,
        };
        if p.was.as_ref() != Some(&at) {
            record(dir, &p.key, &p.produced, Some(at))?;
        }
    }
    Ok(())
}

/// Records a layer under its key (atomically).
pub fn store_record(dir: &Path, key: &str, p: &Produced) -> Result<(), OciError> {
    record(dir, key, p, None)
}

fn record(
    dir: &Path,
    key: &str,
    p: &Produced,
    archive: Option<ArchiveRef>,
) -> Result<(), OciError> {
    let rec = KeyRecord {
        diff_id: p.diff_id.clone(),
        digest: p.digest.clone(),
        size: p.size,
        tar_size: p.tar_size,
        archive,
    };
    let kdir = dir.join("keys");
    let mut kp = Pending::new_in(&kdir, "key").map_err(|e| OciError::io(&kdir, e))?;
    kp.file
        .write_all(&serde_json::to_vec(&rec).expect("json"))
        .map_err(OciError::Write)?;
    let kdest = kdir.join(key);
    kp.persist(&kdest, true)
        .map_err(|e| OciError::io(&kdest, e))?;
    Ok(())
}

/// Copies `len` bytes at `offset` of `from` into the cache as blob `digest` (in the kernel
/// where it can: `copy_file_range`).
pub fn store_blob_from(
    dir: &Path,
    from: &File,
    offset: u64,
    len: u64,
    digest: &str,
) -> Result<PathBuf, OciError> {
    let d = dir.join("blobs/sha256");
    let dest = d.join(digest.trim_start_matches("sha256:"));
    if std::fs::metadata(&dest).is_ok_and(|m| m.len() == len) {
        return Ok(dest);
    }
    let p = Pending::new_in(&d, "blob").map_err(|e| OciError::io(&d, e))?;
    copy_range(from, offset, &p.file, len).map_err(|e| OciError::io(&dest, e))?;
    p.persist(&dest, false)
        .map_err(|e| OciError::io(&dest, e))?;
    Ok(dest)
}

/// Copies a byte range between files: `copy_file_range`, else pread/write.
pub fn copy_range(from: &File, mut offset: u64, to: &File, mut len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    while len > 0 {
        let mut off = offset as libc::loff_t;
        let chunk = len.min(1 << 30) as usize;
        // SAFETY: valid fds; the kernel copies at `off` of `from` to the current position of `to`.
        let n = unsafe {
            libc::copy_file_range(
                from.as_raw_fd(),
                &mut off,
                to.as_raw_fd(),
                std::ptr::null_mut(),
                chunk,
                0,
            )
        };
        if n > 0 {
            offset += n as u64;
            len -= n as u64;
            continue;
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "source shorter than expected",
            ));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => {
                let mut buf = vec![0u8; 1 << 20];
                let mut to = to;
                while len > 0 {
                    let want = (buf.len() as u64).min(len) as usize;
                    let k = from.read_at(&mut buf[..want], offset)?;
                    if k == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "source shorter than expected",
                        ));
                    }
                    to.write_all(&buf[..k])?;
                    offset += k as u64;
                    len -= k as u64;
                }
                return Ok(());
            }
            _ => return Err(e),
        }
    }
    Ok(())
}

/// Produces one layer blob as a file of its own (for stdout and OCI directories), from the
/// cache when its key is there.
pub fn write_layer(tree: &Tree, layer: &Layer, o: &LayerOptions) -> Result<Blob, OciError> {
    let media_type = o.compression.media_type();
    let (key, cached) = lookup(tree, layer, o)?;
    let scratch_dir = match &o.store {
        Store::Cache(d) => d.join("blobs/sha256"),
        Store::Scratch(d) => d.clone(),
    };
    let done = |b: Blob| {
        o.progress.layers_done.fetch_add(1, Ordering::Relaxed);
        Ok(b)
    };
    match cached {
        Some(Cached::Blob(b)) => {
            o.progress.bytes.fetch_add(b.tar_size, Ordering::Relaxed);
            return done(b);
        }
        Some(Cached::Record(rec, _)) => {
            let file = scratch_in(&scratch_dir).map_err(|e| OciError::io(&scratch_dir, e))?;
            let sink =
                BufWriter::with_capacity(1 << 20, file.try_clone().map_err(OciError::Write)?);
            let (p, _) = produce(tree, layer, o, sink, false)?;
            if p.tar_size != rec.tar_size {
                return Err(OciError::Input(format!("layer {:?} is {} bytes, its cache record says {}; a source changed without changing its metadata: rebuild with --no-cache", layer.name, p.tar_size, rec.tar_size)));
            }
            return done(Blob {
                diff_id: rec.diff_id,
                digest: rec.digest,
                size: rec.size,
                tar_size: rec.tar_size,
                media_type,
                source: BlobSource::Scratch(file),
                cached: true,
                origin: Origin::Sources,
            });
        }
        None => {}
    }
    let file = scratch_in(&scratch_dir).map_err(|e| OciError::io(&scratch_dir, e))?;
    let sink = BufWriter::with_capacity(1 << 20, file.try_clone().map_err(OciError::Write)?);
    let (p, _) = produce(tree, layer, o, sink, true)?;
    let mut source = BlobSource::Scratch(file);
    if let (Store::Cache(dir), Some(key)) = (&o.store, &key) {
        if o.compression != Compression::None {
            let BlobSource::Scratch(f) = &source else {
                unreachable!()
            };
            source = BlobSource::Path(store_blob_from(dir, f, 0, p.size, &p.digest)?);
        }
        store_record(dir, key, &p)?;
    }
    done(Blob {
        diff_id: p.diff_id,
        digest: p.digest,
        size: p.size,
        tar_size: p.tar_size,
        media_type,
        source,
        cached: false,
        origin: Origin::New,
    })
}
