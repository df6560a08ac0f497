//! A scriptable HTTP and HTTPS server that replaces a provider's API in tests.
//!
//! Tests script responses by path and, per path, by the client's source address, so the same
//! URL responds differently through proxies whose outgoing side binds 127.0.0.2 or 127.0.0.3:
//!
//! ```ignore
//! let upstream = Upstream::start(
//!     Routes::new()
//!         .route("/v1/models", Reply::json(200, MODELS))
//!         .for_source("127.0.0.2", Reply::json(403, OPENAI_UNSUPPORTED_REGION))
//!         .for_source("127.0.0.3", Reply::html(403, CLOUDFLARE_BLOCK_HTML)),
//! );
//! let url = upstream.url("/v1/models");
//! ```
//!
//! The server listens on 127.0.0.1 on a free port, speaks HTTP/1.1 only, and runs on its own
//! thread and tokio runtime, so it keeps responding while a test blocks. Every request is
//! recorded before it is answered. A path with no route gets a 404 JSON error.

pub mod bodies;
mod reply;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr, TcpListener as StdTcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

// Re-exported so tests can write `upstream::MODELS`. A test binary that uses no body
// constant would otherwise warn about the unused import.
#[allow(unused_imports)]
pub use bodies::*;
pub use reply::{Reply, ReplyBody};

use super::tls::TestCa;

/// How often [`Upstream::wait_for_requests`] checks the record.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Scripted responses by path. [`Routes::for_source`] adds a per-source override to the route
/// added last.
#[derive(Clone, Debug, Default)]
pub struct Routes {
    routes: Vec<Route>,
}

#[derive(Clone, Debug)]
struct Route {
    path: String,
    reply: Reply,
    by_source: Vec<(IpAddr, Reply)>,
}

impl Routes {
    /// Builds an empty set: every path gets a 404.
    pub fn new() -> Routes {
        Routes::default()
    }

    /// Responds to requests for `path` (matched exactly, without the query) with `reply`.
    /// A later route for the same path replaces the earlier one.
    pub fn route(mut self, path: &str, reply: Reply) -> Routes {
        self.routes.retain(|route| route.path != path);
        self.routes.push(Route {
            path: path.to_string(),
            reply,
            by_source: Vec::new(),
        });
        self
    }

    /// Responds with `reply` to requests from source address `ip` for the route added last.
    ///
    /// Panics if no route was added yet or `ip` is not an IP address.
    pub fn for_source(mut self, ip: &str, reply: Reply) -> Routes {
        let ip: IpAddr = ip
            .parse()
            .unwrap_or_else(|error| panic!("invalid source address {ip:?}: {error}"));
        let route = self
            .routes
            .last_mut()
            .expect("for_source needs a route: call route(path, reply) first");
        route.by_source.retain(|(existing, _)| *existing != ip);
        route.by_source.push((ip, reply));
        self
    }

    fn find(&self, path: &str, source: IpAddr) -> Option<&Reply> {
        let route = self.routes.iter().find(|route| route.path == path)?;
        let by_source = route.by_source.iter().find(|(ip, _)| *ip == source);
        Some(by_source.map_or(&route.reply, |(_, reply)| reply))
    }
}

/// One request as the upstream received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The method, such as `GET`.
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// The query without the leading `?`, if the request had one.
    pub query: Option<String>,
    /// Headers in arrival order, names in lower case, values decoded lossily as UTF-8.
    pub headers: Vec<(String, String)>,
    /// The client's address as the upstream saw it: the proxy's outgoing address when the
    /// request came through a proxy.
    pub source_ip: IpAddr,
    /// The request body.
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// Returns the first value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

struct Shared {
    routes: Mutex<Routes>,
    requests: Mutex<Vec<RecordedRequest>>,
    handshake_failures: AtomicUsize,
}

/// A running upstream. Dropping it stops the server and closes every connection, held ones
/// included.
pub struct Upstream {
    addr: SocketAddr,
    scheme: &'static str,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Starts an HTTPS upstream with the leaf certificate of [`TestCa::shared`].
    pub fn start(routes: Routes) -> Upstream {
        Self::start_with_ca(TestCa::shared(), routes)
    }

    /// Starts an HTTPS upstream with the leaf certificate of `ca`.
    pub fn start_with_ca(ca: &TestCa, routes: Routes) -> Upstream {
        Self::spawn(routes, Some(TlsAcceptor::from(ca.server_config())))
    }

    /// Starts a plain-HTTP upstream.
    pub fn start_plain(routes: Routes) -> Upstream {
        Self::spawn(routes, None)
    }

    fn spawn(routes: Routes, tls: Option<TlsAcceptor>) -> Upstream {
        let listener = StdTcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("make the upstream listener non-blocking");
        let addr = listener.local_addr().expect("read the bound address");

        let shared = Arc::new(Shared {
            routes: Mutex::new(routes),
            requests: Mutex::new(Vec::new()),
            handshake_failures: AtomicUsize::new(0),
        });
        let scheme = if tls.is_some() { "https" } else { "http" };
        let (shutdown, shutdown_received) = oneshot::channel();

        let thread = std::thread::spawn({
            let shared = Arc::clone(&shared);
            move || run_server(listener, tls, shared, shutdown_received)
        });

        Upstream {
            addr,
            scheme,
            shared,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// Returns the listening address (127.0.0.1 and the port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns the listening port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Returns the URL of `path` on this upstream with host 127.0.0.1, such as
    /// `https://127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        self.url_with_host("127.0.0.1", path)
    }

    /// Returns the URL of `path` with another host name that reaches 127.0.0.1, such as
    /// `localhost`. The leaf certificate names `localhost` and 127.0.0.1 to 127.0.0.9.
    pub fn url_with_host(&self, host: &str, path: &str) -> String {
        format!("{}://{host}:{}{path}", self.scheme, self.port())
    }

    /// Replaces the scripted responses. Requests that arrive afterwards use the new ones.
    pub fn set_routes(&self, routes: Routes) {
        *lock(&self.shared.routes) = routes;
    }

    /// Returns every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Forgets the requests received so far.
    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }

    /// Waits until at least `count` requests have arrived and returns all of them.
    ///
    /// Panics after `timeout`, listing the requests that did arrive.
    pub fn wait_for_requests(&self, count: usize, timeout: Duration) -> Vec<RecordedRequest> {
        let deadline = Instant::now() + timeout;
        loop {
            let requests = self.requests();
            if requests.len() >= count {
                return requests;
            }
            if Instant::now() >= deadline {
                panic!(
                    "upstream received {} of {count} expected requests within {timeout:?}: {requests:#?}",
                    requests.len()
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Returns the number of TLS handshakes that failed, for example because the client did
    /// not trust the test CA.
    pub fn handshake_failures(&self) -> usize {
        self.shared.handshake_failures.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            // The server thread may already be gone if it panicked; join reports that.
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let result = thread.join();
            if result.is_err() && !std::thread::panicking() {
                panic!("the upstream server thread panicked");
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind, so the poison is ignored.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn run_server(
    listener: StdTcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    shutdown: oneshot::Receiver<()>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build the upstream runtime");

    // Dropping the runtime at the end of this function cancels every connection task.
    runtime.block_on(async move {
        let listener = TcpListener::from_std(listener).expect("register the upstream listener");
        tokio::select! {
            _ = accept_loop(listener, tls, shared) => {}
            _ = shutdown => {}
        }
    });
}

async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Accept fails only on resource exhaustion; a short pause lets it recover.
            Err(_) => {
                tokio::time::sleep(POLL_INTERVAL).await;
                continue;
            }
        };
        tokio::spawn(serve_connection(
            stream,
            peer,
            tls.clone(),
            Arc::clone(&shared),
        ));
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
) {
    let http = hyper::server::conn::http1::Builder::new();
    let service = service_fn({
        let shared = Arc::clone(&shared);
        move |request| handle(request, peer.ip(), Arc::clone(&shared))
    });

    // Connection errors (a client that hangs up or times out) are what many tests provoke on
    // purpose, so they are not reported. Failed handshakes are counted.
    let Some(acceptor) = tls else {
        let _ = http.serve_connection(TokioIo::new(stream), service).await;
        return;
    };
    match acceptor.accept(stream).await {
        Ok(stream) => {
            let _ = http.serve_connection(TokioIo::new(stream), service).await;
        }
        Err(_) => {
            shared.handshake_failures.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn handle(
    request: Request<Incoming>,
    source_ip: IpAddr,
    shared: Arc<Shared>,
) -> Result<Response<ReplyBody>, Infallible> {
    let (parts, body) = request.into_parts();
    // A body that fails to arrive in full is recorded as empty; the reply still goes out.
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(_) => Vec::new(),
    };
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_string(), value)
        })
        .collect();
    let recorded = RecordedRequest {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers,
        source_ip,
        body,
    };

    let reply = lock(&shared.routes)
        .find(&recorded.path, source_ip)
        .cloned();
    let reply = reply.unwrap_or_else(|| not_found(&recorded.path));
    lock(&shared.requests).push(recorded);

    Ok(reply.respond().await)
}

fn not_found(path: &str) -> Reply {
    let body = serde_json::json!({ "error": format!("no route for {path} on the test upstream") });
    Reply::json(404, &body.to_string())
}
