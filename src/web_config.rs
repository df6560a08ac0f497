//! Web config: TLS and authentication for the HTTP listener, read from `--web.config-file`.
//!
//! The file is YAML, parsed strictly (unknown keys are errors):
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.pem        # PEM chain, leaf first
//!   key_file: server-key.pem     # PEM private key (PKCS#8, PKCS#1 or SEC1)
//! basic_auth:
//!   username: prometheus
//!   password_file: password      # the whole file is the password, minus one trailing newline
//! bearer_token_file: token       # the whole file is the token, minus one trailing newline
//! ```
//!
//! Every key is optional. Relative paths are resolved against the web config file's
//! directory. When `basic_auth` or `bearer_token_file` is set, every endpoint except
//! `/healthz` needs one of the configured credentials. A request without them gets 401 with
//! a `WWW-Authenticate` header. `/healthz` stays open because load balancers and process
//! supervisors poll it without credentials, and it returns only whether the scheduler runs.
//! Files are read once at start-up; changing them needs a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use thiserror::Error;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// Largest web config file read, in bytes.
pub const MAX_WEB_CONFIG_BYTES: u64 = 64 * 1024;

/// Failure to load the web config.
#[derive(Debug, Error)]
pub enum WebConfigError {
    /// A file could not be read.
    #[error("web config {path}: cannot read {what} {file}: {source}")]
    Read {
        path: PathBuf,
        what: &'static str,
        file: PathBuf,
        source: std::io::Error,
    },
    /// The web config file is larger than [`MAX_WEB_CONFIG_BYTES`].
    #[error(
        "web config {path}: the file is {size} bytes, over the limit of {MAX_WEB_CONFIG_BYTES} bytes"
    )]
    TooLarge { path: PathBuf, size: u64 },
    /// The YAML is invalid or has an unknown key or a wrong type.
    #[error(
        "web config {path}: {message} (keys are: tls_server_config.cert_file, tls_server_config.key_file, basic_auth.username, basic_auth.password_file, bearer_token_file)"
    )]
    Syntax { path: PathBuf, message: String },
    /// A secret file is empty, so it would accept an empty credential.
    #[error("web config {path}: {key} {file} is empty; write the secret into it")]
    EmptySecret {
        path: PathBuf,
        key: &'static str,
        file: PathBuf,
    },
    /// The basic auth user name is empty or contains a colon.
    #[error(
        "web config {path}: basic_auth.username {username:?} is invalid; use a non-empty name without ':'"
    )]
    Username { path: PathBuf, username: String },
    /// The certificate or key file contains no usable PEM item.
    #[error("web config {path}: {key} {file}: {message}")]
    Pem {
        path: PathBuf,
        key: &'static str,
        file: PathBuf,
        message: String,
    },
    /// rustls rejected the certificate and key pair.
    #[error("web config {path}: the certificate and key do not form a valid TLS setup: {source}")]
    Tls {
        path: PathBuf,
        source: rustls::Error,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    tls_server_config: Option<RawTls>,
    basic_auth: Option<RawBasicAuth>,
    bearer_token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: PathBuf,
    key_file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBasicAuth {
    username: String,
    password_file: PathBuf,
}

/// The loaded web config: an optional TLS acceptor and the accepted credentials.
#[derive(Clone, Default)]
pub struct WebConfig {
    /// Terminates TLS on every connection when set.
    pub tls: Option<TlsAcceptor>,
    /// The credentials a guarded endpoint accepts.
    pub auth: Auth,
}

/// Accepted `Authorization` header values; empty means no authentication.
#[derive(Clone, Default)]
pub struct Auth {
    accepted: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The accepted values are credentials, so only their count is shown.
        write!(formatter, "Auth({} credentials)", self.accepted.len())
    }
}

impl Auth {
    /// Returns true when no credential is configured, so every request passes.
    pub fn is_open(&self) -> bool {
        self.accepted.is_empty()
    }

    /// Returns true when `header` (the `Authorization` value) matches a configured credential.
    /// The scheme is matched case-insensitively, the credential exactly and in constant time
    /// for a given length.
    pub fn allows(&self, header: Option<&[u8]>) -> bool {
        if self.is_open() {
            return true;
        }
        let Some(header) = header else { return false };
        let normalized = normalize_scheme(header);
        self.accepted.iter().fold(false, |found, expected| {
            found | constant_time_eq(&normalized, expected)
        })
    }
}

/// Lower-cases the scheme word before the first space, so `BASIC x` matches `basic x`.
fn normalize_scheme(header: &[u8]) -> Vec<u8> {
    let split = header
        .iter()
        .position(|byte| *byte == b' ')
        .unwrap_or(header.len());
    let mut normalized = header[..split].to_ascii_lowercase();
    normalized.extend_from_slice(&header[split..]);
    normalized
}

fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    // NOTE: the length still leaks through timing; only the content comparison is constant.
    if left.len() != right.len() {
        return false;
    }
    left.iter()
        .zip(right)
        .fold(0u8, |difference, (a, b)| difference | (a ^ b))
        == 0
}

/// Reads and checks the web config at `path`, then reads every file it names.
///
/// # Errors
/// Returns the first problem: an unreadable or oversized file, invalid YAML, an unknown key,
/// an empty secret file, or a certificate and key that rustls rejects.
pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
    let size = std::fs::metadata(path)
        .map_err(|source| read_error(path, "the file", path, source))?
        .len();
    if size > MAX_WEB_CONFIG_BYTES {
        return Err(WebConfigError::TooLarge {
            path: path.to_owned(),
            size,
        });
    }
    let text = std::fs::read_to_string(path)
        .map_err(|source| read_error(path, "the file", path, source))?;
    parse(&text, path)
}

/// Checks web config `text`; `path` names it in messages and anchors relative paths.
///
/// # Errors
/// As [`load`], minus reading the web config file itself.
pub fn parse(text: &str, path: &Path) -> Result<WebConfig, WebConfigError> {
    let raw: RawWebConfig = if text.trim().is_empty() {
        RawWebConfig::default()
    } else {
        serde_yaml::from_str(text).map_err(|error| WebConfigError::Syntax {
            path: path.to_owned(),
            message: error.to_string(),
        })?
    };
    let base = path.parent().unwrap_or(Path::new("."));

    let mut accepted = Vec::new();
    if let Some(basic) = &raw.basic_auth {
        if basic.username.is_empty() || basic.username.contains(':') {
            return Err(WebConfigError::Username {
                path: path.to_owned(),
                username: basic.username.clone(),
            });
        }
        let file = base.join(&basic.password_file);
        let password = read_secret(path, "basic_auth.password_file", &file)?;
        let pair = format!("{}:{password}", basic.username);
        let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
        accepted.push(format!("basic {encoded}").into_bytes());
    }
    if let Some(token_file) = &raw.bearer_token_file {
        let file = base.join(token_file);
        let token = read_secret(path, "bearer_token_file", &file)?;
        accepted.push(format!("bearer {token}").into_bytes());
    }

    let tls = match &raw.tls_server_config {
        Some(tls) => Some(build_acceptor(path, base, tls)?),
        None => None,
    };
    Ok(WebConfig {
        tls,
        auth: Auth { accepted },
    })
}

fn read_secret(path: &Path, key: &'static str, file: &Path) -> Result<String, WebConfigError> {
    let text =
        std::fs::read_to_string(file).map_err(|source| read_error(path, key, file, source))?;
    let secret = text
        .strip_suffix('\n')
        .map(|rest| rest.strip_suffix('\r').unwrap_or(rest))
        .unwrap_or(&text);
    if secret.is_empty() {
        return Err(WebConfigError::EmptySecret {
            path: path.to_owned(),
            key,
            file: file.to_owned(),
        });
    }
    Ok(secret.to_owned())
}

fn build_acceptor(path: &Path, base: &Path, tls: &RawTls) -> Result<TlsAcceptor, WebConfigError> {
    let cert_file = base.join(&tls.cert_file);
    let key_file = base.join(&tls.key_file);
    let pem_error = |key: &'static str, file: &Path, message: String| WebConfigError::Pem {
        path: path.to_owned(),
        key,
        file: file.to_owned(),
        message,
    };

    let cert_pem = std::fs::read(&cert_file)
        .map_err(|source| read_error(path, "tls_server_config.cert_file", &cert_file, source))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|error| pem_error("tls_server_config.cert_file", &cert_file, error.to_string()))?;
    if chain.is_empty() {
        return Err(pem_error(
            "tls_server_config.cert_file",
            &cert_file,
            "no certificate found (expected -----BEGIN CERTIFICATE----- blocks)".to_owned(),
        ));
    }

    let key_pem = std::fs::read(&key_file)
        .map_err(|source| read_error(path, "tls_server_config.key_file", &key_file, source))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|error| {
        pem_error(
            "tls_server_config.key_file",
            &key_file,
            format!("no usable private key: {error}"),
        )
    })?;

    // The dependency tree enables two rustls crypto providers, so none is the default and
    // the provider is named here.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|source| WebConfigError::Tls {
            path: path.to_owned(),
            source,
        })?;
    let mut config = config;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read_error(
    path: &Path,
    what: &'static str,
    file: &Path,
    source: std::io::Error,
) -> WebConfigError {
    WebConfigError::Read {
        path: path.to_owned(),
        what,
        file: file.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn parse_empty_is_open() {
        let config = parse("", Path::new("web.yml")).unwrap();
        assert!(config.tls.is_none());
        assert!(config.auth.is_open());
        assert!(config.auth.allows(None));
    }

    #[test]
    fn parse_unknown_key_is_error() {
        let error = parse("basic_auth_users: {}\n", Path::new("web.yml"))
            .err()
            .unwrap();
        assert_eq!(
            error.to_string(),
            "web config web.yml: unknown field `basic_auth_users`, expected one of `tls_server_config`, `basic_auth`, `bearer_token_file` (keys are: tls_server_config.cert_file, tls_server_config.key_file, basic_auth.username, basic_auth.password_file, bearer_token_file)"
        );
    }

    #[test]
    fn auth_basic_and_bearer_accepted() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "password", "s3cret\n");
        write(dir.path(), "token", "tok-123\n");
        let web = write(
            dir.path(),
            "web.yml",
            "basic_auth: {username: prom, password_file: password}\nbearer_token_file: token\n",
        );
        let auth = load(&web).unwrap().auth;

        // "prom:s3cret" in base64.
        assert!(auth.allows(Some(b"Basic cHJvbTpzM2NyZXQ=")));
        assert!(auth.allows(Some(b"BASIC cHJvbTpzM2NyZXQ=")));
        assert!(auth.allows(Some(b"Bearer tok-123")));
        assert!(!auth.allows(Some(b"Bearer tok-124")));
        assert!(!auth.allows(Some(b"Basic cHJvbTp3cm9uZw==")));
        assert!(!auth.allows(None));
    }

    #[test]
    fn empty_password_file_is_error() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "password", "\n");
        let web = write(
            dir.path(),
            "web.yml",
            "basic_auth: {username: prom, password_file: password}\n",
        );
        let error = load(&web).err().unwrap();
        assert_eq!(
            error.to_string(),
            format!(
                "web config {}: basic_auth.password_file {} is empty; write the secret into it",
                web.display(),
                dir.path().join("password").display()
            )
        );
    }

    #[test]
    fn username_with_colon_is_error() {
        let error = parse(
            "basic_auth: {username: \"a:b\", password_file: p}\n",
            Path::new("web.yml"),
        )
        .err()
        .unwrap();
        assert_eq!(
            error.to_string(),
            "web config web.yml: basic_auth.username \"a:b\" is invalid; use a non-empty name without ':'"
        );
    }
}
