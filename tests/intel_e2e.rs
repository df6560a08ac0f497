//! End-to-end: egress identity from a trace URL, history windows and flapping, per-monitor
//! diagnoses and retries, with the routewatch binary, a local HTTPS upstream and real
//! tinyproxy and microsocks processes.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::net::closed_port;
use support::proxy::{MICROSOCKS_EGRESS, Microsocks, TINYPROXY_EGRESS, Tinyproxy};
use support::service::Service;
use support::tls::TestCa;
use support::upstream::{
    CLOUDFLARE_BLOCK_HTML, MODELS, OPENAI_UNSUPPORTED_REGION, Reply, Routes, Upstream,
};

const SOCKS_USER: &str = "rwuser";
const SOCKS_PASSWORD: &str = "s0cks-Pa55-word-4417";
const TRACE_PATH: &str = "/cdn-cgi/trace";
const SERVER_ERROR: &str =
    r#"{"error":{"message":"The server had an error","type":"server_error"}}"#;

/// Time allowed for a condition on /status to become true.
const WAIT_TIMEOUT: Duration = Duration::from_secs(20);

fn trace(ip: &str, country: &str, colo: &str) -> Reply {
    Reply::text(
        200,
        &format!(
            "fl=1f1\nh=127.0.0.1\nip={ip}\nts=1700000000.1\ncolo={colo}\nhttp=http/1.1\nloc={country}\ntls=TLSv1.3\n"
        ),
    )
}

/// Adds the trace path: US from 127.0.0.1, HK through tinyproxy, SG through microsocks.
fn traces(routes: Routes) -> Routes {
    routes
        .route(TRACE_PATH, trace("127.0.0.1", "US", "SJC"))
        .for_source(TINYPROXY_EGRESS, trace(TINYPROXY_EGRESS, "HK", "HKG"))
        .for_source(MICROSOCKS_EGRESS, trace(MICROSOCKS_EGRESS, "SG", "SIN"))
}

fn status(service: &Service) -> Value {
    let (code, body) = service.get("/status");
    assert_eq!(code, 200, "GET /status: {body}");
    serde_json::from_str(&body).expect("/status is JSON")
}

/// Polls /status until `done` holds, and returns that document.
fn wait_for(service: &Service, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT_TIMEOUT;
    loop {
        let document = status(service);
        if done(&document) {
            return document;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not reached after {WAIT_TIMEOUT:?}:\n{document:#}\nstderr:\n{}",
            service.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn pair<'a>(document: &'a Value, monitor: &str, route: &str) -> &'a Value {
    document["pairs"]
        .as_array()
        .expect("pairs is an array")
        .iter()
        .find(|pair| pair["monitor"] == monitor && pair["route"] == route)
        .unwrap_or_else(|| panic!("no pair ({monitor}, {route}) in {document:#}"))
}

fn assert_line(metrics: &str, line: &str) {
    assert!(
        metrics.lines().any(|candidate| candidate == line),
        "missing exposition line {line:?} in:\n{metrics}"
    );
}

fn metric_lines<'a>(metrics: &'a str, prefix: &str) -> Vec<&'a str> {
    metrics
        .lines()
        .filter(|line| line.starts_with(prefix))
        .collect()
}

#[test]
fn diagnoses_and_egress_through_real_proxies() {
    let ca = TestCa::shared();
    let upstream = Upstream::start_with_ca(
        ca,
        traces(Routes::new())
            .route("/ok", Reply::json(200, MODELS))
            .route("/auth", Reply::unauthorized())
            .route("/down", Reply::json(503, SERVER_ERROR))
            .route("/geo", Reply::json(200, MODELS))
            .for_source(
                TINYPROXY_EGRESS,
                Reply::json(403, OPENAI_UNSUPPORTED_REGION),
            )
            .for_source(
                MICROSOCKS_EGRESS,
                Reply::json(403, OPENAI_UNSUPPORTED_REGION),
            )
            .route("/mixed", Reply::json(200, MODELS))
            .for_source(TINYPROXY_EGRESS, Reply::unauthorized())
            .for_source(MICROSOCKS_EGRESS, Reply::html(403, CLOUDFLARE_BLOCK_HTML))
            .route("/alldown", Reply::unauthorized())
            .for_source(
                TINYPROXY_EGRESS,
                Reply::json(403, OPENAI_UNSUPPORTED_REGION),
            )
            .for_source(MICROSOCKS_EGRESS, Reply::html(403, CLOUDFLARE_BLOCK_HTML)),
    );
    let tinyproxy = Tinyproxy::start();
    let microsocks = Microsocks::start(SOCKS_USER, SOCKS_PASSWORD);
    let ca_file = ca.ca_file().display().to_string();
    let trace_url = upstream.url(TRACE_PATH);
    let config = format!(
        r#"
defaults:
  schedule: every 1s
  timeout: 3s
routes:
  - name: direct
    ca_file: {ca_file}
    trace_url: {trace_url}
    trace_every: 1s
  - name: via-http
    proxy: {http_proxy}
    ca_file: {ca_file}
    trace_url: {trace_url}
    trace_every: 1s
  - name: via-socks
    proxy: socks5h://{SOCKS_USER}:${{SOCKS_PASSWORD}}@127.0.0.1:{socks_port}
    ca_file: {ca_file}
    trace_url: {trace_url}
    trace_every: 1s
  - name: dead-proxy
    proxy: socks5h://127.0.0.1:{dead_port}
monitors:
  - name: healthy
    url: {ok}
    routes: [direct, via-http, via-socks]
  - name: credential
    url: {auth}
    routes: [direct, via-http, via-socks]
  - name: provider
    url: {down}
    routes: [direct, via-socks]
  - name: geo
    url: {geo}
    routes: [direct, via-http, via-socks]
  - name: mixed
    url: {mixed}
    routes: [direct, via-http, via-socks]
  - name: alldown
    url: {alldown}
    routes: [direct, via-http, via-socks]
  - name: route-a
    url: {ok}
    routes: [direct, dead-proxy]
  - name: route-b
    url: {ok}
    routes: [direct, dead-proxy]
"#,
        http_proxy = tinyproxy.url(),
        socks_port = microsocks.port(),
        dead_port = closed_port(),
        ok = upstream.url("/ok"),
        auth = upstream.url("/auth"),
        down = upstream.url("/down"),
        geo = upstream.url("/geo"),
        mixed = upstream.url("/mixed"),
        alldown = upstream.url("/alldown"),
    );
    let service = Service::start_with(&config, &[], &[("SOCKS_PASSWORD", SOCKS_PASSWORD)]);

    let expected = json!([
        {"monitor": "alldown", "kind": "all_down",
         "sentence": "no route is ok: auth on direct; geo_block on via-http; waf_html on via-socks"},
        {"monitor": "credential", "kind": "credential_problem",
         "sentence": "auth on every route (direct, via-http and via-socks); the key or account is refused"},
        {"monitor": "geo", "kind": "geo_partial",
         "sentence": "geo_block on via-http (egress HK) and via-socks (egress SG); ok on direct (egress US)"},
        {"monitor": "healthy", "kind": "healthy",
         "sentence": "ok on every route (direct, via-http and via-socks)"},
        {"monitor": "mixed", "kind": "mixed",
         "sentence": "ok on direct; auth on via-http; waf_html on via-socks"},
        {"monitor": "provider", "kind": "provider_problem",
         "sentence": "server_error on every route (direct and via-socks); the provider is failing"},
        {"monitor": "route-a", "kind": "route_problem",
         "sentence": "proxy on dead-proxy for every monitor on the route; ok on direct"},
        {"monitor": "route-b", "kind": "route_problem",
         "sentence": "proxy on dead-proxy for every monitor on the route; ok on direct"},
    ]);
    let document = wait_for(&service, "every expected diagnosis", |document| {
        document["diagnoses"] == expected
            && pair(document, "geo", "via-http")["evidence"]
                .as_str()
                .is_some_and(|evidence| evidence.contains("egress country"))
    });

    for (route, ip, country, colo) in [
        ("direct", "127.0.0.1", "US", "SJC"),
        ("via-http", TINYPROXY_EGRESS, "HK", "HKG"),
        ("via-socks", MICROSOCKS_EGRESS, "SG", "SIN"),
    ] {
        let egress = &pair(&document, "geo", route)["egress"];
        assert_eq!(egress["ip"], ip, "{route}");
        assert_eq!(egress["country"], country, "{route}");
        assert_eq!(egress["colo"], colo, "{route}");
        assert!(egress["checked_at"].is_string(), "{route}: {egress}");
    }
    assert_eq!(
        pair(&document, "route-a", "dead-proxy")["egress"],
        Value::Null
    );

    let geo = pair(&document, "geo", "via-http");
    let evidence = geo["evidence"].as_str().unwrap();
    assert!(
        evidence.ends_with("; egress country HK (colo HKG)"),
        "evidence: {evidence}"
    );
    assert_eq!(geo["attempts"], 1);

    let (_, metrics) = service.get("/metrics");
    assert_line(
        &metrics,
        r#"routewatch_route_egress_info{colo="SJC",country="US",route="direct"} 1"#,
    );
    assert_line(
        &metrics,
        r#"routewatch_route_egress_info{colo="HKG",country="HK",route="via-http"} 1"#,
    );
    assert_line(
        &metrics,
        r#"routewatch_route_egress_info{colo="SIN",country="SG",route="via-socks"} 1"#,
    );
    assert_eq!(
        metric_lines(&metrics, "routewatch_route_egress_info{").len(),
        3
    );
    for route in ["direct", "via-http", "via-socks"] {
        assert_line(
            &metrics,
            &format!(r#"routewatch_route_egress_changes_total{{route="{route}"}} 0"#),
        );
    }
    assert_line(
        &metrics,
        r#"routewatch_monitor_diagnosis{kind="geo_partial",monitor="geo"} 1"#,
    );
    assert_line(
        &metrics,
        r#"routewatch_monitor_diagnosis{kind="healthy",monitor="geo"} 0"#,
    );
    assert!(!metrics.contains(SOCKS_PASSWORD), "password in /metrics");
}

#[test]
fn flapping_geo_answer_sets_flag_and_counts() {
    let ca = TestCa::shared();
    let ok_routes = || {
        Routes::new()
            .route("/v1/models", Reply::json(200, MODELS))
            .route(TRACE_PATH, trace("127.0.0.1", "US", "SJC"))
    };
    let geo_routes = || {
        Routes::new()
            .route("/v1/models", Reply::json(403, OPENAI_UNSUPPORTED_REGION))
            .route(TRACE_PATH, trace("127.0.0.1", "JP", "NRT"))
    };
    let upstream = Upstream::start_with_ca(ca, ok_routes());
    let config = format!(
        r#"
global:
  history_size: 20
  flap_threshold: 2
defaults:
  schedule: every 1s
  timeout: 2s
routes:
  - name: direct
    ca_file: {ca_file}
    trace_url: {trace_url}
    trace_every: 1s
monitors:
  - name: api
    url: {url}
"#,
        ca_file = ca.ca_file().display(),
        trace_url = upstream.url(TRACE_PATH),
        url = upstream.url("/v1/models"),
    );
    let service = Service::start(&config);
    wait_for(&service, "a first ok verdict", |document| {
        pair(document, "api", "direct")["class"] == "ok"
    });

    // Alternate the response. Each phase lasts until a probe has seen it.
    for phase in 0..4 {
        let geo = phase % 2 == 0;
        upstream.set_routes(if geo { geo_routes() } else { ok_routes() });
        let want = if geo { "geo_block" } else { "ok" };
        wait_for(&service, &format!("class {want}"), |document| {
            pair(document, "api", "direct")["class"] == want
        });
    }

    // List the whole ring (history_size 20), not the default 10 newest entries, so the
    // window can be checked against every entry it summarises.
    let (code, body) = service.get("/status?history=20");
    assert_eq!(code, 200, "GET /status?history=20: {body}");
    let document: Value = serde_json::from_str(&body).expect("/status is JSON");
    let entry = pair(&document, "api", "direct");
    let history = entry["history"].as_array().unwrap();
    let window = &entry["window"];
    assert_eq!(window["size"], history.len());
    for class in ["ok", "geo_block"] {
        let seen = history
            .iter()
            .filter(|record| record["class"] == class)
            .count();
        assert_eq!(window["counts"][class], seen, "count of {class}");
    }
    let changes = history
        .windows(2)
        .filter(|records| records[0]["class"] != records[1]["class"])
        .count();
    assert_eq!(window["changes"], changes);
    assert!(changes >= 4, "only {changes} changes: {window}");
    assert_eq!(window["flapping"], true);
    let ok = history
        .iter()
        .filter(|record| record["class"] == "ok")
        .count();
    let ratio = (ok as f64 / history.len() as f64 * 1000.0).round() / 1000.0;
    assert_eq!(window["success_ratio"].as_f64(), Some(ratio));
    assert!(window["last_change_at"].is_string(), "{window}");

    // The trace flipped with the response, so the route keeps one series and counts changes.
    let (_, metrics) = service.get("/metrics");
    let info = metric_lines(&metrics, "routewatch_route_egress_info{");
    assert_eq!(info.len(), 1, "{info:?}");
    let changes_line = metric_lines(
        &metrics,
        "routewatch_route_egress_changes_total{route=\"direct\"}",
    );
    assert_eq!(changes_line.len(), 1);
    let egress_changes: u64 = changes_line[0].rsplit(' ').next().unwrap().parse().unwrap();
    assert!(egress_changes >= 1, "{changes_line:?}");
}

#[test]
fn closed_port_retries_count_attempts() {
    let config = format!(
        r#"
defaults:
  schedule: every 10s
  timeout: 3s
monitors:
  - name: closed
    url: http://127.0.0.1:{port}/v1/models
    retries: 2
    retry_backoff: 100ms
  - name: once
    url: http://127.0.0.1:{port}/v1/models
"#,
        port = closed_port(),
    );
    let service = Service::start(&config);
    let document = wait_for(&service, "both verdicts", |document| {
        document["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|pair| !pair["class"].is_null())
    });

    let closed = pair(&document, "closed", "direct");
    assert_eq!(closed["class"], "connect");
    assert_eq!(closed["attempts"], 3);
    assert_eq!(closed["history"][0]["attempts"], 3);
    let waited = closed["duration_seconds"].as_f64().unwrap();
    assert!(
        (0.3..1.5).contains(&waited),
        "three attempts with waits of 100ms and 200ms took {waited}s"
    );
    assert_eq!(pair(&document, "once", "direct")["attempts"], 1);

    let (_, metrics) = service.get("/metrics");
    assert_line(
        &metrics,
        r#"routewatch_probe_attempts_total{monitor="closed",route="direct"} 3"#,
    );
    assert_line(
        &metrics,
        r#"routewatch_probes_total{class="connect",monitor="closed",route="direct"} 1"#,
    );
    assert_line(
        &metrics,
        r#"routewatch_probe_attempts_total{monitor="once",route="direct"} 1"#,
    );
}

#[test]
fn probe_command_prints_diagnoses() {
    let config = format!(
        "monitors:\n  - name: closed\n    url: http://127.0.0.1:{}/v1/models\n    retries: 1\n    retry_backoff: 50ms\n    timeout: 2s\n",
        closed_port()
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("monitors.yaml");
    std::fs::write(&path, config).unwrap();
    let path = path.display().to_string();

    let text = support::service::run(&["probe", "--config", &path], &[], Duration::from_secs(20));
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(stdout.contains("*  2 attempts\n"), "{stdout}");
    assert!(
        stdout.ends_with("== diagnosis\n*  closed: all_down: no route is ok: connect on direct\n"),
        "{stdout}"
    );

    let output = support::service::run(
        &["probe", "--config", &path, "--format", "json"],
        &[],
        Duration::from_secs(20),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0]["attempts"], 2);
    assert_eq!(lines[0]["egress"], Value::Null);
    assert_eq!(
        lines[1],
        json!({"diagnosis": {
            "monitor": "closed",
            "kind": "all_down",
            "sentence": "no route is ok: connect on direct",
        }})
    );
}
