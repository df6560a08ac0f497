//! Configuration: monitors.yaml parsed strictly into real types.
//!
//! Loading runs in three passes. First, yaml-rust2 scans the text for syntax errors and
//! records the line and column of every key path. Next, serde_yaml reads the text into types
//! that reject unknown keys and wrong types. Last, a validator expands `${VAR}`, parses
//! units, applies provider presets and defaults, and reports every semantic problem at once. The keys are
//! documented in CONFIGURATION.md. This module does no network I/O: it reads the config
//! file and any `ca_file`, and nothing else.

mod error;
mod monitor;
pub mod provider;
mod raw;
mod rules;
mod secrets;
mod spans;
mod validate;
mod values;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use crate::classify::{Expectation, Rule};
use crate::shard::Shard;

pub use error::{ConfigError, ConfigErrors};

/// Largest config file accepted, in bytes.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

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
/// Default number of class changes within the history window above which a pair is flapping.
pub const DEFAULT_FLAP_THRESHOLD: usize = 5;
/// Default period between fetches of a route's `trace_url`.
pub const DEFAULT_TRACE_PERIOD: Duration = Duration::from_secs(60);
/// Default wait before the first retry of a failed probe; each later wait doubles it.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(500);
/// Largest `retries` value accepted.
pub const MAX_RETRIES: u32 = 5;

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
    /// A pair whose class changed more than this many times within its history is flapping.
    pub flap_threshold: usize,
    /// The pairs this instance probes; `--shard` replaces it.
    pub shard: Shard,
}

/// A network route (`routes[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The route's unique name, used as the `route` label.
    pub name: String,
    /// Proxy URL with credentials (http, https, socks5, socks5h); `None` is direct.
    pub proxy: Option<Url>,
    /// Local address that outgoing connections bind to.
    pub source_address: Option<IpAddr>,
    /// Extra trust roots, PEM, with at least one certificate; a relative path in the file
    /// is resolved against the config file's folder.
    pub ca_file: Option<PathBuf>,
    /// A URL that returns Cloudflare's `/cdn-cgi/trace` text, fetched through this route to
    /// learn its egress IP, country and colo.
    pub trace_url: Option<Url>,
    /// Period between fetches of `trace_url`.
    pub trace_every: Duration,
}

/// When a monitor runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Schedule {
    /// A fixed period (`every 30s`).
    Every(Duration),
    /// A cron expression normalised to six fields (seconds first), UTC.
    Cron(String),
}

/// One endpoint to probe (`monitors[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Monitor {
    /// The monitor's unique name, used as the `monitor` label.
    pub name: String,
    /// The full request URL, secrets included (never log it; use `redact`).
    pub url: Url,
    /// HTTP method in upper case.
    pub method: String,
    /// Request headers, values after `${VAR}` expansion.
    pub headers: Vec<(String, String)>,
    /// Request body, after `${VAR}` expansion.
    pub body: Option<String>,
    /// The healthy answer: accepted statuses and whether the body must be JSON.
    pub expect: Expectation,
    /// When the monitor runs.
    pub schedule: Schedule,
    /// Time allowed for the whole probe; always above zero.
    pub timeout: Duration,
    /// Body bytes read per probe; always above zero.
    pub max_body_bytes: usize,
    /// Route names this monitor runs on, already checked to exist.
    pub routes: Vec<String>,
    /// Extra attempts after a transport failure (timeout, dns, connect, tls, proxy), at most
    /// [`MAX_RETRIES`]. HTTP responses are never retried.
    pub retries: u32,
    /// Wait before the first retry; each later wait doubles it.
    pub retry_backoff: Duration,
}

impl Config {
    /// Returns every secret value found in the config, for redaction.
    ///
    /// The secrets are proxy and URL passwords, as written and percent-decoded. They also
    /// include the values of headers whose name contains auth, key, token, secret, password,
    /// cookie, session or sig, and for `Bearer x` both the whole value and `x`. Query
    /// parameters with such names count too, so the gemini preset's `key=` is included.
    /// Proxy user names are not included.
    ///
    /// The list has no empty strings and no duplicates, and is sorted longest first.
    pub fn secrets(&self) -> Vec<String> {
        secrets::collect(self)
    }
}

/// Reads and validates the config file at `path`, expanding `${VAR}` from the process
/// environment. Each `source_address` must also be an address of this machine: a TCP socket
/// is bound to it on port 0 and closed, which sends nothing.
///
/// # Errors
/// Returns every problem found: an unreadable or oversized file, a syntax error, an unknown
/// key or wrong type (the first one only), or all semantic errors together.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let size = std::fs::metadata(path)
        .map_err(|error| {
            ConfigError::whole_file(path, format!("cannot read the config file: {error}"))
        })?
        .len();
    if size > MAX_FILE_BYTES {
        return Err(too_large(path, size).into());
    }

    let bytes = std::fs::read(path).map_err(|error| {
        ConfigError::whole_file(path, format!("cannot read the config file: {error}"))
    })?;
    let text = String::from_utf8(bytes).map_err(|error| {
        let offset = error.utf8_error().valid_up_to();
        ConfigError::whole_file(
            path,
            format!("the file is not valid UTF-8 (first bad byte at offset {offset})"),
        )
    })?;
    parse_text(&text, path, &|name| std::env::var(name).ok(), true)
}

/// Validates config `text`; `source` names the file in messages and anchors relative
/// `ca_file` paths, and `env` looks up `${VAR}` values.
///
/// Unlike [`load`], it does not check that each `source_address` belongs to this machine,
/// so its result does not depend on the host it runs on.
///
/// # Errors
/// As [`load`], minus the file reading and the host check.
pub fn parse(
    text: &str,
    source: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    parse_text(text, source, env, false)
}

fn parse_text(
    text: &str,
    source: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    check_host: bool,
) -> Result<Config, ConfigErrors> {
    let size = text.len() as u64;
    if size > MAX_FILE_BYTES {
        return Err(too_large(source, size).into());
    }

    let spans = spans::Spans::scan(text).map_err(|error| error::from_syntax(source, error))?;
    let raw = if is_blank(text) {
        raw::RawConfig::default()
    } else {
        error::check_structure(source, &spans)?;
        raw::from_str(text).map_err(|error| error::from_serde(source, &spans, &error))?
    };
    let validator = validate::Validator::new(source, &spans, env);
    let validator = if check_host {
        validator.with_host_checks()
    } else {
        validator
    };
    validator.run(raw)
}

fn too_large(source: &Path, size: u64) -> ConfigError {
    let message = format!(
        "the file is {size} bytes, over the limit of {MAX_FILE_BYTES} bytes (1 MiB); check that the path names a monitors file"
    );
    ConfigError::whole_file(source, message)
}

/// Returns true when the text contains only blank lines, comments or document markers.
fn is_blank(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .all(|line| line.is_empty() || line.starts_with('#') || line == "---")
}
