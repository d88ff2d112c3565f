//! The container image writer: Plan + Tree + image metadata → layer blobs (in parallel, from
//! the cache when unchanged) → image config, OCI manifest and index → one tar in the shape
//! Docker ≥ 25 `docker save` writes (OCI layout *and* `manifest.json` + `repositories`, so the
//! classic Docker store, containerd, podman and skopeo all load it), or an OCI directory.
//!
//! It never looks at profiles: what the image runs, as whom, with which environment comes in
//! as an [`ImageMeta`]. JSON is written from our own structs with sorted maps, so the same
//! input gives the same bytes (and digests) every time.

pub mod compress;
pub mod files;
mod hash_pipe;
pub mod image;
pub mod layer;
pub mod layer_cache;
pub mod source;
pub mod tar;

use std::io::{self, IsTerminal, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use compress::Compression;
pub use image::{Healthcheck, ImageMeta};
pub use layer::{Blob, Store};

use crate::plan::Plan;
use crate::tree::Tree;

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{path}: {err}{}", hint(.err))]
    Io { path: String, err: io::Error },
    #[error("writing the image: {}{}", .0, hint(.0))]
    Write(io::Error),
    #[error("{host} (image path {image}) changed while the image was written: it was {was} bytes, now {now}; rebuild once the file is stable")]
    Changed {
        host: PathBuf,
        image: String,
        was: u64,
        now: u64,
    },
    #[error("{0}")]
    Input(String),
}

/// What to do about an I/O error, appended to the one-line report.
fn hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::PermissionDenied => "; check its permissions: imgbuild must read every input and write the output directory and the layer cache (--cache-dir)",
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
            "; free some space or write elsewhere (-o FILE, --cache-dir DIR)"
        }
        io::ErrorKind::ReadOnlyFilesystem => {
            "; write to a writable directory (-o FILE, --cache-dir DIR)"
        }
        _ => "",
    }
}

impl OciError {
    /// Names the file or directory a bare write error happened in.
    fn at(self, path: &Path) -> OciError {
        match self {
            OciError::Write(err) => OciError::io(path, err),
            e => e,
        }
    }

    pub fn io(path: &Path, err: io::Error) -> OciError {
        OciError::Io {
            path: path.display().to_string(),
            err,
        }
    }
}

/// The on-disk shape of the result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// One tar: OCI layout plus Docker's manifest.json (what `docker save` writes).
    DockerArchive,
    /// An OCI image layout directory.
    OciDir,
}

/// Where the image goes.
#[derive(Clone, Debug)]
pub enum Output {
    File(PathBuf),
    Stdout,
}

pub struct WriteOptions {
    pub compression: Compression,
    pub format: Format,
    pub threads: usize,
    /// SOURCE_DATE_EPOCH: every mtime and `created`.
    pub epoch: u64,
    pub store: Store,
    /// Show progress on stderr (only when it is a terminal).
    pub progress: bool,
}

/// How long the writer's stages took, for `--timings` and `--json`: measured around the work,
/// never written into the image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteTimings {
    /// Every layer blob produced (tar, compress, hash) or taken from the layer cache. A
    /// docker-archive file gets its layers written straight into it, so this includes
    /// writing them there; otherwise they go to the cache or scratch files first.
    pub layers: Duration,
    /// The image config, OCI manifest and index, and Docker's `manifest.json`.
    pub config: Duration,
    /// The rest of the output: in a docker-archive file the documents and the end of the tar;
    /// on stdout the whole tar; an OCI directory as a whole.
    pub archive: Duration,
    /// Giving the output its final name (zero on stdout, which has none).
    pub rename: Duration,
}

impl WriteTimings {
    /// The stages by name, in the order they run.
    pub fn stages(&self) -> [(&'static str, Duration); 4] {
        [
            ("layers", self.layers),
            ("config", self.config),
            ("archive", self.archive),
            ("rename", self.rename),
        ]
    }
}

/// What was written, for `--json` and tests.
#[derive(Debug, serde::Serialize)]
pub struct Summary {
    pub output: String,
    pub image: String,
    pub format: Format,
    pub compression: Compression,
    pub config_digest: String,
    pub manifest_digest: String,
    pub size: u64,
    pub layers: Vec<LayerSummary>,
}

#[derive(Debug, serde::Serialize)]
pub struct LayerSummary {
    pub name: String,
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
    pub uncompressed_size: u64,
    pub media_type: &'static str,
    pub cached: bool,
    /// Where the layer's bytes came from: `new`, `cache`, `sources` (re-read, digests from
    /// the cache), `previous-archive` or `kept` (left in place in the updated output).
    pub from: layer::Origin,
    pub contents: Vec<String>,
}

/// `1970-01-01T00:00:01Z` for 1.
pub fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86400) as i64;
    let secs = epoch % 86400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Writes every layer (largest first, `threads` at a time), in plan order as the result.
fn write_layers(
    tree: &Tree,
    plan: &Plan,
    o: &layer::LayerOptions,
    threads: usize,
) -> Result<Vec<Blob>, OciError> {
    let n = plan.layers.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| {
        plan.layers[b]
            .size
            .cmp(&plan.layers[a].size)
            .then(a.cmp(&b))
    });
    crate::pool::run_in_order(&order, threads, |li| {
        layer_cache::write_layer(tree, &plan.layers[li], o)
    })
}

/// Shows layers done, bytes and rate on stderr while `stop` is false.
fn progress_thread(
    p: Arc<layer::Progress>,
    total_layers: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let start = Instant::now();
        let mut shown = false;
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
            let bytes = p.bytes.load(Ordering::Relaxed);
            let done = p.layers_done.load(Ordering::Relaxed);
            let rate = bytes as f64 / start.elapsed().as_secs_f64().max(1e-3);
            eprint!(
                "\r\x1b[2Klayers {done}/{total_layers}  {}  {}/s",
                crate::bytesize::human(bytes),
                crate::bytesize::human(rate as u64)
            );
            shown = true;
        }
        if shown {
            eprint!("\r\x1b[2K");
        }
    })
}

/// What writing the layers needs around it: the compression pool, the progress counters and,
/// on a terminal, the thread that shows them. [`LayerRun::finish`] stops the pool and the
/// thread.
struct LayerRun {
    pool: Arc<compress::Pool>,
    stop: Arc<AtomicBool>,
    shower: Option<std::thread::JoinHandle<()>>,
    lo: layer::LayerOptions,
}

impl LayerRun {
    fn start(plan: &Plan, o: &WriteOptions) -> Result<LayerRun, OciError> {
        o.store.prepare()?;
        let pool = compress::Pool::new(o.threads);
        let progress = Arc::new(layer::Progress::default());
        let stop = Arc::new(AtomicBool::new(false));
        let shower = (o.progress && io::stderr().is_terminal())
            .then(|| progress_thread(Arc::clone(&progress), plan.layers.len(), Arc::clone(&stop)));
        let lo = layer::LayerOptions {
            compression: o.compression,
            mtime: o.epoch,
            store: o.store.clone(),
            pool: Arc::clone(&pool),
            progress,
        };
        Ok(LayerRun {
            pool,
            stop,
            shower,
            lo,
        })
    }

    fn finish(self) {
        self.pool.shutdown();
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.shower {
            let _ = h.join();
        }
    }
}

/// The directory the layer blobs are written to (named in errors).
fn store_dir(o: &WriteOptions) -> PathBuf {
    match &o.store {
        Store::Cache(d) | Store::Scratch(d) => d.clone(),
    }
}

/// A docker-archive file at `path`: a new file given its name when whole, or — when the layer
/// cache recorded the file now at `path` and most of it stays as it is — that file updated in
/// place (see `image::kept_prefix`). An update in place that fails removes the file rather
/// than leave a torn image under its name; so does SIGINT, SIGTERM or SIGHUP meanwhile.
#[allow(clippy::too_many_arguments)]
fn write_archive_file(
    tree: &Tree,
    plan: &Plan,
    meta: &ImageMeta,
    path: &Path,
    o: &WriteOptions,
    run: &LayerRun,
    times: &mut WriteTimings,
    t: Instant,
) -> Result<(image::Documents, Vec<Blob>), OciError> {
    let found = image::lookup_layers(tree, plan, &run.lo).map_err(|e| e.at(path))?;
    let update = match &o.store {
        Store::Cache(cache) => layer_cache::previous_output(cache, path).and_then(|(f, layout)| {
            let kept = image::kept_prefix(plan, &found, &layout, o.epoch)?;
            image::kept_headers_match(&f, &layout, kept).then_some((f, layout.path, kept))
        }),
        Store::Scratch(_) => None,
    };
    let Some((file, canonical, kept)) = update else {
        return write_new_archive_file(tree, plan, meta, path, o, run, times, t, found);
    };
    let Store::Cache(cache) = &o.store else {
        unreachable!("an update in place needs the layer cache's layout")
    };
    let slot = files::cleanup_register_file(&canonical, &file);
    let mut t = t;
    let result = (|| {
        // The layout describes the file as it was: forgotten before the first change.
        layer_cache::forget_layout(cache, &canonical)?;
        file.set_len(kept.bytes)
            .map_err(|e| OciError::io(path, e))?;
        (&file)
            .seek(std::io::SeekFrom::Start(kept.bytes))
            .map_err(|e| OciError::io(path, e))?;
        let w = image::write_layers_direct(&file, tree, plan, &run.lo, found, Some(kept))
            .map_err(|e| e.at(path))?;
        times.layers = t.elapsed();
        t = Instant::now();
        let docs = image::Documents::new(meta, plan, &w.blobs);
        times.config = t.elapsed();
        t = Instant::now();
        image::write_archive_tail(&file, &docs, o.epoch).map_err(|e| e.at(path))?;
        let end = (&file)
            .stream_position()
            .map_err(|e| OciError::io(path, e))?;
        file.set_len(end).map_err(|e| OciError::io(path, e))?;
        times.archive = t.elapsed();
        Ok((docs, w))
    })();
    let (docs, w) = match result {
        Ok(r) => r,
        Err(e) => {
            // Only if the name still holds this file: a build that found it locked may have
            // put a whole new file there meanwhile.
            if same_file(&canonical, &file) {
                let _ = std::fs::remove_file(&canonical);
            }
            files::cleanup_release(slot);
            return Err(e);
        }
    };
    files::cleanup_release(slot);
    t = Instant::now();
    remember_archive(cache, path, &file, o.epoch, &w);
    times.rename = t.elapsed();
    Ok((docs, w.blobs))
}

/// A new docker-archive file at `path`, given its name when whole ([`write_archive_file`]).
#[allow(clippy::too_many_arguments)]
fn write_new_archive_file(
    tree: &Tree,
    plan: &Plan,
    meta: &ImageMeta,
    path: &Path,
    o: &WriteOptions,
    run: &LayerRun,
    times: &mut WriteTimings,
    mut t: Instant,
    found: Vec<image::Found>,
) -> Result<(image::Documents, Vec<Blob>), OciError> {
    let dir = files::output_dir(path);
    let pending = files::Pending::new_in(&dir, "image").map_err(|e| OciError::io(&dir, e))?;
    let w = image::write_layers_direct(&pending.file, tree, plan, &run.lo, found, None)
        .map_err(|e| e.at(path))?;
    times.layers = t.elapsed();
    t = Instant::now();
    let docs = image::Documents::new(meta, plan, &w.blobs);
    times.config = t.elapsed();
    t = Instant::now();
    image::write_archive_tail(&pending.file, &docs, o.epoch).map_err(|e| e.at(path))?;
    times.archive = t.elapsed();
    t = Instant::now();
    let file = pending
        .persist(path, true)
        .map_err(|e| OciError::io(path, e))?;
    if let Store::Cache(cache) = &o.store {
        remember_archive(cache, path, &file, o.epoch, &w);
    }
    times.rename = t.elapsed();
    Ok((docs, w.blobs))
}

/// Whether `path` names the open file `file` (same device and inode).
fn same_file(path: &Path, file: &std::fs::File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Tells the layer cache what the archive `file`, now at `path`, holds: its layout, and for
/// each plain layer its place in it, for the next build to keep or copy them (a failure here
/// costs that build a re-read, not this one).
fn remember_archive(
    cache: &Path,
    path: &Path,
    file: &std::fs::File,
    epoch: u64,
    w: &image::Written,
) {
    let noted = layer_cache::store_layout(cache, path, file, epoch, w.members.clone())
        .and_then(|()| layer_cache::record_placed(cache, &w.placed, path));
    if let Err(e) = noted {
        tracing::warn!(error = %e, "could not note the layers' place in the archive");
    }
}

/// Builds the image: layers, config, manifest, index, and the archive or directory; and says
/// how long each of those took.
pub fn write_image(
    tree: &Tree,
    plan: &Plan,
    meta: &ImageMeta,
    out: &Output,
    o: &WriteOptions,
) -> Result<(Summary, WriteTimings), OciError> {
    let mut times = WriteTimings::default();
    let t = Instant::now();
    let run = LayerRun::start(plan, o)?;
    // The common case, a tar file: layers go straight into it (one write of every byte).
    if let (Format::DockerArchive, Output::File(path)) = (o.format, out) {
        let result = write_archive_file(tree, plan, meta, path, o, &run, &mut times, t);
        // Stopping the compression pool ends the layers' work.
        let t = Instant::now();
        run.finish();
        times.layers += t.elapsed();
        let (docs, blobs) = result?;
        let s = summary(path.display().to_string(), plan, &blobs, &docs, meta, o);
        return Ok((s, times));
    }
    let blobs = write_layers(tree, plan, &run.lo, o.threads);
    run.finish();
    let blobs = blobs.map_err(|e| e.at(&store_dir(o)))?;
    times.layers = t.elapsed();
    let t = Instant::now();
    let docs = image::Documents::new(meta, plan, &blobs);
    times.config = t.elapsed();
    let t = Instant::now();
    let written = match (o.format, out) {
        (Format::DockerArchive, Output::File(_)) => unreachable!("written above"),
        (Format::DockerArchive, Output::Stdout) => {
            let stdout = io::stdout();
            let mut lock = stdout.lock();
            image::write_archive(&mut lock, &docs, &blobs, o.epoch)?;
            lock.flush().map_err(OciError::Write)?;
            times.archive = t.elapsed();
            "-".to_string()
        }
        (Format::OciDir, Output::File(path)) => {
            let pd = files::PendingDir::new_for(path).map_err(|e| OciError::io(path, e))?;
            image::write_oci_dir(&pd.path, &docs, &blobs)?;
            times.archive = t.elapsed();
            let t = Instant::now();
            pd.persist(path).map_err(|e| OciError::io(path, e))?;
            times.rename = t.elapsed();
            path.display().to_string()
        }
        (Format::OciDir, Output::Stdout) => {
            return Err(OciError::Input(
                "--format oci-dir writes a directory; give it with -o DIR (not -)".into(),
            ));
        }
    };
    Ok((summary(written, plan, &blobs, &docs, meta, o), times))
}

/// Builds every layer blob (into the layer cache, or scratch files) and the image documents,
/// without writing an archive: what `push` sends. The blobs' bytes stay readable through
/// [`Blob::open`] for as long as the returned blobs live. The timings have no archive and
/// no rename.
pub fn build_blobs(
    tree: &Tree,
    plan: &Plan,
    meta: &ImageMeta,
    o: &WriteOptions,
) -> Result<(image::Documents, Vec<Blob>, WriteTimings), OciError> {
    let t = Instant::now();
    let run = LayerRun::start(plan, o)?;
    let blobs = write_layers(tree, plan, &run.lo, o.threads);
    run.finish();
    let blobs = blobs.map_err(|e| e.at(&store_dir(o)))?;
    let layers = t.elapsed();
    let t = Instant::now();
    let docs = image::Documents::new(meta, plan, &blobs);
    let times = WriteTimings {
        layers,
        config: t.elapsed(),
        ..WriteTimings::default()
    };
    Ok((docs, blobs, times))
}

fn summary(
    written: String,
    plan: &Plan,
    blobs: &[Blob],
    docs: &image::Documents,
    meta: &ImageMeta,
    o: &WriteOptions,
) -> Summary {
    let layers = plan
        .layers
        .iter()
        .zip(blobs)
        .map(|(l, b)| LayerSummary {
            name: l.name.clone(),
            digest: b.digest.clone(),
            diff_id: b.diff_id.clone(),
            size: b.size,
            uncompressed_size: b.tar_size,
            media_type: b.media_type,
            cached: b.cached,
            from: b.origin,
            contents: l.groups.iter().map(|g| g.to_string()).collect(),
        })
        .collect();
    Summary {
        output: written,
        image: meta.reference(),
        format: o.format,
        compression: o.compression,
        config_digest: docs.config_digest.clone(),
        manifest_digest: docs.manifest_digest.clone(),
        size: docs.total_size(blobs),
        layers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn meta() -> ImageMeta {
        ImageMeta {
            name: "t".into(),
            tag: "1".into(),
            user: "0:0".into(),
            env: vec![],
            entrypoint: vec!["/f0".into()],
            cmd: vec![],
            exposed_ports: vec![],
            workdir: "/".into(),
            stop_signal: "SIGTERM".into(),
            labels: BTreeMap::new(),
            healthcheck: None,
            created: rfc3339(0),
            created_by: "test".into(),
        }
    }

    fn options(compression: Compression, store: Store) -> WriteOptions {
        WriteOptions {
            compression,
            format: Format::DockerArchive,
            threads: 2,
            epoch: 0,
            store,
            progress: false,
        }
    }

    fn origins(s: &Summary) -> Vec<layer::Origin> {
        s.layers.iter().map(|l| l.from).collect()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Writes host file `f{i}` of `len` pseudo-random bytes (seeded by `seed`) into `dir`.
    fn write_file(dir: &Path, i: usize, len: usize, seed: u32) {
        let mut x = seed;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x = x.wrapping_mul(1103515245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        std::fs::write(dir.join(format!("f{i}")), bytes).unwrap();
    }

    /// The tree of host files `f0`, `f1`, `f2` in `dir` as they are now, one layer each.
    fn tree_of(dir: &Path) -> (Tree, Plan) {
        use crate::tree::{Content, Entry, Group, HostPath};
        let mut tree = Tree::new();
        let mut layers = Vec::new();
        for i in 0..3 {
            let host = dir.join(format!("f{i}"));
            let size = std::fs::metadata(&host).unwrap().len();
            let content = Content::Host {
                path: HostPath::from(host.as_path()),
                size,
                stamp: None,
            };
            let path = format!("f{i}");
            tree.insert(&path, Entry::file(content, 0o644, Group::Base))
                .unwrap();
            layers.push(crate::plan::Layer::with_paths(
                format!("l{i}"),
                vec![Group::Base],
                &tree,
                [&path],
                size,
            ));
        }
        (tree, Plan { layers })
    }

    #[test]
    fn a_rebuild_updates_its_previous_archive_in_place_to_the_bytes_of_a_fresh_one() {
        use layer::Origin::{Kept, New};
        use std::os::unix::fs::MetadataExt;
        for compression in [Compression::None, Compression::Gzip] {
            let (src, out, cache) = three_files();
            let o = options(compression, Store::Cache(cache.path().to_path_buf()));
            let path = out.path().join("img.tar");
            let build = |o: &WriteOptions, to: &Path| {
                let (tree, plan) = tree_of(src.path());
                let (s, _) =
                    write_image(&tree, &plan, &meta(), &Output::File(to.into()), o).unwrap();
                origins(&s)
            };
            assert_eq!(build(&o, &path), [New, New, New]);
            let inode = std::fs::metadata(&path).unwrap().ino();
            // The last layer's file changes (another size): the first two stay where they are.
            write_file(src.path(), 2, 5000, 99);
            assert_eq!(build(&o, &path), [Kept, Kept, New], "{compression:?}");
            assert_eq!(
                std::fs::metadata(&path).unwrap().ino(),
                inode,
                "{compression:?}"
            );
            // The same bytes as a build from scratch into a new file.
            let fresh = out.path().join("fresh.tar");
            let scratch = options(compression, Store::Scratch(cache.path().to_path_buf()));
            build(&scratch, &fresh);
            let bytes = std::fs::read(&fresh).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "{compression:?}");
            // Unchanged: every layer stays.
            assert_eq!(build(&o, &path), [Kept, Kept, Kept], "{compression:?}");
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "{compression:?}");
            // The first layer changes: too little would stay, a new file is written.
            write_file(src.path(), 0, 7000, 98);
            let whole = build(&o, &path);
            assert!(!whole.contains(&Kept), "{compression:?}: {whole:?}");
            assert_ne!(
                std::fs::metadata(&path).unwrap().ino(),
                inode,
                "{compression:?}"
            );
            // Another name linked to the archive: a new file, that name keeps its bytes.
            let before = std::fs::read(&path).unwrap();
            std::fs::hard_link(&path, out.path().join("keep.tar")).unwrap();
            write_file(src.path(), 2, 6000, 97);
            let linked = build(&o, &path);
            assert!(!linked.contains(&Kept), "{compression:?}: {linked:?}");
            assert_eq!(std::fs::read(out.path().join("keep.tar")).unwrap(), before);
            assert_ne!(std::fs::read(&path).unwrap(), before);
            assert_eq!(names(out.path()), ["fresh.tar", "img.tar", "keep.tar"]);
        }
    }

    #[test]
    fn an_archive_another_build_holds_or_named_through_a_symlink_is_not_updated_in_place() {
        use std::os::fd::AsRawFd;
        let (src, out, cache) = three_files();
        let o = options(Compression::None, Store::Cache(cache.path().to_path_buf()));
        let path = out.path().join("img.tar");
        let build = |to: &Path| {
            let (tree, plan) = tree_of(src.path());
            let (s, _) = write_image(&tree, &plan, &meta(), &Output::File(to.into()), &o).unwrap();
            origins(&s)
        };
        build(&path);
        // Another build is updating it (it holds the lock): this one writes a new file.
        let held = std::fs::File::open(&path).unwrap();
        // SAFETY: flock on a descriptor the test owns.
        assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
        write_file(src.path(), 2, 5000, 99);
        let while_held = build(&path);
        assert!(!while_held.contains(&layer::Origin::Kept), "{while_held:?}");
        drop(held);
        assert!(build(&path).contains(&layer::Origin::Kept));
        // Named through a symlink: the symlink is replaced by a new file, the file it named
        // is left as it was.
        let before = std::fs::read(&path).unwrap();
        let link = out.path().join("link.tar");
        std::os::unix::fs::symlink("img.tar", &link).unwrap();
        write_file(src.path(), 2, 6000, 98);
        let through = build(&link);
        assert!(!through.contains(&layer::Origin::Kept), "{through:?}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert!(std::fs::symlink_metadata(&link).unwrap().is_file());
    }

    #[test]
    fn an_update_in_place_that_fails_leaves_no_torn_archive_and_no_record_of_it() {
        for compression in [Compression::None, Compression::Gzip] {
            let (src, out, cache) = three_files();
            let o = options(compression, Store::Cache(cache.path().to_path_buf()));
            let path = out.path().join("img.tar");
            let (tree, plan) = tree_of(src.path());
            write_image(&tree, &plan, &meta(), &Output::File(path.clone()), &o).unwrap();
            // The last layer's source changes after the tree was taken (its size no longer
            // the recorded one): the build fails while it updates the archive in place.
            write_file(src.path(), 2, 5000, 99);
            let (tree, plan) = tree_of(src.path());
            write_file(src.path(), 2, 5001, 99);
            let err = write_image(&tree, &plan, &meta(), &Output::File(path.clone()), &o)
                .expect_err("the source changed");
            assert!(
                matches!(err, OciError::Changed { .. }),
                "{compression:?}: {err}"
            );
            assert_eq!(names(out.path()), Vec::<String>::new(), "{compression:?}");
            let canonical = out.path().canonicalize().unwrap().join("img.tar");
            assert!(layer_cache::read_layout(cache.path(), &canonical).is_none());
            // The next build writes a whole new archive.
            let (tree, plan) = tree_of(src.path());
            let (s, _) =
                write_image(&tree, &plan, &meta(), &Output::File(path.clone()), &o).unwrap();
            assert!(
                !origins(&s).contains(&layer::Origin::Kept),
                "{compression:?}"
            );
            assert!(path.exists());
        }
    }

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    /// Three directories: the sources (host files `f0`..`f2` of about 1 MiB each), the
    /// output's and the layer cache's.
    fn three_files() -> (tempfile::TempDir, tempfile::TempDir, tempfile::TempDir) {
        let (src, out, cache) = (tempdir(), tempdir(), tempdir());
        for i in 0..3 {
            write_file(src.path(), i, (1 << 20) + 1000 * i, i as u32);
        }
        (src, out, cache)
    }

    #[test]
    fn rfc3339_of_known_epochs() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1), "1970-01-01T00:00:01Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
