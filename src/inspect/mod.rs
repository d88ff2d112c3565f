//! `imgbuild inspect FILE [--verify] [--json]`: what a container image tar (or OCI layout
//! directory) holds — its name, run configuration and layers with what each one carries —
//! and, with `--verify`, proof that it is intact: every blob's sha256 matches its name,
//! manifest sizes match the blobs, each layer decompresses to its `diff_id`, each layer tar is
//! well-formed (header checksums, sizes, end marker) and no entry or hard link escapes the
//! image root. Any mismatch fails the command (exit 1).
//!
//! By job: [`crate::oci::source`] reads named files out of an image tar or an OCI directory
//! (push and sbom read through it too); [`layer_check`] checks one layer's tar stream; this
//! file is the command: what the image holds, verified, printed.

use std::collections::BTreeMap;

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::BadInput;

mod layer_check;

/// The image reader lives with the OCI code (push and sbom read through it too); this name
/// keeps their imports working.
use crate::oci::source::Source;
use layer_check::check_layer;

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
