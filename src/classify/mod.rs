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
    /// The endpoint responded as expected.
    Ok,
    /// The credential or account is refused.
    Auth,
    /// The provider refuses the caller's country, region or exit IP.
    GeoBlock,
    /// A WAF, CDN, captive portal or interception page responded instead of the API.
    WafHtml,
    /// The provider throttles this caller.
    RateLimited,
    /// The provider or its CDN failed.
    ServerError,
    /// A response that no rule explains and that fails the expectation.
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

/// The outcome of one probe: an HTTP response or a transport failure.
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
    /// The peer answered, but not in valid HTTP: a garbage status line, a header section over
    /// the client's limit, or an invalid chunked body.
    Protocol,
}

/// A transport failure with a one-line description (secrets already removed).
#[derive(Debug, Clone)]
pub struct TransportError {
    /// The stage that failed.
    pub kind: TransportKind,
    /// The error and its source chain, joined with ": ".
    pub detail: String,
}

/// The shape of a healthy response for one monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    /// Accepted status codes; empty means any 2xx.
    pub statuses: Vec<u16>,
    /// True when the body must be JSON (by content type, or by its first byte). For 204 No
    /// Content and 205 Reset Content, which carry no body, it means "JSON if there is a
    /// body": an empty body passes.
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
/// The order is fixed. A transport error maps straight to its class. Otherwise `user_rules`
/// run in order (the reason is the rule's id), then the built-in signature table, then the
/// expectation (`expectation.ok`), then the fallbacks by status and body kind. The function
/// does no I/O. Its cost is bounded by the scanned body prefix (64 KiB): the body is
/// lowercased once, searched once per group of built-in needles, and parsed as JSON at most once
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
        // An answer that is not HTTP is still an answer, and no rule explains it.
        TransportKind::Protocol => (Class::Unexpected, "transport.invalid_response"),
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
        if let Some(mut fragments) = rule.evaluate(&facts) {
            add_redirect_target(&mut fragments, response);
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
        if facts.body_is_json() {
            "JSON body".to_owned()
        } else if matches!(status, 204 | 205) && facts.body_is_empty() {
            "empty body".to_owned()
        } else {
            return None;
        }
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
    let location = facts.response.header("location");
    let (class, reason) = match status {
        401 => (Class::Auth, "http.401"),
        407 => (Class::Proxy, "http.407"),
        429 => (Class::RateLimited, "http.429"),
        500..=599 => (Class::ServerError, "http.5xx"),
        // A redirect's page is only the server's note about the move, so its HTML says
        // nothing about a WAF. The captive portal rows catch redirects to a login page.
        300..=399 if location.is_some() => (Class::Unexpected, "expectation.failed"),
        _ if html_for_json => (Class::WafHtml, "html.instead_of_json"),
        _ => (Class::Unexpected, "expectation.failed"),
    };

    let mut fragments = Vec::new();
    add_redirect_target(&mut fragments, facts.response);
    if fragments.is_empty() {
        fragments.push(evidence::summarize_body(facts));
    }
    if class == Class::Unexpected || class == Class::WafHtml {
        fragments.push(describe_expectation(expectation));
    }
    Verdict {
        class,
        reason: Cow::Borrowed(reason),
        evidence: evidence::response_line(status, &fragments),
    }
}

/// Adds `redirect to <target>` for a 3xx response with a Location header, unless a matcher
/// already named the Location.
fn add_redirect_target(fragments: &mut Vec<String>, response: &HttpResponse) {
    if !(300..=399).contains(&response.status) {
        return;
    }
    let Some(location) = response.header("location") else {
        return;
    };
    if fragments
        .iter()
        .any(|fragment| fragment.starts_with("redirect to "))
    {
        return;
    }
    fragments.insert(0, evidence::describe_redirect(location));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn json_response(status: u16, body: &str) -> Observation {
        Observation::Response(HttpResponse {
            status,
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body: body.as_bytes().to_vec(),
            body_truncated: false,
        })
    }

    fn html_response(status: u16, body: &str) -> Observation {
        Observation::Response(HttpResponse {
            status,
            headers: vec![("content-type".to_owned(), "text/html".to_owned())],
            body: body.as_bytes().to_vec(),
            body_truncated: false,
        })
    }

    fn run(observation: &Observation) -> Verdict {
        classify(observation, &Expectation::default(), &[])
    }

    #[test]
    fn classify_transport_kinds_map_to_classes() {
        let cases = [
            (TransportKind::Timeout, Class::Timeout, "transport.timeout"),
            (TransportKind::Dns, Class::Dns, "transport.dns"),
            (TransportKind::Connect, Class::Connect, "transport.connect"),
            (TransportKind::Tls, Class::Tls, "transport.tls"),
            (TransportKind::Proxy, Class::Proxy, "transport.proxy"),
            (
                TransportKind::Protocol,
                Class::Unexpected,
                "transport.invalid_response",
            ),
        ];
        for (kind, class, reason) in cases {
            let observation = Observation::Transport(TransportError {
                kind,
                detail: "operation timed out".to_owned(),
            });
            let verdict = run(&observation);
            assert_eq!(verdict.class, class);
            assert_eq!(verdict.reason, reason);
            assert_eq!(verdict.evidence, "operation timed out");
        }
    }

    #[test]
    fn classify_transport_long_detail_is_capped() {
        let observation = Observation::Transport(TransportError {
            kind: TransportKind::Tls,
            detail: "invalid peer certificate: ".repeat(20),
        });
        let verdict = run(&observation);
        // The cut falls inside "certificate", which is dropped whole.
        let expected = format!("{}invalid peer…", "invalid peer certificate: ".repeat(7));
        assert_eq!(verdict.evidence, expected);
    }

    #[test]
    fn classify_json_200_is_ok() {
        let verdict = run(&json_response(200, r#"{"data":[]}"#));
        assert_eq!(verdict.class, Class::Ok);
        assert_eq!(verdict.reason, "expectation.ok");
        assert_eq!(verdict.evidence, "HTTP 200; JSON body");
    }

    #[test]
    fn classify_html_200_without_json_expectation_is_ok() {
        let expectation = Expectation {
            statuses: vec![200],
            json: false,
        };
        let verdict = classify(&html_response(200, "<html></html>"), &expectation, &[]);
        assert_eq!(verdict.class, Class::Ok);
        assert_eq!(verdict.evidence, "HTTP 200; content-type text/html");
    }

    #[test]
    fn classify_expected_404_is_ok() {
        let expectation = Expectation {
            statuses: vec![404],
            json: true,
        };
        let verdict = classify(&json_response(404, "{}"), &expectation, &[]);
        assert_eq!(verdict.class, Class::Ok);
    }

    #[test]
    fn classify_html_200_is_waf_html() {
        let verdict = run(&html_response(200, "<html><title>Portal</title></html>"));
        assert_eq!(verdict.class, Class::WafHtml);
        assert_eq!(verdict.reason, "html.instead_of_json");
        assert_eq!(
            verdict.evidence,
            "HTTP 200; HTML title \"Portal\"; expected 2xx JSON"
        );
    }

    #[test]
    fn classify_html_403_without_signature_is_waf_html() {
        let verdict = run(&html_response(
            403,
            "<html><title>403 Forbidden</title></html>",
        ));
        assert_eq!(verdict.class, Class::WafHtml);
        assert_eq!(verdict.reason, "html.instead_of_json");
    }

    #[test]
    fn classify_fallback_statuses_pick_classes() {
        let cases = [
            (401, Class::Auth, "http.401"),
            (407, Class::Proxy, "http.407"),
            (429, Class::RateLimited, "http.429"),
            (500, Class::ServerError, "http.5xx"),
            (599, Class::ServerError, "http.5xx"),
            (404, Class::Unexpected, "expectation.failed"),
            (302, Class::Unexpected, "expectation.failed"),
        ];
        for (status, class, reason) in cases {
            let verdict = run(&json_response(status, "{}"));
            assert_eq!(verdict.class, class, "status {status}");
            assert_eq!(verdict.reason, reason, "status {status}");
        }
    }

    #[test]
    fn classify_user_rule_wins_over_builtin() {
        let rule = Rule {
            id: Cow::Borrowed("corp-proxy-block"),
            class: Class::WafHtml,
            when: vec![
                Matcher::Status(vec![403]),
                Matcher::BodyContains("Blocked by Corporate Policy".to_owned()),
            ],
        };
        let observation = json_response(
            403,
            r#"{"error":{"code":"unsupported_country_region_territory","message":"blocked by corporate policy"}}"#,
        );
        let verdict = classify(&observation, &Expectation::default(), &[rule]);
        assert_eq!(verdict.class, Class::WafHtml);
        assert_eq!(verdict.reason, "corp-proxy-block");
        assert_eq!(
            verdict.evidence,
            "HTTP 403; body contains \"blocked by corporate policy\""
        );
    }

    #[test]
    fn classify_user_rules_apply_in_order() {
        let first = Rule {
            id: Cow::Borrowed("first"),
            class: Class::Auth,
            when: vec![Matcher::StatusRange(400..=499)],
        };
        let second = Rule {
            id: Cow::Borrowed("second"),
            class: Class::GeoBlock,
            when: vec![Matcher::Status(vec![403])],
        };
        let verdict = classify(
            &json_response(403, "{}"),
            &Expectation::default(),
            &[first, second],
        );
        assert_eq!(verdict.reason, "first");
        assert_eq!(verdict.evidence, "HTTP 403");
    }

    #[test]
    fn classify_user_rule_regex_and_json_field_match() {
        let rule = Rule {
            id: Cow::Borrowed("gateway-quota"),
            class: Class::Auth,
            when: vec![
                Matcher::JsonField {
                    path: "error.status".to_owned(),
                    equals: "402".to_owned(),
                },
                Matcher::BodyRegex(regex::Regex::new(r"quota \d+ exceeded").unwrap()),
            ],
        };
        let observation =
            json_response(400, r#"{"error":{"status":402,"msg":"quota 7 exceeded"}}"#);
        let verdict = classify(&observation, &Expectation::default(), &[rule]);
        assert_eq!(verdict.reason, "gateway-quota");
        assert_eq!(
            verdict.evidence,
            "HTTP 400; JSON error.status = 402; body matches \"quota 7 exceeded\""
        );
    }

    #[test]
    fn classify_cloudflare_headers_alone_are_not_waf_html() {
        let observation = Observation::Response(HttpResponse {
            status: 404,
            headers: vec![
                ("server".to_owned(), "cloudflare".to_owned()),
                ("cf-ray".to_owned(), "8f1c2a3b4d5e6f70-HKG".to_owned()),
                ("set-cookie".to_owned(), "__cf_bm=secret; path=/".to_owned()),
                ("content-type".to_owned(), "application/json".to_owned()),
            ],
            body: br#"{"error":{"code":"model_not_found"}}"#.to_vec(),
            body_truncated: false,
        });
        let verdict = run(&observation);
        assert_eq!(verdict.class, Class::Unexpected);
        assert_eq!(
            verdict.evidence,
            "HTTP 404; JSON error.code = model_not_found; expected 2xx JSON"
        );
    }

    #[test]
    fn classify_plain_429_is_rate_limited() {
        let verdict = run(&json_response(429, r#"{"error":"slow down"}"#));
        assert_eq!(verdict.class, Class::RateLimited);
        assert_eq!(verdict.reason, "http.429");
        assert_eq!(verdict.evidence, "HTTP 429; JSON error = slow down");
    }

    #[test]
    fn classify_gemini_400_bad_key_and_location_differ() {
        let key = run(&json_response(
            400,
            r#"{"error":{"code":400,"status":"INVALID_ARGUMENT","details":[{"reason":"API_KEY_INVALID"}]}}"#,
        ));
        let location = run(&json_response(
            400,
            r#"{"error":{"code":400,"message":"User location is not supported for the API use.","status":"FAILED_PRECONDITION"}}"#,
        ));
        assert_eq!(key.class, Class::Auth);
        assert_eq!(location.class, Class::GeoBlock);
    }

    #[test]
    fn classify_evidence_redacts_echoed_key() {
        let verdict = run(&json_response(
            418,
            r#"{"error":{"message":"bad token sk-proj-0123456789abcdefghij"}}"#,
        ));
        assert_eq!(
            verdict.evidence,
            "HTTP 418; JSON error.message \"bad token [REDACTED]\"; expected 2xx JSON"
        );
    }

    #[test]
    fn classify_secret_header_value_never_in_evidence() {
        let rule = Rule {
            id: Cow::Borrowed("cookie-rule"),
            class: Class::WafHtml,
            when: vec![Matcher::Header {
                name: "Set-Cookie".to_owned(),
                contains: None,
            }],
        };
        let observation = Observation::Response(HttpResponse {
            status: 403,
            headers: vec![("set-cookie".to_owned(), "session=topsecret".to_owned())],
            ..HttpResponse::default()
        });
        let verdict = classify(&observation, &Expectation::default(), &[rule]);
        assert_eq!(verdict.evidence, "HTTP 403; header set-cookie present");
    }

    #[test]
    fn classify_204_and_205_empty_body_is_ok() {
        for status in [204, 205] {
            let verdict = run(&json_response(status, ""));
            assert_eq!(verdict.class, Class::Ok, "status {status}");
            assert_eq!(verdict.evidence, format!("HTTP {status}; empty body"));
        }
        let not_json = run(&json_response(204, "done"));
        assert_eq!(not_json.class, Class::Unexpected);
        let empty_200 = run(&json_response(200, ""));
        assert_eq!(empty_200.class, Class::Unexpected);
    }

    #[test]
    fn classify_user_rule_on_redirect_names_target() {
        let rule = Rule {
            id: Cow::Borrowed("moved"),
            class: Class::Unexpected,
            when: vec![Matcher::Status(vec![301])],
        };
        let observation = Observation::Response(HttpResponse {
            status: 301,
            headers: vec![(
                "location".to_owned(),
                "https://api.example.com/v2/models".to_owned(),
            )],
            ..HttpResponse::default()
        });
        let verdict = classify(&observation, &Expectation::default(), &[rule]);
        assert_eq!(
            verdict.evidence,
            "HTTP 301; redirect to https://api.example.com/v2/models"
        );
    }

    #[test]
    fn classify_reflected_request_quotes_first_line_only() {
        let body = format!(
            "GET /reflect HTTP/1.1\r\nauthorization: Bearer BEARERSECRET33{}\r\n",
            "x".repeat(40)
        );
        let observation = Observation::Response(HttpResponse {
            status: 200,
            headers: vec![("content-type".to_owned(), "text/plain".to_owned())],
            body: body.into_bytes(),
            body_truncated: false,
        });
        let verdict = run(&observation);
        assert_eq!(
            verdict.evidence,
            "HTTP 200; body \"GET /reflect HTTP/1.1\"; expected 2xx JSON"
        );
    }

    #[test]
    fn classify_long_body_line_is_cut_at_a_word() {
        let body = format!("error: upstream refused {}", "BEARERSECRET33".repeat(5));
        let observation = Observation::Response(HttpResponse {
            status: 418,
            headers: vec![("content-type".to_owned(), "text/plain".to_owned())],
            body: body.into_bytes(),
            body_truncated: false,
        });
        let verdict = run(&observation);
        assert_eq!(
            verdict.evidence,
            "HTTP 418; body \"error: upstream refused [REDACTED]\"; expected 2xx JSON"
        );
    }

    #[test]
    fn builtin_rules_ids_are_label_safe() {
        for rule in builtin_rules() {
            let safe = rule
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._".contains(&b));
            assert!(safe, "{}", rule.id);
        }
    }

    #[test]
    fn classify_redirect_evidence_names_location() {
        let observation = Observation::Response(HttpResponse {
            status: 302,
            headers: vec![(
                "Location".to_owned(),
                "https://other.example.net/v1/models".to_owned(),
            )],
            body: Vec::new(),
            body_truncated: false,
        });
        let verdict = run(&observation);
        assert_eq!(verdict.class, Class::Unexpected);
        assert_eq!(verdict.reason, "expectation.failed");
        assert_eq!(
            verdict.evidence,
            "HTTP 302; redirect to https://other.example.net/v1/models; expected 2xx JSON"
        );
    }
}
