//! `imgbuild container`: profile → Tree → Plan → OCI writer, as named stages:
//! [`resolve`] (profile, payload binaries, closure), [`render_sbom`] (the SBOM document),
//! [`image_tree`] (the files of the image; [`add_sbom`] puts the SBOM in),
//! [`check_executables`] (every executable can start),
//! [`crate::plan::plan`] (ordered layers) and [`image_meta`] (what it runs, as whom),
//! [`crate::oci::write_image`] (layer blobs, config and manifests, the archive, its final
//! name). `--timings` and `--json` report how long each took (docs/CLI.md).
//!
//! The image runs the profile's program as the profile's user (uid:gid 1000:1000 by default),
//! with the profile's settings as `Env` (so `-e` and command-line flags override them), the
//! profile's healthcheck, labels and ports. `--init` builds the "enhanced" origin image
//! instead: entrypoint `/bin/imgbuild-init --container`, which reads the service from
//! `/etc/imgbuild/init.json` (docs/INIT.md) and supervises it. That image runs as the
//! profile's user too (imgbuild-init started as that user runs the service as itself), so
//! nothing in it runs as root. It is a different image, so it is tagged `<profile>-init`
//! (`hls-origin:default-init`) and written to `hls-origin-<profile>-init.tar` by default.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use super::Ctx;
use crate::error::BadInput;
use crate::oci::{self, Compression, Format, Healthcheck, ImageMeta, Output, Store, WriteOptions};
use crate::plan::{self, Layering, PlanOptions, StoreNode};
use crate::profile::{self, Profile};
use crate::timings::Stopwatch;
use crate::tree::{Content, Entry, Group, Tree};

#[derive(Args, Debug)]
pub struct ContainerArgs {
    /// KIND/PROFILE (default origin/default).
    #[arg(value_name = "KIND/PROFILE", default_value = "origin/default")]
    pub profile: String,
    /// Output file (`-` streams the tar to stdout); default ./hls-<kind>-<profile>.tar
    /// (./hls-<kind>-<profile>.oci for --format oci-dir).
    #[arg(short, long, value_name = "FILE|-")]
    pub output: Option<String>,
    /// A Nix closure to add (path-info JSON, closureInfo dir, registration file or path
    /// list); repeatable.
    #[arg(long = "closure", value_name = "PATH")]
    pub closures: Vec<PathBuf>,
    /// Read store paths from DIR/nix/store instead of /nix/store.
    #[arg(long, value_name = "DIR")]
    pub store_root: Option<PathBuf>,
    /// Layer compression: none loads fastest into docker; gzip for registries; zstd is
    /// smallest (OCI media types only).
    #[arg(long, value_enum, default_value = "none")]
    pub compression: Compression,
    /// docker-archive: one tar for docker/podman load and skopeo; oci-dir: an OCI layout
    /// directory.
    #[arg(long, value_enum, default_value = "docker-archive")]
    pub format: Format,
    /// At most N layers (base, closure, one per payload binary, config, SBOM); at most 127.
    #[arg(long, value_name = "N", default_value_t = plan::DEFAULT_MAX_LAYERS)]
    pub max_layers: usize,
    /// How the closure is split into layers.
    #[arg(long, value_enum, default_value = "auto")]
    pub layering: Layering,
    /// Use PATH for payload binary NAME (e.g. hls-origin=target/…/hls-origin); repeatable.
    #[arg(long = "binary", value_name = "NAME=PATH")]
    pub binaries: Vec<String>,
    /// The enhanced image: imgbuild-init as PID 1 supervising the service (origin only).
    #[arg(long)]
    pub init: bool,
    /// Write every layer anew and keep nothing in the layer cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Layer cache directory (default $IMGBUILD_CACHE, else ~/.cache/imgbuild/layers).
    #[arg(long, value_name = "DIR", env = "IMGBUILD_CACHE")]
    pub cache_dir: Option<PathBuf>,
    /// Worker threads (default: all cores). The output does not depend on it.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Print a JSON summary (output, image, layers with digests and sizes, seconds per
    /// stage) on stdout (on stderr with -o -).
    #[arg(long)]
    pub json: bool,
    /// After the build, print how long each stage took (resolve, tree, sbom, elf-check,
    /// plan, layers, config, archive, rename) as a table on stderr. The image is the same.
    #[arg(long)]
    pub timings: bool,
    /// Print the image's Tree (every entry) and layer Plan as JSON; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The SBOM stored in the image (etc/imgbuild/sbom.spdx.json or sbom.cdx.json, a layer
    /// of its own).
    #[arg(long, value_enum, default_value = "spdx")]
    pub sbom: crate::sbom::SbomFormat,
    /// Push the image to REF (HOST[:PORT]/NAME[:TAG]) instead of writing a tar, as
    /// `imgbuild push KIND/PROFILE REF` does.
    #[arg(long, value_name = "REF", conflicts_with_all = ["output", "dry_run"])]
    pub push: Option<String>,
    #[command(flatten)]
    pub registry: crate::push::RegistryArgs,
    #[command(flatten)]
    pub elf_check: crate::closure::ElfCheckArgs,
}

impl ContainerArgs {
    /// The arguments `imgbuild container PROFILE` gets: every flag at its default (the
    /// cache directory from `IMGBUILD_CACHE`, as the flag's `env` reads it).
    pub fn new(profile: &str) -> ContainerArgs {
        ContainerArgs {
            profile: profile.to_string(),
            output: None,
            closures: vec![],
            store_root: None,
            compression: Compression::None,
            format: Format::DockerArchive,
            max_layers: plan::DEFAULT_MAX_LAYERS,
            layering: Layering::Auto,
            binaries: vec![],
            init: false,
            no_cache: false,
            cache_dir: std::env::var_os("IMGBUILD_CACHE")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from),
            threads: None,
            json: false,
            timings: false,
            dry_run: false,
            sbom: crate::sbom::SbomFormat::Spdx,
            push: None,
            registry: Default::default(),
            elf_check: Default::default(),
        }
    }

    /// The arguments `push` and `sbom` build a profile with (an OCI layout in blobs; the
    /// rest at its default).
    pub fn for_build(
        profile: &str,
        inputs: &ProfileInputs,
        compression: Compression,
        cache_dir: Option<PathBuf>,
        sbom: crate::sbom::SbomFormat,
    ) -> ContainerArgs {
        ContainerArgs {
            closures: inputs.closures.clone(),
            store_root: inputs.store_root.clone(),
            compression,
            format: Format::OciDir,
            binaries: inputs.binaries.clone(),
            init: inputs.init,
            cache_dir,
            sbom,
            ..ContainerArgs::new(profile)
        }
    }
}

/// How `push` and `sbom` build a profile given as SOURCE (the rest at `container`'s
/// defaults).
#[derive(Args, Debug, Clone)]
pub struct ProfileInputs {
    /// Payload binary override when SOURCE is a profile (NAME=PATH); repeatable.
    #[arg(long = "binary", value_name = "NAME=PATH")]
    pub binaries: Vec<String>,
    /// A Nix closure to add when SOURCE is a profile; repeatable.
    #[arg(long = "closure", value_name = "PATH")]
    pub closures: Vec<PathBuf>,
    /// Read store paths from DIR/nix/store (SOURCE a profile).
    #[arg(long, value_name = "DIR")]
    pub store_root: Option<PathBuf>,
    /// The enhanced origin image (SOURCE a profile).
    #[arg(long)]
    pub init: bool,
}

/// An image built for a registry: its layer blobs (in the cache or scratch files) and
/// documents; nothing written beside them.
pub struct Built {
    pub docs: oci::image::Documents,
    pub blobs: Vec<oci::Blob>,
    /// The SBOM in the image (what `push` attaches as a referrer).
    pub sbom: Option<(crate::sbom::SbomFormat, Vec<u8>)>,
    /// Holds the scratch directory of `--no-cache` builds until the push is done.
    _scratch: Option<ScratchDir>,
}

/// A temporary directory removed when dropped.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Builds the profile's image as blobs for `push` (no archive, no output file), timing its
/// stages on `sw`.
pub fn build_blobs(ctx: &Ctx, a: &ContainerArgs, sw: &mut Stopwatch) -> Result<Built> {
    let (inputs, tree, plan, meta) = prepare(ctx, a, sw)?;
    let (store, scratch) = match (a.no_cache, a.cache_dir.clone().or_else(default_cache_dir)) {
        (false, Some(d)) => (Store::Cache(d), None),
        _ => {
            let d = std::env::temp_dir().join(format!("imgbuild-push-{}", std::process::id()));
            (Store::Scratch(d.clone()), Some(ScratchDir(d)))
        }
    };
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let (docs, blobs, times) = oci::build_blobs(
        &tree,
        &plan,
        &meta,
        &WriteOptions {
            compression: a.compression,
            format: Format::OciDir,
            threads,
            epoch: inputs.epoch,
            store,
            progress: true,
        },
    )?;
    sw.add("layers", times.layers);
    sw.add("config", times.config);
    // The SBOM the Tree holds (rendering it again would hash every payload binary again).
    let in_tree = inputs
        .sbom
        .image_path()
        .and_then(|p| match tree.get(p).map(|e| &e.kind) {
            Some(crate::tree::Kind::File(Content::Bytes(b))) => Some(b.to_vec()),
            _ => None,
        });
    let sbom = match (inputs.sbom, in_tree) {
        (crate::sbom::SbomFormat::None, _) => None,
        (f, Some(doc)) => Some((f, doc)),
        (f, None) => crate::sbom::render(&sbom_input(&inputs)?, f).map(|d| (f, d)),
    };
    Ok(Built {
        sbom,
        docs,
        blobs,
        _scratch: scratch,
    })
}

/// The stages before the writer: inputs, Tree (files, SBOM, executables checked), Plan and
/// metadata, each timed on `sw`.
fn prepare(
    ctx: &Ctx,
    a: &ContainerArgs,
    sw: &mut Stopwatch,
) -> Result<(Inputs, Tree, plan::Plan, ImageMeta)> {
    let inputs = sw.time("resolve", || resolve(ctx, a))?;
    // Rendered before the Tree exists: the document's JSON values, a few MB on a big
    // closure, are freed before the Tree grows, instead of adding to its peak.
    let sbom = sw.time("sbom", || render_sbom(&inputs))?;
    let mut tree = sw.time("tree", || image_tree(ctx, &inputs))?;
    add_sbom(&mut tree, &inputs, sbom)?;
    sw.time("elf-check", || check_executables(&tree, &inputs))?;
    let (plan, meta) = sw.time("plan", || -> Result<_> {
        let plan = plan::plan(
            &tree,
            &store_nodes(&inputs.closure),
            &PlanOptions {
                max_layers: a.max_layers,
                layering: a.layering,
            },
        )?;
        Ok((plan, image_meta(&inputs)))
    })?;
    Ok((inputs, tree, plan, meta))
}

/// Everything the build reads, resolved and checked.
pub struct Inputs {
    pub profile: Profile,
    /// (name, host path) of each payload binary, entrypoint program first.
    pub payloads: Vec<(String, PathBuf)>,
    pub closure: crate::closure::Closure,
    pub store_root: Option<PathBuf>,
    pub init: bool,
    pub epoch: u64,
    pub version: String,
    pub sbom: crate::sbom::SbomFormat,
    pub elf_check: crate::closure::ElfCheckArgs,
    /// The layer cache's store walks (none with `--no-cache` or `--dry-run`).
    pub walk_records: Option<crate::closure::walk_record::WalkRecords>,
}

/// Stage 1: the profile, payload binaries and closure.
pub fn resolve(ctx: &Ctx, a: &ContainerArgs) -> Result<Inputs> {
    let profile = profile::load_id(&ctx.root, &a.profile)?;
    if a.init && profile.kind != profile::Kind::Origin {
        return Err(BadInput(format!(
            "--init builds the enhanced origin image; {} is a {} profile",
            profile.id(),
            profile.kind
        ))
        .into());
    }
    let overrides = crate::payload::parse_overrides(&a.binaries)?;
    let mut names = vec![profile.image.binary.clone()];
    if a.init {
        names.push("imgbuild-init".to_string());
    }
    let mut payloads = Vec::new();
    for n in names {
        let p = crate::payload::locate(&n, &overrides)?;
        payloads.push((n, p));
    }
    let closure = if a.closures.is_empty() {
        crate::closure::Closure::default()
    } else {
        crate::closure::load(&a.closures, a.store_root.as_deref())?
    };
    Ok(Inputs {
        profile,
        payloads,
        closure,
        store_root: a.store_root.clone(),
        init: a.init,
        epoch: crate::buildenv::source_date_epoch()?,
        version: crate::buildenv::VERSION.to_string(),
        sbom: a.sbom,
        elf_check: a.elf_check,
        walk_records: match (
            a.no_cache || a.dry_run,
            a.cache_dir.clone().or_else(default_cache_dir),
        ) {
            (false, Some(d)) => Some(crate::closure::walk_record::WalkRecords::in_cache(&d)),
            _ => None,
        },
    })
}

fn json_bytes(v: &serde_json::Value) -> Vec<u8> {
    let mut s = serde_json::to_vec_pretty(v).expect("JSON");
    s.push(b'\n');
    s
}

/// `/etc/imgbuild/profile.json`: the profile's resolved settings, for people and tools
/// looking into the image.
pub fn profile_json(p: &Profile) -> Vec<u8> {
    json_bytes(&serde_json::json!({
        "id": p.id(),
        "image": p.image_ref(),
        "description": p.description,
        "settings": p.settings,
        "env": p.env().into_iter().collect::<BTreeMap<_, _>>(),
        "ports": p.ports(),
        "user": { "name": p.image.user.name, "uid": p.image.user.uid, "gid": p.image.user.gid },
    }))
}

/// `/etc/imgbuild/init.json` for `--init`: the service imgbuild-init supervises.
pub fn init_json_bytes(p: &Profile) -> Vec<u8> {
    let mut b = crate::init_json::to_bytes(&crate::init_json::container(p));
    b.push(b'\n');
    b
}

/// Stage 3: the image filesystem (the SBOM rendered before it goes in next, [`add_sbom`]).
pub fn image_tree(ctx: &Ctx, i: &Inputs) -> Result<Tree> {
    let mut tree = crate::rootfs::base_tree(&ctx.root, &i.profile, &i.version)?;
    i.closure
        .add_to_tree(&mut tree, i.store_root.as_deref(), i.walk_records.as_ref())
        .context("adding the closure to the image")?;
    for (name, host) in &i.payloads {
        let content = crate::tree::host_content(host)
            .with_context(|| format!("reading {}", host.display()))?;
        tree.insert(
            format!("bin/{name}"),
            Entry::file(content, 0o755, Group::Payload(name.as_str().into())),
        )?;
    }
    tree.insert("etc/imgbuild", Entry::dir(0o755, Group::Config))?;
    tree.insert(
        "etc/imgbuild/profile.json",
        Entry::file(
            Content::bytes(profile_json(&i.profile)),
            0o644,
            Group::Config,
        ),
    )?;
    if i.init {
        tree.insert(
            "etc/imgbuild/init.json",
            Entry::file(
                Content::bytes(init_json_bytes(&i.profile)),
                0o644,
                Group::Config,
            ),
        )?;
    }
    Ok(tree)
}

/// Stage 2: the SBOM (`--sbom`) document, None with `--sbom none`. It records each payload
/// binary's sha256, so it reads every payload binary once more.
pub fn render_sbom(i: &Inputs) -> Result<Option<Vec<u8>>> {
    if i.sbom.image_path().is_none() {
        return Ok(None);
    }
    Ok(crate::sbom::render(&sbom_input(i)?, i.sbom))
}

/// The SBOM document in the image, a layer of its own.
pub fn add_sbom(tree: &mut Tree, i: &Inputs, doc: Option<Vec<u8>>) -> Result<()> {
    if let (Some(path), Some(doc)) = (i.sbom.image_path(), doc) {
        tree.insert(path, Entry::file(Content::bytes(doc), 0o644, Group::Sbom))?;
    }
    Ok(())
}

/// Stage 4: every executable of the image finds its interpreter and libraries in it, as
/// `--elf-check` says (src/closure/executables.rs).
pub fn check_executables(tree: &Tree, i: &Inputs) -> Result<()> {
    i.elf_check
        .apply(tree)
        .context("checking the executables of the image")?;
    Ok(())
}

/// What the image's SBOM describes: the closure's store paths and the payload programs.
pub fn sbom_input(i: &Inputs) -> Result<crate::sbom::Input> {
    let mut payloads = Vec::new();
    for (name, host) in &i.payloads {
        payloads.push(crate::sbom::PayloadItem {
            name: name.clone(),
            image_path: format!("/bin/{name}"),
            sha256: crate::sbom::file_sha256(host)
                .with_context(|| format!("reading {}", host.display()))?,
        });
    }
    Ok(crate::sbom::Input {
        image: image_meta(i).reference(),
        created: oci::rfc3339(i.epoch),
        tool_version: i.version.clone(),
        store: i
            .closure
            .paths
            .iter()
            .map(|s| crate::sbom::StoreItem {
                path: s.path.display().to_string(),
                nar_hash: s.nar_hash.clone(),
                references: s
                    .references
                    .iter()
                    .map(|r| r.display().to_string())
                    .collect(),
            })
            .collect(),
        payloads,
    })
}

/// The planner's view of the closure.
pub fn store_nodes(c: &crate::closure::Closure) -> Vec<StoreNode> {
    let base = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    c.paths
        .iter()
        .map(|s| StoreNode {
            name: base(&s.path),
            size: s.nar_size.unwrap_or(0),
            references: s.references.iter().map(|r| base(r)).collect(),
        })
        .collect()
}

/// Stage 5 (with the Plan): what the image runs and how it is named.
pub fn image_meta(i: &Inputs) -> ImageMeta {
    let p = &i.profile;
    let created = oci::rfc3339(i.epoch);
    let revision = crate::buildenv::revision();
    let h = p.healthcheck();
    // Both images run as the profile's user: imgbuild-init started as that user runs the
    // service as itself.
    let user = format!("{}:{}", p.image.user.uid, p.image.user.gid);
    let entrypoint = if i.init {
        vec!["/bin/imgbuild-init".to_string(), "--container".to_string()]
    } else {
        vec![format!("/bin/{}", p.image.binary)]
    };
    ImageMeta {
        name: p.image.name.clone(),
        // The enhanced image is another image, so it gets its own tag.
        tag: if i.init {
            format!("{}-init", p.tag())
        } else {
            p.tag().to_string()
        },
        user,
        env: p
            .env()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        entrypoint,
        cmd: vec![],
        exposed_ports: p.ports().iter().map(|x| format!("{x}/tcp")).collect(),
        workdir: p.image.workdir.clone(),
        stop_signal: p.image.stop_signal.clone(),
        labels: p.labels(&i.version, Some(&revision), &created),
        healthcheck: (!h.test.is_empty()).then(|| Healthcheck {
            test: h.test.clone(),
            interval: h.interval_ns,
            timeout: h.timeout_ns,
            start_period: h.start_period_ns,
            start_interval: h.start_interval_ns,
            retries: h.retries,
        }),
        created,
        created_by: format!("imgbuild {}", i.version),
    }
}

/// `--dry-run`: the Tree and the Plan, as data.
pub fn dry_run_json(meta: &ImageMeta, tree: &Tree, plan: &plan::Plan) -> serde_json::Value {
    use crate::tree::{display_path, Kind};
    let entries: Vec<serde_json::Value> = tree
        .iter()
        .map(|(path, e)| {
            let (kind, target) = match &e.kind {
                Kind::Dir => ("dir", None),
                Kind::File(_) => ("file", None),
                Kind::Symlink(t) => ("symlink", Some(String::from_utf8_lossy(t).into_owned())),
                Kind::HardLink(t) => ("hardlink", Some(display_path(t))),
                Kind::CharDevice { .. } => ("chardev", None),
            };
            serde_json::json!({
                "path": display_path(path), "type": kind, "mode": e.mode, "uid": e.uid,
                "gid": e.gid, "size": e.size(), "target": target, "group": e.group.to_string(),
            })
        })
        .collect();
    let layers: Vec<serde_json::Value> = plan
        .layers
        .iter()
        .map(|l| {
            serde_json::json!({
                "name": l.name,
                "groups": l.groups.iter().map(|g| g.to_string()).collect::<Vec<_>>(),
                "size": l.size,
                "paths": l.paths(tree).map(display_path).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({ "image": meta.reference(), "layers": layers, "tree": entries })
}

fn default_cache_dir() -> Option<PathBuf> {
    crate::buildenv::cache_dir("layers")
}

pub fn run(ctx: &Ctx, a: ContainerArgs) -> Result<()> {
    let mut sw = Stopwatch::start();
    if a.format == Format::OciDir && a.output.as_deref() == Some("-") {
        return Err(BadInput(
            "--format oci-dir writes a directory; give it with -o DIR (not -)".into(),
        )
        .into());
    }
    if a.threads == Some(0) {
        return Err(BadInput("--threads 0: give at least 1".into()).into());
    }
    if let Some(r) = &a.push {
        let reference = crate::registry::Reference::parse(r)?;
        let client = crate::push::client(&reference, &a.registry)?;
        let built = build_blobs(ctx, &a, &mut sw)?;
        let img = crate::push::from_built(&built.docs, &built.blobs, built.sbom.clone());
        let s = sw.time("push", || {
            crate::push::push_image(&client, &reference, &img, &a.registry)
        })?;
        let timings = sw.finish();
        crate::push::report(&s, a.json)?;
        if a.timings {
            eprint!("{}", timings.table());
        }
        return Ok(());
    }
    let (inputs, tree, plan, meta) = prepare(ctx, &a, &mut sw)?;
    if a.dry_run {
        // No layers are written; the dry-run JSON stays the same for the same inputs, so the
        // times go only to the --timings table.
        let timings = sw.finish();
        println!(
            "{}",
            serde_json::to_string_pretty(&dry_run_json(&meta, &tree, &plan))?
        );
        if a.timings {
            eprint!("{}", timings.table());
        }
        return Ok(());
    }
    let p = &inputs.profile;
    let suffix = if a.init { "-init" } else { "" };
    let output = match a.output.as_deref() {
        Some("-") => Output::Stdout,
        Some(f) => Output::File(PathBuf::from(f)),
        None => Output::File(PathBuf::from(match a.format {
            Format::DockerArchive => format!("hls-{}-{}{suffix}.tar", p.kind, p.name),
            Format::OciDir => format!("hls-{}-{}{suffix}.oci", p.kind, p.name),
        })),
    };
    let out_dir = match &output {
        Output::File(f) => {
            if let Some(e) = oci::files::missing_output_dir(f) {
                return Err(BadInput(e).into());
            }
            oci::files::output_dir(f)
        }
        Output::Stdout => std::env::temp_dir(),
    };
    let store = match (a.no_cache, a.cache_dir.clone().or_else(default_cache_dir)) {
        (false, Some(d)) => Store::Cache(d),
        _ => Store::Scratch(out_dir),
    };
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let (summary, times) = oci::write_image(
        &tree,
        &plan,
        &meta,
        &output,
        &WriteOptions {
            compression: a.compression,
            format: a.format,
            threads,
            epoch: inputs.epoch,
            store,
            progress: true,
        },
    )?;
    for (name, d) in times.stages() {
        sw.add(name, d);
    }
    let timings = sw.finish();
    if a.json {
        let text = serde_json::to_string_pretty(&JsonSummary {
            summary: &summary,
            stages: timings.stages_json(),
            total_seconds: crate::timings::seconds(timings.total),
        })? + "\n";
        if matches!(output, Output::Stdout) {
            std::io::stderr().write_all(text.as_bytes())?;
        } else {
            std::io::stdout().write_all(text.as_bytes())?;
        }
    } else if std::io::IsTerminal::is_terminal(&std::io::stderr())
        && !matches!(output, Output::Stdout)
    {
        eprintln!(
            "wrote {} ({}, {} layers, {} bytes)",
            summary.output,
            summary.image,
            summary.layers.len(),
            summary.size
        );
    }
    if a.timings {
        eprint!("{}", timings.table());
    }
    Ok(())
}

/// `--json`: the writer's summary, then the seconds each stage took and the whole build's.
#[derive(serde::Serialize)]
struct JsonSummary<'a> {
    #[serde(flatten)]
    summary: &'a oci::Summary,
    stages: crate::timings::StagesJson<'a>,
    total_seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `up` builds with [`ContainerArgs::new`]: the same as the command line's defaults.
    #[test]
    fn new_gives_the_command_line_defaults() {
        let parsed: ContainerArgs = crate::commands::parse_args(&["x", "swarm/stress"]);
        assert_eq!(
            format!("{parsed:?}"),
            format!("{:?}", ContainerArgs::new("swarm/stress"))
        );
    }
}
