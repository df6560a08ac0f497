//! Every invalid config fixture fails with the exact message in its `.expected` file, and the
//! valid fixture parses into the exact expected types.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use routewatch::classify::{Class, Expectation, Matcher};
use routewatch::config::{self, ConfigErrors, Schedule};

const FIXTURES: &str = "tests/fixtures/config";

/// The environment the fixtures see: a few keys set, everything else unset.
fn fake_env(name: &str) -> Option<String> {
    let value = match name {
        "HK_PROXY_PASSWORD" => "p@ss:word",
        "ANTHROPIC_API_KEY" => "sk-ant-test",
        "GATEWAY_KEY" => "gw-secret",
        "GEMINI_API_KEY" => "gem-key",
        _ => return None,
    };
    Some(value.to_owned())
}

fn parse_fixture(name: &str) -> Result<config::Config, ConfigErrors> {
    let path = PathBuf::from(FIXTURES).join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    config::parse(&text, &path, &fake_env)
}

/// Lists the fixtures that must fail: every `.yaml` except `valid.yaml`.
fn invalid_fixtures() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(FIXTURES)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".yaml") && name != "valid.yaml")
        .collect();
    names.sort();
    names
}

#[test]
fn fixtures_fail_with_expected_messages() {
    let fixtures = invalid_fixtures();
    assert!(
        fixtures.len() >= 40,
        "only {} fixtures found",
        fixtures.len()
    );

    let mut mismatches = Vec::new();
    for name in &fixtures {
        let expected_path = Path::new(FIXTURES).join(name.replace(".yaml", ".expected"));
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("{} has no .expected file", name));
        let actual = match parse_fixture(name) {
            Ok(_) => "<parsed without errors>".to_owned(),
            Err(errors) => errors.to_string(),
        };
        if std::env::var_os("ROUTEWATCH_PRINT_FIXTURES").is_some() {
            println!("== {name}\n{actual}");
        }
        if actual != expected.trim_end_matches('\n') {
            mismatches.push(format!(
                "{name}:\n  expected: {expected}\n  actual:   {actual}"
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
