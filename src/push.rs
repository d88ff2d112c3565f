//! Pushing an image to a registry with the OCI distribution protocol (src/registry.rs), for
//! `imgbuild push` and `container --push` (src/commands/): an image read from a container
//! tar or OCI layout directory ([`from_source`]) or freshly built blobs ([`from_built`]).
//!
//! Every blob is checked with HEAD first and only missing ones are sent (a mount from
//! another repository of the same registry when `--mount-from` names one that has it); the
//! manifest goes last, so a pull never sees a manifest whose blobs are not there yet.

use std::io::{self, IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

use crate::error::BadInput;
use crate::oci::source::Source;
use crate::oci::{self, Blob};
use crate::registry::{Client, ClientOptions, Credentials, Reference, RegistryError};

/// How to reach and log in to the registry (shared by `push` and `container --push`).
/// [`Default`] gives the command line's defaults.
#[derive(Args, Debug, Clone)]
pub struct RegistryArgs {
    /// Speak plain HTTP instead of HTTPS (implied for localhost, 127.0.0.0/8 and [::1]
    /// unless --ca-file is given).
    #[arg(long)]
    pub plain_http: bool,
    /// Trust the CA certificates in this PEM file besides the system's.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Log in as USER, reading the password from stdin (--password-stdin).
    #[arg(long, value_name = "USER", requires = "password_stdin")]
    pub username: Option<String>,
    /// Read the password for --username from stdin (never give it on the command line).
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
    /// Another repository of the same registry to mount missing blobs from; repeatable.
    #[arg(long = "mount-from", value_name = "REPO")]
    pub mount_from: Vec<String>,
    /// Blobs larger than this go up in chunks of this size (PATCH), smaller ones in one PUT.
    #[arg(long, value_name = "BYTES", default_value_t = RegistryArgs::DEFAULT.chunk_size)]
    pub chunk_size: u64,
    /// Blobs sent at the same time.
    #[arg(long, value_name = "N", default_value_t = RegistryArgs::DEFAULT.parallel)]
    pub parallel: usize,
    /// Retries on 5xx answers and dropped connections, with exponential backoff.
    #[arg(long, value_name = "N", default_value_t = RegistryArgs::DEFAULT.retries)]
    pub retries: u32,
}

impl RegistryArgs {
    const DEFAULT: RegistryArgs = RegistryArgs {
        plain_http: false,
        ca_file: None,
        username: None,
        password_stdin: false,
        mount_from: vec![],
        chunk_size: 64 << 20,
        parallel: 3,
        retries: 4,
    };
}

impl Default for RegistryArgs {
    fn default() -> Self {
        RegistryArgs::DEFAULT
    }
}

/// Where one blob's bytes are.
enum Bytes<'a> {
    Archive(&'a Source, String),
    Built(&'a Blob),
    Mem(&'a [u8]),
}

impl Bytes<'_> {
    fn open_at(&self, off: u64) -> io::Result<Box<dyn Read + '_>> {
        match self {
            Bytes::Archive(src, name) => src.open_at(name, off),
            Bytes::Built(b) => {
                let mut f = b.open()?;
                f.seek(SeekFrom::Current(off as i64))?;
                Ok(Box::new(io::BufReader::with_capacity(
                    1 << 20,
                    f.take(b.size.saturating_sub(off)),
                )))
            }
            Bytes::Mem(b) => Ok(Box::new(&b[(off as usize).min(b.len())..])),
        }
    }
}

pub struct PushBlob<'a> {
    pub digest: String,
    pub size: u64,
    bytes: Bytes<'a>,
}

/// An image ready to send: its blobs (layers, config) and the manifest's bytes.
pub struct PushImage<'a> {
    /// The image's SBOM, attached as an OCI 1.1 referrer after the image.
    pub sbom: Option<(crate::sbom::SbomFormat, Vec<u8>)>,
    pub blobs: Vec<PushBlob<'a>>,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub manifest: Vec<u8>,
}

/// What happened to one blob.
#[derive(Serialize, Debug)]
pub struct BlobResult {
    pub digest: String,
    pub size: u64,
    /// `exists`, `mounted` or `uploaded`.
    pub action: &'static str,
}

#[derive(Serialize, Debug)]
pub struct PushSummary {
    pub reference: String,
    pub digest: String,
    pub manifest_media_type: String,
    pub blobs: Vec<BlobResult>,
    pub uploaded_bytes: u64,
    pub seconds: f64,
    /// The SBOM referrer: its manifest digest and how it is found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sbom_referrer: Option<Referrer>,
}

#[derive(Serialize, Debug)]
pub struct Referrer {
    pub digest: String,
    pub artifact_type: String,
    /// `referrers-api` where the registry lists it, else `tag` (the `sha256-<hex>` tag
    /// fallback of the OCI distribution spec).
    pub found_via: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

fn blob_name(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

/// Reads the image out of a tar or OCI directory: index.json → manifest → config, layers.
pub(crate) fn from_source<'a>(path: &Path, src: &'a Source) -> Result<PushImage<'a>> {
    let index = src.read_json("index.json")?.ok_or_else(|| {
        BadInput(format!(
            "{}: no index.json; push reads OCI-layout images (what imgbuild and docker ≥ 25 save write)",
            path.display()
        ))
    })?;
    let md = index["manifests"]
        .as_array()
        .and_then(|m| m.first())
        .and_then(|d| d["digest"].as_str())
        .ok_or_else(|| BadInput(format!("{}: index.json lists no manifest", path.display())))?
        .to_string();
    let manifest = src.read_bytes(&blob_name(&md))?.ok_or_else(|| {
        BadInput(format!(
            "{}: index.json names manifest {md}, which is not in the image",
            path.display()
        ))
    })?;
    let m: serde_json::Value = serde_json::from_slice(&manifest)
        .with_context(|| format!("{}: manifest {md}", path.display()))?;
    let config_digest = m["config"]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let config = src.read_bytes(&blob_name(&config_digest))?.ok_or_else(|| {
        BadInput(format!(
            "{}: the config {config_digest} is not in the image",
            path.display()
        ))
    })?;
    let mut blobs = Vec::new();
    for l in m["layers"].as_array().cloned().unwrap_or_default() {
        let digest = l["digest"].as_str().unwrap_or_default().to_string();
        let name = blob_name(&digest);
        let size = src.size(&name).ok_or_else(|| {
            BadInput(format!(
                "{}: layer {digest} is not in the image",
                path.display()
            ))
        })?;
        blobs.push(PushBlob {
            digest,
            size,
            bytes: Bytes::Archive(src, name),
        });
    }
    let sbom = crate::sbom_read::from_image(path, src)?;
    Ok(PushImage {
        sbom,
        blobs,
        config,
        config_digest,
        manifest,
    })
}

/// The image of freshly built blobs.
pub fn from_built<'a>(
    docs: &oci::image::Documents,
    blobs: &'a [Blob],
    sbom: Option<(crate::sbom::SbomFormat, Vec<u8>)>,
) -> PushImage<'a> {
    PushImage {
        sbom,
        blobs: blobs
            .iter()
            .map(|b| PushBlob {
                digest: b.digest.clone(),
                size: b.size,
                bytes: Bytes::Built(b),
            })
            .collect(),
        config: docs.config.clone(),
        config_digest: docs.config_digest.clone(),
        manifest: docs.manifest.clone(),
    }
}

fn sha256(b: &[u8]) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(b);
    format!(
        "sha256:{}",
        h.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

/// The same manifest with Docker's v2 schema 2 media types, for registries that refuse
/// OCI manifests. `None` when a layer has no Docker equivalent (zstd).
fn docker_v2(manifest: &[u8]) -> Option<Vec<u8>> {
    let mut m: serde_json::Value = serde_json::from_slice(manifest).ok()?;
    m["mediaType"] = "application/vnd.docker.distribution.manifest.v2+json".into();
    m["config"]["mediaType"] = "application/vnd.docker.container.image.v1+json".into();
    for l in m["layers"].as_array_mut()? {
        let mt = match l["mediaType"].as_str()? {
            "application/vnd.oci.image.layer.v1.tar+gzip" => {
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
            }
            "application/vnd.oci.image.layer.v1.tar" => {
                "application/vnd.docker.image.rootfs.diff.tar"
            }
            _ => return None,
        };
        l["mediaType"] = mt.into();
    }
    if let Some(o) = m.as_object_mut() {
        o.remove("annotations");
    }
    serde_json::to_vec(&m).ok()
}

/// Reads the password from stdin (first line, without its line end).
fn password_from_stdin() -> Result<String> {
    let mut s = String::new();
    io::stdin()
        .read_to_string(&mut s)
        .context("reading the password from stdin")?;
    let p = s.lines().next().unwrap_or("").to_string();
    if p.is_empty() {
        return Err(
            BadInput("--password-stdin: stdin is empty; pipe the password in".into()).into(),
        );
    }
    Ok(p)
}

/// A client for `reference` with the credentials and transport the arguments ask for.
pub fn client(reference: &Reference, a: &RegistryArgs) -> Result<Client> {
    let credentials = match (&a.username, a.password_stdin) {
        (Some(u), true) => Some(Credentials {
            username: u.clone(),
            password: password_from_stdin()?,
        }),
        _ => crate::registry::docker_config_credentials(&reference.registry)?,
    };
    if a.chunk_size == 0 {
        return Err(BadInput("--chunk-size 0: give at least 1 byte".into()).into());
    }
    if let Some(f) = &a.ca_file {
        if !f.is_file() {
            return Err(BadInput(format!(
                "--ca-file {}: no such file; give the registry's CA certificate (PEM)",
                f.display()
            ))
            .into());
        }
    }
    Ok(Client::new(
        reference,
        &ClientOptions {
            // Loopback implies plain HTTP unless --ca-file asks for TLS.
            plain_http: a.plain_http || (reference.is_loopback() && a.ca_file.is_none()),
            ca_file: a.ca_file.clone(),
            credentials,
            retries: a.retries,
        },
    )?)
}

fn short(d: &str) -> &str {
    &d[..d.len().min(19)]
}

/// Sends the blobs (missing ones only) and then the manifest under the reference's tag.
pub fn push_image(
    client: &Client,
    reference: &Reference,
    img: &PushImage,
    a: &RegistryArgs,
) -> Result<PushSummary, RegistryError> {
    let start = Instant::now();
    let tty = io::stderr().is_terminal();
    client.ping()?;
    tracing::debug!("stage ping: {:.3}s", start.elapsed().as_secs_f64());
    let config = PushBlob {
        digest: img.config_digest.clone(),
        size: img.config.len() as u64,
        bytes: Bytes::Mem(&img.config),
    };
    let mut seen = std::collections::BTreeSet::new();
    let todo: Vec<&PushBlob> = img
        .blobs
        .iter()
        .chain(std::iter::once(&config))
        .filter(|b| seen.insert(b.digest.clone()))
        .collect();
    let referrer_blobs: Vec<(String, &[u8])> = match &img.sbom {
        Some((_, doc)) => vec![
            (sha256(EMPTY_JSON), EMPTY_JSON),
            (sha256(doc), doc.as_slice()),
        ],
        None => Vec::new(),
    };
    // 1. The blobs the tag's current manifest lists are in the repository: the registry took
    //    that manifest only with all of them there (a re-push after one change finds nearly
    //    every blob so, in one request instead of a HEAD each).
    let listed = listed_by_tag(client, &reference.tag);
    let (known, unknown): (Vec<&PushBlob>, Vec<&PushBlob>) =
        todo.iter().partition(|b| listed.contains(&b.digest));
    // 2. HEAD the others, many at a time: a HEAD is a small round trip whose cost is
    //    latency, not bandwidth. The SBOM referrer's blobs are asked about in the same pass.
    let head_digests: Vec<&str> = unknown
        .iter()
        .map(|b| b.digest.as_str())
        .chain(referrer_blobs.iter().map(|(d, _)| d.as_str()))
        .collect();
    let present = crate::pool::map(&head_digests, HEAD_PARALLEL.max(a.parallel), |d: &&str| {
        client.blob_exists(d)
    })?;
    let is_present = |d: &str| {
        head_digests
            .iter()
            .zip(&present)
            .any(|(h, p)| *h == d && *p)
    };
    tracing::debug!(
        "stage heads done ({} listed by the tag, {} asked): {:.3}s",
        known.len(),
        head_digests.len(),
        start.elapsed().as_secs_f64()
    );
    // 3. Mount or upload the missing ones, `--parallel` at a time (like docker and skopeo):
    //    the registry hashes what it receives, so one stream at a time leaves cores idle.
    let send = |b: &&PushBlob| -> Result<&'static str, RegistryError> {
        let t = Instant::now();
        let action = if mount_from_any(client, &b.digest, &a.mount_from)? {
            "mounted"
        } else {
            client.upload(&b.digest, b.size, a.chunk_size, &|off| b.bytes.open_at(off))?;
            "uploaded"
        };
        if tty {
            eprintln!(
                "{}  {action:8} {:>10}  {:.1}s",
                short(&b.digest),
                crate::bytesize::human(b.size),
                t.elapsed().as_secs_f64()
            );
        }
        Ok(action)
    };
    let mut actions: std::collections::BTreeMap<&str, &'static str> = Default::default();
    let missing: Vec<&PushBlob> = unknown
        .iter()
        .copied()
        .filter(|b| !is_present(&b.digest))
        .collect();
    for (b, act) in missing
        .iter()
        .zip(crate::pool::map(&missing, a.parallel, send)?)
    {
        actions.insert(&b.digest, act);
    }
    tracing::debug!("stage blobs done: {:.3}s", start.elapsed().as_secs_f64());
    // 4. The manifest, last.
    let put_manifest = || -> Result<(&'static str, String), RegistryError> {
        let oci_type = crate::oci::image::MT_MANIFEST;
        match client.put_manifest(&reference.tag, oci_type, &img.manifest) {
            Ok(d) => Ok((oci_type, d.unwrap_or_else(|| sha256(&img.manifest)))),
            // Registries that predate OCI manifests answer 400 MANIFEST_INVALID or 415.
            Err(RegistryError::Status {
                status, message, ..
            }) if status == 415 || (status == 400 && message.contains("MANIFEST_INVALID")) => {
                let d2 = docker_v2(&img.manifest).ok_or_else(|| {
                    RegistryError::Input(format!(
                        "the registry refused the OCI manifest ({message}) and its layers have no Docker media type (zstd); push with gzip"
                    ))
                })?;
                let t = "application/vnd.docker.distribution.manifest.v2+json";
                let d = client.put_manifest(&reference.tag, t, &d2)?;
                Ok((t, d.unwrap_or_else(|| sha256(&d2))))
            }
            Err(e) => Err(e),
        }
    };
    let (media_type, digest) = match put_manifest() {
        // A blob the tag's manifest listed is gone after all (deleted through the API):
        // check those too, send what is missing, and put the manifest again.
        Err(RegistryError::Status {
            status: 400,
            message,
            ..
        }) if message.contains("MANIFEST_BLOB_UNKNOWN") && !known.is_empty() => {
            tracing::warn!("{message}: checking every blob the tag's manifest listed");
            let gone: Vec<&PushBlob> = known
                .iter()
                .copied()
                .zip(crate::pool::map(
                    &known,
                    HEAD_PARALLEL.max(a.parallel),
                    |b: &&PushBlob| client.blob_exists(&b.digest),
                )?)
                .filter(|(_, there)| !there)
                .map(|(b, _)| b)
                .collect();
            for (b, act) in gone.iter().zip(crate::pool::map(&gone, a.parallel, send)?) {
                actions.insert(&b.digest, act);
            }
            put_manifest()?
        }
        r => r?,
    };
    let oci_type = crate::oci::image::MT_MANIFEST;
    let mut results = Vec::new();
    let mut uploaded = 0;
    for b in &todo {
        let action = actions.get(b.digest.as_str()).copied().unwrap_or("exists");
        if action == "uploaded" {
            uploaded += b.size;
        }
        results.push(BlobResult {
            digest: b.digest.clone(),
            size: b.size,
            action,
        });
    }
    let manifest_bytes = if media_type == oci_type {
        img.manifest.clone()
    } else {
        docker_v2(&img.manifest).unwrap_or_default()
    };
    tracing::debug!("stage manifest done: {:.3}s", start.elapsed().as_secs_f64());
    let sbom_referrer = match &img.sbom {
        Some((format, doc)) => {
            // The referrer's blobs were HEADed in step 1.
            for (d, bytes) in &referrer_blobs {
                if !is_present(d) {
                    client.put_blob(d, bytes)?;
                }
            }
            Some(push_referrer(
                client,
                media_type,
                &digest,
                manifest_bytes.len() as u64,
                *format,
                doc,
            )?)
        }
        None => None,
    };
    tracing::debug!("stage referrer done: {:.3}s", start.elapsed().as_secs_f64());
    Ok(PushSummary {
        sbom_referrer,
        reference: reference.to_string(),
        digest,
        manifest_media_type: media_type.to_string(),
        blobs: results,
        uploaded_bytes: uploaded,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// HEAD requests in flight at once (step 1 of a push): small round trips, so more of them
/// than uploads (`--parallel`).
const HEAD_PARALLEL: usize = 16;

/// The empty config of an artifact manifest (`{}`), as the OCI image spec 1.1 defines it.
const EMPTY_JSON: &[u8] = b"{}";
const MT_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// Attaches the SBOM to the image: an OCI 1.1 artifact manifest (`artifactType`, `subject`)
/// put by digest; where the registry has no referrers API, the `sha256-<hex>` tag holds an
/// index of the image's referrers (the spec's fallback), updated rather than replaced.
fn push_referrer(
    client: &Client,
    subject_type: &str,
    subject_digest: &str,
    subject_size: u64,
    format: crate::sbom::SbomFormat,
    doc: &[u8],
) -> Result<Referrer, RegistryError> {
    let artifact_type = match format {
        crate::sbom::SbomFormat::Cyclonedx => "application/vnd.cyclonedx+json",
        _ => "application/spdx+json",
    };
    let doc_digest = sha256(doc);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::oci::image::MT_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": MT_EMPTY, "digest": sha256(EMPTY_JSON), "size": 2, "data": "e30="},
        "layers": [{"mediaType": artifact_type, "digest": doc_digest, "size": doc.len(),
            "annotations": {"org.opencontainers.image.title": format!("sbom.{}.json", if artifact_type.contains("spdx") { "spdx" } else { "cdx" })}}],
        "subject": {"mediaType": subject_type, "digest": subject_digest, "size": subject_size},
    });
    let bytes = serde_json::to_vec(&manifest).expect("JSON");
    let digest = sha256(&bytes);
    client.put_manifest(&digest, crate::oci::image::MT_MANIFEST, &bytes)?;
    if let Some(list) = client.referrers(subject_digest)? {
        if list["manifests"]
            .as_array()
            .is_some_and(|m| m.iter().any(|d| d["digest"] == digest.as_str()))
        {
            return Ok(Referrer {
                digest,
                artifact_type: artifact_type.into(),
                found_via: "referrers-api",
                tag: None,
            });
        }
    }
    // The tag fallback: the index at sha256-<hex> lists every referrer of the image.
    let tag = subject_digest.replacen(':', "-", 1);
    let path = format!("/v2/{}/manifests/{tag}", client.repository);
    let mut index = client
        .get_json(&path, crate::oci::image::MT_INDEX)?
        .filter(|v| v["manifests"].is_array())
        .unwrap_or_else(|| {
            serde_json::json!({"schemaVersion": 2, "mediaType": crate::oci::image::MT_INDEX, "manifests": []})
        });
    let entry = serde_json::json!({
        "mediaType": crate::oci::image::MT_MANIFEST,
        "digest": digest,
        "size": bytes.len(),
        "artifactType": artifact_type,
    });
    let list = index["manifests"].as_array_mut().expect("checked above");
    if !list.iter().any(|d| d["digest"] == digest.as_str()) {
        list.push(entry);
        let ib = serde_json::to_vec(&index).expect("JSON");
        client.put_manifest(&tag, crate::oci::image::MT_INDEX, &ib)?;
    }
    Ok(Referrer {
        digest,
        artifact_type: artifact_type.into(),
        found_via: "tag",
        tag: Some(tag),
    })
}

/// The config and layer digests of the manifest the tag names now; empty when there is
/// none, it is an index, or the registry does not say (then every blob is HEADed).
fn listed_by_tag(client: &Client, tag: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    if tag.starts_with("sha256:") {
        return out;
    }
    let path = format!("/v2/{}/manifests/{tag}", client.repository);
    let accept = format!(
        "{}, application/vnd.docker.distribution.manifest.v2+json",
        crate::oci::image::MT_MANIFEST
    );
    let Ok(Some(m)) = client.get_json(&path, &accept) else {
        return out;
    };
    let digests = std::iter::once(&m["config"])
        .chain(m["layers"].as_array().into_iter().flatten())
        .filter_map(|d| d["digest"].as_str());
    out.extend(digests.map(str::to_string));
    out
}

fn mount_from_any(client: &Client, digest: &str, repos: &[String]) -> Result<bool, RegistryError> {
    for r in repos {
        if r != &client.repository && client.mount(digest, r)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Prints the outcome: the JSON summary on stdout, or the digest line.
pub fn report(s: &PushSummary, json: bool) -> Result<()> {
    let mut out = io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(s)?)?;
    } else {
        let up = s.blobs.iter().filter(|b| b.action == "uploaded").count();
        writeln!(
            out,
            "pushed {}@{} ({} of {} blobs uploaded, {}, {:.1}s)",
            s.reference,
            s.digest,
            up,
            s.blobs.len(),
            crate::bytesize::human(s.uploaded_bytes),
            s.seconds
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_v2_keeps_digests_and_changes_media_types() {
        let oci = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:aa","size":3},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:bb","size":5},{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:cc","size":7}],"annotations":{"a":"b"}}"#;
        let d: serde_json::Value = serde_json::from_slice(&docker_v2(oci).unwrap()).unwrap();
        assert_eq!(
            d["mediaType"],
            "application/vnd.docker.distribution.manifest.v2+json"
        );
        assert_eq!(
            d["config"]["mediaType"],
            "application/vnd.docker.container.image.v1+json"
        );
        assert_eq!(d["config"]["digest"], "sha256:aa");
        assert_eq!(
            d["layers"][0]["mediaType"],
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
        assert_eq!(d["layers"][1]["digest"], "sha256:cc");
        assert!(d.get("annotations").is_none());
        let zstd = br#"{"mediaType":"x","config":{},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd"}]}"#;
        assert!(docker_v2(zstd).is_none());
    }
}
