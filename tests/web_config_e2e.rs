//! End-to-end: `--web.config-file` puts TLS and authentication in front of the endpoints,
//! checked with the real curl binary.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::service::{Service, run};
use support::tls::TestCa;

const CONFIG: &str =
    "monitors:\n  - name: closed\n    url: http://127.0.0.1:9/\n    schedule: every 60s\n";
const PASSWORD: &str = "correct-horse-battery";
const TOKEN: &str = "tok-8f1e2d3c4b5a";

/// Runs curl against the service and returns the HTTP status it printed (0 when the
/// request failed before a response).
fn curl(service: &Service, ca: &Path, path: &str, extra: &[&str]) -> u16 {
    let url = format!("https://127.0.0.1:{}{path}", service.addr().port());
    let output = Command::new("curl")
        .args([
            "--silent",
            "--output",
            "/dev/null",
            "--write-out",
            "%{http_code}",
        ])
        .args(["--max-time", "10", "--cacert"])
        .arg(ca)
        .args(extra)
        .arg(&url)
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("curl printed {:?}", output.stdout))
}

fn guarded_service(ca: &TestCa) -> Service {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca.write_leaf_pem(dir.path());
    std::fs::write(dir.path().join("password"), format!("{PASSWORD}\n")).unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth:\n  username: prometheus\n  password_file: password\nbearer_token_file: token\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let web = web.display().to_string();
    let service = Service::start_tls(CONFIG, &["--web.config-file", &web], ca.ca_file());
    // The files were read at start-up; the directory can go.
    drop(dir);
    service
}

#[test]
fn web_config_guards_endpoints_over_tls() {
    let ca = TestCa::shared();
    let service = guarded_service(ca);
    let ca_file = ca.ca_file();
    let basic = format!("prometheus:{PASSWORD}");
    let bearer = format!("Authorization: Bearer {TOKEN}");

    assert_eq!(curl(&service, ca_file, "/metrics", &[]), 401);
    assert_eq!(
        curl(
            &service,
            ca_file,
            "/metrics",
            &["--user", "prometheus:wrong"]
        ),
        401
    );
    assert_eq!(
        curl(
            &service,
            ca_file,
            "/metrics",
            &["--user", "nobody:correct-horse-battery"]
        ),
        401
    );
    assert_eq!(
        curl(
            &service,
            ca_file,
            "/metrics",
            &["--header", "Authorization: Bearer nope"]
        ),
        401
    );
    assert_eq!(
        curl(&service, ca_file, "/metrics", &["--user", &basic]),
        200
    );
    assert_eq!(curl(&service, ca_file, "/status", &["--user", &basic]), 200);
    assert_eq!(
        curl(&service, ca_file, "/status", &["--header", &bearer]),
        200
    );
    assert_eq!(curl(&service, ca_file, "/status", &[]), 401);
    assert_eq!(
        curl(&service, ca_file, "/-/reload", &["--request", "POST"]),
        401
    );
    // /healthz stays open so that health checks need no credentials.
    assert_eq!(curl(&service, ca_file, "/healthz", &[]), 200);

    // Without the test CA curl rejects the certificate: the listener really speaks TLS.
    let url = format!("https://127.0.0.1:{}/healthz", service.addr().port());
    let untrusted = Command::new("curl")
        .args([
            "--silent",
            "--output",
            "/dev/null",
            "--max-time",
            "10",
            &url,
        ])
        .status()
        .expect("run curl");
    assert_eq!(
        untrusted.code(),
        Some(60),
        "curl exit code for an unknown CA"
    );
}

#[test]
fn web_config_unknown_key_stops_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("monitors.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(&web, "basic_auth_users:\n  admin: x\n").unwrap();

    let output = run(
        &[
            "--config",
            &config.display().to_string(),
            "--listen",
            "127.0.0.1:0",
            "--web.config-file",
            &web.display().to_string(),
        ],
        &[],
        Duration::from_secs(10),
    );

    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!(
        "routewatch: web config {}: unknown field `basic_auth_users`, expected one of `tls_server_config`, `basic_auth`, `bearer_token_file` (keys are: tls_server_config.cert_file, tls_server_config.key_file, basic_auth.username, basic_auth.password_file, bearer_token_file)\n",
        web.display()
    );
    assert!(stderr.ends_with(&expected), "stderr:\n{stderr}");
}
