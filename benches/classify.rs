//! Classification cost for the two common shapes of a failed probe: a 64 KiB HTML page
//! (the body cap) and a small JSON error.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use routewatch::classify::{Expectation, HttpResponse, Observation, classify};

/// Builds a 64 KiB HTML 403 page whose geo-ban marker is at the end, so every body needle
/// is searched across the whole page.
fn html_page() -> Observation {
    let head = "<!DOCTYPE html><html><head><title>Unavailable</title></head><body>";
    let tail = "<p>This service is not available in your region.</p></body></html>";
    let filler = "<div class=\"row\"><p>Lorem ipsum dolor sit amet, consectetur adipiscing \
                  elit, sed do eiusmod tempor incididunt ut labore.</p></div>\n";
    let mut body = String::from(head);
    while body.len() + filler.len() + tail.len() <= 64 * 1024 {
        body.push_str(filler);
    }
    body.push_str(tail);
    Observation::Response(HttpResponse {
        status: 403,
        headers: vec![
            (
                "content-type".to_owned(),
                "text/html; charset=UTF-8".to_owned(),
            ),
            ("server".to_owned(), "cloudflare".to_owned()),
            ("cf-ray".to_owned(), "8f1c2a3b4d5e6f70-HKG".to_owned()),
        ],
        body: body.into_bytes(),
        body_truncated: false,
    })
}

/// Builds a 64 KiB HTML 200 page that no rule matches, so every row runs before the
/// fallback.
fn unmatched_html_page() -> Observation {
    let filler = "<div class=\"row\"><p>Lorem ipsum dolor sit amet.</p></div>\n";
    let mut body = String::from("<!DOCTYPE html><html><head><title>Home</title></head><body>");
    while body.len() + filler.len() <= 64 * 1024 {
        body.push_str(filler);
    }
    Observation::Response(HttpResponse {
        status: 200,
        headers: vec![("content-type".to_owned(), "text/html".to_owned())],
        body: body.into_bytes(),
        body_truncated: false,
    })
}

fn json_error() -> Observation {
    let body = br#"{"error":{"message":"Rate limit reached for requests per min (RPM).","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
    Observation::Response(HttpResponse {
        status: 429,
        headers: vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("server".to_owned(), "cloudflare".to_owned()),
        ],
        body: body.to_vec(),
        body_truncated: false,
    })
}

fn bench_classify(c: &mut Criterion) {
    let expectation = Expectation::default();
    let cases = [
        ("html_64k_geo_page", html_page()),
        ("html_64k_unmatched_200", unmatched_html_page()),
        ("json_small_error", json_error()),
    ];
    for (name, observation) in cases {
        c.bench_function(name, |b| {
            b.iter(|| classify(black_box(&observation), &expectation, &[]))
        });
    }
}

criterion_group!(benches, bench_classify);
criterion_main!(benches);
