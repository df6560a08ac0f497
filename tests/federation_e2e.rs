//! End-to-end: two shards of one routewatch config (0/2 and 1/2) probe a local HTTPS upstream
//! directly and through real tinyproxy and microsocks processes. A regional Prometheus scrapes
//! both shards as one vantage point, and a global Prometheus federates from it. In the global
//! view every pair appears exactly once, and the geo-block rule still finds the geo route.
//!
//! The two shards share one `vantage` label on purpose. The sharding contract is that the
//! shards of one vantage point cover every pair exactly once, and a pair that two shards both
//! probed, or neither, would show up as a count other than 1.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::prom_server::PromServer;
use support::proxy::{MICROSOCKS_EGRESS, Microsocks, TINYPROXY_EGRESS, Tinyproxy};
use support::service::Service;
use support::tls::TestCa;
use support::upstream::{
    CLOUDFLARE_BLOCK_HTML, MODELS, OPENAI_UNSUPPORTED_REGION, Reply, Routes, Upstream,
};

use routewatch::shard::Shard;

const SOCKS_USER: &str = "rwuser";
const SOCKS_PASSWORD: &str = "f3d-s0cks-Pa55";
const VANTAGE: &str = "lab";
const MONITORS: [&str; 4] = ["openai", "groq", "anthropic", "gateway"];
const ROUTES: [&str; 3] = ["direct", "via-http", "via-socks"];
/// The route whose proxy exits through the address that the upstream geo-blocks.
const GEO_ROUTE: &str = "via-http";

/// Time allowed for probes, scrapes, federation and rule evaluation to catch up.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

type PairSet = BTreeSet<(String, String)>;

fn routewatch_config(upstream: &Upstream, tinyproxy: &Tinyproxy, socks_port: u16) -> String {
    let ca_file = TestCa::shared().ca_file().display().to_string();
    let mut text = format!(
        "defaults:\n  schedule: every 1s\n  timeout: 3s\nroutes:\n\
         \x20 - name: direct\n    ca_file: {ca_file}\n\
         \x20 - name: via-http\n    proxy: {http_proxy}\n    ca_file: {ca_file}\n\
         \x20 - name: via-socks\n    proxy: socks5h://{SOCKS_USER}:{SOCKS_PASSWORD}@127.0.0.1:{socks_port}\n    ca_file: {ca_file}\n\
         monitors:\n",
        http_proxy = tinyproxy.url(),
    );
    for monitor in MONITORS {
        text.push_str(&format!(
            "  - name: {monitor}\n    url: {}\n",
            upstream.url("/v1/models")
        ));
    }
    text
}

fn shard_pairs(shard: Shard) -> PairSet {
    let mut pairs = PairSet::new();
    for monitor in MONITORS {
        for route in ROUTES {
            if shard.contains(monitor, route) {
                pairs.insert((monitor.to_owned(), route.to_owned()));
            }
        }
    }
    pairs
}

fn regional_config(shards: &[&Service]) -> String {
    let targets: Vec<String> = shards
        .iter()
        .map(|service| format!("\"{}\"", service.addr()))
        .collect();
    format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n\
         \x20 - job_name: routewatch\n    static_configs:\n\
         \x20     - targets: [{}]\n        labels:\n          vantage: {VANTAGE}\n",
        targets.join(", ")
    )
}

fn global_config(regional: &PromServer) -> String {
    let alerts = concat!(env!("CARGO_MANIFEST_DIR"), "/prometheus/alerts.yml");
    format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {alerts}\n\
         scrape_configs:\n\
         \x20 - job_name: federate\n    honor_labels: true\n    metrics_path: /federate\n\
         \x20   params:\n      \"match[]\":\n        - '{{__name__=~\"routewatch_.*\"}}'\n\
         \x20   static_configs:\n      - targets: [\"{}\"]\n",
        regional.addr()
    )
}

fn label(sample: &Value, name: &str) -> String {
    sample["metric"][name]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn value(sample: &Value) -> String {
    sample["value"][1].as_str().unwrap_or_default().to_owned()
}

/// Polls `check` until it returns `Ok`, or panics with its last error and the logs.
fn wait_for<T>(
    what: &str,
    servers: &[&PromServer],
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let error = match check() {
            Ok(value) => return value,
            Err(error) => error,
        };
        if Instant::now() >= deadline {
            let logs: Vec<String> = servers.iter().map(|server| server.log()).collect();
            panic!(
                "{what} not reached within {SETTLE_TIMEOUT:?}: {error}\n{}",
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn federated_shards_show_each_pair_once() {
    let upstream = Upstream::start_with_ca(
        TestCa::shared(),
        Routes::new()
            .route("/v1/models", Reply::json(200, MODELS))
            .for_source(
                TINYPROXY_EGRESS,
                Reply::json(403, OPENAI_UNSUPPORTED_REGION),
            )
            .for_source(MICROSOCKS_EGRESS, Reply::html(403, CLOUDFLARE_BLOCK_HTML)),
    );
    let tinyproxy = Tinyproxy::start();
    let microsocks = Microsocks::start(SOCKS_USER, SOCKS_PASSWORD);
    let config = routewatch_config(&upstream, &tinyproxy, microsocks.port());

    let first = Service::start_with(&config, &["--shard", "0/2"], &[]);
    let second = Service::start_with(&config, &["--shard", "1/2"], &[]);
    let first_pairs = shard_pairs(Shard::new(0, 2).unwrap());
    let second_pairs = shard_pairs(Shard::new(1, 2).unwrap());
    assert!(
        !first_pairs.is_empty() && !second_pairs.is_empty(),
        "a shard has no pairs"
    );
    for (service, shard, pairs) in [(&first, "0", &first_pairs), (&second, "1", &second_pairs)] {
        let (_, metrics) = service.get("/metrics");
        let line = format!("routewatch_shard_info{{shard=\"{shard}\",shards=\"2\"}} 1");
        assert!(
            metrics.lines().any(|candidate| candidate == line),
            "no {line:?} in:\n{metrics}"
        );
        let exposed: PairSet = metrics
            .lines()
            .filter(|line| line.starts_with("routewatch_probe_success{"))
            .map(|line| {
                let monitor = line
                    .split("monitor=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap();
                let route = line
                    .split("route=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap();
                (monitor.to_owned(), route.to_owned())
            })
            .collect();
        assert_eq!(&exposed, pairs, "shard {shard}/2 exposes other pairs");
    }

    let regional = PromServer::start(&regional_config(&[&first, &second]));
    let global = PromServer::start(&global_config(&regional));
    let servers = [&regional, &global];

    let all_pairs: PairSet = first_pairs.union(&second_pairs).cloned().collect();
    assert_eq!(all_pairs.len(), MONITORS.len() * ROUTES.len());
    let counts = wait_for("every pair in the global view", &servers, || {
        let counts = global.query("count by (monitor, route, vantage) (routewatch_probe_success)");
        if counts.len() == all_pairs.len() {
            Ok(counts)
        } else {
            Err(format!("{} of {} pairs", counts.len(), all_pairs.len()))
        }
    });
    let mut seen = PairSet::new();
    for sample in &counts {
        let pair = (label(sample, "monitor"), label(sample, "route"));
        assert_eq!(label(sample, "vantage"), VANTAGE, "{sample}");
        assert_eq!(value(sample), "1", "pair {pair:?} appears more than once");
        seen.insert(pair);
    }
    assert_eq!(seen, all_pairs);
    let total = global.query("count(routewatch_probe_success)");
    assert_eq!(value(&total[0]), all_pairs.len().to_string());

    let expected_geo: PairSet = MONITORS
        .iter()
        .map(|monitor| (monitor.to_string(), GEO_ROUTE.to_owned()))
        .collect();
    let geo = wait_for("the geo route in the recording rule", &servers, || {
        let samples = global.query("routewatch:geo_block_ratio:rate10m > 0.5");
        let pairs: PairSet = samples
            .iter()
            .map(|sample| (label(sample, "monitor"), label(sample, "route")))
            .collect();
        if pairs == expected_geo {
            Ok(samples)
        } else {
            Err(format!("geo pairs {pairs:?}"))
        }
    });
    for sample in &geo {
        assert_eq!(label(sample, "vantage"), VANTAGE, "{sample}");
        assert_eq!(label(sample, "job"), "routewatch", "{sample}");
    }

    let alerts = wait_for("the pending geo-block alerts", &servers, || {
        let samples = global.query("ALERTS{alertname=\"RoutewatchGeoBlockRateHigh\"}");
        if samples.len() == expected_geo.len() {
            Ok(samples)
        } else {
            Err(format!("{samples:?}"))
        }
    });
    let alerted: PairSet = alerts
        .iter()
        .map(|sample| (label(sample, "monitor"), label(sample, "route")))
        .collect();
    assert_eq!(alerted, expected_geo);
    for sample in &alerts {
        assert_eq!(label(sample, "alertstate"), "pending", "{sample}");
        assert_eq!(label(sample, "vantage"), VANTAGE, "{sample}");
    }
}
