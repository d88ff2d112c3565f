//! Segment bodies held in kernel memory and sent with `sendfile(2)`.
//!
//! A segment is built once, written to an anonymous memory file (`memfd_create`: shmem pages,
//! no filesystem, so it works in a `--read-only` container) and then every response for it is a
//! `sendfile` from those pages straight into the socket: no user-space copy per request, the same
//! path nginx takes for a file on tmpfs. Where memfd is unavailable (e.g. a seccomp policy that
//! forbids it) the body stays a shared `Bytes` buffer written with `writev`.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// A cached segment body; cloning is a refcount increment.
#[derive(Clone, Debug)]
pub enum Body {
    Mem(Bytes),
    File {
        file: Arc<File>,
        off: u64,
        len: usize,
    },
}

impl Body {
    /// Move freshly built bytes into a memfd, falling back to memory.
    pub fn seal(bytes: Bytes) -> Body {
        match memfd(&bytes) {
            Ok(file) => Body::File {
                file: Arc::new(file),
                off: 0,
                len: bytes.len(),
            },
            Err(e) => {
                tracing::debug!("memfd unavailable ({e}); serving segments from memory");
                Body::Mem(bytes)
            }
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Body::Mem(b) => b.len(),
            Body::File { len, .. } => *len,
        }
    }

    /// The sub-range `[start, start+len)`.
    pub fn slice(&self, start: usize, len: usize) -> Body {
        match self {
            Body::Mem(b) => Body::Mem(b.slice(start..start + len)),
            Body::File { file, off, .. } => Body::File {
                file: file.clone(),
                off: off + start as u64,
                len,
            },
        }
    }
}

/// The error a send timeout ends a connection with.
pub fn send_timed_out(after: Duration) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no send progress for {after:?} (--send-timeout)"),
    )
}

/// `len` bytes of `file` from `off`: what one response sends of a segment's memfd.
pub struct FileRange<'a> {
    pub file: &'a File,
    pub off: u64,
    pub len: usize,
}

fn memfd(data: &[u8]) -> io::Result<File> {
    // SAFETY: the name is a valid C string; the returned fd is owned by the File below.
    let fd = unsafe { libc::memfd_create(c"hls-origin-segment".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor we own.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(data)?;
    Ok(file)
}

/// Write `head` then `body` to the socket: the head goes out with MSG_MORE so it shares a TCP
/// segment with the start of the file data. Fails with `TimedOut` when the socket stays
/// unwritable for `send_timeout`.
pub async fn send_file(
    sock: &TcpStream,
    head: &[u8],
    body: FileRange<'_>,
    send_timeout: Duration,
) -> io::Result<()> {
    let (ffd, mut off, mut len) = (body.file.as_raw_fd(), body.off, body.len);
    // A client that stops reading leaves the socket unwritable: give up after send_timeout.
    let writable = || async {
        tokio::time::timeout(send_timeout, sock.writable())
            .await
            .map_err(|_| send_timed_out(send_timeout))?
    };
    let sfd = sock.as_raw_fd();
    let mut h = head;
    while !h.is_empty() {
        writable().await?;
        match sock.try_io(Interest::WRITABLE, || {
            // SAFETY: h is a valid buffer for h.len() bytes; sfd is the socket's open descriptor.
            let n = unsafe {
                libc::send(
                    sfd,
                    h.as_ptr().cast(),
                    h.len(),
                    libc::MSG_MORE | libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        }) {
            Ok(n) => h = &h[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    while len > 0 {
        writable().await?;
        match sock.try_io(Interest::WRITABLE, || {
            let mut o = off as libc::off_t;
            // SAFETY: both descriptors are open for the duration of the call; o is a valid pointer.
            let n = unsafe { libc::sendfile(sfd, ffd, &mut o, len.min(1 << 30)) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        }) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                off += n as u64;
                len -= n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
