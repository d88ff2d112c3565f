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

/// The archive's entries, byte-sorted by name; each layer blob once.
fn entries<'a>(docs: &'a Documents, blobs: &'a [Blob]) -> Vec<(String, Data<'a>)> {
    let mut m: BTreeMap<String, Data<'a>> = BTreeMap::new();
    m.insert("blobs/".into(), Data::Dir);
    m.insert("blobs/sha256/".into(), Data::Dir);
    for b in blobs {
        m.entry(blob_path(&b.digest)).or_insert(Data::Blob(b));
    }
    m.insert(blob_path(&docs.config_digest), Data::Bytes(&docs.config));
    m.insert(
        blob_path(&docs.manifest_digest),
        Data::Bytes(&docs.manifest),
    );
    m.insert("index.json".into(), Data::Bytes(&docs.index));
    m.insert("manifest.json".into(), Data::Bytes(&docs.docker_manifest));
    m.insert("oci-layout".into(), Data::Bytes(&docs.oci_layout));
    m.insert("repositories".into(), Data::Bytes(&docs.repositories));
    m.into_iter().collect()
}

/// Writes the docker-archive tar. Blob bytes are copied with `io::copy`, which the standard
/// library turns into `copy_file_range`/`splice` between files and pipes.
pub fn write_archive<W: Write>(
    w: &mut W,
    docs: &Documents,
    blobs: &[Blob],
    mtime: u64,
) -> Result<(), OciError> {
    let mut hdr = Vec::with_capacity(1024);
    for (name, data) in entries(docs, blobs) {
        let (kind, mode, size) = match &data {
            Data::Dir => (EntryType::Dir, 0o755, 0),
            Data::Bytes(b) => (EntryType::File, 0o644, b.len() as u64),
            Data::Blob(b) => (EntryType::File, 0o644, b.size),
        };
        hdr.clear();
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
                let linked = match &b.source {
                    super::layer::BlobSource::Path(p) => std::fs::hard_link(p, &dest).is_ok(),
                    super::layer::BlobSource::Scratch(_) => false,
                };
                if !linked {
                    let mut f = b.open().map_err(OciError::Write)?;
                    let mut o = std::fs::File::create(&dest).map_err(|e| OciError::io(&dest, e))?;
                    io::copy(&mut f, &mut o).map_err(|e| OciError::io(&dest, e))?;
                }
            }
        }
    }
    // An OCI layout has no docker manifest.json/repositories.
    for extra in ["manifest.json", "repositories"] {
        let _ = std::fs::remove_file(dir.join(extra));
    }
    Ok(())
}
