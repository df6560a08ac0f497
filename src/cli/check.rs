//! `routewatch check`: validate a config and report every problem.

use std::io::Write;
use std::path::Path;

use crate::config;
use crate::schedule::describe_schedule;

/// Validates the config at `path`, writes the result to `out`, and returns true when valid.
///
/// Problems are written one per line as `file:line:column: key.path: message`.
pub fn run(path: &Path, out: &mut dyn Write) -> std::io::Result<bool> {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            writeln!(out, "{errors}")?;
            return Ok(false);
        }
    };
    let pairs: usize = config
        .monitors
        .iter()
        .map(|monitor| monitor.routes.len())
        .sum();
    writeln!(
        out,
        "{}: ok: {}, {}, {}, {}",
        path.display(),
        count(config.routes.len(), "route"),
        count(config.monitors.len(), "monitor"),
        count(pairs, "pair"),
        count(config.rules.len(), "user rule"),
    )?;
    for monitor in &config.monitors {
        writeln!(
            out,
            "  monitor {} ({}, timeout {:?}) on {}",
            monitor.name,
            describe_schedule(&monitor.schedule),
            monitor.timeout,
            monitor.routes.join(", ")
        )?;
    }
    Ok(true)
}

/// Formats a count with its noun in singular or plural: `1 route`, `3 routes`.
fn count(number: usize, noun: &str) -> String {
    if number == 1 {
        format!("1 {noun}")
    } else {
        format!("{number} {noun}s")
    }
}
