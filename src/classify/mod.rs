//! Classification: a pure function from one [`Observation`] to a [`Verdict`].
//!
//! This module does no I/O and imports no tokio, reqwest, hyper or prometheus, so it can be
//! tested and fuzzed with nothing but bytes. The probe module produces observations; metrics
//! and status consume verdicts.

use std::borrow::Cow;
use std::fmt;

/// The closed set of verdict classes. [`Class::as_str`] is the only spelling used in metric
/// labels, JSON and log fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// The endpoint answered as expected.
    Ok,
    /// The credential or account is refused.
    Auth,
    /// The provider refuses the caller's country, region or exit IP.
    GeoBlock,
    /// A WAF, CDN, captive portal or interception page answered instead of the API.
    WafHtml,
    /// The provider throttles this caller.
    RateLimited,
    /// The provider or its CDN failed.
    ServerError,
    /// An answer that no rule explains and that fails the expectation.
    Unexpected,
    /// No complete answer within the monitor's timeout.
    Timeout,
    /// The name did not resolve.
    Dns,
    /// No TCP connection to the endpoint.
    Connect,
    /// The TLS handshake failed.
    Tls,
    /// The route's proxy failed, not the endpoint.
    Proxy,
}

impl Class {
    /// Every class, in the order used for metric series and documentation.
    pub const ALL: [Class; 12] = [
        Class::Ok,
        Class::Auth,
        Class::GeoBlock,
        Class::WafHtml,
        Class::RateLimited,
        Class::ServerError,
        Class::Unexpected,
        Class::Timeout,
        Class::Dns,
        Class::Connect,
        Class::Tls,
        Class::Proxy,
    ];

    /// Returns the snake_case name used in labels, JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Ok => "ok",
            Class::Auth => "auth",
            Class::GeoBlock => "geo_block",
            Class::WafHtml => "waf_html",
            Class::RateLimited => "rate_limited",
            Class::ServerError => "server_error",
            Class::Unexpected => "unexpected",
            Class::Timeout => "timeout",
            Class::Dns => "dns",
            Class::Connect => "connect",
            Class::Tls => "tls",
            Class::Proxy => "proxy",
        }
    }

    /// Parses the snake_case name; `None` for anything else.
    pub fn parse(name: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|class| class.as_str() == name)
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one probe saw: either an HTTP response or a transport failure.
#[derive(Debug, Clone)]
pub enum Observation {
    /// A status line and headers arrived (the body may be cut at the cap).
    Response(HttpResponse),
    /// No usable HTTP response arrived.
    Transport(TransportError),
}

/// The facts of one HTTP response as the probe recorded them.
#[derive(Debug, Clone, Default)]
pub struct HttpResponse {
    /// The HTTP status code.
    pub status: u16,
    /// Header names in lowercase, values as received (lossy UTF-8), in arrival order.
    pub headers: Vec<(String, String)>,
    /// The first bytes of the body, at most the probe's body cap.
    pub body: Vec<u8>,
    /// True when the body was longer than the cap and reading stopped.
    pub body_truncated: bool,
}

impl HttpResponse {
    /// Returns the first value of a header, matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// The kind of a transport failure; each maps to one class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// No complete answer within the timeout.
    Timeout,
    /// The host name did not resolve.
    Dns,
    /// No TCP connection, or the connection broke before a response.
    Connect,
    /// The TLS handshake with the endpoint failed.
    Tls,
    /// The route's proxy could not be reached or refused the tunnel.
    Proxy,
}

/// A transport failure with a one-line description (secrets already removed).
#[derive(Debug, Clone)]
pub struct TransportError {
    /// Which stage failed.
    pub kind: TransportKind,
    /// The error and its source chain, joined with ": ".
    pub detail: String,
}

/// What a healthy answer looks like for one monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    /// Accepted status codes; empty means any 2xx.
    pub statuses: Vec<u16>,
    /// True when the body must be JSON (by content type, or by its first byte).
    pub json: bool,
}

impl Default for Expectation {
    fn default() -> Self {
        Expectation {
            statuses: Vec::new(),
            json: true,
        }
    }
}

/// The result of classifying one observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The class.
    pub class: Class,
    /// A stable id from the built-in table or a user rule's name; safe as a label.
    pub reason: Cow<'static, str>,
    /// One human line saying what matched: status, header, body marker.
    pub evidence: String,
}

mod evidence;
mod facts;
pub mod raw;
mod rule;
mod signatures;

pub use evidence::MAX_EVIDENCE_CHARS;
pub use raw::{RawResponseError, body_snippet, parse_raw_response};
pub use rule::{Matcher, Rule};

use facts::ResponseFacts;

/// Classifies one observation against the monitor's expectation.
///
/// The order is fixed: a transport error maps straight to its class; then `user_rules` in
/// order (the reason is the rule's id); then the built-in signature table; then the
/// expectation (`expectation.ok`); then the fallbacks by status and body kind. The function
/// does no I/O. Its cost is bounded by the scanned body prefix (64 KiB): the body is
/// lowercased once, searched once for every built-in needle, and parsed as JSON at most once
/// (only when it starts like JSON).
pub fn classify(
    observation: &Observation,
    expectation: &Expectation,
    user_rules: &[Rule],
) -> Verdict {
    match observation {
        Observation::Transport(error) => classify_transport(error),
        Observation::Response(response) => classify_response(response, expectation, user_rules),
    }
}

/// Returns the built-in signature rows in the order [`classify`] checks them.
pub fn builtin_rules() -> &'static [Rule] {
    &signatures::BUILTIN.rules
}

fn classify_transport(error: &TransportError) -> Verdict {
    let (class, reason) = match error.kind {
        TransportKind::Timeout => (Class::Timeout, "transport.timeout"),
        TransportKind::Dns => (Class::Dns, "transport.dns"),
        TransportKind::Connect => (Class::Connect, "transport.connect"),
        TransportKind::Tls => (Class::Tls, "transport.tls"),
        TransportKind::Proxy => (Class::Proxy, "transport.proxy"),
    };
    Verdict {
        class,
        reason: Cow::Borrowed(reason),
        evidence: evidence::finish(&error.detail),
    }
}

fn classify_response(
    response: &HttpResponse,
    expectation: &Expectation,
    user_rules: &[Rule],
) -> Verdict {
    let table = &*signatures::BUILTIN;
    let facts = ResponseFacts::new(response, &table.needles);

    let rules = user_rules.iter().chain(&table.rules);
    for rule in rules {
        if let Some(fragments) = rule.evaluate(&facts) {
            return Verdict {
                class: rule.class,
                reason: rule.id.clone(),
                evidence: evidence::response_line(response.status, &fragments),
            };
        }
    }

    if let Some(verdict) = check_expectation(&facts, expectation) {
        return verdict;
    }
    fallback(&facts, expectation)
}

/// Returns `ok` when the status is expected and, if JSON is expected, the body is JSON.
fn check_expectation(facts: &ResponseFacts<'_>, expectation: &Expectation) -> Option<Verdict> {
    let status = facts.response.status;
    if !status_expected(status, expectation) {
        return None;
    }
    let fragment = if expectation.json {
        if !facts.body_is_json() {
            return None;
        }
        "JSON body".to_owned()
    } else if facts.content_type.is_empty() {
        "no content-type".to_owned()
    } else {
        format!("content-type {}", facts.content_type)
    };
    Some(Verdict {
        class: Class::Ok,
        reason: Cow::Borrowed("expectation.ok"),
        evidence: evidence::response_line(status, &[fragment]),
    })
}

fn status_expected(status: u16, expectation: &Expectation) -> bool {
    if expectation.statuses.is_empty() {
        (200..=299).contains(&status)
    } else {
        expectation.statuses.contains(&status)
    }
}

/// Picks a class for a response that no rule matched and that fails the expectation.
fn fallback(facts: &ResponseFacts<'_>, expectation: &Expectation) -> Verdict {
    let status = facts.response.status;
    let html_for_json = expectation.json && facts.body_is_html();
    let (class, reason) = match status {
        401 => (Class::Auth, "http.401"),
        407 => (Class::Proxy, "http.407"),
        429 => (Class::RateLimited, "http.429"),
        500..=599 => (Class::ServerError, "http.5xx"),
        _ if html_for_json => (Class::WafHtml, "html.instead_of_json"),
        _ => (Class::Unexpected, "expectation.failed"),
    };

    let mut fragments = vec![evidence::summarize_body(facts)];
    if class == Class::Unexpected || class == Class::WafHtml {
        fragments.push(describe_expectation(expectation));
    }
    Verdict {
        class,
        reason: Cow::Borrowed(reason),
        evidence: evidence::response_line(status, &fragments),
    }
}

/// Describes what the monitor expected, e.g. `expected 2xx JSON`.
fn describe_expectation(expectation: &Expectation) -> String {
    let statuses = if expectation.statuses.is_empty() {
        "2xx".to_owned()
    } else {
        let codes: Vec<String> = expectation.statuses.iter().map(u16::to_string).collect();
        codes.join("/")
    };
    if expectation.json {
        format!("expected {statuses} JSON")
    } else {
        format!("expected {statuses}")
    }
}
