//! The JSON documents of an image and the two shapes they are written in.
//!
//! - image config: Docker's schema (a superset of OCI's) with `Healthcheck` in nanoseconds,
//!   `rootfs.diff_ids` and one `history` entry per layer;
//! - OCI manifest (labels as annotations) and `index.json` (the reference as
//!   `io.containerd.image.name` and `org.opencontainers.image.ref.name`);
//! - Docker's `manifest.json` (`Config`, `RepoTags`, `Layers`) and `repositories`.
//!
//! Every map is a `BTreeMap` and every struct serialises its fields in a fixed order, so
//! the bytes (and digests) depend only on the input.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::layer::Blob;
use super::tar::{self, EntryType, Header};
use super::OciError;
use crate::plan::Plan;

pub const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Docker's healthcheck: durations in nanoseconds.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Healthcheck {
    pub test: Vec<String>,
    pub interval: u64,
    pub timeout: u64,
    pub start_period: u64,
    pub start_interval: u64,
    pub retries: u32,
}

/// What the image runs and how it is named; everything the writer needs beyond the Plan.
#[derive(Clone, Debug)]
pub struct ImageMeta {
    /// Repository, e.g. `hls-origin`.
    pub name: String,
    pub tag: String,
    /// `uid:gid`.
    pub user: String,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `17080/tcp`.
    pub exposed_ports: Vec<String>,
    pub workdir: String,
    pub stop_signal: String,
    pub labels: BTreeMap<String, String>,
    pub healthcheck: Option<Healthcheck>,
    /// RFC 3339, from SOURCE_DATE_EPOCH.
    pub created: String,
    /// `created_by` prefix in the history, e.g. `imgbuild 0.1.0`.
    pub created_by: String,
}

impl ImageMeta {
    pub fn reference(&self) -> String {
        format!("{}:{}", self.name, self.tag)
    }
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RunConfig<'a> {
    user: &'a str,
    exposed_ports: BTreeMap<&'a str, Empty>,
    env: &'a [String],
    entrypoint: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    cmd: &'a [String],
    working_dir: &'a str,
    labels: &'a BTreeMap<String, String>,
    stop_signal: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    healthcheck: Option<&'a Healthcheck>,
}

#[derive(Serialize)]
struct History<'a> {
    created: &'a str,
    created_by: String,
    comment: String,
}

#[derive(Serialize)]
struct RootFs<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<&'a str>,
}

#[derive(Serialize)]
struct ConfigDoc<'a> {
    architecture: &'static str,
    os: &'static str,
    created: &'a str,
    config: RunConfig<'a>,
    rootfs: RootFs<'a>,
    history: Vec<History<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor<'a> {
    media_type: &'a str,
    digest: &'a str,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<&'a BTreeMap<String, String>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestDoc<'a> {
    schema_version: u32,
    media_type: &'static str,
    config: Descriptor<'a>,
    layers: Vec<Descriptor<'a>>,
    annotations: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexDoc<'a> {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<Descriptor<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest<'a> {
    config: String,
    repo_tags: Vec<String>,
    layers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    layer_sources: Option<&'a ()>,
}

fn digest_of(b: &[u8]) -> String {
    let h = Sha256::digest(b);
    format!(
        "sha256:{}",
        h.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

pub fn blob_path(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

/// All the small files of an image, serialised.
pub struct Documents {
    pub config: Vec<u8>,
    pub config_digest: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub index: Vec<u8>,
    pub docker_manifest: Vec<u8>,
    pub repositories: Vec<u8>,
    pub oci_layout: Vec<u8>,
}

impl Documents {
    pub fn new(meta: &ImageMeta, plan: &Plan, blobs: &[Blob]) -> Documents {
        let ports: BTreeMap<&str, Empty> = meta
            .exposed_ports
            .iter()
            .map(|p| (p.as_str(), Empty {}))
            .collect();
        let history = plan
            .layers
            .iter()
            .map(|l| History {
                created: &meta.created,
                created_by: format!("{}: {}", meta.created_by, l.name),
                comment: l
                    .groups
                    .iter()
                    .map(|g| g.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
            .collect();
        let cfg = ConfigDoc {
            architecture: "amd64",
            os: "linux",
            created: &meta.created,
            config: RunConfig {
                user: &meta.user,
                exposed_ports: ports,
                env: &meta.env,
                entrypoint: &meta.entrypoint,
                cmd: &meta.cmd,
                working_dir: &meta.workdir,
                labels: &meta.labels,
                stop_signal: &meta.stop_signal,
                healthcheck: meta.healthcheck.as_ref(),
            },
            rootfs: RootFs {
                kind: "layers",
                diff_ids: blobs.iter().map(|b| b.diff_id.as_str()).collect(),
            },
            history,
        };
        let config = serde_json::to_vec(&cfg).expect("config JSON");
        let config_digest = digest_of(&config);
        let manifest = serde_json::to_vec(&ManifestDoc {
            schema_version: 2,
            media_type: MT_MANIFEST,
            config: Descriptor {
                media_type: MT_CONFIG,
                digest: &config_digest,
                size: config.len() as u64,
                annotations: None,
            },
            layers: blobs
                .iter()
                .map(|b| Descriptor {
                    media_type: b.media_type,
                    digest: &b.digest,
                    size: b.size,
                    annotations: None,
                })
                .collect(),
            annotations: &meta.labels,
        })
        .expect("manifest JSON");
        let manifest_digest = digest_of(&manifest);
        let mut refs = BTreeMap::new();
        refs.insert(
            "io.containerd.image.name".to_string(),
            format!("docker.io/library/{}", meta.reference()),
        );
        refs.insert(
            "org.opencontainers.image.ref.name".to_string(),
            meta.tag.clone(),
        );
        let index = serde_json::to_vec(&IndexDoc {
            schema_version: 2,
            media_type: MT_INDEX,
            manifests: vec![Descriptor {
                media_type: MT_MANIFEST,
                digest: &manifest_digest,
                size: manifest.len() as u64,
                annotations: Some(&refs),
            }],
        })
        .expect("index JSON");
        let docker_manifest = serde_json::to_vec(&[DockerManifest {
            config: blob_path(&config_digest),
            repo_tags: vec![meta.reference()],
            layers: blobs.iter().map(|b| blob_path(&b.digest)).collect(),
            layer_sources: None,
        }])
        .expect("manifest.json");
        // Legacy file: repository → tag → image id (the config digest's hex).
        let mut repos: BTreeMap<&str, BTreeMap<&str, &str>> = BTreeMap::new();
        repos
            .entry(&meta.name)
            .or_default()
            .insert(&meta.tag, config_digest.trim_start_matches("sha256:"));
        let repositories = serde_json::to_vec(&repos).expect("repositories");
        Documents {
            config,
            config_digest,
            manifest,
            manifest_digest,
            index,
            docker_manifest,
            repositories,
            oci_layout: br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        }
    }

    /// Bytes of every blob (layers once each, config, manifest).
    pub fn total_size(&self, blobs: &[Blob]) -> u64 {
        let mut seen = std::collections::BTreeSet::new();
        let layers: u64 = blobs
            .iter()
            .filter(|b| seen.insert(&b.digest))
            .map(|b| b.size)
            .sum();
        layers + self.config.len() as u64 + self.manifest.len() as u64
    }
}

enum Data<'a> {
    Dir,
    Bytes(&'a [u8]),
    Blob(&'a Blob),
}

/// The archive's entries in the order [`write_layers_direct`] and [`write_archive_tail`] write them: the `blobs/`
/// directories, each layer blob once (plan order), config, manifest, `index.json`,
/// `manifest.json`, `oci-layout`, `repositories`.
fn entries<'a>(docs: &'a Documents, blobs: &'a [Blob]) -> Vec<(String, Data<'a>)> {
    let mut v: Vec<(String, Data<'a>)> = vec![
        ("blobs/".into(), Data::Dir),
        ("blobs/sha256/".into(), Data::Dir),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for b in blobs {
        if seen.insert(&b.digest) {
            v.push((blob_path(&b.digest), Data::Blob(b)));
        }
    }
    v.push((blob_path(&docs.config_digest), Data::Bytes(&docs.config)));
    v.push((
        blob_path(&docs.manifest_digest),
        Data::Bytes(&docs.manifest),
    ));
    v.push(("index.json".into(), Data::Bytes(&docs.index)));
    v.push(("manifest.json".into(), Data::Bytes(&docs.docker_manifest)));
    v.push(("oci-layout".into(), Data::Bytes(&docs.oci_layout)));
    v.push(("repositories".into(), Data::Bytes(&docs.repositories)));
    v
}

/// Writes the docker-archive tar. Blob bytes are copied with `io::copy`, which the standard
/// library turns into `copy_file_range`/`splice` between files and pipes.
pub fn write_archive<W: Write>(
    w: &mut W,
    docs: &Documents,
    blobs: &[Blob],
    mtime: u64,
) -> Result<(), OciError> {
    for (name, data) in entries(docs, blobs) {
        let (kind, mode, size) = match &data {
            Data::Dir => (EntryType::Dir, 0o755, 0),
            Data::Bytes(b) => (EntryType::File, 0o644, b.len() as u64),
            Data::Blob(b) => (EntryType::File, 0o644, b.size),
        };
        let hdr = header(&name, kind, mode, size, mtime);
        w.write_all(&hdr).map_err(OciError::Write)?;
        match data {
            Data::Dir => {}
            Data::Bytes(b) => w.write_all(b).map_err(OciError::Write)?,
            Data::Blob(b) => {
                let f = b.open().map_err(OciError::Write)?;
                let n = io::copy(&mut io::Read::take(f, b.size), w).map_err(OciError::Write)?;
                if n != b.size {
                    return Err(OciError::Input(format!("layer blob {} is shorter than recorded ({n} of {} bytes); remove the layer cache", b.digest, b.size)));
                }
            }
        }
        w.write_all(&[0u8; tar::BLOCK][..tar::padding(size)])
            .map_err(OciError::Write)?;
    }
    tar::finish(w).map_err(OciError::Write)
}

fn header(name: &str, kind: EntryType, mode: u32, size: u64, mtime: u64) -> Vec<u8> {
    let mut hdr = Vec::with_capacity(512);
    tar::header_bytes(
        &Header {
            name: name.as_bytes(),
            link: b"",
            kind,
            mode,
            uid: 0,
            gid: 0,
            size,
            mtime,
            dev: (0, 0),
        },
        &mut hdr,
    );
    hdr
}

/// What the layer cache holds for a layer: its key (with a cache) and what is kept under it.
pub type Found = (Option<String>, Option<super::layer_cache::Cached>);

/// Looks every layer of the plan up in the layer cache, in plan order.
pub fn lookup_layers(
    tree: &crate::tree::Tree,
    plan: &Plan,
    lo: &super::layer::LayerOptions,
) -> Result<Vec<Found>, OciError> {
    plan.layers
        .iter()
        .map(|l| super::layer_cache::lookup(tree, l, lo))
        .collect()
}

/// What [`write_layers_direct`] wrote: the blobs in plan order, where the plain layers' bytes
/// are now (for their cache records), and the archive's blobs in the order they are in it
/// (its layout, for the next build).
#[derive(Debug)]
pub struct Written {
    pub blobs: Vec<Blob>,
    pub placed: Vec<super::layer_cache::Placed>,
    pub members: Vec<super::layer_cache::Member>,
}

/// The leading layers of a build already in the previous archive at the same offsets: how
/// many, and where the archive goes on after them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kept {
    pub layers: usize,
    pub bytes: u64,
}

/// The most bytes of plain layers an update in place may have to read from their sources
/// again: layers after the kept ones that the cache would have copied out of the very file
/// being rewritten.
const REREAD_MAX: u64 = 64 << 20;

/// Whether the previous archive at the output path (its `layout`) is worth updating in place
/// rather than writing a new file, and what of it stays: the longest run of leading layers
/// whose blobs the cache knows (`found`) and the layout has at the offsets this build would
/// write them at, with the same header mtime. Worth it when that keeps at least half of the
/// previous archive's layer bytes and leaves at most [`REREAD_MAX`] bytes of plain layers to
/// be read from their sources again; otherwise the new file is written whole, as always.
pub fn kept_prefix(
    plan: &Plan,
    found: &[Found],
    layout: &super::layer_cache::ArchiveLayout,
    mtime: u64,
) -> Option<Kept> {
    use super::layer_cache::{Cached, Member};
    if layout.mtime != mtime || found.len() != plan.layers.len() {
        return None;
    }
    let block = tar::BLOCK as u64;
    // After the `blobs/` and `blobs/sha256/` directory entries.
    let mut pos = 2 * block;
    let mut seen = std::collections::BTreeSet::new();
    let (mut layers, mut members, mut kept_size) = (0, 0, 0);
    for (_, cached) in found {
        let (digest, size) = match cached {
            Some(Cached::Blob(b)) => (&b.digest, b.size),
            Some(Cached::Record(r, _)) => (&r.digest, r.size),
            None => break,
        };
        if !seen.contains(digest) {
            let want = Member {
                digest: digest.clone(),
                offset: pos + block,
                size,
            };
            if layout.members.get(members) != Some(&want) {
                break;
            }
            seen.insert(digest);
            members += 1;
            kept_size += size;
            pos = want.offset + size + tar::padding(size) as u64;
        }
        layers += 1;
    }
    let old_size: u64 = layout.members.iter().map(|m| m.size).sum();
    let reread: u64 = found[layers..]
        .iter()
        .filter_map(|(_, c)| match c {
            Some(Cached::Record(r, Some(a))) if a.path == layout.path => Some(r.size),
            _ => None,
        })
        .sum();
    (layers > 0 && 2 * kept_size >= old_size && reread <= REREAD_MAX)
        .then_some(Kept { layers, bytes: pos })
}

/// Whether `f` (the previous archive) holds the tar header of each of its blobs that a
/// [`Kept`] prefix keeps right before the blob's bytes, as its layout says: the layout was
/// recorded of this very file, and this makes sure before its blobs are kept.
pub fn kept_headers_match(
    f: &std::fs::File,
    layout: &super::layer_cache::ArchiveLayout,
    kept: Kept,
) -> bool {
    layout
        .members
        .iter()
        .take_while(|m| m.offset < kept.bytes)
        .all(|m| {
            let h = header(
                &blob_path(&m.digest),
                EntryType::File,
                0o644,
                m.size,
                layout.mtime,
            );
            super::layer_cache::header_at(f, m.offset, &h)
        })
}

/// Writes the layers of the docker-archive tar straight into `f`: every layer is produced (or
/// copied from the cache) in place, its header written once its digest is known — one write
/// of every byte, no intermediate blob files. New compressed layers are then copied into the
/// cache from the archive (`copy_file_range`); cached ones are copied from it the same way,
/// and so are unchanged plain layers from the archive last written (see
/// [`super::layer_cache::ArchiveRef`]). Entries: the `blobs/` directories, then the layers in
/// plan order; [`write_archive_tail`] writes the rest. `f` is a new, empty file, or with
/// `kept` the previous archive cut to `kept.bytes` and positioned there: its first
/// `kept.layers` layers stay as they are ([`kept_prefix`]). `found` is [`lookup_layers`].
pub fn write_layers_direct(
    f: &std::fs::File,
    tree: &crate::tree::Tree,
    plan: &Plan,
    lo: &super::layer::LayerOptions,
    found: Vec<Found>,
    kept: Option<Kept>,
) -> Result<Written, OciError> {
    use super::layer::Stopped;
    use super::layer_cache::Cached;
    if lo.compression == super::Compression::None {
        return write_layers_in_order(f, tree, plan, lo, found, kept, None).map_err(|e| match e {
            Stopped::Error(e) => e,
            Stopped::AheadEnded => unreachable!("no read-ahead without compression"),
        });
    }
    // New compressed layers are read and compressed ahead on a thread of their own
    // (layer::produce_ahead) while this one writes the previous one's chunks.
    let new: Vec<&crate::plan::Layer> = plan
        .layers
        .iter()
        .zip(&found)
        .filter(|(_, (_, c))| !matches!(c, Some(Cached::Blob(_))))
        .map(|(l, _)| l)
        .collect();
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel(super::compress::pieces_in_flight(&lo.pool));
        let ahead = std::thread::Builder::new()
            .name("layers-ahead".into())
            .spawn_scoped(s, || super::layer::produce_ahead(tree, &new, lo, tx))
            .map_err(OciError::Write)?;
        let written = write_layers_in_order(f, tree, plan, lo, found, kept, Some(rx));
        let produced = ahead.join().expect("the layer read-ahead thread panicked");
        match written {
            Err(Stopped::AheadEnded) => Err(produced.err().unwrap_or_else(|| {
                OciError::Input("the layer read-ahead ended before its last layer".into())
            })),
            Err(Stopped::Error(e)) => Err(e),
            Ok(w) => Ok(w),
        }
    })
}

/// Where each blob's bytes start in the archive being written (a blob is written once), and
/// the archive's blobs in the order they are in it (its layout).
#[derive(Default)]
struct Placements {
    offsets: std::collections::BTreeMap<String, u64>,
    members: Vec<super::layer_cache::Member>,
}

impl Placements {
    fn offset(&self, digest: &str) -> Option<u64> {
        self.offsets.get(digest).copied()
    }

    fn place(&mut self, digest: &str, offset: u64, size: u64) {
        self.offsets.insert(digest.to_string(), offset);
        self.members.push(super::layer_cache::Member {
            digest: digest.to_string(),
            offset,
            size,
        });
    }
}

/// A plain layer known from its cache record whose bytes are already in the archive.
fn record_blob(
    r: &super::layer::Produced,
    lo: &super::layer::LayerOptions,
    origin: super::layer::Origin,
) -> Blob {
    Blob {
        diff_id: r.diff_id.clone(),
        digest: r.digest.clone(),
        size: r.size,
        tar_size: r.tar_size,
        media_type: lo.compression.media_type(),
        source: super::layer::BlobSource::InArchive,
        cached: true,
        origin,
    }
}

/// The layers in plan order into `f` (see [`write_layers_direct`]), `found` being what the
/// cache holds for each and `kept` what of the previous archive stays; a layer to produce is
/// taken from `ahead` where there is one, else produced here.
fn write_layers_in_order(
    f: &std::fs::File,
    tree: &crate::tree::Tree,
    plan: &Plan,
    lo: &super::layer::LayerOptions,
    found: Vec<Found>,
    kept: Option<Kept>,
    ahead: Option<std::sync::mpsc::Receiver<super::layer::Ahead>>,
) -> Result<Written, super::layer::Stopped> {
    use super::layer::{self, BlobSource, Store};
    use super::layer_cache::{self, Cached};
    use std::io::Seek;
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::Ordering;
    let mtime = lo.mtime;
    let mut out = f;
    let mut pos = 0u64;
    for d in ["blobs/", "blobs/sha256/"] {
        let h = header(d, EntryType::Dir, 0o755, 0, mtime);
        if kept.is_none() {
            out.write_all(&h).map_err(OciError::Write)?;
        }
        pos += h.len() as u64;
    }
    let mut layouts = match &lo.store {
        Store::Cache(dir) => Some(layer_cache::Layouts::new(dir)),
        Store::Scratch(_) => None,
    };
    let mut at = Placements::default();
    let mut placed = Vec::new();
    let mut blobs = Vec::with_capacity(plan.layers.len());
    let zeros = [0u8; tar::BLOCK];
    let kept_layers = kept.map_or(0, |k| k.layers);
    for (i, (l, (key, cached))) in plan.layers.iter().zip(found).enumerate() {
        if i < kept_layers {
            // Already in the archive being updated, at this very place (kept_prefix).
            let (record, archive, blob) = match cached {
                Some(Cached::Blob(b)) => (None, None, b),
                Some(Cached::Record(r, a)) => {
                    let b = record_blob(&r, lo, layer::Origin::Kept);
                    (Some(r), a, b)
                }
                None => unreachable!("kept_prefix keeps only layers the cache knows"),
            };
            if at.offset(&blob.digest).is_none() {
                at.place(&blob.digest, pos + tar::BLOCK as u64, blob.size);
                pos += tar::BLOCK as u64 + blob.size + tar::padding(blob.size) as u64;
            }
            if let (Some(r), Some(key)) = (record, key) {
                placed.push(layer_cache::Placed {
                    key,
                    offset: at.offset(&r.digest).expect("placed in the archive above"),
                    produced: r,
                    was: archive,
                });
            }
            lo.progress
                .bytes
                .fetch_add(blob.tar_size, Ordering::Relaxed);
            lo.progress.layers_done.fetch_add(1, Ordering::Relaxed);
            blobs.push(Blob {
                origin: layer::Origin::Kept,
                source: BlobSource::InArchive,
                ..blob
            });
            if i + 1 == kept_layers && Some(pos) != kept.map(|k| k.bytes) {
                return Err(OciError::Input(format!(
                    "the archive being updated in place goes on at byte {pos}, not at {:?} as planned",
                    kept.map(|k| k.bytes)
                ))
                .into());
            }
            continue;
        }
        match cached {
            Some(Cached::Blob(b)) => {
                if at.offset(&b.digest).is_none() {
                    at.place(&b.digest, pos + tar::BLOCK as u64, b.size);
                    let h = header(&blob_path(&b.digest), EntryType::File, 0o644, b.size, mtime);
                    out.write_all(&h).map_err(OciError::Write)?;
                    let src = b.open().map_err(OciError::Write)?;
                    match layer_cache::copy_range(&src, 0, f, b.size) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                            return Err(OciError::Input(format!(
                                "cached layer blob {} is shorter than recorded; remove the layer cache",
                                b.digest
                            )).into());
                        }
                        Err(e) => return Err(OciError::Write(e).into()),
                    }
                    let pad = tar::padding(b.size);
                    out.write_all(&zeros[..pad]).map_err(OciError::Write)?;
                    pos += h.len() as u64 + b.size + pad as u64;
                }
                lo.progress.bytes.fetch_add(b.tar_size, Ordering::Relaxed);
                lo.progress.layers_done.fetch_add(1, Ordering::Relaxed);
                blobs.push(b);
            }
            other => {
                let (record, archive) = match other {
                    Some(Cached::Record(r, a)) => (Some(r), a),
                    _ => (None, None),
                };
                // A plain layer still whole in the archive written last time: copied from
                // there in the kernel, not streamed from its sources again.
                if let (Some(r), Some(a), Some(key), Some(layouts)) =
                    (&record, &archive, &key, &mut layouts)
                {
                    let h = header(&blob_path(&r.digest), EntryType::File, 0o644, r.size, mtime);
                    if let Some(old) = a.open_if_unchanged(layouts, &r.digest, r.size, &h) {
                        if at.offset(&r.digest).is_none() {
                            out.write_all(&h).map_err(OciError::Write)?;
                            layer_cache::copy_range(&old, a.offset, f, r.size)
                                .map_err(|e| OciError::io(&a.path, e))?;
                            let pad = tar::padding(r.size);
                            out.write_all(&zeros[..pad]).map_err(OciError::Write)?;
                            at.place(&r.digest, pos + h.len() as u64, r.size);
                            pos += h.len() as u64 + r.size + pad as u64;
                        }
                        placed.push(layer_cache::Placed {
                            key: key.clone(),
                            produced: r.clone(),
                            offset: at.offset(&r.digest).expect("placed in the archive above"),
                            was: Some(a.clone()),
                        });
                        lo.progress.bytes.fetch_add(r.tar_size, Ordering::Relaxed);
                        lo.progress.layers_done.fetch_add(1, Ordering::Relaxed);
                        blobs.push(record_blob(r, lo, layer::Origin::PreviousArchive));
                        continue;
                    }
                }
                let hdr_pos = pos;
                out.write_all(&zeros).map_err(OciError::Write)?;
                // What writes into this (the hash pipe, the compressor, the tar writer's reads)
                // mostly hands it whole buffers of its size or more, which pass straight
                // through; it gathers tar headers and small files.
                let sink = io::BufWriter::with_capacity(256 << 10, out);
                let (p, sink) = match &ahead {
                    Some(rx) => layer::take_ahead(rx, sink)?,
                    None => layer::produce(tree, l, lo, sink, record.is_none())?,
                };
                drop(sink);
                let p = match &record {
                    Some(r) if r.tar_size != p.tar_size => {
                        return Err(OciError::Input(format!("layer {:?} is {} bytes, its cache record says {}; a source changed without changing its metadata: rebuild with --no-cache", l.name, p.tar_size, r.tar_size)).into());
                    }
                    Some(r) => r.clone(),
                    None => p,
                };
                let data_pos = hdr_pos + tar::BLOCK as u64;
                if at.offset(&p.digest).is_none() {
                    at.place(&p.digest, data_pos, p.size);
                    let pad = tar::padding(p.size);
                    out.write_all(&zeros[..pad]).map_err(OciError::Write)?;
                    let h = header(&blob_path(&p.digest), EntryType::File, 0o644, p.size, mtime);
                    if h.len() != tar::BLOCK {
                        return Err(OciError::Input(format!(
                            "layer {:?}: its archive header does not fit one block",
                            l.name
                        ))
                        .into());
                    }
                    f.write_all_at(&h, hdr_pos).map_err(OciError::Write)?;
                    pos = data_pos + p.size + pad as u64;
                    if let (Store::Cache(dir), None, Some(_)) = (&lo.store, &record, &key) {
                        if lo.compression != super::Compression::None {
                            layer_cache::store_blob_from(dir, f, data_pos, p.size, &p.digest)?;
                        }
                    }
                } else {
                    // The same blob is already in the archive: take this copy back out.
                    f.set_len(hdr_pos).map_err(OciError::Write)?;
                    out.seek(io::SeekFrom::Start(hdr_pos))
                        .map_err(OciError::Write)?;
                    pos = hdr_pos;
                }
                if let (Store::Cache(dir), None, Some(key)) = (&lo.store, &record, &key) {
                    layer_cache::store_record(dir, key, &p)?;
                }
                if let (Some(key), super::Compression::None) = (&key, lo.compression) {
                    placed.push(layer_cache::Placed {
                        key: key.clone(),
                        produced: p.clone(),
                        offset: at.offset(&p.digest).expect("placed in the archive above"),
                        was: archive.clone(),
                    });
                }
                lo.progress.layers_done.fetch_add(1, Ordering::Relaxed);
                blobs.push(Blob {
                    diff_id: p.diff_id,
                    digest: p.digest,
                    size: p.size,
                    tar_size: p.tar_size,
                    media_type: lo.compression.media_type(),
                    source: BlobSource::InArchive,
                    cached: record.is_some(),
                    origin: if record.is_some() {
                        layer::Origin::Sources
                    } else {
                        layer::Origin::New
                    },
                });
            }
        }
    }
    Ok(Written {
        blobs,
        placed,
        members: at.members,
    })
}

/// Ends the docker-archive tar [`write_layers_direct`] began in `f` (its position at the end
/// of the last layer): the config and manifest, `index.json`, `manifest.json`, `oci-layout`,
/// `repositories` and the end-of-archive blocks.
pub fn write_archive_tail(f: &std::fs::File, docs: &Documents, mtime: u64) -> Result<(), OciError> {
    let mut out = f;
    let zeros = [0u8; tar::BLOCK];
    let rest: [(String, &[u8]); 6] = [
        (blob_path(&docs.config_digest), &docs.config),
        (blob_path(&docs.manifest_digest), &docs.manifest),
        ("index.json".into(), &docs.index),
        ("manifest.json".into(), &docs.docker_manifest),
        ("oci-layout".into(), &docs.oci_layout),
        ("repositories".into(), &docs.repositories),
    ];
    for (name, bytes) in rest {
        out.write_all(&header(
            &name,
            EntryType::File,
            0o644,
            bytes.len() as u64,
            mtime,
        ))
        .map_err(OciError::Write)?;
        out.write_all(bytes).map_err(OciError::Write)?;
        out.write_all(&zeros[..tar::padding(bytes.len() as u64)])
            .map_err(OciError::Write)?;
    }
    tar::finish(&mut out).map_err(OciError::Write)
}

/// Writes an OCI image layout into `dir` (which exists and is empty).
pub fn write_oci_dir(dir: &Path, docs: &Documents, blobs: &[Blob]) -> Result<(), OciError> {
    let bdir = dir.join("blobs/sha256");
    std::fs::create_dir_all(&bdir).map_err(|e| OciError::io(&bdir, e))?;
    for (name, data) in entries(docs, blobs) {
        let dest = dir.join(&name);
        match data {
            Data::Dir => {}
            Data::Bytes(b) => std::fs::write(&dest, b).map_err(|e| OciError::io(&dest, e))?,
            Data::Blob(b) => {
                // A copy, never a hard link: editing the directory must not change the cache.
                let mut f = b.open().map_err(OciError::Write)?;
                let mut o = std::fs::File::create(&dest).map_err(|e| OciError::io(&dest, e))?;
                io::copy(&mut f, &mut o).map_err(|e| OciError::io(&dest, e))?;
            }
        }
    }
    // An OCI layout has no docker manifest.json/repositories.
    for extra in ["manifest.json", "repositories"] {
        let _ = std::fs::remove_file(dir.join(extra));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::compress::{Compression, Pool};
    use super::super::layer::{self, LayerOptions, Progress, Store};
    use super::*;
    use crate::plan::Layer;
    use crate::tree::{Content, Entry, Group, HostPath, Tree};
    use std::sync::Arc;

    /// Three host files of a few chunks each, one per layer; `short` names the file whose
    /// recorded size is one byte more than it has (the source "changed" after the walk).
    pub(in crate::oci) fn three_layers(
        dir: &std::path::Path,
        short: Option<usize>,
    ) -> (Tree, Plan) {
        let mut tree = Tree::new();
        let mut layers = Vec::new();
        for i in 0..3usize {
            let mut x = 11u32 + i as u32;
            let bytes: Vec<u8> = (0..(2 << 20) + 777 * i)
                .map(|_| {
                    x = x.wrapping_mul(1103515245).wrapping_add(12345);
                    b"abcdefgh"[(x >> 28) as usize % 8]
                })
                .collect();
            let host = dir.join(format!("f{i}"));
            std::fs::write(&host, &bytes).unwrap();
            let size = bytes.len() as u64 + u64::from(short == Some(i));
            let content = Content::Host {
                path: HostPath::from(host.as_path()),
                size,
                stamp: None,
            };
            let path = format!("f{i}");
            tree.insert(&path, Entry::file(content, 0o644, Group::Base))
                .unwrap();
            layers.push(Layer::with_paths(
                format!("l{i}"),
                vec![Group::Base],
                &tree,
                [&path],
                bytes.len() as u64,
            ));
        }
        (tree, Plan { layers })
    }

    fn options(compression: Compression, scratch: &std::path::Path) -> LayerOptions {
        LayerOptions {
            compression,
            mtime: 0,
            store: Store::Scratch(scratch.to_path_buf()),
            pool: Pool::new(2),
            progress: Arc::new(Progress::default()),
        }
    }

    #[test]
    fn layers_read_ahead_are_the_blobs_each_layer_gives_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (tree, plan) = three_layers(dir.path(), None);
        for compression in [Compression::Gzip, Compression::Zstd] {
            let lo = options(compression, dir.path());
            let f = tempfile::tempfile_in(dir.path()).unwrap();
            let found = lookup_layers(&tree, &plan, &lo).unwrap();
            let blobs = write_layers_direct(&f, &tree, &plan, &lo, found, None)
                .unwrap()
                .blobs;
            assert_eq!(blobs.len(), 3);
            let mut archive = Vec::new();
            std::io::Seek::rewind(&mut &f).unwrap();
            std::io::Read::read_to_end(&mut &f, &mut archive).unwrap();
            for (l, b) in plan.layers.iter().zip(&blobs) {
                let (alone, bytes) = layer::produce(&tree, l, &lo, Vec::new(), true).unwrap();
                assert_eq!((&b.digest, &b.diff_id), (&alone.digest, &alone.diff_id));
                assert_eq!((b.size, b.tar_size), (alone.size, alone.tar_size));
                let at = archive
                    .windows(bytes.len())
                    .position(|w| w == &bytes[..])
                    .expect("the layer's bytes are in the archive");
                assert_eq!(at % tar::BLOCK, 0, "{compression:?} layer {}", l.name);
            }
            lo.pool.shutdown();
        }
    }

    #[test]
    fn a_source_that_changed_fails_the_build_wherever_its_layer_is() {
        for short in 0..3 {
            for compression in [Compression::Gzip, Compression::Zstd] {
                let dir = tempfile::tempdir().unwrap();
                let (tree, plan) = three_layers(dir.path(), Some(short));
                let lo = options(compression, dir.path());
                let f = tempfile::tempfile_in(dir.path()).unwrap();
                let found = lookup_layers(&tree, &plan, &lo).unwrap();
                let err = write_layers_direct(&f, &tree, &plan, &lo, found, None).unwrap_err();
                assert!(
                    matches!(err, OciError::Changed { .. }),
                    "file {short}, {compression:?}: {err}"
                );
                lo.pool.shutdown();
            }
        }
    }
}
