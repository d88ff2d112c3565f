//! A small HTTP/1.1 server written for this one job: keep-alive, pipelining-safe request
//! parsing (httparse), GET/HEAD/OPTIONS, single byte ranges on segments, and responses written
//! as one `writev` of a header buffer plus a shared `Bytes` body (no per-request body copy).
//!
//! With `--tls-cert`/`--tls-key` the same connection code runs over a rustls stream (it is
//! generic over [`Transport`]; the plain `TcpStream` instance is the one it always was, with
//! `sendfile(2)`); TLS handshakes must finish within `--header-timeout`.

use std::borrow::Cow;
use std::cell::RefCell;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::body::{send_file, send_timed_out, Body, FileRange};
use crate::config::AccessLog;
use crate::metrics::{CloseReason, Kind, Metrics};
use crate::stream::{Resource, Stream};

pub struct App {
    /// Some: serve HTTPS (`--tls-cert`/`--tls-key`).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub stream: Stream,
    pub metrics: Metrics,
    pub access_log: Option<mpsc::Sender<String>>,
    /// Built once per process (the App lives until exit), so responses can borrow it.
    playlist_cache_control: &'static str,
    pub limits: Limits,
}

/// What a connection may cost the server (see `docs/hardening.md`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// A request header must be complete this long after the accept, or after the first byte
    /// of a later request.
    pub header: Duration,
    /// Idle time allowed between requests on a keep-alive connection.
    pub keepalive: Duration,
    /// Time a response may make no progress (the client stopped reading).
    pub send: Duration,
    /// Open client connections beyond which new ones are refused.
    pub max_connections: u64,
}

/// The whole answer to a connection refused at the connection limit.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nServer: hls-origin\r\nContent-Length: 0\r\nRetry-After: 1\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n";

const CORS: &str = "Access-Control-Allow-Origin: *\r\nAccess-Control-Expose-Headers: Content-Length, Content-Range, Accept-Ranges, Date\r\n";
const CC_SEGMENT: &str = "public, max-age=60, immutable, no-transform";
const CC_MASTER: &str = "public, max-age=5, stale-while-revalidate=10, no-transform";
const CC_NONE: &str = "no-store";
const MIME_M3U8: &str = "application/vnd.apple.mpegurl";
const MIME_TS: &str = "video/mp2t";
const MIME_TEXT: &str = "text/plain; charset=utf-8";
const MIME_PROM: &str = "text/plain; version=0.0.4; charset=utf-8";
const MAX_HEAD: usize = 16 * 1024;

impl App {
    pub fn new(
        stream: Stream,
        access_log: Option<mpsc::Sender<String>>,
        max_connections: u64,
    ) -> Self {
        let d = stream.settings.segment_duration;
        // delta-seconds are integers: half a segment rounded down (at least 1), a segment rounded up.
        let max_age = ((d / 2.0).floor() as u64).max(1);
        let swr = (d.ceil() as u64).max(1);
        let playlist_cache_control: &'static str = Box::leak(
            format!("public, max-age={max_age}, stale-while-revalidate={swr}, no-transform")
                .into_boxed_str(),
        );
        let limits = Limits {
            header: Duration::from_secs_f64(stream.settings.header_timeout),
            keepalive: Duration::from_secs_f64(stream.settings.keepalive_timeout),
            send: Duration::from_secs_f64(stream.settings.send_timeout),
            max_connections,
        };
        let metrics = Metrics::default();
        metrics.max_connections.store(max_connections, Relaxed);
        App {
            tls: None,
            stream,
            metrics,
            access_log,
            playlist_cache_control,
            limits,
        }
    }
}

/// The worker threads as the accept loops see them: how many connections each holds, and
/// where to hand it a connection another worker accepted.
pub struct Workers {
    live: Vec<AtomicUsize>,
    inbox: Vec<mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr)>>,
}

/// What one worker receives connections on that others accepted for it.
pub type Inbox = mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>;

impl Workers {
    /// `n` workers, and the inbox of each (in worker order).
    pub fn new(n: usize) -> (Arc<Workers>, Vec<Inbox>) {
        let (inbox, rx): (Vec<_>, Vec<_>) = (0..n).map(|_| mpsc::unbounded_channel()).unzip();
        let live = (0..n).map(|_| AtomicUsize::new(0)).collect();
        (Arc::new(Workers { live, inbox }), rx)
    }

    /// The worker that should serve the next connection `me` accepts: `me` while it holds no
    /// more than the least-loaded worker, else that one.
    fn pick(&self, me: usize) -> usize {
        let mine = self.live[me].load(Relaxed);
        let (least, count) = self
            .live
            .iter()
            .map(|c| c.load(Relaxed))
            .enumerate()
            .min_by_key(|&(_, c)| c)
            .unwrap_or((me, mine));
        if mine <= count {
            me
        } else {
            least
        }
    }
}

/// Accept loop of one worker. All workers wait on the same listening socket and accept as fast
/// as connections arrive; a worker holding more connections than the least-loaded one hands
/// the new connection to that worker (through its inbox) instead of serving it, so long-lived
/// keep-alive connections end up spread evenly over the cores (there is no work stealing
/// between the single-threaded workers). The accept itself never waits for the balance: a
/// burst of a thousand connections is taken at the speed of `accept(2)` (docs/origin-performance.md).
///
/// Beyond `--max-connections` open connections a new one is answered 503 without waiting
/// (one non-blocking write) and closed at once, so a flood of idle peers costs no descriptor
/// for longer than the accept.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    me: usize,
    workers: Arc<Workers>,
    mut inbox: Inbox,
) {
    loop {
        let (sock, peer) = tokio::select! {
            biased;
            Some((sock, peer)) = inbox.recv() => match TcpStream::from_std(sock) {
                Ok(sock) => {
                    start(sock, peer, &app, me, &workers);
                    continue;
                }
                Err(e) => {
                    // Registering with this worker's reactor failed: the connection is lost.
                    tracing::warn!(%peer, "cannot take over a connection: {e}");
                    app.metrics.open.fetch_sub(1, Relaxed);
                    workers.live[me].fetch_sub(1, Relaxed);
                    continue;
                }
            },
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    app.metrics.accept_errors.fetch_add(1, Relaxed);
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        app.metrics.connections.fetch_add(1, Relaxed);
        if app.metrics.open.fetch_add(1, Relaxed) >= app.limits.max_connections {
            app.metrics.open.fetch_sub(1, Relaxed);
            app.metrics.refused.fetch_add(1, Relaxed);
            let _ = sock.try_write(REFUSED);
            tracing::debug!(%peer, "refused: --max-connections reached");
            continue;
        }
        let _ = sock.set_nodelay(true);
        let to = workers.pick(me);
        workers.live[to].fetch_add(1, Relaxed);
        if to == me {
            start(sock, peer, &app, me, &workers);
            continue;
        }
        // Leave this worker's reactor and join the other's: one epoll_ctl each side.
        let handed = sock
            .into_std()
            .map_err(|e| e.to_string())
            .and_then(|s| workers.inbox[to].send((s, peer)).map_err(|e| e.to_string()));
        if let Err(e) = handed {
            tracing::warn!(%peer, "cannot hand a connection to worker {to}: {e}");
            app.metrics.open.fetch_sub(1, Relaxed);
            workers.live[to].fetch_sub(1, Relaxed);
        }
    }
}

/// Serve `sock` on this worker (already counted in `workers.live[me]` and `metrics.open`).
fn start(sock: TcpStream, peer: SocketAddr, app: &Arc<App>, me: usize, workers: &Arc<Workers>) {
    let app = app.clone();
    let workers = workers.clone();
    tokio::spawn(async move {
        let served = match &app.tls {
            None => connection(sock, peer, &app).await,
            Some(acceptor) => {
                let hs = tokio::time::timeout(app.limits.header, acceptor.accept(sock));
                match hs.await {
                    Ok(Ok(tls)) => connection(tls, peer, &app).await,
                    Ok(Err(e)) => {
                        app.metrics.tls_handshake_errors.fetch_add(1, Relaxed);
                        tracing::debug!(%peer, "TLS handshake failed: {e}");
                        Ok(None)
                    }
                    Err(_) => Ok(Some(CloseReason::Header)),
                }
            }
        };
        match served {
            Ok(Some(reason)) => {
                app.metrics.closed_by(reason);
                tracing::trace!(%peer, reason = reason.name(), "connection closed");
            }
            Ok(None) => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                app.metrics.closed_by(CloseReason::Send);
                tracing::trace!(%peer, "connection closed: {e}");
            }
            Err(e) => tracing::trace!(%peer, "connection ended: {e}"),
        }
        app.metrics.open.fetch_sub(1, Relaxed);
        workers.live[me].fetch_sub(1, Relaxed);
    });
}

struct Response {
    status: u16,
    kind: Kind,
    content_type: &'static str,
    cache_control: Option<&'static str>,
    body: Body,
    /// Extra header lines, each ending in CRLF (static but for a Content-Range).
    extra: Cow<'static, str>,
    head_only: bool,
    no_length: bool,
}

impl Response {
    fn new(status: u16, kind: Kind, content_type: &'static str, body: Bytes) -> Self {
        Self::with_body(status, kind, content_type, Body::Mem(body))
    }
    fn with_body(status: u16, kind: Kind, content_type: &'static str, body: Body) -> Self {
        Response {
            status,
            kind,
            content_type,
            cache_control: Some(CC_NONE),
            body,
            extra: Cow::Borrowed(""),
            head_only: false,
            no_length: false,
        }
    }
    fn text(status: u16, kind: Kind, msg: &'static str) -> Self {
        Self::new(status, kind, MIME_TEXT, Bytes::from_static(msg.as_bytes()))
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    }
}

/// What a connection runs over: plain TCP (segments by `sendfile(2)`) or TLS.
pub trait Transport: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {
    /// The socket itself when bytes go to it unencrypted (then segment bodies go out by
    /// `sendfile(2)` and nothing waits in a user-space buffer); None for TLS.
    fn plain(&self) -> Option<&TcpStream>;
}

impl Transport for TcpStream {
    fn plain(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

impl Transport for tokio_rustls::server::TlsStream<TcpStream> {
    fn plain(&self) -> Option<&TcpStream> {
        None
    }
}

/// Serve one connection until the peer closes it, it asks to close, or a limit closes it
/// (`Ok(Some(reason))`; a send timeout is an `Err` of kind `TimedOut`).
async fn connection<S: Transport>(
    mut sock: S,
    peer: SocketAddr,
    app: &App,
) -> std::io::Result<Option<CloseReason>> {
    let mut buf = vec![0u8; 4096];
    let mut filled = 0;
    let mut head = Vec::with_capacity(512);
    let limits = app.limits;
    // When the request being read began: the accept for the first one, the first byte for
    // later ones; None while idle between requests (then `idle_since` counts).
    let mut request_began = Some(Instant::now());
    let mut idle_since = Instant::now();
    loop {
        // Serve every complete request already buffered (pipelining), then read more.
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            let parsed = req.parse(&buf[..filled]);
            let started = Instant::now();
            let (resp, consumed, close, line) = match parsed {
                Ok(httparse::Status::Complete(n)) => {
                    let close = wants_close(&req);
                    let has_body = req.headers.iter().any(|h| {
                        (h.name.eq_ignore_ascii_case("content-length") && h.value != b"0")
                            || h.name.eq_ignore_ascii_case("transfer-encoding")
                    });
                    app.metrics.begin();
                    let resp = handle(app, &req);
                    let line = access_line(app, &req, peer, resp.kind);
                    // A request body we do not read would be taken for the next request: close.
                    (resp, n, close || has_body, line)
                }
                Ok(httparse::Status::Partial) if filled < MAX_HEAD => break,
                Ok(httparse::Status::Partial) => {
                    app.metrics.begin();
                    (
                        Response::text(431, Kind::Other, "Request Header Fields Too Large\n"),
                        filled,
                        true,
                        None,
                    )
                }
                Err(_) => {
                    app.metrics.begin();
                    (
                        Response::text(400, Kind::Other, "Bad Request\n"),
                        filled,
                        true,
                        None,
                    )
                }
            };
            let sent = write_response(&mut sock, &mut head, &resp, close, limits.send).await;
            let bytes = if resp.head_only {
                0
            } else {
                resp.body.len() as u64
            };
            // One clock read ends this request and starts the wait for the next.
            let done = Instant::now();
            let took = done - started;
            app.metrics.end(resp.kind, resp.status, bytes, took);
            // A worker busy for a while lets the rest of the machine run (src/cpu_share.rs).
            crate::cpu_share::answered(done);
            if let (Some(line), Some(tx)) = (line, &app.access_log) {
                let line = format!("{line} {} {bytes} {}us", resp.status, took.as_micros());
                if tx.try_send(line).is_err() {
                    app.metrics.access_log_dropped.fetch_add(1, Relaxed);
                }
            }
            sent?;
            if close {
                let _ = tokio::time::timeout(limits.send, sock.shutdown()).await;
                return Ok(None);
            }
            buf.copy_within(consumed..filled, 0);
            filled -= consumed;
            // The next request starts now: its bytes are already here, or it is awaited.
            if filled == 0 {
                request_began = None;
                idle_since = done;
                break;
            }
            request_began = Some(done);
        }
        if filled == buf.len() {
            buf.resize((buf.len() * 2).min(MAX_HEAD + 4096), 0);
        }
        // A request header has --header-timeout to arrive whole; an idle keep-alive
        // connection --keepalive-timeout until the next request begins.
        let (deadline, reason) = match request_began {
            Some(t) => (t + limits.header, CloseReason::Header),
            None => (idle_since + limits.keepalive, CloseReason::Keepalive),
        };
        let read = sock.read(&mut buf[filled..]);
        let n = match tokio::time::timeout_at(deadline.into(), read).await {
            Ok(n) => n?,
            Err(_) => return Ok(Some(reason)),
        };
        if n == 0 {
            return Ok(None);
        }
        if request_began.is_none() {
            request_began = Some(Instant::now());
        }
        filled += n;
    }
}

fn wants_close(req: &httparse::Request) -> bool {
    let conn = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("connection"))
        .map(|h| h.value);
    let has = |tok: &[u8]| {
        conn.is_some_and(|v| {
            v.split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(tok))
        })
    };
    if req.version == Some(0) {
        !has(b"keep-alive")
    } else {
        has(b"close")
    }
}

fn access_line(app: &App, req: &httparse::Request, peer: SocketAddr, kind: Kind) -> Option<String> {
    let mode = app.stream.settings.access_log;
    if app.access_log.is_none()
        || mode == AccessLog::Off
        || (mode == AccessLog::Segments && kind != Kind::Segment)
    {
        return None;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i128;
    Some(format!(
        "{} {} \"{} {} HTTP/1.{}\"",
        crate::stream::rfc3339_ms(now),
        peer.ip(),
        req.method.unwrap_or("-"),
        req.path.unwrap_or("-").escape_debug(),
        req.version.unwrap_or(1)
    ))
}

/// What a path names, resolved once per request.
enum Target<'a> {
    Health,
    Metrics,
    Stream(Resource<'a>),
    Unknown,
}

impl Target<'_> {
    fn kind(&self) -> Kind {
        match self {
            Target::Health => Kind::Health,
            Target::Metrics => Kind::Metrics,
            Target::Stream(Resource::Master) => Kind::Master,
            Target::Stream(Resource::Playlist(_)) => Kind::Playlist,
            Target::Stream(Resource::Segment(..)) => Kind::Segment,
            Target::Unknown => Kind::Other,
        }
    }
}

fn handle(app: &App, req: &httparse::Request) -> Response {
    let method = req.method.unwrap_or("");
    let raw_path = req.path.unwrap_or("/");
    let path = raw_path.split(['?', '#']).next().unwrap_or("/");
    let target = match path {
        "/health" => Target::Health,
        "/metrics" => Target::Metrics,
        _ => app
            .stream
            .route(path)
            .map_or(Target::Unknown, Target::Stream),
    };
    let kind = target.kind();
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        "OPTIONS" => {
            let mut r = Response::new(204, kind, "", Bytes::new());
            r.cache_control = None;
            r.no_length = true;
            r.extra = Cow::Borrowed("Allow: GET, HEAD, OPTIONS\r\nAccess-Control-Allow-Methods: GET, HEAD, OPTIONS\r\nAccess-Control-Allow-Headers: Range\r\nAccess-Control-Max-Age: 86400\r\n");
            return r;
        }
        _ => {
            let mut r = Response::text(405, kind, "Method Not Allowed\n");
            r.extra = Cow::Borrowed("Allow: GET, HEAD, OPTIONS\r\n");
            return r;
        }
    };
    let mut r = match target {
        Target::Health => Response::text(200, kind, "OK\n"),
        Target::Metrics => {
            let text = app.metrics.render(&app.stream);
            Response::new(200, kind, MIME_PROM, Bytes::from(text))
        }
        Target::Stream(Resource::Master) => {
            let mut r = Response::new(200, kind, MIME_M3U8, app.stream.master.clone());
            r.cache_control = Some(CC_MASTER);
            r
        }
        Target::Stream(Resource::Playlist(v)) => {
            let mut r = Response::new(200, kind, MIME_M3U8, app.stream.playlist(v));
            r.cache_control = Some(app.playlist_cache_control);
            r
        }
        Target::Stream(Resource::Segment(v, seq)) => match app.stream.segment(v, seq) {
            Some(body) => segment_response(req, body),
            None => Response::text(404, kind, "Not Found\n"),
        },
        Target::Unknown => Response::text(404, kind, "Not Found\n"),
    };
    r.head_only = head_only;
    r
}

fn segment_response(req: &httparse::Request, body: Body) -> Response {
    let len = body.len() as u64;
    let range = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("range"))
        .map(|h| h.value);
    let mut r = match range.map(|v| parse_range(v, len)) {
        None | Some(RangeSpec::Ignore) => {
            let mut r = Response::with_body(200, Kind::Segment, MIME_TS, body);
            // Static: a whole-segment response allocates nothing for its header.
            r.extra = Cow::Borrowed("Accept-Ranges: bytes\r\n");
            r
        }
        Some(RangeSpec::Unsatisfiable) => {
            let mut r = Response::text(416, Kind::Segment, "Range Not Satisfiable\n");
            r.extra = Cow::Owned(format!("Content-Range: bytes */{len}\r\n"));
            return r;
        }
        Some(RangeSpec::Range(a, b)) => {
            let part = body.slice(a as usize, (b - a + 1) as usize);
            let mut r = Response::with_body(206, Kind::Segment, MIME_TS, part);
            r.extra = Cow::Owned(format!(
                "Content-Range: bytes {a}-{b}/{len}\r\nAccept-Ranges: bytes\r\n"
            ));
            r
        }
    };
    r.cache_control = Some(CC_SEGMENT);
    r
}

#[derive(Debug, PartialEq)]
enum RangeSpec {
    Ignore,
    Unsatisfiable,
    Range(u64, u64),
}

/// One `bytes=` range (RFC 9110 §14); several ranges or an unknown unit are ignored (200).
fn parse_range(v: &[u8], len: u64) -> RangeSpec {
    let Ok(s) = std::str::from_utf8(v) else {
        return RangeSpec::Ignore;
    };
    let Some(spec) = s.trim().strip_prefix("bytes=") else {
        return RangeSpec::Ignore;
    };
    if spec.contains(',') {
        return RangeSpec::Ignore;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeSpec::Ignore;
    };
    let num = |x: &str| x.trim().parse::<u64>().ok();
    match (a.trim().is_empty(), b.trim().is_empty()) {
        (true, true) => RangeSpec::Ignore,
        (true, false) => match num(b) {
            Some(0) => RangeSpec::Unsatisfiable,
            Some(n) if len > 0 => RangeSpec::Range(len.saturating_sub(n), len - 1),
            Some(_) => RangeSpec::Unsatisfiable,
            None => RangeSpec::Ignore,
        },
        (false, open) => {
            let Some(first) = num(a) else {
                return RangeSpec::Ignore;
            };
            let last = if open {
                len.saturating_sub(1)
            } else {
                match num(b) {
                    Some(l) if l >= first => l.min(len.saturating_sub(1)),
                    _ => return RangeSpec::Ignore,
                }
            };
            if first >= len {
                RangeSpec::Unsatisfiable
            } else {
                RangeSpec::Range(first, last)
            }
        }
    }
}

thread_local! {
    static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
}

/// The `Date` header value, formatted once per second per thread.
fn http_date(out: &mut Vec<u8>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != now || d.1.is_empty() {
            let days = (now / 86_400) as i64;
            let (y, m, day) = crate::stream::civil_from_days(days);
            let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
            let mon = [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ][m as usize - 1];
            let s = now % 86_400;
            d.1 = format!(
                "{wd}, {day:02} {mon} {y} {:02}:{:02}:{:02} GMT",
                s / 3600,
                s / 60 % 60,
                s % 60
            );
            d.0 = now;
        }
        out.extend_from_slice(d.1.as_bytes());
    });
}

async fn write_response<S: Transport>(
    sock: &mut S,
    head: &mut Vec<u8>,
    r: &Response,
    close: bool,
    send_timeout: Duration,
) -> std::io::Result<()> {
    use std::io::Write;
    head.clear();
    let _ = write!(
        head,
        "HTTP/1.1 {} {}\r\nServer: hls-origin\r\nDate: ",
        r.status,
        reason(r.status)
    );
    http_date(head);
    head.extend_from_slice(b"\r\n");
    if !r.content_type.is_empty() {
        let _ = write!(head, "Content-Type: {}\r\n", r.content_type);
    }
    if !r.no_length {
        let _ = write!(head, "Content-Length: {}\r\n", r.body.len());
    }
    if let Some(cc) = r.cache_control {
        let _ = write!(head, "Cache-Control: {cc}\r\n");
    }
    head.extend_from_slice(CORS.as_bytes());
    head.extend_from_slice(r.extra.as_bytes());
    head.extend_from_slice(if close {
        b"Connection: close\r\n\r\n"
    } else {
        b"Connection: keep-alive\r\n\r\n"
    });
    let body: &[u8] = match (&r.body, r.head_only) {
        (_, true) => &[],
        (Body::Mem(b), false) => b,
        (Body::File { file, off, len }, false) => {
            let part = FileRange {
                file,
                off: *off,
                len: *len,
            };
            match sock.plain() {
                Some(tcp) => send_file(tcp, head, part, send_timeout).await?,
                None => crate::tls::send_file(sock, head, part, send_timeout).await?,
            }
            return flush(sock, send_timeout).await;
        }
    };
    if body.len() <= 8192 {
        head.extend_from_slice(body);
        let (mut h, mut b) = (&head[..], &[][..]);
        write_progressing(sock, &mut h, &mut b, send_timeout).await?;
        return flush(sock, send_timeout).await;
    }
    let (mut h, mut b) = (&head[..], body);
    write_progressing(sock, &mut h, &mut b, send_timeout).await?;
    flush(sock, send_timeout).await
}

/// Push out what a buffering transport (TLS) still holds; nothing to do for plain TCP.
async fn flush<S: Transport>(sock: &mut S, send_timeout: Duration) -> std::io::Result<()> {
    if sock.plain().is_some() {
        return Ok(());
    }
    tokio::time::timeout(send_timeout, sock.flush())
        .await
        .map_err(|_| send_timed_out(send_timeout))?
}

/// Write `h` then `b` with `writev`, giving up with `TimedOut` when one write makes no
/// progress for `send_timeout` (nginx's `send_timeout`: between two successive writes).
async fn write_progressing<S: tokio::io::AsyncWrite + Unpin>(
    sock: &mut S,
    h: &mut &[u8],
    b: &mut &[u8],
    send_timeout: Duration,
) -> std::io::Result<()> {
    while !h.is_empty() || !b.is_empty() {
        let slices = [IoSlice::new(h), IoSlice::new(b)];
        let n = tokio::time::timeout(send_timeout, sock.write_vectored(&slices))
            .await
            .map_err(|_| send_timed_out(send_timeout))??;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let from_h = n.min(h.len());
        *h = &h[from_h..];
        *b = &b[n - from_h..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(b"bytes=0-99", 1000), RangeSpec::Range(0, 99));
        assert_eq!(parse_range(b"bytes=900-", 1000), RangeSpec::Range(900, 999));
        assert_eq!(parse_range(b"bytes=-100", 1000), RangeSpec::Range(900, 999));
        assert_eq!(
            parse_range(b"bytes=990-5000", 1000),
            RangeSpec::Range(990, 999)
        );
        assert_eq!(parse_range(b"bytes=1000-", 1000), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range(b"bytes=0-1,5-6", 1000), RangeSpec::Ignore);
        assert_eq!(parse_range(b"items=0-1", 1000), RangeSpec::Ignore);
        assert_eq!(parse_range(b"bytes=5-1", 1000), RangeSpec::Ignore);
    }

    #[test]
    fn a_worker_keeps_a_connection_while_it_is_among_the_least_loaded() {
        let (workers, _inboxes) = Workers::new(3);
        assert_eq!(workers.pick(0), 0);
        workers.live[0].store(2, Relaxed);
        workers.live[1].store(1, Relaxed);
        workers.live[2].store(2, Relaxed);
        assert_eq!(workers.pick(0), 1);
        assert_eq!(workers.pick(2), 1);
        assert_eq!(workers.pick(1), 1);
        workers.live[1].store(2, Relaxed);
        assert_eq!(workers.pick(0), 0);
    }

    /// Worker 0 accepts every connection (worker 1 listens on a socket nobody connects to):
    /// the hand-off still leaves them spread evenly, and the handed ones are served.
    #[test]
    fn connections_accepted_by_one_worker_are_spread_over_all() {
        use std::io::{Read, Write};
        let argv: Vec<String> = ["hls-origin", "--variants=360p:640x360:500k/550k/1000k:64k"]
            .map(String::from)
            .to_vec();
        let settings = crate::config::parse_from(&argv).unwrap().0.settings;
        let app = Arc::new(App::new(Stream::new(settings, None), None, 1000));
        let (workers, inboxes) = Workers::new(2);
        let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let quiet = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = busy.local_addr().unwrap();
        for ((me, inbox), listener) in inboxes.into_iter().enumerate().zip([busy, quiet]) {
            listener.set_nonblocking(true).unwrap();
            let (app, workers) = (app.clone(), workers.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let listener = TcpListener::from_std(listener).unwrap();
                    serve(listener, app, me, workers, inbox).await
                })
            });
        }
        let mut clients: Vec<std::net::TcpStream> = (0..10)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        for c in &mut clients {
            // A connection nobody serves fails the test rather than hanging it.
            c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut answer = [0u8; 512];
            let n = c.read(&mut answer).unwrap();
            assert!(answer[..n].starts_with(b"HTTP/1.1 200 OK\r\n"));
        }
        let live: Vec<usize> = workers.live.iter().map(|c| c.load(Relaxed)).collect();
        assert_eq!(live, [5, 5]);
        assert_eq!(app.metrics.open.load(Relaxed), 10);
    }
}
