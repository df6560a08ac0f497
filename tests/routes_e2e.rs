//! End-to-end: the routewatch binary probes a local HTTPS upstream directly and through real
//! tinyproxy and microsocks processes, and /status and /metrics show the right class per route.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::net::{SilentListener, closed_port};
use support::proxy::{MICROSOCKS_EGRESS, Microsocks, TINYPROXY_EGRESS, Tinyproxy};
use support::service::Service;
use support::tls::TestCa;
use support::upstream::{
    CLOUDFLARE_BLOCK_HTML, MODELS, OPENAI_UNSUPPORTED_REGION, Reply, Routes, Upstream,
};

const SOCKS_USER: &str = "rwuser";
const SOCKS_PASSWORD: &str = "s0cks-Pa55-word-7781";

/// Time allowed for every pair to get its first verdict.
const FIRST_VERDICT_TIMEOUT: Duration = Duration::from_secs(20);

/// Polls /status until every pair has a class, and returns the pairs.
fn wait_for_verdicts(service: &Service, expected_pairs: usize) -> Vec<Value> {
    let deadline = Instant::now() + FIRST_VERDICT_TIMEOUT;
    loop {
        let (status, body) = service.get("/status");
        assert_eq!(status, 200, "GET /status: {body}");
        let document: Value = serde_json::from_str(&body).expect("/status is JSON");
        let pairs = document["pairs"]
            .as_array()
            .expect("pairs is an array")
            .clone();
        let done = pairs.iter().filter(|pair| !pair["class"].is_null()).count();
        if pairs.len() == expected_pairs && done == expected_pairs {
            return pairs;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {expected_pairs} pairs have a verdict after {FIRST_VERDICT_TIMEOUT:?}:\n{body}\nstderr:\n{}",
            service.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn pair<'a>(pairs: &'a [Value], monitor: &str, route: &str) -> &'a Value {
    pairs
        .iter()
        .find(|pair| pair["monitor"] == monitor && pair["route"] == route)
        .unwrap_or_else(|| panic!("no pair ({monitor}, {route}) in {pairs:#?}"))
}

fn assert_line(metrics: &str, line: &str) {
    assert!(
        metrics.lines().any(|candidate| candidate == line),
        "missing exposition line {line:?} in:\n{metrics}"
    );
}

#[test]
fn monitor_class_differs_by_route() {
    let ca = TestCa::shared();
    let upstream = Upstream::start_with_ca(
        ca,
        Routes::new()
            .route("/v1/models", Reply::json(200, MODELS))
            .for_source(
                TINYPROXY_EGRESS,
                Reply::json(403, OPENAI_UNSUPPORTED_REGION),
            )
            .for_source(MICROSOCKS_EGRESS, Reply::html(403, CLOUDFLARE_BLOCK_HTML)),
    );
    let tinyproxy = Tinyproxy::start();
    let microsocks = Microsocks::start(SOCKS_USER, SOCKS_PASSWORD);
    let dead_proxy = format!(
        "socks5h://{SOCKS_USER}:{SOCKS_PASSWORD}@127.0.0.1:{}",
        closed_port()
    );
    let ca_file = ca.ca_file().display().to_string();
    let config = format!(
        r#"
defaults:
  schedule: every 2s
  timeout: 3s
routes:
  - name: direct
    ca_file: {ca_file}
  - name: via-http
    proxy: {http_proxy}
    ca_file: {ca_file}
  - name: via-socks
    proxy: socks5h://{SOCKS_USER}:${{SOCKS_PASSWORD}}@127.0.0.1:{socks_port}
    ca_file: {ca_file}
  - name: dead-proxy
    proxy: {dead_proxy}
    ca_file: {ca_file}
monitors:
  - name: api
    url: {url}
"#,
        http_proxy = tinyproxy.url(),
        socks_port = microsocks.port(),
        url = upstream.url("/v1/models"),
    );
    // A direct route must stay direct even when the environment names a proxy.
    let poisoned_proxy = format!("http://127.0.0.1:{}", closed_port());
    let service = Service::start_with(
        &config,
        &[],
        &[
            ("SOCKS_PASSWORD", SOCKS_PASSWORD),
            ("HTTP_PROXY", &poisoned_proxy),
            ("HTTPS_PROXY", &poisoned_proxy),
            ("ALL_PROXY", &poisoned_proxy),
        ],
    );

    let pairs = wait_for_verdicts(&service, 4);

    let direct = pair(&pairs, "api", "direct");
    assert_eq!(direct["class"], "ok");
    assert_eq!(direct["reason"], "expectation.ok");
    assert_eq!(direct["http_status"], 200);
    assert_eq!(direct["proxy"], Value::Null);
    assert_eq!(direct["url"], upstream.url("/v1/models"));
    assert_eq!(direct["schedule"], "every 2s");

    let geo = pair(&pairs, "api", "via-http");
    assert_eq!(geo["class"], "geo_block");
    assert_eq!(geo["http_status"], 403);
    assert_eq!(
        geo["proxy"],
        tinyproxy.url().trim_end_matches('/').to_owned() + "/"
    );
    assert!(
        geo["evidence"]
            .as_str()
            .unwrap()
            .contains("unsupported_country_region_territory"),
        "evidence: {}",
        geo["evidence"]
    );

    let waf = pair(&pairs, "api", "via-socks");
    assert_eq!(waf["class"], "waf_html");
    assert_eq!(waf["http_status"], 403);
    assert_eq!(
        waf["proxy"],
        format!(
            "socks5h://{SOCKS_USER}:[REDACTED]@127.0.0.1:{}",
            microsocks.port()
        )
    );

    let dead = pair(&pairs, "api", "dead-proxy");
    assert_eq!(dead["class"], "proxy");
    assert_eq!(dead["http_status"], 0);
    assert_eq!(dead["body_snippet"], "");

    let sources: Vec<String> = upstream
        .requests()
        .iter()
        .map(|request| request.source_ip.to_string())
        .collect();
    for expected in ["127.0.0.1", TINYPROXY_EGRESS, MICROSOCKS_EGRESS] {
        assert!(
            sources.iter().any(|source| source == expected),
            "no request from {expected}: {sources:?}"
        );
    }

    let (_, metrics) = service.get("/metrics");
    assert_line(
        &metrics,
        r#"routewatch_probe_success{monitor="api",route="direct"} 1"#,
    );
    assert_line(
        &metrics,
        r#"routewatch_probe_success{monitor="api",route="via-http"} 0"#,
    );
    assert_line(
        &metrics,
        r#"routewatch_probe_class{class="geo_block",monitor="api",route="via-http"} 1"#,
    );
    assert_line(
        &metrics,
        r#"routewatch_probe_class{class="ok",monitor="api",route="via-http"} 0"#,
    );
    assert_line(
        &metrics,
        r#"routewatch_probe_class{class="waf_html",monitor="api",route="via-socks"} 1"#,
    );
    assert_line(
        &metrics,
        r#"routewatch_probe_class{class="proxy",monitor="api",route="dead-proxy"} 1"#,
    );
    assert_line(
        &metrics,
        r#"routewatch_probe_http_status_code{monitor="api",route="via-socks"} 403"#,
    );
    assert_line(
        &metrics,
        r#"routewatch_probe_http_status_code{monitor="api",route="dead-proxy"} 0"#,
    );
    assert_line(
        &metrics,
        r#"routewatch_probe_interval_seconds{monitor="api",route="direct"} 2"#,
    );
    assert_line(&metrics, r#"routewatch_config_last_reload_successful 1"#);
    assert_line(
        &metrics,
        r#"routewatch_probes_total{class="auth",monitor="api",route="direct"} 0"#,
    );

    let (_, status) = service.get("/status");
    for (name, output) in [
        ("/status", status),
        ("/metrics", metrics),
        ("stderr", service.stderr()),
        ("stdout", service.stdout()),
    ] {
        assert!(
            !output.contains(SOCKS_PASSWORD),
            "the SOCKS password appears in {name}:\n{output}"
        );
    }
}

#[test]
fn failures_are_classified_by_kind() {
    let ca = TestCa::shared();
    let upstream = Upstream::start_with_ca(
        ca,
        Routes::new()
            .route("/v1/models", Reply::unauthorized())
            .route("/huge", Reply::huge(5 * 1024 * 1024)),
    );
    let silent = SilentListener::start();
    let config = format!(
        r#"
defaults:
  schedule: every 3s
  timeout: 1s
routes:
  - name: direct
    ca_file: {ca_file}
monitors:
  - name: closed
    url: https://127.0.0.1:{closed}/v1/models
  - name: silent
    url: https://127.0.0.1:{silent}/v1/models
  - name: unauthorized
    url: {unauthorized}
  - name: huge
    url: {huge}
    timeout: 5s
"#,
        ca_file = ca.ca_file().display(),
        closed = closed_port(),
        silent = silent.port(),
        unauthorized = upstream.url("/v1/models"),
        huge = upstream.url("/huge"),
    );
    let service = Service::start(&config);

    let pairs = wait_for_verdicts(&service, 4);

    let closed = pair(&pairs, "closed", "direct");
    assert_eq!(closed["class"], "connect");
    assert_eq!(closed["http_status"], 0);

    let silent_pair = pair(&pairs, "silent", "direct");
    assert_eq!(silent_pair["class"], "timeout");
    let waited = silent_pair["duration_seconds"].as_f64().unwrap();
    assert!(
        (1.0..1.5).contains(&waited),
        "timeout took {waited}s, expected 1s plus a small margin"
    );
    assert_eq!(silent_pair["evidence"], "no complete answer within 1s");

    let unauthorized = pair(&pairs, "unauthorized", "direct");
    assert_eq!(unauthorized["class"], "auth");
    assert_eq!(unauthorized["http_status"], 401);

    let huge = pair(&pairs, "huge", "direct");
    assert_eq!(huge["class"], "ok");
    assert_eq!(huge["body_bytes"], 64 * 1024);
    assert_eq!(huge["body_truncated"], true);
}

#[test]
fn healthz_and_unknown_paths() {
    let config =
        "monitors:\n  - name: closed\n    url: http://127.0.0.1:9/\n    schedule: every 60s\n";
    let service = Service::start(config);
    assert_eq!(service.get("/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(service.get("/nope").0, 404);
    let (status, body) = service.get("/status?class=geo");
    assert_eq!(status, 400);
    assert!(body.starts_with("unknown class \"geo\""), "{body}");
}
