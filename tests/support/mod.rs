//! Support code for routewatch's integration tests: a throwaway CA, a scriptable upstream,
//! real proxies (tinyproxy and microsocks), and a runner for the routewatch binary.
//!
//! Include it from a test crate with `mod support;`.

// Each test binary uses a subset of this module, so the rest would warn as dead code.
#![allow(dead_code)]

pub mod net;
pub mod process;
pub mod prom_server;
pub mod proxy;
pub mod service;
pub mod tls;
pub mod upstream;
