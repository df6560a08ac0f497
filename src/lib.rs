//! routewatch probes HTTP API endpoints through every configured network route on schedules,
//! sorts each result into a closed set of classes, and serves the results as Prometheus
//! metrics and a status JSON document.
//!
//! Layout, one module per concept:
//! - [`config`]: monitors.yaml parsed strictly into real types.
//! - [`route`]: one HTTP client per network route (direct, proxy, bound source address).
//! - [`probe`]: one request through one route, returning plain facts.
//! - [`classify`]: a pure function from those facts to a verdict (class, reason, evidence).
//! - [`egress`]: a route's egress IP, country and colo from a Cloudflare-style trace URL.
//! - [`diagnose`]: one conclusion per monitor from the latest verdicts of all its routes.
//! - [`schedule`]: when each (monitor, route) pair runs, with a global concurrency limit.
//! - [`shard`]: which pairs this instance probes when several instances split one config.
//! - [`metrics`]: every `routewatch_*` series.
//! - [`status`]: the latest verdict and bounded history per pair, served as JSON.
//! - [`server`]: the HTTP listener for /metrics, /status and /healthz.
//! - [`retry`]: repeated attempts after transport failures, within the monitor's timeout.
//! - [`web_config`]: TLS and authentication for the listener (`--web.config-file`).
//! - [`redact`]: removal of secrets from any text that leaves the process.
//! - [`chunk`]: large documents written in chunks of about 64 KiB.
//! - [`cli`]: command-line arguments and the one-shot commands.

pub mod chunk;
pub mod classify;
pub mod cli;
pub mod config;
pub mod diagnose;
pub mod egress;
pub mod metrics;
pub mod probe;
pub mod redact;
pub mod retry;
pub mod route;
pub mod schedule;
pub mod server;
pub mod shard;
pub mod status;
pub mod web_config;
