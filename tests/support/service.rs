//! A runner for the routewatch binary under test.
//!
//! [`Service::start`] writes a config to a temporary directory, starts
//! `routewatch --config FILE --listen 127.0.0.1:PORT` on a free port with stdout and stderr
//! captured to files, and waits until `GET /healthz` returns 200. [`run`] runs a one-shot
//! command such as `routewatch check` to completion. The HTTP helpers here are blocking and
//! use plain `std::net`, so they work from sync and async tests alike (an async test blocks
//! its runtime for the duration of a call).

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::net::free_port;
use super::process::ChildGuard;

/// How long routewatch may take after it starts until `GET /healthz` returns 200.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Connect, read and write timeout of one request from [`http_get`].
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a starting or one-shot routewatch is checked.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Path of the routewatch binary that Cargo built for this test run.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_routewatch"))
}

/// A response read by [`http_get`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Headers in arrival order, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body, decoded lossily as UTF-8.
    pub body: String,
}

impl HttpResponse {
    /// Returns the first value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Sends `GET path` to `addr` as HTTP/1.0, so the server closes the connection after one
/// response and the body needs no chunked decoding, and reads the whole response.
pub fn http_get(addr: SocketAddr, path: &str) -> io::Result<HttpResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;

    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> io::Result<HttpResponse> {
    let invalid = |message: String| io::Error::new(io::ErrorKind::InvalidData, message);
    let head_end = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| invalid(format!("no end of headers in {} response bytes", raw.len())))?;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let body = String::from_utf8_lossy(&raw[head_end + 4..]).into_owned();

    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid(format!("invalid status line {status_line:?}")))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();

    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// A running routewatch service, stopped with SIGTERM (then SIGKILL after five seconds) when
/// dropped.
pub struct Service {
    process: ChildGuard,
    addr: SocketAddr,
    dir: TempDir,
}

impl Service {
    /// Starts routewatch with `config` (YAML text) and waits until it is ready.
    ///
    /// Panics with routewatch's stderr if it exits early or is not ready within
    /// [`READY_TIMEOUT`].
    pub fn start(config: &str) -> Service {
        Self::start_with(config, &[], &[])
    }

    /// Starts routewatch with `config`, extra command-line arguments after the config and
    /// listen options, and extra environment variables, and waits until it is ready.
    pub fn start_with(config: &str, args: &[&str], env: &[(&str, &str)]) -> Service {
        let mut service = Self::spawn(config, args, env);
        service.wait_until_ready();
        service
    }

    /// Starts routewatch with a listener that speaks TLS (extra `args` name the web config)
    /// and waits until its port accepts connections. The plain-HTTP helpers such as
    /// [`Service::get`] do not work on such a service; `_ca_file` documents which CA its
    /// certificate chains to.
    pub fn start_tls(config: &str, args: &[&str], _ca_file: &Path) -> Service {
        let mut service = Self::spawn(config, args, &[]);
        let ready = super::net::wait_until_accepting(service.addr, READY_TIMEOUT);
        if let Some(status) = service.process.try_wait() {
            panic!(
                "routewatch exited with {status} before it was ready\nstderr:\n{}",
                service.stderr()
            );
        }
        assert!(
            ready,
            "routewatch did not accept connections within {READY_TIMEOUT:?}"
        );
        service
    }

    fn spawn(config: &str, args: &[&str], env: &[(&str, &str)]) -> Service {
        let dir = tempfile::Builder::new()
            .prefix("routewatch-service-")
            .tempdir()
            .expect("create a temporary directory for routewatch");
        let config_path = dir.path().join("monitors.yaml");
        std::fs::write(&config_path, config).expect("write the routewatch config");

        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let child = Command::new(binary())
            .arg("--config")
            .arg(&config_path)
            .arg("--listen")
            .arg(addr.to_string())
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(create_file(&dir.path().join("stdout")))
            .stderr(create_file(&dir.path().join("stderr")))
            .spawn()
            .unwrap_or_else(|error| panic!("spawn {}: {error}", binary().display()));

        Service {
            process: ChildGuard::new("routewatch", child),
            addr,
            dir,
        }
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last_error = String::from("no request sent");
        while Instant::now() < deadline {
            if let Some(status) = self.process.try_wait() {
                panic!(
                    "routewatch exited with {status} before it was ready\nstderr:\n{}",
                    self.stderr()
                );
            }
            match http_get(self.addr, "/healthz") {
                Ok(response) if response.status == 200 => return,
                Ok(response) => last_error = format!("status {}", response.status),
                Err(error) => last_error = error.to_string(),
            }
            std::thread::sleep(POLL_INTERVAL);
        }

        self.process.stop();
        panic!(
            "routewatch did not return 200 for GET /healthz within {READY_TIMEOUT:?} \
             (last result: {last_error})\nstderr:\n{}",
            self.stderr()
        );
    }

    /// Returns the listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns the URL of `path` on the service: `http://127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Path of the config file the service was started with. A test may rewrite it to
    /// exercise reloads.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("monitors.yaml")
    }

    /// Returns the service's temporary directory, removed when the service is dropped.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Sends `GET path` and returns the status and body.
    ///
    /// Panics if the request fails.
    pub fn get(&self, path: &str) -> (u16, String) {
        let response = self.fetch(path);
        (response.status, response.body)
    }

    /// Sends `GET path` and returns the whole response.
    ///
    /// Panics with routewatch's stderr if the request fails.
    pub fn fetch(&self, path: &str) -> HttpResponse {
        http_get(self.addr, path).unwrap_or_else(|error| {
            panic!(
                "GET {path} from routewatch failed: {error}\nstderr:\n{}",
                self.stderr()
            )
        })
    }

    /// Returns what routewatch wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    /// Returns what routewatch wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// Sends SIGTERM, waits up to five seconds, then sends SIGKILL, and returns the exit
    /// status.
    pub fn stop(&mut self) -> ExitStatus {
        self.process.stop()
    }

    /// Returns the process id, for sending signals such as SIGHUP and reading /proc/PID.
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// Sends `signal` (such as `libc::SIGHUP`) to the process.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid()).expect("process ids fit in pid_t");
        // SAFETY: kill(2) only sends a signal, to our own child, which is not reaped before
        // the guard drops, so the pid cannot belong to another process.
        let result = unsafe { libc::kill(pid, signal) };
        assert_eq!(result, 0, "kill({pid}, {signal}) failed");
    }

    /// Waits up to `timeout` for the process to exit and returns its status, or `None`
    /// when it is still running.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.process.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Sends `POST path` with an empty body and returns the whole response.
    ///
    /// Panics with routewatch's stderr if the request fails.
    pub fn post(&self, path: &str) -> HttpResponse {
        http_post(self.addr, path).unwrap_or_else(|error| {
            panic!(
                "POST {path} to routewatch failed: {error}\nstderr:\n{}",
                self.stderr()
            )
        })
    }
}

/// Sends `POST path` with an empty body to `addr` as HTTP/1.0 and reads the whole response.
pub fn http_post(addr: SocketAddr, path: &str) -> io::Result<HttpResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    write!(
        stream,
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n"
    )?;

    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// Runs routewatch with `args` and extra environment variables to completion, for the
/// one-shot commands (`check`, `probe`, `classify`).
///
/// Panics if it runs longer than `timeout`, after killing it.
pub fn run(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Output {
    let dir = tempfile::Builder::new()
        .prefix("routewatch-run-")
        .tempdir()
        .expect("create a temporary directory for routewatch output");
    let stdout_path = dir.path().join("stdout");
    let stderr_path = dir.path().join("stderr");

    let child = Command::new(binary())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(create_file(&stdout_path))
        .stderr(create_file(&stderr_path))
        .spawn()
        .unwrap_or_else(|error| panic!("spawn {}: {error}", binary().display()));
    let mut process = ChildGuard::new("routewatch", child);

    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = process.try_wait() {
            break status;
        }
        if Instant::now() >= deadline {
            process.kill();
            let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            panic!("routewatch {args:?} still running after {timeout:?}\nstderr:\n{stderr}");
        }
        std::thread::sleep(POLL_INTERVAL);
    };

    Output {
        status,
        stdout: std::fs::read(&stdout_path).unwrap_or_default(),
        stderr: std::fs::read(&stderr_path).unwrap_or_default(),
    }
}

fn create_file(path: &Path) -> File {
    File::create(path).unwrap_or_else(|error| panic!("create {}: {error}", path.display()))
}
