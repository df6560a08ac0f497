//! Server: the HTTP listener for /metrics, /status, /healthz and /-/reload.
//!
//! Built on hyper 1 with one task per connection. The server only reads shared state and
//! forwards reload requests; it never blocks a probe. Request bodies are never read beyond a
//! small limit, because no endpoint takes a body.
//!
//! /metrics and /status are streamed: a render on a blocking thread writes chunks of about
//! 64 KiB into a channel of [`CHUNKS_AHEAD`] chunks that the response body reads, so memory
//! per response stays bounded whatever the number of pairs. At most [`MAX_RENDERS`] renders
//! run at once. A render keeps its slot only while it writes. When its client is behind, it
//! gives the slot up until the channel has room again, and it stops when the client takes no
//! chunk for [`STALLED_CLIENT`]. A request that gets no slot within [`RENDER_WAIT`] gets 503.
//!
//! At most [`MAX_CONNECTIONS`] connections are open at once. The listener accepts no more until
//! one closes, so further clients wait in the kernel's backlog and take no file descriptor.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{
    ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, TRANSFER_ENCODING,
    WWW_AUTHENTICATE,
};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use thiserror::Error;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::chunk::Stopped;
use crate::classify::Class;
use crate::metrics::Metrics;
use crate::status::{StatusFilter, StatusStore};
use crate::web_config::{Auth, WebConfig};

/// Largest request body accepted; every endpoint works without one.
pub const MAX_REQUEST_BODY_BYTES: u64 = 1024;

/// Time a client gets to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Renders of /metrics and /status that may run at once. Each takes a CPU while it runs (about
/// 120 ms for /metrics at 10,000 pairs in a release build, measured with bench/run), so a
/// burst of scrapers waits for a permit instead of taking every core from the probes.
pub const MAX_RENDERS: usize = 2;

/// Time a request for /metrics or /status waits for a render slot before it gets 503.
pub const RENDER_WAIT: Duration = Duration::from_secs(5);

/// Connections served at once. Each takes a file descriptor, so the cap keeps clients that
/// never read (or never close) from using up the descriptors that probes need.
pub const MAX_CONNECTIONS: usize = 256;

/// `SO_SNDBUF` of accepted connections (Linux doubles it for its own bookkeeping). Without it,
/// Linux grows the buffer to megabytes, and a slow client frees space in it so rarely that a
/// render waits longer than [`STALLED_CLIENT`] for room in its channel although the client
/// keeps reading.
const SEND_BUFFER_BYTES: u32 = 256 * 1024;

/// Chunks a render may write ahead of its client, so the channel of one response buffers at
/// most about this many times 64 KiB.
pub const CHUNKS_AHEAD: usize = 4;

/// Time a client may take no chunk of /metrics or /status before the render stops. An HTTP/1.1
/// client then gets a response cut short by an error, never a complete-looking partial
/// document. An HTTP/1.0 response has no chunked coding, so there the cut looks like a normal
/// end of the body.
pub const STALLED_CLIENT: Duration = Duration::from_secs(30);

/// Time in-flight responses get to finish after shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Failure to start the listener.
#[derive(Debug, Error)]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {source} (pick a free address with --listen)")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// The body of a streamed document ended early: the render stopped because the client took no
/// chunk for [`STALLED_CLIENT`], or it panicked. hyper then closes the connection without the
/// final chunk, so the client sees an incomplete response.
#[derive(Debug, Error)]
#[error("the render of the document stopped before its end")]
pub struct RenderStopped;

/// The body of every response: a whole text, or a document streamed from a render.
pub type ResponseBody = BoxBody<Bytes, RenderStopped>;

/// A reload request: the reply carries a one-line summary or the rejection.
pub type ReloadRequest = oneshot::Sender<Result<String, String>>;

/// Everything the handlers read.
#[derive(Clone)]
pub struct AppState {
    /// The metric registry.
    pub metrics: Metrics,
    /// The status store.
    pub status: Arc<StatusStore>,
    /// Returns true while the scheduler runs.
    pub health: Arc<dyn Fn() -> bool + Send + Sync>,
    /// The channel that `POST /-/reload` sends its request to.
    pub reload: mpsc::Sender<ReloadRequest>,
}

/// A bound listener, ready to serve.
pub struct Server {
    listener: TcpListener,
    web: WebConfig,
}

/// A piece of a streamed document. `End` follows the last chunk, so a body whose channel closes
/// without it can tell that the document is incomplete.
enum Piece {
    Chunk(Bytes),
    End,
}

/// The body of a streamed document: the chunk that was awaited before the headers were sent,
/// then the chunks of the channel until `End`.
struct DocumentBody {
    first: Option<Bytes>,
    pieces: mpsc::Receiver<Piece>,
    ended: bool,
}

impl Body for DocumentBody {
    type Data = Bytes;
    type Error = RenderStopped;

    fn poll_frame(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RenderStopped>>> {
        let body = self.get_mut();
        if let Some(first) = body.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        if body.ended {
            return Poll::Ready(None);
        }
        match body.pieces.poll_recv(context) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Piece::Chunk(chunk))) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            Poll::Ready(Some(Piece::End)) => {
                body.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(None) => Poll::Ready(Some(Err(RenderStopped))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.first.is_none()
    }
}

/// A document renderer: writes the whole document, handing each chunk to the function it
/// gets, and stops when that function returns [`Stopped`].
type Render =
    Box<dyn FnOnce(&mut dyn FnMut(Bytes) -> Result<(), Stopped>) -> Result<(), Stopped> + Send>;

/// The sending end of a render: hands pieces to the response body and keeps the render slot
/// only while the render writes.
struct PieceSender {
    sender: mpsc::Sender<Piece>,
    runtime: tokio::runtime::Handle,
    permits: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
}

impl PieceSender {
    /// Sends one chunk. When the channel is full, gives the render slot up while it waits for
    /// room (at most [`STALLED_CLIENT`]), so a slow client holds up no other render, and takes
    /// a slot again before the render goes on.
    fn send_chunk(&mut self, chunk: Bytes) -> Result<(), Stopped> {
        let piece = match self.sender.try_send(Piece::Chunk(chunk)) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Closed(_)) => return Err(Stopped),
            Err(TrySendError::Full(piece)) => piece,
        };
        self.permit = None;
        self.runtime
            .block_on(self.sender.send_timeout(piece, STALLED_CLIENT))
            .map_err(|_| Stopped)?;
        let permit = self
            .runtime
            .block_on(Arc::clone(&self.permits).acquire_owned())
            .map_err(|_| Stopped)?;
        self.permit = Some(permit);
        Ok(())
    }

    /// Marks the end of the document, without a render slot since nothing is left to render.
    fn send_end(mut self) {
        self.permit = None;
        let _ = self
            .runtime
            .block_on(self.sender.send_timeout(Piece::End, STALLED_CLIENT));
    }
}

/// The render slots and the stall signal that the requests of one connection use.
#[derive(Clone)]
struct Renders {
    /// Render slots, shared by every connection.
    permits: Arc<Semaphore>,
    /// Cancelled when a render of this connection stops because its client went away or took
    /// no chunk for [`STALLED_CLIENT`]. hyper notices the end of the body only after the
    /// socket takes the chunks it has buffered, which may never happen for a client that
    /// stopped reading, so the connection task closes the connection on this signal.
    render_stopped: CancellationToken,
}

/// Starts `render` on a blocking thread once a render slot is free, and responds with its
/// output as a stream. Responds 503 if no slot frees within [`RENDER_WAIT`], and 500 if the
/// render fails before its first chunk.
async fn stream_document(
    renders: &Renders,
    document: &'static str,
    content_type: &'static str,
    render: Render,
) -> Response<ResponseBody> {
    let slot = Arc::clone(&renders.permits).acquire_owned();
    let permit = match tokio::time::timeout(RENDER_WAIT, slot).await {
        Ok(Ok(permit)) => permit,
        Ok(Err(_closed)) => return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
        Err(_elapsed) => {
            tracing::debug!(document, "no render slot freed in time, responding 503");
            return busy();
        }
    };
    let (sender, mut pieces) = mpsc::channel(CHUNKS_AHEAD);
    let mut piece_sender = PieceSender {
        sender,
        runtime: tokio::runtime::Handle::current(),
        permits: Arc::clone(&renders.permits),
        permit: Some(permit),
    };
    let render_stopped = renders.render_stopped.clone();
    // Rendering is CPU work; a blocking thread keeps it off the workers that run probes.
    tokio::task::spawn_blocking(move || {
        let mut send_chunk = |chunk| piece_sender.send_chunk(chunk);
        match std::panic::catch_unwind(AssertUnwindSafe(|| render(&mut send_chunk))) {
            Ok(Ok(())) => piece_sender.send_end(),
            Ok(Err(Stopped)) => {
                tracing::debug!(
                    document,
                    "render stopped because the client went away or stopped reading"
                );
                render_stopped.cancel();
            }
            // The connection stays open here, so that a panic before the first chunk still
            // gets its 500.
            Err(_) => tracing::error!(document, "rendering failed: the render panicked"),
        }
    });

    // The headers wait for the first chunk, so a render that fails at once gets a 500 rather
    // than a 200 whose body breaks off.
    let body = match pieces.recv().await {
        Some(Piece::Chunk(first)) => DocumentBody {
            first: Some(first),
            pieces,
            ended: false,
        },
        Some(Piece::End) => DocumentBody {
            first: None,
            pieces,
            ended: true,
        },
        None => return text(StatusCode::INTERNAL_SERVER_ERROR, "rendering failed\n"),
    };
    with_body(StatusCode::OK, body.boxed(), content_type)
}

/// Responds 503 to a request that found every render slot taken for [`RENDER_WAIT`].
fn busy() -> Response<ResponseBody> {
    let mut response = text(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("busy: {MAX_RENDERS} renders in progress, retry later\n"),
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER, "1".parse().expect("static header value"));
    response
}

/// Responds to HEAD on a streamed document with the headers that GET gets, without rendering,
/// except `transfer-encoding: chunked`, because hyper 1.13 drops that header from every
/// response to HEAD.
fn document_head(content_type: &'static str) -> Response<ResponseBody> {
    let (_sender, pieces) = mpsc::channel(1);
    let body = DocumentBody {
        first: None,
        pieces,
        ended: true,
    };
    with_body(StatusCode::OK, body.boxed(), content_type)
}

/// Connections the kernel queues while every connection slot is taken.
const BACKLOG: u32 = 1024;

/// Binds a listener whose accepted connections get [`SEND_BUFFER_BYTES`] as their send
/// buffer (Linux copies `SO_SNDBUF` from the listening socket to the sockets it accepts).
fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_send_buffer_size(SEND_BUFFER_BYTES)?;
    socket.bind(address)?;
    socket.listen(BACKLOG)
}

impl Server {
    /// Binds the listen address.
    pub async fn bind(address: SocketAddr) -> Result<Server, ServerError> {
        let listener = listen(address).map_err(|source| ServerError::Bind { address, source })?;
        Ok(Server {
            listener,
            web: WebConfig::default(),
        })
    }

    /// Serves over TLS and checks credentials as `web` sets (see [`crate::web_config`]).
    pub fn with_web_config(mut self, web: WebConfig) -> Server {
        self.web = web;
        self
    }

    /// Returns the bound address (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `shutdown` is cancelled, then lets in-flight responses finish.
    pub async fn serve(self, state: AppState, shutdown: CancellationToken) {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let permits = Arc::new(Semaphore::new(MAX_RENDERS));
        let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            // Take a connection slot before accepting, so clients beyond the cap wait in the
            // kernel's backlog and use no file descriptor of this process.
            let connection_slot = tokio::select! {
                _ = shutdown.cancelled() => break,
                slot = Arc::clone(&connections).acquire_owned() => slot,
            };
            let Ok(connection_slot) = connection_slot else {
                break;
            };
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    // Running out of file descriptors is transient; back off instead of spinning.
                    tracing::warn!(error = %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let state = state.clone();
            let auth = self.web.auth.clone();
            let render_stopped = CancellationToken::new();
            let renders = Renders {
                permits: Arc::clone(&permits),
                render_stopped: render_stopped.clone(),
            };
            let service = service_fn(move |request| {
                let state = state.clone();
                let auth = auth.clone();
                let renders = renders.clone();
                async move { Ok::<_, Infallible>(guarded(&state, &auth, &renders, request).await) }
            });
            let builder = {
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT);
                builder
            };
            let Some(acceptor) = self.web.tls.clone() else {
                let connection =
                    graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    let _connection_slot = connection_slot;
                    serve_until_render_stops(connection, render_stopped).await;
                });
                continue;
            };
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let _connection_slot = connection_slot;
                // A client that stalls the handshake gets the same budget as one that stalls
                // its headers.
                let stream = match tokio::time::timeout(
                    HEADER_READ_TIMEOUT,
                    acceptor.accept(stream),
                )
                .await
                {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::debug!(error = %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!("TLS handshake timed out");
                        return;
                    }
                };
                let connection =
                    watcher.watch(builder.serve_connection(TokioIo::new(stream), service));
                serve_until_render_stops(connection, render_stopped).await;
            });
        }
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("in-flight HTTP responses did not finish before shutdown");
        }
    }
}

/// Serves one connection until it ends, or closes it when one of its renders stops (see
/// [`Renders::render_stopped`]).
async fn serve_until_render_stops<F>(connection: F, render_stopped: CancellationToken)
where
    F: Future<Output = Result<(), hyper::Error>>,
{
    tokio::select! {
        result = connection => {
            if let Err(error) = result {
                tracing::debug!(error = %error, "connection ended with an error");
            }
        }
        _ = render_stopped.cancelled() => {
            tracing::debug!("connection closed because its render stopped");
        }
    }
}

/// Checks credentials, then handles the request. `/healthz` needs none (see
/// [`crate::web_config`] for why).
async fn guarded(
    state: &AppState,
    auth: &Auth,
    renders: &Renders,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .map(|value| value.as_bytes());
    if request.uri().path() != "/healthz" && !auth.allows(header) {
        let mut response = text(StatusCode::UNAUTHORIZED, "unauthorized\n");
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            "Basic realm=\"routewatch\""
                .parse()
                .expect("static header value"),
        );
        return response;
    }
    handle(state, renders, request).await
}

async fn handle(
    state: &AppState,
    renders: &Renders,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    if body_too_large(&request) {
        return text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
    }
    let path = request.uri().path();
    let allowed = match path {
        "/metrics" | "/status" | "/healthz" => Method::GET,
        "/-/reload" => Method::POST,
        "/" => Method::GET,
        _ => {
            return text(
                StatusCode::NOT_FOUND,
                "not found (endpoints: /metrics, /status, /healthz, POST /-/reload)\n",
            );
        }
    };
    let method = request.method();
    let head_ok = method == Method::HEAD && allowed == Method::GET;
    if method != allowed && !head_ok {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        let allow = if allowed == Method::GET {
            "GET, HEAD"
        } else {
            "POST"
        };
        response
            .headers_mut()
            .insert(ALLOW, allow.parse().expect("static header value"));
        return response;
    }

    match path {
        "/metrics" if head_ok => document_head(METRICS_TYPE),
        "/metrics" => {
            let metrics = state.metrics.clone();
            let render: Render = Box::new(move |send| metrics.write_chunks(send));
            stream_document(renders, "/metrics", METRICS_TYPE, render).await
        }
        "/status" => status(state, renders, request.uri().query(), head_ok).await,
        "/healthz" => healthz(state),
        "/-/reload" => reload(state).await,
        _ => text(StatusCode::OK, "routewatch: see /status and /metrics\n"),
    }
}

fn body_too_large(request: &Request<Incoming>) -> bool {
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let chunked = request.headers().contains_key(TRANSFER_ENCODING);
    declared.is_some_and(|length| length > MAX_REQUEST_BODY_BYTES) || chunked
}

async fn status(
    state: &AppState,
    renders: &Renders,
    query: Option<&str>,
    head: bool,
) -> Response<ResponseBody> {
    let filter = match parse_filter(query.unwrap_or("")) {
        Ok(filter) => filter,
        Err(message) => return text(StatusCode::BAD_REQUEST, &format!("{message}\n")),
    };
    if head {
        return document_head(STATUS_TYPE);
    }
    let store = Arc::clone(&state.status);
    let render: Render = Box::new(move |send| store.write_json(&filter, send));
    stream_document(renders, "/status", STATUS_TYPE, render).await
}

/// Parses the `monitor=`, `route=` and `class=` filters and `history=`; anything else is an
/// error. When `history=` is given several times, the last one counts.
fn parse_filter(query: &str) -> Result<StatusFilter, String> {
    let mut filter = StatusFilter::default();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "monitor" => filter.monitor.push(value.into_owned()),
            "route" => filter.route.push(value.into_owned()),
            "class" => {
                let class = Class::parse(&value).ok_or_else(|| {
                    let names: Vec<&str> = Class::ALL.iter().map(|class| class.as_str()).collect();
                    format!(
                        "unknown class {value:?} (classes are: {})",
                        names.join(", ")
                    )
                })?;
                filter.class.push(class);
            }
            "history" => filter.history = parse_history(&value)?,
            other => {
                return Err(format!(
                    "unknown filter {other:?} (filters are: monitor, route, class, history)"
                ));
            }
        }
    }
    Ok(filter)
}

/// Parses the number of history entries to list. A number too large for `usize` lists every
/// kept entry, like any number above the history size.
fn parse_history(value: &str) -> Result<usize, String> {
    if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(format!(
            "invalid history {value:?} (expected a whole number of entries per pair, such as history=10)"
        ));
    }
    Ok(value.parse().unwrap_or(usize::MAX))
}

fn healthz(state: &AppState) -> Response<ResponseBody> {
    if (state.health)() {
        text(StatusCode::OK, "ok\n")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "scheduler stopped\n")
    }
}

async fn reload(state: &AppState) -> Response<ResponseBody> {
    let (reply, answer) = oneshot::channel();
    if state.reload.send(reply).await.is_err() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    }
    match answer.await {
        Ok(Ok(summary)) => text(StatusCode::OK, &format!("{summary}\n")),
        Ok(Err(errors)) => text(StatusCode::BAD_REQUEST, &format!("{errors}\n")),
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
    }
}

/// Content type of the Prometheus text exposition.
const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Content type of the status document.
const STATUS_TYPE: &str = "application/json";

fn text(status: StatusCode, body: &str) -> Response<ResponseBody> {
    let body = Full::new(Bytes::from(body.to_owned()))
        .map_err(|never: Infallible| match never {})
        .boxed();
    with_body(status, body, "text/plain; charset=utf-8")
}

fn with_body(
    status: StatusCode,
    body: ResponseBody,
    content_type: &'static str,
) -> Response<ResponseBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        content_type.parse().expect("static header value"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Returns a render that sends `chunks` chunks of one byte.
    fn render_chunks(chunks: usize) -> Render {
        Box::new(move |send| {
            for _ in 0..chunks {
                send(Bytes::from_static(b"x"))?;
            }
            Ok(())
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stream_document_busy_after_render_wait() {
        let renders = Renders {
            permits: Arc::new(Semaphore::new(0)),
            render_stopped: CancellationToken::new(),
        };
        let started = std::time::Instant::now();
        let response = stream_document(&renders, "/metrics", METRICS_TYPE, render_chunks(1)).await;
        assert!(started.elapsed() >= RENDER_WAIT, "{:?}", started.elapsed());
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "1");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "busy: 2 renders in progress, retry later\n");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stream_document_frees_slot_while_client_behind() {
        let permits = Arc::new(Semaphore::new(1));
        let renders = Renders {
            permits: Arc::clone(&permits),
            render_stopped: CancellationToken::new(),
        };
        let response = stream_document(
            &renders,
            "/metrics",
            METRICS_TYPE,
            render_chunks(CHUNKS_AHEAD + 3),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);

        // The test reads no body, so the render fills the channel and waits for room without
        // its slot.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while permits.available_permits() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the slot stayed taken"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // Reading the body lets the render take a slot again and finish the document.
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), CHUNKS_AHEAD + 3);
        assert_eq!(permits.available_permits(), 1);
    }

    #[test]
    fn parse_filter_reads_all_three() {
        let filter = parse_filter("monitor=groq&route=hk&class=geo_block").unwrap();
        assert_eq!(filter.monitor, ["groq"]);
        assert_eq!(filter.route, ["hk"]);
        assert_eq!(filter.class, [Class::GeoBlock]);
    }

    #[test]
    fn parse_filter_repeated_keeps_every_value() {
        let filter = parse_filter("class=ok&class=auth&monitor=a&monitor=b").unwrap();
        assert_eq!(filter.class, [Class::Ok, Class::Auth]);
        assert_eq!(filter.monitor, ["a", "b"]);
    }

    #[test]
    fn parse_filter_unknown_class_lists_classes() {
        let error = parse_filter("class=geo").unwrap_err();
        assert_eq!(
            error,
            "unknown class \"geo\" (classes are: ok, auth, geo_block, waf_html, rate_limited, server_error, unexpected, timeout, dns, connect, tls, proxy)"
        );
    }

    #[test]
    fn parse_filter_unknown_name_is_error() {
        assert_eq!(
            parse_filter("monitr=x").unwrap_err(),
            "unknown filter \"monitr\" (filters are: monitor, route, class, history)"
        );
    }

    #[test]
    fn parse_filter_history_defaults_to_ten() {
        assert_eq!(parse_filter("").unwrap().history, 10);
        assert_eq!(parse_filter("monitor=a").unwrap().history, 10);
    }

    #[test]
    fn parse_filter_history_reads_number() {
        assert_eq!(parse_filter("history=0").unwrap().history, 0);
        assert_eq!(parse_filter("history=250").unwrap().history, 250);
        assert_eq!(parse_filter("history=3&history=7").unwrap().history, 7);
    }

    #[test]
    fn parse_filter_history_too_large_lists_all() {
        let filter = parse_filter("history=99999999999999999999999").unwrap();
        assert_eq!(filter.history, usize::MAX);
    }

    #[test]
    fn parse_filter_history_not_number_is_error() {
        for (query, value) in [
            ("history=ten", "ten"),
            ("history=-1", "-1"),
            ("history=", ""),
            ("history=1.5", "1.5"),
            ("history=%2B3", "+3"),
            ("history=+3", " 3"),
        ] {
            assert_eq!(
                parse_filter(query).unwrap_err(),
                format!(
                    "invalid history {value:?} (expected a whole number of entries per pair, such as history=10)"
                ),
                "{query}"
            );
        }
    }
}
