//! Operations end to end: the routewatch binary as an operator runs it. `check` on every
//! config fixture, `probe` against a local upstream and real proxies, reloads by SIGHUP and
//! POST /-/reload, shutdown by SIGTERM and SIGINT, and the log lines.

mod support;

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
const FIXTURE_ENV: [(&str, &str); 4] = [
    ("HK_PROXY_PASSWORD", "p@ss:word"),
    ("ANTHROPIC_API_KEY", "sk-ant-test"),
    ("GATEWAY_KEY", "gw-secret"),
    ("GEMINI_API_KEY", "gem-key"),
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
!  proxy socks5h://rw:[REDACTED]@127.0.0.1:{dead_port} failed after N ms: error sending request for url ({url}): client error (Connect): error connecting to socks proxy: SOCKS error: failed to create underlying connection
=> proxy transport.proxy (N ms): error sending request for url ({url}): client error (Connect): error connecting to socks proxy: SOCKS error: failed to create underlying connection

== api via untrusted (direct)
*  GET {url}
*  127.0.0.1 resolved to 127.0.0.1
>  accept: application/json
!  TLS handshake with 127.0.0.1:{port} failed after N ms: error sending request for url ({url}): client error (Connect): invalid peer certificate: UnknownIssuer
=> tls transport.tls (N ms): error sending request for url ({url}): client error (Connect): invalid peer certificate: UnknownIssuer

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
    assert_eq!(stdout.matches("\n== ").count() + 1, 1, "{stdout}");
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
    assert_eq!(lines.len(), 4);

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
    let detail = format!(
        "error sending request for url ({url}): client error (Connect): error connecting to socks proxy: SOCKS error: failed to create underlying connection"
    );
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
fn probe_unknown_monitor_is_an_error() {
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
    assert_eq!(output.status.code(), Some(1));

    let output = run_clean(&["probe", "--config", &path, "--route", "hk"], &[]);
    assert_eq!(
        text(&output.stderr),
        "routewatch: unknown route \"hk\" (routes are: direct)\n"
    );
    assert_eq!(output.status.code(), Some(1));
}
