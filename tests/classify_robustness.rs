//! The classifier and the raw parser must return, not panic, on any bytes, and their work
//! must stay bounded on hostile input: huge headers, invalid UTF-8, deeply nested JSON.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use routewatch::classify::{
    Class, Expectation, HttpResponse, Observation, classify, parse_raw_response,
};

fn classify_bytes(status: u16, content_type: &str, body: Vec<u8>) -> routewatch::classify::Verdict {
    let response = HttpResponse {
        status,
        headers: vec![("content-type".to_owned(), content_type.to_owned())],
        body,
        body_truncated: false,
    };
    classify(
        &Observation::Response(response),
        &Expectation::default(),
        &[],
    )
}

proptest! {
    #[test]
    fn parse_arbitrary_bytes_never_panics(input in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_raw_response(&input);
    }

    #[test]
    fn parse_arbitrary_after_status_line_never_panics(
        rest in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let mut input = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n".to_vec();
        input.extend(rest);
        let _ = parse_raw_response(&input);
    }

    #[test]
    fn classify_arbitrary_body_never_panics(
        status in 0u16..1000,
        content_type in prop::sample::select(vec!["text/html", "application/json", "", "text/plain"]),
        body in proptest::collection::vec(any::<u8>(), 0..4096),
    ) {
        let verdict = classify_bytes(status, content_type, body);
        prop_assert!(verdict.evidence.chars().count() <= 200);
    }

    #[test]
    fn classify_arbitrary_json_like_body_never_panics(body in r#"[\{\[\]\}":,a-z0-9 \\]{0,512}"#) {
        let _ = classify_bytes(403, "application/json", body.into_bytes());
    }

    #[test]
    fn classify_parsed_arbitrary_response_never_panics(
        input in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let mut raw = b"HTTP/2 403\r\n".to_vec();
        raw.extend(input);
        if let Ok(response) = parse_raw_response(&raw) {
            let _ = classify(&Observation::Response(response), &Expectation::default(), &[]);
        }
    }
}

#[test]
fn classify_deeply_nested_json_is_bounded() {
    let started = Instant::now();
    let verdict = classify_bytes(400, "application/json", "[".repeat(100_000).into_bytes());
    assert_eq!(verdict.class, Class::Unexpected);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn classify_deeply_nested_objects_is_bounded() {
    let body = r#"{"a":"#.repeat(50_000);
    let verdict = classify_bytes(400, "application/json", body.into_bytes());
    assert_eq!(verdict.class, Class::Unexpected);
}

#[test]
fn classify_invalid_utf8_body_still_matches() {
    let mut body = b"\xff\xfe<html><title>Just a moment...</title>\xc3".to_vec();
    body.extend(b"</html>");
    let verdict = classify_bytes(403, "text/html", body);
    assert_eq!(verdict.class, Class::WafHtml);
    assert_eq!(verdict.reason, "cloudflare.challenge");
}

#[test]
fn classify_huge_headers_is_bounded() {
    let headers = (0..10_000)
        .map(|index| (format!("x-filler-{index}"), "v".repeat(100)))
        .collect();
    let response = HttpResponse {
        status: 403,
        headers,
        body: Vec::new(),
        body_truncated: false,
    };
    let started = Instant::now();
    let verdict = classify(
        &Observation::Response(response),
        &Expectation::default(),
        &[],
    );
    assert_eq!(verdict.class, Class::Unexpected);
    assert_eq!(verdict.evidence, "HTTP 403; empty body; expected 2xx JSON");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn classify_body_beyond_scan_cap_is_ignored() {
    let mut body = vec![b' '; 70 * 1024];
    body.extend(b"error code: 1020");
    let verdict = classify_bytes(403, "text/plain", body);
    assert_eq!(verdict.class, Class::Unexpected);
}

#[test]
fn classify_many_repeated_needles_is_bounded() {
    let body = "cloudflare ".repeat(6_000);
    let started = Instant::now();
    let verdict = classify_bytes(403, "text/html", body.into_bytes());
    assert_eq!(verdict.class, Class::WafHtml);
    assert!(started.elapsed() < Duration::from_secs(1));
}
