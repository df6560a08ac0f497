//! A runner for a real Prometheus server (Debian's /usr/bin/prometheus, 2.42 in the test
//! image) for end-to-end tests of scrape, rule and federation configs.
//!
//! [`PromServer::start`] writes the given configuration to a temporary directory, starts
//! Prometheus on a free 127.0.0.1 port with its TSDB in that directory, and waits until
//! `GET /-/ready` returns 200. The server is stopped (SIGTERM, then SIGKILL) when dropped.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use super::net::free_port;
use super::process::ChildGuard;
use super::service::http_get;

/// Where the test image installs Prometheus.
pub const PROMETHEUS_BINARY: &str = "/usr/bin/prometheus";

/// How long Prometheus may take to start until `GET /-/ready` returns 200.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a starting Prometheus is checked.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A running Prometheus server.
pub struct PromServer {
    process: ChildGuard,
    addr: SocketAddr,
    dir: TempDir,
}

impl PromServer {
    /// Starts Prometheus with `config` (YAML text of prometheus.yml) and waits until ready.
    ///
    /// Panics with "prometheus not found: run scripts/test" when the binary is missing, and
    /// with Prometheus's log when it exits early or is not ready within [`READY_TIMEOUT`].
    pub fn start(config: &str) -> PromServer {
        let binary = PathBuf::from(PROMETHEUS_BINARY);
        assert!(binary.is_file(), "prometheus not found: run scripts/test");

        let dir = tempfile::Builder::new()
            .prefix("routewatch-prometheus-")
            .tempdir()
            .expect("create a temporary directory for prometheus");
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write the prometheus config");

        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = File::create(dir.path().join("log")).expect("create the prometheus log");
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("share the prometheus log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("spawn {}: {error}", binary.display()));

        let mut server = PromServer {
            process: ChildGuard::new("prometheus", child),
            addr,
            dir,
        };
        server.wait_until_ready();
        server
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.process.try_wait() {
                panic!(
                    "prometheus exited with {status} before it was ready\n{}",
                    self.log()
                );
            }
            if http_get(self.addr, "/-/ready").is_ok_and(|response| response.status == 200) {
                return;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        self.process.stop();
        panic!(
            "prometheus was not ready within {READY_TIMEOUT:?}\n{}",
            self.log()
        );
    }

    /// Returns the listening address, for use as a scrape target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Runs an instant query and returns `data.result` (an array for vector results).
    ///
    /// Panics when the request fails or Prometheus does not return status "success".
    pub fn query(&self, expr: &str) -> Vec<Value> {
        let encoded: String = url::form_urlencoded::byte_serialize(expr.as_bytes()).collect();
        let path = format!("/api/v1/query?query={encoded}");
        let response = http_get(self.addr, &path)
            .unwrap_or_else(|error| panic!("GET {path} from prometheus: {error}"));
        let document: Value = serde_json::from_str(&response.body)
            .unwrap_or_else(|error| panic!("query {expr:?}: {error}: {}", response.body));
        assert_eq!(
            document["status"], "success",
            "query {expr:?}: {}",
            response.body
        );
        document["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Returns Prometheus's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Returns the server's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
