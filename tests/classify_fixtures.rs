//! Table test of the classifier over saved raw responses in tests/fixtures/responses/, with
//! the expected class and reason of each in expected.tsv there, plus the traps pinned by name.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use routewatch::classify::{
    Class, Expectation, MAX_EVIDENCE_CHARS, Observation, Verdict, builtin_rules, classify,
    parse_raw_response,
};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/responses")
}

/// Rows of expected.tsv: file, class, reason.
fn expected_rows() -> Vec<(String, String, String)> {
    let table = std::fs::read_to_string(fixtures_dir().join("expected.tsv")).unwrap();
    table
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            assert_eq!(fields.len(), 3, "expected.tsv row {line:?} needs 3 fields");
            (
                fields[0].to_owned(),
                fields[1].to_owned(),
                fields[2].to_owned(),
            )
        })
        .collect()
}

fn classify_fixture(name: &str) -> Verdict {
    let bytes = std::fs::read(fixtures_dir().join(name)).unwrap();
    let response = parse_raw_response(&bytes).unwrap();
    classify(
        &Observation::Response(response),
        &Expectation::default(),
        &[],
    )
}

#[test]
fn fixtures_match_expected_table() {
    let mut failures = Vec::new();
    for (file, class, reason) in expected_rows() {
        let verdict = classify_fixture(&file);
        if verdict.class.as_str() != class || verdict.reason != reason {
            failures.push(format!(
                "{file}: expected {class} {reason}, got {} {} ({})",
                verdict.class, verdict.reason, verdict.evidence
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn fixtures_table_has_enough_rows() {
    assert!(expected_rows().len() >= 45);
}

#[test]
fn fixtures_every_file_has_a_row() {
    let listed: BTreeSet<String> = expected_rows().into_iter().map(|row| row.0).collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".http"))
        .collect();
    assert_eq!(listed, on_disk);
}

#[test]
fn fixtures_cover_every_builtin_rule_id() {
    let covered: BTreeSet<String> = expected_rows().into_iter().map(|row| row.2).collect();
    let missing: Vec<&str> = builtin_rules()
        .iter()
        .map(|rule| rule.id.as_ref())
        .filter(|id| !covered.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "rule ids without a fixture: {missing:?}"
    );
}

#[test]
fn fixtures_cover_every_response_class() {
    let covered: BTreeSet<String> = expected_rows().into_iter().map(|row| row.1).collect();
    let response_classes = [
        Class::Ok,
        Class::Auth,
        Class::GeoBlock,
        Class::WafHtml,
        Class::RateLimited,
        Class::ServerError,
        Class::Unexpected,
        Class::Proxy,
    ];
    for class in response_classes {
        assert!(covered.contains(class.as_str()), "no fixture for {class}");
    }
}

#[test]
fn fixtures_evidence_capped_without_cookies() {
    for (file, _, _) in expected_rows() {
        let verdict = classify_fixture(&file);
        assert!(
            verdict.evidence.chars().count() <= MAX_EVIDENCE_CHARS,
            "{file}: {}",
            verdict.evidence
        );
        assert!(
            !verdict.evidence.contains("abc123"),
            "{file}: {}",
            verdict.evidence
        );
        assert!(
            !verdict.evidence.contains("__cf_bm=xyz"),
            "{file}: {}",
            verdict.evidence
        );
        assert!(
            verdict.evidence.starts_with("HTTP "),
            "{file}: {}",
            verdict.evidence
        );
    }
}

#[test]
fn trap_geo_page_with_challenge_script() {
    let verdict = classify_fixture("html-geo-with-challenge-script-403.http");
    assert_eq!(verdict.class, Class::GeoBlock);
    assert_eq!(verdict.reason, "html.region_unavailable");
    assert_eq!(
        verdict.evidence,
        "HTTP 403; HTML title \"Unavailable\"; body contains \"not available in your region\""
    );
}

#[test]
fn trap_cloudflare_branded_502_page_is_server_error() {
    let verdict = classify_fixture("cloudflare-502-html.http");
    assert_eq!(verdict.class, Class::ServerError);
    assert_eq!(verdict.reason, "cloudflare.5xx_page");
    assert_eq!(
        verdict.evidence,
        "HTTP 502; HTML title \"api.example.com | 502: Bad gateway\"; body contains \"cloudflare\""
    );
}

#[test]
fn trap_json_401_with_cloudflare_headers_is_auth() {
    let verdict = classify_fixture("groq-invalid-key-401.http");
    assert_eq!(verdict.class, Class::Auth);
    assert_eq!(verdict.reason, "api.invalid_api_key");
    assert_eq!(
        verdict.evidence,
        "HTTP 401; JSON error.code = invalid_api_key"
    );
}

#[test]
fn trap_429_insufficient_quota_is_auth() {
    let verdict = classify_fixture("openai-insufficient-quota-429.http");
    assert_eq!(verdict.class, Class::Auth);
    assert_eq!(verdict.reason, "api.insufficient_quota");
    assert_eq!(
        verdict.evidence,
        "HTTP 429; JSON error.code = insufficient_quota"
    );
}

#[test]
fn trap_json_403_without_signature_is_not_auth() {
    let verdict = classify_fixture("forbidden-json-403.http");
    assert_eq!(verdict.class, Class::Unexpected);
    assert_eq!(
        verdict.evidence,
        "HTTP 403; JSON error.type = invalid_request_error; \
         JSON error.message \"You are not allowed to sample from this model\"; expected 2xx JSON"
    );
}

#[test]
fn evidence_challenge_names_title_and_header() {
    let verdict = classify_fixture("cloudflare-challenge-403.http");
    assert_eq!(verdict.evidence, "HTTP 403; header cf-mitigated: challenge");
    let blocked = classify_fixture("groq-cloudflare-block-403.http");
    assert_eq!(
        blocked.evidence,
        "HTTP 403; HTML title \"Attention Required! | Cloudflare\"; \
         body contains \"sorry, you have been blocked\""
    );
}

#[test]
fn evidence_openai_geo_names_json_code() {
    let verdict = classify_fixture("openai-geo-403.http");
    assert_eq!(
        verdict.evidence,
        "HTTP 403; JSON error.code = unsupported_country_region_territory"
    );
}

#[test]
fn evidence_nested_geo_names_json_code() {
    let verdict = classify_fixture("gateway-nested-geo-400.http");
    assert_eq!(
        verdict.evidence,
        "HTTP 400; JSON error.code = unsupported_country_region_territory"
    );
}

#[test]
fn trap_tinyproxy_wrong_password_401_is_proxy() {
    let verdict = classify_fixture("tinyproxy-auth-401.http");
    assert_eq!(verdict.class, Class::Proxy);
    assert_eq!(
        verdict.evidence,
        "HTTP 401; header server: tinyproxy/1.11.1"
    );
}

#[test]
fn trap_via_unable_to_connect_502_is_proxy() {
    let verdict = classify_fixture("via-unable-to-connect-502.http");
    assert_eq!(verdict.class, Class::Proxy);
    assert_eq!(
        verdict.evidence,
        "HTTP 502; header via: 1.1 tinyproxy (tinyproxy/1.11.1); \
         HTML title \"502 Unable to connect\"; body contains \"unable to connect\""
    );
}

#[test]
fn trap_region_page_200_is_geo_block() {
    let verdict = classify_fixture("html-region-200.http");
    assert_eq!(verdict.class, Class::GeoBlock);
    assert_eq!(
        verdict.evidence,
        "HTTP 200; HTML title \"Unavailable\"; body contains \"not available in your region\""
    );
}

#[test]
fn evidence_empty_403_names_cdn_header() {
    let cloudfront = classify_fixture("cloudfront-empty-403.http");
    assert_eq!(
        cloudfront.evidence,
        "HTTP 403; empty body; header server: CloudFront"
    );
    let cloudflare = classify_fixture("cloudflare-empty-403-no-ray.http");
    assert_eq!(
        cloudflare.evidence,
        "HTTP 403; empty body; header server: cloudflare"
    );
}

#[test]
fn evidence_204_names_empty_body() {
    let verdict = classify_fixture("no-content-204.http");
    assert_eq!(verdict.evidence, "HTTP 204; empty body");
}

#[test]
fn evidence_redirect_names_target_without_query() {
    let html = classify_fixture("redirect-301-html.http");
    assert_eq!(
        html.evidence,
        "HTTP 301; redirect to https://api.example.com/v2/models?…; expected 2xx JSON"
    );
    let empty = classify_fixture("redirect-308-empty.http");
    assert_eq!(
        empty.evidence,
        "HTTP 308; redirect to /v2/models; expected 2xx JSON"
    );
    let portal = classify_fixture("captive-portal-redirect-302.http");
    assert_eq!(
        portal.evidence,
        "HTTP 302; redirect to http://192.0.2.1:8002/index.php?…"
    );
}
