//! A throwaway certificate authority for the test upstreams.
//!
//! [`TestCa`] contains a CA certificate and one leaf certificate signed by it. The leaf names
//! `localhost` and the loopback addresses 127.0.0.1 to 127.0.0.9, so a TLS client that trusts
//! the CA accepts the upstream under any of those names. The leaf is not a CA itself, because
//! rustls rejects a CA certificate presented as a server certificate. The CA PEM lives in a
//! file, so a routewatch config can point a route's `ca_file` at it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Names in the leaf certificate: `localhost` and 127.0.0.1 to 127.0.0.9.
pub const LEAF_NAMES: [&str; 10] = [
    "localhost",
    "127.0.0.1",
    "127.0.0.2",
    "127.0.0.3",
    "127.0.0.4",
    "127.0.0.5",
    "127.0.0.6",
    "127.0.0.7",
    "127.0.0.8",
    "127.0.0.9",
];

/// A CA certificate, a leaf certificate it signed, and the CA PEM written to a file.
pub struct TestCa {
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    leaf_der: CertificateDer<'static>,
    leaf_key_der: Vec<u8>,
    ca_file: PathBuf,
    // Keeps the directory of `ca_file` alive; removing it on drop.
    _dir: TempDir,
}

impl TestCa {
    /// Generates a new CA and leaf and writes the CA PEM to `ca.pem` in a new temporary
    /// directory, which is removed when the value is dropped.
    ///
    /// Panics if generation or the write fails.
    pub fn generate() -> TestCa {
        let dir = tempfile::Builder::new()
            .prefix("routewatch-test-ca-")
            .tempdir()
            .expect("create a temporary directory for the test CA");
        Self::generate_in(dir)
    }

    /// Returns the CA shared by every test in this test binary, generated on first use.
    ///
    /// Its directory sits under Cargo's target tmp directory and is left there when the
    /// process exits, because statics are never dropped (`cargo clean` removes it).
    pub fn shared() -> &'static TestCa {
        static SHARED: OnceLock<TestCa> = OnceLock::new();
        SHARED.get_or_init(|| {
            let dir = tempfile::Builder::new()
                .prefix("test-ca-")
                .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
                .expect("create the shared test CA directory under CARGO_TARGET_TMPDIR");
            Self::generate_in(dir)
        })
    }

    fn generate_in(dir: TempDir) -> TestCa {
        let (ca_der, ca_pem, issuer) = generate_ca();
        let (leaf_der, leaf_key_der) = generate_leaf(&issuer);

        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &ca_pem).expect("write the test CA PEM file");

        TestCa {
            ca_der,
            ca_pem,
            leaf_der,
            leaf_key_der,
            ca_file,
            _dir: dir,
        }
    }

    /// Path of the CA certificate in PEM form, for a route's `ca_file`.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// Returns the CA certificate in PEM form.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Returns the CA certificate in DER form.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// Returns the leaf certificate in DER form.
    pub fn leaf_der(&self) -> &CertificateDer<'static> {
        &self.leaf_der
    }

    /// Writes the leaf certificate and its PKCS#8 key as PEM files `leaf.pem` and
    /// `leaf-key.pem` in `dir`, and returns their paths (for a server that reads PEM files).
    pub fn write_leaf_pem(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let cert = dir.join("leaf.pem");
        let key = dir.join("leaf-key.pem");
        std::fs::write(&cert, pem("CERTIFICATE", &self.leaf_der)).expect("write leaf.pem");
        std::fs::write(&key, pem("PRIVATE KEY", &self.leaf_key_der)).expect("write leaf-key.pem");
        (cert, key)
    }

    /// Builds a rustls server config that presents the leaf certificate, offers ALPN
    /// `http/1.1` and accepts TLS 1.2 and 1.3. It uses the ring provider explicitly, because
    /// the dependency tree enables both ring and aws-lc-rs, so rustls has no default provider.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key_der.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(ring_provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.leaf_der.clone()], key)
            .expect("the leaf certificate matches its key");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// Builds a rustls client config that trusts only this CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.ca_der.clone())
            .expect("the test CA is a valid trust anchor");
        let config = rustls::ClientConfig::builder_with_provider(ring_provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    /// Returns the CA as a reqwest certificate, for `ClientBuilder::tls_certs_only`.
    pub fn reqwest_certificate(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_der(&self.ca_der).expect("the test CA DER parses")
    }
}

/// Encodes DER bytes as one PEM block with 64-character lines.
fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut text = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        text.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        text.push('\n');
    }
    text.push_str(&format!("-----END {label}-----\n"));
    text
}

/// Returns the ring crypto provider, chosen explicitly for every rustls config built here.
pub fn ring_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn generate_ca() -> (CertificateDer<'static>, String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names to parse");
    // A distinct name per CA keeps a client that trusts another test CA from matching it as
    // the issuer, so that client reports an unknown issuer rather than a bad signature.
    static CA_COUNT: AtomicUsize = AtomicUsize::new(0);
    let number = CA_COUNT.fetch_add(1, Ordering::SeqCst);
    let name = format!("routewatch test CA {}-{number}", std::process::id());
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2100, 1, 1);

    let key = KeyPair::generate().expect("generate the CA key");
    let cert = params.self_signed(&key).expect("self-sign the CA");
    let der = cert.der().clone();
    let pem = cert.pem();
    (der, pem, Issuer::new(params, key))
}

fn generate_leaf(issuer: &Issuer<'static, KeyPair>) -> (CertificateDer<'static>, Vec<u8>) {
    let names: Vec<String> = LEAF_NAMES.iter().map(|name| name.to_string()).collect();
    let mut params = CertificateParams::new(names).expect("the leaf names are valid");
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2100, 1, 1);

    let key = KeyPair::generate().expect("generate the leaf key");
    let cert = params
        .signed_by(&key, issuer)
        .expect("sign the leaf with the CA");
    (cert.der().clone(), key.serialize_der())
}
