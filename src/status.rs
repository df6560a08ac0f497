//! Status: the latest verdict and a bounded history per (monitor, route) pair, served as JSON.
//!
//! Recent results are data, not log lines: each pair keeps a ring of its last verdicts, so an
//! operator can see an intermittent failure without searching logs. The store holds only text
//! that has already passed through redaction.
//!
//! Only a pair's latest record is kept in full (evidence, body snippet, body size). The ring
//! keeps a 16-byte [`CompactRecord`] per probe, whose reason is an index into a table of
//! reason strings shared by the whole store, so 10,000 pairs with 100 records each take about
//! 16 MB instead of over 130 MB.
//!
//! Each entry also summarises its history window (counts by class, success ratio, class
//! changes and whether the pair is flapping), shows the egress its route was last seen
//! leaving from, and the document lists one diagnosis per monitor. The document is written
//! in chunks (see [`crate::chunk`]), a batch of pairs per lock.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io;
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::chunk::{self, ChunkWriter, Stopped};
use crate::classify::{Class, Verdict};
use crate::config::DEFAULT_FLAP_THRESHOLD;
use crate::diagnose::{self, Cell, Diagnosis};
use crate::egress::Egress;

/// History entries listed per pair when the request does not set `history=`.
pub const DEFAULT_HISTORY_LISTED: usize = 10;

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

/// One history entry as the ring stores it: what `/status` lists per history entry, in 16
/// bytes. At 10,000 pairs with 100 entries each, the rings take 16 MB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactRecord {
    /// Low 32 bits of the finish time in milliseconds since the Unix epoch.
    checked_at_low: u32,
    /// Time from start to verdict, rounded to milliseconds. Saturates at about 49 days.
    duration_ms: u32,
    /// High 16 bits of the finish time; 48 bits of milliseconds reach the year 10889.
    checked_at_high: u16,
    /// Index of the verdict's reason in the store's reason table.
    reason: u16,
    /// The HTTP status, 0 when there was no response.
    http_status: u16,
    /// Index of the class in [`Class::ALL`].
    class: u8,
    /// Requests sent for the verdict. Saturates at 255.
    attempts: u8,
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
    /// The latest record in full, evidence and body snippet included.
    latest: Option<Record>,
    /// The last `history_size` records, the latest included, oldest first.
    history: VecDeque<CompactRecord>,
    skipped_ticks: u64,
}

/// The pairs and the reason table, under one lock because a record needs both.
#[derive(Debug, Default)]
struct Pairs {
    by_key: BTreeMap<PairKey, PairState>,
    reasons: ReasonTable,
}

/// Reason strings by index. Reasons come from the built-in signature table and the names of
/// user rules, so the table stays small. It only grows, by one string per reason first seen.
#[derive(Debug, Default)]
struct ReasonTable {
    names: Vec<Cow<'static, str>>,
    indexes: HashMap<Cow<'static, str>, u16>,
}

/// Thread-safe store of every pair's recent results.
#[derive(Debug)]
pub struct StatusStore {
    history_size: AtomicUsize,
    flap_threshold: AtomicUsize,
    pairs: RwLock<Pairs>,
    egress: RwLock<BTreeMap<String, EgressRecord>>,
}

/// The query of `GET /status`: filters that choose pairs, and how much history to list.
/// An empty filter list matches everything; a filter given several times matches any of its
/// values.
#[derive(Debug, Clone)]
pub struct StatusFilter {
    /// Only these monitors.
    pub monitor: Vec<String>,
    /// Only these routes.
    pub route: Vec<String>,
    /// Only pairs whose last class is one of these.
    pub class: Vec<Class>,
    /// History entries listed per pair, newest first; [`DEFAULT_HISTORY_LISTED`] by default.
    /// The window summary covers the whole ring whatever this is.
    pub history: usize,
}

impl Default for StatusFilter {
    fn default() -> Self {
        StatusFilter {
            monitor: Vec::new(),
            route: Vec::new(),
            class: Vec::new(),
            history: DEFAULT_HISTORY_LISTED,
        }
    }
}

impl CompactRecord {
    fn new(record: &Record, reason: u16) -> Self {
        let checked_at_ms = record
            .checked_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
            })
            .min(MAX_CHECKED_AT_MS);
        CompactRecord {
            checked_at_low: (checked_at_ms & u64::from(u32::MAX)) as u32,
            checked_at_high: (checked_at_ms >> 32) as u16,
            // The same rounding as `round_millis`, so the listed duration does not change.
            // A float to integer `as` cast saturates.
            duration_ms: (record.duration.as_secs_f64() * 1000.0).round() as u32,
            reason,
            http_status: record.http_status,
            class: class_index(record.verdict.class),
            attempts: u8::try_from(record.attempts).unwrap_or(u8::MAX),
        }
    }

    fn class(&self) -> Class {
        Class::ALL[usize::from(self.class)]
    }

    fn checked_at_ms(&self) -> u64 {
        (u64::from(self.checked_at_high) << 32) | u64::from(self.checked_at_low)
    }

    fn checked_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.checked_at_ms())
    }
}

/// Latest finish time a [`CompactRecord`] can store: 48 bits of milliseconds.
const MAX_CHECKED_AT_MS: u64 = (1 << 48) - 1;

fn class_index(class: Class) -> u8 {
    let index = Class::ALL
        .iter()
        .position(|candidate| *candidate == class)
        .expect("Class::ALL lists every class");
    u8::try_from(index).expect("fewer than 256 classes")
}

impl ReasonTable {
    /// Returns the index of `reason`, adding it when it is new.
    #[expect(
        clippy::ptr_arg,
        reason = "a new reason is stored as a clone of the Cow, which keeps a built-in reason borrowed"
    )]
    fn intern(&mut self, reason: &Cow<'static, str>) -> u16 {
        if let Some(index) = self.indexes.get(reason.as_ref()) {
            return *index;
        }
        // NOTE: only reloads that keep renaming user rules could fill the table. A reason
        // first seen after that is listed with the last name the table took.
        let Ok(index) = u16::try_from(self.names.len()) else {
            return u16::MAX;
        };
        self.names.push(reason.clone());
        self.indexes.insert(reason.clone(), index);
        index
    }

    fn name(&self, index: u16) -> &str {
        self.names
            .get(index as usize)
            .map_or("", |name| name.as_ref())
    }
}

impl StatusStore {
    /// Creates an empty store that keeps `history_size` records per pair (at least one).
    pub fn new(history_size: usize) -> Self {
        StatusStore {
            history_size: AtomicUsize::new(history_size.max(1)),
            flap_threshold: AtomicUsize::new(DEFAULT_FLAP_THRESHOLD),
            pairs: RwLock::new(Pairs::default()),
            egress: RwLock::new(BTreeMap::new()),
        }
    }

    fn read_pairs(&self) -> RwLockReadGuard<'_, Pairs> {
        self.pairs
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn write_pairs(&self) -> RwLockWriteGuard<'_, Pairs> {
        self.pairs
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Sets how many records each pair keeps (at least one). A ring resizes at its next
    /// record: a smaller size drops its oldest records, a larger one keeps them all.
    pub fn set_history_size(&self, size: usize) {
        self.history_size.store(size.max(1), Ordering::Relaxed);
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
        let pairs = self.read_pairs();
        let cells: Vec<Cell> = pairs
            .by_key
            .iter()
            .filter_map(|((monitor, route), state)| {
                let latest = state.latest.as_ref()?;
                Some(Cell {
                    monitor: monitor.clone(),
                    route: route.clone(),
                    class: latest.verdict.class,
                })
            })
            .collect();
        drop(pairs);
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
        let mut pairs = self.write_pairs();
        match pairs.by_key.get_mut(&key) {
            Some(state) => state.info = info,
            None => {
                pairs.by_key.insert(
                    key,
                    PairState {
                        info,
                        latest: None,
                        history: VecDeque::new(),
                        skipped_ticks: 0,
                    },
                );
            }
        }
    }

    /// Drops every pair not in `keep`, returning the dropped keys.
    pub fn retain_pairs(&self, keep: &HashSet<PairKey>) -> Vec<PairKey> {
        let mut pairs = self.write_pairs();
        let dropped: Vec<PairKey> = pairs
            .by_key
            .keys()
            .filter(|key| !keep.contains(*key))
            .cloned()
            .collect();
        for key in &dropped {
            pairs.by_key.remove(key);
        }
        dropped
    }

    /// Appends a record and returns the class of the record before it, if any. The record is
    /// kept in full until the next one arrives, and as a [`CompactRecord`] in the ring.
    pub fn record(&self, key: &PairKey, record: Record) -> Option<Class> {
        let mut pairs = self.write_pairs();
        let Pairs { by_key, reasons } = &mut *pairs;
        let state = by_key.get_mut(key)?;
        let previous = state.latest.as_ref().map(|latest| latest.verdict.class);

        let compact = CompactRecord::new(&record, reasons.intern(&record.verdict.reason));
        let size = self.history_size.load(Ordering::Relaxed);
        while state.history.len() >= size {
            state.history.pop_front();
        }
        // One exact allocation per pair: growing by doubling would leave up to half the ring
        // unused. A reload that changed the size resizes the ring at its next record.
        if state.history.capacity() < size {
            state.history.reserve_exact(size - state.history.len());
        } else if state.history.capacity() > size {
            state.history.shrink_to(size);
        }
        state.history.push_back(compact);
        state.latest = Some(record);
        previous
    }

    /// Counts a tick skipped because the pair was still running.
    pub fn record_skipped_tick(&self, key: &PairKey) {
        let mut pairs = self.write_pairs();
        if let Some(state) = pairs.by_key.get_mut(key) {
            state.skipped_ticks += 1;
        }
    }

    /// Returns the latest record of a pair.
    pub fn latest(&self, key: &PairKey) -> Option<Record> {
        let pairs = self.read_pairs();
        pairs.by_key.get(key).and_then(|state| state.latest.clone())
    }

    /// Renders the whole status document into one string (see [`StatusStore::write_json`]).
    pub fn render_json(&self, filter: &StatusFilter) -> String {
        chunk::collect_string(|send| self.write_json(filter, send))
    }

    /// Writes the status document for the pairs that pass the filter, handing each chunk of
    /// about [`chunk::CHUNK_BYTES`] to `send`. Diagnoses always consider every pair, and only
    /// the `monitor` filter narrows their list.
    ///
    /// The pair map is read-locked for one batch of pairs at a time, never while `send`
    /// runs, so probes keep recording during a slow send. A pair added or removed between
    /// two batches is listed or left out as the map is when its batch is written.
    ///
    /// # Errors
    ///
    /// Returns [`Stopped`] as soon as `send` does, and writes nothing more.
    pub fn write_json(
        &self,
        filter: &StatusFilter,
        send: impl FnMut(Bytes) -> Result<(), Stopped>,
    ) -> Result<(), Stopped> {
        let mut out = ChunkWriter::new(send);
        let buffer = out.buffer();
        buffer.extend_from_slice(b"{\n  \"generated_at\": ");
        write_json_value(buffer, &format_time(SystemTime::now()));

        buffer.extend_from_slice(b",\n  \"diagnoses\": ");
        let mut list = JsonList::start(buffer);
        let diagnoses = self.diagnoses().into_iter().filter(|diagnosis| {
            filter.monitor.is_empty() || filter.monitor.contains(&diagnosis.monitor)
        });
        for diagnosis in diagnoses {
            list.push(out.buffer(), &DiagnosisEntry::from(diagnosis));
            out.send_if_full()?;
        }
        list.end(out.buffer());

        out.buffer().extend_from_slice(b",\n  \"pairs\": ");
        let mut list = JsonList::start(out.buffer());
        let egress = self
            .egress
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone();
        let mut after: Option<PairKey> = None;
        loop {
            after = self.write_pair_batch(filter, &egress, after.as_ref(), &mut list, &mut out);
            out.send_if_full()?;
            if after.is_none() {
                break;
            }
        }
        list.end(out.buffer());
        out.buffer().extend_from_slice(b"\n}");
        out.finish()
    }

    /// Writes the pairs after `after` (from the first when `None`) that pass the filter,
    /// until the buffer is full. Returns the last pair written when the buffer filled up, or
    /// `None` when no pair is left.
    fn write_pair_batch<F>(
        &self,
        filter: &StatusFilter,
        egress: &BTreeMap<String, EgressRecord>,
        after: Option<&PairKey>,
        list: &mut JsonList,
        out: &mut ChunkWriter<F>,
    ) -> Option<PairKey>
    where
        F: FnMut(Bytes) -> Result<(), Stopped>,
    {
        let threshold = self.flap_threshold.load(Ordering::Relaxed);
        let pairs = self.read_pairs();
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let batch = pairs
            .by_key
            .range::<PairKey, _>((start, Bound::Unbounded))
            .filter(|(key, state)| filter.matches(key, state));
        for (key, state) in batch {
            let route_egress = egress.get(&key.1);
            let entry = PairEntry::new(
                (key, state),
                &pairs.reasons,
                filter.history,
                route_egress,
                threshold,
            );
            list.push(out.buffer(), &entry);
            if out.is_full() {
                return Some(key.clone());
            }
        }
        None
    }
}

impl StatusFilter {
    fn matches(&self, key: &PairKey, state: &PairState) -> bool {
        let monitor_ok = self.monitor.is_empty() || self.monitor.contains(&key.0);
        let route_ok = self.route.is_empty() || self.route.contains(&key.1);
        let last_class = state.latest.as_ref().map(|latest| latest.verdict.class);
        let class_ok =
            self.class.is_empty() || last_class.is_some_and(|class| self.class.contains(&class));
        monitor_ok && route_ok && class_ok
    }
}

/// Writes the items of a JSON array at the document's second level, indented as serde_json's
/// pretty printer indents them inside the whole document.
struct JsonList {
    empty: bool,
}

impl JsonList {
    fn start(buffer: &mut Vec<u8>) -> Self {
        buffer.push(b'[');
        JsonList { empty: true }
    }

    fn push(&mut self, buffer: &mut Vec<u8>, item: &impl Serialize) {
        buffer.extend_from_slice(if self.empty { b"\n    " } else { b",\n    " });
        self.empty = false;
        serde_json::to_writer_pretty(Indented(buffer), item)
            .expect("status entries serialize to JSON");
    }

    fn end(self, buffer: &mut Vec<u8>) {
        if !self.empty {
            buffer.extend_from_slice(b"\n  ");
        }
        buffer.push(b']');
    }
}

/// Indents every line after the first by two levels. A JSON string never contains a raw
/// newline, so every newline that serde_json writes is a line break of its layout.
struct Indented<'a>(&'a mut Vec<u8>);

impl io::Write for Indented<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        for (index, line) in bytes.split(|byte| *byte == b'\n').enumerate() {
            if index > 0 {
                self.0.extend_from_slice(b"\n    ");
            }
            self.0.extend_from_slice(line);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn write_json_value(buffer: &mut Vec<u8>, value: &impl Serialize) {
    serde_json::to_writer(buffer, value).expect("status values serialize to JSON");
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
    /// The pair's latest record, the summary of its whole ring and its `listed` newest
    /// history entries, newest first.
    fn new(
        (key, state): (&'a PairKey, &'a PairState),
        reasons: &'a ReasonTable,
        listed: usize,
        egress: Option<&EgressRecord>,
        flap_threshold: usize,
    ) -> Self {
        let latest = state.latest.as_ref();
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
                .take(listed)
                .map(|record| HistoryEntry {
                    class: record.class().as_str(),
                    reason: reasons.name(record.reason),
                    http_status: record.http_status,
                    duration_seconds: f64::from(record.duration_ms) / 1000.0,
                    checked_at: format_time(record.checked_at()),
                    attempts: u32::from(record.attempts),
                })
                .collect(),
        }
    }
}

/// Summarises a history window, oldest record first; a pair is flapping when its class
/// changed more than `flap_threshold` times within the window.
fn summarize_window(history: &VecDeque<CompactRecord>, flap_threshold: usize) -> Window {
    let mut counts = BTreeMap::new();
    for record in history {
        *counts.entry(record.class().as_str()).or_insert(0) += 1;
    }

    let mut changes = 0;
    let mut last_change_at = None;
    for (before, after) in history.iter().zip(history.iter().skip(1)) {
        if before.class != after.class {
            changes += 1;
            last_change_at = Some(after.checked_at());
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

    fn history(classes: &[Class]) -> VecDeque<CompactRecord> {
        classes
            .iter()
            .enumerate()
            .map(|(index, class)| CompactRecord::new(&record(*class, 200, index as u64 + 1), 0))
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

    /// Builds the store behind tests/fixtures/status/document.json: a pair with a full ring
    /// of three, a pair with one record and a user rule's reason, and a pair never probed.
    fn fixture_store() -> StatusStore {
        let store = StatusStore::new(3);
        let info = PairInfo {
            url: "https://api.example.com/v1/models".to_owned(),
            proxy: Some("socks5h://user@127.0.0.1:1080".to_owned()),
            schedule: "every 30s".to_owned(),
        };
        store.register_pair(key("api", "direct"), PairInfo::default());
        store.register_pair(key("api", "hk"), info);
        store.register_pair(key("idle", "direct"), PairInfo::default());

        for (at, class, reason) in [
            (1, Class::Ok, "ok"),
            (2, Class::GeoBlock, "openai.unsupported_region"),
            (3, Class::Ok, "ok"),
            (4, Class::GeoBlock, "openai.unsupported_region"),
        ] {
            let record = Record {
                verdict: Verdict {
                    class,
                    reason: Cow::Borrowed(reason),
                    evidence: format!("HTTP {at}"),
                },
                http_status: 403,
                duration: Duration::from_micros(1_234_567),
                checked_at: UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456 + at),
                body_snippet: "{\"error\":\"a\\nb\"}".to_owned(),
                body_bytes: 17,
                body_truncated: at == 4,
                attempts: at as u32,
            };
            store.record(&key("api", "hk"), record);
        }

        let direct = Record {
            verdict: Verdict {
                class: Class::Ok,
                reason: Cow::Owned("user-rule".to_owned()),
                evidence: "HTTP 200".to_owned(),
            },
            http_status: 200,
            duration: Duration::from_millis(42),
            checked_at: UNIX_EPOCH + Duration::from_secs(9),
            body_snippet: String::new(),
            body_bytes: 0,
            body_truncated: false,
            attempts: 1,
        };
        store.record(&key("api", "direct"), direct);

        let egress = Egress {
            ip: "203.0.113.7".parse().unwrap(),
            country: "HK".to_owned(),
            colo: "HKG".to_owned(),
        };
        let checked_at = UNIX_EPOCH + Duration::from_secs(5);
        store.record_egress("hk", EgressRecord { egress, checked_at });
        store
    }

    /// Replaces the value of `generated_at`, the one field that depends on the clock.
    fn without_generated_at(document: &str) -> String {
        let start = document.find("\"generated_at\": \"").unwrap() + 17;
        let end = start + document[start..].find('"').unwrap();
        format!("{}GENERATED_AT{}", &document[..start], &document[end..])
    }

    #[test]
    fn render_json_matches_document_fixture() {
        // The fixture is the output of serde_json::to_string_pretty over the whole document,
        // recorded before the document was written in chunks.
        let expected = include_str!("../tests/fixtures/status/document.json");
        let document = fixture_store().render_json(&StatusFilter::default());
        assert_eq!(without_generated_at(&document), expected);
    }

    #[test]
    fn render_json_empty_store_matches_fixture() {
        let expected = include_str!("../tests/fixtures/status/empty.json");
        let document = StatusStore::new(3).render_json(&StatusFilter::default());
        assert_eq!(without_generated_at(&document), expected);
    }

    #[test]
    fn compact_record_is_16_bytes() {
        assert_eq!(std::mem::size_of::<CompactRecord>(), 16);
    }

    #[test]
    fn compact_record_keeps_listed_values() {
        let mut full = record(Class::RateLimited, 429, 7);
        full.duration = Duration::from_micros(1_500);
        full.checked_at = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_987_654_321);
        full.attempts = 3;
        let compact = CompactRecord::new(&full, 5);
        assert_eq!(compact.class(), Class::RateLimited);
        assert_eq!(compact.http_status, 429);
        assert_eq!(compact.duration_ms, 2);
        assert_eq!(compact.reason, 5);
        assert_eq!(compact.attempts, 3);
        assert_eq!(
            format_time(compact.checked_at()),
            format_time(full.checked_at)
        );
        assert_eq!(
            format_time(compact.checked_at()),
            "2023-11-14T22:13:20.987Z"
        );
    }

    #[test]
    fn compact_record_saturates_attempts_and_duration() {
        let mut full = record(Class::Timeout, 0, 1);
        full.attempts = 300;
        full.duration = Duration::from_secs(60 * 86_400);
        let compact = CompactRecord::new(&full, 0);
        assert_eq!(compact.attempts, u8::MAX);
        assert_eq!(compact.duration_ms, u32::MAX);
    }

    #[test]
    fn compact_record_saturates_time_at_48_bits() {
        let mut full = record(Class::Ok, 200, 1);
        full.checked_at = UNIX_EPOCH + Duration::from_millis(1 << 50);
        let compact = CompactRecord::new(&full, 0);
        assert_eq!(compact.checked_at_ms(), (1 << 48) - 1);
    }

    #[test]
    fn reason_table_full_reuses_last_index() {
        let mut table = ReasonTable::default();
        for index in 0..=u32::from(u16::MAX) {
            table.intern(&Cow::Owned(format!("rule-{index}")));
        }
        assert_eq!(table.intern(&Cow::Borrowed("rule-7")), 7);
        assert_eq!(table.intern(&Cow::Borrowed("one-too-many")), u16::MAX);
        assert_eq!(table.name(u16::MAX), "rule-65535");
    }

    #[test]
    fn record_interns_each_reason_once() {
        let store = StatusStore::new(5);
        store.register_pair(key("a", "direct"), PairInfo::default());
        store.register_pair(key("b", "direct"), PairInfo::default());
        for at in 1..=3 {
            store.record(&key("a", "direct"), record(Class::Ok, 200, at));
            store.record(&key("b", "direct"), record(Class::Ok, 200, at));
        }
        let mut geo = record(Class::GeoBlock, 403, 4);
        geo.verdict.reason = Cow::Owned("corp-block".to_owned());
        store.record(&key("b", "direct"), geo);

        let pairs = store.read_pairs();
        assert_eq!(pairs.reasons.names, ["test.reason", "corp-block"]);
        let ring = &pairs.by_key[&key("b", "direct")].history;
        let reasons: Vec<u16> = ring.iter().map(|entry| entry.reason).collect();
        assert_eq!(reasons, [0, 0, 0, 1]);
    }

    #[test]
    fn set_history_size_resizes_ring_at_next_record() {
        let store = StatusStore::new(5);
        let pair = key("a", "direct");
        store.register_pair(pair.clone(), PairInfo::default());
        for at in 1..=5 {
            store.record(&pair, record(Class::Ok, 200, at));
        }
        let times = |store: &StatusStore| -> (Vec<u64>, usize) {
            let pairs = store.read_pairs();
            let ring = &pairs.by_key[&pair].history;
            let times = ring
                .iter()
                .map(|entry| entry.checked_at_ms() / 1000)
                .collect();
            (times, ring.capacity())
        };

        store.set_history_size(2);
        store.record(&pair, record(Class::Ok, 200, 6));
        assert_eq!(times(&store), (vec![5, 6], 2));

        store.set_history_size(4);
        store.record(&pair, record(Class::Ok, 200, 7));
        store.record(&pair, record(Class::Ok, 200, 8));
        store.record(&pair, record(Class::Ok, 200, 9));
        assert_eq!(times(&store), (vec![6, 7, 8, 9], 4));
    }

    #[test]
    fn record_allocates_ring_once_at_history_size() {
        let store = StatusStore::new(100);
        store.register_pair(key("a", "direct"), PairInfo::default());
        for at in 1..=150 {
            store.record(&key("a", "direct"), record(Class::Ok, 200, at));
        }
        let pairs = store.read_pairs();
        let state = &pairs.by_key[&key("a", "direct")];
        assert_eq!(state.history.len(), 100);
        assert_eq!(state.history.capacity(), 100);
        assert_eq!(state.history.front().unwrap().checked_at_ms(), 51_000);
        assert_eq!(state.history.back().unwrap().checked_at_ms(), 150_000);
    }

    #[test]
    fn record_keeps_evidence_of_latest_only() {
        let store = StatusStore::new(5);
        store.register_pair(key("a", "direct"), PairInfo::default());
        store.record(&key("a", "direct"), record(Class::Ok, 200, 1));
        store.record(&key("a", "direct"), record(Class::Auth, 401, 2));
        let latest = store.latest(&key("a", "direct")).unwrap();
        assert_eq!(latest.verdict.evidence, "HTTP 401");
        assert_eq!(latest.body_snippet, "{}");
        assert_eq!(latest.body_bytes, 2);
    }

    /// Returns the `checked_at` of each listed history entry and the window of the first pair.
    fn listed_times(store: &StatusStore, history: usize) -> (Vec<String>, serde_json::Value) {
        let filter = StatusFilter {
            history,
            ..StatusFilter::default()
        };
        let json: serde_json::Value = serde_json::from_str(&store.render_json(&filter)).unwrap();
        let times = json["pairs"][0]["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| entry["checked_at"].as_str().unwrap().to_owned())
            .collect();
        (times, json["pairs"][0]["window"].clone())
    }

    #[test]
    fn render_json_lists_newest_history_up_to_limit() {
        let store = StatusStore::new(20);
        store.register_pair(key("a", "direct"), PairInfo::default());
        for at in 1..=15 {
            let class = if at % 5 == 0 { Class::Auth } else { Class::Ok };
            store.record(&key("a", "direct"), record(class, 200, at));
        }

        let (default, window) = listed_times(&store, DEFAULT_HISTORY_LISTED);
        assert_eq!(default.len(), 10);
        assert_eq!(default[0], "1970-01-01T00:00:15.000Z");
        assert_eq!(default[9], "1970-01-01T00:00:06.000Z");
        assert_eq!(window["size"], 15);
        assert_eq!(window["changes"], 5);
        assert_eq!(window["counts"], serde_json::json!({"auth": 3, "ok": 12}));

        let (two, _) = listed_times(&store, 2);
        assert_eq!(
            two,
            ["1970-01-01T00:00:15.000Z", "1970-01-01T00:00:14.000Z"]
        );

        let (none, window) = listed_times(&store, 0);
        assert!(none.is_empty());
        assert_eq!(window["size"], 15);

        let (all, _) = listed_times(&store, usize::MAX);
        assert_eq!(all.len(), 15);
        assert_eq!(all[14], "1970-01-01T00:00:01.000Z");
    }

    #[test]
    fn write_json_sends_chunks_that_join_to_document() {
        let store = StatusStore::new(10);
        for index in 0..300 {
            let pair = key(&format!("monitor-{index:03}"), "direct");
            store.register_pair(pair.clone(), PairInfo::default());
            for at in 1..=10 {
                store.record(&pair, record(Class::Ok, 200, at));
            }
        }
        let mut chunks: Vec<Bytes> = Vec::new();
        store
            .write_json(&StatusFilter::default(), |chunk| {
                chunks.push(chunk);
                Ok(())
            })
            .unwrap();

        assert!(chunks.len() > 2, "{} chunks", chunks.len());
        for chunk in &chunks[..chunks.len() - 1] {
            assert!(chunk.len() >= chunk::CHUNK_BYTES, "{}", chunk.len());
            assert!(chunk.len() < chunk::CHUNK_BYTES + 8192, "{}", chunk.len());
        }
        let joined: Vec<u8> = chunks.concat();
        let json: serde_json::Value = serde_json::from_slice(&joined).unwrap();
        let pairs = json["pairs"].as_array().unwrap();
        assert_eq!(pairs.len(), 300);
        assert_eq!(pairs[299]["monitor"], "monitor-299");
    }

    #[test]
    fn write_json_stops_when_send_stops() {
        let store = StatusStore::new(10);
        for index in 0..300 {
            let pair = key(&format!("monitor-{index:03}"), "direct");
            store.register_pair(pair.clone(), PairInfo::default());
            store.record(&pair, record(Class::Ok, 200, 1));
        }
        let mut calls = 0;
        let result = store.write_json(&StatusFilter::default(), |_chunk| {
            calls += 1;
            Err(Stopped)
        });
        assert_eq!(result, Err(Stopped));
        assert_eq!(calls, 1);
    }
}
