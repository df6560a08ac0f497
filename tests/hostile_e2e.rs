//! End-to-end: routewatch probes upstreams and proxies that misbehave on purpose. Each mode
//! must end in its class within the monitor's timeout plus one second, routewatch's memory
//! must stay bounded, and a healthy pair in the same config must keep its schedule. A forced
//! panic inside one probe must stay inside that probe.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::hostile::{HostileServer, Mode, gzip_of_zeros};
use support::metrics::{rss_bytes, sample, sum};
use support::service::Service;
use support::tls::TestCa;
use support::upstream::{MODELS, Reply, Routes, Upstream};

/// Timeout of every hostile monitor.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Ceiling on routewatch's resident memory while it probes hostile peers.
const MAX_RSS_BYTES: u64 = 100 * 1024 * 1024;

/// Time allowed for every pair to get its first verdict.
const FIRST_VERDICT_TIMEOUT: Duration = Duration::from_secs(20);

/// Size of the zeros behind the gzip body; `gzip -9` shrinks them about a thousandfold.
const GZIP_EXPANDED_BYTES: usize = 16 * 1024 * 1024;

/// One hostile case: the monitor, the server, the route, and the verdict expected.
struct Case {
    monitor: &'static str,
    server: HostileServer,
    /// `url` is the probed URL; `None` means the monitor probes the healthy upstream through
    /// the route named `route`, whose proxy is the hostile server.
    url: Option<String>,
    route: &'static str,
    class: &'static str,
    reason: &'static str,
    /// Text the evidence must contain.
    evidence: String,
}

fn case(
    monitor: &'static str,
    mode: Mode,
    scheme: &str,
    class: &'static str,
    reason: &'static str,
    evidence: &str,
) -> Case {
    let server = HostileServer::start(mode);
    Case {
        monitor,
        url: Some(server.url(scheme, "/v1/models")),
        server,
        route: "direct",
        class,
        reason,
        evidence: evidence.to_owned(),
    }
}

fn proxy_case(monitor: &'static str, mode: Mode, route: &'static str, evidence: &str) -> Case {
    Case {
        monitor,
        server: HostileServer::start(mode),
        url: None,
        route,
        class: "proxy",
        reason: "transport.proxy",
        evidence: evidence.to_owned(),
    }
}

fn hostile_cases() -> Vec<Case> {
    let gzip = Arc::new(gzip_of_zeros(GZIP_EXPANDED_BYTES));
    let mut cases = vec![
        case(
            "drip",
            Mode::Drip,
            "http",
            "timeout",
            "transport.timeout",
            "HTTP 200; body incomplete after ",
        ),
        case(
            "endless",
            Mode::Endless,
            "http",
            "ok",
            "expectation.ok",
            "HTTP 200; JSON body",
        ),
        case(
            "gzip-bomb",
            Mode::Gzip(Arc::clone(&gzip)),
            "http",
            "unexpected",
            "expectation.failed",
            "HTTP 200; body \"\u{1f}",
        ),
        case(
            "huge-header",
            Mode::HugeHeader(1024 * 1024),
            "http",
            "unexpected",
            "transport.invalid_response",
            "message head is too large",
        ),
        case(
            "many-headers",
            Mode::ManyHeaders(10_000),
            "http",
            "unexpected",
            "transport.invalid_response",
            "message head is too large",
        ),
        case(
            "redirect-other-host",
            Mode::Redirect("https://other.example.net/v1/models".to_owned()),
            "http",
            "unexpected",
            "expectation.failed",
            "HTTP 302; redirect to https://other.example.net/v1/models; expected 2xx JSON",
        ),
        case(
            "reset",
            Mode::ResetMidBody,
            "http",
            "connect",
            "transport.connect",
            "HTTP 200; body read failed after 10 bytes",
        ),
        case(
            "tls-stall",
            Mode::SilentNoRead,
            "https",
            "timeout",
            "transport.timeout",
            // The route's connect timeout (the largest monitor timeout, here also 2s) covers
            // the handshake and races the probe's timeout, so either message may win.
            "",
        ),
        case(
            "silent",
            Mode::Silent,
            "http",
            "timeout",
            "transport.timeout",
            "no complete answer within 2s",
        ),
        case(
            "garbage",
            Mode::Garbage,
            "http",
            "unexpected",
            "transport.invalid_response",
            "invalid HTTP version parsed",
        ),
        case(
            "bad-chunked",
            Mode::InvalidChunked,
            "http",
            "unexpected",
            "transport.invalid_response",
            "HTTP 200; body read failed after 0 bytes",
        ),
        proxy_case("connect-garbage", Mode::Garbage, "garbage-proxy", ""),
        proxy_case("socks-hangup", Mode::SocksHangup, "socks-hangup", ""),
    ];

    cases.push(redirect_to_self());
    cases.push(case(
        "redirect-login",
        Mode::Redirect("http://127.0.0.1:9/login?next=%2Fv1%2Fmodels".to_owned()),
        "http",
        "waf_html",
        "captive_portal.redirect",
        "HTTP 302; redirect to http://127.0.0.1:9/login?…",
    ));
    cases
}

/// Starts a server whose 302 names its own URL, so a client that followed redirects would
/// loop.
fn redirect_to_self() -> Case {
    // The port is only known after binding, so the Location is a relative URL that resolves
    // to the same path on the same server.
    let server = HostileServer::start(Mode::Redirect("/v1/models".to_owned()));
    Case {
        monitor: "redirect-loop",
        url: Some(server.url("http", "/v1/models")),
        server,
        route: "direct",
        class: "unexpected",
        reason: "expectation.failed",
        evidence: "HTTP 302; redirect to /v1/models; expected 2xx JSON".to_owned(),
    }
}

fn config(cases: &[Case], upstream: &Upstream, ca: &TestCa) -> String {
    let ca_file = ca.ca_file().display();
    let garbage_proxy = cases
        .iter()
        .find(|case| case.route == "garbage-proxy")
        .expect("a garbage proxy case");
    let socks_hangup = cases
        .iter()
        .find(|case| case.route == "socks-hangup")
        .expect("a SOCKS hang-up case");
    let mut text = format!(
        r#"
defaults:
  schedule: every 3s
  timeout: 2s
routes:
  - name: direct
    ca_file: {ca_file}
  - name: garbage-proxy
    proxy: http://127.0.0.1:{garbage}
    ca_file: {ca_file}
  - name: socks-hangup
    proxy: socks5h://127.0.0.1:{socks}
    ca_file: {ca_file}
monitors:
  - name: steady
    url: {steady}
    schedule: every 1s
    routes: [direct]
"#,
        garbage = garbage_proxy.server.port(),
        socks = socks_hangup.server.port(),
        steady = upstream.url("/v1/models"),
    );
    for case in cases {
        let url = case
            .url
            .clone()
            .unwrap_or_else(|| upstream.url("/v1/models"));
        text.push_str(&format!(
            "  - name: {}\n    url: {url}\n    routes: [{}]\n",
            case.monitor, case.route
        ));
    }
    text
}

fn status_pairs(service: &Service) -> Vec<Value> {
    let (code, body) = service.get("/status");
    assert_eq!(code, 200, "GET /status: {body}");
    let document: Value = serde_json::from_str(&body).expect("/status is JSON");
    document["pairs"]
        .as_array()
        .expect("pairs is an array")
        .clone()
}

/// Polls /status until every pair has a verdict, checking memory on each round.
fn wait_for_verdicts(service: &Service, expected: usize) -> Vec<Value> {
    let deadline = Instant::now() + FIRST_VERDICT_TIMEOUT;
    loop {
        assert_rss_bounded(service);
        let pairs = status_pairs(service);
        let done = pairs.iter().filter(|pair| !pair["class"].is_null()).count();
        if pairs.len() == expected && done == expected {
            return pairs;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {expected} pairs have a verdict after {FIRST_VERDICT_TIMEOUT:?}:\n{pairs:#?}\nstderr:\n{}",
            service.stderr()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn assert_rss_bounded(service: &Service) {
    let rss = rss_bytes(service.pid());
    assert!(
        rss < MAX_RSS_BYTES,
        "routewatch uses {rss} bytes of resident memory, over {MAX_RSS_BYTES}"
    );
}

fn find_pair<'a>(pairs: &'a [Value], monitor: &str) -> &'a Value {
    pairs
        .iter()
        .find(|pair| pair["monitor"] == monitor)
        .unwrap_or_else(|| panic!("no pair for monitor {monitor} in {pairs:#?}"))
}

fn steady_probes(service: &Service) -> f64 {
    let (_, metrics) = service.get("/metrics");
    sum(
        &metrics,
        "routewatch_probes_total",
        &[r#"monitor="steady""#, r#"class="ok""#],
    )
}

#[test]
fn hostile_modes_get_their_class() {
    let ca = TestCa::shared();
    let upstream = Upstream::start_with_ca(
        ca,
        Routes::new().route("/v1/models", Reply::json(200, MODELS)),
    );
    let cases = hostile_cases();
    let service = Service::start(&config(&cases, &upstream, ca));

    let pairs = wait_for_verdicts(&service, cases.len() + 1);
    let steady_before = steady_probes(&service);

    // Every mismatch is collected first, so one run shows the whole table.
    let mut mismatches = Vec::new();
    for case in &cases {
        let pair = find_pair(&pairs, case.monitor);
        let evidence = pair["evidence"].as_str().unwrap_or_default();
        let seconds = pair["duration_seconds"].as_f64().unwrap_or(f64::MAX);
        let matches = pair["class"] == case.class
            && pair["reason"] == case.reason
            && evidence.contains(&case.evidence)
            && seconds <= TIMEOUT.as_secs_f64() + 1.0;
        if !matches {
            mismatches.push(format!(
                "{}: expected {} {} with {:?} within {:?} plus 1s, got {} {} with {evidence:?} after {seconds}s",
                case.monitor, case.class, case.reason, case.evidence, TIMEOUT, pair["class"], pair["reason"]
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));

    // routewatch sends no Accept-Encoding and never decompresses: the body it keeps is the
    // compressed bytes, whole, far below what they expand to.
    let gzip = cases
        .iter()
        .find(|case| case.monitor == "gzip-bomb")
        .unwrap();
    let gzip_pair = find_pair(&pairs, "gzip-bomb");
    let compressed = gzip_of_zeros(GZIP_EXPANDED_BYTES).len();
    assert!(
        compressed * 500 < GZIP_EXPANDED_BYTES,
        "gzip ratio too low: {compressed}"
    );
    assert_eq!(gzip_pair["body_bytes"], compressed);
    assert_eq!(gzip_pair["body_truncated"], false);
    for head in gzip.server.heads() {
        assert!(
            !head.to_ascii_lowercase().contains("accept-encoding"),
            "the probe sent Accept-Encoding:\n{head}"
        );
    }

    let endless = find_pair(&pairs, "endless");
    assert_eq!(endless["body_bytes"], 64 * 1024);
    assert_eq!(endless["body_truncated"], true);

    // The healthy pair keeps its one-second schedule while the hostile ones stall.
    std::thread::sleep(Duration::from_secs(4));
    assert_rss_bounded(&service);
    let steady_after = steady_probes(&service);
    assert!(
        steady_after >= steady_before + 3.0,
        "the steady pair ran {} probes in 4s, expected at least 3 on its 1s schedule",
        steady_after - steady_before
    );
    let (_, metrics) = service.get("/metrics");
    assert_eq!(sum(&metrics, "routewatch_probe_panics_total", &[]), 0.0);
}

#[test]
fn injected_panic_stays_in_its_probe() {
    let ca = TestCa::shared();
    let upstream = Upstream::start_with_ca(
        ca,
        Routes::new().route("/v1/models", Reply::json(200, MODELS)),
    );
    let config = format!(
        r#"
defaults:
  schedule: every 1s
  timeout: 2s
routes:
  - name: direct
    ca_file: {ca_file}
monitors:
  - name: steady
    url: {url}
  - name: panic-probe
    url: {url}
"#,
        ca_file = ca.ca_file().display(),
        url = upstream.url("/v1/models"),
    );
    let service = Service::start_with(
        &config,
        &[],
        &[("ROUTEWATCH_FAULT_PANIC_MONITOR", "panic-probe")],
    );

    std::thread::sleep(Duration::from_secs(5));
    let (_, metrics) = service.get("/metrics");
    let panics = sample(
        &metrics,
        r#"routewatch_probe_panics_total{monitor="panic-probe",route="direct"}"#,
    )
    .expect("panic counter of the panicking pair");
    assert!(panics >= 3.0, "only {panics} panics in 5s on a 1s schedule");
    assert_eq!(
        sample(
            &metrics,
            r#"routewatch_probe_panics_total{monitor="steady",route="direct"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        sum(
            &metrics,
            "routewatch_probes_total",
            &[r#"monitor="panic-probe""#]
        ),
        0.0
    );

    // Every tick of the panicking pair ended as a panic or a skip, apart from one in flight.
    let ticks = sample(
        &metrics,
        r#"routewatch_ticks_total{monitor="panic-probe",route="direct"}"#,
    )
    .expect("tick counter");
    let skipped = sample(
        &metrics,
        r#"routewatch_ticks_skipped_total{monitor="panic-probe",route="direct"}"#,
    )
    .expect("skipped tick counter");
    assert!(
        ticks - panics - skipped <= 1.0,
        "ticks {ticks}, panics {panics}, skipped {skipped}"
    );

    // The panic keeps happening on schedule, and the healthy pair is untouched.
    let steady_before = steady_probes(&service);
    std::thread::sleep(Duration::from_secs(3));
    let (_, later) = service.get("/metrics");
    let panics_later = sample(
        &later,
        r#"routewatch_probe_panics_total{monitor="panic-probe",route="direct"}"#,
    )
    .unwrap();
    assert!(panics_later >= panics + 2.0, "{panics} then {panics_later}");
    assert!(steady_probes(&service) >= steady_before + 2.0);
    assert_eq!(service.get("/healthz"), (200, "ok\n".to_owned()));
    assert!(
        service
            .stderr()
            .contains("probe panicked; the pair keeps its schedule"),
        "stderr:\n{}",
        service.stderr()
    );
}
