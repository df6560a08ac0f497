//! Every invalid config fixture fails with the exact message in its `.expected` file, and the
//! valid fixture parses into the exact expected types.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use routewatch::classify::{Class, Expectation, Matcher};
use routewatch::config::{self, ConfigErrors, Schedule};
use routewatch::shard::Shard;

const FIXTURES: &str = "tests/fixtures/config";

/// Looks up the fixtures' environment: a few keys are set, everything else is unset.
fn fake_env(name: &str) -> Option<String> {
    let value = match name {
        "HK_PROXY_PASSWORD" => "p@ss:word",
        "ANTHROPIC_API_KEY" => "sk-ant-test",
        "GATEWAY_KEY" => "gw-secret",
        "GEMINI_API_KEY" => "gem-key",
        "SECRET_TIMEOUT" => "SKSECRET_BBB",
        "SLASH_PASSWORD" => "pa/ss@wo:rd",
        "PROXY_URL_WITH_SLASH" => "http://user:8/ss@127.0.0.1:3128",
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

fn rule_summary(matcher: &Matcher) -> String {
    match matcher {
        Matcher::BodyRegex(regex) => format!("BodyRegex({})", regex.as_str()),
        other => format!("{other:?}"),
    }
}

#[test]
fn valid_fixture_global_and_routes() {
    let config = parse_fixture("valid.yaml").unwrap();

    assert_eq!(config.source, Path::new(FIXTURES).join("valid.yaml"));
    assert_eq!(config.global.concurrency, 8);
    assert_eq!(config.global.history_size, 20);

    let names: Vec<&str> = config
        .routes
        .iter()
        .map(|route| route.name.as_str())
        .collect();
    assert_eq!(names, ["direct", "hk-socks", "office-2"]);
    assert_eq!(config.routes[0].proxy, None);
    assert_eq!(config.routes[0].source_address, None);
    assert_eq!(config.routes[0].ca_file, None);
    assert_eq!(
        config.routes[1].proxy.as_ref().unwrap().as_str(),
        "socks5h://user:p%40ss%3Aword@127.0.0.1:1080"
    );
    assert_eq!(
        config.routes[2].source_address,
        Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5)))
    );
    assert_eq!(
        config.routes[2].ca_file,
        Some(Path::new(FIXTURES).join("ca.pem"))
    );
}

#[test]
fn valid_fixture_preset_monitors() {
    let config = parse_fixture("valid.yaml").unwrap();
    let groq = &config.monitors[0];
    assert_eq!(groq.name, "groq");
    assert_eq!(groq.url.as_str(), "https://api.groq.com/openai/v1/models");
    assert_eq!(groq.method, "GET");
    // GROQ_API_KEY is unset and defaults to empty, so no Authorization header is sent.
    assert_eq!(groq.headers, Vec::<(String, String)>::new());
    assert_eq!(groq.body, None);
    assert_eq!(
        groq.expect,
        Expectation {
            statuses: vec![200],
            json: true
        }
    );
    assert_eq!(groq.schedule, Schedule::Cron("*/30 * * * * *".to_owned()));
    assert_eq!(groq.timeout, Duration::from_secs(5));
    assert_eq!(groq.max_body_bytes, 32 * 1024);
    assert_eq!(groq.routes, ["direct", "hk-socks"]);

    let gemini = &config.monitors[1];
    assert_eq!(
        gemini.url.as_str(),
        "https://generativelanguage.googleapis.com/v1beta/models?key=gem-key"
    );
    assert_eq!(gemini.headers, Vec::<(String, String)>::new());
    assert_eq!(gemini.schedule, Schedule::Cron("0 */5 * * * *".to_owned()));
    assert_eq!(gemini.routes, ["direct", "hk-socks", "office-2"]);

    let anthropic = &config.monitors[2];
    assert_eq!(
        anthropic.url.as_str(),
        "https://api.anthropic.com/v1/models"
    );
    assert_eq!(
        anthropic.headers,
        [
            ("anthropic-version".to_owned(), "2023-06-01".to_owned()),
            ("x-api-key".to_owned(), "sk-ant-test".to_owned()),
        ]
    );
    assert_eq!(
        anthropic.expect,
        Expectation {
            statuses: vec![200, 404],
            json: true
        }
    );
    assert_eq!(anthropic.schedule, Schedule::Every(Duration::from_secs(30)));
}

#[test]
fn valid_fixture_custom_monitor() {
    let config = parse_fixture("valid.yaml").unwrap();
    let gateway = &config.monitors[3];
    assert_eq!(gateway.name, "gateway");
    assert_eq!(gateway.url.as_str(), "https://gateway.example.com/v1/chat");
    assert_eq!(gateway.method, "POST");
    assert_eq!(
        gateway.headers,
        [
            ("Authorization".to_owned(), "Bearer gw-secret".to_owned()),
            ("Content-Type".to_owned(), "application/json".to_owned()),
        ]
    );
    assert_eq!(gateway.body.as_deref(), Some("{\"price\": \"$5\"}"));
    assert_eq!(
        gateway.expect,
        Expectation {
            statuses: vec![200],
            json: false
        }
    );
    assert_eq!(gateway.timeout, Duration::from_secs(90));
    assert_eq!(gateway.max_body_bytes, 1024 * 1024);
    assert_eq!(config.monitors.len(), 4);
}

#[test]
fn valid_fixture_rules() {
    let config = parse_fixture("valid.yaml").unwrap();
    assert_eq!(config.rules.len(), 2);

    let block = &config.rules[0];
    assert_eq!(block.id, Cow::<str>::Owned("corp-proxy-block".to_owned()));
    assert_eq!(block.class, Class::WafHtml);
    let summary: Vec<String> = block.when.iter().map(rule_summary).collect();
    assert_eq!(
        summary,
        [
            "Status([403])",
            "BodyContains(\"Blocked by corporate policy\")"
        ]
    );

    let quota = &config.rules[1];
    assert_eq!(quota.id, "vendor.quota");
    assert_eq!(quota.class, Class::Auth);
    let summary: Vec<String> = quota.when.iter().map(rule_summary).collect();
    assert_eq!(
        summary,
        [
            "Status([402, 429])",
            "Header { name: \"x-vendor\", contains: Some(\"quota\") }",
            "ContentType(\"json\")",
            "BodyRegex(quota (exceeded|used up))",
            "JsonField { path: \"error.code\", equals: \"quota_exceeded\" }",
            "HtmlTitle(\"Quota\")",
        ]
    );
}

#[test]
fn valid_fixture_secrets() {
    let config = parse_fixture("valid.yaml").unwrap();
    assert_eq!(
        config.secrets(),
        [
            // base64 of "user:p%40ss%3Aword" and of "user:p@ss:word", the Basic credentials
            "dXNlcjpwJTQwc3MlM0F3b3Jk",
            "dXNlcjpwQHNzOndvcmQ=",
            "Bearer gw-secret",
            "p%40ss%3Aword",
            "sk-ant-test",
            "gw-secret",
            "p@ss:word",
            "gem-key",
        ]
    );
}

#[test]
fn minimal_config_gets_defaults() {
    let text = "monitors:\n  - name: gw\n    url: http://127.0.0.1:9/models\n";
    let config = config::parse(text, Path::new("m.yaml"), &fake_env).unwrap();

    assert_eq!(config.global.concurrency, config::DEFAULT_CONCURRENCY);
    assert_eq!(config.global.history_size, config::DEFAULT_HISTORY_SIZE);
    assert_eq!(config.routes.len(), 1);
    assert_eq!(config.routes[0].name, "direct");
    assert_eq!(config.routes[0].proxy, None);

    let monitor = &config.monitors[0];
    assert_eq!(monitor.method, "GET");
    assert_eq!(
        monitor.expect,
        Expectation {
            statuses: vec![],
            json: true
        }
    );
    assert_eq!(
        monitor.schedule,
        Schedule::Every(config::DEFAULT_SCHEDULE_PERIOD)
    );
    assert_eq!(monitor.timeout, config::DEFAULT_TIMEOUT);
    assert_eq!(monitor.max_body_bytes, config::DEFAULT_MAX_BODY_BYTES);
    assert_eq!(monitor.routes, ["direct"]);
    assert_eq!(config.rules.len(), 0);
    assert_eq!(config.secrets(), Vec::<String>::new());
}

#[test]
fn explicit_header_overrides_preset_key() {
    let text = "\
monitors:
  - name: openai
    provider: openai
    api_key: sk-one
    headers: { authorization: Bearer sk-two, OpenAI-Organization: org-1 }
";
    let config = config::parse(text, Path::new("m.yaml"), &fake_env).unwrap();
    assert_eq!(
        config.monitors[0].headers,
        [
            ("authorization".to_owned(), "Bearer sk-two".to_owned()),
            ("OpenAI-Organization".to_owned(), "org-1".to_owned()),
        ]
    );
}

#[test]
fn empty_proxy_from_env_default_means_direct() {
    let text = "\
routes:
  - name: maybe-proxy
    proxy: ${UNSET_PROXY:-}
monitors:
  - name: gw
    url: http://127.0.0.1:9/
";
    let config = config::parse(text, Path::new("m.yaml"), &fake_env).unwrap();
    assert_eq!(config.routes[0].proxy, None);
}

#[test]
fn parse_rejects_text_over_one_mib() {
    let text = format!("monitors: []\n#{}\n", "x".repeat(1024 * 1024));
    let errors = config::parse(&text, Path::new("big.yaml"), &fake_env).unwrap_err();
    assert_eq!(
        errors.to_string(),
        "big.yaml: the file is 1048591 bytes, over the limit of 1048576 bytes (1 MiB); check that the path names a monitors file"
    );
}

#[test]
fn load_reads_file_and_reports_missing_file() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("monitors.yaml");
    std::fs::write(
        &path,
        "monitors:\n  - name: gw\n    url: http://127.0.0.1:9/\n",
    )
    .unwrap();
    let config = config::load(&path).unwrap();
    assert_eq!(config.monitors[0].name, "gw");

    let missing = folder.path().join("absent.yaml");
    let errors = config::load(&missing).unwrap_err();
    assert_eq!(
        errors.to_string(),
        format!(
            "{}: cannot read the config file: No such file or directory (os error 2)",
            missing.display()
        )
    );
}

#[test]
fn config_error_fields_are_exact() {
    let errors = parse_fixture("unknown-route.yaml").unwrap_err();
    assert_eq!(errors.errors.len(), 1);
    let error = &errors.errors[0];
    assert_eq!(error.file, Path::new(FIXTURES).join("unknown-route.yaml"));
    assert_eq!(error.line, 12);
    assert_eq!(error.column, 14);
    assert_eq!(error.path, "monitors[2].routes[0]");
    assert_eq!(
        error.message,
        "unknown route \"hk\" (routes are: direct, us)"
    );
}

#[test]
fn proxy_password_from_env_is_percent_encoded() {
    let text = "\
routes:
  - name: corp
    proxy: http://user:${SLASH_PASSWORD}@127.0.0.1:3128
monitors:
  - name: gw
    url: http://127.0.0.1:9/
";
    let config = config::parse(text, Path::new("m.yaml"), &fake_env).unwrap();
    let proxy = config.routes[0].proxy.as_ref().unwrap();
    assert_eq!(proxy.host_str(), Some("127.0.0.1"));
    assert_eq!(proxy.port(), Some(3128));
    assert_eq!(proxy.username(), "user");
    // The url crate encodes the `:` itself.
    assert_eq!(proxy.password(), Some("pa%2Fss%40wo%3Ard"));
}

fn load_with_source_address(address: &str) -> Result<config::Config, ConfigErrors> {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("monitors.yaml");
    let text = format!(
        "routes:\n  - name: office\n    source_address: {address}\nmonitors:\n  - name: gw\n    url: http://127.0.0.1:9/\n"
    );
    std::fs::write(&path, text).unwrap();
    config::load(&path).map_err(|errors| {
        // Strip the temporary folder so that the message can be compared exactly.
        let mut errors = errors;
        for error in &mut errors.errors {
            error.file = PathBuf::from("monitors.yaml");
        }
        errors
    })
}

#[test]
fn load_rejects_source_address_of_another_machine() {
    let errors = load_with_source_address("192.0.2.10").unwrap_err();
    assert_eq!(
        errors.to_string(),
        "monitors.yaml:3:21: routes[0].source_address: source_address 192.0.2.10 is not an address of this machine (bind failed: Cannot assign requested address); use an address from \"ip addr\""
    );
}

#[test]
fn load_accepts_loopback_source_address() {
    let config = load_with_source_address("127.0.0.5").unwrap();
    assert_eq!(
        config.routes[0].source_address,
        Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5)))
    );
}

#[test]
fn global_shard_parses_and_defaults() {
    let text = "global:\n  shard: \"2/3\"\nmonitors:\n  - name: groq\n    provider: groq\n";
    let config = config::parse(text, Path::new("shard.yaml"), &fake_env).unwrap();
    assert_eq!(config.global.shard, Shard::new(2, 3).unwrap());

    let unsharded = parse_fixture("valid.yaml").unwrap();
    assert_eq!(unsharded.global.shard, Shard::UNSHARDED);
}
