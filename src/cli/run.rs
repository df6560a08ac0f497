//! The service: load the config, start the scheduler and the listener, handle reloads and
//! signals, and stop cleanly.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use thiserror::Error;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cli::{self, RunArgs, ShardFlagError};
use crate::config::ConfigErrors;
use crate::metrics::Metrics;
use crate::schedule::{Engine, ScheduleError};
use crate::server::{AppState, ReloadRequest, Server, ServerError};
use crate::shard::Shard;
use crate::status::StatusStore;
use crate::web_config::{self, WebConfig, WebConfigError};

/// Time the listener gets to finish in-flight responses after the scheduler stopped.
const SERVER_STOP_TIMEOUT: Duration = Duration::from_secs(4);

/// Failure to start the service.
#[derive(Debug, Error)]
pub enum RunError {
    /// The config at start-up is invalid.
    #[error("invalid config {path}:\n{errors}")]
    Config { path: PathBuf, errors: ConfigErrors },
    /// The scheduler could not start.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// The listener could not start.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The web config is invalid.
    #[error(transparent)]
    WebConfig(#[from] WebConfigError),
    /// The `--shard` value is invalid.
    #[error(transparent)]
    Shard(#[from] ShardFlagError),
    /// A signal handler could not be installed.
    #[error("cannot install the {signal} handler: {source}")]
    Signal {
        signal: &'static str,
        source: std::io::Error,
    },
}

/// Runs the service until SIGTERM or SIGINT.
pub async fn run(args: &RunArgs) -> Result<(), RunError> {
    let path = args.config_path();
    let shard = args.shard()?;
    let web = match &args.web_config_file {
        Some(web_path) => web_config::load(web_path)?,
        None => WebConfig::default(),
    };
    let config = cli::load_config(&path, shard).map_err(|errors| RunError::Config {
        path: path.clone(),
        errors,
    })?;

    // Signal handlers first, so that a signal during start-up stops the service cleanly, and
    // then the listener, so that a taken port stops the start before any probe runs.
    let signals = Signals::install()?;
    let tls = web.tls.is_some();
    let guarded = !web.auth.is_open();
    let server = Server::bind(args.listen).await?.with_web_config(web);
    let metrics = Metrics::new();
    metrics.record_config_load(true, SystemTime::now());
    let status = Arc::new(StatusStore::new(config.global.history_size));
    let engine = Engine::start(&config, metrics.clone(), Arc::clone(&status)).await?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %path.display(),
        pairs = engine.pair_count(),
        shard = %config.global.shard,
        listen = %args.listen,
        "routewatch started",
    );
    // The engine keeps what it needs; at 10,000 monitors the parsed config is megabytes.
    drop(config);

    let (reload_sender, reload_requests) = mpsc::channel::<ReloadRequest>(4);
    tracing::info!(listen = %args.listen, tls, guarded, "listener ready");
    let server_stop = CancellationToken::new();
    let state = AppState {
        metrics: metrics.clone(),
        status,
        health: {
            let engine = Arc::clone(&engine);
            Arc::new(move || engine.is_running())
        },
        reload: reload_sender,
    };
    let server_task = tokio::spawn(server.serve(state, server_stop.clone()));

    let signal_name =
        wait_for_stop(signals, &path, shard, &engine, &metrics, reload_requests).await;
    tracing::info!(signal = signal_name, "routewatch stopping");

    engine.shutdown().await;
    server_stop.cancel();
    if tokio::time::timeout(SERVER_STOP_TIMEOUT, server_task)
        .await
        .is_err()
    {
        tracing::warn!("listener did not stop in time");
    }
    tracing::info!("routewatch stopped");
    Ok(())
}

/// The signals the service handles.
struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
}

impl Signals {
    fn install() -> Result<Signals, RunError> {
        Ok(Signals {
            terminate: install(SignalKind::terminate(), "SIGTERM")?,
            interrupt: install(SignalKind::interrupt(), "SIGINT")?,
            hangup: install(SignalKind::hangup(), "SIGHUP")?,
        })
    }
}

/// Serves reload requests (SIGHUP and POST /-/reload) until SIGTERM or SIGINT arrives, and
/// returns the name of that signal.
async fn wait_for_stop(
    mut signals: Signals,
    path: &Path,
    shard: Option<Shard>,
    engine: &Engine,
    metrics: &Metrics,
    mut reload_requests: mpsc::Receiver<ReloadRequest>,
) -> &'static str {
    loop {
        tokio::select! {
            _ = signals.terminate.recv() => return "SIGTERM",
            _ = signals.interrupt.recv() => return "SIGINT",
            _ = signals.hangup.recv() => {
                let _ = reload(path, shard, engine, metrics).await;
            }
            Some(reply) = reload_requests.recv() => {
                // The requester may have gone away; the reload happened either way.
                let _ = reply.send(reload(path, shard, engine, metrics).await);
            }
        }
    }
}

fn install(kind: SignalKind, name: &'static str) -> Result<Signal, RunError> {
    signal(kind).map_err(|source| RunError::Signal {
        signal: name,
        source,
    })
}

/// Loads the config again and applies it; a bad config is rejected and the old one keeps
/// running.
async fn reload(
    path: &Path,
    shard: Option<Shard>,
    engine: &Engine,
    metrics: &Metrics,
) -> Result<String, String> {
    let config = match cli::load_config(path, shard) {
        Ok(config) => config,
        Err(errors) => {
            metrics.record_config_load(false, SystemTime::now());
            let errors = errors.to_string();
            tracing::error!(config = %path.display(), errors = %errors, "reload rejected; the previous config keeps running");
            return Err(format!(
                "reload rejected; the previous config keeps running:\n{errors}"
            ));
        }
    };
    match engine.apply(&config).await {
        Ok(summary) => {
            metrics.record_config_load(true, SystemTime::now());
            let message = format!(
                "reloaded {}: {} pairs ({} added, {} removed)",
                path.display(),
                summary.pairs,
                summary.added,
                summary.removed
            );
            tracing::info!(config = %path.display(), pairs = summary.pairs, added = summary.added, removed = summary.removed, "config reloaded");
            Ok(message)
        }
        Err(error) => {
            metrics.record_config_load(false, SystemTime::now());
            tracing::error!(config = %path.display(), error = %error, "reload failed; the previous config keeps running");
            Err(format!(
                "reload failed; the previous config keeps running: {error}"
            ))
        }
    }
}
