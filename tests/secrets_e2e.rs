//! Secrets never leave routewatch. The test sets distinctive values for API keys, proxy
//! passwords, `key=` query values and the values of Authorization, x-api-key and api-key
//! headers. The upstream echoes them back in bodies, headers and error messages. Every output
//! of the binary is then searched for them: /status, /metrics, logs at debug level in both
//! formats, `probe` text and JSON, `check`, and reload errors.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::net::closed_port;
use support::proxy::{MICROSOCKS_EGRESS, Microsocks};
use support::service::{self, Service};
use support::tls::TestCa;
use support::upstream::{Reply, Routes, Upstream};

const OPENAI_KEY: &str = "oaiSecretQ7731";
const GEMINI_KEY: &str = "gemQueryK4410";
const ANTHROPIC_KEY: &str = "xApiKeyZ6613";
const GATEWAY_TOKEN: &str = "authBearer5512";
const AZURE_KEY: &str = "azureKeyW7714";
const PROXY_PASSWORD: &str = "socksPwV9921";
const LITERAL_QUERY_KEY: &str = "literalQk3310";

const SECRETS: [&str; 7] = [
    OPENAI_KEY,
    GEMINI_KEY,
    ANTHROPIC_KEY,
    GATEWAY_TOKEN,
    AZURE_KEY,
    PROXY_PASSWORD,
    LITERAL_QUERY_KEY,
];

/// Time allowed for every pair to get its first verdict.
const VERDICT_TIMEOUT: Duration = Duration::from_secs(20);

/// Returns the first 8 characters of each secret too: a secret cut by a length cap must not
/// leak its start either.
fn needles() -> Vec<&'static str> {
    SECRETS
        .iter()
        .flat_map(|secret| [*secret, &secret[..8]])
        .collect()
}

fn assert_clean(name: &str, output: &str) {
    for needle in needles() {
        assert!(
            !output.contains(needle),
            "{needle:?} appears in {name}:\n{output}"
        );
    }
}

/// An upstream that echoes each credential back: in an OpenAI-style error message, in a
/// Gemini-style error, in a header, and in a plain-text body. The OpenAI message is padded so
/// that the key straddles the cap of quoted text in evidence, and the gateway body so that
/// the token straddles the body snippet cap.
fn echo_upstream(ca: &TestCa) -> Upstream {
    let openai = format!(
        r#"{{"error":{{"message":"Incorrect API key provided for this organisation and this project, with key: {OPENAI_KEY}. You can find your API key at the dashboard.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}}}"#
    );
    let gemini = format!(
        r#"{{"error":{{"code":400,"message":"API key not valid: {GEMINI_KEY} (url ?key={GEMINI_KEY})","status":"INVALID_ARGUMENT"}}}}"#
    );
    let anthropic = format!(
        r#"{{"type":"error","error":{{"type":"authentication_error","message":"invalid x-api-key {ANTHROPIC_KEY}"}}}}"#
    );
    // The snippet keeps 199 characters and an ellipsis; the token starts at character 189.
    let gateway = format!(
        "{}Authorization: Bearer {GATEWAY_TOKEN}; api-key: {AZURE_KEY}",
        filler(189 - "Authorization: Bearer ".len())
    );
    Upstream::start_with_ca(
        ca,
        Routes::new()
            .route(
                "/openai/v1/models",
                Reply::json(401, &openai).header(
                    "www-authenticate",
                    &format!("Bearer realm=\"api\" key={OPENAI_KEY}"),
                ),
            )
            .route("/gemini/v1beta/models", Reply::json(400, &gemini))
            .route("/anthropic/v1/models", Reply::json(401, &anthropic))
            .route("/gateway/v1/chat", Reply::text(403, &gateway))
            .for_source(MICROSOCKS_EGRESS, Reply::text(403, &gateway)),
    )
}

/// Returns `len` characters of readable filler text.
fn filler(len: usize) -> String {
    "the gateway refused the request. "
        .repeat(len)
        .chars()
        .take(len)
        .collect()
}

fn config(ca: &TestCa, upstream: &Upstream, socks_port: u16, dead_port: u16) -> String {
    format!(
        r#"
defaults:
  schedule: every 2s
  timeout: 3s
routes:
  - name: direct
    ca_file: {ca_file}
  - name: socks
    proxy: socks5h://rw:${{PROXY_PASSWORD}}@127.0.0.1:{socks_port}
    ca_file: {ca_file}
  - name: dead
    proxy: socks5h://rw:${{PROXY_PASSWORD}}@127.0.0.1:{dead_port}
    ca_file: {ca_file}
monitors:
  - name: openai
    provider: openai
    api_key: ${{OPENAI_API_KEY}}
    url: {openai}
    routes: [direct]
  - name: gemini
    provider: gemini
    api_key: ${{GEMINI_API_KEY}}
    url: {gemini}
    routes: [direct, dead]
  - name: anthropic
    provider: anthropic
    api_key: ${{ANTHROPIC_API_KEY}}
    url: {anthropic}
    routes: [direct]
  - name: gateway
    url: {gateway}?key={LITERAL_QUERY_KEY}
    headers:
      Authorization: "Bearer ${{GATEWAY_TOKEN}}"
      api-key: "${{AZURE_KEY}}"
    routes: [direct, socks, dead]
"#,
        ca_file = ca.ca_file().display(),
        openai = upstream.url("/openai/v1/models"),
        gemini = upstream.url("/gemini/v1beta/models"),
        anthropic = upstream.url("/anthropic/v1/models"),
        gateway = upstream.url("/gateway/v1/chat"),
    )
}

fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("OPENAI_API_KEY", OPENAI_KEY),
        ("GEMINI_API_KEY", GEMINI_KEY),
        ("ANTHROPIC_API_KEY", ANTHROPIC_KEY),
        ("GATEWAY_TOKEN", GATEWAY_TOKEN),
        ("AZURE_KEY", AZURE_KEY),
        ("PROXY_PASSWORD", PROXY_PASSWORD),
        ("RUST_LOG", "debug"),
    ]
}

fn run_command(args: &[&str]) -> Output {
    let started = Instant::now();
    let output = Command::new(service::binary())
        .args(args)
        .envs(env())
        .stdin(Stdio::null())
        .output()
        .expect("run routewatch");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{args:?} took too long"
    );
    output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn wait_for_verdicts(service: &Service, pairs: usize) -> String {
    let deadline = Instant::now() + VERDICT_TIMEOUT;
    loop {
        let (_, body) = service.get("/status");
        let document: serde_json::Value = serde_json::from_str(&body).unwrap();
        let done = document["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|pair| !pair["class"].is_null())
            .count();
        if done == pairs {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{done} of {pairs} verdicts\n{body}\nstderr:\n{}",
            service.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A config like the good one, plus a monitor whose URL is invalid and quotes a literal key.
fn bad_config(good: &str) -> String {
    format!(
        "{good}  - name: broken\n    url: \"api.example.com/v1/models?key={LITERAL_QUERY_KEY}\"\n"
    )
}

#[test]
fn secrets_never_leave_the_process() {
    let ca = TestCa::shared();
    let upstream = echo_upstream(ca);
    let microsocks = Microsocks::start("rw", PROXY_PASSWORD);
    let good = config(ca, &upstream, microsocks.port(), closed_port());

    for format in ["human", "json"] {
        let mut service = Service::start_with(&good, &["--log-format", format], &env());
        let status = wait_for_verdicts(&service, 7);
        assert!(status.contains("[REDACTED]"), "{status}");
        assert_clean("/status", &status);
        assert_clean("/metrics", &service.get("/metrics").1);

        std::fs::write(service.config_path(), bad_config(&good)).unwrap();
        let response = service.post("/-/reload");
        assert_eq!(response.status, 400);
        assert!(
            response.body.contains("monitors[4].url"),
            "{}",
            response.body
        );
        assert_clean("the reload response", &response.body);

        assert_eq!(service.stop().code(), Some(0));
        let stderr = service.stderr();
        assert!(
            stderr.contains("probe finished"),
            "RUST_LOG=debug had no effect:\n{stderr}"
        );
        assert_clean(&format!("stderr ({format} logs)"), &stderr);
        assert_clean("stdout", &service.stdout());
    }

    let dir = tempfile::tempdir().unwrap();
    let good_path = dir.path().join("good.yaml");
    let bad_path = dir.path().join("bad.yaml");
    std::fs::write(&good_path, &good).unwrap();
    std::fs::write(&bad_path, bad_config(&good)).unwrap();
    let path = |path: &Path| path.to_str().unwrap().to_owned();

    for format in ["text", "json"] {
        let output = run_command(&["probe", "--config", &path(&good_path), "--format", format]);
        assert_eq!(output.status.code(), Some(1));
        let stdout = text(&output.stdout);
        assert!(stdout.contains("[REDACTED]"), "{stdout}");
        assert_clean(&format!("probe --format {format} stdout"), &stdout);
        assert_clean("probe stderr", &text(&output.stderr));
    }

    for config in [&good_path, &bad_path] {
        let output = run_command(&["check", "--config", &path(config)]);
        assert_clean("check stdout", &text(&output.stdout));
        assert_clean("check stderr", &text(&output.stderr));
    }
    let output = run_command(&["probe", "--config", &path(&bad_path)]);
    assert_clean("probe of a bad config", &text(&output.stdout));
}
