//! One layer of the Plan → one blob: a deterministic tar of the layer's Tree entries
//! (byte-sorted, parents first, mtime from SOURCE_DATE_EPOCH, owners as in the Tree), hashed
//! uncompressed (the diff_id) and after compression (the blob digest). The layer cache that
//! keeps an unchanged layer from being written twice, and [`super::layer_cache::write_layer`]
//! that goes through it, are in [`super::layer_cache`].

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::compress::{Compression, Encoder, InOrder, Piece, Pieces, Pool};
use super::hash_pipe::HashPipe;
use super::tar::{self, EntryType, Header};
use super::OciError;
use crate::plan::Layer;
use crate::tree::{display_path, Content, Entry, Kind, Tree};
/// A finished layer blob.
#[derive(Debug)]
pub struct Blob {
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: String,
    /// `sha256:<hex>` of the blob as stored.
    pub digest: String,
    pub size: u64,
    pub tar_size: u64,
    pub media_type: &'static str,
    pub source: BlobSource,
    /// Taken from the cache instead of written.
    pub cached: bool,
    /// Where its bytes came from in this build.
    pub origin: Origin,
}

/// Where a layer's bytes came from in this build (`--json`: each layer's `"from"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// Read from its sources, written and hashed.
    New,
    /// A compressed blob kept whole in the layer cache, copied.
    Cache,
    /// Its digests from the cache, its bytes streamed from its sources again.
    Sources,
    /// Copied from the archive the previous build wrote (uncompressed layers).
    PreviousArchive,
    /// Left where it was: the previous archive at the output path was updated in place and
    /// already held this layer at the same offset.
    Kept,
}

/// Where a blob's bytes are.
#[derive(Debug)]
pub enum BlobSource {
    Path(PathBuf),
    Scratch(File),
    /// Written straight into the output archive; no file of its own.
    InArchive,
}

impl Blob {
    /// A reader positioned at the blob's first byte.
    pub fn open(&self) -> io::Result<File> {
        match &self.source {
            BlobSource::Path(p) => File::open(p),
            BlobSource::Scratch(f) => {
                let mut f = f.try_clone()?;
                f.seek(SeekFrom::Start(0))?;
                Ok(f)
            }
            BlobSource::InArchive => Err(io::Error::other("the blob lives only in the archive")),
        }
    }
}

/// Counters the progress display reads.
#[derive(Default)]
pub struct Progress {
    pub bytes: AtomicU64,
    pub layers_done: AtomicU64,
}

/// Where blobs go: a content-addressed cache directory, or anonymous scratch files.
#[derive(Clone, Debug)]
pub enum Store {
    Cache(PathBuf),
    Scratch(PathBuf),
}

impl Store {
    pub fn prepare(&self) -> Result<(), OciError> {
        let dirs: Vec<PathBuf> = match self {
            Store::Cache(d) => vec![d.join("blobs/sha256"), d.join("keys")],
            Store::Scratch(d) => vec![d.clone()],
        };
        for d in dirs {
            std::fs::create_dir_all(&d).map_err(|e| OciError::io(&d, e))?;
        }
        Ok(())
    }
}

/// The tree entry of a path the Plan put in a layer.
pub(super) fn planned_entry<'t>(p: &[u8], e: Option<&'t Entry>) -> Result<&'t Entry, OciError> {
    e.ok_or_else(|| {
        OciError::Input(format!(
            "planned path {} is not in the tree",
            display_path(p)
        ))
    })
}

pub(super) fn hex(d: impl AsRef<[u8]>) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// What a hard link becomes in this layer.
pub(super) enum Link<'a> {
    /// Its target is written earlier in the same layer: a tar hard link.
    Tar(&'a [u8]),
    /// Its target (path, entry) is elsewhere: a regular file with the target's content and
    /// metadata.
    File(&'a [u8], &'a Entry),
}

pub(super) fn resolve_link<'a>(
    tree: &'a Tree,
    layer: &Layer,
    path: &[u8],
    target: &'a [u8],
) -> Result<Link<'a>, OciError> {
    let mut t = target;
    for _ in 0..8 {
        let e = tree.get(t).ok_or_else(|| {
            OciError::Input(format!(
                "hard link {} points at {}, which is not in the image",
                display_path(path),
                display_path(t)
            ))
        })?;
        match &e.kind {
            Kind::HardLink(next) => t = next,
            Kind::File(_) => {
                // A file is in a layer as one of its groups' (parents are directories).
                let same_layer = t < path && layer.groups.contains(&e.group);
                return Ok(if same_layer {
                    Link::Tar(t)
                } else {
                    Link::File(t, e)
                });
            }
            _ => {
                return Err(OciError::Input(format!(
                    "hard link {} points at {}, which is not a regular file",
                    display_path(path),
                    display_path(t)
                )))
            }
        }
    }
    Err(OciError::Input(format!(
        "hard link chain too long at {}",
        display_path(path)
    )))
}
/// Counts bytes and hashes them on the way through.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    count: u64,
    progress: Option<Arc<Progress>>,
    enabled: bool,
}

impl<W> Hashing<W> {
    /// Counts (and with `enabled`, hashes) what goes through to `inner`; `progress` is told
    /// every byte.
    fn new(inner: W, progress: Option<Arc<Progress>>, enabled: bool) -> Self {
        Hashing {
            inner,
            hash: Sha256::new(),
            count: 0,
            progress,
            enabled,
        }
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if self.enabled {
            self.hash.update(&buf[..n]);
        }
        self.count += n as u64;
        if let Some(p) = &self.progress {
            p.bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `c`, the content of the entry at `at`, for the entry at `path` (the same, or a hard
/// link to it).
fn write_content(
    out: &mut impl Write,
    c: &Content,
    path: &[u8],
    at: &[u8],
    buf: &mut [u8],
) -> Result<(), OciError> {
    match c {
        Content::Bytes(b) => out.write_all(b).map_err(OciError::Write),
        Content::Host {
            path: host, size, ..
        } => {
            let host = &host.resolve(at);
            let mut f = File::open(host).map_err(|e| OciError::io(host, e))?;
            let now = f.metadata().map_err(|e| OciError::io(host, e))?.len();
            if now != *size {
                return Err(OciError::Changed {
                    host: host.clone(),
                    image: display_path(path),
                    was: *size,
                    now,
                });
            }
            let mut left = *size;
            while left > 0 {
                let want = (buf.len() as u64).min(left) as usize;
                let n = f
                    .read(&mut buf[..want])
                    .map_err(|e| OciError::io(host, e))?;
                if n == 0 {
                    return Err(OciError::Changed {
                        host: host.clone(),
                        image: display_path(path),
                        was: *size,
                        now: size - left,
                    });
                }
                out.write_all(&buf[..n]).map_err(OciError::Write)?;
                left -= n as u64;
            }
            Ok(())
        }
    }
}

/// Writes the layer's tar to `out`; returns its length.
pub fn write_tar(
    tree: &Tree,
    layer: &Layer,
    mtime: u64,
    out: &mut impl Write,
) -> Result<(), OciError> {
    let mut buf = vec![0u8; 256 << 10];
    let mut hdr = Vec::with_capacity(2048);
    let mut name = Vec::with_capacity(256);
    for (p, e) in layer.entries(tree) {
        let e = planned_entry(p, e)?;
        name.clear();
        name.extend_from_slice(p);
        let mut h = Header {
            name: &[],
            link: &[],
            kind: EntryType::File,
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            size: 0,
            mtime,
            dev: (0, 0),
        };
        // The content, with the path of the entry it is of (a hard link's target).
        let mut content: Option<(&[u8], &Content)> = None;
        match &e.kind {
            Kind::Dir => {
                name.push(b'/');
                h.kind = EntryType::Dir;
            }
            Kind::File(c) => {
                h.size = c.len();
                content = Some((p, c));
            }
            Kind::Symlink(t) => {
                h.kind = EntryType::Symlink;
                h.link = t;
            }
            Kind::HardLink(t) => match resolve_link(tree, layer, p, t)? {
                Link::Tar(t) => {
                    h.kind = EntryType::HardLink;
                    h.link = t;
                }
                Link::File(at, target) => {
                    let Kind::File(c) = &target.kind else {
                        unreachable!("resolved to a file")
                    };
                    h.mode = target.mode;
                    h.uid = target.uid;
                    h.gid = target.gid;
                    h.size = c.len();
                    content = Some((at, c));
                }
            },
            Kind::CharDevice { major, minor } => {
                h.kind = EntryType::CharDevice;
                h.dev = (*major, *minor);
            }
        }
        h.name = &name;
        hdr.clear();
        tar::header_bytes(&h, &mut hdr);
        out.write_all(&hdr).map_err(OciError::Write)?;
        if let Some((at, c)) = content {
            write_content(out, c, p, at, &mut buf)?;
            let pad = tar::padding(h.size);
            out.write_all(&[0u8; tar::BLOCK][..pad])
                .map_err(OciError::Write)?;
        }
    }
    tar::finish(out).map_err(OciError::Write)?;
    Ok(())
}
/// Options for writing layers.
pub struct LayerOptions {
    pub compression: Compression,
    pub mtime: u64,
    pub store: Store,
    pub pool: Arc<Pool>,
    pub progress: Arc<Progress>,
}

/// The digests and sizes of a layer as produced.
#[derive(Clone, Debug)]
pub struct Produced {
    pub diff_id: String,
    pub tar_size: u64,
    pub digest: String,
    pub size: u64,
}

/// Streams the layer's tar, compressed as asked, into `sink`; hashes both sides unless
/// `hash` is false (a layer re-streamed under a known cache record: digests come from it).
pub fn produce<W: Write>(
    tree: &Tree,
    layer: &Layer,
    o: &LayerOptions,
    sink: W,
    hash: bool,
) -> Result<(Produced, W), OciError> {
    let digest_of = |h: Sha256| {
        if hash {
            format!("sha256:{}", hex(h.finalize()))
        } else {
            String::new()
        }
    };
    if o.compression == Compression::None && hash && o.pool.threads > 1 {
        // The hash on a core of its own (see hash_pipe); progress counts what is written.
        let pipe = HashPipe::new(sink).map_err(OciError::Write)?;
        let mut w = Hashing::new(pipe, Some(Arc::clone(&o.progress)), false);
        write_tar(tree, layer, o.mtime, &mut w)?;
        let count = w.count;
        let (d, sink) = w.inner.finish().map_err(OciError::Write)?;
        let d = format!("sha256:{}", hex(d));
        let p = Produced {
            diff_id: d.clone(),
            tar_size: count,
            digest: d,
            size: count,
        };
        return Ok((p, sink));
    }
    if o.compression == Compression::None {
        let mut w = Hashing::new(sink, Some(Arc::clone(&o.progress)), hash);
        write_tar(tree, layer, o.mtime, &mut w)?;
        w.flush().map_err(OciError::Write)?;
        let d = digest_of(w.hash);
        let p = Produced {
            diff_id: d.clone(),
            tar_size: w.count,
            digest: d,
            size: w.count,
        };
        return Ok((p, w.inner));
    }
    let compressed = InOrder::new(Hashing::new(sink, None, hash), &o.pool);
    let (tar_hash, tar_size, c) = compress_tar(tree, layer, o, compressed, hash)?;
    let mut c = c.finish().map_err(OciError::Write)?;
    c.flush().map_err(OciError::Write)?;
    let p = Produced {
        diff_id: digest_of(tar_hash),
        tar_size,
        digest: digest_of(c.hash),
        size: c.count,
    };
    Ok((p, c.inner))
}

/// The layer's tar, hashed (with `hash`: the diff_id) and counted on its way into an
/// [`Encoder`] that hands the compressed pieces to `pieces`: the hash, the tar's size and the
/// sink, once every chunk is submitted.
fn compress_tar<S: Pieces>(
    tree: &Tree,
    layer: &Layer,
    o: &LayerOptions,
    pieces: S,
    hash: bool,
) -> Result<(Sha256, u64, S), OciError> {
    let enc = Encoder::new(o.compression, Arc::clone(&o.pool), pieces).map_err(OciError::Write)?;
    let mut w = Hashing::new(enc, Some(Arc::clone(&o.progress)), hash);
    write_tar(tree, layer, o.mtime, &mut w)?;
    let sink = w.inner.finish().map_err(OciError::Write)?;
    Ok((w.hash, w.count, sink))
}

/// What [`produce_ahead`] sends the archive writer, in order: the pieces of one layer's
/// compressed stream, then that layer's uncompressed digest and size.
pub enum Ahead {
    Piece(Piece),
    End { diff_id: String, tar_size: u64 },
}

/// Hands the pieces of a compressed stream to the archive writer's channel.
struct SendPieces(std::sync::mpsc::SyncSender<Ahead>);

impl Pieces for SendPieces {
    fn put(&mut self, piece: Piece) -> io::Result<()> {
        self.0
            .send(Ahead::Piece(piece))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the archive writer stopped"))
    }
}

/// Produces the compressed `layers` one after another (run it on a thread of its own): their
/// tar streams are read, hashed and cut into chunks for the pool here, and every piece goes
/// to `to` in order, each layer's closed by [`Ahead::End`]. The writer thus takes one layer's
/// last chunks while the next layer is already being read and compressed: no core waits at a
/// layer's end, which on a closure of a hundred small layers kept a quarter of a core idle.
/// Returns early, without an error, once the receiver is gone (the writer failed: its error
/// is the one to report).
pub fn produce_ahead(
    tree: &Tree,
    layers: &[&Layer],
    o: &LayerOptions,
    to: std::sync::mpsc::SyncSender<Ahead>,
) -> Result<(), OciError> {
    for layer in layers {
        let (tar_hash, tar_size) = match compress_tar(tree, layer, o, SendPieces(to.clone()), true)
        {
            Ok((h, n, _)) => (h, n),
            Err(OciError::Write(e)) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e),
        };
        let end = Ahead::End {
            diff_id: format!("sha256:{}", hex(tar_hash.finalize())),
            tar_size,
        };
        if to.send(end).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Why the archive writer stopped early: an error of its own, or the read-ahead ended before
/// the layer it waited for (the read-ahead's own error says why).
#[derive(Debug)]
pub enum Stopped {
    Error(OciError),
    AheadEnded,
}

impl From<OciError> for Stopped {
    fn from(e: OciError) -> Stopped {
        Stopped::Error(e)
    }
}

/// Takes one layer's pieces from [`produce_ahead`] and writes them to `sink`: the layer as
/// produced (digests and sizes) and the sink.
pub fn take_ahead<W: Write>(
    from: &std::sync::mpsc::Receiver<Ahead>,
    sink: W,
) -> Result<(Produced, W), Stopped> {
    let mut out = Hashing::new(sink, None, true);
    loop {
        match from.recv() {
            Ok(Ahead::Piece(p)) => {
                let bytes = p.wait().map_err(OciError::Write)?;
                out.write_all(&bytes).map_err(OciError::Write)?;
            }
            Ok(Ahead::End { diff_id, tar_size }) => {
                out.flush().map_err(OciError::Write)?;
                let p = Produced {
                    diff_id,
                    tar_size,
                    digest: format!("sha256:{}", hex(out.hash.finalize())),
                    size: out.count,
                };
                return Ok((p, out.inner));
            }
            Err(_) => return Err(Stopped::AheadEnded),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::layer_cache::cache_key;
    use crate::tree::Group;

    fn layer_of(tree: &Tree) -> Layer {
        Layer::with_paths(
            "t".into(),
            vec![Group::Base],
            tree,
            tree.iter().map(|(p, _)| p),
            0,
        )
    }

    fn entries(tar: &[u8]) -> Vec<tar::Parsed> {
        let mut out = Vec::new();
        let mut off = 0;
        while off + tar::BLOCK <= tar.len() {
            let Some(p) = tar::parse_block(tar[off..off + tar::BLOCK].try_into().unwrap()).unwrap()
            else {
                break;
            };
            off += tar::BLOCK + p.size.div_ceil(512) as usize * 512;
            out.push(p);
        }
        out
    }

    #[test]
    fn tar_is_sorted_with_fixed_mtime_and_tree_owners() {
        let mut t = Tree::new();
        t.insert("tmp", Entry::dir(0o1777, Group::Base)).unwrap();
        t.insert(
            "etc/shadow",
            Entry::file(
                Content::bytes(b"root:!:1::::::\n".to_vec()),
                0o600,
                Group::Base,
            ),
        )
        .unwrap();
        t.insert("bin/sh-free", Entry::symlink("/bin/none", Group::Base))
            .unwrap();
        t.insert("home/hls", Entry::dir(0o755, Group::Base).owned(1000, 1000))
            .unwrap();
        let mut out = Vec::new();
        write_tar(&t, &layer_of(&t), 42, &mut out).unwrap();
        let e = entries(&out);
        let names: Vec<String> = e
            .iter()
            .map(|p| String::from_utf8_lossy(&p.name).into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "bin/",
                "bin/sh-free",
                "etc/",
                "etc/shadow",
                "home/",
                "home/hls/",
                "tmp/"
            ]
        );
        assert!(e.iter().all(|p| p.mtime == 42));
        assert_eq!(e[3].mode, 0o600);
        assert_eq!(e[5].uid, 1000);
        assert_eq!(e[6].mode, 0o1777);
        assert_eq!(out.len() % 512, 0);
    }

    #[test]
    fn hard_links_to_another_layer_become_files() {
        let mut t = Tree::new();
        t.insert(
            "a/file",
            Entry::file(Content::bytes(b"data".to_vec()), 0o444, Group::Base),
        )
        .unwrap();
        t.insert(
            "b/link",
            Entry {
                kind: Kind::HardLink(b"a/file".to_vec()),
                mode: 0o444,
                uid: 0,
                gid: 0,
                group: Group::Config,
            },
        )
        .unwrap();
        t.insert(
            "b/same",
            Entry {
                kind: Kind::HardLink(b"b/link".to_vec()),
                mode: 0o444,
                uid: 0,
                gid: 0,
                group: Group::Config,
            },
        )
        .unwrap();
        let only_b = Layer::with_paths(
            "b".into(),
            vec![Group::Config],
            &t,
            [&b"b"[..], b"b/link", b"b/same"],
            0,
        );
        let mut out = Vec::new();
        write_tar(&t, &only_b, 1, &mut out).unwrap();
        let e = entries(&out);
        assert_eq!(e[1].flag, b'0');
        assert_eq!(e[1].size, 4);
        assert_eq!(e[2].flag, b'0');
        let all = layer_of(&t);
        let mut out = Vec::new();
        write_tar(&t, &all, 1, &mut out).unwrap();
        let e = entries(&out);
        let link = e.iter().find(|p| p.name == b"b/link").unwrap();
        assert_eq!((link.flag, link.link.as_slice()), (b'1', &b"a/file"[..]));
    }

    #[test]
    fn cache_key_changes_when_a_host_file_changes() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("bin");
        std::fs::write(&f, b"one").unwrap();
        let mut t = Tree::new();
        t.insert(
            "bin/x",
            Entry::file(crate::tree::host_content(&f).unwrap(), 0o755, Group::Base),
        )
        .unwrap();
        let l = layer_of(&t);
        let k1 = cache_key(&t, &l, 1, Compression::None).unwrap();
        assert_eq!(k1, cache_key(&t, &l, 1, Compression::None).unwrap());
        assert_ne!(k1, cache_key(&t, &l, 2, Compression::None).unwrap());
        assert_ne!(k1, cache_key(&t, &l, 1, Compression::Gzip).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&f, b"two").unwrap();
        assert_ne!(k1, cache_key(&t, &l, 1, Compression::None).unwrap());
    }
}
