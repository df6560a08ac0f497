//! Operations end to end: the routewatch binary as an operator runs it. `check` on every
//! config fixture, `probe` against a local upstream and real proxies, reloads by SIGHUP and
//! POST /-/reload, shutdown by SIGTERM and SIGINT, and the log lines.

mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use regex::Regex;
use serde_json::Value;
use support::net::closed_port;
use support::proxy::{TINYPROXY_EGRESS, Tinyproxy};
use support::service::{self, Service};
use support::tls::TestCa;
use support::upstream::{MODELS, OPENAI_UNSUPPORTED_REGION, Reply, Routes, Upstream};

const FIXTURES: &str = "tests/fixtures/config";

/// Time a one-shot command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The environment of the config fixtures, as tests/config_fixtures.rs fakes it.
const FIXTURE_ENV: [(&str, &str); 7] = [
    ("HK_PROXY_PASSWORD", "p@ss:word"),
    ("ANTHROPIC_API_KEY", "sk-ant-test"),
    ("GATEWAY_KEY", "gw-secret"),
    ("GEMINI_API_KEY", "gem-key"),
    ("SECRET_TIMEOUT", "SKSECRET_BBB"),
    ("SLASH_PASSWORD", "pa/ss@wo:rd"),
    ("PROXY_URL_WITH_SLASH", "http://user:8/ss@127.0.0.1:3128"),
];

/// Runs the binary with only PATH and `env` in its environment, from the crate folder, so
/// relative fixture paths print as written.
fn run_clean(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(service::binary());
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null());
    let started = Instant::now();
    let output = command.output().expect("run routewatch");
    assert!(
        started.elapsed() < COMMAND_TIMEOUT,
        "routewatch {args:?} took too long"
    );
    output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_fixtures_print_expected_errors() {
    let mut names: Vec<String> = std::fs::read_dir(FIXTURES)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".yaml") && name != "valid.yaml")
        .collect();
    names.sort();
    assert!(names.len() >= 40, "only {} fixtures found", names.len());

    let mut mismatches = Vec::new();
    for name in &names {
        let path = format!("{FIXTURES}/{name}");
        let expected_path = Path::new(FIXTURES).join(name.replace(".yaml", ".expected"));
        let expected = std::fs::read_to_string(&expected_path).unwrap();
        let output = run_clean(&["check", "--config", &path], &FIXTURE_ENV);

        let stdout = text(&output.stdout);
        if stdout != format!("{}\n", expected.trim_end_matches('\n')) {
            mismatches.push(format!("{name}: stdout\n{stdout}expected\n{expected}"));
        }
        if output.status.code() != Some(1) {
            mismatches.push(format!("{name}: exit status {}", output.status));
        }
        if !output.stderr.is_empty() {
            mismatches.push(format!("{name}: stderr {}", text(&output.stderr)));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn check_absolute_path_prints_it_as_prefix() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURES);
    let path = fixture.join("unknown-route.yaml");
    let output = run_clean(&["check", "--config", path.to_str().unwrap()], &[]);
    let expected = std::fs::read_to_string(fixture.join("unknown-route.expected")).unwrap();
    assert_eq!(
        text(&output.stdout),
        expected.replace(FIXTURES, fixture.to_str().unwrap())
    );
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn check_valid_config_prints_summary() {
    let path = format!("{FIXTURES}/valid.yaml");
    let output = run_clean(&["check", "--config", &path], &FIXTURE_ENV);
    assert_eq!(
        text(&output.stdout),
        "tests/fixtures/config/valid.yaml: ok: 3 routes, 4 monitors, 11 pairs, 2 user rules\n\
         \x20 monitor groq (*/30 * * * * *, timeout 5s) on direct, hk-socks\n\
         \x20 monitor gemini (0 */5 * * * *, timeout 5s) on direct, hk-socks, office-2\n\
         \x20 monitor anthropic (every 30s, timeout 5s) on direct, hk-socks, office-2\n\
         \x20 monitor gateway (every 30s, timeout 90s) on direct, hk-socks, office-2\n"
    );
    assert_eq!(text(&output.stderr), "");
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn check_missing_file_exits_one() {
    let output = run_clean(
        &["check", "--config", "tests/fixtures/config/absent.yaml"],
        &[],
    );
    assert_eq!(
        text(&output.stdout),
        "tests/fixtures/config/absent.yaml: cannot read the config file: No such file or directory (os error 2)\n"
    );
    assert_eq!(output.status.code(), Some(1));
}

/// Replaces every millisecond count in probe output with `N`, so lines compare exactly.
fn mask_millis(output: &str) -> String {
    let millis = Regex::new(r"\d+ ms").unwrap();
    millis.replace_all(output, "N ms").into_owned()
}

/// An upstream that answers /v1/models with 200 directly and 403 geo-block through tinyproxy.
fn geo_upstream(ca: &TestCa) -> Upstream {
    Upstream::start_with_ca(
        ca,
        Routes::new()
            .route(
                "/v1/models",
                Reply::json(200, MODELS).header("x-request-id", "req-1"),
            )
            .for_source(
                TINYPROXY_EGRESS,
                Reply::json(403, OPENAI_UNSUPPORTED_REGION).header("server", "cloudflare"),
            ),
    )
}

fn write_config(dir: &Path, config: &str) -> String {
    let path = dir.join("monitors.yaml");
    std::fs::write(&path, config).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Writes a config for the probe tests: one monitor on a direct route, a route through
/// tinyproxy (geo-blocked), a SOCKS route whose proxy is down, and a route without the test
/// CA (TLS failure).
fn probe_config(ca: &TestCa, upstream: &Upstream, tinyproxy: &Tinyproxy, dead_port: u16) -> String {
    format!(
        r#"
routes:
  - name: direct
    ca_file: {ca_file}
  - name: via-http
    proxy: {http_proxy}
    ca_file: {ca_file}
  - name: dead-proxy
    proxy: socks5h://rw:dead-pass-2231@127.0.0.1:{dead_port}
    ca_file: {ca_file}
  - name: untrusted
monitors:
  - name: api
    url: {url}
    headers: {{ accept: application/json }}
    timeout: 5s
"#,
        ca_file = ca.ca_file().display(),
        http_proxy = tinyproxy.url(),
        url = upstream.url("/v1/models"),
    )
}

#[test]
fn probe_text_shows_each_step() {
    let ca = TestCa::shared();
    let upstream = geo_upstream(ca);
    let tinyproxy = Tinyproxy::start();
    let dead_port = closed_port();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &probe_config(ca, &upstream, &tinyproxy, dead_port),
    );

    let output = run_clean(&["probe", "--config", &path], &[]);
    let stdout = mask_millis(&text(&output.stdout));
    let url = upstream.url("/v1/models");
    let (port, proxy_port) = (upstream.port(), tinyproxy.port());
    let expected = format!(
        r#"== api via direct (direct)
*  GET {url}
*  127.0.0.1 resolved to 127.0.0.1
>  accept: application/json
*  connected to 127.0.0.1:{port}
*  TLS handshake ok
<  HTTP 200 (headers after N ms)
<  content-type: application/json
<  content-length: 113
<  body (113 bytes read): {MODELS}
=> ok expectation.ok (N ms): HTTP 200; JSON body

== api via via-http (proxy http://127.0.0.1:{proxy_port}/)
*  GET {url}
*  127.0.0.1 is resolved by the proxy
>  accept: application/json
*  connected to 127.0.0.1:{proxy_port} (the proxy)
*  TLS handshake ok
<  HTTP 403 (headers after N ms)
<  content-type: application/json
<  server: cloudflare
<  content-length: 153
<  body (153 bytes read): {OPENAI_UNSUPPORTED_REGION}
=> geo_block openai.unsupported_region (N ms): HTTP 403; JSON error.code = unsupported_country_region_territory

== api via dead-proxy (proxy socks5h://rw:[REDACTED]@127.0.0.1:{dead_port})
*  GET {url}
*  127.0.0.1 is resolved by the proxy
>  accept: application/json
!  proxy socks5h://rw:[REDACTED]@127.0.0.1:{dead_port} failed after N ms: proxy failed: error connecting to socks proxy: SOCKS error: failed to create underlying connection
=> proxy transport.proxy (N ms): proxy failed: error connecting to socks proxy: SOCKS error: failed to create underlying connection

== api via untrusted (direct)
*  GET {url}
*  127.0.0.1 resolved to 127.0.0.1
>  accept: application/json
!  TLS handshake with 127.0.0.1:{port} failed after N ms: TLS handshake failed (127.0.0.1): invalid peer certificate: UnknownIssuer
=> tls transport.tls (N ms): TLS handshake failed (127.0.0.1): invalid peer certificate: UnknownIssuer

== diagnosis
*  api: route_problem: geo_block on via-http; tls on untrusted; proxy on dead-proxy for every monitor on the route; ok on direct
"#
    );
    assert_eq!(stdout, expected);
    assert_eq!(text(&output.stderr), "");
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn probe_all_ok_exits_zero() {
    let ca = TestCa::shared();
    let upstream = geo_upstream(ca);
    let tinyproxy = Tinyproxy::start();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &probe_config(ca, &upstream, &tinyproxy, closed_port()),
    );

    let output = run_clean(&["probe", "--config", &path, "--route", "direct"], &[]);
    let stdout = text(&output.stdout);
    assert_eq!(stdout.matches("== api via ").count(), 1, "{stdout}");
    assert!(
        stdout.starts_with("== api via direct (direct)\n"),
        "{stdout}"
    );
    assert_eq!(output.status.code(), Some(0), "{stdout}");
}

#[test]
fn probe_json_fields_are_exact() {
    let ca = TestCa::shared();
    let upstream = geo_upstream(ca);
    let tinyproxy = Tinyproxy::start();
    let dead_port = closed_port();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &probe_config(ca, &upstream, &tinyproxy, dead_port),
    );

    let output = run_clean(
        &[
            "probe",
            "--config",
            &path,
            "--monitor",
            "api",
            "--format",
            "json",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(1));
    let lines: Vec<Value> = text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[4]["diagnosis"]["monitor"], "api");
    assert_eq!(lines[4]["diagnosis"]["kind"], "route_problem");

    let mut direct = lines[0].clone();
    let duration = direct["duration_seconds"].take();
    let headers_after = direct["time_to_headers_seconds"].take();
    assert!(duration.as_f64().unwrap() > 0.0, "{duration}");
    assert!(headers_after.as_f64().unwrap() > 0.0, "{headers_after}");
    let url = upstream.url("/v1/models");
    assert_eq!(
        direct,
        serde_json::json!({
            "monitor": "api",
            "route": "direct",
            "proxy": null,
            "url": url,
            "resolved": "127.0.0.1 resolved to 127.0.0.1",
            "remote_addr": format!("127.0.0.1:{}", upstream.port()),
            "http_status": 200,
            "headers": [["content-type", "application/json"], ["content-length", "113"]],
            "attempts": 1,
            "egress": null,
            "body_snippet": MODELS,
            "error": null,
            "class": "ok",
            "reason": "expectation.ok",
            "evidence": "HTTP 200; JSON body",
            "duration_seconds": null,
            "time_to_headers_seconds": null,
        })
    );

    let mut dead = lines[2].clone();
    dead["duration_seconds"].take();
    let detail = "proxy failed: error connecting to socks proxy: SOCKS error: failed to create underlying connection";
    assert_eq!(
        dead,
        serde_json::json!({
            "monitor": "api",
            "route": "dead-proxy",
            "proxy": format!("socks5h://rw:[REDACTED]@127.0.0.1:{dead_port}"),
            "url": url,
            "resolved": "127.0.0.1 is resolved by the proxy",
            "remote_addr": null,
            "http_status": 0,
            "headers": [],
            "attempts": 1,
            "egress": null,
            "body_snippet": "",
            "error": detail,
            "class": "proxy",
            "reason": "transport.proxy",
            "evidence": detail,
            "duration_seconds": null,
            "time_to_headers_seconds": null,
        })
    );
    assert_eq!(lines[1]["class"], "geo_block");
    assert_eq!(lines[3]["class"], "tls");
}

#[test]
fn probe_unknown_monitor_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "monitors:\n  - name: api\n    url: http://127.0.0.1:9/\n  - name: gw\n    url: http://127.0.0.1:9/\n",
    );
    let output = run_clean(&["probe", "--config", &path, "--monitor", "nope"], &[]);
    assert_eq!(
        text(&output.stderr),
        "routewatch: unknown monitor \"nope\" (monitors are: api, gw)\n"
    );
    assert_eq!(text(&output.stdout), "");
    assert_eq!(output.status.code(), Some(2));

    let output = run_clean(&["probe", "--config", &path, "--route", "hk"], &[]);
    assert_eq!(
        text(&output.stderr),
        "routewatch: unknown route \"hk\" (routes are: direct)\n"
    );
    assert_eq!(output.status.code(), Some(2));
}

/// Time allowed for a condition on a running service to come true.
const WAIT_TIMEOUT: Duration = Duration::from_secs(15);

/// Polls `condition` every 100 ms until it returns `Some`, and panics with `what` and the
/// service's stderr after [`WAIT_TIMEOUT`].
fn wait_for<T>(service: &Service, what: &str, mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT_TIMEOUT;
    loop {
        if let Some(value) = condition() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\nstderr:\n{}",
            service.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status_pairs(service: &Service) -> Vec<Value> {
    // Every kept entry (history_size is 100 in these configs), not the default 10 newest, so
    // that a history length keeps growing while a test waits for it.
    let (code, body) = service.get("/status?history=100");
    assert_eq!(code, 200, "{body}");
    let document: Value = serde_json::from_str(&body).unwrap();
    document["pairs"].as_array().unwrap().clone()
}

fn history_len(service: &Service, monitor: &str) -> usize {
    status_pairs(service)
        .iter()
        .find(|pair| pair["monitor"] == monitor)
        .map_or(0, |pair| pair["history"].as_array().unwrap().len())
}

/// Returns the value of the exposition line whose name and labels are exactly `series`.
fn metric(service: &Service, series: &str) -> Option<String> {
    let (_, metrics) = service.get("/metrics");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(str::to_owned)
}

fn two_monitor_config(url: &str) -> String {
    format!(
        "global:\n  history_size: 100\nmonitors:\n  - name: keep\n    url: {url}\n    schedule: every 1s\n  - name: gone\n    url: {url}\n    schedule: every 1s\n"
    )
}

fn one_monitor_config(url: &str) -> String {
    format!(
        "global:\n  history_size: 100\nmonitors:\n  - name: keep\n    url: {url}\n    schedule: every 1s\n"
    )
}

const BAD_CONFIG: &str =
    "monitors:\n  - name: keep\n    url: http://127.0.0.1:9/\n    colour: red\n";

#[test]
fn reload_rejects_bad_config_and_applies_good_one() {
    let upstream =
        Upstream::start_plain(Routes::new().route("/v1/models", Reply::json(200, MODELS)));
    let url = upstream.url("/v1/models");
    let service = Service::start(&two_monitor_config(&url));
    let path = service.config_path();
    wait_for(&service, "two probes of keep", || {
        (history_len(&service, "keep") >= 2).then_some(())
    });
    let loaded_at = metric(
        &service,
        "routewatch_config_last_reload_success_timestamp_seconds",
    )
    .unwrap();

    // A bad config by POST /-/reload: rejected with the errors, the old config keeps running.
    std::fs::write(&path, BAD_CONFIG).unwrap();
    let errors = format!(
        "{}:4:5: monitors[0].colour: unknown key \"colour\" (allowed keys: name, provider, api_key, url, method, headers, body, expect, schedule, timeout, max_body, routes, retries, retry_backoff)",
        path.display()
    );
    let response = service.post("/-/reload");
    assert_eq!(response.status, 400);
    assert_eq!(
        response.body,
        format!("reload rejected; the previous config keeps running:\n{errors}\n")
    );
    assert_eq!(
        metric(&service, "routewatch_config_last_reload_successful").as_deref(),
        Some("0")
    );
    assert_eq!(
        metric(
            &service,
            "routewatch_config_last_reload_success_timestamp_seconds"
        ),
        Some(loaded_at.clone())
    );
    assert_eq!(
        metric(&service, "routewatch_config_reloads_failed_total").as_deref(),
        Some("1")
    );
    assert!(service.stderr().contains(&errors), "{}", service.stderr());
    let before = history_len(&service, "gone");
    wait_for(
        &service,
        "gone to keep probing after the rejected reload",
        || (history_len(&service, "gone") > before).then_some(()),
    );

    // The same bad config by SIGHUP.
    service.signal(libc::SIGHUP);
    wait_for(&service, "the second rejected reload", || {
        (metric(&service, "routewatch_config_reloads_failed_total").as_deref() == Some("2"))
            .then_some(())
    });
    assert_eq!(
        metric(
            &service,
            "routewatch_config_last_reload_success_timestamp_seconds"
        ),
        Some(loaded_at.clone())
    );

    // A good config by SIGHUP drops `gone` and keeps the history and schedule of `keep`.
    let kept_before = history_len(&service, "keep");
    std::fs::write(&path, one_monitor_config(&url)).unwrap();
    service.signal(libc::SIGHUP);
    wait_for(&service, "the good reload", || {
        (metric(&service, "routewatch_config_last_reload_successful").as_deref() == Some("1"))
            .then_some(())
    });
    let reloaded_at = metric(
        &service,
        "routewatch_config_last_reload_success_timestamp_seconds",
    )
    .unwrap();
    assert!(
        reloaded_at.parse::<f64>().unwrap() > loaded_at.parse::<f64>().unwrap(),
        "{reloaded_at} <= {loaded_at}"
    );
    let pairs = status_pairs(&service);
    assert_eq!(pairs.len(), 1, "{pairs:#?}");
    assert_eq!(pairs[0]["monitor"], "keep");
    assert_eq!(pairs[0]["schedule"], "every 1s");
    assert!(pairs[0]["history"].as_array().unwrap().len() >= kept_before);
    let (_, metrics) = service.get("/metrics");
    assert!(!metrics.contains("monitor=\"gone\""), "{metrics}");
    assert!(metrics.contains("routewatch_probe_success{monitor=\"keep\",route=\"direct\"} 1"));
    wait_for(&service, "keep's history to grow after the reload", || {
        (history_len(&service, "keep") > kept_before + 1).then_some(())
    });
    assert!(
        service.stderr().contains("config reloaded"),
        "{}",
        service.stderr()
    );

    // The same good config by POST /-/reload changes nothing.
    let response = service.post("/-/reload");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.body,
        format!(
            "reloaded {}: 1 pairs (0 added, 0 removed)\n",
            path.display()
        )
    );
}

/// Starts a service whose only probe hangs on an upstream that never answers, with a 30 s
/// timeout, and waits until that probe is in flight.
fn service_with_probe_in_flight(upstream: &Upstream) -> Service {
    let config = format!(
        "monitors:\n  - name: hang\n    url: {}\n    timeout: 30s\n    schedule: every 60s\n",
        upstream.url("/hold")
    );
    let service = Service::start(&config);
    upstream.wait_for_requests(1, WAIT_TIMEOUT);
    service
}

fn assert_stops_on(signal: libc::c_int, name: &str) {
    let upstream = Upstream::start_plain(Routes::new().route("/hold", Reply::hold()));
    let mut service = service_with_probe_in_flight(&upstream);

    // A keep-alive connection that already got its response must not hold up the exit.
    let mut client = std::net::TcpStream::connect(service.addr()).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: routewatch\r\n\r\n")
        .unwrap();
    let mut response = [0u8; 512];
    let read = client.read(&mut response).unwrap();
    assert!(response[..read].starts_with(b"HTTP/1.1 200 OK\r\n"));

    let signalled = Instant::now();
    service.signal(signal);
    let status = service
        .wait_for_exit(Duration::from_secs(5))
        .unwrap_or_else(|| {
            panic!(
                "still running 5 s after {name}\nstderr:\n{}",
                service.stderr()
            )
        });
    let took = signalled.elapsed();

    assert_eq!(status.code(), Some(0), "stderr:\n{}", service.stderr());
    assert!(took < Duration::from_secs(5), "{name} took {took:?}");
    assert_eq!(
        client.read(&mut response).unwrap(),
        0,
        "the idle connection stays open"
    );
    assert_eq!(upstream.requests().len(), 1, "a probe started after {name}");
    let stderr = service.stderr();
    assert!(
        stderr.contains(&format!("routewatch stopping signal=\"{name}\"")),
        "{stderr}"
    );
    assert!(stderr.contains("routewatch stopped"), "{stderr}");
}

#[test]
fn sigterm_stops_within_five_seconds() {
    assert_stops_on(libc::SIGTERM, "SIGTERM");
}

#[test]
fn sigint_stops_within_five_seconds() {
    assert_stops_on(libc::SIGINT, "SIGINT");
}

/// Runs a geo-blocked and an ok monitor every second until each has been probed four
/// times, stops the service, and returns its stderr.
fn run_failing_pair(args: &[&str]) -> String {
    let upstream = Upstream::start_plain(
        Routes::new()
            .route("/geo", Reply::json(403, OPENAI_UNSUPPORTED_REGION))
            .route("/ok", Reply::json(200, MODELS)),
    );
    let config = format!(
        "monitors:\n  - name: geo\n    url: {}\n    schedule: every 1s\n  - name: fine\n    url: {}\n    schedule: every 1s\n",
        upstream.url("/geo"),
        upstream.url("/ok"),
    );
    let mut service = Service::start_with(&config, args, &[]);
    wait_for(&service, "four probes of each monitor", || {
        let (geo, fine) = (history_len(&service, "geo"), history_len(&service, "fine"));
        (geo >= 4 && fine >= 4).then_some(())
    });
    let status = service.stop();
    assert_eq!(status.code(), Some(0));
    service.stderr()
}

#[test]
fn logs_one_state_change_per_pair() {
    let stderr = run_failing_pair(&[]);
    let changes: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("pair state changed"))
        .collect();
    assert_eq!(changes.len(), 2, "{stderr}");
    let geo: Vec<&&str> = changes
        .iter()
        .filter(|line| line.contains("monitor=\"geo\""))
        .collect();
    assert_eq!(geo.len(), 1, "{stderr}");
    assert!(geo[0].contains(" WARN "), "{}", geo[0]);
    assert!(
        geo[0].contains(
            "route=\"direct\" from=\"none\" class=geo_block reason=openai.unsupported_region"
        ),
        "{}",
        geo[0]
    );
    assert!(stderr.contains("routewatch started"), "{stderr}");
    assert!(stderr.contains("pairs=2"), "{stderr}");
    assert!(stderr.contains("routewatch stopped"), "{stderr}");
}

#[test]
fn json_logs_have_fixed_fields() {
    let stderr = run_failing_pair(&["--log-format", "json"]);
    let lines: Vec<Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect();

    let started: Vec<&Value> = lines
        .iter()
        .filter(|line| line["message"] == "routewatch started")
        .collect();
    assert_eq!(started.len(), 1, "{stderr}");
    assert_eq!(started[0]["level"], "INFO");
    assert_eq!(started[0]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(started[0]["pairs"], 2);
    assert!(
        started[0]["config"]
            .as_str()
            .unwrap()
            .ends_with("monitors.yaml")
    );

    let changes: Vec<&Value> = lines
        .iter()
        .filter(|line| line["message"] == "pair state changed" && line["monitor"] == "geo")
        .collect();
    assert_eq!(changes.len(), 1, "{stderr}");
    let change = changes[0];
    assert_eq!(change["level"], "WARN");
    assert_eq!(change["route"], "direct");
    assert_eq!(change["from"], "none");
    assert_eq!(change["class"], "geo_block");
    assert_eq!(change["reason"], "openai.unsupported_region");
    assert_eq!(
        change["evidence"],
        "HTTP 403; JSON error.code = unsupported_country_region_territory"
    );

    let stopped = lines
        .iter()
        .filter(|line| line["message"] == "routewatch stopped")
        .count();
    assert_eq!(stopped, 1, "{stderr}");
}
