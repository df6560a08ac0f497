//! Metrics: every `routewatch_*` series, registered in one place.
//!
//! Labels carry configured names (monitor, route) and closed enums (class) only: never URLs,
//! error text, keys or status codes. Every series that an alert's `rate()` reads is created at
//! zero when a pair is registered, so it exists from the first scrape.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::classify::{Class, Verdict};

/// Bucket bounds of the probe duration histogram, in seconds: from a fast loopback answer to
/// the longest sensible timeout.
const DURATION_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Bucket bounds of the schedule lag histogram, in seconds. Bounds at 25, 75 and 100 ms let a
/// p99 target of 100 ms be checked without interpolating across a 50 ms wide bucket.
const LAG_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// The registry and every metric family of the service.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    probe_success: GaugeVec,
    probe_class: GaugeVec,
    probes_total: IntCounterVec,
    probe_duration: HistogramVec,
    http_status: IntGaugeVec,
    last_run: GaugeVec,
    interval: GaugeVec,
    ticks_skipped: IntCounterVec,
    probe_panics: IntCounterVec,
    schedule_lag: Histogram,
    reload_successful: Gauge,
    reload_success_timestamp: Gauge,
    reloads_failed: IntCounter,
}

impl Metrics {
    /// Creates and registers every family; `build_info` is set at once.
    pub fn new() -> Self {
        let pair = &["monitor", "route"];
        let metrics = Metrics {
            registry: Registry::new(),
            probe_success: gauge_vec(
                "routewatch_probe_success",
                "1 if the last probe of the pair was ok, else 0.",
                pair,
            ),
            probe_class: gauge_vec(
                "routewatch_probe_class",
                "1 for the class of the pair's last probe, 0 for every other class.",
                &["monitor", "route", "class"],
            ),
            probes_total: counter_vec(
                "routewatch_probes_total",
                "Probes finished, by class.",
                &["monitor", "route", "class"],
            ),
            probe_duration: HistogramVec::new(
                HistogramOpts::new(
                    "routewatch_probe_duration_seconds",
                    "Time from the start of a probe to its verdict.",
                )
                .buckets(DURATION_BUCKETS.to_vec()),
                pair,
            )
            .expect("valid histogram definition"),
            http_status: IntGaugeVec::new(
                Opts::new(
                    "routewatch_probe_http_status_code",
                    "HTTP status of the pair's last probe, 0 when there was no response.",
                ),
                pair,
            )
            .expect("valid gauge definition"),
            last_run: gauge_vec(
                "routewatch_probe_last_run_timestamp_seconds",
                "Unix time when the pair's last probe finished, 0 before the first.",
                pair,
            ),
            interval: gauge_vec(
                "routewatch_probe_interval_seconds",
                "The pair's schedule period (for cron, the time between the next two firings).",
                pair,
            ),
            ticks_skipped: counter_vec(
                "routewatch_ticks_skipped_total",
                "Schedule ticks skipped because the pair's previous probe was still running.",
                pair,
            ),
            probe_panics: counter_vec(
                "routewatch_probe_panics_total",
                "Probes that panicked; the pair keeps its schedule. Any non-zero value is a bug.",
                pair,
            ),
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
        };
        metrics.register_all();
        metrics
    }

    fn register_all(&self) {
        let build_info = gauge_vec(
            "routewatch_build_info",
            "Always 1; the version label gives the running build.",
            &["version"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1.0);

        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.probe_success.clone()),
            Box::new(self.probe_class.clone()),
            Box::new(self.probes_total.clone()),
            Box::new(self.probe_duration.clone()),
            Box::new(self.http_status.clone()),
            Box::new(self.last_run.clone()),
            Box::new(self.interval.clone()),
            Box::new(self.ticks_skipped.clone()),
            Box::new(self.probe_panics.clone()),
            Box::new(self.schedule_lag.clone()),
            Box::new(self.reload_successful.clone()),
            Box::new(self.reload_success_timestamp.clone()),
            Box::new(self.reloads_failed.clone()),
            Box::new(build_info),
        ];
        for collector in collectors {
            self.registry
                .register(collector)
                .expect("each metric family is registered once");
        }
    }

    /// Creates every series of a pair at zero, so that alerts and dashboards see it from the
    /// first scrape.
    pub fn register_pair(&self, monitor: &str, route: &str, interval: Duration) {
        let pair = [monitor, route];
        self.probe_success.with_label_values(&pair).set(0.0);
        for class in Class::ALL {
            let labels = [monitor, route, class.as_str()];
            self.probe_class.with_label_values(&labels).set(0.0);
            self.probes_total.with_label_values(&labels).inc_by(0);
        }
        self.probe_duration.with_label_values(&pair);
        self.http_status.with_label_values(&pair).set(0);
        self.last_run.with_label_values(&pair).set(0.0);
        self.interval
            .with_label_values(&pair)
            .set(interval.as_secs_f64());
        self.ticks_skipped.with_label_values(&pair).inc_by(0);
        self.probe_panics.with_label_values(&pair).inc_by(0);
    }

    /// Removes every series of a pair (after a reload dropped it).
    pub fn remove_pair(&self, monitor: &str, route: &str) {
        let pair = [monitor, route];
        for class in Class::ALL {
            let labels = [monitor, route, class.as_str()];
            let _ = self.probe_class.remove_label_values(&labels);
            let _ = self.probes_total.remove_label_values(&labels);
        }
        // A series that was never created has nothing to remove; that is not an error here.
        let _ = self.probe_success.remove_label_values(&pair);
        let _ = self.probe_duration.remove_label_values(&pair);
        let _ = self.http_status.remove_label_values(&pair);
        let _ = self.last_run.remove_label_values(&pair);
        let _ = self.interval.remove_label_values(&pair);
        let _ = self.ticks_skipped.remove_label_values(&pair);
        let _ = self.probe_panics.remove_label_values(&pair);
    }

    /// Records a finished probe.
    pub fn record_probe(
        &self,
        monitor: &str,
        route: &str,
        verdict: &Verdict,
        http_status: u16,
        duration: Duration,
        finished_at: SystemTime,
    ) {
        let pair = [monitor, route];
        let success = if verdict.class == Class::Ok { 1.0 } else { 0.0 };
        self.probe_success.with_label_values(&pair).set(success);
        for class in Class::ALL {
            let value = if class == verdict.class { 1.0 } else { 0.0 };
            self.probe_class
                .with_label_values(&[monitor, route, class.as_str()])
                .set(value);
        }
        self.probes_total
            .with_label_values(&[monitor, route, verdict.class.as_str()])
            .inc();
        self.probe_duration
            .with_label_values(&pair)
            .observe(duration.as_secs_f64());
        self.http_status
            .with_label_values(&pair)
            .set(i64::from(http_status));
        self.last_run
            .with_label_values(&pair)
            .set(unix_seconds(finished_at));
    }

    /// Counts a tick that found the pair's previous probe still running.
    pub fn record_skipped_tick(&self, monitor: &str, route: &str) {
        self.ticks_skipped
            .with_label_values(&[monitor, route])
            .inc();
    }

    /// Counts a probe that panicked.
    pub fn record_panic(&self, monitor: &str, route: &str) {
        self.probe_panics.with_label_values(&[monitor, route]).inc();
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

    /// Renders the Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        let mut buffer = Vec::with_capacity(64 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(buffer).expect("the text encoder writes UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
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
    fn record_config_load_failure_keeps_success_timestamp() {
        let metrics = Metrics::new();
        metrics.record_config_load(true, UNIX_EPOCH + Duration::from_secs(100));
        metrics.record_config_load(false, UNIX_EPOCH + Duration::from_secs(200));
        let text = metrics.render();
        assert!(text.contains("routewatch_config_last_reload_successful 0\n"));
        assert!(text.contains("routewatch_config_last_reload_success_timestamp_seconds 100\n"));
        assert!(text.contains("routewatch_config_reloads_failed_total 1\n"));
    }
}
