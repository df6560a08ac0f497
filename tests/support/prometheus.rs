//! A runner for a real Prometheus server (Debian's `prometheus` package, /usr/bin/prometheus).
//!
//! [`Prometheus::start`] writes a configuration and its rule files into a temporary directory,
//! starts `prometheus --web.listen-address=127.0.0.1:PORT --storage.tsdb.path=DIR/data` on a
//! free port with its log captured to a file, and waits until `GET /-/ready` returns 200. The
//! server is stopped when the handle is dropped. The configuration is the caller's, so the
//! caller decides what it scrapes; [`scrape_config`] writes one that scrapes a single loopback
//! target and sends alerts nowhere.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use super::net::free_port;
use super::process::ChildGuard;
use super::service::{HttpResponse, http_get};

/// Where Debian's `prometheus` package installs the server.
pub const PROMETHEUS_BINARY: &str = "/usr/bin/prometheus";

/// How long Prometheus may take after it starts until `GET /-/ready` returns 200.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Start attempts, each on a new free port, before giving up. A retry covers the case where
/// another process took the free port before Prometheus bound it.
const START_ATTEMPTS: usize = 3;

/// How often a starting Prometheus is checked.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Returns a prometheus.yml that scrapes `target` as job `job` every `interval`, evaluates
/// rules as often, loads `rule_files` (paths relative to the configuration file) and sends
/// alerts to no Alertmanager.
pub fn scrape_config(
    job: &str,
    target: SocketAddr,
    interval: Duration,
    rule_files: &[&str],
) -> String {
    let seconds = interval.as_secs();
    assert!(
        seconds > 0 && Duration::from_secs(seconds) == interval,
        "scrape interval {interval:?} is not a whole number of seconds"
    );
    let rule_lines: String = rule_files
        .iter()
        .map(|file| format!("  - {file}\n"))
        .collect();
    format!(
        "global:\n  \
           scrape_interval: {seconds}s\n  \
           scrape_timeout: {seconds}s\n  \
           evaluation_interval: {seconds}s\n\
         rule_files:\n{rule_lines}\
         scrape_configs:\n  \
           - job_name: {job}\n    \
             static_configs:\n      \
               - targets: [\"{target}\"]\n"
    )
}

/// A running Prometheus server, stopped with SIGTERM (then SIGKILL after five seconds) when
/// dropped.
pub struct Prometheus {
    process: ChildGuard,
    addr: SocketAddr,
    dir: TempDir,
}

impl Prometheus {
    /// Writes `files` (name and contents, such as rule files) and `config` as prometheus.yml
    /// into a temporary directory, starts Prometheus on it and waits until it is ready.
    ///
    /// Panics if Prometheus is not installed, exits early, or is not ready within 20 seconds
    /// on any of three ports.
    pub fn start(config: &str, files: &[(&str, &str)]) -> Prometheus {
        let binary = Path::new(PROMETHEUS_BINARY);
        assert!(
            binary.is_file(),
            "prometheus not found: run scripts/test, which installs Debian's prometheus package"
        );
        let dir = tempfile::Builder::new()
            .prefix("routewatch-prometheus-")
            .tempdir()
            .expect("create a temporary directory for prometheus");
        for (name, contents) in files {
            std::fs::write(dir.path().join(name), contents)
                .unwrap_or_else(|error| panic!("write {name} for prometheus: {error}"));
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");

        let mut dir = dir;
        let mut failure = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let process = spawn(binary, &config_path, addr, dir.path());
            let mut prometheus = Prometheus { process, addr, dir };
            match prometheus.wait_until_ready() {
                Ok(()) => return prometheus,
                Err(reason) => {
                    failure = format!("attempt {attempt} on {addr}: {reason}");
                    prometheus.process.kill();
                    dir = prometheus.dir;
                }
            }
        }
        let log = std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
        panic!("prometheus did not start: {failure}\nprometheus.log:\n{log}");
    }

    fn wait_until_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last_result = String::from("no request sent");
        while Instant::now() < deadline {
            if let Some(status) = self.process.try_wait() {
                return Err(format!("exited with {status} before it was ready"));
            }
            match http_get(self.addr, "/-/ready") {
                Ok(response) if response.status == 200 => return Ok(()),
                Ok(response) => last_result = format!("status {}", response.status),
                Err(error) => last_result = error.to_string(),
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        Err(format!(
            "GET /-/ready did not return 200 within {READY_TIMEOUT:?} (last result: {last_result})"
        ))
    }

    /// Returns the listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends `GET path` (with its query string already encoded) and returns the response.
    ///
    /// Panics with the Prometheus log if the request fails.
    pub fn get(&self, path: &str) -> HttpResponse {
        http_get(self.addr, path).unwrap_or_else(|error| {
            panic!(
                "GET {path} from prometheus failed: {error}\nprometheus.log:\n{}",
                self.log()
            )
        })
    }

    /// Evaluates `expr` at the current time through `/api/v1/query` and returns the JSON
    /// document, whether its `status` is "success" or "error".
    ///
    /// Panics if the response is not JSON.
    pub fn query(&self, expr: &str) -> Value {
        self.get_json(&format!("/api/v1/query?query={}", encode(expr)))
    }

    /// Returns the values of `label` on the series that match the selector `matcher`, from
    /// `/api/v1/label/LABEL/values`, as the JSON document.
    pub fn label_values(&self, label: &str, matcher: &str) -> Value {
        self.get_json(&format!(
            "/api/v1/label/{}/values?match[]={}",
            encode(label),
            encode(matcher)
        ))
    }

    /// Returns the JSON document of `/api/v1/alerts`: the pending and firing alerts.
    pub fn alerts(&self) -> Value {
        self.get_json("/api/v1/alerts")
    }

    fn get_json(&self, path: &str) -> Value {
        let response = self.get(path);
        serde_json::from_str(&response.body).unwrap_or_else(|error| {
            panic!(
                "GET {path} returned status {} and no JSON ({error}):\n{}",
                response.status, response.body
            )
        })
    }

    /// Returns what Prometheus logged so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

fn spawn(binary: &Path, config: &Path, addr: SocketAddr, dir: &Path) -> ChildGuard {
    let data: PathBuf = dir.join("data");
    let log = File::create(dir.join("prometheus.log")).expect("create prometheus.log");
    let child = Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--web.listen-address={addr}"))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("share prometheus.log"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|error| panic!("spawn {}: {error}", binary.display()));
    ChildGuard::new("prometheus", child)
}

/// Percent-encodes `text` for a URL query value.
fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
