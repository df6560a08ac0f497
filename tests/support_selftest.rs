//! Checks of the integration-test support code itself: the test CA, the scripted upstream,
//! the port helpers, and the real proxies. The routewatch runner is not started here; only
//! its HTTP client and binary lookup are checked.

mod support;

use std::io::{ErrorKind, Read};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;

use support::net::{SilentListener, closed_port};
use support::process::{ChildGuard, STOP_GRACE, find_binary};
use support::proxy::{MICROSOCKS_EGRESS, Microsocks, TINYPROXY_EGRESS, Tinyproxy};
use support::service::http_get;
use support::tls::TestCa;
use support::upstream::{
    CLOUDFLARE_BLOCK_HTML, MODELS, OPENAI_INVALID_KEY, OPENAI_UNSUPPORTED_REGION, Reply, Routes,
    Upstream,
};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A reqwest client that trusts only the shared test CA and uses no proxy from the
/// environment.
fn direct_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([TestCa::shared().reqwest_certificate()])
        .timeout(CLIENT_TIMEOUT)
        .build()
        .unwrap()
}

fn bound_client(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(ip(source))
        .tls_certs_only([TestCa::shared().reqwest_certificate()])
        .timeout(CLIENT_TIMEOUT)
        .build()
        .unwrap()
}

fn proxied_client(proxy_url: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(proxy_url).unwrap())
        .tls_certs_only([TestCa::shared().reqwest_certificate()])
        .timeout(CLIENT_TIMEOUT)
        .build()
        .unwrap()
}

async fn get_text(client: &reqwest::Client, url: &str) -> (u16, String) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

fn models_upstream() -> Upstream {
    Upstream::start(
        Routes::new()
            .route("/v1/models", Reply::json(200, MODELS))
            .for_source("127.0.0.2", Reply::json(403, OPENAI_UNSUPPORTED_REGION))
            .for_source("127.0.0.3", Reply::html(403, CLOUDFLARE_BLOCK_HTML)),
    )
}

/// Connects a rustls client to `upstream` under `name` and returns the handshake result and
/// the negotiated ALPN protocol.
async fn handshake(
    config: Arc<rustls::ClientConfig>,
    upstream: &Upstream,
    name: &str,
) -> Result<Option<Vec<u8>>, std::io::Error> {
    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(upstream.addr()).await?;
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    let stream = connector.connect(server_name, tcp).await?;
    Ok(stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
}

fn certificate_error(error: &std::io::Error) -> Option<rustls::CertificateError> {
    let inner = error.get_ref()?.downcast_ref::<rustls::Error>()?;
    match inner {
        rustls::Error::InvalidCertificate(certificate_error) => Some(certificate_error.clone()),
        _ => None,
    }
}

#[tokio::test]
async fn ca_leaf_verifies_for_every_name() {
    let ca = TestCa::generate();
    let upstream = Upstream::start_with_ca(&ca, Routes::new());

    for name in support::tls::LEAF_NAMES {
        let alpn = handshake(ca.client_config(), &upstream, name)
            .await
            .unwrap();
        assert_eq!(alpn, Some(b"http/1.1".to_vec()), "ALPN for {name}");
    }
    assert_eq!(upstream.handshake_failures(), 0);
}

#[tokio::test]
async fn ca_leaf_rejects_unlisted_name() {
    let ca = TestCa::generate();
    let upstream = Upstream::start_with_ca(&ca, Routes::new());

    let error = handshake(ca.client_config(), &upstream, "127.0.0.10")
        .await
        .unwrap_err();
    let certificate_error = certificate_error(&error).unwrap();
    assert!(
        matches!(
            certificate_error,
            rustls::CertificateError::NotValidForNameContext { .. }
        ),
        "{certificate_error:?}"
    );
}

#[tokio::test]
async fn ca_other_ca_is_unknown_issuer() {
    let ca = TestCa::generate();
    let other = TestCa::generate();
    let upstream = Upstream::start_with_ca(&ca, Routes::new());

    let error = handshake(other.client_config(), &upstream, "localhost")
        .await
        .unwrap_err();
    assert_eq!(
        certificate_error(&error),
        Some(rustls::CertificateError::UnknownIssuer)
    );

    // The server counts the failure after the client's alert arrives.
    let deadline = Instant::now() + Duration::from_secs(5);
    while upstream.handshake_failures() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(upstream.handshake_failures(), 1);
}

#[test]
fn ca_file_contains_ca_pem() {
    let ca = TestCa::generate();
    let written = std::fs::read_to_string(ca.ca_file()).unwrap();
    assert_eq!(written, ca.ca_pem());
    assert!(
        written.starts_with("-----BEGIN CERTIFICATE-----\n"),
        "{written}"
    );
    assert_eq!(written.matches("BEGIN CERTIFICATE").count(), 1);
    assert_eq!(ca.ca_file().file_name().unwrap(), "ca.pem");
}

#[test]
fn ca_generate_removes_file_on_drop() {
    let ca = TestCa::generate();
    let path = ca.ca_file().to_path_buf();
    drop(ca);
    assert!(!path.exists(), "{} still exists", path.display());
}

#[tokio::test]
async fn upstream_answers_by_source_address() {
    let upstream = models_upstream();
    let url = upstream.url("/v1/models");

    assert_eq!(
        get_text(&direct_client(), &url).await,
        (200, MODELS.to_string())
    );
    assert_eq!(
        get_text(&bound_client("127.0.0.2"), &url).await,
        (403, OPENAI_UNSUPPORTED_REGION.to_string())
    );
    assert_eq!(
        get_text(&bound_client("127.0.0.3"), &url).await,
        (403, CLOUDFLARE_BLOCK_HTML.to_string())
    );
    // A source with no override gets the route's default reply.
    assert_eq!(
        get_text(&bound_client("127.0.0.4"), &url).await,
        (200, MODELS.to_string())
    );

    let sources: Vec<IpAddr> = upstream
        .requests()
        .iter()
        .map(|request| request.source_ip)
        .collect();
    assert_eq!(
        sources,
        vec![
            ip("127.0.0.1"),
            ip("127.0.0.2"),
            ip("127.0.0.3"),
            ip("127.0.0.4")
        ]
    );
}

#[tokio::test]
async fn upstream_sets_content_type_per_reply() {
    let upstream = models_upstream();
    let url = upstream.url("/v1/models");

    let json = direct_client().get(&url).send().await.unwrap();
    assert_eq!(json.headers()["content-type"], "application/json");
    let html = bound_client("127.0.0.3").get(&url).send().await.unwrap();
    assert_eq!(html.headers()["content-type"], "text/html; charset=utf-8");
}

#[tokio::test]
async fn upstream_records_request_details() {
    let upstream = models_upstream();

    let response = direct_client()
        .post(upstream.url_with_host("localhost", "/v1/models?limit=2&key=abc"))
        .header("authorization", "Bearer sk-test")
        .header("x-trace", "one")
        .body("{\"ping\":true}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);

    let requests = upstream.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v1/models");
    assert_eq!(request.query.as_deref(), Some("limit=2&key=abc"));
    assert_eq!(request.header("Authorization"), Some("Bearer sk-test"));
    assert_eq!(request.header("x-trace"), Some("one"));
    assert_eq!(
        request.header("host"),
        Some(format!("localhost:{}", upstream.port()).as_str())
    );
    assert_eq!(request.source_ip, ip("127.0.0.1"));
    assert_eq!(request.body, b"{\"ping\":true}".to_vec());

    upstream.clear_requests();
    assert_eq!(upstream.requests(), Vec::new());
}

#[tokio::test]
async fn upstream_unknown_path_is_404_json() {
    let upstream = models_upstream();
    let (status, body) = get_text(&direct_client(), &upstream.url("/v1/chat")).await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        r#"{"error":"no route for /v1/chat on the test upstream"}"#
    );
}

#[tokio::test]
async fn upstream_unauthorized_is_401_json() {
    let upstream = Upstream::start(Routes::new().route("/v1/models", Reply::unauthorized()));
    let (status, body) = get_text(&direct_client(), &upstream.url("/v1/models")).await;
    assert_eq!(status, 401);
    assert_eq!(body, OPENAI_INVALID_KEY);
}

#[tokio::test]
async fn upstream_headers_replace_and_append() {
    let reply = Reply::text(429, "slow down")
        .header("Content-Type", "application/problem+json")
        .append_header("set-cookie", "a=1")
        .append_header("set-cookie", "b=2");
    let upstream = Upstream::start(Routes::new().route("/", reply));

    let response = direct_client().get(upstream.url("/")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 429);
    let headers = response.headers();
    assert_eq!(headers["content-type"], "application/problem+json");
    let cookies: Vec<&str> = headers
        .get_all("set-cookie")
        .iter()
        .map(|value| value.to_str().unwrap())
        .collect();
    assert_eq!(cookies, vec!["a=1", "b=2"]);
}

#[tokio::test]
async fn upstream_set_routes_changes_answers() {
    let upstream = models_upstream();
    let url = upstream.url("/v1/models");
    assert_eq!(get_text(&direct_client(), &url).await.0, 200);

    upstream.set_routes(Routes::new().route("/v1/models", Reply::new(503)));
    assert_eq!(get_text(&direct_client(), &url).await, (503, String::new()));
}

#[tokio::test]
async fn upstream_hold_never_answers() {
    let upstream = Upstream::start(Routes::new().route("/hang", Reply::hold()));
    let client = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([TestCa::shared().reqwest_certificate()])
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();

    let error = client.get(upstream.url("/hang")).send().await.unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    // The request was read and recorded even though it got no response.
    assert_eq!(upstream.requests()[0].path, "/hang");
}

#[tokio::test]
async fn upstream_delay_holds_headers() {
    let reply = Reply::json(200, MODELS).delay(Duration::from_millis(300));
    let upstream = Upstream::start(Routes::new().route("/", reply));

    let started = Instant::now();
    let response = direct_client().get(upstream.url("/")).send().await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(response.text().await.unwrap(), MODELS);
}

#[tokio::test]
async fn upstream_slow_body_trickles() {
    let reply = Reply::json(200, MODELS).slow_body(Duration::from_millis(100), 4);
    let upstream = Upstream::start(Routes::new().route("/", reply));

    let started = Instant::now();
    let response = direct_client().get(upstream.url("/")).send().await.unwrap();
    let headers_after = started.elapsed();
    let body = response.text().await.unwrap();
    let body_after = started.elapsed();

    // The four parts arrive 100 ms apart after the headers, so the body ends well after them.
    let body_time = body_after - headers_after;
    assert!(body_time >= Duration::from_millis(300), "{body_time:?}");
    assert!(body_after >= Duration::from_millis(400), "{body_after:?}");
    assert_eq!(body, MODELS);
}

#[tokio::test]
async fn upstream_huge_body_is_exact_json() {
    let len = 5 * 1024 * 1024 + 3;
    let upstream = Upstream::start(Routes::new().route("/big", Reply::huge(len)));

    let response = direct_client()
        .get(upstream.url("/big"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-length"],
        len.to_string().as_str()
    );
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = response.bytes().await.unwrap();
    assert_eq!(body.len(), len);

    let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let padding = parsed["pad"].as_str().unwrap();
    assert_eq!(padding.len(), len - 10);
    assert!(padding.bytes().all(|byte| byte == b'x'));
}

#[tokio::test]
async fn upstream_plain_serves_http() {
    let upstream =
        Upstream::start_plain(Routes::new().route("/v1/models", Reply::json(200, MODELS)));
    let url = upstream.url("/v1/models");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert_eq!(
        get_text(&direct_client(), &url).await,
        (200, MODELS.to_string())
    );
}

#[test]
fn upstream_wait_for_requests_returns_count() {
    let upstream =
        Upstream::start_plain(Routes::new().route("/v1/models", Reply::json(200, MODELS)));
    let addr = upstream.addr();
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        http_get(addr, "/v1/models").unwrap();
        http_get(addr, "/v1/models").unwrap();
    });

    let requests = upstream.wait_for_requests(2, Duration::from_secs(5));
    sender.join().unwrap();
    assert_eq!(requests.len(), 2);
}

#[test]
#[should_panic(expected = "upstream received 0 of 1 expected requests within 100ms: []")]
fn upstream_wait_for_requests_panics_on_timeout() {
    let upstream = Upstream::start_plain(Routes::new());
    upstream.wait_for_requests(1, Duration::from_millis(100));
}

#[test]
fn http_get_reads_status_headers_body() {
    let upstream =
        Upstream::start_plain(Routes::new().route("/v1/models", Reply::json(200, MODELS)));

    let response = http_get(upstream.addr(), "/v1/models").unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.header("Content-Type"), Some("application/json"));
    assert_eq!(response.body, MODELS);

    let missing = http_get(upstream.addr(), "/nope").unwrap();
    assert_eq!(missing.status, 404);
}

#[test]
fn closed_port_refuses_connections() {
    let port = closed_port();
    let error = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ConnectionRefused);
}

#[test]
fn silent_listener_accepts_and_never_writes() {
    let listener = SilentListener::start();
    let mut stream = TcpStream::connect(listener.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();

    let mut buffer = [0u8; 16];
    let error = stream.read(&mut buffer).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::WouldBlock);

    let deadline = Instant::now() + Duration::from_secs(5);
    while listener.accepted() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(listener.accepted(), 1);
}

#[test]
#[should_panic(expected = "routewatch-no-such-tool not found on PATH; run scripts/test")]
fn find_binary_missing_panics_with_fix() {
    find_binary("routewatch-no-such-tool");
}

#[test]
fn child_guard_stop_sends_sigterm() {
    let child = Command::new("sleep").arg("30").spawn().unwrap();
    let mut guard = ChildGuard::new("sleep", child);

    let started = Instant::now();
    let status = guard.stop();
    assert_eq!(status.signal(), Some(libc::SIGTERM));
    assert!(started.elapsed() < STOP_GRACE, "{:?}", started.elapsed());
}

#[test]
fn child_guard_stop_kills_after_grace() {
    // An ignored signal stays ignored across exec, so sleep itself ignores SIGTERM.
    let child = Command::new("bash")
        .args(["-c", "trap '' TERM; exec sleep 30"])
        .spawn()
        .unwrap();
    let comm_path = format!("/proc/{}/comm", child.id());
    let mut guard = ChildGuard::new("sleep", child);
    // SIGTERM must arrive after the exec, when the trap is in place.
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(&comm_path).unwrap() != "sleep\n" {
        assert!(Instant::now() < deadline, "bash did not exec sleep");
        std::thread::sleep(Duration::from_millis(20));
    }

    let started = Instant::now();
    let status = guard.stop();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(started.elapsed() >= STOP_GRACE, "{:?}", started.elapsed());
}

#[test]
fn child_guard_drop_reaps_child() {
    let child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id();
    drop(ChildGuard::new("sleep", child));

    // After the reap, the pid no longer names a process of ours.
    let proc_path = format!("/proc/{pid}");
    assert!(
        !std::path::Path::new(&proc_path).exists(),
        "{proc_path} still exists"
    );
}

#[test]
fn routewatch_binary_is_built() {
    let path = support::service::binary();
    assert!(path.is_file(), "{} is not a file", path.display());
}

#[tokio::test]
async fn tinyproxy_connect_egresses_from_127_0_0_2() {
    let upstream = models_upstream();
    let proxy = Tinyproxy::start();

    let (status, body) = get_text(&proxied_client(&proxy.url()), &upstream.url("/v1/models")).await;
    assert_eq!(status, 403, "tinyproxy log:\n{}", proxy.log());
    assert_eq!(body, OPENAI_UNSUPPORTED_REGION);
    assert_eq!(upstream.requests()[0].source_ip, ip(TINYPROXY_EGRESS));
}

#[tokio::test]
async fn tinyproxy_plain_http_adds_via() {
    let upstream =
        Upstream::start_plain(Routes::new().route("/v1/models", Reply::json(200, MODELS)));
    let proxy = Tinyproxy::start();

    let (status, body) = get_text(&proxied_client(&proxy.url()), &upstream.url("/v1/models")).await;
    assert_eq!(
        (status, body.as_str()),
        (200, MODELS),
        "tinyproxy log:\n{}",
        proxy.log()
    );

    let request = &upstream.requests()[0];
    assert_eq!(request.source_ip, ip(TINYPROXY_EGRESS));
    let via = request.header("via").unwrap();
    assert!(
        via.starts_with("1.1 ") && via.contains("tinyproxy/"),
        "{via}"
    );
}

#[tokio::test]
async fn tinyproxy_denies_unlisted_client() {
    let upstream =
        Upstream::start_plain(Routes::new().route("/v1/models", Reply::json(200, MODELS)));
    let proxy = Tinyproxy::start();
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(proxy.url()).unwrap())
        .local_address(ip("127.0.0.5"))
        .timeout(CLIENT_TIMEOUT)
        .build()
        .unwrap();

    let (status, body) = get_text(&client, &upstream.url("/v1/models")).await;
    assert_eq!(status, 403);
    assert!(body.contains("Access denied"), "{body}");
    assert_eq!(upstream.requests(), Vec::new());
}

#[tokio::test]
async fn microsocks_egresses_from_127_0_0_3() {
    let upstream = models_upstream();
    let proxy = Microsocks::start("probe", "s3cret");

    let (status, body) = get_text(&proxied_client(&proxy.url()), &upstream.url("/v1/models")).await;
    assert_eq!(status, 403, "microsocks output:\n{}", proxy.output());
    assert_eq!(body, CLOUDFLARE_BLOCK_HTML);
    assert_eq!(upstream.requests()[0].source_ip, ip(MICROSOCKS_EGRESS));
}

#[tokio::test]
async fn microsocks_socks5_scheme_works() {
    let upstream = models_upstream();
    let proxy = Microsocks::start("probe", "s3cret");

    let url = proxy.url_with("socks5", Some(("probe", "s3cret")));
    let (status, _) = get_text(&proxied_client(&url), &upstream.url("/v1/models")).await;
    assert_eq!(status, 403, "microsocks output:\n{}", proxy.output());
    assert_eq!(upstream.requests()[0].source_ip, ip(MICROSOCKS_EGRESS));
}

#[tokio::test]
async fn microsocks_wrong_password_fails() {
    let upstream = models_upstream();
    let proxy = Microsocks::start("probe", "s3cret");

    let url = proxy.url_with("socks5h", Some(("probe", "wrong")));
    let error = proxied_client(&url)
        .get(upstream.url("/v1/models"))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_connect(), "{error:?}");
    assert_eq!(upstream.requests(), Vec::new());
}

#[test]
fn proxies_stop_on_drop() {
    let tinyproxy = Tinyproxy::start();
    let microsocks = Microsocks::start_without_auth();
    let addrs = [tinyproxy.addr(), microsocks.addr()];
    drop(tinyproxy);
    drop(microsocks);

    for addr in addrs {
        let error = TcpStream::connect(addr).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ConnectionRefused, "{addr}");
    }
}
