//! End-to-end: the scheduler skips ticks of a pair that is still running, bounds the probes in
//! flight with the global concurrency limit, and spreads the first probes over the first period.

mod support;

use std::time::{Duration, Instant};

use chrono::DateTime;
use serde_json::Value;
use support::net::SilentListener;
use support::service::Service;
use support::upstream::{MODELS, Reply, Routes, Upstream};

fn status_pairs(service: &Service) -> Vec<Value> {
    let (status, body) = service.get("/status");
    assert_eq!(status, 200, "GET /status: {body}");
    let document: Value = serde_json::from_str(&body).expect("/status is JSON");
    document["pairs"]
        .as_array()
        .expect("pairs is an array")
        .clone()
}

fn metric_value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no series {series} in:\n{metrics}"))
        .parse()
        .expect("a metric value is a number")
}

#[test]
fn running_pair_skips_ticks() {
    let silent = SilentListener::start();
    let config = format!(
        "monitors:\n  - name: stuck\n    url: http://127.0.0.1:{}/\n    schedule: every 1s\n    timeout: 30s\n",
        silent.port()
    );
    let service = Service::start(&config);

    std::thread::sleep(Duration::from_millis(4500));

    // One probe keeps the only connection open, so the ticks after it are skipped, not stacked.
    assert_eq!(silent.accepted(), 1);
    let (_, metrics) = service.get("/metrics");
    let skipped = metric_value(
        &metrics,
        r#"routewatch_ticks_skipped_total{monitor="stuck",route="direct"}"#,
    );
    assert!((2.0..=5.0).contains(&skipped), "skipped ticks: {skipped}");
    let pairs = status_pairs(&service);
    assert_eq!(pairs[0]["skipped_ticks"].as_f64().unwrap(), skipped);
    assert_eq!(pairs[0]["class"], Value::Null);
}

#[test]
fn concurrency_limit_bounds_probes_in_flight() {
    let silent = SilentListener::start();
    let monitors: String = (0..4)
        .map(|index| {
            format!(
                "  - name: stuck-{index}\n    url: http://127.0.0.1:{}/\n",
                silent.port()
            )
        })
        .collect();
    let config = format!(
        "global:\n  concurrency: 2\ndefaults:\n  schedule: every 1s\n  timeout: 30s\nmonitors:\n{monitors}"
    );
    let _service = Service::start(&config);

    std::thread::sleep(Duration::from_secs(3));

    assert_eq!(silent.accepted(), 2);
}

#[test]
fn first_probes_spread_over_period() {
    let upstream =
        Upstream::start_plain(Routes::new().route("/v1/models", Reply::json(200, MODELS)));
    let monitors: String = (0..4)
        .map(|index| {
            format!(
                "  - name: spread-{index}\n    url: {}\n",
                upstream.url("/v1/models")
            )
        })
        .collect();
    let config = format!("defaults:\n  schedule: every 4s\nmonitors:\n{monitors}");
    let started = Instant::now();
    let service = Service::start(&config);

    let deadline = Instant::now() + Duration::from_secs(10);
    let pairs = loop {
        let pairs = status_pairs(&service);
        if pairs.iter().all(|pair| !pair["checked_at"].is_null()) {
            break pairs;
        }
        assert!(
            Instant::now() < deadline,
            "not every pair was probed: {pairs:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "four pairs at every 4s finished their first probes too early"
    );

    let mut times: Vec<i64> = pairs
        .iter()
        .map(|pair| {
            DateTime::parse_from_rfc3339(pair["checked_at"].as_str().unwrap())
                .unwrap()
                .timestamp_millis()
        })
        .collect();
    times.sort_unstable();
    // Offsets 0, 1, 2 and 3 seconds into the first period, give or take the probe time.
    for gap in times.windows(2).map(|pair| pair[1] - pair[0]) {
        assert!(
            (500..=1500).contains(&gap),
            "first probes are {gap} ms apart: {times:?}"
        );
    }
}

/// Rewrites the service's config and sends SIGHUP.
fn reload_with(service: &Service, config: &str) {
    std::fs::write(service.config_path(), config).unwrap();
    service.signal(libc::SIGHUP);
}

/// Polls `/status` until `monitor` has a class, for at most `limit`.
fn wait_for_class(service: &Service, monitor: &str, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let class = status_pairs(service)
            .iter()
            .find(|pair| pair["monitor"] == monitor)
            .and_then(|pair| pair["class"].as_str().map(str::to_owned));
        if class.is_some() {
            return class;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

#[test]
fn raised_concurrency_applies_on_reload() {
    let silent = SilentListener::start();
    let upstream =
        Upstream::start_plain(Routes::new().route("/v1/models", Reply::json(200, MODELS)));
    let config = |concurrency: usize| {
        format!(
            "global:\n  concurrency: {concurrency}\ndefaults:\n  schedule: every 1s\n  timeout: 30s\nmonitors:\n  - name: stuck-0\n    url: http://127.0.0.1:{port}/\n  - name: stuck-1\n    url: http://127.0.0.1:{port}/\n  - name: fast\n    url: {fast}\n",
            port = silent.port(),
            fast = upstream.url("/v1/models"),
        )
    };
    let service = Service::start(&config(2));

    // The two stuck probes hold both slots, so the fast pair waits.
    assert_eq!(
        wait_for_class(&service, "fast", Duration::from_secs(2)),
        None
    );
    assert_eq!(silent.accepted(), 2);

    reload_with(&service, &config(4));
    assert_eq!(
        wait_for_class(&service, "fast", Duration::from_secs(3)).as_deref(),
        Some("ok"),
        "stderr:\n{}",
        service.stderr()
    );
}

#[test]
fn changed_pair_does_not_run_twice_at_once() {
    let silent = SilentListener::start();
    let config = |timeout: u32| {
        format!(
            "monitors:\n  - name: stuck\n    url: http://127.0.0.1:{}/\n    schedule: every 1s\n    timeout: {timeout}s\n",
            silent.port()
        )
    };
    let service = Service::start(&config(30));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(silent.accepted(), 1);

    // A new timeout makes a new pair; it must wait for the old pair's probe to end.
    reload_with(&service, &config(29));
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(silent.accepted(), 1, "stderr:\n{}", service.stderr());
}
