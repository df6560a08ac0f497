//! Egress identity: which IP address, country and Cloudflare colo a route's traffic leaves from.
//!
//! A route may name a `trace_url` that returns text in the format of Cloudflare's
//! `/cdn-cgi/trace`: one `key=value` per line, including `ip`, `loc` (the country code) and
//! `colo` (the data centre's airport code). [`parse_trace`] is a pure function over that text;
//! [`fetch`] sends one request through the route's own client. [`EgressTracker`] runs one
//! fetch loop per traced route and stores the results in the status store and metrics.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use thiserror::Error;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::config::{Config, Route};
use crate::metrics::Metrics;
use crate::probe::error_chain;
use crate::redact::{Redactor, redact_url};
use crate::route::{self, RouteClient};
use crate::status::{EgressRecord, StatusStore};

/// Largest trace body read; a real trace is about 300 bytes.
pub const MAX_TRACE_BYTES: usize = 16 * 1024;

/// Maximum time one trace fetch may take, whatever the route's period.
pub const MAX_TRACE_TIMEOUT: Duration = Duration::from_secs(10);

/// The address, country and colo that a route's traffic leaves from, as the trace endpoint saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Egress {
    /// The client address the trace endpoint saw.
    pub ip: IpAddr,
    /// The country code from `loc`, in upper case (`US`, `HK`; Cloudflare also uses `XX`
    /// and `T1`).
    pub country: String,
    /// The Cloudflare data centre from `colo`, in upper case (`HKG`, `SJC`).
    pub colo: String,
}

/// Failure to learn a route's egress.
#[derive(Debug, Error)]
pub enum EgressError {
    /// The request failed before a response arrived.
    #[error("route {route}: trace request to {url} failed: {detail}")]
    Request {
        route: String,
        url: String,
        detail: String,
    },
    /// No response within the timeout.
    #[error("route {route}: trace request to {url} timed out after {seconds}s")]
    Timeout {
        route: String,
        url: String,
        seconds: u64,
    },
    /// The endpoint returned a status other than 200.
    #[error("route {route}: trace URL {url} returned HTTP {status} (expected 200)")]
    Status {
        route: String,
        url: String,
        status: u16,
    },
    /// The body is not trace text.
    #[error(
        "route {route}: trace URL {url} returned no valid ip, loc and colo lines (expected Cloudflare /cdn-cgi/trace text)"
    )]
    Parse { route: String, url: String },
}

/// Parses trace text into an [`Egress`].
///
/// Returns `None` unless the text has a valid IP address in `ip`, a `loc` of two ASCII
/// letters or digits, and a `colo` of one to eight ASCII letters or digits. These limits keep
/// the values safe as metric labels. Other keys, blank lines and lines without `=` are
/// ignored; when a key repeats, the last value counts.
pub fn parse_trace(text: &str) -> Option<Egress> {
    let (mut ip, mut country, mut colo) = (None, None, None);
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "ip" => ip = value.parse::<IpAddr>().ok(),
            "loc" => country = code(value, 2, 2),
            "colo" => colo = code(value, 1, 8),
            _ => {}
        }
    }
    Some(Egress {
        ip: ip?,
        country: country?,
        colo: colo?,
    })
}

/// Returns `value` in upper case when it has `min..=max` ASCII letters or digits.
fn code(value: &str, min: usize, max: usize) -> Option<String> {
    let valid = (min..=max).contains(&value.len())
        && value.bytes().all(|byte| byte.is_ascii_alphanumeric());
    valid.then(|| value.to_ascii_uppercase())
}

/// Fetches `url` through the route's client and parses the response body.
///
/// The fetch is bounded by `timeout` and reads at most [`MAX_TRACE_BYTES`]. Error text passes
/// through `redactor`, and the URL in errors has its password removed.
///
/// # Errors
/// Returns an [`EgressError`] for a transport failure, a timeout, a status other than 200 or
/// a body that [`parse_trace`] rejects.
pub async fn fetch(
    route: &RouteClient,
    url: &Url,
    timeout: Duration,
    redactor: &Redactor,
) -> Result<Egress, EgressError> {
    let shown_url = redact_url(url);
    match tokio::time::timeout(timeout, fetch_text(route, url)).await {
        Err(_) => Err(EgressError::Timeout {
            route: route.name.clone(),
            url: shown_url,
            seconds: timeout.as_secs(),
        }),
        Ok(Err(error)) => Err(EgressError::Request {
            route: route.name.clone(),
            url: shown_url,
            detail: redactor.redact(&error_chain(&error)),
        }),
        Ok(Ok((200, text))) => parse_trace(&text).ok_or(EgressError::Parse {
            route: route.name.clone(),
            url: shown_url,
        }),
        Ok(Ok((status, _))) => Err(EgressError::Status {
            route: route.name.clone(),
            url: shown_url,
            status,
        }),
    }
}

/// Sends the request and reads up to [`MAX_TRACE_BYTES`] of the body as text.
async fn fetch_text(route: &RouteClient, url: &Url) -> Result<(u16, String), reqwest::Error> {
    let mut response = route.client.get(url.clone()).send().await?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_TRACE_BYTES - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == MAX_TRACE_BYTES {
            break;
        }
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Runs one trace loop per route that has a `trace_url`, owned by the scheduler.
pub struct EgressTracker {
    metrics: Metrics,
    status: Arc<StatusStore>,
    shutdown: CancellationToken,
    loops: Mutex<HashMap<String, (Route, CancellationToken)>>,
}

impl EgressTracker {
    /// Creates a tracker whose loops all stop when `shutdown` is cancelled.
    pub fn new(metrics: Metrics, status: Arc<StatusStore>, shutdown: CancellationToken) -> Self {
        EgressTracker {
            metrics,
            status,
            shutdown,
            loops: Mutex::new(HashMap::new()),
        }
    }

    /// Starts, replaces or stops trace loops so that each traced route of `config` has one
    /// loop built from its current definition. A stopped or replaced loop's egress leaves
    /// the status store and metrics.
    ///
    /// # Errors
    /// Returns the first route whose client cannot be built; loops already started keep running.
    pub fn sync(&self, config: &Config, redactor: &Arc<Redactor>) -> Result<(), route::RouteError> {
        let mut loops = self
            .loops
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let wanted: HashMap<&str, &Route> = config
            .routes
            .iter()
            .filter(|route| route.trace_url.is_some())
            .map(|route| (route.name.as_str(), route))
            .collect();

        let stale: Vec<String> = loops
            .iter()
            .filter(|(name, (route, _))| wanted.get(name.as_str()) != Some(&route))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some((_, stop)) = loops.remove(&name) {
                stop.cancel();
            }
            let previous = self.status.remove_egress(&name);
            self.metrics
                .remove_egress_route(&name, previous.as_ref().map(|record| &record.egress));
        }

        for (name, route) in wanted {
            if loops.contains_key(name) {
                continue;
            }
            let stop = self.shutdown.child_token();
            self.spawn_loop(route, stop.clone(), Arc::clone(redactor))?;
            loops.insert(name.to_owned(), (route.clone(), stop));
        }
        Ok(())
    }

    fn spawn_loop(
        &self,
        route: &Route,
        stop: CancellationToken,
        redactor: Arc<Redactor>,
    ) -> Result<(), route::RouteError> {
        let Some(url) = route.trace_url.clone() else {
            return Ok(());
        };
        let timeout = route.trace_every.min(MAX_TRACE_TIMEOUT);
        let client = route::build(route, timeout)?;
        let period = route.trace_every;
        let (metrics, status) = (self.metrics.clone(), Arc::clone(&self.status));
        self.metrics.register_egress_route(&route.name);

        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let result = tokio::select! {
                    _ = stop.cancelled() => return,
                    result = fetch(&client, &url, timeout, &redactor) => result,
                };
                match result {
                    Ok(egress) => {
                        failing = false;
                        record(&metrics, &status, &client.name, egress);
                    }
                    Err(error) if !failing => {
                        failing = true;
                        tracing::warn!(route = %client.name, error = %error, "egress trace failed; retrying on schedule");
                    }
                    Err(error) => {
                        tracing::debug!(route = %client.name, error = %error, "egress trace failed");
                    }
                }
            }
        });
        Ok(())
    }
}

/// Stores a fetched egress and logs a change of country or colo once at info.
fn record(metrics: &Metrics, status: &StatusStore, route: &str, egress: Egress) {
    let record = EgressRecord {
        egress: egress.clone(),
        checked_at: SystemTime::now(),
    };
    let previous = status
        .record_egress(route, record)
        .map(|record| record.egress);
    metrics.record_egress(route, previous.as_ref(), &egress);
    if previous.as_ref() != Some(&egress) {
        tracing::info!(
            route,
            ip = %egress.ip,
            country = %egress.country,
            colo = %egress.colo,
            "route egress changed",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLOUDFLARE_TRACE: &str = "fl=29f1\nh=www.cloudflare.com\nip=203.0.113.7\nts=1700000000.123\nvisit_scheme=https\nuag=curl/8.5.0\ncolo=HKG\nsliver=none\nhttp=http/2\nloc=HK\ntls=TLSv1.3\nsni=plaintext\nwarp=off\ngateway=off\nrbi=off\nkex=X25519\n";

    #[test]
    fn parse_trace_reads_cloudflare_text() {
        let egress = parse_trace(CLOUDFLARE_TRACE).unwrap();
        assert_eq!(egress.ip, "203.0.113.7".parse::<IpAddr>().unwrap());
        assert_eq!(egress.country, "HK");
        assert_eq!(egress.colo, "HKG");
    }

    #[test]
    fn parse_trace_accepts_ipv6_crlf_and_lower_case() {
        let egress = parse_trace("ip=2001:db8::7\r\nloc=us\r\ncolo=sjc\r\n").unwrap();
        assert_eq!(egress.ip, "2001:db8::7".parse::<IpAddr>().unwrap());
        assert_eq!(egress.country, "US");
        assert_eq!(egress.colo, "SJC");
    }

    #[test]
    fn parse_trace_rejects_missing_or_bad_fields() {
        let cases = [
            ("", "empty"),
            ("loc=HK\ncolo=HKG\n", "no ip"),
            ("ip=203.0.113.7\ncolo=HKG\n", "no loc"),
            ("ip=203.0.113.7\nloc=HK\n", "no colo"),
            ("ip=not-an-ip\nloc=HK\ncolo=HKG\n", "bad ip"),
            ("ip=203.0.113.7\nloc=HKG\ncolo=HKG\n", "three-letter loc"),
            ("ip=203.0.113.7\nloc=H\"\ncolo=HKG\n", "quote in loc"),
            ("ip=203.0.113.7\nloc=HK\ncolo=HK G\n", "space in colo"),
            (
                "ip=203.0.113.7\nloc=HK\ncolo=ABCDEFGHI\n",
                "nine-letter colo",
            ),
            ("<html><body>blocked</body></html>", "html page"),
        ];
        for (text, case) in cases {
            assert_eq!(parse_trace(text), None, "{case}");
        }
    }

    #[test]
    fn parse_trace_last_repeated_key_wins() {
        let egress = parse_trace("ip=203.0.113.7\nloc=HK\nloc=SG\ncolo=SIN\n").unwrap();
        assert_eq!(egress.country, "SG");
    }
}
