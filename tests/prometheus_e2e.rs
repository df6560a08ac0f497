//! End-to-end with a real Prometheus. routewatch probes a local HTTPS upstream directly and
//! through real tinyproxy and microsocks processes, and Prometheus scrapes it every second
//! with the shipped rules in prometheus/alerts.yml. The tests evaluate every panel query and
//! template variable of the Grafana dashboard and every rule expression against that live
//! data, and wait for the geo-block alert. `promtool check metrics` lints the exposition.
//!
//! Prometheus and promtool come from Debian's `prometheus` package. These tests fail, never
//! skip, when either is missing.

mod support;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::prometheus::{Prometheus, scrape_config};
use support::proxy::{MICROSOCKS_EGRESS, Microsocks, TINYPROXY_EGRESS, Tinyproxy};
use support::service::Service;
use support::tls::TestCa;
use support::upstream::{
    CLOUDFLARE_BLOCK_HTML, MODELS, OPENAI_UNSUPPORTED_REGION, Reply, Routes, Upstream,
};

const SOCKS_USER: &str = "rwuser";
const SOCKS_PASSWORD: &str = "s0cks-Pa55-word-7781";

const ALERTS: &str = "prometheus/alerts.yml";
const DASHBOARD: &str = "grafana/dashboards/routewatch.json";

/// The scrape job name; RoutewatchScrapeFailing selects `up{job="routewatch"}`.
const JOB: &str = "routewatch";

/// Scrape and rule evaluation interval, and the probe period of every monitor.
const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);

/// The `for:` duration every alert gets in the test's copy of alerts.yml.
const SHORT_FOR: &str = "2s";

/// Time allowed for every pair to get its first verdict.
const FIRST_VERDICT_TIMEOUT: Duration = Duration::from_secs(20);

/// Time allowed until the recording rule has a value for every pair.
const RULE_DATA_TIMEOUT: Duration = Duration::from_secs(30);

/// Time allowed until the geo-block alert fires once the recording rule has data.
const ALERT_TIMEOUT: Duration = Duration::from_secs(30);

/// How often /status, the rule data and the alerts are polled.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Number of PromQL queries in the dashboard's panels.
const DASHBOARD_QUERY_COUNT: usize = 17;

/// Grafana variables in dashboard queries, with the value each gets before Prometheus
/// evaluates the query. The braced forms come first, so `${monitor}` is not left as `${.*}`.
const GRAFANA_SUBSTITUTIONS: [(&str, &str); 10] = [
    ("${datasource}", ""),
    ("${vantage}", ".*"),
    ("$vantage", ".*"),
    ("${monitor}", ".*"),
    ("${route}", ".*"),
    ("$monitor", ".*"),
    ("$route", ".*"),
    ("$__rate_interval", "1m"),
    ("$__interval", "15s"),
    ("$__range", "5m"),
];

/// What a rule expression returns in this test's scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expected {
    /// At least one sample.
    Samples,
    /// No sample: the condition does not hold here.
    NoSamples,
    /// Either, because the result depends on timing.
    Either,
}

/// Every rule in alerts.yml by name (`record` or `alert`), and what its expression returns
/// here. The table must list every rule, so a new rule fails the test until it is added.
const RULE_EXPECTATIONS: [(&str, Expected); 9] = [
    ("routewatch:geo_block_ratio:rate10m", Expected::Samples),
    ("RoutewatchGeoBlockRateHigh", Expected::Samples),
    ("RoutewatchAuthFailing", Expected::Samples),
    // The expression needs an hour of history before the last 10 minutes, and this
    // Prometheus started seconds ago.
    ("RoutewatchWafPagesAppeared", Expected::NoSamples),
    ("RoutewatchRouteDown", Expected::Samples),
    ("RoutewatchMonitorFailingEverywhere", Expected::Samples),
    // Probes finish every second, but on a loaded machine a probe's age can still approach
    // three periods of one second when Prometheus evaluates it.
    ("RoutewatchProbesStale", Expected::Either),
    ("RoutewatchConfigReloadFailed", Expected::NoSamples),
    ("RoutewatchScrapeFailing", Expected::NoSamples),
];

/// The upstream, both proxies and routewatch, started for one test and stopped on drop.
struct Scenario {
    _upstream: Upstream,
    _tinyproxy: Tinyproxy,
    _microsocks: Microsocks,
    service: Service,
}

/// Starts the scenario. Monitor `api` is ok direct, geo_block through tinyproxy (route
/// via-http) and waf_html through microsocks (route via-socks). Monitor `keyless` gets a 401,
/// so auth, on every route. Every pair is probed every second.
fn start_scenario() -> Scenario {
    let ca = TestCa::shared();
    let upstream = Upstream::start_with_ca(
        ca,
        Routes::new()
            .route("/v1/models", Reply::json(200, MODELS))
            .for_source(
                TINYPROXY_EGRESS,
                Reply::json(403, OPENAI_UNSUPPORTED_REGION),
            )
            .for_source(MICROSOCKS_EGRESS, Reply::html(403, CLOUDFLARE_BLOCK_HTML))
            .route("/v1/keyless", Reply::unauthorized()),
    );
    let tinyproxy = Tinyproxy::start();
    let microsocks = Microsocks::start(SOCKS_USER, SOCKS_PASSWORD);
    let config = format!(
        r#"
defaults:
  schedule: every {period}s
  timeout: 3s
routes:
  - name: direct
    ca_file: {ca_file}
  - name: via-http
    proxy: {http_proxy}
    ca_file: {ca_file}
  - name: via-socks
    proxy: {socks_proxy}
    ca_file: {ca_file}
monitors:
  - name: api
    url: {api_url}
  - name: keyless
    url: {keyless_url}
"#,
        period = SCRAPE_INTERVAL.as_secs(),
        ca_file = ca.ca_file().display(),
        http_proxy = tinyproxy.url(),
        socks_proxy = microsocks.url(),
        api_url = upstream.url("/v1/models"),
        keyless_url = upstream.url("/v1/keyless"),
    );
    let service = Service::start(&config);

    Scenario {
        _upstream: upstream,
        _tinyproxy: tinyproxy,
        _microsocks: microsocks,
        service,
    }
}

/// Polls /status until all six pairs have a class.
fn wait_for_verdicts(service: &Service) {
    let deadline = Instant::now() + FIRST_VERDICT_TIMEOUT;
    loop {
        let (status, body) = service.get("/status");
        assert_eq!(status, 200, "GET /status: {body}");
        let document: Value = serde_json::from_str(&body).expect("/status is JSON");
        let pairs = document["pairs"].as_array().expect("pairs is an array");
        let done = pairs.iter().filter(|pair| !pair["class"].is_null()).count();
        if pairs.len() == 6 && done == 6 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of 6 pairs have a verdict after {FIRST_VERDICT_TIMEOUT:?}:\n{body}\nstderr:\n{}",
            service.stderr()
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

fn repo_path(relative: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Returns the shipped alerts.yml with every `for:` set to [`SHORT_FOR`], and the name and
/// expression of every rule, unchanged.
///
/// The shipped alerts hold for minutes (RoutewatchGeoBlockRateHigh for 10m) so that one bad
/// minute does not page, and a test cannot wait that long. Only `for:` changes: the expressions,
/// and so the 10m rate window, are the shipped ones. A 10m window needs no 10 minutes of data,
/// because rate() extrapolates from the samples it has.
fn shortened_rules() -> (String, Vec<(String, String)>) {
    let text = std::fs::read_to_string(repo_path(ALERTS)).unwrap();
    let mut rules: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let mut expressions = Vec::new();
    for group in rules["groups"].as_sequence_mut().unwrap() {
        for rule in group["rules"].as_sequence_mut().unwrap() {
            let rule = rule.as_mapping_mut().unwrap();
            let name = rule
                .get("record")
                .or_else(|| rule.get("alert"))
                .and_then(|name| name.as_str())
                .unwrap()
                .to_owned();
            let expr = rule["expr"].as_str().unwrap().to_owned();
            expressions.push((name, expr));
            if rule.contains_key("for") {
                rule.insert("for".into(), SHORT_FOR.into());
            }
        }
    }
    (serde_yaml::to_string(&rules).unwrap(), expressions)
}

/// Replaces the Grafana variables in `expr` with values Prometheus accepts.
fn substitute_grafana_variables(expr: &str) -> String {
    let mut substituted = expr.to_owned();
    for (variable, value) in GRAFANA_SUBSTITUTIONS {
        substituted = substituted.replace(variable, value);
    }
    assert!(
        !substituted.contains('$'),
        "query uses a Grafana variable that has no substitution: {substituted}"
    );
    substituted
}

/// Collects a description and the query of every target of every panel, rows' nested panels
/// included.
fn collect_panel_queries(panels: &[Value], queries: &mut Vec<(String, String)>) {
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default();
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                let reference = target["refId"].as_str().unwrap_or_default();
                queries.push((
                    format!("panel {title:?} target {reference}"),
                    expr.to_owned(),
                ));
            }
        }
        if let Some(nested) = panel["panels"].as_array() {
            collect_panel_queries(nested, queries);
        }
    }
}

/// Returns the query of a Grafana template variable, which is a string or an object with a
/// `query` field.
fn variable_query(variable: &Value) -> Option<&str> {
    variable["query"]
        .as_str()
        .or_else(|| variable["query"]["query"].as_str())
}

/// Returns the samples of an instant-query result, keyed by the values of `labels`.
fn samples_by(document: &Value, labels: &[&str]) -> BTreeMap<Vec<String>, String> {
    let result = document["data"]["result"].as_array().unwrap();
    result
        .iter()
        .map(|sample| {
            let key = labels
                .iter()
                .map(|label| {
                    sample["metric"][label]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect();
            let value = sample["value"][1].as_str().unwrap().to_owned();
            (key, value)
        })
        .collect()
}

/// Builds the expected map for [`samples_by`] from rows of label values and a value.
fn expected_samples(rows: &[(&[&str], &str)]) -> BTreeMap<Vec<String>, String> {
    rows.iter()
        .map(|(key, value)| {
            let key = key.iter().map(|part| (*part).to_owned()).collect();
            (key, (*value).to_owned())
        })
        .collect()
}

/// Evaluates `expr`, asserts that Prometheus accepted it, and returns the document.
fn query_success(prometheus: &Prometheus, name: &str, expr: &str) -> Value {
    let document = prometheus.query(expr);
    assert_eq!(
        document["status"], "success",
        "{name}: Prometheus rejected {expr}\n{document:#}"
    );
    document
}

fn result_len(document: &Value) -> usize {
    document["data"]["result"].as_array().map_or(0, Vec::len)
}

/// Waits until the shipped recording rule has a value for every pair: 1 for the geo-blocked
/// pair, 0 for the others. A value for every pair means each pair finished probes between two
/// scrapes, so every rate() over the data is defined.
fn wait_for_rule_data(prometheus: &Prometheus) {
    let expected = expected_samples(&[
        (&["api", "direct"], "0"),
        (&["api", "via-http"], "1"),
        (&["api", "via-socks"], "0"),
        (&["keyless", "direct"], "0"),
        (&["keyless", "via-http"], "0"),
        (&["keyless", "via-socks"], "0"),
    ]);
    let deadline = Instant::now() + RULE_DATA_TIMEOUT;
    loop {
        let document = prometheus.query("routewatch:geo_block_ratio:rate10m");
        let samples = samples_by(&document, &["monitor", "route"]);
        if samples == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the recording rule did not reach {expected:?} within {RULE_DATA_TIMEOUT:?}; \
             last result: {document:#}\nprometheus.log:\n{}",
            prometheus.log()
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Polls /api/v1/alerts until `alertname` fires for `route`, and returns that alert.
fn wait_for_firing(prometheus: &Prometheus, alertname: &str, route: &str) -> Value {
    let deadline = Instant::now() + ALERT_TIMEOUT;
    loop {
        let document = prometheus.alerts();
        assert_eq!(document["status"], "success", "{document:#}");
        let alerts = document["data"]["alerts"].as_array().unwrap();
        let found = alerts.iter().find(|alert| {
            alert["labels"]["alertname"] == alertname
                && alert["labels"]["route"] == route
                && alert["state"] == "firing"
        });
        if let Some(alert) = found {
            return alert.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{alertname} did not fire for route {route} within {ALERT_TIMEOUT:?}; alerts: {document:#}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

fn start_prometheus(service: &Service) -> Prometheus {
    let (rules, _) = shortened_rules();
    let config = scrape_config(JOB, service.addr(), SCRAPE_INTERVAL, &["alerts.yml"]);
    Prometheus::start(&config, &[("alerts.yml", &rules)])
}

#[test]
fn dashboard_queries_return_data() {
    let scenario = start_scenario();
    let prometheus = start_prometheus(&scenario.service);
    wait_for_rule_data(&prometheus);

    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_path(DASHBOARD)).unwrap()).unwrap();
    let mut queries = Vec::new();
    collect_panel_queries(dashboard["panels"].as_array().unwrap(), &mut queries);
    assert_eq!(queries.len(), DASHBOARD_QUERY_COUNT, "{queries:#?}");

    for (name, expr) in &queries {
        let expr = substitute_grafana_variables(expr);
        let document = query_success(&prometheus, name, &expr);
        assert!(
            result_len(&document) > 0,
            "{name}: no data for {expr}\n{document:#}"
        );
    }

    // Codes of the class timeline: ok 1, auth 2, geo_block 3, waf_html 4.
    let (_, timeline) = queries
        .iter()
        .find(|(name, _)| name.starts_with("panel \"Probe class over time"))
        .unwrap();
    let document = prometheus.query(&substitute_grafana_variables(timeline));
    assert_eq!(
        samples_by(&document, &["monitor", "route"]),
        expected_samples(&[
            (&["api", "direct"], "1"),
            (&["api", "via-http"], "3"),
            (&["api", "via-socks"], "4"),
            (&["keyless", "direct"], "2"),
            (&["keyless", "via-http"], "2"),
            (&["keyless", "via-socks"], "2"),
        ])
    );

    // Share of geo_block probes by route: only via-http's api pair is blocked, and keyless
    // (never blocked) shares each route, so via-http is one half.
    let (_, by_route) = queries
        .iter()
        .find(|(name, _)| name.starts_with("panel \"Geo-block rate by route"))
        .unwrap();
    let document = prometheus.query(&substitute_grafana_variables(by_route));
    let samples = samples_by(&document, &["route"]);
    assert_eq!(samples.len(), 3, "{document:#}");
    assert_eq!(samples[&vec!["direct".to_owned()]], "0");
    assert_eq!(samples[&vec!["via-socks".to_owned()]], "0");
    let via_http: f64 = samples[&vec!["via-http".to_owned()]].parse().unwrap();
    assert!(
        (0.3..=0.7).contains(&via_http),
        "geo-block share on via-http is {via_http}, expected about 0.5"
    );
}

#[test]
fn dashboard_variables_list_monitors_and_routes() {
    let scenario = start_scenario();
    let prometheus = start_prometheus(&scenario.service);
    wait_for_rule_data(&prometheus);

    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_path(DASHBOARD)).unwrap()).unwrap();
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let mut values_by_variable = BTreeMap::new();
    for variable in variables
        .iter()
        .filter(|variable| variable["type"] == "query")
    {
        let name = variable["name"].as_str().unwrap();
        let query = variable_query(variable).unwrap();
        // Grafana runs label_values(SELECTOR, LABEL) as a label values request with SELECTOR
        // as the match[] parameter. Any other form needs its own translation here.
        let arguments = query
            .strip_prefix("label_values(")
            .and_then(|rest| rest.strip_suffix(')'))
            .unwrap_or_else(|| {
                panic!(
                    "variable {name}: unsupported query form {query:?}; translate it in this test"
                )
            });
        let (selector, label) = arguments.rsplit_once(',').unwrap();
        let selector = substitute_grafana_variables(selector.trim());

        let document = prometheus.label_values(label.trim(), &selector);
        assert_eq!(
            document["status"], "success",
            "variable {name}: {document:#}"
        );
        let values: Vec<String> = document["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|value| value.as_str().unwrap().to_owned())
            .collect();
        values_by_variable.insert(name.to_owned(), values);
    }

    assert_eq!(
        values_by_variable,
        BTreeMap::from([
            (
                "monitor".to_owned(),
                vec!["api".to_owned(), "keyless".to_owned()]
            ),
            (
                "route".to_owned(),
                vec![
                    "direct".to_owned(),
                    "via-http".to_owned(),
                    "via-socks".to_owned()
                ]
            ),
            // The test scrapes without a vantage label, so the variable lists nothing and its
            // "All" value `.*` matches the unlabelled series.
            ("vantage".to_owned(), Vec::new()),
        ])
    );
}

#[test]
fn rule_expressions_evaluate_and_geo_alert_fires() {
    let scenario = start_scenario();
    let prometheus = start_prometheus(&scenario.service);
    wait_for_rule_data(&prometheus);

    let (_, rules) = shortened_rules();
    let names: Vec<&str> = rules.iter().map(|(name, _)| name.as_str()).collect();
    let listed: Vec<&str> = RULE_EXPECTATIONS.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names, listed,
        "RULE_EXPECTATIONS must list every rule in order"
    );

    let mut documents = BTreeMap::new();
    for ((name, expr), (_, expected)) in rules.iter().zip(RULE_EXPECTATIONS) {
        let document = query_success(&prometheus, name, expr);
        let len = result_len(&document);
        match expected {
            Expected::Samples => assert!(len > 0, "{name}: no data for {expr}\n{document:#}"),
            Expected::NoSamples => {
                assert_eq!(len, 0, "{name}: unexpected data for {expr}\n{document:#}")
            }
            Expected::Either => {}
        }
        documents.insert(name.as_str(), document);
    }

    let pair = &["monitor", "route"];
    assert_eq!(
        samples_by(&documents["RoutewatchGeoBlockRateHigh"], pair),
        expected_samples(&[(&["api", "via-http"], "1")])
    );
    assert_eq!(
        samples_by(&documents["RoutewatchAuthFailing"], pair),
        expected_samples(&[
            (&["keyless", "direct"], "1"),
            (&["keyless", "via-http"], "1"),
            (&["keyless", "via-socks"], "1"),
        ])
    );
    // api works on direct only, so via-http and via-socks are down. keyless fails everywhere,
    // so it is left out of both counts.
    assert_eq!(
        samples_by(&documents["RoutewatchRouteDown"], &["route"]),
        expected_samples(&[(&["via-http"], "1"), (&["via-socks"], "1")])
    );
    assert_eq!(
        samples_by(
            &documents["RoutewatchMonitorFailingEverywhere"],
            &["monitor"]
        ),
        expected_samples(&[(&["keyless"], "0")])
    );

    let alert = wait_for_firing(&prometheus, "RoutewatchGeoBlockRateHigh", "via-http");
    let instance = scenario.service.addr().to_string();
    let expected_labels = serde_json::json!({
        "alertname": "RoutewatchGeoBlockRateHigh",
        "severity": "critical",
        "job": JOB,
        "instance": instance,
        "monitor": "api",
        "route": "via-http",
    });
    assert_eq!(alert["labels"], expected_labels);
    assert_eq!(
        alert["annotations"]["summary"],
        "api is geo-blocked on route via-http"
    );

    let document = prometheus.alerts();
    let geo_routes: Vec<&Value> = document["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|alert| alert["labels"]["alertname"] == "RoutewatchGeoBlockRateHigh")
        .map(|alert| &alert["labels"]["route"])
        .collect();
    assert_eq!(geo_routes, ["via-http"], "{document:#}");
}

#[test]
fn metrics_pass_promtool_check() {
    let scenario = start_scenario();
    wait_for_verdicts(&scenario.service);

    let (status, metrics) = scenario.service.get("/metrics");
    assert_eq!(status, 200, "{metrics}");
    assert!(
        metrics.contains(
            "routewatch_probe_class{class=\"geo_block\",monitor=\"api\",route=\"via-http\"} 1\n"
        ),
        "{metrics}"
    );

    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(error) if error.kind() == ErrorKind::NotFound => {
            panic!("promtool not found: run scripts/test to install Debian's prometheus package")
        }
        Err(error) => panic!("failed to run promtool check metrics: {error}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert!(
        output.status.success(),
        "promtool check metrics failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert_eq!(stdout, "");
    assert_eq!(stderr, "");
}
