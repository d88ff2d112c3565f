//! Layer compression on all cores with output that does not depend on the thread count.
//!
//! The uncompressed layer stream is cut into fixed-size chunks that worker threads compress
//! independently; the [`Encoder`] hands the pieces of the compressed stream on in order, to
//! [`InOrder`], which writes them, or (for the archive's read-ahead, src/oci/layer.rs) to
//! another thread, so the next layer's chunks can be compressing while the last one's are
//! written.
//! - gzip: each 128 KiB chunk is raw-deflated with the previous 32 KiB as its dictionary and
//!   ends with a sync flush (the last one finishes the stream), so the pieces concatenate to
//!   one deflate stream; one gzip header (mtime 0, no name, OS byte 255) and the CRC32 and
//!   length of the whole stream around it. This is pigz's scheme: one valid gzip member.
//! - zstd: each 1 MiB chunk is one independent zstd frame (level 3); zstd decoders read
//!   concatenated frames as one stream.
//!
//! The bytes depend on the chunk size and level only, so `--threads 1` and `--threads 8` give
//! identical blobs.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use flate2::{Compress, Compression as Level, FlushCompress, Status};

/// How layer blobs are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Plain tar: the fastest to build and to `docker load`.
    None,
    /// gzip level 6, compressed in parallel (one valid gzip stream).
    Gzip,
    /// zstd level 3 (OCI media type `tar+zstd`).
    Zstd,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
    /// OCI media type of a layer blob.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
    /// Uncompressed bytes per parallel job.
    pub fn chunk_size(self) -> usize {
        match self {
            Compression::None => 1 << 20,
            Compression::Gzip => GZIP_CHUNK,
            Compression::Zstd => 1 << 20,
        }
    }
}

pub const GZIP_LEVEL: u32 = 6;
pub const ZSTD_LEVEL: i32 = 3;
const GZIP_CHUNK: usize = 128 << 10;
const DICT: usize = 32 << 10;

/// gzip member header: no flags, mtime 0, XFL 0, OS 255 (unknown).
pub const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

struct Job {
    kind: Compression,
    data: Arc<Vec<u8>>,
    dict: Option<Arc<Vec<u8>>>,
    last: bool,
    reply: SyncSender<io::Result<Vec<u8>>>,
}

/// A fixed set of worker threads shared by every layer being written.
pub struct Pool {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    workers: Mutex<Vec<std::thread::JoinHandle<()>>>,
    pub threads: usize,
}

impl Pool {
    pub fn new(threads: usize) -> Arc<Pool> {
        let threads = threads.max(1);
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..threads)
            .map(|i| {
                let rx = Arc::clone(&rx);
                std::thread::Builder::new()
                    .name(format!("compress-{i}"))
                    .spawn(move || worker(rx))
                    .expect("spawning a compression thread")
            })
            .collect();
        Arc::new(Pool {
            tx: Mutex::new(Some(tx)),
            workers: Mutex::new(workers),
            threads,
        })
    }

    fn submit(&self, job: Job) {
        if let Some(tx) = self.tx.lock().expect("pool lock").as_ref() {
            let _ = tx.send(job);
        }
    }

    /// Stops the workers once the queued jobs are done.
    pub fn shutdown(&self) {
        self.tx.lock().expect("pool lock").take();
        for h in self.workers.lock().expect("pool lock").drain(..) {
            let _ = h.join();
        }
    }
}

fn worker(rx: Arc<Mutex<Receiver<Job>>>) {
    let mut zstd: Option<zstd::bulk::Compressor<'static>> = None;
    loop {
        let job = match rx.lock().expect("pool lock").recv() {
            Ok(j) => j,
            Err(_) => return,
        };
        let out = match job.kind {
            Compression::Gzip => {
                // A fresh deflate state per chunk: a reused (reset) one gave different bytes
                // depending on what it compressed before, and a new state costs microseconds
                // against milliseconds of compression.
                let mut c = Compress::new(Level::new(GZIP_LEVEL), false);
                deflate_chunk(
                    &mut c,
                    &job.data,
                    job.dict.as_deref().map(|v| &v[..]),
                    job.last,
                )
            }
            Compression::Zstd => {
                let c = match zstd.as_mut() {
                    Some(c) => Ok(c),
                    None => zstd::bulk::Compressor::new(ZSTD_LEVEL).map(|c| zstd.insert(c)),
                };
                c.and_then(|c| c.compress(&job.data))
            }
            Compression::None => Ok(job.data.to_vec()),
        };
        let _ = job.reply.send(out);
    }
}

/// Raw deflate of one chunk, primed with the last 32 KiB of `dict`, ending with a sync
/// flush (or the final block when `last`).
pub fn deflate_chunk(
    c: &mut Compress,
    data: &[u8],
    dict: Option<&[u8]>,
    last: bool,
) -> io::Result<Vec<u8>> {
    c.reset();
    if let Some(d) = dict {
        let d = &d[d.len().saturating_sub(DICT)..];
        c.set_dictionary(d).map_err(io::Error::other)?;
    }
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let start_in = c.total_in();
    loop {
        let consumed = (c.total_in() - start_in) as usize;
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(4096));
        }
        let st = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let consumed = (c.total_in() - start_in) as usize;
        let room = out.capacity() - out.len();
        match st {
            Status::StreamEnd => break,
            _ if consumed == data.len() && room > 0 && !last => break,
            _ => {}
        }
    }
    Ok(out)
}

/// One piece of a compressed stream, in stream order: bytes the encoder wrote itself (the
/// gzip header and trailer) or a chunk a pool worker is compressing.
pub enum Piece {
    Bytes(Vec<u8>),
    Chunk(Receiver<io::Result<Vec<u8>>>),
}

impl Piece {
    /// The piece's bytes, once its worker has them.
    pub fn wait(self) -> io::Result<Vec<u8>> {
        match self {
            Piece::Bytes(b) => Ok(b),
            Piece::Chunk(rx) => rx
                .recv()
                .map_err(|_| io::Error::other("compression worker stopped"))?,
        }
    }
}

/// Where an [`Encoder`] hands its pieces, in stream order.
pub trait Pieces {
    fn put(&mut self, piece: Piece) -> io::Result<()>;
}

/// Writes the pieces to `out` in order, keeping enough in flight that the workers never wait
/// for the reader.
pub struct InOrder<W: Write> {
    out: W,
    pending: VecDeque<Piece>,
    max_pending: usize,
}

impl<W: Write> InOrder<W> {
    pub fn new(out: W, pool: &Pool) -> Self {
        InOrder {
            out,
            pending: VecDeque::new(),
            max_pending: pieces_in_flight(pool),
        }
    }

    fn drain(&mut self, keep: usize) -> io::Result<()> {
        while self.pending.len() > keep {
            let bytes = self.pending.pop_front().expect("non-empty").wait()?;
            self.out.write_all(&bytes)?;
        }
        Ok(())
    }

    /// Waits for every piece, writes it and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.drain(0)?;
        Ok(self.out)
    }
}

impl<W: Write> Pieces for InOrder<W> {
    fn put(&mut self, piece: Piece) -> io::Result<()> {
        self.pending.push_back(piece);
        let keep = self.max_pending;
        self.drain(keep)
    }
}

/// How many pieces a reader keeps ahead of the writer: enough that the workers never wait
/// for the reader, few enough that memory stays a few MiB.
pub fn pieces_in_flight(pool: &Pool) -> usize {
    pool.threads * 4 + 2
}

/// A `Write` that cuts what it is given into chunks, compresses them through the pool and
/// hands the pieces of the compressed stream, in order, to `out` ([`InOrder`] writes them;
/// the archive writer's read-ahead sends them to another thread).
pub struct Encoder<S: Pieces> {
    kind: Compression,
    pool: Arc<Pool>,
    out: S,
    chunk: Vec<u8>,
    held: Option<Arc<Vec<u8>>>,
    prev: Option<Arc<Vec<u8>>>,
    crc: crc32fast::Hasher,
    total: u64,
}

impl<S: Pieces> Encoder<S> {
    pub fn new(kind: Compression, pool: Arc<Pool>, mut out: S) -> io::Result<Self> {
        if kind == Compression::Gzip {
            out.put(Piece::Bytes(GZIP_HEADER.to_vec()))?;
        }
        Ok(Encoder {
            kind,
            pool,
            out,
            chunk: Vec::with_capacity(kind.chunk_size()),
            held: None,
            prev: None,
            crc: crc32fast::Hasher::new(),
            total: 0,
        })
    }

    /// Submits the held chunk (gzip needs to know which chunk is last, so one is held back).
    fn submit_held(&mut self, last: bool) -> io::Result<()> {
        if let Some(data) = self.held.take() {
            let (tx, rx) = mpsc::sync_channel(1);
            let dict = if self.kind == Compression::Gzip {
                self.prev.take()
            } else {
                None
            };
            self.prev = Some(Arc::clone(&data));
            self.pool.submit(Job {
                kind: self.kind,
                data,
                dict,
                last,
                reply: tx,
            });
            self.out.put(Piece::Chunk(rx))?;
        }
        Ok(())
    }

    fn cut(&mut self) -> io::Result<()> {
        let full = std::mem::replace(&mut self.chunk, Vec::with_capacity(self.kind.chunk_size()));
        self.submit_held(false)?;
        self.held = Some(Arc::new(full));
        Ok(())
    }

    /// Submits every chunk, hands over the gzip trailer and returns the sink (which may still
    /// be waiting for pieces: [`InOrder::finish`]).
    pub fn finish(mut self) -> io::Result<S> {
        if !self.chunk.is_empty() || self.held.is_none() {
            self.cut()?;
        }
        self.submit_held(true)?;
        if self.kind == Compression::Gzip {
            let crc = self.crc.clone().finalize();
            let mut trailer = crc.to_le_bytes().to_vec();
            trailer.extend_from_slice(&(self.total as u32).to_le_bytes());
            self.out.put(Piece::Bytes(trailer))?;
        }
        Ok(self.out)
    }
}

impl<S: Pieces> Write for Encoder<S> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let n = buf.len();
        if self.kind == Compression::Gzip {
            self.crc.update(buf);
        }
        self.total += n as u64;
        let size = self.kind.chunk_size();
        while !buf.is_empty() {
            let take = (size - self.chunk.len()).min(buf.len());
            self.chunk.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            if self.chunk.len() == size {
                self.cut()?;
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(n: usize) -> Vec<u8> {
        // Compressible but not trivial.
        let mut v = Vec::with_capacity(n);
        let mut x: u32 = 7;
        while v.len() < n {
            x = x.wrapping_mul(1103515245).wrapping_add(12345);
            let word = ["alpha ", "beta ", "gamma ", "delta "][(x >> 16) as usize % 4];
            v.extend_from_slice(word.as_bytes());
            v.push((x >> 24) as u8);
        }
        v.truncate(n);
        v
    }

    fn encode(kind: Compression, threads: usize, data: &[u8]) -> Vec<u8> {
        let pool = Pool::new(threads);
        let sink = InOrder::new(Vec::new(), &pool);
        let mut e = Encoder::new(kind, Arc::clone(&pool), sink).unwrap();
        for piece in data.chunks(70_001) {
            e.write_all(piece).unwrap();
        }
        let out = e.finish().unwrap().finish().unwrap();
        pool.shutdown();
        out
    }

    #[test]
    fn parallel_gzip_is_one_valid_stream_independent_of_threads() {
        let data = sample(1_000_000);
        let one = encode(Compression::Gzip, 1, &data);
        let four = encode(Compression::Gzip, 4, &data);
        assert_eq!(one, four);
        let mut d = flate2::read::GzDecoder::new(&one[..]);
        let mut back = Vec::new();
        d.read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        assert!(one.len() < data.len() / 2);
    }

    #[test]
    fn gzip_of_nothing_and_of_exact_chunks_decodes() {
        for n in [0, GZIP_CHUNK, 2 * GZIP_CHUNK, 1] {
            let data = sample(n);
            let z = encode(Compression::Gzip, 2, &data);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&z[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "{n}");
        }
    }

    #[test]
    fn zstd_frames_decode_as_one_stream() {
        let data = sample(9 << 20);
        let a = encode(Compression::Zstd, 1, &data);
        let b = encode(Compression::Zstd, 3, &data);
        assert_eq!(a, b);
        let back = zstd::stream::decode_all(&a[..]).unwrap();
        assert_eq!(back, data);
    }
}
