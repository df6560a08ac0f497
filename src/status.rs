//! Status: the latest verdict and a bounded history per (monitor, route) pair, served as JSON.
//!
//! Recent results are data, not log lines: each pair keeps a ring of its last verdicts, so an
//! operator can see an intermittent failure without searching logs. The store holds only text
//! that has already passed through redaction.
//!
//! Each entry also summarises its history window (counts by class, success ratio, class
//! changes and whether the pair is flapping), shows the egress its route was last seen
//! leaving from, and the document lists one diagnosis per monitor.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::RwLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::classify::{Class, Verdict};
use crate::config::DEFAULT_FLAP_THRESHOLD;
use crate::diagnose::{self, Cell, Diagnosis};
use crate::egress::Egress;

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
    /// Requests sent for this verdict: 1, plus one per retry.
    pub attempts: u32,
}

/// A route's egress as last seen, with when it was fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRecord {
    /// The egress.
    pub egress: Egress,
    /// When the trace was fetched.
    pub checked_at: SystemTime,
}

/// A summary of a pair's history window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    /// Records in the window.
    pub size: usize,
    /// Records by class; classes not seen are absent.
    pub counts: BTreeMap<&'static str, usize>,
    /// Share of `ok` records, rounded to three decimals; `None` for an empty window.
    pub success_ratio: Option<f64>,
    /// When the latest record whose class differs from the record before it finished.
    pub last_change_at: Option<String>,
    /// Times the class differs from the record before it, within the window.
    pub changes: usize,
    /// True when `changes` is above the flap threshold.
    pub flapping: bool,
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
    flap_threshold: AtomicUsize,
    pairs: RwLock<BTreeMap<PairKey, PairState>>,
    egress: RwLock<BTreeMap<String, EgressRecord>>,
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
            flap_threshold: AtomicUsize::new(DEFAULT_FLAP_THRESHOLD),
            pairs: RwLock::new(BTreeMap::new()),
            egress: RwLock::new(BTreeMap::new()),
        }
    }

    /// Sets how many class changes within the window a pair may have before it is flapping.
    pub fn set_flap_threshold(&self, threshold: usize) {
        self.flap_threshold.store(threshold, Ordering::Relaxed);
    }

    /// Stores a route's egress and returns the one it replaces, if any.
    pub fn record_egress(&self, route: &str, record: EgressRecord) -> Option<EgressRecord> {
        let mut egress = self
            .egress
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        egress.insert(route.to_owned(), record)
    }

    /// Forgets a route's egress (the route was removed or no longer has a trace URL).
    pub fn remove_egress(&self, route: &str) -> Option<EgressRecord> {
        let mut egress = self
            .egress
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        egress.remove(route)
    }

    /// Returns a route's last seen egress.
    pub fn egress(&self, route: &str) -> Option<EgressRecord> {
        let egress = self
            .egress
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        egress.get(route).cloned()
    }

    /// Diagnoses every monitor from the latest verdict of each of its pairs.
    pub fn diagnoses(&self) -> Vec<Diagnosis> {
        let pairs = self
            .pairs
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        let cells: Vec<Cell> = pairs
            .iter()
            .filter_map(|((monitor, route), state)| {
                let latest = state.history.back()?;
                Some(Cell {
                    monitor: monitor.clone(),
                    route: route.clone(),
                    class: latest.verdict.class,
                })
            })
            .collect();
        diagnose::diagnose(&cells, &self.egress_countries())
    }

    fn egress_countries(&self) -> BTreeMap<String, String> {
        let egress = self
            .egress
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        egress
            .iter()
            .map(|(route, record)| (route.clone(), record.egress.country.clone()))
            .collect()
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
    pub fn retain_pairs(&self, keep: &HashSet<PairKey>) -> Vec<PairKey> {
        let mut pairs = self
            .pairs
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        let dropped: Vec<PairKey> = pairs
            .keys()
            .filter(|key| !keep.contains(*key))
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
        // Only the latest record's evidence and body snippet are shown, so older records drop
        // them: with 100 records per pair they would otherwise be most of the memory.
        if let Some(last) = state.history.back_mut() {
            last.verdict.evidence = String::new();
            last.body_snippet = String::new();
        }
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

    /// Renders the status document for the pairs that pass the filter. Diagnoses always
    /// consider every pair, and only the `monitor` filter narrows their list.
    pub fn render_json(&self, filter: &StatusFilter) -> String {
        let diagnoses: Vec<DiagnosisEntry> = self
            .diagnoses()
            .into_iter()
            .filter(|diagnosis| {
                filter.monitor.is_empty() || filter.monitor.contains(&diagnosis.monitor)
            })
            .map(DiagnosisEntry::from)
            .collect();
        let egress = self
            .egress
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone();
        let threshold = self.flap_threshold.load(Ordering::Relaxed);
        let pairs = self
            .pairs
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        let entries: Vec<PairEntry<'_>> = pairs
            .iter()
            .filter(|(key, state)| filter.matches(key, state))
            .map(|(key, state)| PairEntry::new(key, state, egress.get(&key.1), threshold))
            .collect();
        let document = StatusDocument {
            generated_at: format_time(SystemTime::now()),
            diagnoses,
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
    diagnoses: Vec<DiagnosisEntry>,
    pairs: Vec<PairEntry<'a>>,
}

#[derive(Serialize)]
struct DiagnosisEntry {
    monitor: String,
    kind: &'static str,
    sentence: String,
}

impl From<Diagnosis> for DiagnosisEntry {
    fn from(diagnosis: Diagnosis) -> Self {
        DiagnosisEntry {
            monitor: diagnosis.monitor,
            kind: diagnosis.kind.as_str(),
            sentence: diagnosis.sentence,
        }
    }
}

#[derive(Serialize)]
struct EgressEntry {
    ip: String,
    country: String,
    colo: String,
    checked_at: String,
}

impl From<&EgressRecord> for EgressEntry {
    fn from(record: &EgressRecord) -> Self {
        EgressEntry {
            ip: record.egress.ip.to_string(),
            country: record.egress.country.clone(),
            colo: record.egress.colo.clone(),
            checked_at: format_time(record.checked_at),
        }
    }
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
    attempts: Option<u32>,
    skipped_ticks: u64,
    egress: Option<EgressEntry>,
    window: Window,
    history: Vec<HistoryEntry<'a>>,
}

#[derive(Serialize)]
struct HistoryEntry<'a> {
    class: &'static str,
    reason: &'a str,
    http_status: u16,
    duration_seconds: f64,
    checked_at: String,
    attempts: u32,
}

impl<'a> PairEntry<'a> {
    fn new(
        key: &'a PairKey,
        state: &'a PairState,
        egress: Option<&EgressRecord>,
        flap_threshold: usize,
    ) -> Self {
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
            attempts: latest.map(|record| record.attempts),
            skipped_ticks: state.skipped_ticks,
            egress: egress.map(EgressEntry::from),
            window: summarize_window(&state.history, flap_threshold),
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
                    attempts: record.attempts,
                })
                .collect(),
        }
    }
}

/// Summarises a history window, oldest record first; a pair is flapping when its class
/// changed more than `flap_threshold` times within the window.
pub fn summarize_window(history: &VecDeque<Record>, flap_threshold: usize) -> Window {
    let mut counts = BTreeMap::new();
    for record in history {
        *counts.entry(record.verdict.class.as_str()).or_insert(0) += 1;
    }

    let mut changes = 0;
    let mut last_change_at = None;
    for (before, after) in history.iter().zip(history.iter().skip(1)) {
        if before.verdict.class != after.verdict.class {
            changes += 1;
            last_change_at = Some(after.checked_at);
        }
    }

    let ok = counts.get(Class::Ok.as_str()).copied().unwrap_or(0);
    let success_ratio =
        (!history.is_empty()).then(|| (ok as f64 / history.len() as f64 * 1000.0).round() / 1000.0);
    Window {
        size: history.len(),
        counts,
        success_ratio,
        last_change_at: last_change_at.map(format_time),
        changes,
        flapping: changes > flap_threshold,
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
            attempts: 1,
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

    fn history(classes: &[Class]) -> VecDeque<Record> {
        classes
            .iter()
            .enumerate()
            .map(|(index, class)| record(*class, 200, index as u64 + 1))
            .collect()
    }

    #[test]
    fn summarize_window_counts_and_changes() {
        use Class::{GeoBlock, Ok};
        let window = summarize_window(&history(&[Ok, Ok, GeoBlock, Ok, GeoBlock]), 5);
        assert_eq!(window.size, 5);
        assert_eq!(window.counts.get("ok"), Some(&3));
        assert_eq!(window.counts.get("geo_block"), Some(&2));
        assert_eq!(window.counts.len(), 2);
        assert_eq!(window.success_ratio, Some(0.6));
        assert_eq!(window.changes, 3);
        assert_eq!(
            window.last_change_at.as_deref(),
            Some("1970-01-01T00:00:05.000Z")
        );
        assert!(!window.flapping);
    }

    #[test]
    fn summarize_window_flaps_above_threshold() {
        use Class::{GeoBlock, Ok};
        let classes = [Ok, GeoBlock, Ok, GeoBlock];
        assert!(!summarize_window(&history(&classes), 3).flapping);
        assert!(summarize_window(&history(&classes), 2).flapping);
    }

    #[test]
    fn summarize_window_empty_and_steady() {
        let empty = summarize_window(&VecDeque::new(), 5);
        assert_eq!(empty.size, 0);
        assert_eq!(empty.success_ratio, None);
        assert_eq!(empty.last_change_at, None);
        assert_eq!(empty.changes, 0);

        let steady = summarize_window(&history(&[Class::Auth, Class::Auth]), 0);
        assert_eq!(steady.success_ratio, Some(0.0));
        assert_eq!(steady.changes, 0);
        assert!(!steady.flapping);
    }

    #[test]
    fn render_json_shows_window_egress_and_diagnoses() {
        let store = StatusStore::new(10);
        store.set_flap_threshold(1);
        store.register_pair(key("api", "direct"), PairInfo::default());
        store.register_pair(key("api", "hk"), PairInfo::default());
        store.record(&key("api", "direct"), record(Class::Ok, 200, 1));
        for (at, class) in [
            (1, Class::Ok),
            (2, Class::GeoBlock),
            (3, Class::Ok),
            (4, Class::GeoBlock),
        ] {
            store.record(&key("api", "hk"), record(class, 403, at));
        }
        let egress = Egress {
            ip: "203.0.113.7".parse().unwrap(),
            country: "HK".to_owned(),
            colo: "HKG".to_owned(),
        };
        let checked_at = UNIX_EPOCH + Duration::from_secs(9);
        store.record_egress("hk", EgressRecord { egress, checked_at });

        let json: serde_json::Value =
            serde_json::from_str(&store.render_json(&StatusFilter::default())).unwrap();
        assert_eq!(
            json["diagnoses"],
            serde_json::json!([{
                "monitor": "api",
                "kind": "geo_partial",
                "sentence": "geo_block on hk (egress HK); ok on direct",
            }])
        );
        let direct = &json["pairs"][0];
        assert_eq!(direct["egress"], serde_json::Value::Null);
        assert_eq!(direct["attempts"], 1);
        let hk = &json["pairs"][1];
        assert_eq!(
            hk["egress"],
            serde_json::json!({
                "ip": "203.0.113.7",
                "country": "HK",
                "colo": "HKG",
                "checked_at": "1970-01-01T00:00:09.000Z",
            })
        );
        assert_eq!(
            hk["window"],
            serde_json::json!({
                "size": 4,
                "counts": {"geo_block": 2, "ok": 2},
                "success_ratio": 0.5,
                "last_change_at": "1970-01-01T00:00:04.000Z",
                "changes": 3,
                "flapping": true,
            })
        );
    }
}
