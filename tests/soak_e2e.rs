//! Soak: 1,000 pairs, a twentieth of them against hostile upstreams, for
//! `ROUTEWATCH_SOAK_SECONDS` seconds (default 60; `bench/soak` runs 30 minutes). Memory and
//! open file descriptors must stay flat, every tick must be accounted for, and no probe may
//! panic.

mod support;

use std::time::{Duration, Instant};

use support::hostile::{HostileServer, Mode};
use support::metrics::{open_fds, rss_bytes, sum};
use support::service::Service;
use support::upstream::{MODELS, Reply, Routes, Upstream};

const ROUTES: usize = 10;
const HEALTHY_MONITORS: usize = 95;

/// How often memory and descriptors are sampled.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// Time before the baseline sample: every pair has run once and buffers have grown.
const WARM_UP: Duration = Duration::from_secs(20);

/// Allowed growth of resident memory over the baseline.
const MAX_RSS_GROWTH_BYTES: u64 = 24 * 1024 * 1024;

/// Allowed growth of open descriptors over the baseline: the probes in flight (at most the
/// default concurrency of 64) each hold one socket.
const MAX_FD_GROWTH: usize = 64;

fn soak_duration() -> Duration {
    let seconds = std::env::var("ROUTEWATCH_SOAK_SECONDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(seconds)
}

fn config(upstream: &Upstream, hostile: &[(&str, HostileServer)]) -> String {
    let mut text = String::from("defaults:\n  schedule: every 10s\n  timeout: 3s\nroutes:\n");
    for route in 0..ROUTES {
        text.push_str(&format!("  - name: r{route}\n"));
    }
    text.push_str("monitors:\n");
    for monitor in 0..HEALTHY_MONITORS {
        text.push_str(&format!(
            "  - name: m{monitor}\n    url: {}\n",
            upstream.url("/v1/models")
        ));
    }
    for (name, server) in hostile {
        text.push_str(&format!(
            "  - name: {name}\n    url: {}\n",
            server.url("http", "/v1/models")
        ));
    }
    text
}

#[test]
fn soak_stays_flat() {
    let upstream =
        Upstream::start_plain(Routes::new().route("/v1/models", Reply::json(200, MODELS)));
    let hostile = [
        ("drip", HostileServer::start(Mode::Drip)),
        ("silent", HostileServer::start(Mode::Silent)),
        ("reset", HostileServer::start(Mode::ResetMidBody)),
        ("garbage", HostileServer::start(Mode::Garbage)),
        ("endless", HostileServer::start(Mode::Endless)),
    ];
    let pairs = ((HEALTHY_MONITORS + hostile.len()) * ROUTES) as f64;
    assert_eq!(pairs, 1000.0);
    let service = Service::start(&config(&upstream, &hostile));
    let pid = service.pid();
    let duration = soak_duration().max(WARM_UP + SAMPLE_INTERVAL);
    let started = Instant::now();

    std::thread::sleep(WARM_UP);
    let (base_rss, base_fds) = (rss_bytes(pid), open_fds(pid));
    println!("soak: baseline rss {base_rss} bytes, {base_fds} fds");
    let (mut max_rss, mut max_fds) = (base_rss, base_fds);
    while started.elapsed() < duration {
        std::thread::sleep(SAMPLE_INTERVAL);
        let (rss, fds) = (rss_bytes(pid), open_fds(pid));
        max_rss = max_rss.max(rss);
        max_fds = max_fds.max(fds);
        assert!(
            rss <= base_rss + MAX_RSS_GROWTH_BYTES,
            "rss grew from {base_rss} to {rss} bytes after {:?}",
            started.elapsed()
        );
        assert!(
            fds <= base_fds + MAX_FD_GROWTH,
            "open fds grew from {base_fds} to {fds} after {:?}",
            started.elapsed()
        );
    }

    let (_, metrics) = service.get("/metrics");
    let ticks = sum(&metrics, "routewatch_ticks_total", &[]);
    let probes = sum(&metrics, "routewatch_probes_total", &[]);
    let skipped = sum(&metrics, "routewatch_ticks_skipped_total", &[]);
    let panics = sum(&metrics, "routewatch_probe_panics_total", &[]);
    println!(
        "soak: {:?}, max rss {max_rss} bytes, max {max_fds} fds, {ticks} ticks, {probes} probes, {skipped} skipped",
        started.elapsed()
    );

    assert_eq!(panics, 0.0);
    // Every tick ended as a finished probe or a skipped tick, apart from at most one probe
    // per pair still in flight.
    let in_flight = ticks - probes - skipped;
    assert!(
        (0.0..=pairs).contains(&in_flight),
        "{ticks} ticks, {probes} probes, {skipped} skipped"
    );
    let periods = (started.elapsed().as_secs_f64() / 10.0).floor();
    assert!(
        ticks >= pairs * periods * 0.95,
        "{ticks} ticks for {pairs} pairs over {periods} periods"
    );
    for (name, class) in [
        ("drip", "timeout"),
        ("silent", "timeout"),
        ("reset", "connect"),
        ("garbage", "unexpected"),
        ("endless", "ok"),
    ] {
        let label = format!("monitor=\"{name}\"");
        let class_label = format!("class=\"{class}\"");
        let all = sum(&metrics, "routewatch_probes_total", &[&label]);
        let expected = sum(&metrics, "routewatch_probes_total", &[&label, &class_label]);
        assert!(all > 0.0, "{name} never finished a probe");
        assert_eq!(all, expected, "{name}: not every probe was {class}");
    }
}
