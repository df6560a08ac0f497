//! Real proxies for route tests: tinyproxy (HTTP, with CONNECT for HTTPS) and microsocks
//! (SOCKS5 with username and password).
//!
//! Each listens on 127.0.0.1 on a free port and binds its outgoing connections to its own
//! loopback address, so the upstream can tell which route a request took: 127.0.0.2 through
//! tinyproxy ([`TINYPROXY_EGRESS`]) and 127.0.0.3 through microsocks ([`MICROSOCKS_EGRESS`]).
//! Both run in the foreground and are stopped when their handle is dropped.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::net::free_port;
use super::process::{ChildGuard, find_binary};

/// The address tinyproxy binds its outgoing connections to.
pub const TINYPROXY_EGRESS: &str = "127.0.0.2";

/// The address microsocks binds its outgoing connections to.
pub const MICROSOCKS_EGRESS: &str = "127.0.0.3";

/// How long a proxy may take to accept connections after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Start attempts, each on a new free port, before giving up. A retry covers the case where
/// another process took the free port before the proxy bound it.
const START_ATTEMPTS: usize = 3;

/// How often a starting proxy is checked.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A running tinyproxy. Its generated config listens on 127.0.0.1, binds outgoing connections
/// to the egress address, allows only clients from 127.0.0.1, and has no `ConnectPort` line,
/// so CONNECT reaches any port. With one or more `ConnectPort` lines (Debian 12's
/// /etc/tinyproxy/tinyproxy.conf has 443 and 563 commented out), CONNECT to any other port
/// gets a 403 from tinyproxy.
pub struct Tinyproxy {
    process: ChildGuard,
    port: u16,
    dir: TempDir,
}

impl Tinyproxy {
    /// Starts tinyproxy with outgoing connections bound to [`TINYPROXY_EGRESS`].
    pub fn start() -> Tinyproxy {
        Self::start_with_egress(TINYPROXY_EGRESS)
    }

    /// Starts tinyproxy with outgoing connections bound to `egress`, a loopback address.
    ///
    /// Panics if tinyproxy is not installed or does not accept connections in time.
    pub fn start_with_egress(egress: &str) -> Tinyproxy {
        let binary = find_binary("tinyproxy");
        let dir = proxy_dir("tinyproxy");
        let config = dir.path().join("tinyproxy.conf");
        let log = dir.path().join("tinyproxy.log");

        let (process, port) = start_listening("tinyproxy", dir.path(), |port| {
            std::fs::write(&config, tinyproxy_config(port, egress, dir.path()))
                .expect("write the tinyproxy config");
            let mut command = Command::new(&binary);
            // -d keeps tinyproxy in the foreground, so the guard owns the real process.
            command.arg("-d").arg("-c").arg(&config);
            command
        })
        .unwrap_or_else(|output| {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("tinyproxy did not start: {output}\ntinyproxy.log:\n{log}")
        });

        Tinyproxy { process, port, dir }
    }

    /// Returns the listening address, 127.0.0.1 and the port.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Returns the listening port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Returns the proxy URL for a route or a client: `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Tinyproxy's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tinyproxy.log")).unwrap_or_default()
    }

    /// Stops tinyproxy now instead of on drop, so a route through it fails with a refused
    /// connection.
    pub fn stop(&mut self) {
        self.process.stop();
    }
}

fn tinyproxy_config(port: u16, egress: &str, dir: &Path) -> String {
    // Allow lists clients by source address, so a client bound to another loopback address
    // gets tinyproxy's 403 "Access denied" page. Without a ConnectPort line every port is
    // allowed.
    format!(
        "Port {port}\n\
         Listen 127.0.0.1\n\
         Bind {egress}\n\
         Timeout 60\n\
         MaxClients 100\n\
         Allow 127.0.0.1\n\
         LogLevel Info\n\
         LogFile \"{log}\"\n\
         PidFile \"{pid}\"\n",
        log = dir.join("tinyproxy.log").display(),
        pid = dir.join("tinyproxy.pid").display(),
    )
}

/// A running microsocks SOCKS5 server.
pub struct Microsocks {
    process: ChildGuard,
    port: u16,
    credentials: Option<(String, String)>,
    dir: TempDir,
}

impl Microsocks {
    /// Starts microsocks that requires `user` and `password`, with outgoing connections bound
    /// to [`MICROSOCKS_EGRESS`].
    pub fn start(user: &str, password: &str) -> Microsocks {
        Self::spawn(Some((user, password)), MICROSOCKS_EGRESS)
    }

    /// Starts microsocks that accepts clients without credentials, with outgoing connections
    /// bound to [`MICROSOCKS_EGRESS`].
    pub fn start_without_auth() -> Microsocks {
        Self::spawn(None, MICROSOCKS_EGRESS)
    }

    /// Starts microsocks with optional credentials and outgoing connections bound to
    /// `egress`, a loopback address.
    ///
    /// Panics if microsocks is not installed or does not accept connections in time.
    pub fn spawn(credentials: Option<(&str, &str)>, egress: &str) -> Microsocks {
        let binary = find_binary("microsocks");
        let dir = proxy_dir("microsocks");

        let (process, port) = start_listening("microsocks", dir.path(), |port| {
            let mut command = Command::new(&binary);
            command
                .args(["-i", "127.0.0.1", "-b", egress, "-p"])
                .arg(port.to_string());
            if let Some((user, password)) = credentials {
                command.args(["-u", user, "-P", password]);
            }
            command
        })
        .unwrap_or_else(|output| panic!("microsocks did not start: {output}"));

        let credentials =
            credentials.map(|(user, password)| (user.to_string(), password.to_string()));
        Microsocks {
            process,
            port,
            credentials,
            dir,
        }
    }

    /// Returns the listening address, 127.0.0.1 and the port.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Returns the listening port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Returns the proxy URL with the server's credentials and remote name resolution:
    /// `socks5h://USER:PASSWORD@127.0.0.1:PORT`. Credentials are inserted as given, so they
    /// must not contain characters that URLs reserve.
    pub fn url(&self) -> String {
        self.url_with(
            "socks5h",
            self.credentials
                .as_ref()
                .map(|(u, p)| (u.as_str(), p.as_str())),
        )
    }

    /// Returns the proxy URL with another scheme (`socks5`, `socks5h`) and other credentials, for
    /// example a wrong password.
    pub fn url_with(&self, scheme: &str, credentials: Option<(&str, &str)>) -> String {
        match credentials {
            Some((user, password)) => {
                format!("{scheme}://{user}:{password}@127.0.0.1:{}", self.port)
            }
            None => format!("{scheme}://127.0.0.1:{}", self.port),
        }
    }

    /// Returns what microsocks wrote to stdout and stderr so far, for failure messages.
    pub fn output(&self) -> String {
        read_output(self.dir.path())
    }

    /// Stops microsocks now instead of on drop.
    pub fn stop(&mut self) {
        self.process.stop();
    }
}

fn proxy_dir(name: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("routewatch-{name}-"))
        .tempdir()
        .unwrap_or_else(|error| panic!("create a temporary directory for {name}: {error}"))
}

/// Starts the command that `build` returns for a free port, with stdout and stderr in `dir`,
/// until it accepts connections. Returns the process and its port, or the failure text.
fn start_listening(
    name: &str,
    dir: &Path,
    build: impl Fn(u16) -> Command,
) -> Result<(ChildGuard, u16), String> {
    let mut failure = String::new();
    for attempt in 1..=START_ATTEMPTS {
        let port = free_port();
        let mut command = build(port);
        command
            .stdin(Stdio::null())
            .stdout(output_file(dir, "stdout"))
            .stderr(output_file(dir, "stderr"));
        let child = command
            .spawn()
            .map_err(|error| format!("spawn {name}: {error}"))?;
        let mut process = ChildGuard::new(name, child);

        match wait_until_listening(&mut process, port) {
            Ok(()) => return Ok((process, port)),
            Err(reason) => {
                failure = format!(
                    "attempt {attempt} on port {port}: {reason}\n{}",
                    read_output(dir)
                );
            }
        }
    }
    Err(failure)
}

fn wait_until_listening(process: &mut ChildGuard, port: u16) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if let Some(status) = process.try_wait() {
            return Err(format!("exited with {status}"));
        }
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    Err(format!("not accepting connections after {START_TIMEOUT:?}"))
}

fn output_file(dir: &Path, stream: &str) -> File {
    let path: PathBuf = dir.join(stream);
    File::create(&path).unwrap_or_else(|error| panic!("create {}: {error}", path.display()))
}

fn read_output(dir: &Path) -> String {
    let stdout = std::fs::read_to_string(dir.join("stdout")).unwrap_or_default();
    let stderr = std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
    format!("stdout:\n{stdout}\nstderr:\n{stderr}")
}
