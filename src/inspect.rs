//! `imgbuild inspect FILE [--verify] [--json]`: what a container image tar (or OCI layout
//! directory) holds — its name, run configuration and layers with what each one carries —
//! and, with `--verify`, proof that it is intact: every blob's sha256 matches its name,
//! manifest sizes match the blobs, each layer decompresses to its `diff_id`, each layer tar is
//! well-formed (header checksums, sizes, end marker) and no entry or hard link escapes the
//! image root. Any mismatch fails the command (exit 1).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::BadInput;
use crate::oci::tar;

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A container image tar (docker-archive / OCI archive), an OCI layout directory, or an ISO.
    pub file: PathBuf,
    /// Recompute every digest and diff_id and check every layer tar; exit 1 on a mismatch.
    #[arg(long)]
    pub verify: bool,
    /// JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

/// Reads named files out of an image tar or an OCI directory (`push` and `sbom` read
/// their SOURCE through it too).
pub(crate) enum Source {
    Tar {
        file: PathBuf,
        entries: BTreeMap<String, (u64, u64)>,
    },
    Dir(PathBuf),
}

impl Source {
    pub(crate) fn open(path: &Path) -> Result<(Source, Vec<String>)> {
        if path.is_dir() {
            return Ok((Source::Dir(path.to_path_buf()), Vec::new()));
        }
        let f = File::open(path)
            .map_err(|e| BadInput(format!("{}: cannot open: {e}", path.display())))?;
        let len = f.metadata()?.len();
        let mut r = BufReader::new(f);
        let mut entries = BTreeMap::new();
        let mut problems = Vec::new();
        let mut off = 0u64;
        let mut long_name: Option<Vec<u8>> = None;
        // A PAX `size` record: the next entry's real size (past 8 GiB, octal cannot say it).
        let mut pax_size: Option<u64> = None;
        let mut block = [0u8; tar::BLOCK];
        loop {
            if off + tar::BLOCK as u64 > len {
                problems.push(format!(
                    "archive ends at byte {off} without the end-of-archive blocks"
                ));
                break;
            }
            r.read_exact(&mut block)?;
            off += tar::BLOCK as u64;
            let h = match tar::parse_block(&block) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    if entries.is_empty() {
                        return Err(BadInput(format!(
                            "{}: not a tar archive ({e})",
                            path.display()
                        ))
                        .into());
                    }
                    problems.push(format!(
                        "archive header at byte {}: {e}",
                        off - tar::BLOCK as u64
                    ));
                    break;
                }
            };
            let data_off = off;
            let size = match h.flag {
                b'x' | b'L' => h.size,
                _ => pax_size.take().unwrap_or(h.size),
            };
            let padded = size
                .div_ceil(tar::BLOCK as u64)
                .saturating_mul(tar::BLOCK as u64);
            if data_off.saturating_add(padded) > len {
                problems.push(format!(
                    "archive entry {} runs past the end of the file",
                    String::from_utf8_lossy(&h.name)
                ));
                break;
            }
            match h.flag {
                b'x' | b'L' => {
                    let mut body = vec![0u8; h.size as usize];
                    r.read_exact(&mut body)?;
                    r.seek_relative((padded - h.size) as i64)?;
                    long_name = if h.flag == b'L' {
                        Some(body.split(|&b| b == 0).next().unwrap_or(&[]).to_vec())
                    } else {
                        let recs = tar::parse_pax(&body).unwrap_or_default();
                        pax_size = recs
                            .iter()
                            .find(|(k, _)| k == "size")
                            .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok());
                        recs.into_iter().find(|(k, _)| k == "path").map(|(_, v)| v)
                    };
                }
                _ => {
                    let name = long_name.take().unwrap_or(h.name);
                    let name = String::from_utf8_lossy(&name)
                        .trim_start_matches("./")
                        .to_string();
                    if h.flag == b'0' || h.flag == 0 {
                        entries.insert(name, (data_off, size));
                    }
                    r.seek_relative(padded as i64)?;
                }
            }
            off = data_off + padded;
        }
        Ok((
            Source::Tar {
                file: path.to_path_buf(),
                entries,
            },
            problems,
        ))
    }

    pub(crate) fn size(&self, name: &str) -> Option<u64> {
        match self {
            Source::Tar { entries, .. } => entries.get(name).map(|e| e.1),
            Source::Dir(d) => std::fs::metadata(d.join(name))
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len()),
        }
    }

    pub(crate) fn reader(&self, name: &str) -> Result<Option<Box<dyn Read>>> {
        Ok(match self {
            Source::Tar { file, entries } => match entries.get(name) {
                Some(&(off, size)) => {
                    let mut f = File::open(file)?;
                    f.seek(SeekFrom::Start(off))?;
                    Some(Box::new(BufReader::with_capacity(1 << 20, f.take(size))))
                }
                None => None,
            },
            Source::Dir(d) => match File::open(d.join(name)) {
                Ok(f) => Some(Box::new(BufReader::with_capacity(1 << 20, f))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e.into()),
            },
        })
    }

    /// A reader of `name` from byte `offset` on (push resumes and chunks with it).
    pub(crate) fn open_at(&self, name: &str, offset: u64) -> io::Result<Box<dyn Read>> {
        match self {
            Source::Tar { file, entries } => {
                let &(off, size) = entries.get(name).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{name} is not in the archive"),
                    )
                })?;
                let mut f = File::open(file)?;
                f.seek(SeekFrom::Start(off + offset.min(size)))?;
                Ok(Box::new(BufReader::with_capacity(
                    1 << 20,
                    f.take(size - offset.min(size)),
                )))
            }
            Source::Dir(d) => {
                let mut f = File::open(d.join(name))?;
                f.seek(SeekFrom::Start(offset))?;
                Ok(Box::new(BufReader::with_capacity(1 << 20, f)))
            }
        }
    }

    /// The raw bytes of a small file (manifest, config), `None` when absent.
    pub(crate) fn read_bytes(&self, name: &str) -> Result<Option<Vec<u8>>> {
        match self.reader(name)? {
            Some(mut r) => {
                let mut b = Vec::new();
                r.read_to_end(&mut b)?;
                Ok(Some(b))
            }
            None => Ok(None),
        }
    }

    pub(crate) fn read_json(&self, name: &str) -> Result<Option<Value>> {
        match self.reader(name)? {
            Some(mut r) => {
                let mut b = Vec::new();
                r.read_to_end(&mut b)?;
                Ok(Some(
                    serde_json::from_slice(&b)
                        .with_context(|| format!("{name}: not valid JSON"))?,
                ))
            }
            None => Ok(None),
        }
    }

    fn blob_names(&self) -> Vec<String> {
        match self {
            Source::Tar { entries, .. } => entries
                .keys()
                .filter(|k| k.starts_with("blobs/"))
                .cloned()
                .collect(),
            Source::Dir(d) => {
                let mut v = Vec::new();
                if let Ok(algs) = std::fs::read_dir(d.join("blobs")) {
                    for a in algs.flatten() {
                        if let Ok(files) = std::fs::read_dir(a.path()) {
                            for f in files.flatten() {
                                v.push(format!(
                                    "blobs/{}/{}",
                                    a.file_name().to_string_lossy(),
                                    f.file_name().to_string_lossy()
                                ));
                            }
                        }
                    }
                }
                v.sort();
                v
            }
        }
    }
}

fn blob_name(digest: &str) -> String {
    match digest.split_once(':') {
        Some((alg, hex)) => format!("blobs/{alg}/{hex}"),
        None => digest.to_string(),
    }
}

#[derive(Serialize, Default)]
struct LayerInfo {
    digest: String,
    diff_id: String,
    media_type: String,
    size: u64,
    contents: String,
}

#[derive(Serialize, Default)]
struct SbomInfo {
    format: String,
    path: String,
    store_paths: usize,
    payloads: Vec<String>,
    crates: usize,
}

#[derive(Serialize, Default)]
struct Report {
    file: String,
    image: Vec<String>,
    manifest_digest: String,
    config_digest: String,
    created: String,
    architecture: String,
    os: String,
    user: String,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<String>,
    exposed_ports: Vec<String>,
    working_dir: String,
    stop_signal: String,
    healthcheck: Value,
    labels: BTreeMap<String, String>,
    layers: Vec<LayerInfo>,
    /// The image's SBOM, summarised (docs/push-and-sbom.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    sbom: Option<SbomInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    verified: Option<bool>,
    problems: Vec<String>,
}

fn sha256_of(mut r: impl Read) -> io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((
        format!(
            "sha256:{}",
            h.finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ),
        n,
    ))
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Hashes the uncompressed stream while checking it is a well-formed tar whose entries stay
/// inside the image root.
struct TarCheck {
    hash: Sha256,
    pending: Vec<u8>,
    /// Data bytes (incl. padding) still to skip before the next header.
    skip: u64,
    /// Bytes of a PAX/GNU body to collect.
    collect: Option<(u8, u64)>,
    body: Vec<u8>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    /// A PAX `size` record for the next entry (files past 8 GiB).
    pax_size: Option<u64>,
    ended: bool,
    entries: u64,
    problems: Vec<String>,
}

fn escapes(p: &[u8]) -> bool {
    let s = String::from_utf8_lossy(p);
    let s = s.trim_start_matches("./");
    s.starts_with('/') || s.split('/').any(|c| c == "..")
}

impl TarCheck {
    fn new() -> Self {
        TarCheck {
            hash: Sha256::new(),
            pending: Vec::new(),
            skip: 0,
            collect: None,
            body: Vec::new(),
            long_name: None,
            long_link: None,
            pax_size: None,
            ended: false,
            entries: 0,
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, p: String) {
        if self.problems.len() < 20 {
            self.problems.push(p);
        }
    }

    fn feed(&mut self, mut data: &[u8]) {
        self.hash.update(data);
        while !data.is_empty() {
            if self.ended {
                if data.iter().any(|&b| b != 0) {
                    self.problem("data after the end-of-archive marker".into());
                }
                return;
            }
            if self.skip > 0 {
                let k = (self.skip.min(data.len() as u64)) as usize;
                if let Some((_, want)) = self.collect {
                    let take = (want as usize - self.body.len().min(want as usize)).min(k);
                    self.body.extend_from_slice(&data[..take]);
                }
                self.skip -= k as u64;
                data = &data[k..];
                if self.skip == 0 {
                    self.finish_body();
                }
                continue;
            }
            let need = tar::BLOCK - self.pending.len();
            let k = need.min(data.len());
            self.pending.extend_from_slice(&data[..k]);
            data = &data[k..];
            if self.pending.len() == tar::BLOCK {
                let block: [u8; tar::BLOCK] = self.pending[..].try_into().expect("one block");
                self.pending.clear();
                self.header(&block);
            }
        }
    }

    fn finish_body(&mut self) {
        if let Some((flag, _)) = self.collect.take() {
            let body = std::mem::take(&mut self.body);
            if flag == b'L' {
                self.long_name = Some(body.split(|&b| b == 0).next().unwrap_or(&[]).to_vec());
            } else if flag == b'K' {
                self.long_link = Some(body.split(|&b| b == 0).next().unwrap_or(&[]).to_vec());
            } else {
                match tar::parse_pax(&body) {
                    Ok(recs) => {
                        for (k, v) in recs {
                            match k.as_str() {
                                "path" => self.long_name = Some(v),
                                "linkpath" => self.long_link = Some(v),
                                "size" => {
                                    match std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok())
                                    {
                                        Some(n) => self.pax_size = Some(n),
                                        None => self.problem(format!(
                                            "PAX size record {:?} is not a number",
                                            String::from_utf8_lossy(&v)
                                        )),
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                    Err(e) => self.problem(format!("PAX header: {e}")),
                }
            }
        }
    }

    fn header(&mut self, block: &[u8; tar::BLOCK]) {
        match tar::parse_block(block) {
            Ok(None) => self.ended = true,
            Err(e) => {
                self.problem(format!("entry {}: {e}", self.entries + 1));
                self.ended = true;
            }
            Ok(Some(h)) => {
                let size = match h.flag {
                    b'x' | b'L' | b'K' | b'g' => h.size,
                    _ => self.pax_size.take().unwrap_or(h.size),
                };
                let padded = size
                    .div_ceil(tar::BLOCK as u64)
                    .saturating_mul(tar::BLOCK as u64);
                match h.flag {
                    b'x' | b'L' | b'K' => {
                        self.collect = Some((h.flag, h.size));
                        self.skip = padded;
                        if padded == 0 {
                            self.finish_body();
                        }
                    }
                    b'g' => self.skip = padded,
                    flag => {
                        self.entries += 1;
                        let name = self.long_name.take().unwrap_or(h.name);
                        let link = self.long_link.take().unwrap_or(h.link);
                        if escapes(&name) {
                            self.problem(format!(
                                "entry {} escapes the image root",
                                String::from_utf8_lossy(&name)
                            ));
                        }
                        if flag == b'1' && escapes(&link) {
                            self.problem(format!(
                                "hard link {} → {} escapes the image root",
                                String::from_utf8_lossy(&name),
                                String::from_utf8_lossy(&link)
                            ));
                        }
                        if !matches!(flag, 0 | b'0'..=b'7') {
                            self.problem(format!(
                                "entry {}: unknown type {:?}",
                                String::from_utf8_lossy(&name),
                                flag as char
                            ));
                        }
                        // Only regular files carry data.
                        self.skip = if matches!(flag, 0 | b'0' | b'7') {
                            padded
                        } else {
                            0
                        };
                    }
                }
            }
        }
    }

    fn done(mut self) -> (String, Vec<String>) {
        if !self.ended {
            self.problem("the tar has no end-of-archive marker (truncated?)".into());
        }
        if self.skip > 0 || !self.pending.is_empty() {
            self.problem("the tar ends inside an entry".into());
        }
        let d = format!(
            "sha256:{}",
            self.hash
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        (d, self.problems)
    }
}

impl Write for TarCheck {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.feed(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Decompresses a layer (by its magic bytes) into the checker; returns diff_id and problems.
fn check_layer(mut r: impl Read) -> Result<(String, Vec<String>), String> {
    let mut head = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let k = r.read(&mut head[got..]).map_err(|e| e.to_string())?;
        if k == 0 {
            break;
        }
        got += k;
    }
    let r = io::Cursor::new(head[..got].to_vec()).chain(r);
    let mut check = TarCheck::new();
    let res = if head[..got].starts_with(&[0x1f, 0x8b]) {
        io::copy(&mut flate2::read::MultiGzDecoder::new(r), &mut check)
    } else if head[..got].starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::stream::read::Decoder::new(r).and_then(|mut d| io::copy(&mut d, &mut check))
    } else {
        let mut r = r;
        io::copy(&mut r, &mut check)
    };
    res.map_err(|e| format!("cannot decompress: {e}"))?;
    Ok(check.done())
}

fn inspect(path: &Path, verify: bool) -> Result<Report> {
    let (src, mut problems) = Source::open(path)?;
    let mut rep = Report {
        file: path.display().to_string(),
        ..Default::default()
    };
    let docker = src.read_json("manifest.json")?;
    let index = src.read_json("index.json")?;
    if docker.is_none() && index.is_none() {
        return Err(BadInput(format!(
            "{}: neither manifest.json nor index.json: not a container image",
            path.display()
        ))
        .into());
    }
    // The OCI manifest (from index.json), else Docker's manifest.json alone.
    let mut oci_manifest: Option<Value> = None;
    if let Some(ix) = &index {
        if let Some(d) = ix["manifests"].get(0) {
            let digest = d["digest"].as_str().unwrap_or_default().to_string();
            rep.manifest_digest = digest.clone();
            if let Some(ann) = d["annotations"].as_object() {
                if let Some(n) = ann.get("io.containerd.image.name").and_then(Value::as_str) {
                    rep.image
                        .push(n.trim_start_matches("docker.io/library/").to_string());
                }
            }
            match src.read_json(&blob_name(&digest))? {
                Some(m) => oci_manifest = Some(m),
                None => problems.push(format!(
                    "index.json names manifest {digest}, which is not in the image"
                )),
            }
            if verify {
                if let Some(sz) = src.size(&blob_name(&digest)) {
                    if d["size"].as_u64() != Some(sz) {
                        problems.push(format!(
                            "index.json gives manifest size {}, the blob has {sz} bytes",
                            d["size"]
                        ));
                    }
                }
            }
        }
    }
    let dm = docker.as_ref().and_then(|d| d.get(0).cloned());
    if let Some(dm) = &dm {
        for t in strs(&dm["RepoTags"]) {
            if !rep.image.contains(&t) {
                rep.image.push(t);
            }
        }
    }
    let (config_name, layer_descs): (String, Vec<(String, String, Option<u64>)>) =
        match &oci_manifest {
            Some(m) => (
                blob_name(m["config"]["digest"].as_str().unwrap_or_default()),
                m["layers"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|l| {
                        (
                            l["digest"].as_str().unwrap_or_default().to_string(),
                            l["mediaType"].as_str().unwrap_or_default().to_string(),
                            l["size"].as_u64(),
                        )
                    })
                    .collect(),
            ),
            None => {
                let dm = dm.clone().unwrap_or_default();
                (
                    dm["Config"].as_str().unwrap_or_default().to_string(),
                    strs(&dm["Layers"])
                        .into_iter()
                        .map(|p| {
                            (
                                p.replacen("blobs/", "", 1).replacen('/', ":", 1),
                                String::new(),
                                None,
                            )
                        })
                        .collect(),
                )
            }
        };
    // Docker's manifest.json must point at the same config and layers.
    if let (Some(dm), Some(_)) = (&dm, &oci_manifest) {
        if dm["Config"].as_str() != Some(config_name.as_str()) {
            problems.push(format!(
                "manifest.json Config {} differs from the OCI manifest's {config_name}",
                dm["Config"]
            ));
        }
        let want: Vec<String> = layer_descs.iter().map(|l| blob_name(&l.0)).collect();
        if strs(&dm["Layers"]) != want {
            problems.push("manifest.json Layers differ from the OCI manifest's layers".into());
        }
    }
    rep.config_digest = config_name.replacen("blobs/", "", 1).replacen('/', ":", 1);
    let config = src
        .read_json(&config_name)?
        .with_context(|| format!("config {config_name} is not in the image"))?;
    if let Some(m) = &oci_manifest {
        if let Some(sz) = src.size(&config_name) {
            if m["config"]["size"].as_u64() != Some(sz) {
                problems.push(format!(
                    "manifest gives config size {}, the blob has {sz} bytes",
                    m["config"]["size"]
                ));
            }
        }
    }
    let c = &config["config"];
    rep.created = config["created"].as_str().unwrap_or_default().into();
    rep.architecture = config["architecture"].as_str().unwrap_or_default().into();
    rep.os = config["os"].as_str().unwrap_or_default().into();
    rep.user = c["User"].as_str().unwrap_or_default().into();
    rep.entrypoint = strs(&c["Entrypoint"]);
    rep.cmd = strs(&c["Cmd"]);
    rep.env = strs(&c["Env"]);
    rep.exposed_ports = c["ExposedPorts"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    rep.working_dir = c["WorkingDir"].as_str().unwrap_or_default().into();
    rep.stop_signal = c["StopSignal"].as_str().unwrap_or_default().into();
    rep.healthcheck = c["Healthcheck"].clone();
    rep.labels = c["Labels"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let diff_ids = strs(&config["rootfs"]["diff_ids"]);
    let history: Vec<&Value> = config["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .filter(|x| x["empty_layer"].as_bool() != Some(true))
                .collect()
        })
        .unwrap_or_default();
    if diff_ids.len() != layer_descs.len() {
        problems.push(format!(
            "{} layers but {} diff_ids in the config",
            layer_descs.len(),
            diff_ids.len()
        ));
    }
    for (i, (digest, mt, size)) in layer_descs.iter().enumerate() {
        let name = blob_name(digest);
        let actual = src.size(&name);
        if actual.is_none() {
            problems.push(format!("layer {} ({digest}) is not in the image", i + 1));
        }
        if let (Some(want), Some(have)) = (size, actual) {
            if *want != have {
                problems.push(format!(
                    "layer {} ({digest}): manifest size {want}, blob has {have} bytes",
                    i + 1
                ));
            }
        }
        let contents = history
            .get(i)
            .map(|h| {
                let comment = h["comment"].as_str().unwrap_or_default();
                if comment.is_empty() {
                    h["created_by"].as_str().unwrap_or_default().to_string()
                } else {
                    comment.to_string()
                }
            })
            .unwrap_or_default();
        rep.layers.push(LayerInfo {
            digest: digest.clone(),
            diff_id: diff_ids.get(i).cloned().unwrap_or_default(),
            media_type: mt.clone(),
            size: actual.unwrap_or(0),
            contents,
        });
    }
    let mut sbom_doc = None;
    if index.is_some() {
        match crate::sbom_read::from_image(path, &src) {
            Ok(Some((format, doc))) => match crate::sbom::summarise(&doc) {
                Ok(sum) => {
                    rep.sbom = Some(SbomInfo {
                        format: sum.format.clone(),
                        path: format!("/{}", format.image_path().unwrap_or_default()),
                        store_paths: sum.store_paths.len(),
                        payloads: sum.payloads.iter().map(|p| p.0.clone()).collect(),
                        crates: sum.crates,
                    });
                    sbom_doc = Some(sum);
                }
                Err(e) => problems.push(format!("the SBOM: {e}")),
            },
            Ok(None) => {}
            Err(e) => problems.push(format!("reading the SBOM: {e:#}")),
        }
    }
    if verify {
        if let Some(sum) = &sbom_doc {
            verify_sbom(&src, &rep.layers, sum, &mut problems)?;
        }
        // Every blob's content matches its name.
        for b in src.blob_names() {
            let Some(r) = src.reader(&b)? else { continue };
            let (d, _) = sha256_of(r).with_context(|| format!("reading {b}"))?;
            let want = b.replacen("blobs/", "", 1).replacen('/', ":", 1);
            if d != want {
                problems.push(format!("blob {b} has digest {d}"));
            }
        }
        // Every layer decompresses to its diff_id and is a well-formed tar inside the root.
        for (i, l) in rep.layers.iter().enumerate() {
            let Some(r) = src.reader(&blob_name(&l.digest))? else {
                continue;
            };
            match check_layer(r) {
                Ok((diff, probs)) => {
                    if diff != l.diff_id {
                        problems.push(format!(
                            "layer {} ({}): uncompressed digest {diff}, config says diff_id {}",
                            i + 1,
                            l.digest,
                            l.diff_id
                        ));
                    }
                    for p in probs {
                        problems.push(format!("layer {} ({}): {p}", i + 1, l.digest));
                    }
                }
                Err(e) => problems.push(format!("layer {} ({}): {e}", i + 1, l.digest)),
            }
        }
        rep.verified = Some(problems.is_empty());
    }
    rep.problems = problems;
    Ok(rep)
}

/// `--verify` of the SBOM against the layers: every store path it lists is in the image and
/// every store path in the image is listed; each payload's sha256 is that of `/bin/<name>`.
fn verify_sbom(
    src: &Source,
    layers: &[LayerInfo],
    sum: &crate::sbom::Summary,
    problems: &mut Vec<String>,
) -> Result<()> {
    let mut in_image = std::collections::BTreeSet::new();
    let mut payload_sums: BTreeMap<String, String> = BTreeMap::new();
    let wanted: std::collections::BTreeSet<String> = sum
        .payloads
        .iter()
        .map(|(n, _)| format!("bin/{n}"))
        .collect();
    for l in layers {
        let Some(r) = src.reader(&blob_name(&l.digest))? else {
            continue;
        };
        let r = crate::sbom_read::decompress(r, &l.media_type)?;
        let (names, sums) = crate::sbom_read::scan_layer(r, &wanted)
            .map_err(|e| anyhow::anyhow!("layer {}: {e}", l.digest))?;
        for n in names {
            let mut parts = n.trim_start_matches("./").splitn(4, '/');
            if let (Some("nix"), Some("store"), Some(base)) =
                (parts.next(), parts.next(), parts.next())
            {
                if !base.is_empty() {
                    in_image.insert(format!("/nix/store/{base}"));
                }
            }
        }
        payload_sums.extend(sums);
    }
    let listed: std::collections::BTreeSet<String> = sum.store_paths.iter().cloned().collect();
    for p in listed.difference(&in_image) {
        problems.push(format!("the SBOM lists {p}, which is not in the image"));
    }
    for p in in_image.difference(&listed) {
        problems.push(format!("{p} is in the image but not in the SBOM"));
    }
    for (name, want) in &sum.payloads {
        match payload_sums.get(&format!("bin/{name}")) {
            Some(have) if have == want => {}
            Some(have) => problems.push(format!(
                "the SBOM gives /bin/{name} sha256 {want}, the image's file has {have}"
            )),
            None => problems.push(format!(
                "the SBOM lists payload {name}, but /bin/{name} is not in the image"
            )),
        }
    }
    Ok(())
}

/// `inspect --verify` as a function: the problems found in a container image tar or OCI
/// directory (empty when it verifies), or the error that stopped reading it. For fuzzing
/// and tests.
pub fn verify_file(path: &Path) -> Result<Vec<String>> {
    inspect(path, true).map(|r| r.problems)
}

fn print_text(rep: &Report, out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "{}", rep.file)?;
    writeln!(out, "  image        {}", rep.image.join(", "))?;
    writeln!(out, "  manifest     {}", rep.manifest_digest)?;
    writeln!(out, "  config       {}", rep.config_digest)?;
    writeln!(
        out,
        "  platform     {}/{}  created {}",
        rep.os, rep.architecture, rep.created
    )?;
    writeln!(out, "  user         {}", rep.user)?;
    writeln!(out, "  entrypoint   {}", rep.entrypoint.join(" "))?;
    if !rep.cmd.is_empty() {
        writeln!(out, "  cmd          {}", rep.cmd.join(" "))?;
    }
    writeln!(
        out,
        "  workdir      {}  stop signal {}",
        rep.working_dir, rep.stop_signal
    )?;
    writeln!(out, "  ports        {}", rep.exposed_ports.join(" "))?;
    if !rep.healthcheck.is_null() {
        let h = &rep.healthcheck;
        let s = |k: &str| {
            h[k].as_u64()
                .map(|ns| format!("{}s", ns as f64 / 1e9))
                .unwrap_or_else(|| "-".into())
        };
        writeln!(
            out,
            "  healthcheck  {} (interval {}, timeout {}, start period {}, retries {})",
            strs(&h["Test"]).join(" "),
            s("Interval"),
            s("Timeout"),
            s("StartPeriod"),
            h["Retries"]
        )?;
    }
    writeln!(out, "  env")?;
    for e in &rep.env {
        writeln!(out, "    {e}")?;
    }
    writeln!(out, "  labels")?;
    for (k, v) in &rep.labels {
        writeln!(out, "    {k}={v}")?;
    }
    writeln!(out, "  layers ({})", rep.layers.len())?;
    for (i, l) in rep.layers.iter().enumerate() {
        let short = l.digest.trim_start_matches("sha256:");
        writeln!(
            out,
            "    {:>3}  {:>10}  {}  {}",
            i + 1,
            crate::bytesize::human(l.size),
            &short[..short.len().min(12)],
            l.contents
        )?;
    }
    if let Some(sb) = &rep.sbom {
        writeln!(
            out,
            "  sbom         {} at {}: {} store paths, payloads {}, {} crates",
            sb.format,
            sb.path,
            sb.store_paths,
            sb.payloads.join(" "),
            sb.crates
        )?;
    }
    match rep.verified {
        Some(true) => writeln!(
            out,
            "verified: every digest, diff_id, size and layer tar checks out"
        )?,
        Some(false) => {
            writeln!(out, "verification FAILED:")?;
            for p in &rep.problems {
                writeln!(out, "  {p}")?;
            }
        }
        None => {
            for p in &rep.problems {
                writeln!(out, "  problem: {p}")?;
            }
        }
    }
    Ok(())
}

/// `imgbuild inspect` (src/commands/inspect.rs).
pub fn run(a: InspectArgs) -> Result<()> {
    // (ISO images are dispatched here to the ISO inspector.)
    if !a.file.exists() {
        return Err(BadInput(format!("{}: no such file or directory", a.file.display())).into());
    }
    if crate::iso::is_iso(&a.file) {
        return crate::iso::inspect::run(&a.file, a.json);
    }
    let rep = inspect(&a.file, a.verify)?;
    let mut out = io::stdout().lock();
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&rep)?)?;
    } else {
        print_text(&rep, &mut out)?;
    }
    if a.verify && rep.verified != Some(true) {
        anyhow::bail!(
            "{}: verification failed: {}",
            a.file.display(),
            rep.problems.join("; ")
        );
    }
    Ok(())
}
