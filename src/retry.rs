//! Retries: repeat a probe after a transport failure, within the monitor's timeout.
//!
//! Only transport failures (timeout, dns, connect, tls, proxy) are retried, because an HTTP
//! response of any status is already the endpoint's verdict. All attempts and the waits between
//! them share the monitor's timeout. Each attempt gets an equal share of the time left, and
//! each wait doubles the previous one but never takes more than half of the time left. So
//! `retries: 0` behaves exactly like a single probe, and a retried probe never runs longer
//! than one without retries.

use std::time::Duration;

use tokio::time::Instant;

use crate::classify::Observation;
use crate::config::Monitor;
use crate::probe::{self, ProbeReport};
use crate::redact::Redactor;
use crate::route::RouteClient;

/// Probes until an HTTP response arrives or the retries run out, and returns the last attempt's
/// report with `attempts` set and `total` covering every attempt and wait.
pub async fn probe_with_retries(
    route: &RouteClient,
    monitor: &Monitor,
    redactor: &Redactor,
) -> ProbeReport {
    let start = Instant::now();
    let deadline = start + monitor.timeout;
    let attempts = monitor.retries + 1;
    let mut backoff = monitor.retry_backoff;
    let mut attempt = 1;
    loop {
        // The first attempt divides the whole timeout, so that without retries the probe
        // gets exactly the monitor's timeout and its message names that value.
        let left = if attempt == 1 {
            monitor.timeout
        } else {
            deadline.saturating_duration_since(Instant::now())
        };
        let share = left / (attempts - attempt + 1);
        let mut report = probe::run_with_timeout(route, monitor, redactor, share).await;
        report.attempts = attempt;
        report.total = start.elapsed();

        let left = deadline.saturating_duration_since(Instant::now());
        if attempt == attempts || !is_retryable(&report.observation) || left.is_zero() {
            return report;
        }
        let wait = next_wait(backoff, left);
        tracing::debug!(
            monitor = %monitor.name,
            route = %route.name,
            attempt,
            wait_ms = wait.as_millis() as u64,
            "transport failure; retrying",
        );
        tokio::time::sleep(wait).await;
        backoff = backoff.saturating_mul(2);
        attempt += 1;
    }
}

/// True for the failures worth another request: any transport failure, no HTTP response.
pub fn is_retryable(observation: &Observation) -> bool {
    matches!(observation, Observation::Transport(_))
}

/// Returns the wait before the next attempt: `backoff`, but at most half of the time left.
pub fn next_wait(backoff: Duration, left: Duration) -> Duration {
    backoff.min(left / 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{HttpResponse, TransportError, TransportKind};

    #[test]
    fn is_retryable_only_for_transport_failures() {
        let transport = Observation::Transport(TransportError {
            kind: TransportKind::Connect,
            detail: "connection refused".to_owned(),
        });
        let answer = Observation::Response(HttpResponse {
            status: 503,
            headers: Vec::new(),
            body: Vec::new(),
            body_truncated: false,
        });
        assert!(is_retryable(&transport));
        assert!(!is_retryable(&answer));
    }

    #[test]
    fn next_wait_capped_at_half() {
        let ms = Duration::from_millis;
        assert_eq!(next_wait(ms(500), ms(3000)), ms(500));
        assert_eq!(next_wait(ms(2000), ms(3000)), ms(1500));
        assert_eq!(next_wait(ms(500), Duration::ZERO), Duration::ZERO);
    }
}
