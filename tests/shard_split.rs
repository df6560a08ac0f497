//! Shards split the pairs of one config: N instances cover every pair exactly once, the
//! `--shard` flag replaces `global.shard`, and invalid values fail with the exact message.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use routewatch::config::{self, Config};
use routewatch::schedule;
use routewatch::shard::Shard;
use support::net::closed_port;
use support::service;

const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes a config with `monitors` monitors, each on every one of `routes` routes, all
/// pointing at a closed local port so that a probe fails at once.
fn config_text(monitors: usize, routes: usize, shard: Option<&str>) -> String {
    let mut text = String::new();
    if let Some(shard) = shard {
        text.push_str(&format!("global:\n  shard: \"{shard}\"\n"));
    }
    text.push_str("defaults:\n  timeout: 2s\nroutes:\n");
    for route in 0..routes {
        text.push_str(&format!("  - name: route-{route}\n"));
    }
    text.push_str("monitors:\n");
    let port = closed_port();
    for monitor in 0..monitors {
        text.push_str(&format!(
            "  - name: monitor-{monitor}\n    url: http://127.0.0.1:{port}/v1/models\n"
        ));
    }
    text
}

fn parse(text: &str) -> Config {
    config::parse(text, Path::new("shards.yaml"), &|_| None).unwrap()
}

fn pair_keys(config: &Config) -> Vec<(String, String)> {
    schedule::build_pairs(config)
        .unwrap()
        .iter()
        .map(|pair| pair.key.clone())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn shards_partition_the_pairs(monitors in 1usize..12, routes in 1usize..6, count in 1u64..6) {
        let mut config = parse(&config_text(monitors, routes, None));
        let all: BTreeSet<(String, String)> = pair_keys(&config).into_iter().collect();
        prop_assert_eq!(all.len(), monitors * routes);

        let mut seen = Vec::new();
        for index in 0..count {
            config.global.shard = Shard::new(index, count).unwrap();
            seen.extend(pair_keys(&config));
        }
        let distinct: BTreeSet<(String, String)> = seen.iter().cloned().collect();
        prop_assert_eq!(seen.len(), all.len(), "a pair is in more than one shard");
        prop_assert_eq!(distinct, all);
    }
}

/// Returns the pairs that `routewatch probe` printed, as "monitor via route".
fn probed_pairs(stdout: &str) -> BTreeSet<String> {
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix("== "))
        .filter(|line| *line != "diagnosis")
        .map(|line| line.split(" (").next().unwrap().to_owned())
        .collect()
}

fn expected_pairs(config: &Config, shard: Shard) -> BTreeSet<String> {
    let mut pairs = BTreeSet::new();
    for monitor in &config.monitors {
        for route in &monitor.routes {
            if shard.contains(&monitor.name, route) {
                pairs.insert(format!("{} via {route}", monitor.name));
            }
        }
    }
    pairs
}

#[test]
fn probe_flag_replaces_config_shard() {
    let text = config_text(4, 3, Some("0/2"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("monitors.yaml");
    std::fs::write(&path, &text).unwrap();
    let path = path.to_str().unwrap();
    let config = parse(&text);

    let from_config = service::run(&["--config", path, "probe"], &[], RUN_TIMEOUT);
    let from_config = probed_pairs(&String::from_utf8_lossy(&from_config.stdout));
    assert_eq!(
        from_config,
        expected_pairs(&config, Shard::new(0, 2).unwrap())
    );

    let from_flag = service::run(
        &["--config", path, "probe", "--shard", "1/2"],
        &[],
        RUN_TIMEOUT,
    );
    let from_flag = probed_pairs(&String::from_utf8_lossy(&from_flag.stdout));
    assert_eq!(
        from_flag,
        expected_pairs(&config, Shard::new(1, 2).unwrap())
    );

    assert!(from_config.is_disjoint(&from_flag));
    assert_eq!(from_config.len() + from_flag.len(), 12);
}

#[test]
fn shard_flag_rejects_index_above_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("monitors.yaml");
    std::fs::write(&path, config_text(1, 1, None)).unwrap();
    let path = path.to_str().unwrap();

    for args in [
        vec!["--config", path, "--shard", "3/2", "probe"],
        vec!["--config", path, "--shard", "3/2"],
        vec!["--config", path, "check", "--shard", "3/2"],
    ] {
        let output = service::run(&args, &[], RUN_TIMEOUT);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stderr),
            "routewatch: --shard 3/2: shard index must be below the shard count (use 0/2 or 1/2)\n",
            "{args:?}"
        );
    }
}

#[test]
fn shard_flag_rejects_zero_count() {
    let output = service::run(&["--shard", "0/0", "check"], &[], RUN_TIMEOUT);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "routewatch: --shard 0/0: shard count must be at least 1 (use 0/1 to run unsharded)\n"
    );
}
