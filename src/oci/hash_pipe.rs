//! A buffered writer that hashes what it writes on a thread of its own: the uncompressed
//! layer path's SHA-256 (about a quarter of a cold `--compression none` build when done
//! inline) runs on the second core while the writing thread goes on reading sources and
//! writing the archive. Bytes are gathered in owned buffers; a full buffer is written to the
//! inner writer, then handed (moved, not copied) to the hashing thread, which gives it back
//! for reuse. So it costs the same one copy a `BufWriter` does, and the digest is that of
//! exactly the bytes written, in order.
//!
//! Used only where the layer is not compressed: with compression the worker pool already
//! keeps every core busy, and hashing the stream inline costs less than another thread.

use std::io::{self, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

/// Bytes gathered before a write and a hand-off: large enough that the per-buffer channel
/// round trip is noise (a 600 MB layer is ~2,400 of them), small enough that all of them
/// stay in the L2/L3 cache and cost a build 1 MiB of memory, not the 4 MiB 1 MiB buffers
/// did (bench/container-vs-tar measures peak memory).
const BUFFER: usize = 256 << 10;
/// Buffers in flight: one being filled, the others being hashed or waiting.
const BUFFERS: usize = 4;

/// See the module doc.
pub struct HashPipe<W: Write> {
    /// `None` only once `finish` has taken it.
    inner: Option<W>,
    buf: Vec<u8>,
    to_hasher: Option<SyncSender<Vec<u8>>>,
    free: Receiver<Vec<u8>>,
    hasher: Option<JoinHandle<Sha256>>,
}

impl<W: Write> HashPipe<W> {
    pub fn new(inner: W) -> io::Result<Self> {
        let (to_hasher, work) = sync_channel::<Vec<u8>>(BUFFERS);
        let (give_back, free) = sync_channel::<Vec<u8>>(BUFFERS);
        for _ in 1..BUFFERS {
            give_back
                .send(Vec::with_capacity(BUFFER))
                .expect("the receiver is ours");
        }
        let hasher = std::thread::Builder::new()
            .name("layer-hash".into())
            .spawn(move || {
                let mut h = Sha256::new();
                for mut b in work {
                    h.update(&b);
                    b.clear();
                    // The writer may be gone (an error); the buffer is then just dropped.
                    let _ = give_back.send(b);
                }
                h
            })?;
        Ok(HashPipe {
            inner: Some(inner),
            buf: Vec::with_capacity(BUFFER),
            to_hasher: Some(to_hasher),
            free,
            hasher: Some(hasher),
        })
    }

    /// Writes the gathered bytes through and hands them to the hashing thread.
    fn drain(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.inner
            .as_mut()
            .expect("present until finish")
            .write_all(&self.buf)?;
        let next = self
            .free
            .recv()
            .map_err(|_| io::Error::other("the layer hashing thread stopped"))?;
        let full = std::mem::replace(&mut self.buf, next);
        self.to_hasher
            .as_ref()
            .expect("present until finish")
            .send(full)
            .map_err(|_| io::Error::other("the layer hashing thread stopped"))
    }

    /// Writes the rest through and returns the digest of every byte written and the inner
    /// writer.
    pub fn finish(mut self) -> io::Result<([u8; 32], W)> {
        self.drain()?;
        self.inner.as_mut().expect("present until finish").flush()?;
        drop(self.to_hasher.take());
        let h = self
            .hasher
            .take()
            .expect("present until finish")
            .join()
            .map_err(|_| io::Error::other("the layer hashing thread panicked"))?;
        let inner = self.inner.take().expect("present until finish");
        Ok((h.finalize().into(), inner))
    }
}

impl<W: Write> Write for HashPipe<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = BUFFER - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == BUFFER {
            self.drain()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Gathered bytes stay gathered: flushing part of a buffer would split the writes;
        // `finish` writes them through.
        Ok(())
    }
}

impl<W: Write> Drop for HashPipe<W> {
    fn drop(&mut self) {
        drop(self.to_hasher.take());
        if let Some(h) = self.hasher.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_and_bytes_are_those_written_in_any_write_sizes() {
        let data: Vec<u8> = (0..(3 * BUFFER + 12345))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        for step in [
            1usize,
            511,
            4096,
            BUFFER - 1,
            BUFFER,
            BUFFER + 3,
            data.len(),
        ] {
            let mut p = HashPipe::new(Vec::new()).unwrap();
            for c in data.chunks(step) {
                p.write_all(c).unwrap();
            }
            let (d, out) = p.finish().unwrap();
            assert_eq!(out, data, "step {step}");
            assert_eq!(d, <[u8; 32]>::from(Sha256::digest(&data)), "step {step}");
        }
    }

    #[test]
    fn an_empty_stream_has_the_empty_digest() {
        let (d, out) = HashPipe::new(Vec::new()).unwrap().finish().unwrap();
        assert!(out.is_empty());
        assert_eq!(d, <[u8; 32]>::from(Sha256::digest(b"")));
    }

    #[test]
    fn a_failing_writer_fails_the_pipe_and_stops_its_thread() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut p = HashPipe::new(Broken).unwrap();
        let e = p.write_all(&vec![0u8; BUFFER * 2]).unwrap_err();
        assert_eq!(e.to_string(), "disk full");
        drop(p);
    }
}
