//! Load: 50 concurrent clients read /metrics and /status while 1,000 pairs probe a local
//! upstream every 10 seconds. No request may fail, and probes must stay on schedule. The
//! run lasts `ROUTEWATCH_LOAD_SECONDS` seconds (default 20, to keep CI short; 60 is the full
//! run). Also checks the listener's 404, 405 and 413 responses.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::metrics::{sample, sum};
use support::service::{Service, http_get};
use support::upstream::{MODELS, Reply, Routes, Upstream};

/// Concurrent HTTP clients.
const CLIENTS: usize = 50;

/// Monitors times routes gives the pairs.
const MONITORS: usize = 100;
const ROUTES: usize = 10;

/// Schedule period of every pair.
const PERIOD: Duration = Duration::from_secs(10);

/// Pause between two requests of one client, so the load is steady rather than a spin.
const CLIENT_PAUSE: Duration = Duration::from_millis(250);

fn load_duration() -> Duration {
    let seconds = std::env::var("ROUTEWATCH_LOAD_SECONDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(20);
    Duration::from_secs(seconds)
}

fn config(upstream: &Upstream) -> String {
    let mut text = String::from("defaults:\n  schedule: every 10s\n  timeout: 5s\nroutes:\n");
    for route in 0..ROUTES {
        text.push_str(&format!("  - name: r{route}\n"));
    }
    text.push_str("monitors:\n");
    for monitor in 0..MONITORS {
        text.push_str(&format!(
            "  - name: m{monitor}\n    url: {}\n",
            upstream.url("/v1/models")
        ));
    }
    text
}

/// Runs one client until `deadline`, returning each request's latency; panics on a failure.
fn client(service_addr: std::net::SocketAddr, index: usize, deadline: Instant) -> Vec<Duration> {
    let mut latencies = Vec::new();
    let mut round = 0usize;
    while Instant::now() < deadline {
        let path = match (index + round) % 3 {
            0 => "/metrics".to_owned(),
            1 => "/status".to_owned(),
            _ => format!("/status?monitor=m{}", round % MONITORS),
        };
        let start = Instant::now();
        let response = http_get(service_addr, &path)
            .unwrap_or_else(|error| panic!("client {index}: GET {path} failed: {error}"));
        latencies.push(start.elapsed());
        assert_eq!(response.status, 200, "client {index}: GET {path}");
        assert!(
            !response.body.is_empty(),
            "client {index}: GET {path} had no body"
        );
        round += 1;
        std::thread::sleep(CLIENT_PAUSE);
    }
    latencies
}

#[test]
fn thousand_pairs_under_fifty_clients() {
    let upstream =
        Upstream::start_plain(Routes::new().route("/v1/models", Reply::json(200, MODELS)));
    let service = Service::start(&config(&upstream));
    let duration = load_duration();
    let started = Instant::now();
    let deadline = started + duration;

    let addr = service.addr();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|index| std::thread::spawn(move || client(addr, index, deadline)))
        .collect();

    // NOTE: a pair whose spread first probe falls at the end of the first period can still
    // be running when the schedule's first tick (itself late under load) arrives, and that
    // tick is skipped. Skips therefore count from the middle of the second period on.
    std::thread::sleep(PERIOD.mul_f64(1.5).min(duration));
    let (_, early) = service.get("/metrics");
    let skipped_early = sum(&early, "routewatch_ticks_skipped_total", &[]);
    let mut latencies: Vec<Duration> = clients
        .into_iter()
        .flat_map(|client| client.join().expect("a client thread panicked"))
        .collect();
    let elapsed = started.elapsed();

    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    let p50 = latencies[latencies.len() / 2];
    println!(
        "load: {} requests from {CLIENTS} clients in {elapsed:?}; p50 {p50:?}, p99 {p99:?}, max {:?}",
        latencies.len(),
        latencies.last().unwrap()
    );

    let (_, metrics) = service.get("/metrics");
    let skipped = sum(&metrics, "routewatch_ticks_skipped_total", &[]);
    let ticks = sum(&metrics, "routewatch_ticks_total", &[]);
    let probes = sum(&metrics, "routewatch_probes_total", &[]);
    let ok = sum(&metrics, "routewatch_probes_total", &[r#"class="ok""#]);
    let panics = sum(&metrics, "routewatch_probe_panics_total", &[]);
    println!("load: {ticks} ticks, {probes} probes ({ok} ok), {skipped} skipped");

    println!("load: {skipped_early} ticks skipped in the first period");
    assert_eq!(
        skipped - skipped_early,
        0.0,
        "ticks skipped after the first period"
    );
    assert_eq!(panics, 0.0);
    // First probes are spread over the first period, then each pair ticks once per period:
    // by now every pair has ticked at least (elapsed / period) times, allowing 5% for ticks
    // that the scheduler fires a little late under load. Every tick ended as a probe or a
    // skip, apart from at most one probe per pair still in flight.
    let pairs = (MONITORS * ROUTES) as f64;
    let periods = (elapsed.as_secs_f64() / PERIOD.as_secs_f64()).floor();
    assert!(
        ticks >= pairs * periods * 0.95,
        "{ticks} ticks in {elapsed:?}, expected about {} for {pairs} pairs",
        pairs * periods
    );
    let in_flight = ticks - probes - skipped;
    assert!(
        (0.0..=pairs).contains(&in_flight),
        "{ticks} ticks, {probes} probes, {skipped} skipped"
    );
    assert_eq!(ok, probes, "every probe of the healthy upstream is ok");
    assert_eq!(
        sample(
            &metrics,
            r#"routewatch_ticks_skipped_total{monitor="m0",route="r0"}"#
        ),
        Some(0.0)
    );
}

/// Sends raw request bytes and returns the status code and the whole response text.
fn raw_request(service: &Service, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(service.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    // The server may close while unread request bytes remain; what arrived is enough.
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}

#[test]
fn listener_rejects_bad_requests() {
    let service = Service::start(
        "monitors:\n  - name: closed\n    url: http://127.0.0.1:9/\n    schedule: every 60s\n",
    );

    let (status, body) = service.get("/no-such-path");
    assert_eq!(status, 404);
    assert_eq!(
        body,
        "not found (endpoints: /metrics, /status, /healthz, POST /-/reload)\n"
    );

    let (status, text) = raw_request(
        &service,
        "DELETE /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 405);
    assert!(text.contains("\r\nallow: GET, HEAD\r\n"), "{text}");

    let (status, text) = raw_request(
        &service,
        "GET /-/reload HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 405);
    assert!(text.contains("\r\nallow: POST\r\n"), "{text}");

    let body = "x".repeat(2048);
    let (status, text) = raw_request(
        &service,
        &format!(
            "POST /-/reload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(status, 413);
    assert!(text.ends_with("request body too large\n"), "{text}");

    let (status, _) = raw_request(
        &service,
        "POST /-/reload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(status, 413);

    let (status, _) = raw_request(
        &service,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1025\r\n\r\n",
    );
    assert_eq!(status, 413);
}
