//! Probe: one request through one route, returning plain facts.
//!
//! The probe sends the monitor's request with the monitor's timeout, reads at most the body cap,
//! and records what happened: status, headers, body prefix and timings, or the transport
//! failure sorted into a [`TransportKind`] by walking the error's source chain. It draws no
//! conclusions; the classifier does.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::classify::{HttpResponse, Observation, TransportError, TransportKind};
use crate::config::Monitor;
use crate::redact::Redactor;
use crate::route::RouteClient;

/// The facts one probe recorded, with timings.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// The response or the transport failure.
    pub observation: Observation,
    /// When the probe started (wall clock, for display).
    pub started_at: SystemTime,
    /// Time from start until the status line and headers arrived.
    pub time_to_headers: Option<Duration>,
    /// Time from start until the body was read (up to the cap) or the probe failed.
    pub total: Duration,
    /// The peer the connection went to: the endpoint, or the proxy on a proxied route.
    pub remote_addr: Option<SocketAddr>,
    /// Requests sent to reach this observation: 1, plus one per retry.
    pub attempts: u32,
}

/// Sends the monitor's request through the route and reads the response.
///
/// Never fails: every failure becomes an [`Observation::Transport`]. The body, header values
/// and error details pass through `redactor` before the report is returned.
pub async fn run(route: &RouteClient, monitor: &Monitor, redactor: &Redactor) -> ProbeReport {
    run_with_timeout(route, monitor, redactor, monitor.timeout).await
}

/// Like [`run`], but bounded by `timeout` instead of the monitor's own timeout (for retries,
/// which share the monitor's timeout).
pub async fn run_with_timeout(
    route: &RouteClient,
    monitor: &Monitor,
    redactor: &Redactor,
    timeout: Duration,
) -> ProbeReport {
    let started_at = SystemTime::now();
    let start = Instant::now();
    let mut report = ProbeReport {
        observation: Observation::Transport(TransportError {
            kind: TransportKind::Timeout,
            detail: format!("no complete answer within {}", humanize(timeout)),
        }),
        started_at,
        time_to_headers: None,
        total: Duration::ZERO,
        remote_addr: None,
        attempts: 1,
    };

    // The outer timeout covers connect, headers and the capped body read together.
    let mut body = BodyProgress::default();
    let exchange = exchange(route, monitor, redactor, start, &mut report, &mut body);
    if tokio::time::timeout(timeout, exchange).await.is_err() {
        tracing::debug!(monitor = %monitor.name, route = %route.name, "probe timed out");
        if let Some(status) = body.status {
            // Headers arrived but the body did not finish: a body that drips or stalls is no
            // complete response, whatever its status line promised.
            report.observation = Observation::Transport(TransportError {
                kind: TransportKind::Timeout,
                detail: format!(
                    "HTTP {status}; body incomplete after {} bytes: no complete answer within {}",
                    body.bytes,
                    humanize(timeout)
                ),
            });
        }
    }
    report.total = start.elapsed();
    redactor.redact_observation(&mut report.observation);
    report
}

/// How far the body read got, kept outside the exchange so that a timeout can report it.
#[derive(Debug, Default)]
struct BodyProgress {
    /// The status, once the headers arrived.
    status: Option<u16>,
    /// Body bytes read so far.
    bytes: usize,
}

async fn exchange(
    route: &RouteClient,
    monitor: &Monitor,
    redactor: &Redactor,
    start: Instant,
    report: &mut ProbeReport,
    progress: &mut BodyProgress,
) {
    let response = match build_request(route, monitor).send().await {
        Ok(response) => response,
        Err(error) => {
            report.observation = Observation::Transport(describe_error(&error, route, redactor));
            return;
        }
    };
    report.time_to_headers = Some(start.elapsed());
    report.remote_addr = response.remote_addr();

    let status = response.status().as_u16();
    let headers = collect_headers(response.headers());
    let mut http = HttpResponse {
        status,
        headers,
        body: Vec::new(),
        body_truncated: false,
    };

    progress.status = Some(status);
    match read_capped_body(response, monitor.max_body_bytes, &mut http, progress).await {
        Ok(()) => report.observation = Observation::Response(http),
        Err(error) => {
            tracing::debug!(
                monitor = %monitor.name,
                route = %route.name,
                error = %redactor.redact(&error_chain(&error)),
                "body read failed",
            );
            report.observation = Observation::Transport(TransportError {
                kind: body_error_kind(&error),
                detail: format!(
                    "HTTP {status}; body read failed after {} bytes: {}",
                    http.body.len(),
                    redactor.redact(&error_chain(&error))
                ),
            });
        }
    }
}

fn build_request(route: &RouteClient, monitor: &Monitor) -> reqwest::RequestBuilder {
    let method =
        reqwest::Method::from_bytes(monitor.method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut request = route.client.request(method, monitor.url.clone());
    for (name, value) in &monitor.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    if let Some(body) = &monitor.body {
        request = request.body(body.clone());
    }
    request
}

fn collect_headers(headers: &reqwest::header::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Reads body chunks until the cap; the rest of the body is never buffered.
async fn read_capped_body(
    mut response: reqwest::Response,
    cap: usize,
    http: &mut HttpResponse,
    progress: &mut BodyProgress,
) -> Result<(), reqwest::Error> {
    while let Some(chunk) = response.chunk().await? {
        let room = cap - http.body.len();
        if chunk.len() >= room {
            http.body.extend_from_slice(&chunk[..room]);
            progress.bytes = http.body.len();
            http.body_truncated =
                chunk.len() > room || response.chunk().await.ok().flatten().is_some();
            return Ok(());
        }
        http.body.extend_from_slice(&chunk);
        progress.bytes = http.body.len();
    }
    Ok(())
}

/// Sorts a failure while reading the body: invalid framing (a bad chunk size line) is a
/// protocol error, anything else (a reset, an early close) broke the connection.
fn body_error_kind(error: &reqwest::Error) -> TransportKind {
    let invalid = has_io_kind(error, std::io::ErrorKind::InvalidData)
        || has_io_kind(error, std::io::ErrorKind::InvalidInput)
        || has_hyper_parse_error(error);
    if invalid {
        TransportKind::Protocol
    } else {
        TransportKind::Connect
    }
}

/// Sorts a request error into a transport kind by walking its source chain.
///
/// reqwest reports several distinct failures as "connect" errors: a TLS handshake failure, a
/// SOCKS refusal and an unreachable proxy all arrive that way, so the chain's inner errors decide.
fn describe_error(
    error: &reqwest::Error,
    route: &RouteClient,
    redactor: &Redactor,
) -> TransportError {
    let chain = error_chain(error);
    let kind = transport_kind(error, &chain, route.proxied);
    tracing::debug!(route = %route.name, error = %redactor.redact(&chain), "request failed");
    TransportError {
        kind,
        detail: redactor.redact(&summarize_chain(error, kind)),
    }
}

/// Returns one line for an operator: what failed, then the innermost causes. reqwest's outer
/// wrappers ("error sending request for url (...)", "client error (Connect)") add nothing
/// that the class does not already state, so they are left out.
fn summarize_chain(error: &reqwest::Error, kind: TransportKind) -> String {
    let stage = match kind {
        TransportKind::Timeout => "timed out",
        TransportKind::Dns => "DNS lookup failed",
        TransportKind::Connect => "connection failed",
        TransportKind::Tls => "TLS handshake failed",
        TransportKind::Proxy => "proxy failed",
        TransportKind::Protocol => "invalid HTTP response",
    };
    let causes: Vec<String> = sources(error)
        .skip(1)
        .map(|source| source.to_string())
        .filter(|text| !text.starts_with("client error (") && !text.is_empty())
        .collect();
    let mut innermost: Vec<&str> = Vec::new();
    for cause in causes.iter().rev().take(2) {
        if innermost
            .iter()
            .all(|kept| !cause.contains(kept) && !kept.contains(cause.as_str()))
        {
            innermost.insert(0, cause);
        }
    }
    // The endpoint's host names what failed, except when the proxy failed before reaching it.
    let host = error
        .url()
        .and_then(|url| url.host_str())
        .filter(|_| kind != TransportKind::Proxy);
    match host {
        Some(host) if innermost.is_empty() => format!("{stage} ({host})"),
        Some(host) => format!("{stage} ({host}): {}", innermost.join(": ")),
        None if innermost.is_empty() => stage.to_owned(),
        None => format!("{stage}: {}", innermost.join(": ")),
    }
}

fn transport_kind(error: &reqwest::Error, chain: &str, proxied: bool) -> TransportKind {
    let lower = chain.to_ascii_lowercase();
    if error.is_timeout() || has_io_kind(error, std::io::ErrorKind::TimedOut) {
        return TransportKind::Timeout;
    }
    if has_rustls_error(error) || is_tls_text(&lower) {
        return TransportKind::Tls;
    }
    if lower.contains("dns error") || lower.contains("failed to lookup address") {
        return TransportKind::Dns;
    }
    // A SOCKS reply that the target refused or could not be reached means the proxy worked and
    // the endpoint failed, so it is a connect failure seen from the proxy's side.
    if proxied
        && SOCKS_TARGET_FAILURES
            .iter()
            .any(|marker| lower.contains(marker))
    {
        return TransportKind::Connect;
    }
    // On a proxied route the TCP connection goes to the proxy, so anything else that fails before
    // a response (refused, reset, CONNECT or SOCKS refusal) is the proxy's failure.
    if proxied
        && (error.is_connect()
            || lower.contains("tunnel")
            || lower.contains("socks")
            || lower.contains("proxy"))
    {
        return TransportKind::Proxy;
    }
    // hyper rejects a status line that is not HTTP and a header section over its limits
    // (about 400 KiB, or more than 100 headers) as a parse error.
    if has_hyper_parse_error(error) {
        return TransportKind::Protocol;
    }
    TransportKind::Connect
}

/// SOCKS5 reply texts (as hyper-util 0.1 formats them) for a target the proxy could not reach.
const SOCKS_TARGET_FAILURES: &[&str] = &[
    "socks error: connection refused",
    "socks error: host unreachable",
    "socks error: network unreachable",
    "socks error: ttl expired",
];

fn has_hyper_parse_error(error: &reqwest::Error) -> bool {
    sources(error).any(|source| {
        source
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_parse)
    })
}

fn is_tls_text(lower: &str) -> bool {
    [
        "invalid peer certificate",
        "tls handshake",
        "received fatal alert",
        "certificate",
        "corrupt message",
        "peer is incompatible",
    ]
    .iter()
    .any(|marker| lower.contains(marker))
}

fn has_rustls_error(error: &reqwest::Error) -> bool {
    sources(error).any(|source| {
        source.is::<rustls::Error>()
            || source
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.is::<rustls::Error>())
    })
}

fn has_io_kind(error: &reqwest::Error, kind: std::io::ErrorKind) -> bool {
    sources(error).any(|source| {
        source
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == kind)
    })
}

fn sources<'a>(
    error: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(error), |current: &&'a (dyn StdError + 'static)| {
        let current: &'a (dyn StdError + 'static) = *current;
        current.source()
    })
}

/// Joins an error and its sources with ": ", skipping a source whose text repeats its parent.
pub fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for source in sources(error) {
        let text = source.to_string();
        if parts.last().is_none_or(|last| !last.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

fn humanize(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}
