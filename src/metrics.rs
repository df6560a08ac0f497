//! Metrics: every `routewatch_*` series, registered in one place.
//!
//! Labels carry configured names (monitor, route) and closed enums (class) only: never URLs,
//! error text, keys or status codes. Every series that an alert's `rate()` reads is created at
//! zero when a pair is registered, so it exists from the first scrape.
//!
//! The per-pair families (about 40 series per pair) are stored in plain structs and written
//! by [`Metrics::write_chunks`] directly, in the text that the prometheus crate's `TextEncoder`
//! writes: families sorted by name, series sorted by label values, labels sorted by name.
//! With 10,000 pairs, gathering them through the crate's registry copied every series into
//! protobuf structs on each scrape. The diagnosis family (seven series per monitor) is kept as
//! one kind per monitor and written the same way: as prometheus gauges it took 33 MB at
//! 10,000 monitors. The few global families stay in a prometheus `Registry`.
//!
//! The exposition is written in chunks of about 64 KiB (see [`crate::chunk`]), so at 10,000
//! pairs (about 37 MB of text) no copy of it exists whole in memory.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::ops::Bound;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::chunk::{self, ChunkWriter, Stopped};
use crate::classify::{Class, Verdict};
use crate::diagnose::{Diagnosis, DiagnosisKind};
use crate::egress::Egress;
use crate::shard::Shard;

/// Bucket bounds of the probe duration histogram, in seconds: from a fast loopback response to
/// the longest sensible timeout.
const DURATION_BUCKETS: [f64; 9] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Bucket bounds of the schedule lag histogram, in seconds. Bounds at 25, 75 and 100 ms let a
/// p99 target of 100 ms be checked without interpolating across a 50 ms wide bucket.
const LAG_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// The registry, the per-pair series and every metric family of the service.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pairs: Arc<PairSeries>,
    schedule_lag: Histogram,
    reload_successful: Gauge,
    reload_success_timestamp: Gauge,
    reloads_failed: IntCounter,
    egress_info: GaugeVec,
    egress_changes: IntCounterVec,
    diagnoses: Arc<RwLock<BTreeMap<String, DiagnosisKind>>>,
    shard_info: IntGaugeVec,
}

/// The series of every pair, by monitor and then route, so iteration follows label order.
///
/// A monitor's routes are a short sorted `Vec`, because most monitors have one to a few routes.
/// An inner `BTreeMap` allocates a node of eleven entries per monitor, about 3.4 KiB each.
#[derive(Default)]
struct PairSeries {
    monitors: RwLock<PairMap>,
}

/// Route name and series of each route of a monitor, sorted by route name.
type RouteEntries = Vec<(String, PairEntry)>;

type PairMap = BTreeMap<String, RouteEntries>;

struct PairEntry {
    /// `monitor="...",route="..."`, escaped once at registration.
    labels: String,
    values: Mutex<PairValues>,
}

/// Current values of one pair's series.
#[derive(Debug, Clone, Copy, Default)]
struct PairValues {
    last_class: Option<Class>,
    probes: [u64; Class::ALL.len()],
    /// Observations per duration bucket, not cumulative. Those above the last bound are only in
    /// `duration_count`.
    duration_buckets: [u64; DURATION_BUCKETS.len()],
    duration_sum: f64,
    duration_count: u64,
    http_status: u16,
    last_run: f64,
    interval: f64,
    ticks: u64,
    ticks_skipped: u64,
    panics: u64,
    attempts: u64,
}

/// The per-pair families, in the order of [`PAIR_FAMILIES`].
#[derive(Debug, Clone, Copy)]
enum PairFamily {
    Attempts,
    Class,
    Duration,
    HttpStatus,
    Interval,
    LastRun,
    Panics,
    Success,
    ProbesTotal,
    Ticks,
    TicksSkipped,
}

/// Name, help, type and family of each per-pair metric.
const PAIR_FAMILIES: [(&str, &str, &str, PairFamily); 11] = [
    (
        "routewatch_probe_attempts_total",
        "Requests sent by probes, retries included.",
        "counter",
        PairFamily::Attempts,
    ),
    (
        "routewatch_ticks_total",
        "Schedule ticks that reached the pair, run or skipped. Every tick ends as a probe, a skipped tick, a panic, or a probe cut short by shutdown.",
        "counter",
        PairFamily::Ticks,
    ),
    (
        "routewatch_probe_class",
        "1 for the class of the pair's last probe, 0 for every other class.",
        "gauge",
        PairFamily::Class,
    ),
    (
        "routewatch_probe_duration_seconds",
        "Time from the start of a probe to its verdict.",
        "histogram",
        PairFamily::Duration,
    ),
    (
        "routewatch_probe_http_status_code",
        "HTTP status of the pair's last probe, 0 when there was no response.",
        "gauge",
        PairFamily::HttpStatus,
    ),
    (
        "routewatch_probe_interval_seconds",
        "The pair's schedule period (for cron, the time between the next two firings).",
        "gauge",
        PairFamily::Interval,
    ),
    (
        "routewatch_probe_last_run_timestamp_seconds",
        "Unix time when the pair's last probe finished, 0 before the first.",
        "gauge",
        PairFamily::LastRun,
    ),
    (
        "routewatch_probe_panics_total",
        "Probes that panicked; the pair keeps its schedule. Any non-zero value is a bug.",
        "counter",
        PairFamily::Panics,
    ),
    (
        "routewatch_probe_success",
        "1 if the last probe of the pair was ok, else 0.",
        "gauge",
        PairFamily::Success,
    ),
    (
        "routewatch_probes_total",
        "Probes finished, by class.",
        "counter",
        PairFamily::ProbesTotal,
    ),
    (
        "routewatch_ticks_skipped_total",
        "Schedule ticks skipped because the pair's previous probe was still running or still waiting for a free probe slot (global.concurrency).",
        "counter",
        PairFamily::TicksSkipped,
    ),
];

impl Metrics {
    /// Creates and registers every family; `build_info` is set at once.
    pub fn new() -> Self {
        let metrics = Metrics {
            registry: Registry::new(),
            pairs: Arc::new(PairSeries::default()),
            schedule_lag: Histogram::with_opts(
                HistogramOpts::new(
                    "routewatch_schedule_lag_seconds",
                    "Time from a schedule tick to the start of the probe it triggered.",
                )
                .buckets(LAG_BUCKETS.to_vec()),
            )
            .expect("valid histogram definition"),
            reload_successful: Gauge::new(
                "routewatch_config_last_reload_successful",
                "1 if the last configuration load succeeded, else 0.",
            )
            .expect("valid gauge definition"),
            reload_success_timestamp: Gauge::new(
                "routewatch_config_last_reload_success_timestamp_seconds",
                "Unix time of the last successful configuration load.",
            )
            .expect("valid gauge definition"),
            reloads_failed: IntCounter::new(
                "routewatch_config_reloads_failed_total",
                "Configuration reloads rejected because the new file was invalid.",
            )
            .expect("valid counter definition"),
            egress_info: gauge_vec(
                "routewatch_route_egress_info",
                "Always 1; the labels give the egress country and colo last seen on the route.",
                &["route", "country", "colo"],
            ),
            egress_changes: counter_vec(
                "routewatch_route_egress_changes_total",
                "Times the route's egress IP, country or colo differed from the previous trace.",
                &["route"],
            ),
            diagnoses: Arc::default(),
            shard_info: IntGaugeVec::new(
                Opts::new(
                    "routewatch_shard_info",
                    "Always 1; this instance probes shard `shard` (from 0) of `shards` (0 of 1 when unsharded).",
                ),
                &["shard", "shards"],
            )
            .expect("valid gauge definition"),
        };
        metrics.register_all();
        metrics
    }

    fn register_all(&self) {
        let build_info = GaugeVec::new(
            Opts::new(
                "routewatch_build_info",
                "Always 1; the version label gives the running build.",
            ),
            &["version"],
        )
        .expect("valid gauge definition");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1.0);

        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.schedule_lag.clone()),
            Box::new(self.reload_successful.clone()),
            Box::new(self.reload_success_timestamp.clone()),
            Box::new(self.reloads_failed.clone()),
            Box::new(self.egress_info.clone()),
            Box::new(self.egress_changes.clone()),
            Box::new(self.shard_info.clone()),
            Box::new(build_info),
        ];
        for collector in collectors {
            self.registry
                .register(collector)
                .expect("each metric family is registered once");
        }
    }

    /// Creates every series of a pair at zero, so that alerts and dashboards see it from the
    /// first scrape. For a pair that exists already, the gauges go back to zero and the
    /// counters and the duration histogram keep their values.
    pub fn register_pair(&self, monitor: &str, route: &str, interval: Duration) {
        let mut monitors = self.pairs.write();
        let routes = monitors.entry(monitor.to_owned()).or_default();
        let index = match routes.binary_search_by(|(name, _)| name.as_str().cmp(route)) {
            Ok(index) => index,
            Err(index) => {
                let entry = PairEntry {
                    labels: format!(
                        "monitor=\"{}\",route=\"{}\"",
                        escape_label_value(monitor),
                        escape_label_value(route)
                    ),
                    values: Mutex::new(PairValues::default()),
                };
                // Most monitors have one route: grow by one, not to Vec's first four slots.
                routes.reserve_exact(1);
                routes.insert(index, (route.to_owned(), entry));
                index
            }
        };
        let mut values = lock(&routes[index].1.values);
        values.last_class = None;
        values.http_status = 0;
        values.last_run = 0.0;
        values.interval = interval.as_secs_f64();
    }

    /// Sets the schedule interval of a pair that already has its series, leaving the
    /// results of its last probe in place (for a pair that a reload kept).
    pub fn set_interval(&self, monitor: &str, route: &str, interval: Duration) {
        self.pairs.update(monitor, route, |values| {
            values.interval = interval.as_secs_f64()
        });
    }

    /// Counts the requests a probe sent, retries included.
    pub fn record_attempts(&self, monitor: &str, route: &str, attempts: u32) {
        self.pairs.update(monitor, route, |values| {
            values.attempts += u64::from(attempts)
        });
    }

    /// Creates a traced route's change counter at zero.
    pub fn register_egress_route(&self, route: &str) {
        self.egress_changes.with_label_values(&[route]).inc_by(0);
    }

    /// Sets the route's egress series, removing the one for `previous`, and counts a change
    /// when `previous` differs from `egress`.
    pub fn record_egress(&self, route: &str, previous: Option<&Egress>, egress: &Egress) {
        if let Some(previous) = previous {
            if previous != egress {
                self.egress_changes.with_label_values(&[route]).inc();
            }
            let _ =
                self.egress_info
                    .remove_label_values(&[route, &previous.country, &previous.colo]);
        }
        self.egress_info
            .with_label_values(&[route, &egress.country, &egress.colo])
            .set(1.0);
    }

    /// Removes a route's egress series (the route is gone or no longer traced).
    pub fn remove_egress_route(&self, route: &str, previous: Option<&Egress>) {
        if let Some(previous) = previous {
            let _ =
                self.egress_info
                    .remove_label_values(&[route, &previous.country, &previous.colo]);
        }
        let _ = self.egress_changes.remove_label_values(&[route]);
    }

    /// Replaces every diagnosis series with the current diagnoses: 1 for each monitor's kind,
    /// 0 for its other kinds.
    pub fn set_diagnoses(&self, diagnoses: &[Diagnosis]) {
        let current = diagnoses
            .iter()
            .map(|diagnosis| (diagnosis.monitor.clone(), diagnosis.kind))
            .collect();
        *self
            .diagnoses
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = current;
    }

    /// Removes every series of a pair (after a reload dropped it).
    pub fn remove_pair(&self, monitor: &str, route: &str) {
        let mut monitors = self.pairs.write();
        if let Some(routes) = monitors.get_mut(monitor) {
            routes.retain(|(name, _)| name != route);
            if routes.is_empty() {
                monitors.remove(monitor);
            }
        }
    }

    /// Records a finished probe. A pair that was never registered is ignored.
    pub fn record_probe(
        &self,
        monitor: &str,
        route: &str,
        verdict: &Verdict,
        http_status: u16,
        duration: Duration,
        finished_at: SystemTime,
    ) {
        self.pairs.update(monitor, route, |values| {
            values.last_class = Some(verdict.class);
            values.probes[class_index(verdict.class)] += 1;
            let seconds = duration.as_secs_f64();
            if let Some(bucket) = DURATION_BUCKETS.iter().position(|bound| seconds <= *bound) {
                values.duration_buckets[bucket] += 1;
            }
            values.duration_sum += seconds;
            values.duration_count += 1;
            values.http_status = http_status;
            values.last_run = unix_seconds(finished_at);
        });
    }

    /// Counts a schedule tick that reached the pair, before it is run or skipped.
    pub fn record_tick(&self, monitor: &str, route: &str) {
        self.pairs
            .update(monitor, route, |values| values.ticks += 1);
    }

    /// Counts a tick that found the pair's previous probe still running.
    pub fn record_skipped_tick(&self, monitor: &str, route: &str) {
        self.pairs
            .update(monitor, route, |values| values.ticks_skipped += 1);
    }

    /// Counts a probe that panicked.
    pub fn record_panic(&self, monitor: &str, route: &str) {
        self.pairs
            .update(monitor, route, |values| values.panics += 1);
    }

    /// Records the time from a tick to the start of its probe.
    pub fn record_schedule_lag(&self, lag: Duration) {
        self.schedule_lag.observe(lag.as_secs_f64());
    }

    /// Records the outcome of a configuration load; the success timestamp moves only on success.
    pub fn record_config_load(&self, successful: bool, at: SystemTime) {
        if successful {
            self.reload_successful.set(1.0);
            self.reload_success_timestamp.set(unix_seconds(at));
        } else {
            self.reload_successful.set(0.0);
            self.reloads_failed.inc();
        }
    }

    /// Sets `routewatch_shard_info` to the one shard this instance probes.
    pub fn set_shard(&self, shard: Shard) {
        self.shard_info.reset();
        self.shard_info
            .with_label_values(&[&shard.index().to_string(), &shard.count().to_string()])
            .set(1);
    }

    /// Renders the Prometheus text exposition of every family into one string (see
    /// [`Metrics::write_chunks`]).
    pub fn render(&self) -> String {
        chunk::collect_string(|send| self.write_chunks(send))
    }

    /// Writes the Prometheus text exposition of every family, handing each chunk of about
    /// [`chunk::CHUNK_BYTES`] to `send`.
    ///
    /// The pair map is read-locked for one batch of series at a time and never while `send`
    /// runs, so probes keep recording and a reload waits for one batch at most. So a probe
    /// that finishes during the render can show in one family and not yet in another. Each
    /// pair's histogram is written from one copy of its values.
    ///
    /// # Errors
    ///
    /// Returns [`Stopped`] as soon as `send` does, and writes nothing more.
    pub fn write_chunks(
        &self,
        send: impl FnMut(Bytes) -> Result<(), Stopped>,
    ) -> Result<(), Stopped> {
        let mut sections: Vec<Section> = self
            .registry
            .gather()
            .into_iter()
            .map(Section::Registry)
            .collect();
        // Like the registry, leave out families that have no series.
        if !self.pairs.read().is_empty() {
            sections.extend(PAIR_FAMILIES.iter().map(Section::Pair));
        }
        if !read_diagnoses(&self.diagnoses).is_empty() {
            sections.push(Section::Diagnosis);
        }
        sections.sort_by(|left, right| left.name().cmp(right.name()));

        let mut out = ChunkWriter::new(send);
        for section in &sections {
            match section {
                Section::Registry(family) => write_registry_family(out.buffer(), family),
                Section::Pair(family) => self.pairs.write_family(&mut out, family)?,
                Section::Diagnosis => write_diagnosis_family(&mut out, &self.diagnoses)?,
            }
            out.send_if_full()?;
        }
        out.finish()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl PairSeries {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, PairMap> {
        self.monitors
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, PairMap> {
        self.monitors
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Applies `change` to a registered pair's values; an unknown pair is left alone.
    fn update(&self, monitor: &str, route: &str, change: impl FnOnce(&mut PairValues)) {
        let monitors = self.read();
        let entry = monitors
            .get(monitor)
            .and_then(|routes| routes.iter().find(|(name, _)| name == route));
        if let Some((_, entry)) = entry {
            change(&mut lock(&entry.values));
        }
    }

    /// Writes one per-pair family. Series sort by label values in label-name order, as the
    /// registry sorts them: by class first where there is a class label, then monitor, then
    /// route.
    fn write_family<F>(
        &self,
        out: &mut ChunkWriter<F>,
        (name, help, kind, family): &(&str, &str, &str, PairFamily),
    ) -> Result<(), Stopped>
    where
        F: FnMut(Bytes) -> Result<(), Stopped>,
    {
        let _ = write!(out.buffer(), "# HELP {name} {help}\n# TYPE {name} {kind}\n");
        match family {
            PairFamily::Class | PairFamily::ProbesTotal => {
                for class in classes_by_name() {
                    self.write_each_pair(out, |buffer, labels, values| {
                        let value = match family {
                            PairFamily::Class => u64::from(values.last_class == Some(class)),
                            _ => values.probes[class_index(class)],
                        };
                        let class = class.as_str();
                        let _ = writeln!(buffer, "{name}{{class=\"{class}\",{labels}}} {value}");
                    })?;
                }
                Ok(())
            }
            PairFamily::Duration => self.write_each_pair(out, |buffer, labels, values| {
                write_duration_histogram(buffer, name, labels, values);
            }),
            _ => self.write_each_pair(out, |buffer, labels, values| {
                let _ = write!(buffer, "{name}{{{labels}}} ");
                let _ = match family {
                    PairFamily::HttpStatus => writeln!(buffer, "{}", values.http_status),
                    PairFamily::Interval => writeln!(buffer, "{}", values.interval),
                    PairFamily::LastRun => writeln!(buffer, "{}", values.last_run),
                    PairFamily::Panics => writeln!(buffer, "{}", values.panics),
                    PairFamily::Attempts => writeln!(buffer, "{}", values.attempts),
                    PairFamily::Ticks => writeln!(buffer, "{}", values.ticks),
                    PairFamily::Success => {
                        writeln!(buffer, "{}", u8::from(values.last_class == Some(Class::Ok)))
                    }
                    _ => writeln!(buffer, "{}", values.ticks_skipped),
                };
            }),
        }
    }

    /// Calls `write_pair` with the labels and values of every pair in label order, sending
    /// each chunk as it fills.
    fn write_each_pair<F>(
        &self,
        out: &mut ChunkWriter<F>,
        mut write_pair: impl FnMut(&mut Vec<u8>, &str, &PairValues),
    ) -> Result<(), Stopped>
    where
        F: FnMut(Bytes) -> Result<(), Stopped>,
    {
        let mut after = None;
        loop {
            after = self.write_pair_batch(out, after.as_ref(), &mut write_pair);
            out.send_if_full()?;
            if after.is_none() {
                return Ok(());
            }
        }
    }

    /// Calls `write_pair` for the pairs after `after` (from the first when `None`) until the
    /// buffer is full. Returns the (monitor, route) written last when the buffer filled up,
    /// or `None` when no pair is left.
    fn write_pair_batch<F>(
        &self,
        out: &mut ChunkWriter<F>,
        after: Option<&(String, String)>,
        write_pair: &mut impl FnMut(&mut Vec<u8>, &str, &PairValues),
    ) -> Option<(String, String)>
    where
        F: FnMut(Bytes) -> Result<(), Stopped>,
    {
        let monitors = self.read();
        let start = after.map_or(Bound::Unbounded, |(monitor, _)| {
            Bound::Included(monitor.as_str())
        });
        for (monitor, routes) in monitors.range::<str, _>((start, Bound::Unbounded)) {
            // Resume after the route the last batch stopped at. Routes are sorted by name.
            let first_route = match after {
                Some((after_monitor, after_route)) if after_monitor == monitor => {
                    routes.partition_point(|(route, _)| route.as_str() <= after_route.as_str())
                }
                _ => 0,
            };
            for (route, entry) in &routes[first_route..] {
                let values = *lock(&entry.values);
                write_pair(out.buffer(), &entry.labels, &values);
                if out.is_full() {
                    return Some((monitor.clone(), route.clone()));
                }
            }
        }
        None
    }
}

fn lock(values: &Mutex<PairValues>) -> std::sync::MutexGuard<'_, PairValues> {
    values.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// One family of the exposition: gathered from the registry, or written from the pair map or
/// the diagnoses.
enum Section {
    Registry(MetricFamily),
    Pair(&'static (&'static str, &'static str, &'static str, PairFamily)),
    Diagnosis,
}

impl Section {
    fn name(&self) -> &str {
        match self {
            Section::Registry(family) => family.name(),
            Section::Pair((name, ..)) => name,
            Section::Diagnosis => DIAGNOSIS_FAMILY,
        }
    }
}

/// Name of the diagnosis family: one series per monitor and kind.
const DIAGNOSIS_FAMILY: &str = "routewatch_monitor_diagnosis";

/// Writes the diagnosis family: 1 for each monitor's kind, 0 for its other kinds, sorted by
/// kind and then monitor as the registry sorted them. The map is read-locked for one chunk at
/// a time.
fn write_diagnosis_family<F>(
    out: &mut ChunkWriter<F>,
    diagnoses: &RwLock<BTreeMap<String, DiagnosisKind>>,
) -> Result<(), Stopped>
where
    F: FnMut(Bytes) -> Result<(), Stopped>,
{
    let name = DIAGNOSIS_FAMILY;
    let _ = write!(
        out.buffer(),
        "# HELP {name} 1 for the monitor's current diagnosis, 0 for every other kind.\n\
         # TYPE {name} gauge\n"
    );
    let mut kinds = DiagnosisKind::ALL;
    kinds.sort_by_key(|kind| kind.as_str());
    for kind in kinds {
        let mut after: Option<String> = None;
        loop {
            after = write_diagnosis_batch(out, kind, &read_diagnoses(diagnoses), after.as_deref());
            out.send_if_full()?;
            if after.is_none() {
                break;
            }
        }
    }
    Ok(())
}

/// Writes the `kind` series of the monitors after `after` until the buffer is full. Returns
/// the monitor written last when the buffer filled up, or `None` when no monitor is left.
fn write_diagnosis_batch<F>(
    out: &mut ChunkWriter<F>,
    kind: DiagnosisKind,
    diagnoses: &BTreeMap<String, DiagnosisKind>,
    after: Option<&str>,
) -> Option<String>
where
    F: FnMut(Bytes) -> Result<(), Stopped>,
{
    let name = DIAGNOSIS_FAMILY;
    let start = after.map_or(Bound::Unbounded, Bound::Excluded);
    for (monitor, current) in diagnoses.range::<str, _>((start, Bound::Unbounded)) {
        let _ = writeln!(
            out.buffer(),
            "{name}{{kind=\"{}\",monitor=\"{}\"}} {}",
            kind.as_str(),
            escape_label_value(monitor),
            u8::from(*current == kind)
        );
        if out.is_full() {
            return Some(monitor.clone());
        }
    }
    None
}

fn read_diagnoses(
    diagnoses: &RwLock<BTreeMap<String, DiagnosisKind>>,
) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, DiagnosisKind>> {
    diagnoses
        .read()
        .unwrap_or_else(|poison| poison.into_inner())
}

fn write_registry_family(out: &mut Vec<u8>, family: &MetricFamily) {
    TextEncoder::new()
        .encode(std::slice::from_ref(family), out)
        .expect("text encoding into a Vec cannot fail");
}

fn write_duration_histogram(out: &mut Vec<u8>, name: &str, labels: &str, values: &PairValues) {
    let mut cumulative = 0;
    for (bound, count) in DURATION_BUCKETS.iter().zip(values.duration_buckets) {
        cumulative += count;
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
    }
    let count = values.duration_count;
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", values.duration_sum);
    let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
}

fn class_index(class: Class) -> usize {
    Class::ALL
        .iter()
        .position(|candidate| *candidate == class)
        .expect("Class::ALL lists every class")
}

fn classes_by_name() -> [Class; 12] {
    let mut classes = Class::ALL;
    classes.sort_by_key(|class| class.as_str());
    classes
}

/// Escapes a label value as the text format requires: backslash, double quote and newline.
fn escape_label_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for character in value.chars() {
        match character {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            other => escaped.push(other),
        }
    }
    escaped
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    GaugeVec::new(Opts::new(name, help), labels).expect("valid gauge definition")
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter definition")
}

fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn lines_for<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|line| line.starts_with(prefix))
            .collect()
    }

    /// Fills a registry with two monitors on two routes, probes, skips, a panic, lag samples
    /// and config loads, all at fixed times.
    fn populated() -> Metrics {
        let metrics = Metrics::new();
        for monitor in ["openai", "groq"] {
            for route in ["direct", "hk-socks"] {
                metrics.register_pair(monitor, route, Duration::from_secs(30));
            }
        }
        let verdict = |class| Verdict {
            class,
            reason: Cow::Borrowed("test.reason"),
            evidence: String::new(),
        };
        let at = |secs| UNIX_EPOCH + Duration::from_millis(secs);
        let ok = verdict(Class::Ok);
        let geo = verdict(Class::GeoBlock);
        let timeout = verdict(Class::Timeout);
        let fast = Duration::from_millis(42);
        metrics.record_probe("groq", "direct", &ok, 200, fast, at(1_700_000_000_250));
        metrics.record_probe("groq", "direct", &ok, 200, fast, at(1_700_000_001_000));
        metrics.record_probe("groq", "hk-socks", &geo, 403, fast, at(1_700_000_002_500));
        let slow = Duration::from_secs(31);
        metrics.record_probe("openai", "direct", &timeout, 0, slow, at(1_700_000_003_000));
        metrics.record_tick("openai", "direct");
        metrics.record_tick("openai", "direct");
        metrics.record_skipped_tick("openai", "direct");
        metrics.record_attempts("groq", "hk-socks", 3);
        metrics.set_shard(Shard::UNSHARDED);
        metrics.record_panic("openai", "hk-socks");
        metrics.record_schedule_lag(Duration::from_micros(300));
        metrics.record_schedule_lag(Duration::from_millis(80));
        metrics.record_config_load(true, at(1_700_000_000_000));
        metrics.record_config_load(false, at(1_700_000_005_000));
        metrics
    }

    #[test]
    fn render_matches_exposition_fixture() {
        let expected = include_str!("../tests/fixtures/metrics/exposition.txt")
            .replace("VERSION", env!("CARGO_PKG_VERSION"));
        // The fixture is the output of the prometheus crate's TextEncoder for the same calls,
        // recorded before the per-pair families were written by hand.
        assert_eq!(populated().render(), expected);
    }

    #[test]
    fn register_pair_again_keeps_counters_and_resets_gauges() {
        let metrics = populated();
        metrics.register_pair("groq", "direct", Duration::from_secs(60));
        let text = metrics.render();
        assert!(text.contains(
            "routewatch_probes_total{class=\"ok\",monitor=\"groq\",route=\"direct\"} 2\n"
        ));
        assert!(text.contains("routewatch_probe_success{monitor=\"groq\",route=\"direct\"} 0\n"));
        assert!(
            text.contains(
                "routewatch_probe_interval_seconds{monitor=\"groq\",route=\"direct\"} 60\n"
            )
        );
    }

    #[test]
    fn escape_label_value_escapes_quote_backslash_newline() {
        assert_eq!(escape_label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape_label_value("hk-socks"), "hk-socks");
    }

    #[test]
    fn register_pair_creates_zero_series() {
        let metrics = Metrics::new();
        metrics.register_pair("groq", "direct", Duration::from_secs(30));
        let text = metrics.render();

        assert!(text.contains("routewatch_probe_success{monitor=\"groq\",route=\"direct\"} 0\n"));
        assert!(text.contains(
            "routewatch_probes_total{class=\"geo_block\",monitor=\"groq\",route=\"direct\"} 0\n"
        ));
        assert!(
            text.contains(
                "routewatch_probe_interval_seconds{monitor=\"groq\",route=\"direct\"} 30\n"
            )
        );
        assert!(text.contains(
            "routewatch_probe_duration_seconds_count{monitor=\"groq\",route=\"direct\"} 0\n"
        ));
        assert_eq!(lines_for(&text, "routewatch_probe_class{").len(), 12);
        assert_eq!(lines_for(&text, "routewatch_probes_total{").len(), 12);
        assert!(text.contains(&format!(
            "routewatch_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
    }

    #[test]
    fn record_probe_sets_class_and_counts() {
        let metrics = Metrics::new();
        metrics.register_pair("groq", "hk", Duration::from_secs(60));
        let verdict = Verdict {
            class: Class::GeoBlock,
            reason: Cow::Borrowed("openai.unsupported_region"),
            evidence: "HTTP 403".to_owned(),
        };
        let finished = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        metrics.record_probe(
            "groq",
            "hk",
            &verdict,
            403,
            Duration::from_millis(120),
            finished,
        );
        let text = metrics.render();

        assert!(text.contains(
            "routewatch_probe_class{class=\"geo_block\",monitor=\"groq\",route=\"hk\"} 1\n"
        ));
        assert!(
            text.contains("routewatch_probe_class{class=\"ok\",monitor=\"groq\",route=\"hk\"} 0\n")
        );
        assert!(text.contains(
            "routewatch_probes_total{class=\"geo_block\",monitor=\"groq\",route=\"hk\"} 1\n"
        ));
        assert!(
            text.contains("routewatch_probe_http_status_code{monitor=\"groq\",route=\"hk\"} 403\n")
        );
        assert!(text.contains("routewatch_probe_last_run_timestamp_seconds{monitor=\"groq\",route=\"hk\"} 1700000000\n"));
        assert!(text.contains("routewatch_probe_duration_seconds_bucket{monitor=\"groq\",route=\"hk\",le=\"0.25\"} 1\n"));
    }

    #[test]
    fn remove_pair_drops_every_series() {
        let metrics = Metrics::new();
        metrics.register_pair("groq", "hk", Duration::from_secs(60));
        metrics.remove_pair("groq", "hk");
        assert!(!metrics.render().contains("monitor=\"groq\""));
    }

    #[test]
    fn schedule_lag_buckets_split_below_100ms() {
        let metrics = Metrics::new();
        metrics.record_schedule_lag(Duration::from_millis(80));
        let text = metrics.render();
        assert!(text.contains("routewatch_schedule_lag_seconds_bucket{le=\"0.075\"} 0\n"));
        assert!(text.contains("routewatch_schedule_lag_seconds_bucket{le=\"0.1\"} 1\n"));
        assert!(text.contains("routewatch_schedule_lag_seconds_bucket{le=\"0.025\"} 0\n"));
    }

    #[test]
    fn diagnosis_family_matches_registry() {
        let diagnoses = [
            ("openai", DiagnosisKind::GeoPartial),
            ("groq", DiagnosisKind::Healthy),
            ("say \"hi\"", DiagnosisKind::AllDown),
        ];
        let registry = Registry::new();
        let gauges = gauge_vec(
            DIAGNOSIS_FAMILY,
            "1 for the monitor's current diagnosis, 0 for every other kind.",
            &["monitor", "kind"],
        );
        registry.register(Box::new(gauges.clone())).unwrap();
        for (monitor, current) in diagnoses {
            for kind in DiagnosisKind::ALL {
                let value = if kind == current { 1.0 } else { 0.0 };
                gauges
                    .with_label_values(&[monitor, kind.as_str()])
                    .set(value);
            }
        }
        let mut expected = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut expected)
            .unwrap();

        let map = RwLock::new(
            diagnoses
                .iter()
                .map(|(monitor, kind)| (monitor.to_string(), *kind))
                .collect(),
        );
        let written = chunk::collect_string(|send| {
            let mut out = ChunkWriter::new(send);
            write_diagnosis_family(&mut out, &map)?;
            out.finish()
        });
        assert_eq!(written, String::from_utf8(expected).unwrap());
        assert!(
            written.contains(
                "routewatch_monitor_diagnosis{kind=\"geo_partial\",monitor=\"openai\"} 1\n"
            )
        );
    }

    #[test]
    fn set_diagnoses_replaces_previous() {
        let metrics = Metrics::new();
        let diagnosis = |monitor: &str, kind| Diagnosis {
            monitor: monitor.to_owned(),
            kind,
            sentence: String::new(),
        };
        metrics.set_diagnoses(&[diagnosis("a", DiagnosisKind::Mixed)]);
        metrics.set_diagnoses(&[diagnosis("b", DiagnosisKind::Healthy)]);
        let text = metrics.render();
        assert!(!text.contains("monitor=\"a\""));
        assert_eq!(lines_for(&text, "routewatch_monitor_diagnosis{").len(), 7);
        assert!(text.contains("routewatch_monitor_diagnosis{kind=\"healthy\",monitor=\"b\"} 1\n"));

        metrics.set_diagnoses(&[]);
        assert!(!metrics.render().contains("routewatch_monitor_diagnosis"));
    }

    #[test]
    fn routes_render_in_name_order() {
        let metrics = Metrics::new();
        for route in ["zeta", "alpha", "mid"] {
            metrics.register_pair("m", route, Duration::from_secs(1));
        }
        metrics.remove_pair("m", "mid");
        metrics.register_pair("m", "beta", Duration::from_secs(1));
        let text = metrics.render();
        assert_eq!(
            lines_for(&text, "routewatch_probe_success{"),
            [
                "routewatch_probe_success{monitor=\"m\",route=\"alpha\"} 0",
                "routewatch_probe_success{monitor=\"m\",route=\"beta\"} 0",
                "routewatch_probe_success{monitor=\"m\",route=\"zeta\"} 0",
            ]
        );
    }

    #[test]
    fn record_config_load_failure_keeps_success_timestamp() {
        let metrics = Metrics::new();
        metrics.record_config_load(true, UNIX_EPOCH + Duration::from_secs(100));
        metrics.record_config_load(false, UNIX_EPOCH + Duration::from_secs(200));
        let text = metrics.render();
        assert!(text.contains("routewatch_config_last_reload_successful 0\n"));
        assert!(text.contains("routewatch_config_last_reload_success_timestamp_seconds 100\n"));
        assert!(text.contains("routewatch_config_reloads_failed_total 1\n"));
    }

    #[test]
    fn write_chunks_splits_between_whole_series() {
        let metrics = Metrics::new();
        let routes = ["direct", "hk-socks", "us-http"];
        let mut diagnoses = Vec::new();
        for index in 0..1500 {
            let monitor = format!("monitor-{index:04}");
            for route in routes {
                metrics.register_pair(&monitor, route, Duration::from_secs(60));
            }
            diagnoses.push(Diagnosis {
                monitor,
                kind: DiagnosisKind::Healthy,
                sentence: String::new(),
            });
        }
        metrics.set_diagnoses(&diagnoses);
        let mut chunks: Vec<Bytes> = Vec::new();
        metrics
            .write_chunks(|chunk| {
                chunks.push(chunk);
                Ok(())
            })
            .unwrap();

        assert!(chunks.len() > 100, "{} chunks", chunks.len());
        for chunk in &chunks[..chunks.len() - 1] {
            assert!(chunk.len() >= chunk::CHUNK_BYTES, "{}", chunk.len());
            assert!(chunk.len() < chunk::CHUNK_BYTES + 2048, "{}", chunk.len());
            assert_eq!(chunk.last(), Some(&b'\n'));
        }
        let text = String::from_utf8(chunks.concat()).unwrap();
        let expected: Vec<String> = (0..1500)
            .flat_map(|index| {
                routes.map(|route| {
                    format!(
                        "routewatch_probe_success{{monitor=\"monitor-{index:04}\",route=\"{route}\"}} 0"
                    )
                })
            })
            .collect();
        assert_eq!(lines_for(&text, "routewatch_probe_success{"), expected);
        assert_eq!(
            lines_for(&text, "routewatch_probes_total{").len(),
            12 * 4500
        );
        assert_eq!(
            lines_for(&text, "routewatch_probe_duration_seconds_bucket{").len(),
            10 * 4500
        );
        let diagnosis = lines_for(&text, "routewatch_monitor_diagnosis{");
        assert_eq!(diagnosis.len(), 7 * 1500);
        assert_eq!(
            diagnosis[1500],
            "routewatch_monitor_diagnosis{kind=\"credential_problem\",monitor=\"monitor-0000\"} 0"
        );
        assert_eq!(text, metrics.render());
    }

    #[test]
    fn write_chunks_stops_when_send_stops() {
        let metrics = Metrics::new();
        for index in 0..500 {
            metrics.register_pair(&format!("m{index}"), "direct", Duration::from_secs(60));
        }
        let mut calls = 0;
        let result = metrics.write_chunks(|_chunk| {
            calls += 1;
            Err(Stopped)
        });
        assert_eq!(result, Err(Stopped));
        assert_eq!(calls, 1);
    }
}
