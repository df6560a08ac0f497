//! Routes: one HTTP client per configured network route, built once at load.
//!
//! A route decides how a probe leaves the machine: directly, through an HTTP, HTTPS or SOCKS5
//! proxy, from a bound source address, and with which extra trust roots. Clients never pool
//! connections, so every probe opens a fresh connection and goes through the route's real DNS, TCP,
//! TLS and proxy behaviour. Redirects are never followed: the probe records the redirect and
//! its target, and the classifier decides what it means.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::config;
use crate::redact::redact_url;

/// The User-Agent header sent with every probe.
pub const USER_AGENT: &str = concat!("routewatch/", env!("CARGO_PKG_VERSION"));

/// Failure to build a route's client.
#[derive(Debug, Error)]
pub enum RouteError {
    /// The ca_file could not be read.
    #[error("route {route}: cannot read ca_file {path}: {source}")]
    ReadCaFile {
        route: String,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The ca_file contains no usable PEM certificate.
    #[error(
        "route {route}: ca_file {path} holds no PEM certificate: {source} (expected one or more -----BEGIN CERTIFICATE----- blocks)"
    )]
    ParseCaFile {
        route: String,
        path: PathBuf,
        source: reqwest::Error,
    },
    /// The proxy URL was refused by the HTTP client.
    #[error("route {route}: invalid proxy {proxy}: {source}")]
    Proxy {
        route: String,
        proxy: String,
        source: reqwest::Error,
    },
    /// The HTTP client could not be built (for example its TLS setup failed).
    #[error("route {route}: cannot build the HTTP client: {source}")]
    Build {
        route: String,
        source: reqwest::Error,
    },
}

/// A built route: its name, its client, and how to describe it without secrets.
#[derive(Debug, Clone)]
pub struct RouteClient {
    /// The configured route name.
    pub name: String,
    /// The client; cheap to clone, shared by every probe on this route.
    pub client: reqwest::Client,
    /// The proxy URL with its password replaced, or `None` for a direct route.
    pub proxy: Option<String>,
    /// True when a proxy carries the traffic, so a failure to connect is the proxy's.
    pub proxied: bool,
    /// The configuration the client was built from, to tell whether a reload changed it.
    pub definition: config::Route,
}

/// Builds the client for one route.
///
/// `connect_timeout` bounds the TCP connect (to the endpoint or the proxy); the probe applies
/// the monitor's overall timeout on top.
pub fn build(route: &config::Route, connect_timeout: Duration) -> Result<RouteClient, RouteError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .connect_timeout(connect_timeout);

    // Without this, reqwest reads HTTP_PROXY and HTTPS_PROXY from the environment, and a
    // route configured as direct would silently go through a proxy.
    builder = builder.no_proxy();
    if let Some(proxy) = &route.proxy {
        let proxy = reqwest::Proxy::all(proxy.as_str()).map_err(|source| RouteError::Proxy {
            route: route.name.clone(),
            proxy: redact_url(proxy),
            source,
        })?;
        builder = builder.proxy(proxy);
    }

    if let Some(address) = route.source_address {
        builder = builder.local_address(address);
    }

    if let Some(path) = &route.ca_file {
        builder = builder.tls_certs_merge(read_ca_file(&route.name, path)?);
    }

    let client = builder.build().map_err(|source| RouteError::Build {
        route: route.name.clone(),
        source,
    })?;
    Ok(RouteClient {
        name: route.name.clone(),
        client,
        proxy: route.proxy.as_ref().map(redact_url),
        proxied: route.proxy.is_some(),
        definition: route.clone(),
    })
}

fn read_ca_file(route: &str, path: &PathBuf) -> Result<Vec<reqwest::Certificate>, RouteError> {
    let pem = std::fs::read(path).map_err(|source| RouteError::ReadCaFile {
        route: route.to_owned(),
        path: path.clone(),
        source,
    })?;
    reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| RouteError::ParseCaFile {
        route: route.to_owned(),
        path: path.clone(),
        source,
    })
}
