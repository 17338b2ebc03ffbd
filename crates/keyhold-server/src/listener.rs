//! The public-facing listener: the serving loop of `keyhold serve` and `keyhold ekm serve`,
//! with the limits a server that anyone can reach needs (issue 15, finding 3 and the
//! half-close item of finding 6).
//!
//! `axum::serve` holds every connection for as long as the client likes: an idle socket, a
//! header sent one byte per second and a body that never arrives were all kept forever, so
//! ~1,100 idle sockets exhausted a 1,024 file-descriptor limit and locked every client out,
//! and a `Content-Length` of 1 TiB was waited for instead of refused. This loop drives hyper's
//! HTTP/1 connections itself and bounds each stage of a connection's life:
//!
//! - **waiting for a request** (connection just opened, or between keep-alive requests):
//!   [`Limits::idle_timeout`], then the connection is closed;
//! - **reading the request head**, from its first byte: [`Limits::header_read_timeout`];
//! - **reading a buffered (JSON) body**: it must be complete within
//!   [`Limits::request_timeout`] of the head, or the request is answered 408; a
//!   `Content-Length` above [`Limits::max_body_bytes`] is answered 413 before any of the body
//!   is read, and a chunked body is cut at the same size;
//! - **streamed object uploads and downloads** (the store's media, which may be large and
//!   slow): no total deadline, but no more than [`Limits::stream_stall_timeout`] without
//!   progress, neither in the upload's body nor in any write to the client;
//! - **connections**: at most [`Limits::max_connections`] at once. When the cap is reached,
//!   connections that have no request in flight and have waited for one for at least
//!   [`EVICTION_GRACE`] are closed (as nginx reuses idle keep-alive connections when it runs
//!   out), so that idle or slow sockets cannot lock a normal client out; until a slot frees,
//!   the loop stops accepting and new connections wait in the kernel's backlog. Requests in
//!   flight are never cut for this. Accept errors (EMFILE, ENFILE, ...) back off and retry,
//!   never spin and never stop the loop.
//!
//! **TLS** ([`serve_with`] and a [`Tls`]): the same loop and the same limits. A connection in
//! its handshake holds a connection slot like any other and may be evicted at the cap like an
//! idle one; until the client's first byte it is bounded by the idle timeout, and from that
//! byte (the start of its ClientHello) the header read timeout covers the handshake and the
//! first request's head together. A plain HTTP request sent to a TLS port is answered 400 in
//! clear, saying to use `https://`. The certificate is reloaded when its files change
//! ([`keyhold_tls::ServerTls::current`], checked as connections arrive); with a client CA,
//! client certificates are required and verified, and a verified certificate may stand for a
//! principal ([`client_certificate_principal`]).
//!
//! The handlers themselves run to completion once they have their request: cancelling a key
//! operation mid-way could leave an answer without its audit entry, and their own waits are
//! bounded elsewhere (database, HSM and key manager timeouts).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use keyhold_api::Code;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, Sleep};

pub use keyhold_tls::{ClientPrincipal, ServerTls, ServerTlsFiles};

/// The ALPN protocols the listener advertises under TLS, preferred first: HTTP/2 (gRPC needs
/// it; REST clients may use it) and HTTP/1.1.
pub const ALPN_PROTOCOLS: &[&[u8]] = &[keyhold_tls::server::ALPN_H2, keyhold_tls::server::ALPN_HTTP1];

/// The most requests (streams) one HTTP/2 connection may have open at once. Beyond it the
/// client waits (HTTP/2 flow control, `SETTINGS_MAX_CONCURRENT_STREAMS`); the total across
/// connections is bounded by [`Limits::max_connections`] times this.
pub const MAX_CONCURRENT_STREAMS: u32 = 100;

/// The largest HTTP/2 header list (all of a request's headers, decoded), as
/// `SETTINGS_MAX_HEADER_LIST_SIZE`: 64 KiB, what HTTP/1.1 allows here too.
pub const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;

/// TLS on a listener: the (reloading) certificate configuration and what a verified client
/// certificate stands for.
#[derive(Debug, Clone)]
pub struct Tls {
    /// The configuration; built with [`ALPN_PROTOCOLS`].
    pub config: Arc<ServerTls>,
    /// Which identity of a verified client certificate becomes the principal of requests
    /// without a bearer token.
    pub client_principal: ClientPrincipal,
}

tokio::task_local! {
    static CLIENT_CERT_PRINCIPAL: Option<Arc<str>>;
}

/// The principal (`user:…`, `serviceAccount:…`) of the verified client certificate of the
/// connection the current request came on, when the listener maps certificates to principals
/// ([`Tls::client_principal`]). Set by the listener around each request's handler; `None`
/// outside it, over plain HTTP, and when no mapping is configured or the certificate has no
/// usable identity. Only the listener sets it: no request header can.
pub fn client_certificate_principal() -> Option<Arc<str>> {
    CLIENT_CERT_PRINCIPAL.try_with(Clone::clone).ok().flatten()
}

/// The limits of a public listener. [`Limits::default`] holds the documented safe defaults
/// (docs/operations.md, "Limits on a public listener").
#[derive(Clone, Debug)]
pub struct Limits {
    /// The longest a request head (request line and headers) may take, from its first byte.
    pub header_read_timeout: Duration,
    /// The longest a connection may wait for its next request (keep-alive idle time, and the
    /// time from connecting to the first byte).
    pub idle_timeout: Duration,
    /// The longest a buffered request body may take to arrive, counted from the end of the
    /// head. Streamed object bodies are bounded by `stream_stall_timeout` instead.
    pub request_timeout: Duration,
    /// The longest a streamed object upload may go without receiving a byte, and the longest
    /// any write to a client may wait (a client that stops reading a download or an answer).
    pub stream_stall_timeout: Duration,
    /// The least average rate, in bytes per second, at which a streamed object upload must
    /// arrive once [`Limits::stream_min_rate_grace`] has passed since its body started; 0 turns
    /// the check off (found by the hardening probe: an upload sending a byte just inside the stall timeout held
    /// its connection slot for ever, and 22 of them locked everyone out).
    pub stream_min_rate: u64,
    /// How long a streamed upload may take before [`Limits::stream_min_rate`] applies (a slow
    /// start, a client waiting on its own disk).
    pub stream_min_rate_grace: Duration,
    /// The most connections open at once.
    pub max_connections: usize,
    /// The largest buffered (JSON) request body, in bytes.
    pub max_body_bytes: u64,
}

/// Default [`Limits::header_read_timeout`].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`Limits::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default [`Limits::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Default [`Limits::stream_stall_timeout`].
pub const DEFAULT_STREAM_STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Default [`Limits::stream_min_rate`]: 4 KiB/s on average, a rate any working link keeps.
pub const DEFAULT_STREAM_MIN_RATE: u64 = 4096;
/// Default [`Limits::stream_min_rate_grace`].
pub const DEFAULT_STREAM_MIN_RATE_GRACE: Duration = Duration::from_secs(10);
/// Default [`Limits::max_body_bytes`]: 1 MiB. The largest legitimate JSON body is an
/// `:encrypt` of 64 KiB of plaintext with 64 KiB of AAD, both base64 (about 175 KiB), or a
/// large IAM policy; 1 MiB leaves room for both.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1 << 20;
/// At the connection cap, connections without a request in flight are closed once they have
/// waited this long for one: long enough for a client that has just connected (or just had
/// its answer) to send its request.
pub const EVICTION_GRACE: Duration = Duration::from_secs(1);
/// The most connections the default allows, whatever the file-descriptor limit.
pub const MAX_DEFAULT_CONNECTIONS: usize = 4096;

impl Limits {
    /// The shortest time from a connection's change (opened, a byte read, a head read, an
    /// answer written) to the deadline it sets; at least a millisecond, so that limits of zero
    /// (which `keyhold serve` refuses) cannot make the watchdog spin.
    fn shortest(&self) -> Duration {
        let shortest = self.header_read_timeout.min(self.idle_timeout).min(self.request_timeout + BODY_DEADLINE_SLACK);
        shortest.max(Duration::from_millis(1))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            stream_stall_timeout: DEFAULT_STREAM_STALL_TIMEOUT,
            stream_min_rate: DEFAULT_STREAM_MIN_RATE,
            stream_min_rate_grace: DEFAULT_STREAM_MIN_RATE_GRACE,
            max_connections: default_max_connections(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// The process's soft limit on open files (`ulimit -n`), when it can be read.
pub fn open_files_limit() -> Option<u64> {
    // /proc/self/limits rather than getrlimit(2): this crate has no unsafe code and no libc.
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.trim_start_matches("Max open files").split_whitespace().next()?;
    if soft == "unlimited" { Some(u64::MAX) } else { soft.parse().ok() }
}

/// The default connection cap: three quarters of the open-file limit (the rest is headroom
/// for the database, its pool, exports, the HSM and outgoing connections), at least 16 and at
/// most [`MAX_DEFAULT_CONNECTIONS`]; [`MAX_DEFAULT_CONNECTIONS`] when the limit is unknown.
/// Under the common limit of 1,024 this is 768: idle sockets can no longer use up every
/// descriptor (`accept error: Too many open files`).
pub fn default_max_connections() -> usize {
    match open_files_limit() {
        Some(n) => usize::try_from(n / 4 * 3).unwrap_or(usize::MAX).clamp(16, MAX_DEFAULT_CONNECTIONS),
        None => MAX_DEFAULT_CONNECTIONS,
    }
}

/// Whether a request's body is a streamed object upload of the store (`PUT` or `POST` on
/// `/v1/projects/P/locations/L/instances/I/objects/O`), which is never buffered and has no
/// size cap; every other body is buffered and capped.
pub fn is_streamed_upload(method: &Method, path: &str) -> bool {
    if *method != Method::PUT && *method != Method::POST {
        return false;
    }
    let mut s = path.splitn(10, '/');
    matches!(
        (s.next(), s.next(), s.next(), s.next(), s.next(), s.next(), s.next(), s.next(), s.next(), s.next()),
        (Some(""), Some("v1"), Some("projects"), Some(_), Some("locations"), Some(_), Some("instances"), Some(_), Some("objects"), Some(o))
            if !o.is_empty()
    )
}

/// Serves `app` on `listener` within `limits` until `shutdown` completes; then stops
/// accepting, closes idle connections and waits for the requests in flight to finish.
/// Requests carry [`ConnectInfo<SocketAddr>`] of their client.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, app, limits, None, shutdown).await
}

/// [`serve`], over TLS when `tls` is given.
pub async fn serve_with(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tls = tls.map(Arc::new);
    let limits = Arc::new(Limits { max_connections: limits.max_connections.max(1), ..limits });
    let permits = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let slots = Arc::new(Semaphore::new(permits as usize));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (evict_tx, evict_rx) = watch::channel(0u64);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut at_cap_logged = false;
    loop {
        // A slot first, then accept: beyond the cap, connections wait in the kernel backlog
        // rather than taking a descriptor here.
        let slot = match slots.clone().try_acquire_owned() {
            Ok(s) => s,
            Err(_) => {
                if !at_cap_logged {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection limit reached: closing idle connections; new ones wait until a slot frees \
                         (--max-connections)"
                    );
                    at_cap_logged = true;
                }
                // Ask the idle connections to make room, again every EVICTION_GRACE while the
                // cap holds (a connection too young the first time is old enough the next).
                let mut slot = None;
                while slot.is_none() {
                    evict_tx.send_modify(|n| *n += 1);
                    tokio::select! {
                        s = slots.clone().acquire_owned() => match s { Ok(s) => slot = Some(s), Err(_) => break },
                        () = tokio::time::sleep(EVICTION_GRACE) => {}
                        () = &mut shutdown => break,
                    }
                }
                match slot {
                    Some(s) => s,
                    None => break,
                }
            }
        };
        if slots.available_permits() > permits as usize / 2 {
            at_cap_logged = false;
        }
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => break,
        };
        let (stream, remote) = match accepted {
            Ok(a) => {
                backoff = ACCEPT_BACKOFF_MIN;
                a
            }
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS, ENOMEM: the process or the system is out of a
                // resource that closing connections gives back: ask the idle ones to make
                // room, wait, then try again.
                tracing::warn!(error = %e, retry_in = ?backoff, "accept error; retrying");
                evict_tx.send_modify(|n| *n += 1);
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = &mut shutdown => break,
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let watch = Watch { stop: stop_rx.clone(), evict: evict_rx.clone() };
        tokio::spawn(serve_connection(stream, remote, app.clone(), limits.clone(), tls.clone(), watch, slot));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it ends: having them all back means all are done.
    let _ = slots.acquire_many(permits).await;
    Ok(())
}

/// How long after the request deadline a connection still waiting for its body is closed
/// without an answer (the 408 is normally written before).
const BODY_DEADLINE_SLACK: Duration = Duration::from_secs(1);
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What the serving loop tells every connection.
struct Watch {
    /// Shutting down: finish the request in flight, then close.
    stop: watch::Receiver<bool>,
    /// The connection cap is reached: close if idle for [`EVICTION_GRACE`].
    evict: watch::Receiver<u64>,
}

/// Errors of one incoming connection (not of the listener): skip it and accept the next.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset | Interrupted | WouldBlock)
}

/// What one connection is doing, as the watchdog of [`serve_connection`] needs to know it.
///
/// The watchdog is never woken by a change: it looks at the deadline when its alarm rings, and
/// sets the alarm no later than the shortest limit ahead ([`ConnState::next_look`]). Every
/// deadline is the time of a change plus one limit, so the watchdog looks again by the time a
/// deadline set since its last look passes, and closes the connection at the deadline itself.
/// One exception, under HTTP/2: the body deadline of a stream that is waiting while another is
/// in flight may be seen up to the shortest limit late. It is only the backstop: `buffer_body`
/// answers 408 at that deadline. Each request moves the deadline; waking the watchdog for each
/// cost about a tenth of a health check's CPU (2026-12-05 profile). Now it wakes about once per
/// shortest limit.
struct ConnState {
    phase: Mutex<Phase>,
    limits: Arc<Limits>,
}

struct Phase {
    /// Requests handed to the app whose answer has not been written in full.
    in_flight: usize,
    /// When the connection last became idle (opened, or its last answer was written).
    idle_since: Instant,
    /// The first byte read while idle: the start of the next request head.
    first_byte: Option<Instant>,
    /// Since when a request whose head has arrived is waiting for its body. Such a request is
    /// not handed to the app yet (nobody authenticated it): it is bounded by the request
    /// deadline and, at the connection cap, may be evicted like an idle connection, so that
    /// silent bodies cannot hold every slot.
    receiving_since: Option<Instant>,
}

impl Phase {
    /// When the connection must be closed if nothing changes, and why; `None` while a request
    /// is in flight (bounded by the body and write limits instead).
    fn deadline(&self, limits: &Limits) -> Option<(Instant, &'static str)> {
        if self.in_flight > 0 {
            return None;
        }
        if let Some(t) = self.receiving_since {
            // buffer_body answers 408 at the request deadline; this is the backstop, a little
            // later so that the 408 can be written.
            return Some((t + limits.request_timeout + BODY_DEADLINE_SLACK, "request body not received in time"));
        }
        Some(match self.first_byte {
            Some(t) => (t + limits.header_read_timeout, "request head not received in time"),
            None => (self.idle_since + limits.idle_timeout, "idle"),
        })
    }
}

impl ConnState {
    fn new(limits: Arc<Limits>) -> Self {
        Self {
            phase: Mutex::new(Phase {
                in_flight: 0,
                idle_since: Instant::now(),
                first_byte: None,
                receiving_since: None,
            }),
            limits,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A request head has arrived; its body is being read.
    fn body_started(&self) {
        self.lock().receiving_since = Some(Instant::now());
    }

    /// A request is handed to the app (its body read, or streamed to the handler).
    fn request_started(&self) {
        let mut p = self.lock();
        p.in_flight += 1;
        p.first_byte = None;
        p.receiving_since = None;
    }

    fn request_finished(&self) {
        let mut p = self.lock();
        p.in_flight = p.in_flight.saturating_sub(1);
        if p.in_flight == 0 {
            p.idle_since = Instant::now();
            p.first_byte = None;
        }
    }

    fn bytes_read(&self) {
        let mut p = self.lock();
        if p.in_flight == 0 && p.first_byte.is_none() {
            p.first_byte = Some(Instant::now());
        }
    }

    /// Whether the connection has waited at least `grace` with no request in the app: idle,
    /// or waiting that long for a request body.
    fn idle_for(&self, grace: Duration) -> bool {
        let p = self.lock();
        p.in_flight == 0 && p.receiving_since.unwrap_or(p.idle_since).elapsed() >= grace
    }

    /// The watchdog's look: when it must look next (the deadline, or sooner), or, when the
    /// deadline has passed, the reason to close the connection.
    fn next_look(&self) -> Result<Instant, &'static str> {
        let now = Instant::now();
        let deadline = self.lock().deadline(&self.limits);
        match deadline {
            Some((at, why)) if at <= now => Err(why),
            // A change after now sets a deadline no sooner than now plus the shortest limit.
            _ => Ok(deadline.map_or(now + self.limits.shortest(), |(at, _)| at.min(now + self.limits.shortest()))),
        }
    }
}

/// Ends a request's stay in flight when dropped: with its answer's body, once written (or
/// with the handler, if the connection goes first).
struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

async fn serve_connection(
    stream: TcpStream,
    remote: SocketAddr,
    app: Router,
    limits: Arc<Limits>,
    tls: Option<Arc<Tls>>,
    mut watch: Watch,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    let state = Arc::new(ConnState::new(limits.clone()));
    let io = WatchedIo {
        inner: stream,
        state: state.clone(),
        write_stall: limits.stream_stall_timeout,
        stalled_since: None,
    };
    watch.evict.mark_unchanged();
    match tls {
        None => {
            let service = RequestService { app, limits: limits.clone(), state: state.clone(), remote, principal: None };
            drive(TokioIo::new(io), service, remote, &state, watch).await;
        }
        Some(tls) => {
            let Some(stream) = handshake(io, &tls, remote, &state, &mut watch).await else { return };
            let principal = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|cert| tls.client_principal.principal(cert))
                .map(Arc::<str>::from);
            if let Some(p) = &principal {
                tracing::debug!(%remote, principal = %p, "client certificate verified");
            }
            let service = RequestService { app, limits: limits.clone(), state: state.clone(), remote, principal };
            drive(TokioIo::new(stream), service, remote, &state, watch).await;
        }
    }
}

/// What a plain HTTP request on a TLS port is answered (the first byte of a TLS connection is
/// 0x16, a handshake record; anything else is not TLS).
const PLAIN_HTTP_ON_TLS_PORT: &str = "This port serves HTTPS: the request was sent in plain HTTP. Use an https:// URL.";

/// The TLS handshake of a new connection, within the listener's limits: the idle timeout until
/// the first byte, then the header read timeout from it (which goes on to cover the first
/// request's head); evicted at the cap like an idle connection; abandoned at shutdown.
async fn handshake(
    io: WatchedIo,
    tls: &Tls,
    remote: SocketAddr,
    state: &ConnState,
    watch: &mut Watch,
) -> Option<keyhold_tls::server::TlsStream<WatchedIo>> {
    use tokio::io::AsyncWriteExt as _;
    let acceptor = tls.config.acceptor();
    let accept = async move {
        let mut io = io;
        let mut first = [0u8; 1];
        if io.inner.peek(&mut first).await.ok()? == 0 {
            return None;
        }
        io.state.bytes_read();
        if first[0] != 0x16 {
            let body = serde_json::json!({ "error": { "code": 400, "message": PLAIN_HTTP_ON_TLS_PORT, "status": "INVALID_ARGUMENT" } });
            let body = serde_json::to_vec_pretty(&body).unwrap_or_default();
            let head = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json; charset=UTF-8\r\nconnection: close\r\n\
                 content-length: {}\r\n\r\n",
                body.len()
            );
            let _ = io.write_all(head.as_bytes()).await;
            let _ = io.write_all(&body).await;
            let _ = io.shutdown().await;
            // Read what the client sent (a little of it) before closing: closing a socket with
            // unread data resets the connection, and the client could lose the answer. Bounded
            // by the header deadline of the loop below.
            let mut sink = [0u8; 4096];
            let mut left = 64 * 1024usize;
            while left > 0 {
                match tokio::io::AsyncReadExt::read(&mut io, &mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
            tracing::debug!(%remote, "plain HTTP on the TLS port: answered 400");
            return None;
        }
        match acceptor.accept(io).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!(%remote, error = %e, "TLS handshake failed");
                None
            }
        }
    };
    let mut accept = std::pin::pin!(accept);
    let mut evictable = true;
    loop {
        let alarm = match state.next_look() {
            Ok(alarm) => alarm,
            Err(why) => {
                tracing::debug!(%remote, reason = why, "closing connection during the TLS handshake");
                return None;
            }
        };
        tokio::select! {
            r = accept.as_mut() => return r,
            () = tokio::time::sleep_until(alarm) => {}
            r = watch.evict.changed(), if evictable => {
                evictable = r.is_ok();
                if evictable && state.idle_for(EVICTION_GRACE) {
                    tracing::debug!(%remote, "closing a connection in its TLS handshake: the connection limit is reached");
                    return None;
                }
            }
            _ = watch.stop.changed() => return None,
        }
    }
}

/// Serves one connection's requests within the limits: HTTP/1.1, or HTTP/2 when the client
/// starts with its preface (ALPN `h2` under TLS, prior knowledge in clear: "h2c"), as gRPC
/// clients do. Under HTTP/2 each stream is one request, counted in flight like an HTTP/1.1
/// request, so the same idle, head and body limits apply to the connection.
async fn drive<I>(io: TokioIo<I>, service: RequestService, remote: SocketAddr, state: &ConnState, watch: Watch)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    // Finding 6: a client that shuts down its sending side after a complete request
    // (shutdown(SHUT_WR), `nc -N`) still gets its answer.
    builder.http1().half_close(true).header_read_timeout(None);
    // HTTP/2: bounded streams and headers; hyper's defaults bound the rest (reset floods:
    // at most 20 streams reset before the server accepted them; frames of 16 KiB).
    builder
        .http2()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST_BYTES)
        .max_send_buf_size(1 << 20);
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let Watch { mut stop, mut evict } = watch;
    let (mut stopping, mut evictable) = (false, true);
    loop {
        let alarm = match state.next_look() {
            Ok(alarm) => alarm,
            Err(why) => {
                tracing::debug!(%remote, reason = why, "closing connection");
                return;
            }
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%remote, error = %e, "connection ended with an error");
                }
                return;
            }
            // The next turn looks at the deadline again.
            () = tokio::time::sleep_until(alarm) => {}
            r = evict.changed(), if evictable => {
                evictable = r.is_ok(); // the loop has ended: stop watching
                if evictable && state.idle_for(EVICTION_GRACE) {
                    tracing::debug!(%remote, "closing an idle connection: the connection limit is reached");
                    return;
                }
            }
            r = stop.changed(), if !stopping => {
                stopping = true;
                if r.is_ok() {
                    // Closes the connection now if idle, after the answer in flight if not.
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// The socket, watched: the first byte of a request head is noted, and a write that cannot
/// proceed for `write_stall` fails (a client that stops reading its answer).
struct WatchedIo {
    inner: TcpStream,
    state: Arc<ConnState>,
    write_stall: Duration,
    stalled_since: Option<Pin<Box<Sleep>>>,
}

impl WatchedIo {
    fn write_pending(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        let stall = self.write_stall;
        let sleep = self.stalled_since.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("the client read nothing for {stall:?}")))
    }

    fn poll_write_op<T>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut TcpStream>, &mut Context<'_>) -> Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match op(Pin::new(&mut self.inner), cx) {
            Poll::Ready(r) => {
                self.stalled_since = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.write_pending(cx).map(Err),
        }
    }
}

impl AsyncRead for WatchedIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = ready!(Pin::new(&mut self.inner).poll_read(cx, buf));
        if r.is_ok() && buf.filled().len() > before {
            self.state.bytes_read();
        }
        Poll::Ready(r)
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.poll_write_op(cx, |s, cx| s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.poll_write_op(cx, |s, cx| s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_write_op(cx, |s, cx| s.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_write_op(cx, |s, cx| s.poll_shutdown(cx))
    }
}

/// hyper's service for one connection: body limits, then the app.
#[derive(Clone)]
struct RequestService {
    app: Router,
    limits: Arc<Limits>,
    state: Arc<ConnState>,
    remote: SocketAddr,
    /// The principal of the connection's verified client certificate, if mapped.
    principal: Option<Arc<str>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl hyper::service::Service<Request<Incoming>> for RequestService {
    type Response = Response<GuardedBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        // Not in flight yet: until its body is read, a request has reached no handler and may be
        // evicted at the cap like an idle connection (hardening review: silent bodies held every
        // slot for the whole request deadline).
        self.state.body_started();
        let (app, limits, remote, state) = (self.app.clone(), self.limits.clone(), self.remote, self.state.clone());
        let principal = self.principal.clone();
        Box::pin(async move {
            let (resp, guard) = CLIENT_CERT_PRINCIPAL.scope(principal, handle(app, &limits, remote, req, state)).await;
            Ok(resp.map(|body| GuardedBody { inner: body, _guard: guard }))
        })
    }
}

async fn handle(
    mut app: Router,
    limits: &Limits,
    remote: SocketAddr,
    req: Request<Incoming>,
    state: Arc<ConnState>,
) -> (Response<Body>, InFlight) {
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(ConnectInfo(remote));
    let body = if is_streamed_upload(&parts.method, parts.uri.path()) {
        Body::new(StallBody::new(body, limits))
    } else {
        match buffer_body(body, &parts, limits).await {
            Ok(bytes) => Body::from(bytes),
            Err(resp) => {
                state.request_started();
                return (resp, InFlight(state));
            }
        }
    };
    // In flight from here until its answer is written.
    state.request_started();
    let guard = InFlight(state);
    let req = Request::from_parts(parts, body);
    match tower::Service::call(&mut app, req).await {
        Ok(resp) => (resp, guard),
        Err(never) => match never {},
    }
}

/// Reads a whole non-streamed body within the size and time limits, or the answer refusing it.
async fn buffer_body(
    body: Incoming,
    parts: &axum::http::request::Parts,
    limits: &Limits,
) -> Result<Bytes, Response<Body>> {
    use hyper::body::Body as _;
    if body.is_end_stream() {
        return Ok(Bytes::new());
    }
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes) {
        // Refused from the header, before a byte of the body is read (finding 3).
        return Err(too_large(parts, limits.max_body_bytes));
    }
    let limit = usize::try_from(limits.max_body_bytes).unwrap_or(usize::MAX);
    let collect = http_body_util::Limited::new(body, limit).collect();
    match tokio::time::timeout(limits.request_timeout, collect).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large(parts, limits.max_body_bytes)),
        Ok(Err(e)) => Err(refusal(
            parts,
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            &format!("The request body could not be read: {e}."),
        )),
        Err(_) => Err(refusal(
            parts,
            StatusCode::REQUEST_TIMEOUT,
            Code::DeadlineExceeded,
            &format!(
                "The request body did not arrive within {}s; send the whole request at once.",
                limits.request_timeout.as_secs_f64()
            ),
        )),
    }
}

/// 413 in Google's words (its front ends say "Request payload size exceeds the limit"); to a
/// gRPC client, `RESOURCE_EXHAUSTED` as gRPC answers a message above its limit.
fn too_large(parts: &axum::http::request::Parts, limit: u64) -> Response<Body> {
    let message = format!("Request payload size exceeds the limit: {limit} bytes.");
    if is_grpc(&parts.headers) {
        return grpc_refusal(Code::ResourceExhausted, &message);
    }
    refusal(parts, StatusCode::PAYLOAD_TOO_LARGE, Code::InvalidArgument, &message)
}

/// Whether a request is a gRPC call (`content-type: application/grpc`, `application/grpc+proto`, ...).
pub fn is_grpc(headers: &axum::http::HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// A refusal made before the app sees the request: Google's error JSON, or to a gRPC client
/// a gRPC status (trailers-only), so that it reads the reason rather than "HTTP 413". Over
/// HTTP/1.1 the connection is closed after it: the rest of the body was not read.
fn refusal(parts: &axum::http::request::Parts, code: StatusCode, status: Code, message: &str) -> Response<Body> {
    if is_grpc(&parts.headers) {
        return grpc_refusal(status, message);
    }
    let mut resp = error_response(code, status.as_str(), message);
    if parts.version >= axum::http::Version::HTTP_2 {
        resp.headers_mut().remove(header::CONNECTION);
    }
    resp
}

/// A trailers-only gRPC answer: HTTP 200, `grpc-status` and `grpc-message` in the headers.
fn grpc_refusal(status: Code, message: &str) -> Response<Body> {
    let mut resp = Response::new(Body::empty());
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert("grpc-status", HeaderValue::from(status.number()));
    if let Ok(v) = HeaderValue::from_str(&grpc_message_encode(message)) {
        h.insert("grpc-message", v);
    }
    resp
}

/// `grpc-message` is percent-encoded: every byte outside printable ASCII, and `%`, as `%XX`
/// (the gRPC over HTTP/2 specification).
fn grpc_message_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Google's error JSON for refusals made before the app sees the request. The connection is
/// closed after it: the rest of the body was not read.
fn error_response(code: StatusCode, status: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": { "code": code.as_u16(), "message": message, "status": status } });
    let mut resp = Response::new(Body::from(serde_json::to_vec_pretty(&body).unwrap_or_default()));
    *resp.status_mut() = code;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=UTF-8"));
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// A streamed request body that fails when no byte arrives for `stall`, or when, once
/// `grace` has passed since it started, fewer than `min_rate` bytes per second have arrived on
/// average: a client trickling a byte just inside the stall timeout is cut as soon as its
/// average falls below the rate, not when its Content-Length is finally reached.
struct StallBody {
    inner: Incoming,
    stall: Duration,
    min_rate: u64,
    grace: Duration,
    start: Instant,
    last_data: Instant,
    received: u64,
    sleep: Pin<Box<Sleep>>,
}

impl StallBody {
    fn new(inner: Incoming, limits: &Limits) -> Self {
        let now = Instant::now();
        let mut body = Self {
            inner,
            stall: limits.stream_stall_timeout,
            min_rate: limits.stream_min_rate,
            grace: limits.stream_min_rate_grace,
            start: now,
            last_data: now,
            received: 0,
            sleep: Box::pin(tokio::time::sleep(limits.stream_stall_timeout)),
        };
        let deadline = body.deadline();
        body.sleep.as_mut().reset(deadline);
        body
    }

    /// When the bytes received so far stop covering the minimum rate, if it is on.
    fn rate_deadline(&self) -> Option<Instant> {
        let rate = self.min_rate;
        (rate > 0).then(|| {
            let earned = Duration::from_millis(self.received.saturating_mul(1000) / rate);
            self.start + self.grace.max(earned)
        })
    }

    /// The earlier of the stall deadline and the rate deadline.
    fn deadline(&self) -> Instant {
        let stall = self.last_data + self.stall;
        self.rate_deadline().map_or(stall, |r| r.min(stall))
    }
}

impl hyper::body::Body for StallBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(f) => {
                if let Some(Ok(frame)) = &f
                    && let Some(data) = frame.data_ref()
                {
                    self.received = self.received.saturating_add(data.len() as u64);
                }
                self.last_data = Instant::now();
                let next = self.deadline();
                self.sleep.as_mut().reset(next);
                Poll::Ready(f.map(|r| r.map_err(std::io::Error::other)))
            }
            Poll::Pending => {
                ready!(self.sleep.as_mut().poll(cx));
                let now = Instant::now();
                let message = match self.rate_deadline() {
                    Some(r) if r <= now => format!(
                        "the upload arrived at less than {} bytes/s on average ({} bytes in {:.1}s, checked after the \
                         first {}s); send it faster, or ask the operator to lower --stream-min-rate",
                        self.min_rate,
                        self.received,
                        (now - self.start).as_secs_f64(),
                        self.grace.as_secs_f64()
                    ),
                    _ => format!("no data for {}s", self.stall.as_secs_f64()),
                };
                Poll::Ready(Some(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, message))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An answer's body that keeps its request in flight until it is written (or dropped).
pub struct GuardedBody {
    inner: Body,
    _guard: InFlight,
}

impl hyper::body::Body for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_object_uploads_are_streamed() {
        let put = Method::PUT;
        assert!(is_streamed_upload(&put, "/v1/projects/p/locations/l/instances/i/objects/a/b.txt"));
        assert!(is_streamed_upload(&Method::POST, "/v1/projects/p/locations/l/instances/i/objects/o"));
        assert!(!is_streamed_upload(&Method::GET, "/v1/projects/p/locations/l/instances/i/objects/o"));
        assert!(!is_streamed_upload(&put, "/v1/projects/p/locations/l/instances/i/objects/"));
        assert!(!is_streamed_upload(&put, "/v1/projects/p/locations/l/instances/i"));
        assert!(!is_streamed_upload(&Method::POST, "/v1/projects/p/locations/l/keyRings/r/cryptoKeys/k:encrypt"));
    }

    #[test]
    fn the_default_cap_leaves_descriptors_for_the_rest() {
        let cap = default_max_connections();
        assert!((16..=MAX_DEFAULT_CONNECTIONS).contains(&cap));
        if let Some(n) = open_files_limit() {
            assert!(cap as u64 <= n.max(22) / 4 * 3 || cap == 16);
        }
    }
}
