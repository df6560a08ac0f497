//! Hostile config input: random mutations of a valid config never panic the parser, a YAML
//! alias bomb is rejected quickly, and the binary refuses an oversized file.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use routewatch::config;
use support::service::run;

const VALID: &str = r#"
defaults:
  schedule: every 60s
  timeout: 10s
routes:
  - name: direct
  - name: hk-socks
    proxy: socks5h://user:${HK_PROXY_PASSWORD:-pw}@127.0.0.1:1080
monitors:
  - name: groq
    provider: groq
    api_key: ${GROQ_API_KEY:-}
    routes: [direct, hk-socks]
    schedule: "*/30 * * * * *"
  - name: gateway
    url: https://gateway.example.com/v1/models
    headers: { Authorization: "Bearer ${GATEWAY_KEY:-x}" }
    expect: { status: [200], json: true }
rules:
  - name: corp-proxy-block
    when: { status: 403, body_contains: "Blocked by corporate policy" }
    class: waf_html
"#;

fn parse(text: &str) -> Result<config::Config, config::ConfigErrors> {
    config::parse(text, Path::new("monitors.yaml"), &|_| None)
}

/// One mutation of the valid config's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, byte: u8 },
    Truncate { at: usize },
    InsertKey { at: usize, key: String },
    Nest { at: usize, depth: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Flip { at, byte }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), "[a-z_]{1,12}").prop_map(|(at, key)| Mutation::InsertKey { at, key }),
        (any::<usize>(), 1usize..300).prop_map(|(at, depth)| Mutation::Nest { at, depth }),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let len = bytes.len();
    match mutation {
        Mutation::Flip { at, byte } => bytes[at % len] = *byte,
        Mutation::Truncate { at } => bytes.truncate(at % len),
        Mutation::InsertKey { at, key } => {
            let at = at % (len + 1);
            let text = format!("\n{key}: {{{key}: [1, {key}]}}\n");
            bytes.splice(at..at, text.into_bytes());
        }
        Mutation::Nest { at, depth } => {
            let at = at % (len + 1);
            let text = format!("{}{}", "[".repeat(*depth), "]".repeat(*depth));
            bytes.splice(at..at, text.into_bytes());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_mutated_config_never_panics(mutations in prop::collection::vec(mutation(), 1..6)) {
        let mut bytes = VALID.as_bytes().to_vec();
        for mutation in &mutations {
            if !bytes.is_empty() {
                apply(&mut bytes, mutation);
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        // Either outcome is fine; a panic fails the test.
        let _ = parse(&text);
    }
}

#[test]
fn valid_config_parses() {
    let config = parse(VALID).unwrap();
    assert_eq!(config.monitors.len(), 2);
}

/// A billion-laughs config built from fields the schema accepts: one monitor whose route
/// list contains `width` aliases, then `width` aliases of that monitor, so full expansion reads
/// `width * width` route names from a file of about `2 * width` nodes.
fn alias_bomb(width: usize) -> String {
    let routes = vec!["*r"; width].join(", ");
    let mut text = format!(
        "routes:\n  - name: &r direct\nmonitors:\n  - &m\n    name: m\n    url: http://127.0.0.1:9/\n    routes: [{routes}]\n"
    );
    for _ in 0..width {
        text.push_str("  - *m\n");
    }
    text
}

#[test]
fn alias_bomb_is_rejected_quickly() {
    let text = alias_bomb(1000);
    assert!(text.len() < 64 * 1024, "{} bytes", text.len());

    let start = Instant::now();
    let errors = parse(&text).expect_err("the alias bomb is rejected");
    let elapsed = start.elapsed();

    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    assert_eq!(errors.to_string(), ALIAS_BOMB_MESSAGE);
}

/// The message for the alias bomb, pinned so a change in the YAML library's limits shows.
const ALIAS_BOMB_MESSAGE: &str = "monitors.yaml:1:1: invalid YAML: aliases expand to too many nodes (over 100 per node in the file); write the values out or use fewer aliases";

#[test]
fn deep_nesting_is_rejected() {
    let text = format!("monitors: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
    let errors = parse(&text).expect_err("deep nesting is rejected");
    assert_eq!(errors.to_string(), DEEP_NESTING_MESSAGE);
}

/// The message for 10,000 nested sequences.
const DEEP_NESTING_MESSAGE: &str = "monitors.yaml:1:266: invalid YAML: recursion limit exceeded";

#[test]
fn check_rejects_oversized_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("monitors.yaml");
    let mut text = String::from(VALID);
    while text.len() <= config::MAX_FILE_BYTES as usize {
        text.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    std::fs::write(&path, &text).unwrap();
    let path_text = path.display().to_string();

    let output = run(
        &["check", "--config", &path_text],
        &[],
        Duration::from_secs(10),
    );

    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!(
            "{path_text}: the file is {} bytes, over the limit of 1048576 bytes (1 MiB); check that the path names a monitors file\n",
            text.len()
        )
    );
}
