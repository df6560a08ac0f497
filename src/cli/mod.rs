//! Command line: arguments of the service and of the one-shot commands.
//!
//! `routewatch` with no subcommand runs the service; `check`, `probe` and `classify` run once
//! and exit with a status that scripts can test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};
use thiserror::Error;

use crate::config::{self, Config, ConfigErrors};
use crate::shard::{Shard, ShardError};

pub mod check;
pub mod classify;
pub mod probe;
pub mod run;

/// Default listen address of the HTTP endpoints.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9898";

/// Default config path.
pub const DEFAULT_CONFIG: &str = "monitors.yaml";

/// routewatch probes API endpoints through every network route and separates auth, geo-block,
/// WAF page, proxy and network failures apart.
#[derive(Debug, Parser)]
#[command(name = "routewatch", version, about, long_about = None)]
pub struct Cli {
    /// One-shot command; without one, routewatch runs the service.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Options of the service.
    #[command(flatten)]
    pub run: RunArgs,

    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,
}

/// Options of the service.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Config file [default: monitors.yaml; `classify` reads user rules only when given].
    #[arg(long, short = 'c', global = true)]
    pub config: Option<PathBuf>,

    /// Address of the HTTP endpoints (/metrics, /status, /healthz).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// YAML file with TLS and authentication settings for the HTTP endpoints
    /// (tls_server_config, basic_auth, bearer_token_file); read once at start-up.
    #[arg(long = "web.config-file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,
    /// Probe only shard I of N (from 0), such as 1/3; replaces `global.shard` in the config.
    #[arg(long, value_name = "I/N", global = true)]
    pub shard: Option<String>,
}

/// An invalid `--shard` value.
#[derive(Debug, Error)]
#[error("--shard {text}: {error}")]
pub struct ShardFlagError {
    /// The value as given.
    pub text: String,
    /// The problem with the value.
    pub error: ShardError,
}

/// The one-shot commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the config and exit 1 when it has errors.
    Check,
    /// Run every (or the selected) probe once and print each verdict with its evidence.
    Probe(ProbeArgs),
    /// Classify saved raw HTTP responses, as `curl -si` writes them (`-` reads stdin).
    Classify(ClassifyArgs),
}

/// Options of `routewatch probe`.
#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// Only this monitor (repeatable).
    #[arg(long, short = 'm')]
    pub monitor: Vec<String>,
    /// Only this route (repeatable).
    #[arg(long, short = 'r')]
    pub route: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

/// Options of `routewatch classify`.
#[derive(Debug, Clone, Args)]
pub struct ClassifyArgs {
    /// Files holding raw responses; `-` reads stdin.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

/// Output format of the one-shot commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Lines for people.
    Text,
    /// One JSON object per line.
    Json,
}

impl RunArgs {
    /// Returns the config path, or the default when none was given.
    pub fn config_path(&self) -> PathBuf {
        self.config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
    }

    /// Returns the shard given with `--shard`, or `None` when the flag is absent.
    ///
    /// # Errors
    /// [`ShardFlagError`] when the value is not a valid `I/N`.
    pub fn shard(&self) -> Result<Option<Shard>, ShardFlagError> {
        let Some(text) = &self.shard else {
            return Ok(None);
        };
        text.parse().map(Some).map_err(|error| ShardFlagError {
            text: text.clone(),
            error,
        })
    }
}

/// Loads the config at `path` and, when `shard` is given (from `--shard`), puts it in place
/// of `global.shard`.
///
/// # Errors
/// As [`config::load`].
pub fn load_config(path: &Path, shard: Option<Shard>) -> Result<Config, ConfigErrors> {
    let mut config = config::load(path)?;
    if let Some(shard) = shard {
        config.global.shard = shard;
    }
    Ok(config)
}

/// Log format on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}
