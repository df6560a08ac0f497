//! Runs `bench/run --smoke` against the test build: 20 pairs for 5 s beside
//! blackbox_exporter, on loopback. It checks that the harness still produces its numbers,
//! not how fast routewatch is.

use std::path::Path;
use std::process::Command;

/// The commands the harness starts, with the Debian package of each.
const TOOLS: [(&str, &str); 6] = [
    ("nginx", "nginx-light"),
    (
        "prometheus-blackbox-exporter",
        "prometheus-blackbox-exporter",
    ),
    ("tinyproxy", "tinyproxy-bin"),
    ("microsocks", "microsocks"),
    ("openssl", "openssl"),
    ("promtool", "prometheus"),
];

fn on_path(command: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(command).is_file()))
}

#[test]
fn bench_smoke_produces_numbers() {
    let missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(command, _)| !on_path(command))
        .map(|(_, package)| *package)
        .collect();
    assert!(
        missing.is_empty(),
        "bench/run needs the Debian packages {}; scripts/test installs them",
        missing.join(" ")
    );

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(root.join("bench/run"))
        .args(["--smoke", "--binary", env!("CARGO_BIN_EXE_routewatch")])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert!(
        output.status.success(),
        "bench/run --smoke failed with {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(stdout.contains("| smoke (20 pairs, every 1s) | routewatch |"));
    assert!(stdout.contains("| | blackbox_exporter |"));
}
