//! Checks the monitoring files shipped beside the binary. `promtool` checks the Prometheus
//! rules in `prometheus/` and runs their unit tests. The Grafana dashboard in
//! `grafana/dashboards/` is checked for its variables, units and data sources, and `promtool`
//! parses the PromQL of every panel.
//!
//! `promtool` comes from Debian's `prometheus` package. These tests fail, never skip, when it
//! is missing.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

const ALERTS: &str = "prometheus/alerts.yml";
const ALERTS_TEST: &str = "prometheus/alerts_test.yml";
const DASHBOARD: &str = "grafana/dashboards/routewatch.json";
const DATASOURCE_UID: &str = "${datasource}";
const TIMELINE_TITLE: &str = "Probe class over time per monitor / route";

/// Grafana variables that dashboard queries may use, with the value each one gets before
/// `promtool` checks the query.
const GRAFANA_SUBSTITUTIONS: [(&str, &str); 6] = [
    ("$__rate_interval", "1m"),
    ("$__interval", "1m"),
    ("$__range", "1h"),
    ("$vantage", ".*"),
    ("$monitor", ".*"),
    ("$route", ".*"),
];

/// Classes in the order of their codes in the class timeline panel (ok = 1 ... proxy = 12).
const CLASSES: [&str; 12] = [
    "ok",
    "auth",
    "geo_block",
    "waf_html",
    "rate_limited",
    "server_error",
    "unexpected",
    "timeout",
    "dns",
    "connect",
    "tls",
    "proxy",
];

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn run_promtool(args: &[&str]) -> Output {
    match Command::new("promtool").args(args).output() {
        Ok(output) => output,
        Err(error) if error.kind() == ErrorKind::NotFound => {
            panic!("promtool not found: run scripts/test to install Debian's prometheus package")
        }
        Err(error) => panic!("failed to run promtool {args:?}: {error}"),
    }
}

fn assert_promtool_succeeds(args: &[&str]) {
    let output = run_promtool(args);
    assert!(
        output.status.success(),
        "promtool {} failed ({})\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

fn read_yaml(relative: &str) -> serde_yaml::Value {
    let text = std::fs::read_to_string(repo_path(relative)).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

fn read_dashboard() -> Value {
    let text = std::fs::read_to_string(repo_path(DASHBOARD)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn alert_rules() -> Vec<serde_yaml::Value> {
    let rules = read_yaml(ALERTS);
    let groups = rules["groups"].as_sequence().unwrap();
    groups
        .iter()
        .flat_map(|group| group["rules"].as_sequence().unwrap().clone())
        .filter(|rule| rule.get("alert").is_some())
        .collect()
}

fn panels(dashboard: &Value) -> &Vec<Value> {
    dashboard["panels"].as_array().unwrap()
}

fn variable<'a>(dashboard: &'a Value, name: &str) -> &'a Value {
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let found = variables.iter().find(|variable| variable["name"] == name);
    found.unwrap_or_else(|| panic!("dashboard has no template variable {name:?}"))
}

/// Replaces the Grafana variables in `expr` with values Prometheus accepts.
fn substitute_grafana_variables(expr: &str) -> String {
    let mut substituted = expr.to_owned();
    for (variable, value) in GRAFANA_SUBSTITUTIONS {
        substituted = substituted.replace(variable, value);
    }
    substituted
}

/// Writes `contents` as YAML into `dir/name` and returns the path as a string for promtool.
fn write_yaml(dir: &Path, name: &str, contents: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, serde_yaml::to_string(contents).unwrap()).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn alert_rules_pass_promtool_check() {
    assert_promtool_succeeds(&["check", "rules", repo_path(ALERTS).to_str().unwrap()]);
}

#[test]
fn alert_rules_pass_promtool_unit_tests() {
    assert_promtool_succeeds(&["test", "rules", repo_path(ALERTS_TEST).to_str().unwrap()]);
}

#[test]
fn alert_rules_have_expected_names() {
    let names: Vec<String> = alert_rules()
        .iter()
        .map(|rule| rule["alert"].as_str().unwrap().to_owned())
        .collect();

    assert_eq!(
        names,
        [
            "RoutewatchGeoBlockRateHigh",
            "RoutewatchAuthFailing",
            "RoutewatchWafPagesAppeared",
            "RoutewatchRouteDown",
            "RoutewatchMonitorFailingEverywhere",
            "RoutewatchProbesStale",
            "RoutewatchConfigReloadFailed",
            "RoutewatchScrapeFailing",
        ]
    );
}

#[test]
fn alert_rules_have_severity_and_annotations() {
    for rule in alert_rules() {
        let name = rule["alert"].as_str().unwrap();
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            severity == "critical" || severity == "warning",
            "{name}: severity is {severity:?}, expected \"critical\" or \"warning\""
        );
        for key in ["summary", "description"] {
            let text = rule["annotations"][key].as_str().unwrap_or_default();
            assert!(!text.trim().is_empty(), "{name}: annotation {key} is empty");
        }
        let description = rule["annotations"]["description"].as_str().unwrap();
        assert!(
            description.contains("First "),
            "{name}: the description does not say what to check first"
        );
    }
}

/// Every alert needs a unit test where it fires and one where it stays silent, so a rule
/// that never fires and a rule that always fires both fail `promtool test rules`.
#[test]
fn alert_rules_each_have_firing_and_silent_tests() {
    let tests = read_yaml(ALERTS_TEST);
    let mut firing = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for test in tests["tests"].as_sequence().unwrap() {
        let Some(cases) = test["alert_rule_test"].as_sequence() else {
            continue;
        };
        for case in cases {
            let name = case["alertname"].as_str().unwrap().to_owned();
            if case["exp_alerts"].as_sequence().unwrap().is_empty() {
                silent.insert(name);
            } else {
                firing.insert(name);
            }
        }
    }

    for rule in alert_rules() {
        let name = rule["alert"].as_str().unwrap();
        assert!(firing.contains(name), "{name}: no test where it fires");
        assert!(
            silent.contains(name),
            "{name}: no test where it stays silent"
        );
    }
}

#[test]
fn dashboard_has_uid_and_no_import_inputs() {
    let dashboard = read_dashboard();

    assert_eq!(dashboard["uid"], "routewatch");
    assert_eq!(dashboard["title"], "routewatch");
    assert_eq!(dashboard["schemaVersion"], 39);
    assert!(
        dashboard.get("__inputs").is_none(),
        "dashboard has __inputs"
    );
}

#[test]
fn dashboard_datasource_variable_defaults_to_provisioned_uid() {
    let dashboard = read_dashboard();
    let datasource = variable(&dashboard, "datasource");

    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    assert_eq!(datasource["current"]["value"], "routewatch-prometheus");

    let provisioning =
        read_yaml("grafana/provisioning/datasources/routewatch.yaml")["datasources"][0].clone();
    assert_eq!(provisioning["uid"].as_str(), Some("routewatch-prometheus"));
    assert_eq!(provisioning["url"].as_str(), Some("http://localhost:9090"));
}

#[test]
fn dashboard_filter_variables_allow_all() {
    let dashboard = read_dashboard();
    let expected = [
        ("vantage", "label_values(routewatch_build_info, vantage)"),
        (
            "monitor",
            "label_values(routewatch_probe_success{vantage=~\"$vantage\"}, monitor)",
        ),
        (
            "route",
            "label_values(routewatch_probe_success{vantage=~\"$vantage\", monitor=~\"$monitor\"}, route)",
        ),
    ];

    for (name, query) in expected {
        let variable = variable(&dashboard, name);
        assert_eq!(variable["type"], "query", "{name}");
        assert_eq!(variable["query"]["query"], query, "{name}");
        assert_eq!(variable["definition"], query, "{name}");
        assert_eq!(variable["datasource"]["uid"], DATASOURCE_UID, "{name}");
        assert_eq!(variable["multi"], true, "{name}");
        assert_eq!(variable["includeAll"], true, "{name}");
        assert_eq!(variable["allValue"], ".*", "{name}");
    }
}

#[test]
fn dashboard_panels_have_title_description_and_unit() {
    let dashboard = read_dashboard();

    for panel in panels(&dashboard) {
        let id = &panel["id"];
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(!title.trim().is_empty(), "panel {id} has no title");
        let description = panel["description"].as_str().unwrap_or_default();
        assert!(
            !description.trim().is_empty(),
            "panel {title:?} has no description"
        );
        let unit = panel["fieldConfig"]["defaults"]["unit"]
            .as_str()
            .unwrap_or_default();
        assert!(!unit.is_empty(), "panel {title:?} has no unit");
    }
}

#[test]
fn dashboard_panels_and_targets_use_datasource_variable() {
    let dashboard = read_dashboard();

    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap();
        assert_eq!(panel["datasource"]["type"], "prometheus", "{title}");
        assert_eq!(panel["datasource"]["uid"], DATASOURCE_UID, "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for target in targets {
            let reference = &target["refId"];
            assert_eq!(
                target["datasource"]["type"], "prometheus",
                "{title} {reference}"
            );
            assert_eq!(
                target["datasource"]["uid"], DATASOURCE_UID,
                "{title} {reference}"
            );
        }
    }
}

/// Writes every panel query, with the Grafana variables substituted, as a recording rule and
/// lets `promtool check rules` parse it.
#[test]
fn dashboard_queries_are_valid_promql() {
    let dashboard = read_dashboard();
    let mut rules = Vec::new();
    for panel in panels(&dashboard) {
        for target in panel["targets"].as_array().unwrap() {
            let expr = substitute_grafana_variables(target["expr"].as_str().unwrap());
            assert!(
                !expr.contains('$'),
                "panel {} uses a variable that has no substitution: {expr}",
                panel["title"]
            );
            let record = format!(
                "dashboard:panel_{}_{}",
                panel["id"],
                target["refId"].as_str().unwrap()
            );
            rules.push(json!({ "record": record, "expr": expr }));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let rules_file = write_yaml(
        dir.path(),
        "dashboard_queries.yml",
        &json!({ "groups": [{ "name": "dashboard", "rules": rules }] }),
    );

    assert_eq!(rules.len(), 17);
    assert_promtool_succeeds(&["check", "rules", &rules_file]);
}

/// Evaluates the class timeline query with promtool on one geo-blocked pair (code 3) and one
/// pair that has not finished a probe (code 0). The series have no `vantage` label, so the
/// test also checks that the All value of the vantage variable matches such series.
#[test]
fn class_timeline_query_returns_codes() {
    let dashboard = read_dashboard();
    let panel = panels(&dashboard)
        .iter()
        .find(|panel| panel["title"] == TIMELINE_TITLE)
        .unwrap();
    let expr = substitute_grafana_variables(panel["targets"][0]["expr"].as_str().unwrap());

    let mut series = Vec::new();
    for class in CLASSES {
        let geo_block_value = if class == "geo_block" { "1x5" } else { "0x5" };
        series.push(json!({
            "series": format!(
                "routewatch_probe_class{{instance=\"127.0.0.1:9898\",monitor=\"openai\",route=\"hk-socks\",class=\"{class}\"}}"
            ),
            "values": geo_block_value,
        }));
        series.push(json!({
            "series": format!(
                "routewatch_probe_class{{instance=\"127.0.0.1:9898\",monitor=\"groq\",route=\"direct\",class=\"{class}\"}}"
            ),
            "values": "0x5",
        }));
    }
    let dir = tempfile::tempdir().unwrap();
    let rules_file = write_yaml(dir.path(), "empty.yml", &json!({ "groups": [] }));
    let test_file = write_yaml(
        dir.path(),
        "timeline_test.yml",
        &json!({
            "rule_files": [rules_file],
            "tests": [{
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [{
                    "expr": expr,
                    "eval_time": "2m",
                    "exp_samples": [
                        {
                            "labels": "{instance=\"127.0.0.1:9898\",monitor=\"openai\",route=\"hk-socks\"}",
                            "value": 3,
                        },
                        {
                            "labels": "{instance=\"127.0.0.1:9898\",monitor=\"groq\",route=\"direct\"}",
                            "value": 0,
                        },
                    ],
                }],
            }],
        }),
    );

    assert_promtool_succeeds(&["test", "rules", &test_file]);
}

#[test]
fn class_timeline_mappings_match_query() {
    let dashboard = read_dashboard();
    let panel = panels(&dashboard)
        .iter()
        .find(|panel| panel["title"] == TIMELINE_TITLE)
        .unwrap();
    let expr = panel["targets"][0]["expr"].as_str().unwrap();
    let mapping = &panel["fieldConfig"]["defaults"]["mappings"][0]["options"];

    assert_eq!(mapping["0"]["text"], "no probe yet");
    for (index, class) in CLASSES.iter().enumerate() {
        let code = index + 1;
        assert_eq!(mapping[code.to_string()]["text"], *class, "code {code}");
        let term = format!("class=\"{class}\"}} * {code}\n");
        assert!(expr.contains(&term), "query lacks {term:?}");
    }
}

#[test]
fn example_configs_pass_promtool_check() {
    for file in [
        "prometheus/prometheus.yml",
        "prometheus/vantages.yml",
        "prometheus/federation.yml",
        "prometheus/remote_write.yml",
    ] {
        let path = repo_path(file).display().to_string();
        assert_promtool_succeeds(&["check", "config", &path]);
    }
}
