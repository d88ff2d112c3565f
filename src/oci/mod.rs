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

use std::io::{self, IsTerminal, Write};
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
    /// the cache) or `previous-archive`.
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
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut t = t;
        let result = (|| {
            let pending = files::Pending::new_in(dir, "image").map_err(|e| OciError::io(dir, e))?;
            let (blobs, placed) = image::write_layers_direct(&pending.file, tree, plan, &run.lo)
                .map_err(|e| e.at(path))?;
            times.layers = t.elapsed();
            t = Instant::now();
            let docs = image::Documents::new(meta, plan, &blobs);
            times.config = t.elapsed();
            t = Instant::now();
            image::write_archive_tail(&pending.file, &docs, o.epoch).map_err(|e| e.at(path))?;
            times.archive = t.elapsed();
            t = Instant::now();
            pending
                .persist(path, true)
                .map_err(|e| OciError::io(path, e))?;
            // The plain layers' records now point at this archive, for the next build to
            // copy them from (a failure here costs that build a re-read, not this one).
            if let Store::Cache(cache) = &o.store {
                if let Err(e) = layer_cache::record_placed(cache, &placed, path) {
                    tracing::warn!(error = %e, "could not note the layers' place in the archive");
                }
            }
            times.rename = t.elapsed();
            Ok((docs, blobs))
        })();
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

    #[test]
    fn rfc3339_of_known_epochs() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1), "1970-01-01T00:00:01Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
