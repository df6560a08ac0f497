//! Semantic validation: turns the file as written into a [`Config`], collecting every
//! problem instead of stopping at the first.
//!
//! Each check records an error at the key path of the value it read, and the positions come
//! from [`Spans`]. A part with an error is dropped from the result, but its siblings are
//! still checked, so one run reports everything that is wrong.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use url::Url;

use super::error::{ConfigError, ConfigErrors};
use super::raw::{OneOrMany, RawConfig, RawDefaults, RawGlobal, RawRoute, Text};
use super::spans::Spans;
use super::values::{
    check_name, expand_env, expand_url, parse_duration, parse_schedule, parse_size, parse_status,
};
use super::{
    Config, DEFAULT_CONCURRENCY, DEFAULT_FLAP_THRESHOLD, DEFAULT_HISTORY_SIZE,
    DEFAULT_MAX_BODY_BYTES, DEFAULT_SCHEDULE_PERIOD, DEFAULT_TIMEOUT, DEFAULT_TRACE_PERIOD, Global,
    Route, Schedule,
};
use crate::shard::Shard;

/// The name of the route used when the file lists none.
pub(super) const IMPLICIT_ROUTE: &str = "direct";

/// Proxy URL schemes that the route module can build a client for.
const PROXY_SCHEMES: &[&str] = &["http", "https", "socks5", "socks5h"];

/// Values from `defaults:` that monitors inherit.
pub(super) struct Defaults {
    pub schedule: Schedule,
    pub timeout: Duration,
    pub max_body_bytes: usize,
}

/// Collects errors while reading one file.
pub(super) struct Validator<'a> {
    source: &'a Path,
    spans: &'a Spans,
    env: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<ConfigError>,
    /// True when `source_address` must be an address of this machine.
    check_host: bool,
}

impl<'a> Validator<'a> {
    pub fn new(
        source: &'a Path,
        spans: &'a Spans,
        env: &'a dyn Fn(&str) -> Option<String>,
    ) -> Self {
        Validator {
            source,
            spans,
            env,
            errors: Vec::new(),
            check_host: false,
        }
    }

    /// Also checks facts about this machine: that each `source_address` can be bound.
    pub fn with_host_checks(mut self) -> Self {
        self.check_host = true;
        self
    }

    /// Validates the whole file; returns every error, sorted by position, if any.
    pub fn run(mut self, raw: RawConfig) -> Result<Config, ConfigErrors> {
        let global = self.global(raw.global.unwrap_or_default());
        let defaults = self.defaults(raw.defaults.unwrap_or_default());

        let raw_routes = raw.routes.unwrap_or_default();
        let route_names = self.route_names(&raw_routes);
        let routes = self.routes(&raw_routes);

        let raw_monitors = raw.monitors.unwrap_or_default();
        if raw_monitors.is_empty() {
            self.error(
                "monitors",
                "no monitors (add at least one under monitors:)".to_owned(),
            );
        }
        let monitors = self.monitors(&raw_monitors, &defaults, &route_names);
        let rules = self.rules(&raw.rules.unwrap_or_default());

        if !self.errors.is_empty() {
            let mut errors = self.errors;
            errors.sort_by_key(|error| (error.line, error.column));
            return Err(ConfigErrors { errors });
        }
        Ok(Config {
            source: self.source.to_path_buf(),
            global,
            routes,
            monitors,
            rules,
        })
    }

    // === recording errors ===

    /// Records an error at the value of `path`.
    pub(super) fn error(&mut self, path: &str, message: String) {
        let position = self.spans.value(path);
        self.errors
            .push(ConfigError::at(self.source, position, path, message));
    }

    /// Records an error at the key of `path` (for problems with the key itself).
    pub(super) fn key_error(&mut self, path: &str, message: String) {
        let position = self.spans.key(path);
        self.errors
            .push(ConfigError::at(self.source, position, path, message));
    }

    /// Keeps the value of `result`, or records its error at `path`.
    pub(super) fn check<T>(&mut self, path: &str, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(message) => {
                self.error(path, message);
                None
            }
        }
    }

    /// Returns the line where the key of `path` is written.
    pub(super) fn key_line(&self, path: &str) -> usize {
        self.spans.key(path).line
    }

    /// Returns the number of errors so far, to tell whether a part added any.
    pub(super) fn error_count(&self) -> usize {
        self.errors.len()
    }

    // === values ===

    /// Expands `${VAR}` in a string value.
    pub(super) fn text(&mut self, path: &str, text: &Text) -> Option<String> {
        let result = expand_env(&text.0, self.env);
        self.check(path, result)
    }

    /// Expands `${VAR}` in a URL, percent-encoding what lands in its user info.
    pub(super) fn url_text(&mut self, path: &str, text: &Text) -> Option<String> {
        let result = expand_url(&text.0, self.env);
        self.check(path, result)
    }

    /// Expands a value and parses it; an error quotes the value as written.
    pub(super) fn parsed<T>(
        &mut self,
        path: &str,
        text: &Text,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let value = self.text(path, text)?;
        match parse(&value) {
            Ok(parsed) => Some(parsed),
            Err(message) => {
                self.error(path, as_written(message, &value, text));
                None
            }
        }
    }

    /// Expands an optional value; empty results count as absent.
    pub(super) fn optional_text(&mut self, path: &str, text: Option<&Text>) -> Option<String> {
        let value = self.text(path, text?)?;
        (!value.is_empty()).then_some(value)
    }

    /// Expands and checks a name used as a label.
    pub(super) fn name(&mut self, path: &str, text: &Text) -> Option<String> {
        self.parsed(path, text, |name| {
            check_name(name).map(|()| name.to_owned())
        })
    }

    /// Records an error for every name seen before, pointing at the later one.
    pub(super) fn reject_duplicates(&mut self, kind: &str, names: &[(String, String)]) {
        let mut first_paths: HashMap<&str, &str> = HashMap::new();
        for (name, path) in names {
            match first_paths.get(name.as_str()) {
                Some(first) => {
                    let line = self.spans.value(first).line;
                    self.error(
                        path,
                        format!("duplicate {kind} name \"{name}\" (first defined on line {line})"),
                    );
                }
                None => {
                    first_paths.insert(name, path);
                }
            }
        }
    }

    pub(super) fn duration(&mut self, path: &str, text: &Text) -> Option<Duration> {
        self.parsed(path, text, parse_duration)
    }

    pub(super) fn size(&mut self, path: &str, text: &Text) -> Option<usize> {
        self.parsed(path, text, parse_size)
    }

    pub(super) fn schedule(&mut self, path: &str, text: &Text) -> Option<Schedule> {
        self.parsed(path, text, parse_schedule)
    }

    /// Checks that a timeout is above zero.
    pub(super) fn timeout(&mut self, path: &str, text: &Text) -> Option<Duration> {
        let timeout = self.duration(path, text)?;
        if timeout.is_zero() {
            self.error(
                path,
                "timeout must be greater than 0 (expected a duration such as 10s or 500ms)"
                    .to_owned(),
            );
            return None;
        }
        Some(timeout)
    }

    /// Checks that a body cap is above zero.
    pub(super) fn max_body(&mut self, path: &str, text: &Text) -> Option<usize> {
        let size = self.size(path, text)?;
        if size == 0 {
            self.error(
                path,
                "max_body must be greater than 0 (expected a size such as 64KiB, 1MiB or 65536)"
                    .to_owned(),
            );
            return None;
        }
        Some(size)
    }

    /// Parses status codes; paths carry `[i]` only when the file wrote a list.
    pub(super) fn statuses(&mut self, path: &str, statuses: &OneOrMany) -> Option<Vec<u16>> {
        if statuses.items.is_empty() {
            self.error(
                path,
                "empty status list (give at least one code, or remove the key)".to_owned(),
            );
            return None;
        }
        let before = self.error_count();
        let mut codes = Vec::new();
        for (index, item) in statuses.items.iter().enumerate() {
            let item_path = if statuses.single {
                path.to_owned()
            } else {
                format!("{path}[{index}]")
            };
            if let Some(code) = self.parsed(&item_path, item, parse_status) {
                codes.push(code);
            }
        }
        (self.error_count() == before).then_some(codes)
    }

    /// Parses an absolute http or https URL. `raw` is quoted in errors instead of the
    /// expanded value, which may contain a key.
    pub(super) fn http_url(&mut self, path: &str, raw: &Text, value: &str) -> Option<Url> {
        let url = match Url::parse(value) {
            Ok(url) => url,
            Err(error) => {
                let message = format!(
                    "invalid URL \"{}\": {error} (expected an absolute http or https URL)",
                    quotable(&raw.0)
                );
                self.error(path, message);
                return None;
            }
        };
        if !matches!(url.scheme(), "http" | "https") {
            let message = format!(
                "unsupported URL scheme \"{}\" in \"{}\" (use http or https)",
                url.scheme(),
                quotable(&raw.0)
            );
            self.error(path, message);
            return None;
        }
        Some(url)
    }

    // === sections ===

    fn global(&mut self, raw: RawGlobal) -> Global {
        let mut positive = |key: &str, value: Option<usize>, default: usize| match value {
            Some(0) => {
                self.error(
                    &format!("global.{key}"),
                    format!("{key} must be at least 1"),
                );
                default
            }
            Some(value) => value,
            None => default,
        };
        let concurrency = positive("concurrency", raw.concurrency, DEFAULT_CONCURRENCY);
        let history_size = positive("history_size", raw.history_size, DEFAULT_HISTORY_SIZE);
        let flap_threshold = positive("flap_threshold", raw.flap_threshold, DEFAULT_FLAP_THRESHOLD);
        let shard = raw.shard.and_then(|text| {
            let shard = text
                .0
                .parse::<Shard>()
                .map_err(|error| format!("invalid shard {:?}: {error}", text.0));
            self.check("global.shard", shard)
        });
        Global {
            concurrency,
            history_size,
            flap_threshold,
            shard: shard.unwrap_or_default(),
        }
    }

    fn defaults(&mut self, raw: RawDefaults) -> Defaults {
        let schedule = raw
            .schedule
            .and_then(|text| self.schedule("defaults.schedule", &text));
        let timeout = raw
            .timeout
            .and_then(|text| self.timeout("defaults.timeout", &text));
        let max_body_bytes = raw
            .max_body
            .and_then(|text| self.max_body("defaults.max_body", &text));
        Defaults {
            schedule: schedule.unwrap_or(Schedule::Every(DEFAULT_SCHEDULE_PERIOD)),
            timeout: timeout.unwrap_or(DEFAULT_TIMEOUT),
            max_body_bytes: max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
        }
    }

    /// Returns the route names that monitors may use, before the routes are checked, so
    /// that a route with a bad proxy does not also make every monitor that names it fail.
    fn route_names(&mut self, raw_routes: &[RawRoute]) -> Vec<String> {
        if raw_routes.is_empty() {
            return vec![IMPLICIT_ROUTE.to_owned()];
        }
        let mut names: Vec<String> = Vec::new();
        for route in raw_routes {
            if let Ok(name) = expand_env(&route.name.0, self.env) {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names
    }

    fn routes(&mut self, raw_routes: &[RawRoute]) -> Vec<Route> {
        if raw_routes.is_empty() {
            return vec![Route {
                name: IMPLICIT_ROUTE.to_owned(),
                proxy: None,
                source_address: None,
                ca_file: None,
                trace_url: None,
                trace_every: DEFAULT_TRACE_PERIOD,
            }];
        }

        let mut names = Vec::new();
        let mut routes = Vec::new();
        for (index, raw) in raw_routes.iter().enumerate() {
            let path = format!("routes[{index}]");
            let before = self.error_count();
            let name = self.name(&format!("{path}.name"), &raw.name);
            let proxy = self.proxy(&format!("{path}.proxy"), raw.proxy.as_ref());
            let source_address = self.source_address(
                &format!("{path}.source_address"),
                raw.source_address.as_ref(),
            );
            let ca_file = self.ca_file(&format!("{path}.ca_file"), raw.ca_file.as_ref());
            let trace_url = self.trace_url(&format!("{path}.trace_url"), raw.trace_url.as_ref());
            let trace_every = match &raw.trace_every {
                Some(text) => self.positive_duration(&format!("{path}.trace_every"), text),
                None => Some(DEFAULT_TRACE_PERIOD),
            };

            if let Some(name) = name {
                names.push((name.clone(), format!("{path}.name")));
                if self.error_count() == before {
                    routes.push(Route {
                        name,
                        proxy,
                        source_address,
                        ca_file,
                        trace_url,
                        trace_every: trace_every.unwrap_or(DEFAULT_TRACE_PERIOD),
                    });
                }
            }
        }
        self.reject_duplicates("route", &names);
        routes
    }

    fn proxy(&mut self, path: &str, raw: Option<&Text>) -> Option<Url> {
        let raw = raw?;
        let value = self.url_text(path, raw)?;
        if value.is_empty() {
            return None;
        }
        let url = match Url::parse(&value) {
            Ok(url) => url,
            Err(error) => {
                let message = format!(
                    "invalid proxy URL \"{}\": {error} (expected a URL such as socks5h://user:password@127.0.0.1:1080)",
                    quotable(&raw.0)
                );
                self.error(path, message);
                return None;
            }
        };
        if !PROXY_SCHEMES.contains(&url.scheme()) {
            // The scheme is shown only when it is written literally: a whole URL from the
            // environment could parse with a key as its scheme.
            let scheme = url.scheme();
            let message = if raw.0.starts_with(&format!("{scheme}:")) {
                format!(
                    "unsupported proxy scheme \"{scheme}\" (use http, https, socks5 or socks5h)"
                )
            } else {
                format!(
                    "unsupported proxy scheme in \"{}\" (use http, https, socks5 or socks5h)",
                    raw.0
                )
            };
            self.error(path, message);
            return None;
        }
        if url.host_str().is_none_or(str::is_empty) {
            self.error(path, format!("proxy URL \"{}\" has no host (expected a URL such as socks5h://127.0.0.1:1080)", raw.0));
            return None;
        }
        // A path or query is never part of a proxy address. It appears when an unencoded
        // `/` in a password from the environment ends the authority early, which also
        // makes the text before it the host.
        let has_path = !matches!(url.path(), "" | "/");
        if has_path || url.query().is_some() || url.fragment().is_some() {
            let message = format!(
                "proxy URL \"{}\" has a path or query (a proxy URL ends after host:port; percent-encode / ? # and @ in a password, e.g. / as %2F)",
                raw.0
            );
            self.error(path, message);
            return None;
        }
        Some(url)
    }

    fn trace_url(&mut self, path: &str, raw: Option<&Text>) -> Option<Url> {
        let raw = raw?;
        let value = self.optional_text(path, Some(raw))?;
        self.http_url(path, raw, &value)
    }

    /// Checks that a period is above zero.
    pub(super) fn positive_duration(&mut self, path: &str, text: &Text) -> Option<Duration> {
        let period = self.duration(path, text)?;
        if period.is_zero() {
            self.error(
                path,
                "the period must be greater than 0 (expected a duration such as 60s or 5m)"
                    .to_owned(),
            );
            return None;
        }
        Some(period)
    }

    fn source_address(&mut self, path: &str, raw: Option<&Text>) -> Option<IpAddr> {
        let raw = raw?;
        let value = self.optional_text(path, Some(raw))?;
        let parsed = value.parse::<IpAddr>().map_err(|_| {
            let message = format!("invalid source_address \"{value}\" (expected an IP address such as 192.0.2.10 or 2001:db8::1)");
            as_written(message, &value, raw)
        });
        let address = self.check(path, parsed)?;
        if self.check_host {
            self.check(path, check_local_address(address))?;
        }
        Some(address)
    }

    fn ca_file(&mut self, path: &str, raw: Option<&Text>) -> Option<PathBuf> {
        let raw = raw?;
        let value = self.optional_text(path, Some(raw))?;
        let file = resolve_relative(self.source, Path::new(&value));
        // Messages name the resolved path, unless the path came from the environment.
        let shown = if value == raw.0 {
            file.display().to_string()
        } else {
            raw.0.clone()
        };
        let result = read_certificates(&file, &shown).map(|()| file);
        self.check(path, result)
    }
}

/// Replaces the quoted expanded `value` in `message` with the value as written, so that a
/// message never shows what `${VAR}` expanded to (it may be a key).
pub(super) fn as_written(message: String, value: &str, written: &Text) -> String {
    if value == written.0 {
        return message;
    }
    message.replace(&format!("\"{value}\""), &format!("\"{}\"", written.0))
}

/// Checks that `address` belongs to this machine by binding a TCP socket to it on port 0.
/// The socket is closed at once and no packet is sent.
fn check_local_address(address: IpAddr) -> Result<(), String> {
    match std::net::TcpListener::bind((address, 0)) {
        Ok(_) => Ok(()),
        Err(error) => {
            let text = error.to_string();
            let reason = text.split(" (os error").next().unwrap_or(&text);
            Err(format!(
                "source_address {address} is not an address of this machine (bind failed: {reason}); use an address from \"ip addr\""
            ))
        }
    }
}

/// Resolves `path` against the folder of the config file unless it is absolute.
fn resolve_relative(source: &Path, path: &Path) -> PathBuf {
    match source.parent() {
        Some(folder) if path.is_relative() => folder.join(path),
        _ => path.to_path_buf(),
    }
}

/// Checks that `file` is PEM with at least one certificate; messages call it `file_name`.
fn read_certificates(file: &Path, file_name: &str) -> Result<(), String> {
    if file.is_dir() {
        return Err(format!(
            "ca_file \"{file_name}\" is a directory (give the path of a PEM file of CA certificates)"
        ));
    }
    let bytes = std::fs::read(file).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => format!(
            "ca_file \"{file_name}\" not found (give the path of a PEM file of CA certificates; a relative path starts at the config file's folder)"
        ),
        _ => format!("cannot read ca_file \"{file_name}\": {error}"),
    })?;

    let mut count = 0;
    for certificate in CertificateDer::pem_slice_iter(&bytes) {
        if let Err(error) = certificate {
            return Err(format!("ca_file \"{file_name}\" is not valid PEM: {error}"));
        }
        count += 1;
    }
    if count == 0 {
        return Err(format!(
            "ca_file \"{file_name}\" contains no certificate (expected PEM with at least one BEGIN CERTIFICATE block)"
        ));
    }
    Ok(())
}

/// Returns a URL as written in the file with its password and `key=` query values hidden,
/// for quoting in an error message: a literal key in the file must not reach a terminal or a
/// log through `check` or a rejected reload.
fn quotable(raw: &str) -> String {
    crate::redact::Redactor::default().redact(raw)
}
