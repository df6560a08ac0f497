//! Schedule: when each (monitor, route) pair runs, and the path from tick to recorded verdict.
//!
//! tokio-cron-scheduler fires one job per distinct schedule. At each tick one dispatch task
//! walks that schedule's pairs in offset order and starts each at its offset, in small groups
//! spread over the period. A pair never runs twice at once: a tick that finds it still running
//! is skipped and counted. A global semaphore bounds the probes in flight. The dispatch task
//! waits for a free slot before it starts the next probe, so the live tasks are the probes in
//! flight plus one per tick in progress. At start-up, and for pairs that a
//! reload adds, the first probes are spread over the first period instead of firing at once.
//!
//! Each probe runs in its own task, and a panic inside it is caught, logged and counted while
//! the pair keeps its schedule.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};

use chrono::Utc;
use futures_util::FutureExt;
use thiserror::Error;
use tokio::sync::{Mutex, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::classify::{self, Class, Observation, Rule, Verdict};
use crate::config::{Config, Monitor, Schedule};
use crate::egress::EgressTracker;
use crate::metrics::Metrics;
use crate::probe::ProbeReport;
use crate::redact::Redactor;
use crate::retry;
use crate::route::{self, RouteClient, RouteError};
use crate::status::{PairInfo, PairKey, Record, StatusStore};

/// How often the diagnosis gauge may be recomputed.
const DIAGNOSIS_REFRESH: Duration = Duration::from_secs(1);

/// Characters of the body kept in status and logs.
pub const SNIPPET_CHARS: usize = 200;

/// Failure to start or reconfigure the scheduler.
#[derive(Debug, Error)]
pub enum ScheduleError {
    /// A route's client could not be built.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// The cron scheduler refused a job.
    #[error("cannot schedule {schedule} (monitors {monitor}): {source}")]
    Job {
        monitor: String,
        schedule: String,
        source: JobSchedulerError,
    },
    /// The cron scheduler could not start.
    #[error("cannot start the scheduler: {0}")]
    Scheduler(JobSchedulerError),
}

/// One (monitor, route) pair with its client and its running flag.
#[derive(Debug)]
pub struct Pair {
    /// (monitor, route).
    pub key: PairKey,
    /// The monitor definition.
    pub monitor: Arc<Monitor>,
    /// The route's client, shared by every pair on the route.
    pub route: Arc<RouteClient>,
    /// Delay after each tick before this pair starts, so that pairs do not all fire at once.
    pub offset: Duration,
    /// Shared with the pair it replaces when a reload changes the monitor or route, so the
    /// pair never runs twice at once across a reload.
    running: Arc<AtomicBool>,
}

/// The pairs, rules and limits that tick handlers read, replaced whole on reload.
struct Plan {
    monitors: HashMap<String, Vec<Arc<Pair>>>,
    /// The same pairs grouped by schedule and sorted by offset: one cron job per distinct
    /// schedule starts them.
    by_schedule: HashMap<Schedule, Arc<[Arc<Pair>]>>,
    redactor: Arc<Redactor>,
    rules: Arc<Vec<Rule>>,
    semaphore: Arc<Semaphore>,
    concurrency: usize,
}

impl Plan {
    fn empty() -> Plan {
        Plan {
            monitors: HashMap::new(),
            by_schedule: HashMap::new(),
            redactor: Arc::new(Redactor::default()),
            rules: Arc::new(Vec::new()),
            semaphore: Arc::new(Semaphore::new(1)),
            concurrency: 0,
        }
    }
}

/// Counts of what a reload changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Pairs after the reload.
    pub pairs: usize,
    /// Pairs that did not exist before.
    pub added: usize,
    /// Pairs that no longer exist.
    pub removed: usize,
}

/// The running scheduler with everything a tick needs.
pub struct Engine {
    metrics: Metrics,
    status: Arc<StatusStore>,
    plan: RwLock<Arc<Plan>>,
    scheduler: JobScheduler,
    jobs: Mutex<HashMap<Schedule, Uuid>>,
    shutdown: CancellationToken,
    running: AtomicBool,
    /// Set when a class changed. The diagnosis gauge is then recomputed on the next
    /// [`DIAGNOSIS_REFRESH`] tick, because a recomputation walks every pair.
    diagnoses_stale: AtomicBool,
    weak_self: Weak<Engine>,
    egress: EgressTracker,
    /// Wakes pairs waiting for a probe slot when a reload replaces the plan, so they wait on
    /// the new concurrency limit instead of the old one.
    plan_changed: Notify,
}

impl Engine {
    /// Builds every route client, registers every pair, schedules every monitor and starts.
    pub async fn start(
        config: &Config,
        metrics: Metrics,
        status: Arc<StatusStore>,
    ) -> Result<Arc<Engine>, ScheduleError> {
        let scheduler = JobScheduler::new()
            .await
            .map_err(ScheduleError::Scheduler)?;
        let shutdown = CancellationToken::new();
        let egress = EgressTracker::new(metrics.clone(), Arc::clone(&status), shutdown.clone());
        let engine = Arc::new_cyclic(|weak_self| Engine {
            metrics,
            status,
            plan: RwLock::new(Arc::new(Plan::empty())),
            scheduler,
            jobs: Mutex::new(HashMap::new()),
            shutdown,
            running: AtomicBool::new(false),
            diagnoses_stale: AtomicBool::new(false),
            weak_self: weak_self.clone(),
            egress,
            plan_changed: Notify::new(),
        });
        engine.apply(config).await?;
        engine
            .scheduler
            .start()
            .await
            .map_err(ScheduleError::Scheduler)?;
        engine.running.store(true, Ordering::SeqCst);
        engine.refresh_diagnoses_periodically();
        Ok(engine)
    }

    /// Applies a new configuration. Unchanged pairs keep their history, running flag and
    /// schedule phase. Removed pairs leave metrics and status, and added pairs start spread
    /// over their first period.
    pub async fn apply(&self, config: &Config) -> Result<ReloadSummary, ScheduleError> {
        let old_plan = self.current_plan();
        let new_plan = build_plan(config, &old_plan)?;

        self.metrics.set_shard(config.global.shard);
        let summary = self.swap_pairs(&old_plan, &new_plan, config);
        self.metrics.set_diagnoses(&self.status.diagnoses());
        *self
            .plan
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = Arc::new(new_plan);
        self.plan_changed.notify_waiters();
        self.status.set_flap_threshold(config.global.flap_threshold);
        self.status.set_history_size(config.global.history_size);
        // Traces start before the first probes so that early geo_block evidence can name
        // the egress country.
        self.egress.sync(config, &self.current_plan().redactor)?;
        self.sync_jobs(config).await?;
        self.spread_first_probes(&old_plan);
        Ok(summary)
    }

    /// Registers added pairs and removes dropped ones from metrics and status.
    fn swap_pairs(&self, old_plan: &Plan, new_plan: &Plan, config: &Config) -> ReloadSummary {
        let old_keys: HashSet<PairKey> = plan_keys(old_plan);
        let new_keys: HashSet<PairKey> = plan_keys(new_plan);

        for pair in new_plan.monitors.values().flatten() {
            let interval = schedule_period(&pair.monitor.schedule);
            // A kept pair keeps its last result: zeroing it would flip probe_success to 0
            // on every reload and fire alerts until the next probe.
            if old_keys.contains(&pair.key) {
                self.metrics
                    .set_interval(&pair.key.0, &pair.key.1, interval);
            } else {
                self.metrics
                    .register_pair(&pair.key.0, &pair.key.1, interval);
            }
            self.status.register_pair(
                pair.key.clone(),
                pair_info(pair, &new_plan.redactor, config),
            );
        }
        let removed = self.status.retain_pairs(&new_keys);
        for (monitor, route) in &removed {
            self.metrics.remove_pair(monitor, route);
        }

        ReloadSummary {
            pairs: new_keys.len(),
            added: new_keys
                .iter()
                .filter(|key| !old_keys.contains(*key))
                .count(),
            removed: removed.len(),
        }
    }

    /// Adds or removes cron jobs so that each distinct schedule has one job. Grouping by
    /// schedule keeps the job count small (tokio-cron-scheduler 0.15 drops ticks when
    /// thousands of jobs fire together), and a schedule that a reload keeps keeps its phase.
    async fn sync_jobs(&self, config: &Config) -> Result<(), ScheduleError> {
        let mut jobs = self.jobs.lock().await;
        let mut wanted: HashMap<&Schedule, Vec<&str>> = HashMap::new();
        for monitor in &config.monitors {
            wanted
                .entry(&monitor.schedule)
                .or_default()
                .push(&monitor.name);
        }

        let stale: Vec<Schedule> = jobs
            .keys()
            .filter(|schedule| !wanted.contains_key(schedule))
            .cloned()
            .collect();
        for schedule in stale {
            if let Some(id) = jobs.remove(&schedule) {
                // Removing a job that the scheduler already dropped fails, and that loses nothing.
                let _ = self.scheduler.remove(&id).await;
            }
        }

        for (schedule, monitors) in wanted {
            if jobs.contains_key(schedule) {
                continue;
            }
            let job_error = |source| ScheduleError::Job {
                monitor: monitors.join(", "),
                schedule: describe_schedule(schedule),
                source,
            };
            let job = self.make_job(schedule).map_err(job_error)?;
            let id = self.scheduler.add(job).await.map_err(job_error)?;
            jobs.insert(schedule.clone(), id);
        }
        Ok(())
    }

    fn make_job(&self, schedule: &Schedule) -> Result<Job, JobSchedulerError> {
        let weak = self.weak_self.clone();
        let key = schedule.clone();
        let run = move |_id: Uuid, _scheduler: JobScheduler| {
            let weak = weak.clone();
            let key = key.clone();
            Box::pin(async move {
                if let Some(engine) = weak.upgrade() {
                    engine.tick(&key, Instant::now());
                }
            }) as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        };
        match schedule {
            Schedule::Every(period) => Job::new_repeated_async(*period, run),
            Schedule::Cron(expression) => Job::new_async(expression.as_str(), run),
        }
    }

    /// Starts the first probe of each new or changed pair on a fixed-period schedule after
    /// its offset, so the first probes spread over the first period. Cron pairs wait for their first tick,
    /// because an extra probe would fall outside the times the operator chose.
    fn spread_first_probes(&self, old_plan: &Plan) {
        let plan = self.current_plan();
        let mut added: Vec<Arc<Pair>> = plan
            .monitors
            .values()
            .flatten()
            .filter(|pair| matches!(pair.monitor.schedule, Schedule::Every(_)))
            .filter(|pair| !plan_has_pair(old_plan, pair))
            .cloned()
            .collect();
        added.sort_by_key(|pair| pair.offset);
        self.dispatch(added.into(), Instant::now());
    }

    /// Starts every pair on this schedule at its offset after `at`.
    fn tick(&self, schedule: &Schedule, at: Instant) {
        if self.shutdown.is_cancelled() {
            return;
        }
        let plan = self.current_plan();
        if let Some(pairs) = plan.by_schedule.get(schedule) {
            self.dispatch(Arc::clone(pairs), at);
        }
    }

    /// Spawns one task that starts `pairs` (sorted by offset) in turn, each at `base` plus its
    /// offset. The task waits for a free probe slot before each start, so a tick adds one
    /// waiting task, whatever the pair count.
    fn dispatch(&self, pairs: Arc<[Arc<Pair>]>, base: Instant) {
        if pairs.is_empty() {
            return;
        }
        let Some(engine) = self.weak_self.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            let plan = engine.current_plan();
            for pair in pairs.iter() {
                let due = base + pair.offset;
                if due > Instant::now() {
                    tokio::select! {
                        _ = engine.shutdown.cancelled() => return,
                        _ = tokio::time::sleep_until(due) => {}
                    }
                }
                // A reload during the walk may have removed or replaced the pair.
                let reloaded = !Arc::ptr_eq(&plan, &engine.current_plan());
                if reloaded && !engine.is_current(pair) {
                    continue;
                }
                if !engine.start_pair(pair, due).await {
                    return;
                }
            }
        });
    }

    /// Counts the tick, then starts the pair's probe unless the previous one is still running.
    /// Waits for a free probe slot first. Returns false once the engine is shutting down.
    async fn start_pair(&self, pair: &Arc<Pair>, due: Instant) -> bool {
        self.metrics.record_tick(&pair.key.0, &pair.key.1);
        if pair.running.swap(true, Ordering::SeqCst) {
            self.metrics.record_skipped_tick(&pair.key.0, &pair.key.1);
            self.status.record_skipped_tick(&pair.key);
            tracing::debug!(monitor = %pair.key.0, route = %pair.key.1, "tick skipped: previous probe still running");
            return true;
        }
        let slot = self.wait_for_slot().await;
        let (Some((permit, plan)), Some(engine)) = (slot, self.weak_self.upgrade()) else {
            pair.running.store(false, Ordering::SeqCst);
            return false;
        };
        self.metrics.record_schedule_lag(due.elapsed());

        let pair = Arc::clone(pair);
        tokio::spawn(async move {
            let _running = RunningGuard(&pair.running);
            let _permit = permit;
            engine.run_pair(&pair, &plan).await;
        });
        true
    }

    /// Waits for a free slot of the current plan's concurrency limit. A reload that replaces
    /// the plan moves the wait to the new limit. Returns `None` once the engine shuts down.
    async fn wait_for_slot(&self) -> Option<(OwnedSemaphorePermit, Arc<Plan>)> {
        loop {
            // Registered before the plan is read, so a reload between the two still wakes it.
            let changed = self.plan_changed.notified();
            let plan = self.current_plan();
            tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                _ = changed => continue,
                permit = Arc::clone(&plan.semaphore).acquire_owned() => {
                    return permit.ok().map(|permit| (permit, plan));
                }
            }
        }
    }

    /// Runs one probe and records it. A panic inside the probe is caught, logged and counted,
    /// and the pair keeps its schedule. Shutdown cancels the probe.
    async fn run_pair(&self, pair: &Arc<Pair>, plan: &Plan) {
        let probe = run_once(
            Arc::clone(pair),
            Arc::clone(&plan.redactor),
            Arc::clone(&plan.rules),
        );
        let outcome = tokio::select! {
            _ = self.shutdown.cancelled() => return,
            outcome = AssertUnwindSafe(probe).catch_unwind() => outcome,
        };

        match outcome {
            Ok((report, verdict)) => self.record(pair, &report, verdict, &plan.redactor),
            Err(_panic) => {
                self.metrics.record_panic(&pair.key.0, &pair.key.1);
                tracing::error!(monitor = %pair.key.0, route = %pair.key.1, "probe panicked; the pair keeps its schedule");
            }
        }
    }

    fn record(&self, pair: &Pair, report: &ProbeReport, verdict: Verdict, redactor: &Redactor) {
        // A probe that was in flight when a reload removed or replaced its pair must not bring
        // the pair's series back.
        if !self.is_current(pair) {
            tracing::debug!(monitor = %pair.key.0, route = %pair.key.1, "result of a removed pair dropped");
            return;
        }
        let verdict = self.with_egress_evidence(&pair.key.1, verdict);
        let finished_at = SystemTime::now();
        let http_status = http_status(&report.observation);
        let (body_bytes, body_truncated) = match &report.observation {
            Observation::Response(response) => (response.body.len(), response.body_truncated),
            Observation::Transport(_) => (0, false),
        };
        let (monitor, route) = (&pair.key.0, &pair.key.1);
        self.metrics.record_probe(
            monitor,
            route,
            &verdict,
            http_status,
            report.total,
            finished_at,
        );
        self.metrics
            .record_attempts(monitor, route, report.attempts);

        let record = Record {
            verdict: verdict.clone(),
            http_status,
            duration: report.total,
            checked_at: finished_at,
            body_snippet: redactor.redact(&body_snippet(&report.observation, SNIPPET_CHARS)),
            body_bytes,
            body_truncated,
            attempts: report.attempts,
        };
        let previous = self.status.record(&pair.key, record);
        // A diagnosis depends only on the latest class of each pair, so it can change only when
        // a class does. Recomputing it for every probe would cost time in the number of pairs.
        if previous != Some(verdict.class) {
            self.diagnoses_stale.store(true, Ordering::SeqCst);
        }
        log_verdict(monitor, route, previous, &verdict, report.total);
    }

    /// Names the route's last seen egress in a geo_block verdict's evidence.
    fn with_egress_evidence(&self, route: &str, mut verdict: Verdict) -> Verdict {
        if verdict.class == Class::GeoBlock
            && let Some(record) = self.status.egress(route)
        {
            let egress = &record.egress;
            verdict.evidence = format!(
                "{}; egress country {} (colo {})",
                verdict.evidence, egress.country, egress.colo
            );
        }
        verdict
    }

    /// Recomputes the diagnosis gauge every [`DIAGNOSIS_REFRESH`] while a class changed since
    /// the last time, until shutdown.
    fn refresh_diagnoses_periodically(&self) {
        let weak = self.weak_self.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(DIAGNOSIS_REFRESH);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = interval.tick() => {}
                }
                let Some(engine) = weak.upgrade() else { return };
                if engine.diagnoses_stale.swap(false, Ordering::SeqCst) {
                    engine.metrics.set_diagnoses(&engine.status.diagnoses());
                }
            }
        });
    }

    /// Returns true when `pair` is still the scheduled pair for its key.
    fn is_current(&self, pair: &Pair) -> bool {
        self.current_plan()
            .monitors
            .get(&pair.key.0)
            .is_some_and(|pairs| {
                pairs
                    .iter()
                    .any(|current| std::ptr::eq(Arc::as_ptr(current), pair))
            })
    }

    /// Returns true while the scheduler runs (for /healthz).
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst) && !self.shutdown.is_cancelled()
    }

    /// Returns how many pairs are scheduled.
    pub fn pair_count(&self) -> usize {
        self.current_plan().monitors.values().map(Vec::len).sum()
    }

    /// Stops scheduling and cancels in-flight probes.
    pub async fn shutdown(&self) {
        self.running.store(false, Ordering::SeqCst);
        self.shutdown.cancel();
        let mut scheduler = self.scheduler.clone();
        if let Err(error) = scheduler.shutdown().await {
            tracing::warn!(error = %error, "scheduler did not shut down cleanly");
        }
    }

    fn current_plan(&self) -> Arc<Plan> {
        Arc::clone(
            &self
                .plan
                .read()
                .unwrap_or_else(|poison| poison.into_inner()),
        )
    }
}

/// Resets a pair's running flag when its probe task ends, however it ends.
struct RunningGuard<'a>(&'a AtomicBool);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Probes one pair and classifies the result: the probe, classify steps without recording.
pub async fn run_once(
    pair: Arc<Pair>,
    redactor: Arc<Redactor>,
    rules: Arc<Vec<Rule>>,
) -> (ProbeReport, Verdict) {
    #[cfg(feature = "fault-injection")]
    inject_panic(&pair.monitor.name);
    let report = retry::probe_with_retries(&pair.route, &pair.monitor, &redactor).await;
    let mut verdict = classify::classify(&report.observation, &pair.monitor.expect, &rules);
    verdict.evidence = redactor.redact(&verdict.evidence);
    (report, verdict)
}

/// Environment variable naming a monitor whose probes panic, read only in builds with the
/// `fault-injection` feature, so tests can show that a panic stays inside one probe.
#[cfg(feature = "fault-injection")]
pub const FAULT_PANIC_MONITOR_ENV: &str = "ROUTEWATCH_FAULT_PANIC_MONITOR";

#[cfg(feature = "fault-injection")]
fn inject_panic(monitor: &str) {
    if std::env::var(FAULT_PANIC_MONITOR_ENV).is_ok_and(|name| name == monitor) {
        panic!("injected fault: monitor {monitor} panics by request of {FAULT_PANIC_MONITOR_ENV}");
    }
}

/// Builds every pair of a config in config order (monitor, then route), for one-shot use.
/// Builds every pair of the config's shard in config order (monitor, then route), for
/// one-shot use.
pub fn build_pairs(config: &Config) -> Result<Vec<Arc<Pair>>, ScheduleError> {
    let plan = build_plan(config, &Plan::empty())?;
    let pairs = config
        .monitors
        .iter()
        .filter_map(|monitor| plan.monitors.get(&monitor.name))
        .flatten()
        .cloned()
        .collect();
    Ok(pairs)
}

/// Builds the pairs of the config's shard (`global.shard`), reusing the pairs of `old` whose
/// monitor and route are unchanged.
fn build_plan(config: &Config, old: &Plan) -> Result<Plan, ScheduleError> {
    let mut clients: HashMap<&str, Arc<RouteClient>> = HashMap::new();
    for route in &config.routes {
        let client = route::build(route, max_timeout(config))?;
        clients.insert(&route.name, Arc::new(client));
    }

    let shard = config.global.shard;
    let pair_count: usize = config
        .monitors
        .iter()
        .map(|monitor| {
            let in_shard = |route: &&String| shard.contains(&monitor.name, route);
            monitor.routes.iter().filter(in_shard).count()
        })
        .sum();
    let mut index = 0;
    let mut monitors = HashMap::new();
    let mut grouped: HashMap<Schedule, Vec<Arc<Pair>>> = HashMap::new();
    for monitor in &config.monitors {
        let monitor_arc = Arc::new(monitor.clone());
        let mut pairs = Vec::with_capacity(monitor.routes.len());
        for client in monitor
            .routes
            .iter()
            .filter(|route_name| config.global.shard.contains(&monitor.name, route_name))
            .filter_map(|name| clients.get(name.as_str()))
        {
            let offset = spread_offset(&monitor.schedule, index, pair_count);
            pairs.push(reuse_or_new_pair(old, &monitor_arc, client, config, offset));
            index += 1;
        }
        grouped
            .entry(monitor.schedule.clone())
            .or_default()
            .extend(pairs.iter().cloned());
        monitors.insert(monitor.name.clone(), pairs);
    }

    let by_schedule = grouped
        .into_iter()
        .map(|(schedule, mut pairs)| {
            pairs.sort_by_key(|pair| pair.offset);
            (schedule, pairs.into())
        })
        .collect();

    let concurrency = config.global.concurrency.max(1);
    let semaphore = if concurrency == old.concurrency {
        Arc::clone(&old.semaphore)
    } else {
        Arc::new(Semaphore::new(concurrency))
    };
    Ok(Plan {
        monitors,
        by_schedule,
        redactor: Arc::new(Redactor::new(config.secrets())),
        rules: Arc::new(config.rules.clone()),
        semaphore,
        concurrency,
    })
}

fn reuse_or_new_pair(
    old: &Plan,
    monitor: &Arc<Monitor>,
    client: &Arc<RouteClient>,
    config: &Config,
    offset: Duration,
) -> Arc<Pair> {
    let key = (monitor.name.clone(), client.name.clone());
    let previous = old
        .monitors
        .get(&monitor.name)
        .and_then(|pairs| pairs.iter().find(|pair| pair.key == key));
    match previous {
        Some(pair) if same_definition(pair, monitor, config) => Arc::clone(pair),
        _ => Arc::new(Pair {
            key,
            monitor: Arc::clone(monitor),
            route: Arc::clone(client),
            offset,
            running: previous.map_or_else(Arc::default, |pair| Arc::clone(&pair.running)),
        }),
    }
}

/// Maximum spread of a cron tick. Cron users pick exact times, so pairs start close to them.
const MAX_CRON_SPREAD: Duration = Duration::from_secs(10);

/// Pairs that start together. Every distinct start time wakes the runtime once. Starting 100
/// pairs one by one each second cost 0.95 ms of CPU per probe, and in groups of ten 0.52 ms
/// (2-core machine, bench/run's nginx, 20 s window).
const PAIRS_PER_SLOT: usize = 10;

/// Start groups of a period when there are at least this many pairs.
const MIN_SLOTS: usize = 10;

/// Shortest time between two start groups, so that large pair counts at short periods still
/// start in groups instead of one by one.
const MIN_SLOT_SPACING: Duration = Duration::from_millis(10);

/// Returns the offset of pair `index` of `count`. The spread window (the period for
/// fixed-period schedules, a tenth of it and at most [`MAX_CRON_SPREAD`] for cron) is cut
/// into even slots, and the pair starts at the beginning of its slot. There are ten slots, or
/// one per pair when there are fewer pairs, or more slots when a slot would hold more than
/// [`PAIRS_PER_SLOT`] pairs, but never closer than [`MIN_SLOT_SPACING`]. Small groups keep
/// the burst behind the concurrency limit short: 10,000 pairs every 60 s start ten at a time,
/// 60 ms apart.
fn spread_offset(schedule: &Schedule, index: usize, count: usize) -> Duration {
    let window = match schedule {
        Schedule::Every(period) => *period,
        Schedule::Cron(_) => (schedule_period(schedule) / 10).min(MAX_CRON_SPREAD),
    };
    let count = count.max(1);
    let max_slots = (window.as_nanos() / MIN_SLOT_SPACING.as_nanos()).max(1);
    let wanted = count.min(MIN_SLOTS).max(count.div_ceil(PAIRS_PER_SLOT));
    let slots = (wanted as u128).min(max_slots) as usize;
    let slot = index * slots / count;
    window.mul_f64(slot as f64 / slots as f64)
}

/// True when neither the monitor nor its route changed, so the old pair can stay.
fn same_definition(pair: &Pair, monitor: &Monitor, config: &Config) -> bool {
    let route_unchanged = config
        .routes
        .iter()
        .any(|route| route.name == pair.key.1 && *route == pair.route.definition);
    *pair.monitor == *monitor && route_unchanged
}

fn max_timeout(config: &Config) -> Duration {
    config
        .monitors
        .iter()
        .map(|monitor| monitor.timeout)
        .max()
        .unwrap_or(crate::config::DEFAULT_TIMEOUT)
}

fn plan_keys(plan: &Plan) -> HashSet<PairKey> {
    plan.monitors
        .values()
        .flatten()
        .map(|pair| pair.key.clone())
        .collect()
}

/// True when `plan` schedules this very pair (not only one with the same key).
fn plan_has_pair(plan: &Plan, pair: &Arc<Pair>) -> bool {
    plan.monitors
        .get(&pair.key.0)
        .is_some_and(|pairs| pairs.iter().any(|old| Arc::ptr_eq(old, pair)))
}

fn pair_info(pair: &Pair, redactor: &Redactor, _config: &Config) -> PairInfo {
    PairInfo {
        url: redactor.redact_url(&pair.monitor.url),
        proxy: pair.route.proxy.clone(),
        schedule: describe_schedule(&pair.monitor.schedule),
    }
}

/// Returns the schedule as an operator writes it.
pub fn describe_schedule(schedule: &Schedule) -> String {
    match schedule {
        Schedule::Every(period) => format!("every {}", humantime_short(*period)),
        Schedule::Cron(expression) => expression.clone(),
    }
}

/// Formats a period in a whole unit: `500ms`, `90s`, `10m`, `36h`.
fn humantime_short(period: Duration) -> String {
    let seconds = period.as_secs();
    if period.subsec_millis() != 0 {
        format!("{}ms", period.as_millis())
    } else if seconds >= 3600 && seconds % 3600 == 0 {
        format!("{}h", seconds / 3600)
    } else if seconds >= 600 && seconds % 60 == 0 {
        format!("{}m", seconds / 60)
    } else {
        format!("{seconds}s")
    }
}

/// Returns the period of a schedule; for cron, the time between its next two firings.
pub fn schedule_period(schedule: &Schedule) -> Duration {
    match schedule {
        Schedule::Every(period) => *period,
        Schedule::Cron(expression) => {
            cron_period(expression).unwrap_or(crate::config::DEFAULT_SCHEDULE_PERIOD)
        }
    }
}

fn cron_period(expression: &str) -> Option<Duration> {
    let cron = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .build()
        .parse(expression)
        .ok()?;
    let now = Utc::now();
    let first = cron.find_next_occurrence(&now, false).ok()?;
    let second = cron.find_next_occurrence(&first, false).ok()?;
    (second - first).to_std().ok()
}

fn http_status(observation: &Observation) -> u16 {
    match observation {
        Observation::Response(response) => response.status,
        Observation::Transport(_) => 0,
    }
}

/// Returns the start of the body as one line of text, or nothing for a transport failure.
/// Secrets are not removed here: redact before showing.
pub fn body_snippet(observation: &Observation, max_chars: usize) -> String {
    match observation {
        Observation::Response(response) => classify::body_snippet(response, max_chars),
        Observation::Transport(_) => String::new(),
    }
}

/// Logs a verdict: each probe at debug, a change of class once at info (to ok) or warn.
fn log_verdict(
    monitor: &str,
    route: &str,
    previous: Option<Class>,
    verdict: &Verdict,
    duration: Duration,
) {
    let duration_ms = duration.as_millis() as u64;
    tracing::debug!(monitor, route, class = %verdict.class, reason = %verdict.reason, duration_ms, "probe finished");
    if previous == Some(verdict.class) {
        return;
    }
    let from = previous.map_or("none", Class::as_str);
    if verdict.class == Class::Ok {
        tracing::info!(monitor, route, from, class = %verdict.class, reason = %verdict.reason, "pair state changed");
    } else {
        tracing::warn!(
            monitor,
            route,
            from,
            class = %verdict.class,
            reason = %verdict.reason,
            evidence = %verdict.evidence,
            "pair state changed",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every(seconds: u64) -> Schedule {
        Schedule::Every(Duration::from_secs(seconds))
    }

    #[test]
    fn spread_offset_one_slot_per_pair_below_ten() {
        let offsets: Vec<Duration> = (0..4)
            .map(|index| spread_offset(&every(4), index, 4))
            .collect();
        assert_eq!(offsets, [0, 1, 2, 3].map(Duration::from_secs));
    }

    #[test]
    fn spread_offset_groups_of_ten() {
        let cases = [
            // (period s, pairs, pair index, expected offset ms)
            (1, 100, 9, 0),
            (1, 100, 10, 100),
            (1, 100, 99, 900),
            (1, 1_000, 10, 10),
            (1, 1_000, 999, 990),
            (60, 10_000, 9, 0),
            (60, 10_000, 10, 60),
            (60, 10_000, 9_999, 59_940),
        ];
        for (period, count, index, expected) in cases {
            assert_eq!(
                spread_offset(&every(period), index, count),
                Duration::from_millis(expected),
                "pair {index} of {count} every {period}s"
            );
        }
    }

    #[test]
    fn spread_offset_slots_at_least_10ms_apart() {
        // 10,000 pairs every second: 100 slots of 100 pairs, not 1,000 slots 1 ms apart.
        assert_eq!(spread_offset(&every(1), 99, 10_000), Duration::ZERO);
        assert_eq!(
            spread_offset(&every(1), 100, 10_000),
            Duration::from_millis(10)
        );
    }

    #[test]
    fn spread_offset_cron_uses_tenth_of_period() {
        let cron = Schedule::Cron("*/30 * * * * *".to_owned());
        let offsets: Vec<Duration> = (0..4).map(|index| spread_offset(&cron, index, 4)).collect();
        assert_eq!(offsets, [0, 750, 1_500, 2_250].map(Duration::from_millis));
    }
}
