//! A minimal keep-alive HTTP/1.1 GET client, one per viewer, over http:// or https:// (rustls,
//! see src/tls.rs and docs/tls.md). Redirects are errors unless the client follows them
//! (`--follow-redirects`).
//!
//! Why hand-written: a viewer must cost little memory. A connection here is a `TcpStream` (or
//! a boxed rustls stream over one) plus a small header buffer; plain bodies are read through
//! one scratch buffer per worker thread (with `try_read`, so it is never held across an
//! `.await`), TLS bodies straight out of rustls' own plaintext buffer, and either counted
//! (segments) or appended to a caller's `Vec` (playlists).

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::tls::TlsReason;

/// Size of the per-thread scratch buffer bodies are read into.
const SCRATCH: usize = 256 * 1024;
/// Header reads are done in small steps so the header buffer stays small.
const HEADER_STEP: usize = 2048;
const MAX_HEADER: usize = 32 * 1024;
/// The window over which `--min-rate` is judged once the first byte arrived: a transfer that
/// receives less than `min_rate × RATE_WINDOW` bytes in one window is too slow.
pub const RATE_WINDOW: Duration = Duration::from_secs(2);

thread_local! {
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; SCRATCH].into_boxed_slice());
}

/// Most redirects followed for one request (a player's limit is of this order).
pub const MAX_REDIRECTS: u32 = 5;

/// An http:// or https:// URL split into what a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// https:// (TLS) rather than http://.
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path plus query, starting with `/`.
    pub path: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, String> {
        let s = s.trim();
        let (tls, rest) = if let Some(r) = strip_prefix_ci(s, "http://") {
            (false, r)
        } else if let Some(r) = strip_prefix_ci(s, "https://") {
            (true, r)
        } else {
            return Err(format!("{s}: not an http:// or https:// URL"));
        };
        let default_port = if tls { 443 } else { 80 };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        let path = match path.find('#') {
            Some(i) => path[..i].to_string(),
            None => path,
        };
        let authority = authority.rsplit('@').next().unwrap_or(authority);
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let end = v6.find(']').ok_or_else(|| format!("{s}: bad IPv6 host"))?;
            let host = &v6[..end];
            let port = match &v6[end + 1..] {
                "" => default_port,
                p => p
                    .strip_prefix(':')
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| format!("{s}: bad port"))?,
            };
            (host.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_string(),
                    p.parse().map_err(|_| format!("{s}: bad port `{p}`"))?,
                ),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() {
            return Err(format!("{s}: no host"));
        }
        Ok(Url {
            tls,
            host,
            port,
            path,
        })
    }

    /// Resolve a playlist reference (absolute, scheme-relative, absolute-path or relative).
    pub fn join(&self, reference: &str) -> Result<Url, String> {
        let r = reference.trim();
        if strip_prefix_ci(r, "http://").is_some() || strip_prefix_ci(r, "https://").is_some() {
            return Url::parse(r);
        }
        if let Some(rest) = r.strip_prefix("//") {
            return Url::parse(&format!("{}://{rest}", self.scheme()));
        }
        let path = if r.starts_with('/') {
            r.to_string()
        } else {
            let base = self.path.split('?').next().unwrap_or("/");
            let dir = match base.rfind('/') {
                Some(i) => &base[..=i],
                None => "/",
            };
            if r.is_empty() {
                self.path.clone()
            } else {
                format!("{dir}{r}")
            }
        };
        Ok(Url {
            tls: self.tls,
            host: self.host.clone(),
            port: self.port,
            path: normalize_dots(&path),
        })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    /// Scheme, host and port: what a connection can be reused for.
    fn origin(&self) -> String {
        format!("{}://{}", self.scheme(), self.authority())
    }

    fn default_port(&self) -> bool {
        self.port == if self.tls { 443 } else { 80 }
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.origin(), self.path)
    }
}

/// `s` without an ASCII `prefix`, compared case-insensitively. Compared as bytes: slicing the
/// str at `prefix.len()` panicked when that fell inside a multi-byte character of a playlist
/// URI (fuzz/regressions/swarm_m3u8-uri-prefix-char-boundary).
fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let n = prefix.len();
    if s.as_bytes()
        .get(..n)
        .is_some_and(|b| b.eq_ignore_ascii_case(prefix.as_bytes()))
    {
        // The first n bytes equal an ASCII prefix, so n is a char boundary.
        Some(&s[n..])
    } else {
        None
    }
}

/// Remove `.` and `..` segments (RFC 3986 §5.2.4) from the path part.
fn normalize_dots(path: &str) -> String {
    let (p, q) = match path.find('?') {
        Some(i) => (&path[..i], &path[i..]),
        None => (path, ""),
    };
    if !p.contains("/.") {
        return path.to_string();
    }
    let mut out: Vec<&str> = Vec::new();
    let segs: Vec<&str> = p.split('/').collect();
    for (i, seg) in segs.iter().enumerate() {
        match *seg {
            "." => {
                if i == segs.len() - 1 {
                    out.push("");
                }
            }
            ".." => {
                if out.len() > 1 {
                    out.pop();
                }
                if i == segs.len() - 1 {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let mut joined = out.join("/");
    if !joined.starts_with('/') {
        joined.insert(0, '/');
    }
    joined + q
}

/// Why a request failed; `kind()` is the metrics label.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connect to {0}: {1}")]
    Connect(String, io::Error),
    #[error("connect to {0}: no connection after {1:?} (--connect-timeout)")]
    ConnectTimeout(String, Duration),
    #[error("no response byte {0:?} after the request was sent (--first-byte-timeout)")]
    FirstByteTimeout(Duration),
    #[error("server too slow: {got} bytes in {window:?}, below --min-rate {min_rate} B/s")]
    TooSlow {
        got: u64,
        window: Duration,
        min_rate: u64,
    },
    #[error("response body larger than the {0}-byte limit")]
    TooLarge(u64),
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    #[error("connection: {0}")]
    Io(#[from] io::Error),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("TLS handshake with {host}: {reason}: {detail}", reason = .reason.label())]
    Tls {
        host: String,
        reason: TlsReason,
        detail: String,
    },
    #[error("redirect {status} to {location} (give --follow-redirects to follow redirects)")]
    Redirect { status: u16, location: String },
    #[error("more than {MAX_REDIRECTS} redirects, the last to {0}")]
    TooManyRedirects(String),
    #[error("https:// URL but TLS is not set up")]
    NoTls,
    #[error("malformed response: {0}")]
    Protocol(&'static str),
}

impl HttpError {
    pub fn kind(&self) -> &'static str {
        match self {
            HttpError::Connect(..) => "connect",
            HttpError::ConnectTimeout(..) => "connect_timeout",
            HttpError::FirstByteTimeout(_) => "first_byte_timeout",
            HttpError::TooSlow { .. } => "slow",
            HttpError::TooLarge(_) => "too_large",
            HttpError::Timeout(_) => "timeout",
            HttpError::Io(_) => "io",
            HttpError::Status(s) if (400..500).contains(s) => "http_4xx",
            HttpError::Status(s) if (500..600).contains(s) => "http_5xx",
            HttpError::Status(_) => "http_other",
            HttpError::Protocol(_) => "protocol",
            HttpError::Tls { .. } | HttpError::NoTls => "tls",
            HttpError::Redirect { .. } | HttpError::TooManyRedirects(_) => "redirect",
        }
    }
}

/// Where a response body goes. Each has a size limit: a body above it is a `TooLarge`
/// error (at once when Content-Length says so), never unbounded memory or an endless read.
pub enum Sink<'a> {
    /// Append to this buffer, up to a limit (playlists).
    Collect(&'a mut Vec<u8>, usize),
    /// Count into this counter as bytes arrive, and drop (segments), up to a limit: a download
    /// cut short by the end of the run still counts what was received.
    Count(&'a AtomicU64, u64),
}

impl Sink<'_> {
    fn limit(&self) -> u64 {
        match self {
            Sink::Collect(_, l) => *l as u64,
            Sink::Count(_, l) => *l,
        }
    }
}

/// The time limits of one request (see `docs/hardening.md`).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// The whole request, connect to last byte (`--timeout`).
    pub total: Duration,
    /// TCP connect (`--connect-timeout`).
    pub connect: Duration,
    /// Request sent to first response byte (`--first-byte-timeout`).
    pub first_byte: Duration,
    /// Least bytes per second once the response started, judged per `RATE_WINDOW`; 0 = off.
    pub min_rate: u64,
}

/// An open connection: plain TCP, or TLS over TCP (boxed: the rustls state is a few KiB and
/// plain viewers should not carry room for it).
enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Conn {
    async fn write_request(&mut self, req: &[u8]) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.write_all(req).await,
            Conn::Tls(s) => {
                s.write_all(req).await?;
                s.flush().await
            }
        }
    }
}

/// How a client reaches servers: TLS, and whether it follows redirects.
#[derive(Clone, Default)]
pub struct Connector {
    /// The shared rustls configuration (None: https:// URLs fail with a `tls` error).
    pub tls: Option<TlsConnector>,
    /// Follow 301/302/303/307/308 to their Location (same- and cross-origin), up to
    /// `MAX_REDIRECTS` per request.
    pub follow_redirects: bool,
}

/// One viewer's client: at most one open keep-alive connection.
pub struct Client {
    conn: Option<(String, Conn)>,
    head: Vec<u8>,
    timeouts: Timeouts,
    /// Shared by every viewer (one pointer per client).
    connector: std::sync::Arc<Connector>,
    /// Redirects followed by the last `get` and where they led (None: not redirected; boxed
    /// so a client that is never redirected carries one pointer).
    redirected: Option<Box<(u32, Url)>>,
    /// Which of a host name's addresses to try first (src/resolve.rs).
    spread: u64,
}

impl Client {
    pub fn new(timeouts: Timeouts, connector: std::sync::Arc<Connector>) -> Client {
        Client {
            conn: None,
            head: Vec::new(),
            timeouts,
            connector,
            redirected: None,
            spread: 0,
        }
    }

    /// Redirects the last `get` followed and the URL that answered (None: no redirect).
    pub fn take_redirect(&mut self) -> Option<(u32, Url)> {
        self.redirected.take().map(|b| *b)
    }

    /// Spread clients over every address of a host name: a client with key `k` connects
    /// first to address `k mod n` of the sorted list (see src/resolve.rs).
    pub fn spread_by(mut self, key: u64) -> Client {
        self.spread = key;
        self
    }

    /// Drop the connection (the next request opens a new one).
    pub fn close(&mut self) {
        self.conn = None;
        self.head = Vec::new();
    }

    /// GET `url`; on a 2xx answer returns the body size. Any other status is an error (its
    /// body is still read so the connection can be reused).
    /// With `follow_redirects`, a redirect is followed (each hop within its own `--timeout`)
    /// and `take_redirect` tells how many and where to.
    pub async fn get(&mut self, url: &Url, mut sink: Sink<'_>) -> Result<u64, HttpError> {
        self.redirected = None;
        if !self.connector.follow_redirects {
            return self.get_once(url, &mut sink).await;
        }
        // Boxed: the redirect loop's state stays out of viewers that do not follow.
        Box::pin(self.get_following(url, sink)).await
    }

    async fn get_following(&mut self, url: &Url, mut sink: Sink<'_>) -> Result<u64, HttpError> {
        let mut hops = 0u32;
        let mut current: Option<Url> = None;
        loop {
            let target = current.as_ref().unwrap_or(url);
            match self.get_once(target, &mut sink).await {
                Err(HttpError::Redirect { location, .. }) => {
                    let next = target
                        .join(&location)
                        .map_err(|_| HttpError::Protocol("bad Location header"))?;
                    hops += 1;
                    if hops > MAX_REDIRECTS {
                        return Err(HttpError::TooManyRedirects(next.to_string()));
                    }
                    if let Sink::Collect(v, _) = &mut sink {
                        v.clear();
                    }
                    self.redirected = Some(Box::new((hops, next.clone())));
                    current = Some(next);
                }
                r => return r,
            }
        }
    }

    async fn get_once(&mut self, url: &Url, sink: &mut Sink<'_>) -> Result<u64, HttpError> {
        let timeout = self.timeouts.total;
        match tokio::time::timeout(timeout, self.get_inner(url, sink)).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => {
                if !matches!(e, HttpError::Status(_) | HttpError::Redirect { .. }) {
                    self.close();
                }
                Err(e)
            }
            Err(_) => {
                self.close();
                Err(HttpError::Timeout(timeout))
            }
        }
    }

    /// TCP connect, then the TLS handshake for https://, both within --connect-timeout.
    async fn connect(&self, url: &Url, origin: &str) -> Result<Conn, HttpError> {
        let deadline = Instant::now() + self.timeouts.connect;
        let late = || HttpError::ConnectTimeout(origin.to_string(), self.timeouts.connect);
        let connect = crate::resolve::connect(&url.host, url.port, self.spread);
        let stream = tokio::time::timeout_at(deadline, connect)
            .await
            .map_err(|_| late())?
            .map_err(|e| HttpError::Connect(origin.to_string(), e))?;
        let _ = stream.set_nodelay(true);
        if !url.tls {
            return Ok(Conn::Plain(stream));
        }
        let Some(tls) = &self.connector.tls else {
            return Err(HttpError::NoTls);
        };
        let name = rustls::pki_types::ServerName::try_from(url.host.clone()).map_err(|_| {
            HttpError::Tls {
                host: url.host.clone(),
                reason: TlsReason::NameMismatch,
                detail: "not a valid DNS name or IP address".into(),
            }
        })?;
        // Boxed: the handshake state (a whole rustls connection) would otherwise be part of
        // every viewer's future, plain ones included.
        let handshake = Box::pin(tls.connect(name, stream));
        let tls_stream = tokio::time::timeout_at(deadline, handshake)
            .await
            .map_err(|_| late())?
            .map_err(|e| HttpError::Tls {
                host: url.host.clone(),
                reason: TlsReason::of(&e),
                detail: e.to_string(),
            })?;
        Ok(Conn::Tls(Box::new(tls_stream)))
    }

    async fn get_inner(&mut self, url: &Url, sink: &mut Sink<'_>) -> Result<u64, HttpError> {
        let origin = url.origin();
        let mut reused = matches!(&self.conn, Some((a, _)) if *a == origin);
        loop {
            if !reused {
                self.conn = None;
                // Boxed: connecting is rare (keep-alive), and its state (address lookup, TCP,
                // TLS handshake) need not sit in every viewer's future between connects.
                let conn = Box::pin(self.connect(url, &origin)).await?;
                self.conn = Some((origin.clone(), conn));
            }
            match self.exchange(url, sink).await {
                // A kept-alive connection the server closed meanwhile: retry once on a new
                // one, as every HTTP client does; not an error of the origin.
                Err(Exchange::ClosedBeforeResponse) if reused => {
                    self.conn = None;
                    reused = false;
                    if let Sink::Collect(v, _) = sink {
                        v.clear();
                    }
                }
                Err(Exchange::ClosedBeforeResponse) => {
                    return Err(HttpError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed before a response",
                    )))
                }
                Err(Exchange::Failed(e)) => return Err(e),
                Ok(n) => return Ok(n),
            }
        }
    }

    async fn exchange(&mut self, url: &Url, sink: &mut Sink<'_>) -> Result<u64, Exchange> {
        let (_, stream) = self.conn.as_mut().expect("connected");
        let host = if url.default_port() {
            if url.host.contains(':') {
                format!("[{}]", url.host)
            } else {
                url.host.clone()
            }
        } else {
            url.authority()
        };
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: hls-swarm/{}\r\nAccept: */*\r\n\r\n",
            url.path,
            host,
            env!("CARGO_PKG_VERSION")
        );
        if let Err(e) = stream.write_request(req.as_bytes()).await {
            return Err(
                if matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ) {
                    Exchange::ClosedBeforeResponse
                } else {
                    Exchange::Failed(e.into())
                },
            );
        }

        // Head: read in small steps until the blank line; the first byte within
        // --first-byte-timeout, then everything at --min-rate.
        let mut pace = Pace::new(self.timeouts);
        self.head.clear();
        let mut searched: usize = 0;
        let head_end = loop {
            let start = searched.saturating_sub(3);
            if let Some(i) = find(&self.head[start..], b"\r\n\r\n") {
                break start + i + 4;
            }
            searched = self.head.len();
            if self.head.len() > MAX_HEADER {
                return Err(Exchange::Failed(HttpError::Protocol("header too large")));
            }
            let head = &mut self.head;
            let n = match pace
                .read(stream, HEADER_STEP, |b| head.extend_from_slice(b))
                .await
            {
                Ok(n) => n,
                Err(Paced::Late(e)) => return Err(Exchange::Failed(e)),
                Err(Paced::Io(e))
                    if self.head.is_empty()
                        && matches!(
                            e.kind(),
                            io::ErrorKind::ConnectionReset
                                | io::ErrorKind::BrokenPipe
                                | io::ErrorKind::UnexpectedEof
                        ) =>
                {
                    return Err(Exchange::ClosedBeforeResponse)
                }
                Err(Paced::Io(e)) => return Err(Exchange::Failed(e.into())),
            };
            if n == 0 {
                return Err(if self.head.is_empty() {
                    Exchange::ClosedBeforeResponse
                } else {
                    Exchange::Failed(HttpError::Protocol("connection closed inside the header"))
                });
            }
        };
        let head = parse_head(&self.head[..head_end]).map_err(Exchange::Failed)?;
        let mut body = Framing::for_head(&head);
        let ok = (200..300).contains(&head.status);
        let limit = sink.limit();
        if head.content_length.is_some_and(|n| n > limit) {
            self.conn = None;
            return Err(Exchange::Failed(HttpError::TooLarge(limit)));
        }
        // Read back between reads while `deliver` holds it (an atomic: the future is Send).
        let total = AtomicU64::new(0);
        let mut deliver = |b: &[u8]| {
            // Past the limit nothing more is kept; the caller turns it into TooLarge.
            let before = total.fetch_add(b.len() as u64, Relaxed);
            let room = limit.saturating_sub(before).min(b.len() as u64) as usize;
            let b = &b[..room];
            match sink {
                Sink::Collect(v, _) if ok => v.extend_from_slice(b),
                Sink::Count(c, _) => {
                    c.fetch_add(b.len() as u64, Relaxed);
                }
                Sink::Collect(..) => {}
            }
        };
        let too_large = |conn: &mut Option<(String, Conn)>| {
            *conn = None;
            Err(Exchange::Failed(HttpError::TooLarge(limit)))
        };
        let leftover = self.head.split_off(head_end);
        body.feed(&leftover, &mut deliver)
            .map_err(Exchange::Failed)?;
        if self.head.capacity() > 2 * HEADER_STEP {
            self.head = Vec::new();
        }
        if total.load(Relaxed) > limit {
            return too_large(&mut self.conn);
        }
        while !body.done() {
            let mut err = None;
            let n = match pace
                .read(stream, SCRATCH, |b| {
                    if let Err(e) = body.feed(b, &mut deliver) {
                        err = Some(e);
                    }
                })
                .await
            {
                Ok(n) => n,
                Err(Paced::Late(e)) => return Err(Exchange::Failed(e)),
                Err(Paced::Io(e)) => return Err(Exchange::Failed(e.into())),
            };
            if let Some(e) = err {
                return Err(Exchange::Failed(e));
            }
            if total.load(Relaxed) > limit {
                return too_large(&mut self.conn);
            }
            if n == 0 {
                if matches!(body, Framing::UntilClose) {
                    break;
                }
                return Err(Exchange::Failed(HttpError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside the body",
                ))));
            }
        }
        if head.close || matches!(body, Framing::UntilClose) {
            self.conn = None;
        }
        if ok {
            Ok(total.load(Relaxed))
        } else if let (true, Some(location)) = (is_redirect(head.status), head.location) {
            Err(Exchange::Failed(HttpError::Redirect {
                status: head.status,
                location,
            }))
        } else {
            Err(Exchange::Failed(HttpError::Status(head.status)))
        }
    }
}

enum Exchange {
    ClosedBeforeResponse,
    Failed(HttpError),
}

/// Why a paced read failed.
enum Paced {
    Io(io::Error),
    /// First byte too late, or the transfer below --min-rate.
    Late(HttpError),
}

/// Enforces --first-byte-timeout and --min-rate over the reads of one response.
struct Pace {
    timeouts: Timeouts,
    /// When the request was sent.
    sent: Instant,
    /// Start of the current rate window (None until the first byte).
    window_start: Option<Instant>,
    window_bytes: u64,
}

impl Pace {
    fn new(timeouts: Timeouts) -> Pace {
        Pace {
            timeouts,
            sent: Instant::now(),
            window_start: None,
            window_bytes: 0,
        }
    }

    /// Judge the window that ended at `now` (if one did) and start the next.
    fn judge(&mut self, now: Instant) -> Result<(), HttpError> {
        let Some(start) = self.window_start else {
            return Ok(());
        };
        if self.timeouts.min_rate == 0 || now < start + RATE_WINDOW {
            return Ok(());
        }
        let need = (self.timeouts.min_rate as f64 * RATE_WINDOW.as_secs_f64()) as u64;
        if self.window_bytes < need {
            return Err(HttpError::TooSlow {
                got: self.window_bytes,
                window: RATE_WINDOW,
                min_rate: self.timeouts.min_rate,
            });
        }
        self.window_start = Some(now);
        self.window_bytes = 0;
        Ok(())
    }

    /// One `read_some`, bounded by the first-byte deadline or the end of the rate window.
    async fn read(
        &mut self,
        stream: &mut Conn,
        max: usize,
        mut f: impl FnMut(&[u8]),
    ) -> Result<usize, Paced> {
        loop {
            let deadline = match self.window_start {
                None => Some(self.sent + self.timeouts.first_byte),
                Some(start) if self.timeouts.min_rate > 0 => Some(start + RATE_WINDOW),
                Some(_) => None,
            };
            let read = read_some(stream, max, &mut f);
            let res = match deadline {
                Some(d) => tokio::time::timeout_at(d, read).await.ok(),
                None => Some(read.await),
            };
            let now = Instant::now();
            match res {
                Some(Ok(n)) => {
                    if self.window_start.is_none() && n > 0 {
                        self.window_start = Some(now);
                    }
                    self.window_bytes += n as u64;
                    self.judge(now).map_err(Paced::Late)?;
                    return Ok(n);
                }
                Some(Err(e)) => return Err(Paced::Io(e)),
                None if self.window_start.is_none() => {
                    return Err(Paced::Late(HttpError::FirstByteTimeout(
                        self.timeouts.first_byte,
                    )))
                }
                None => self.judge(now).map_err(Paced::Late)?,
            }
        }
    }
}

/// Read up to `max` bytes once; `f` sees the bytes. Plain: through the thread's scratch
/// buffer. TLS: straight from rustls' plaintext buffer (no copy, no buffer of our own); a peer
/// that closes without close_notify is an end of stream like a plain close.
async fn read_some(stream: &mut Conn, max: usize, mut f: impl FnMut(&[u8])) -> io::Result<usize> {
    let stream = match stream {
        Conn::Plain(s) => s,
        Conn::Tls(s) => {
            let mut s = Pin::new(&mut **s);
            return std::future::poll_fn(|cx| {
                let n = match s.as_mut().poll_fill_buf(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(data)) => {
                        let n = data.len().min(max);
                        f(&data[..n]);
                        n
                    }
                };
                s.as_mut().consume(n);
                Poll::Ready(Ok(n))
            })
            .await;
        }
    };
    loop {
        stream.readable().await?;
        let r = SCRATCH_BUF.with(|s| {
            let mut s = s.borrow_mut();
            let lim = max.min(s.len());
            match stream.try_read(&mut s[..lim]) {
                Ok(n) => {
                    f(&s[..n]);
                    Ok(Some(n))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                Err(e) => Err(e),
            }
        });
        if let Some(n) = r? {
            return Ok(n);
        }
    }
}

/// A response decoded from bytes by [`decode_response`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub status: u16,
    /// Body bytes delivered (at most the limit).
    pub body_len: u64,
    /// Whether the connection could carry another request.
    pub keep_alive: bool,
}

/// Decode one whole response from `raw` with the same head parser, framing and size limit
/// as [`Client::get`], fed in `step`-byte reads (as the socket delivers them). The end of
/// `raw` is the server closing the connection. For the fuzz target `swarm_http` and tests.
pub fn decode_response(raw: &[u8], step: usize, limit: u64) -> Result<Decoded, HttpError> {
    let step = step.max(1);
    let mut head_buf: Vec<u8> = Vec::new();
    let mut rest = raw;
    let mut searched = 0usize;
    let head_end = loop {
        let start = searched.saturating_sub(3);
        if let Some(i) = find(&head_buf[start..], b"\r\n\r\n") {
            break start + i + 4;
        }
        searched = head_buf.len();
        if head_buf.len() > MAX_HEADER {
            return Err(HttpError::Protocol("header too large"));
        }
        if rest.is_empty() {
            return Err(HttpError::Protocol("connection closed inside the header"));
        }
        let n = step.min(HEADER_STEP).min(rest.len());
        head_buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
    };
    let head = parse_head(&head_buf[..head_end])?;
    let mut body = Framing::for_head(&head);
    if head.content_length.is_some_and(|n| n > limit) {
        return Err(HttpError::TooLarge(limit));
    }
    let total = std::cell::Cell::new(0u64);
    let mut deliver = |b: &[u8]| total.set(total.get() + b.len() as u64);
    body.feed(&head_buf[head_end..], &mut deliver)?;
    while !body.done() {
        if total.get() > limit {
            return Err(HttpError::TooLarge(limit));
        }
        if rest.is_empty() {
            if matches!(body, Framing::UntilClose) {
                break;
            }
            return Err(HttpError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside the body",
            )));
        }
        let n = step.min(rest.len());
        body.feed(&rest[..n], &mut deliver)?;
        rest = &rest[n..];
    }
    if total.get() > limit {
        return Err(HttpError::TooLarge(limit));
    }
    Ok(Decoded {
        status: head.status,
        body_len: total.get(),
        keep_alive: !head.close && !matches!(body, Framing::UntilClose),
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

struct Head {
    status: u16,
    content_length: Option<u64>,
    chunked: bool,
    close: bool,
    location: Option<String>,
}

/// The statuses a player follows to their Location.
fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

fn parse_head(raw: &[u8]) -> Result<Head, HttpError> {
    let text = std::str::from_utf8(raw).map_err(|_| HttpError::Protocol("non-UTF-8 header"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Protocol("not an HTTP/1.x status line"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or(HttpError::Protocol("bad status code"))?;
    let mut head = Head {
        status,
        content_length: None,
        chunked: false,
        close: version == "HTTP/1.0",
        location: None,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            head.content_length = Some(
                value
                    .parse()
                    .map_err(|_| HttpError::Protocol("bad Content-Length"))?,
            );
        } else if name.eq_ignore_ascii_case("location") {
            head.location = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            if v.contains("close") {
                head.close = true;
            } else if v.contains("keep-alive") {
                head.close = false;
            }
        }
    }
    Ok(head)
}

/// How the end of a body is found.
enum Framing {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
}

impl Framing {
    /// RFC 9112 §6.3: no body for 1xx, 204 and 304; chunked wins over Content-Length.
    fn for_head(head: &Head) -> Framing {
        if head.status < 200 || head.status == 204 || head.status == 304 {
            Framing::Length(0)
        } else if head.chunked {
            Framing::Chunked(Chunked::default())
        } else if let Some(n) = head.content_length {
            Framing::Length(n)
        } else {
            Framing::UntilClose
        }
    }

    fn done(&self) -> bool {
        match self {
            Framing::Length(n) => *n == 0,
            Framing::Chunked(c) => matches!(c.state, ChunkState::Done),
            Framing::UntilClose => false,
        }
    }

    fn feed(&mut self, mut b: &[u8], out: &mut impl FnMut(&[u8])) -> Result<(), HttpError> {
        match self {
            Framing::Length(n) => {
                let take = (*n).min(b.len() as u64) as usize;
                out(&b[..take]);
                *n -= take as u64;
                Ok(())
            }
            Framing::UntilClose => {
                out(b);
                Ok(())
            }
            Framing::Chunked(c) => {
                while !b.is_empty() {
                    let used = c.step(b, out)?;
                    b = &b[used..];
                    if matches!(c.state, ChunkState::Done) {
                        break;
                    }
                }
                Ok(())
            }
        }
    }
}

#[derive(Default)]
struct Chunked {
    state: ChunkState,
}

#[derive(Default)]
enum ChunkState {
    #[default]
    SizeStart,
    Size {
        n: u64,
        ext: bool,
    },
    Data(u64),
    DataEnd,
    Trailer {
        line_len: usize,
    },
    Done,
}

impl Chunked {
    /// Consume some of `b`; returns how many bytes were used (at least one).
    fn step(&mut self, b: &[u8], out: &mut impl FnMut(&[u8])) -> Result<usize, HttpError> {
        match &mut self.state {
            ChunkState::SizeStart => {
                self.state = ChunkState::Size { n: 0, ext: false };
                Ok(0)
            }
            ChunkState::Size { n, ext } => {
                let c = b[0];
                if c == b'\n' {
                    self.state = if *n == 0 {
                        ChunkState::Trailer { line_len: 0 }
                    } else {
                        ChunkState::Data(*n)
                    };
                } else if c == b'\r' || *ext {
                } else if c == b';' || c == b' ' || c == b'\t' {
                    *ext = true;
                } else {
                    let d = (c as char)
                        .to_digit(16)
                        .ok_or(HttpError::Protocol("bad chunk size"))?;
                    *n = n
                        .checked_mul(16)
                        .and_then(|v| v.checked_add(d as u64))
                        .ok_or(HttpError::Protocol("chunk size overflow"))?;
                }
                Ok(1)
            }
            ChunkState::Data(n) => {
                let take = (*n).min(b.len() as u64) as usize;
                out(&b[..take]);
                *n -= take as u64;
                if *n == 0 {
                    self.state = ChunkState::DataEnd;
                }
                Ok(take)
            }
            ChunkState::DataEnd => {
                if b[0] == b'\n' {
                    self.state = ChunkState::SizeStart;
                } else if b[0] != b'\r' {
                    return Err(HttpError::Protocol("missing CRLF after chunk"));
                }
                Ok(1)
            }
            ChunkState::Trailer { line_len } => {
                match b[0] {
                    b'\r' => {}
                    b'\n' if *line_len == 0 => self.state = ChunkState::Done,
                    b'\n' => *line_len = 0,
                    _ => *line_len += 1,
                }
                Ok(1)
            }
            ChunkState::Done => Ok(b.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_join() {
        let u = Url::parse("http://127.0.0.1:17080/master.m3u8").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 17080, "/master.m3u8")
        );
        assert_eq!(
            u.join("720p/stream.m3u8").unwrap().to_string(),
            "http://127.0.0.1:17080/720p/stream.m3u8"
        );
        let v = Url::parse("http://h/a/b/stream.m3u8?x=1").unwrap();
        assert_eq!(v.join("seg00001.ts").unwrap().path, "/a/b/seg00001.ts");
        assert_eq!(v.join("../c/s.ts").unwrap().path, "/a/c/s.ts");
        assert_eq!(v.join("/root.ts").unwrap().path, "/root.ts");
        assert_eq!(v.join("http://o:81/x").unwrap().port, 81);
        assert_eq!(Url::parse("http://h").unwrap().path, "/");
        let t = Url::parse("https://h/a/s.m3u8").unwrap();
        assert_eq!((t.tls, t.port), (true, 443));
        assert_eq!(
            t.join("//cdn/x.ts").unwrap().to_string(),
            "https://cdn:443/x.ts"
        );
        assert_eq!(
            t.join("s1.ts").unwrap().to_string(),
            "https://h:443/a/s1.ts"
        );
        assert!(!t.join("http://o/x").unwrap().tls);
        assert!(Url::parse("ftp://h/").is_err());
        // A multi-byte character across the length of "http://" is a relative reference.
        assert_eq!(
            v.join("seg0\u{fffd}1.ts").unwrap().path,
            "/a/b/seg0\u{fffd}1.ts"
        );
    }

    #[test]
    fn bodies_over_the_limit_are_too_large() {
        // Declared too large: refused from the head alone.
        let r = decode_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n",
            7,
            1 << 20,
        );
        assert!(matches!(r, Err(HttpError::TooLarge(_))), "{r:?}");
        // Read until close, or chunked, past the limit.
        let mut raw = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        raw.extend(std::iter::repeat_n(b'#', 5000));
        let r = decode_response(&raw, 100, 4096);
        assert!(matches!(r, Err(HttpError::TooLarge(4096))), "{r:?}");
        let mut raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..10 {
            raw.extend_from_slice(b"400\r\n");
            raw.extend(std::iter::repeat_n(b'G', 0x400));
            raw.extend_from_slice(b"\r\n");
        }
        let r = decode_response(&raw, 333, 4096);
        assert!(matches!(r, Err(HttpError::TooLarge(4096))), "{r:?}");
        // At the limit is fine.
        let r = decode_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", 1, 3).unwrap();
        assert_eq!((r.status, r.body_len, r.keep_alive), (200, 3, true));
    }

    #[test]
    fn chunked_bodies_decode() {
        let mut f = Framing::Chunked(Chunked::default());
        let mut got = Vec::new();
        let raw = b"4;x=y\r\nWiki\r\n5\r\npedia\r\n0\r\nT: v\r\n\r\n";
        // Feed byte by byte to exercise every state boundary.
        for b in raw.iter() {
            f.feed(std::slice::from_ref(b), &mut |d: &[u8]| {
                got.extend_from_slice(d)
            })
            .unwrap();
        }
        assert!(f.done());
        assert_eq!(got, b"Wikipedia");
    }
}
