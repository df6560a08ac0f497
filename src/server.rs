//! Server: the HTTP listener for /metrics, /status, /healthz and /-/reload.
//!
//! Built on hyper 1 with one task per connection. The server only reads shared state and
//! forwards reload requests; it never blocks a probe. Request bodies are never read beyond a
//! small limit, because no endpoint takes a body.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::classify::Class;
use crate::metrics::Metrics;
use crate::status::{StatusFilter, StatusStore};
use crate::web_config::{Auth, WebConfig};

/// Largest request body accepted; every endpoint works without one.
pub const MAX_REQUEST_BODY_BYTES: u64 = 1024;

/// Time a client gets to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a finished render of /metrics or the unfiltered /status is served again to
/// requests that arrive after it started.
const RENDER_REUSE: Duration = Duration::from_secs(1);

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

/// Shares one render of a large document (/metrics, the unfiltered /status) among the
/// requests that arrive while it runs.
///
/// Rendering 1,000 pairs takes tens of milliseconds in a release build and over a second in
/// a debug build, so 50 concurrent requests must not render 50 times. A request waits for
/// the render in progress, then uses the newest render if that render started after the
/// request arrived or finished less than [`RENDER_REUSE`] ago, or starts one itself. So under
/// a burst the renders take at most part of one CPU and leave the rest to the probes, and
/// no response is older than [`RENDER_REUSE`] plus one render. A config load changes the
/// generation, and a render of an older generation is never reused, so a response after a
/// reload always shows the reload's result.
#[derive(Default)]
struct SharedRender {
    /// The newest render: its generation, when it started and finished, and its output.
    latest: tokio::sync::Mutex<Option<Rendered>>,
}

struct Rendered {
    generation: u64,
    started: tokio::time::Instant,
    finished: tokio::time::Instant,
    body: Bytes,
}

impl SharedRender {
    async fn render<F>(&self, what: &'static str, generation: u64, render: F) -> Option<Bytes>
    where
        F: FnOnce() -> String + Send + 'static,
    {
        let arrived = tokio::time::Instant::now();
        let mut latest = self.latest.lock().await;
        if let Some(rendered) = latest.as_ref() {
            let fresh = rendered.started >= arrived || rendered.finished.elapsed() < RENDER_REUSE;
            if fresh && rendered.generation == generation {
                return Some(rendered.body.clone());
            }
        }
        let started = tokio::time::Instant::now();
        // Rendering is CPU work; a blocking thread keeps it off the workers that run probes.
        match tokio::task::spawn_blocking(render).await {
            Ok(text) => {
                let body = Bytes::from(text);
                *latest = Some(Rendered {
                    generation,
                    started,
                    finished: tokio::time::Instant::now(),
                    body: body.clone(),
                });
                Some(body)
            }
            Err(error) => {
                tracing::error!(error = %error, document = what, "rendering failed");
                None
            }
        }
    }
}

/// The shared renders of the two large documents.
#[derive(Default)]
struct Renders {
    metrics: SharedRender,
    status: SharedRender,
}

impl Server {
    /// Binds the listen address.
    pub async fn bind(address: SocketAddr) -> Result<Server, ServerError> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| ServerError::Bind { address, source })?;
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
        let cache = Arc::new(Renders::default());
        loop {
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
            let cache = Arc::clone(&cache);
            let service = service_fn(move |request| {
                let state = state.clone();
                let auth = auth.clone();
                let cache = Arc::clone(&cache);
                async move { Ok::<_, Infallible>(guarded(&state, &auth, &cache, request).await) }
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
                    if let Err(error) = connection.await {
                        tracing::debug!(error = %error, "connection ended with an error");
                    }
                });
                continue;
            };
            let watcher = graceful.watcher();
            tokio::spawn(async move {
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
                if let Err(error) = connection.await {
                    tracing::debug!(error = %error, "connection ended with an error");
                }
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

/// Checks credentials, then handles the request. `/healthz` needs none (see
/// [`crate::web_config`] for why).
async fn guarded(
    state: &AppState,
    auth: &Auth,
    cache: &Renders,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
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
    handle(state, cache, request).await
}

async fn handle(
    state: &AppState,
    cache: &Renders,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
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
        "/metrics" => {
            let metrics = state.metrics.clone();
            let generation = metrics.config_generation();
            match cache
                .metrics
                .render("/metrics", generation, move || metrics.render())
                .await
            {
                Some(body) => with_bytes(
                    StatusCode::OK,
                    body,
                    "text/plain; version=0.0.4; charset=utf-8",
                ),
                None => text(StatusCode::INTERNAL_SERVER_ERROR, "rendering failed\n"),
            }
        }
        "/status" => status(state, cache, request.uri().query()).await,
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
    let chunked = request
        .headers()
        .contains_key(hyper::header::TRANSFER_ENCODING);
    declared.is_some_and(|length| length > MAX_REQUEST_BODY_BYTES) || chunked
}

async fn status(state: &AppState, cache: &Renders, query: Option<&str>) -> Response<Full<Bytes>> {
    let filter = match parse_filter(query.unwrap_or("")) {
        Ok(filter) => filter,
        Err(message) => return text(StatusCode::BAD_REQUEST, &format!("{message}\n")),
    };
    let store = Arc::clone(&state.status);
    let generation = state.metrics.config_generation();
    let render = move || store.render_json(&filter);
    // Only the unfiltered document is shared: it is the large one, and a filter's response
    // belongs to that filter alone.
    let body = if query.unwrap_or("").is_empty() {
        cache.status.render("/status", generation, render).await
    } else {
        SharedRender::default()
            .render("/status", generation, render)
            .await
    };
    match body {
        Some(body) => with_bytes(StatusCode::OK, body, "application/json"),
        None => text(StatusCode::INTERNAL_SERVER_ERROR, "rendering failed\n"),
    }
}

/// Parses `monitor=`, `route=` and `class=` filters; anything else is an error.
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
            other => {
                return Err(format!(
                    "unknown filter {other:?} (filters are: monitor, route, class)"
                ));
            }
        }
    }
    Ok(filter)
}

fn healthz(state: &AppState) -> Response<Full<Bytes>> {
    if (state.health)() {
        text(StatusCode::OK, "ok\n")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "scheduler stopped\n")
    }
}

async fn reload(state: &AppState) -> Response<Full<Bytes>> {
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

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    with_type(status, body.to_owned(), "text/plain; charset=utf-8")
}

fn with_type(
    status: StatusCode,
    body: String,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    with_bytes(status, Bytes::from(body), content_type)
}

fn with_bytes(
    status: StatusCode,
    body: Bytes,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
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
            "unknown filter \"monitr\" (filters are: monitor, route, class)"
        );
    }
}
