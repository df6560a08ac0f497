//! Support code for routewatch's integration tests: a throwaway CA, a scriptable upstream,
//! real proxies (tinyproxy and microsocks), a raw-TCP server that misbehaves on purpose, a
//! runner for the routewatch binary, and a runner for a real Prometheus server.
//!
//! Include it from a test crate with `mod support;`.

// Each test binary uses a subset of this module, so the rest would warn as dead code.
#![allow(dead_code)]

pub mod hostile;
pub mod metrics;
pub mod net;
pub mod process;
pub mod prom_server;
pub mod prometheus;
pub mod proxy;
pub mod service;
pub mod tls;
pub mod upstream;
