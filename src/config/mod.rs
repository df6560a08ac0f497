//! Configuration: monitors.yaml parsed strictly into real types.
// INTERFACE SKETCH: the config helper owns this module and fills in loading; the public types
// below are what the rest of the service uses. Extend them, do not rename them.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use crate::classify::{Expectation, Rule};

/// Default period between probes.
pub const DEFAULT_SCHEDULE_PERIOD: Duration = Duration::from_secs(60);
/// Default probe timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default cap on the body bytes read per probe.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// Default limit on probes running at once across all monitors.
pub const DEFAULT_CONCURRENCY: usize = 64;
/// Default number of verdicts kept per (monitor, route) pair.
pub const DEFAULT_HISTORY_SIZE: usize = 100;

/// A whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (for messages).
    pub source: PathBuf,
    /// Process-wide settings.
    pub global: Global,
    /// Routes in file order.
    pub routes: Vec<Route>,
    /// Monitors in file order, each with its route names resolved.
    pub monitors: Vec<Monitor>,
    /// User rules, checked before the built-in ones, in file order.
    pub rules: Vec<Rule>,
}

/// Process-wide settings (`global:`).
#[derive(Debug, Clone)]
pub struct Global {
    /// Maximum probes in flight at once.
    pub concurrency: usize,
    /// Verdicts kept per pair.
    pub history_size: usize,
}

/// A network route (`routes[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub name: String,
    /// Proxy URL with credentials (http, https, socks5, socks5h); `None` is direct.
    pub proxy: Option<Url>,
    /// Local address that outgoing connections bind to.
    pub source_address: Option<IpAddr>,
    /// Extra trust roots, PEM.
    pub ca_file: Option<PathBuf>,
}

/// When a monitor runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// A fixed period (`every 30s`).
    Every(Duration),
    /// A cron expression normalised to six fields (seconds first), UTC.
    Cron(String),
}

/// One endpoint to probe (`monitors[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Monitor {
    pub name: String,
    /// The full request URL, secrets included (never log it; use `redact`).
    pub url: Url,
    /// HTTP method in upper case.
    pub method: String,
    /// Request headers, values after `${VAR}` expansion.
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    pub expect: Expectation,
    pub schedule: Schedule,
    pub timeout: Duration,
    pub max_body_bytes: usize,
    /// Route names this monitor runs on, already checked to exist.
    pub routes: Vec<String>,
}

impl Config {
    /// Returns every secret value found in the config (API keys, proxy passwords, sensitive
    /// header values, `key=` query values), for redaction.
    pub fn secrets(&self) -> Vec<String> {
        todo!("config helper")
    }
}

/// Every problem found in a config file (STUB until the config module lands).
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

/// Loads and validates a config file (STUB).
pub fn load(path: &std::path::Path) -> Result<Config, ConfigErrors> {
    let _ = path;
    todo!("config helper")
}
