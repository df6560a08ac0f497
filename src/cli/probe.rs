//! `routewatch probe`: run the chosen pairs once and show, step by step like `curl -v`, what
//! happened on each route, then the verdict with its evidence.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::sync::Arc;

use serde::Serialize;
use thiserror::Error;

use crate::classify::{Class, Observation, TransportKind, Verdict};
use crate::cli::{OutputFormat, ProbeArgs};
use crate::config::Config;
use crate::diagnose::{self, Cell, Diagnosis};
use crate::egress::{self, Egress, MAX_TRACE_TIMEOUT};
use crate::probe::ProbeReport;
use crate::redact::Redactor;
use crate::schedule::{self, Pair, SNIPPET_CHARS, ScheduleError};

/// Headers worth showing: the ones the classifier and an operator look at.
const SHOWN_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "location",
    "server",
    "via",
    "cf-ray",
    "cf-mitigated",
    "x-squid-error",
    "x-vercel-mitigated",
    "retry-after",
    "www-authenticate",
    "proxy-authenticate",
];

/// Failure of the probe command before any probe ran.
#[derive(Debug, Error)]
pub enum ProbeCommandError {
    /// A `--monitor` or `--route` names nothing in the config.
    #[error("unknown {kind} {name:?} ({kind}s are: {known})")]
    UnknownName {
        kind: &'static str,
        name: String,
        known: String,
    },
    /// The selection matches no pair.
    #[error("no (monitor, route) pair matches the selection")]
    NothingSelected,
    /// Route clients could not be built.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// Writing the output failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// Runs the selected pairs once, writes their reports, and returns true when every one is ok.
pub async fn run(
    config: &Config,
    args: &ProbeArgs,
    out: &mut dyn Write,
) -> Result<bool, ProbeCommandError> {
    check_names(config, args)?;
    let pairs: Vec<Arc<Pair>> = schedule::build_pairs(config)?
        .into_iter()
        .filter(|pair| selected(&args.monitor, &pair.key.0) && selected(&args.route, &pair.key.1))
        .collect();
    if pairs.is_empty() {
        return Err(ProbeCommandError::NothingSelected);
    }

    let redactor = Arc::new(Redactor::new(config.secrets()));
    let rules = Arc::new(config.rules.clone());
    let semaphore = Arc::new(tokio::sync::Semaphore::new(
        config.global.concurrency.max(1),
    ));
    let traces = spawn_traces(&pairs, &redactor);
    let tasks: Vec<_> = pairs
        .iter()
        .map(|pair| {
            let (pair, redactor, rules, semaphore) = (
                Arc::clone(pair),
                Arc::clone(&redactor),
                Arc::clone(&rules),
                Arc::clone(&semaphore),
            );
            tokio::spawn(async move {
                let _permit = semaphore.acquire_owned().await;
                schedule::run_once(pair, redactor, rules).await
            })
        })
        .collect();

    let egress = collect_traces(traces).await;
    let mut cells = Vec::new();
    let mut all_ok = true;
    for (pair, task) in pairs.iter().zip(tasks) {
        let Ok((report, verdict)) = task.await else {
            all_ok = false;
            writeln!(
                out,
                "== {} via {}: the probe panicked",
                pair.key.0, pair.key.1
            )?;
            continue;
        };
        all_ok &= verdict.class == Class::Ok;
        cells.push(Cell {
            monitor: pair.key.0.clone(),
            route: pair.key.1.clone(),
            class: verdict.class,
        });
        let resolved = resolve_host(pair).await;
        let route_egress = egress.get(&pair.key.1);
        match args.format {
            OutputFormat::Text => write_text(
                out,
                pair,
                &report,
                &verdict,
                &redactor,
                &resolved,
                route_egress,
            )?,
            OutputFormat::Json => write_json(
                out,
                pair,
                &report,
                &verdict,
                &redactor,
                &resolved,
                route_egress,
            )?,
        }
    }

    let countries = egress
        .iter()
        .map(|(route, egress)| (route.clone(), egress.country.clone()))
        .collect();
    write_diagnoses(out, args.format, &diagnose::diagnose(&cells, &countries))?;
    Ok(all_ok)
}

/// Starts one trace fetch per selected route that has a `trace_url`.
fn spawn_traces(
    pairs: &[Arc<Pair>],
    redactor: &Arc<Redactor>,
) -> Vec<tokio::task::JoinHandle<Option<(String, Egress)>>> {
    let mut seen = HashSet::new();
    pairs
        .iter()
        .filter(|pair| seen.insert(pair.key.1.clone()))
        .filter_map(|pair| {
            let url = pair.route.definition.trace_url.clone()?;
            let timeout = pair.route.definition.trace_every.min(MAX_TRACE_TIMEOUT);
            let (client, redactor) = (pair.route.clone(), Arc::clone(redactor));
            Some(tokio::spawn(async move {
                match egress::fetch(&client, &url, timeout, &redactor).await {
                    Ok(egress) => Some((client.name.clone(), egress)),
                    Err(error) => {
                        tracing::warn!(route = %client.name, error = %error, "egress trace failed");
                        None
                    }
                }
            }))
        })
        .collect()
}

async fn collect_traces(
    traces: Vec<tokio::task::JoinHandle<Option<(String, Egress)>>>,
) -> BTreeMap<String, Egress> {
    let mut egress = BTreeMap::new();
    for trace in traces {
        if let Ok(Some((route, found))) = trace.await {
            egress.insert(route, found);
        }
    }
    egress
}

#[derive(Serialize)]
struct JsonDiagnosis<'a> {
    monitor: &'a str,
    kind: &'static str,
    sentence: &'a str,
}

/// Writes one diagnosis per monitor: a closing text block, or one `{"diagnosis": ...}` line
/// each in JSON.
fn write_diagnoses(
    out: &mut dyn Write,
    format: OutputFormat,
    diagnoses: &[Diagnosis],
) -> std::io::Result<()> {
    if matches!(format, OutputFormat::Text) {
        writeln!(out, "== diagnosis")?;
    }
    for diagnosis in diagnoses {
        match format {
            OutputFormat::Text => writeln!(
                out,
                "*  {}: {}: {}",
                diagnosis.monitor, diagnosis.kind, diagnosis.sentence
            )?,
            OutputFormat::Json => {
                let line = serde_json::json!({
                    "diagnosis": JsonDiagnosis {
                        monitor: &diagnosis.monitor,
                        kind: diagnosis.kind.as_str(),
                        sentence: &diagnosis.sentence,
                    }
                });
                writeln!(out, "{line}")?;
            }
        }
    }
    Ok(())
}

fn check_names(config: &Config, args: &ProbeArgs) -> Result<(), ProbeCommandError> {
    let monitors: Vec<&str> = config
        .monitors
        .iter()
        .map(|monitor| monitor.name.as_str())
        .collect();
    let routes: Vec<&str> = config
        .routes
        .iter()
        .map(|route| route.name.as_str())
        .collect();
    check_known("monitor", &args.monitor, &monitors)?;
    check_known("route", &args.route, &routes)
}

fn check_known(
    kind: &'static str,
    wanted: &[String],
    known: &[&str],
) -> Result<(), ProbeCommandError> {
    let known_set: HashSet<&str> = known.iter().copied().collect();
    match wanted
        .iter()
        .find(|name| !known_set.contains(name.as_str()))
    {
        Some(name) => Err(ProbeCommandError::UnknownName {
            kind,
            name: name.clone(),
            known: known.join(", "),
        }),
        None => Ok(()),
    }
}

fn selected(wanted: &[String], name: &str) -> bool {
    wanted.is_empty() || wanted.iter().any(|wanted| wanted == name)
}

/// Resolves the endpoint's name as this route would, or notes that the proxy resolves it.
async fn resolve_host(pair: &Pair) -> String {
    let url = &pair.monitor.url;
    let Some(host) = url.host_str() else {
        return "no host in the URL".to_owned();
    };
    if let Some(proxy) = &pair.route.definition.proxy
        && proxy.scheme() != "socks5"
    {
        return format!("{host} is resolved by the proxy");
    }
    let port = url.port_or_known_default().unwrap_or(443);
    match tokio::net::lookup_host((host, port)).await {
        Ok(addresses) => {
            let addresses: Vec<String> =
                addresses.map(|address| address.ip().to_string()).collect();
            format!("{host} resolved to {}", addresses.join(", "))
        }
        Err(error) => format!("{host} did not resolve: {error}"),
    }
}

fn write_text(
    out: &mut dyn Write,
    pair: &Pair,
    report: &ProbeReport,
    verdict: &Verdict,
    redactor: &Redactor,
    resolved: &str,
    egress: Option<&Egress>,
) -> std::io::Result<()> {
    let route = match &pair.route.proxy {
        Some(proxy) => format!("{} (proxy {proxy})", pair.key.1),
        None => format!("{} (direct)", pair.key.1),
    };
    writeln!(out, "== {} via {route}", pair.key.0)?;
    writeln!(
        out,
        "*  {} {}",
        pair.monitor.method,
        redactor.redact_url(&pair.monitor.url)
    )?;
    if let Some(address) = pair.route.definition.source_address {
        writeln!(out, "*  source address {address}")?;
    }
    writeln!(out, "*  {resolved}")?;
    for (name, value) in &pair.monitor.headers {
        writeln!(out, ">  {name}: {}", redactor.redact(value))?;
    }
    if let Some(egress) = egress {
        writeln!(
            out,
            "*  egress {} country {} (colo {})",
            egress.ip, egress.country, egress.colo
        )?;
    }
    if report.attempts > 1 {
        writeln!(out, "*  {} attempts", report.attempts)?;
    }
    match &report.observation {
        Observation::Response(response) => {
            let peer = report
                .remote_addr
                .map_or_else(|| "unknown".to_owned(), |address| address.to_string());
            let via = if pair.route.proxied {
                " (the proxy)"
            } else {
                ""
            };
            writeln!(out, "*  connected to {peer}{via}")?;
            if pair.monitor.url.scheme() == "https" {
                writeln!(out, "*  TLS handshake ok")?;
            }
            let headers_ms = report.time_to_headers.map_or(0, |time| time.as_millis());
            writeln!(
                out,
                "<  HTTP {} (headers after {headers_ms} ms)",
                response.status
            )?;
            for (name, value) in shown_headers(&response.headers) {
                writeln!(out, "<  {name}: {}", redactor.redact(value))?;
            }
            let snippet = schedule::body_snippet(&report.observation, SNIPPET_CHARS);
            let cut = if response.body_truncated {
                " (cut at the body cap)"
            } else {
                ""
            };
            writeln!(
                out,
                "<  body ({} bytes read{cut}): {}",
                response.body.len(),
                redactor.redact(&snippet)
            )?;
        }
        Observation::Transport(error) => {
            writeln!(
                out,
                "!  {} failed after {} ms: {}",
                failed_step(pair, error.kind),
                report.total.as_millis(),
                error.detail
            )?;
        }
    }
    writeln!(
        out,
        "=> {} {} ({} ms): {}\n",
        verdict.class,
        verdict.reason,
        report.total.as_millis(),
        verdict.evidence
    )
}

/// Names the step that failed in words an operator checks next: the lookup, the TCP
/// connection, the TLS handshake, or the route's proxy.
fn failed_step(pair: &Pair, kind: TransportKind) -> String {
    let url = &pair.monitor.url;
    let host = url.host_str().unwrap_or("the endpoint");
    let port = url.port_or_known_default().unwrap_or(443);
    match (kind, &pair.route.proxy) {
        (TransportKind::Timeout, _) => "the request".to_owned(),
        (TransportKind::Dns, _) => format!("DNS lookup of {host}"),
        (TransportKind::Connect, _) => format!("TCP connection to {host}:{port}"),
        (TransportKind::Tls, _) => format!("TLS handshake with {host}:{port}"),
        (TransportKind::Protocol, _) => format!("HTTP exchange with {host}:{port}"),
        (TransportKind::Proxy, Some(proxy)) => format!("proxy {proxy}"),
        (TransportKind::Proxy, None) => "the proxy".to_owned(),
    }
}

fn shown_headers(headers: &[(String, String)]) -> impl Iterator<Item = (&str, &str)> {
    headers
        .iter()
        .filter(|(name, _)| SHOWN_HEADERS.contains(&name.as_str()))
        .map(|(name, value)| (name.as_str(), value.as_str()))
}

#[derive(Serialize)]
struct JsonReport<'a> {
    monitor: &'a str,
    route: &'a str,
    proxy: Option<&'a str>,
    url: String,
    resolved: &'a str,
    remote_addr: Option<String>,
    http_status: u16,
    headers: Vec<(&'a str, String)>,
    body_snippet: String,
    error: Option<String>,
    class: &'static str,
    reason: &'a str,
    evidence: &'a str,
    duration_seconds: f64,
    time_to_headers_seconds: Option<f64>,
    attempts: u32,
    egress: Option<serde_json::Value>,
}

fn write_json(
    out: &mut dyn Write,
    pair: &Pair,
    report: &ProbeReport,
    verdict: &Verdict,
    redactor: &Redactor,
    resolved: &str,
    egress: Option<&Egress>,
) -> std::io::Result<()> {
    let (http_status, headers, error) = match &report.observation {
        Observation::Response(response) => (
            response.status,
            shown_headers(&response.headers)
                .map(|(name, value)| (name, redactor.redact(value)))
                .collect(),
            None,
        ),
        Observation::Transport(error) => (0, Vec::new(), Some(error.detail.clone())),
    };
    let json = JsonReport {
        monitor: &pair.key.0,
        route: &pair.key.1,
        proxy: pair.route.proxy.as_deref(),
        url: redactor.redact_url(&pair.monitor.url),
        resolved,
        remote_addr: report.remote_addr.map(|address| address.to_string()),
        http_status,
        headers,
        body_snippet: redactor.redact(&schedule::body_snippet(&report.observation, SNIPPET_CHARS)),
        error,
        class: verdict.class.as_str(),
        reason: &verdict.reason,
        evidence: &verdict.evidence,
        duration_seconds: report.total.as_secs_f64(),
        time_to_headers_seconds: report.time_to_headers.map(|time| time.as_secs_f64()),
        attempts: report.attempts,
        egress: egress.map(|egress| {
            serde_json::json!({
                "ip": egress.ip.to_string(),
                "country": egress.country,
                "colo": egress.colo,
            })
        }),
    };
    let line = serde_json::to_string(&json).map_err(std::io::Error::other)?;
    writeln!(out, "{line}")
}
