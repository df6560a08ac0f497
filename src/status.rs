//! Status: the latest verdict and a bounded history per (monitor, route) pair, served as JSON.
//!
//! Recent results are data, not log lines: each pair keeps a ring of its last verdicts, so an
//! operator can see an intermittent failure without searching logs. The store holds only text
//! that has already passed through redaction.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::classify::{Class, Verdict};

/// Identifies a pair: (monitor name, route name).
pub type PairKey = (String, String);

/// One finished probe as the status page shows it.
#[derive(Debug, Clone)]
pub struct Record {
    /// The verdict.
    pub verdict: Verdict,
    /// The HTTP status, 0 when there was no response.
    pub http_status: u16,
    /// Time from start to verdict.
    pub duration: Duration,
    /// When the probe finished.
    pub checked_at: SystemTime,
    /// The start of the body, secrets removed.
    pub body_snippet: String,
    /// Body bytes read, at most the monitor's cap.
    pub body_bytes: usize,
    /// True when the body was longer than the cap and reading stopped there.
    pub body_truncated: bool,
}

/// Fixed facts about a pair, shown beside its results.
#[derive(Debug, Clone, Default)]
pub struct PairInfo {
    /// The request URL with secrets removed.
    pub url: String,
    /// The route's proxy with its password removed, if any.
    pub proxy: Option<String>,
    /// The schedule as written in the config.
    pub schedule: String,
}

#[derive(Debug)]
struct PairState {
    info: PairInfo,
    history: VecDeque<Record>,
    skipped_ticks: u64,
}

/// Thread-safe store of every pair's recent results.
#[derive(Debug)]
pub struct StatusStore {
    history_size: usize,
    pairs: RwLock<BTreeMap<PairKey, PairState>>,
}

/// Filters of `GET /status`. An empty list matches everything; a filter given several times
/// matches any of its values.
#[derive(Debug, Clone, Default)]
pub struct StatusFilter {
    /// Only these monitors.
    pub monitor: Vec<String>,
    /// Only these routes.
    pub route: Vec<String>,
    /// Only pairs whose last class is one of these.
    pub class: Vec<Class>,
}

impl StatusStore {
    /// Creates an empty store that keeps `history_size` records per pair (at least one).
    pub fn new(history_size: usize) -> Self {
        StatusStore {
            history_size: history_size.max(1),
            pairs: RwLock::new(BTreeMap::new()),
        }
    }

    /// Adds a pair, or updates its info while keeping its history.
    pub fn register_pair(&self, key: PairKey, info: PairInfo) {
        let mut pairs = self
            .pairs
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        match pairs.get_mut(&key) {
            Some(state) => state.info = info,
            None => {
                pairs.insert(
                    key,
                    PairState {
                        info,
                        history: VecDeque::new(),
                        skipped_ticks: 0,
                    },
                );
            }
        }
    }

    /// Drops every pair not in `keep`, returning the dropped keys.
    pub fn retain_pairs(&self, keep: &HashMap<PairKey, ()>) -> Vec<PairKey> {
        let mut pairs = self
            .pairs
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        let dropped: Vec<PairKey> = pairs
            .keys()
            .filter(|key| !keep.contains_key(*key))
            .cloned()
            .collect();
        for key in &dropped {
            pairs.remove(key);
        }
        dropped
    }

    /// Appends a record and returns the class of the record before it, if any.
    pub fn record(&self, key: &PairKey, record: Record) -> Option<Class> {
        let mut pairs = self
            .pairs
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        let state = pairs.get_mut(key)?;
        let previous = state.history.back().map(|last| last.verdict.class);
        if state.history.len() == self.history_size {
            state.history.pop_front();
        }
        state.history.push_back(record);
        previous
    }

    /// Counts a tick skipped because the pair was still running.
    pub fn record_skipped_tick(&self, key: &PairKey) {
        let mut pairs = self
            .pairs
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(state) = pairs.get_mut(key) {
            state.skipped_ticks += 1;
        }
    }

    /// Returns the latest record of a pair.
    pub fn latest(&self, key: &PairKey) -> Option<Record> {
        let pairs = self
            .pairs
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        pairs
            .get(key)
            .and_then(|state| state.history.back().cloned())
    }

    /// Renders the status document for the pairs that pass the filter.
    pub fn render_json(&self, filter: &StatusFilter) -> String {
        let pairs = self
            .pairs
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        let entries: Vec<PairEntry<'_>> = pairs
            .iter()
            .filter(|(key, state)| filter.matches(key, state))
            .map(|(key, state)| PairEntry::new(key, state))
            .collect();
        let document = StatusDocument {
            generated_at: format_time(SystemTime::now()),
            pairs: entries,
        };
        serde_json::to_string_pretty(&document).expect("status entries serialize to JSON")
    }
}

impl StatusFilter {
    fn matches(&self, key: &PairKey, state: &PairState) -> bool {
        let monitor_ok = self.monitor.is_empty() || self.monitor.contains(&key.0);
        let route_ok = self.route.is_empty() || self.route.contains(&key.1);
        let last_class = state.history.back().map(|last| last.verdict.class);
        let class_ok =
            self.class.is_empty() || last_class.is_some_and(|class| self.class.contains(&class));
        monitor_ok && route_ok && class_ok
    }
}

#[derive(Serialize)]
struct StatusDocument<'a> {
    generated_at: String,
    pairs: Vec<PairEntry<'a>>,
}

/// One pair in the status document. Fields that a probe sets are null before its first probe.
#[derive(Serialize)]
struct PairEntry<'a> {
    monitor: &'a str,
    route: &'a str,
    url: &'a str,
    proxy: Option<&'a str>,
    schedule: &'a str,
    class: Option<&'static str>,
    reason: Option<&'a str>,
    evidence: Option<&'a str>,
    http_status: Option<u16>,
    duration_seconds: Option<f64>,
    checked_at: Option<String>,
    body_snippet: Option<&'a str>,
    body_bytes: Option<usize>,
    body_truncated: Option<bool>,
    skipped_ticks: u64,
    history: Vec<HistoryEntry<'a>>,
}

#[derive(Serialize)]
struct HistoryEntry<'a> {
    class: &'static str,
    reason: &'a str,
    http_status: u16,
    duration_seconds: f64,
    checked_at: String,
}

impl<'a> PairEntry<'a> {
    fn new(key: &'a PairKey, state: &'a PairState) -> Self {
        let latest = state.history.back();
        PairEntry {
            monitor: &key.0,
            route: &key.1,
            url: &state.info.url,
            proxy: state.info.proxy.as_deref(),
            schedule: &state.info.schedule,
            class: latest.map(|record| record.verdict.class.as_str()),
            reason: latest.map(|record| record.verdict.reason.as_ref()),
            evidence: latest.map(|record| record.verdict.evidence.as_str()),
            http_status: latest.map(|record| record.http_status),
            duration_seconds: latest.map(|record| round_millis(record.duration)),
            checked_at: latest.map(|record| format_time(record.checked_at)),
            body_snippet: latest.map(|record| record.body_snippet.as_str()),
            body_bytes: latest.map(|record| record.body_bytes),
            body_truncated: latest.map(|record| record.body_truncated),
            skipped_ticks: state.skipped_ticks,
            // Newest first: the entry an operator reads first is the most recent.
            history: state
                .history
                .iter()
                .rev()
                .map(|record| HistoryEntry {
                    class: record.verdict.class.as_str(),
                    reason: record.verdict.reason.as_ref(),
                    http_status: record.http_status,
                    duration_seconds: round_millis(record.duration),
                    checked_at: format_time(record.checked_at),
                })
                .collect(),
        }
    }
}

fn round_millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1000.0).round() / 1000.0
}

/// Formats a time as RFC 3339 in UTC with millisecond precision.
pub fn format_time(at: SystemTime) -> String {
    DateTime::<Utc>::from(at).to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;
    use std::time::UNIX_EPOCH;

    fn record(class: Class, status: u16, at_secs: u64) -> Record {
        Record {
            verdict: Verdict {
                class,
                reason: Cow::Borrowed("test.reason"),
                evidence: format!("HTTP {status}"),
            },
            http_status: status,
            duration: Duration::from_millis(1234),
            checked_at: UNIX_EPOCH + Duration::from_secs(at_secs),
            body_snippet: "{}".to_owned(),
            body_bytes: 2,
            body_truncated: false,
        }
    }

    fn key(monitor: &str, route: &str) -> PairKey {
        (monitor.to_owned(), route.to_owned())
    }

    #[test]
    fn record_keeps_bounded_history() {
        let store = StatusStore::new(2);
        store.register_pair(key("m", "r"), PairInfo::default());
        assert_eq!(
            store.record(&key("m", "r"), record(Class::Ok, 200, 1)),
            None
        );
        assert_eq!(
            store.record(&key("m", "r"), record(Class::Auth, 401, 2)),
            Some(Class::Ok)
        );
        store.record(&key("m", "r"), record(Class::Ok, 200, 3));

        let json: serde_json::Value =
            serde_json::from_str(&store.render_json(&StatusFilter::default())).unwrap();
        let entry = &json["pairs"][0];
        assert_eq!(entry["class"], "ok");
        assert_eq!(entry["checked_at"], "1970-01-01T00:00:03.000Z");
        assert_eq!(entry["duration_seconds"], 1.234);
        assert_eq!(entry["history"].as_array().unwrap().len(), 2);
        assert_eq!(entry["history"][1]["class"], "auth");
    }

    #[test]
    fn render_json_filters_by_class() {
        let store = StatusStore::new(10);
        store.register_pair(key("a", "direct"), PairInfo::default());
        store.register_pair(key("b", "direct"), PairInfo::default());
        store.record(&key("a", "direct"), record(Class::GeoBlock, 403, 1));
        store.record(&key("b", "direct"), record(Class::Ok, 200, 1));
        let filter = StatusFilter {
            class: vec![Class::GeoBlock],
            ..StatusFilter::default()
        };

        let json: serde_json::Value = serde_json::from_str(&store.render_json(&filter)).unwrap();
        let pairs = json["pairs"].as_array().unwrap();
        assert_eq!(pairs.len(), 1);
        assert_eq!(pairs[0]["monitor"], "a");
    }

    #[test]
    fn register_pair_before_probe_has_null_class() {
        let store = StatusStore::new(10);
        store.register_pair(key("a", "direct"), PairInfo::default());
        let json: serde_json::Value =
            serde_json::from_str(&store.render_json(&StatusFilter::default())).unwrap();
        assert_eq!(json["pairs"][0]["class"], serde_json::Value::Null);
    }
}
