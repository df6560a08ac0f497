//! Streamed documents: /metrics and /status much larger than one 64 KiB chunk arrive whole
//! through an HTTP/1.1 client (chunked transfer coding) and an HTTP/1.0 one. `history=` limits
//! the listed entries. A client that sends a request and never reads the response does not
//! hold up other clients, because its render gives up its slot while it waits, stops after
//! 30 seconds and cuts its response short. Many such clients take at most the connection cap
//! in file descriptors.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::net::closed_port;
use support::service::{Service, http_get};

/// Monitors times routes gives the pairs. At about 3.4 KiB of exposition per pair, /metrics
/// is about 15 MB: more than a loopback connection buffers for a client that does not read.
const MONITORS: usize = 1500;
const ROUTES: [&str; 3] = ["direct", "r1", "r2"];

/// The render of a client that takes no chunk for this long stops (the server's
/// `STALLED_CLIENT`).
const STALLED_CLIENT: Duration = Duration::from_secs(30);

/// Connections the service serves at once (the server's `MAX_CONNECTIONS`).
const MAX_CONNECTIONS: usize = 256;

/// Returns a config whose pairs probe a closed port once an hour, so every value the tests
/// read is fixed.
fn config() -> String {
    config_of(MONITORS)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Sends `GET path` over HTTP/1.1 and returns the connection without reading anything.
fn send_and_stall(addr: SocketAddr, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    stream
}

/// Returns the series that closes the exposition: the last family (`routewatch_ticks_total`)
/// for the last pair.
fn last_series() -> String {
    format!(
        "routewatch_ticks_total{{monitor=\"m{:04}\",route=\"r2\"}} ",
        MONITORS - 1
    )
}

fn assert_whole_exposition(text: &str) {
    assert!(text.len() > 10_000_000, "{} bytes", text.len());
    let last_line = text.trim_end_matches('\n').rsplit('\n').next().unwrap();
    assert!(last_line.starts_with(&last_series()), "{last_line}");
    assert!(text.ends_with('\n'));
    let interval = format!(
        "routewatch_probe_interval_seconds{{monitor=\"m{:04}\",route=\"r2\"}} 3600\n",
        MONITORS - 1
    );
    assert!(text.contains(&interval));
    let success_lines = text
        .lines()
        .filter(|line| line.starts_with("routewatch_probe_success{"))
        .count();
    assert_eq!(success_lines, MONITORS * ROUTES.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_documents_arrive_whole() {
    let service = Service::start(&config());
    let client = client();

    let response = client.get(service.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["transfer-encoding"],
        "chunked",
        "an HTTP/1.1 client gets the document in chunks"
    );
    assert_whole_exposition(&response.text().await.unwrap());

    let http10 = http_get(service.addr(), "/metrics").unwrap();
    assert_eq!(http10.status, 200);
    assert_whole_exposition(&http10.body);

    let response = client.get(service.url("/status")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let text = response.text().await.unwrap();
    assert!(text.len() > 1_000_000, "{} bytes", text.len());
    let status: serde_json::Value = serde_json::from_str(&text).unwrap();
    let pairs = status["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), MONITORS * ROUTES.len());
    let last = &pairs[pairs.len() - 1];
    assert_eq!(last["monitor"], format!("m{:04}", MONITORS - 1));
    assert_eq!(last["route"], "r2");
    assert_eq!(last["schedule"], "every 1h");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_history_parameter_limits_entries() {
    let port = closed_port();
    let config = format!(
        "global:\n  history_size: 4\nmonitors:\n  - name: fast\n    url: http://127.0.0.1:{port}/v1\n    schedule: every 1s\n"
    );
    let service = Service::start(&config);
    let client = client();
    let listed = |query: &'static str| {
        let request = client.get(service.url(&format!("/status{query}")));
        async move {
            let text = request.send().await.unwrap().text().await.unwrap();
            let status: serde_json::Value = serde_json::from_str(&text).unwrap();
            let pair = status["pairs"][0].clone();
            (
                pair["history"].as_array().unwrap().len(),
                pair["window"]["size"].clone(),
            )
        }
    };

    // Wait for a full ring of four records (one probe a second).
    let deadline = Instant::now() + Duration::from_secs(15);
    while listed("").await.1 != 4 {
        assert!(Instant::now() < deadline, "the ring did not fill");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    assert_eq!(listed("").await, (4, serde_json::json!(4)));
    assert_eq!(listed("?history=2").await, (2, serde_json::json!(4)));
    assert_eq!(listed("?history=0").await, (0, serde_json::json!(4)));
    assert_eq!(listed("?history=100").await, (4, serde_json::json!(4)));

    let response = client
        .get(service.url("/status?history=ten"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.text().await.unwrap(),
        "invalid history \"ten\" (expected a whole number of entries per pair, such as history=10)\n"
    );
}

#[test]
fn stalled_client_does_not_block_others() {
    let service = Service::start(&config());
    let addr = service.addr();

    // One client that never reads takes one of the two renders, so another client is served
    // at once.
    let first_stalled = send_and_stall(addr, "/metrics");
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let response = http_get(addr, "/metrics").unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_whole_exposition(&response.body);

    // A stalled render gives up its slot while it waits for its client, so two stalled
    // clients leave both slots free for another client.
    let second_stalled = send_and_stall(addr, "/metrics");
    let second_sent = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let response = http_get(addr, "/metrics").unwrap();
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert_whole_exposition(&response.body);

    // Once both stalled renders have given up, the service closes their connections although
    // the clients read nothing, and their responses end cut short: the connection closes
    // without the last chunk.
    let both_stopped = STALLED_CLIENT + Duration::from_secs(3);
    std::thread::sleep(both_stopped.saturating_sub(second_sent.elapsed()));
    for stalled in [&first_stalled, &second_stalled] {
        let client = stalled.local_addr().unwrap();
        assert_ne!(
            server_side_state(addr, client).as_deref(),
            Some(TCP_ESTABLISHED),
            "the service kept the connection from {client} open"
        );
    }
    for mut stalled in [first_stalled, second_stalled] {
        stalled
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut raw = Vec::new();
        stalled.read_to_end(&mut raw).unwrap();
        assert!(raw.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(raw.len() > 64 * 1024, "{} bytes", raw.len());
        assert!(
            !raw.ends_with(b"\r\n0\r\n\r\n"),
            "the stalled response ended normally: {} bytes, {:?}",
            raw.len(),
            String::from_utf8_lossy(&raw[raw.len() - 200..])
        );
        let text = String::from_utf8_lossy(&raw);
        assert!(!text.contains(&last_series()));
    }
}

/// Sends `HEAD path` with `version` and returns the raw response.
fn head(addr: SocketAddr, path: &str, version: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "HEAD {path} {version}\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    raw
}

#[test]
fn head_documents_send_headers_only() {
    let port = closed_port();
    let config = format!(
        "monitors:\n  - name: m\n    url: http://127.0.0.1:{port}/v1\n    schedule: every 1h\n"
    );
    let service = Service::start(&config);
    for (path, content_type) in [
        ("/metrics", "text/plain; version=0.0.4; charset=utf-8"),
        ("/status", "application/json"),
    ] {
        // hyper leaves `transfer-encoding: chunked`, which GET gets over HTTP/1.1, out of any
        // response to HEAD.
        for version in ["HTTP/1.1", "HTTP/1.0"] {
            let raw = head(service.addr(), path, version);
            assert!(raw.starts_with(&format!("{version} 200 OK\r\n")), "{raw}");
            assert!(
                raw.contains(&format!("\r\ncontent-type: {content_type}\r\n")),
                "{raw}"
            );
            assert!(!raw.contains("transfer-encoding"), "{raw}");
            assert!(!raw.contains("content-length"), "{raw}");
            assert!(raw.ends_with("\r\n\r\n"), "{raw}");
        }
    }
}

/// The state of an established connection in /proc/net/tcp.
const TCP_ESTABLISHED: &str = "01";

/// Returns the state (two hex digits, as /proc/net/tcp lists it) of the socket at `server`
/// connected to `client`, or `None` when there is no such socket.
fn server_side_state(server: SocketAddr, client: SocketAddr) -> Option<String> {
    let hex = |address: SocketAddr| match address {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => panic!("the test uses IPv4 only"),
    };
    let (local, remote) = (hex(server), hex(client));
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields[1] == local && fields[2] == remote).then(|| fields[3].to_owned())
    })
}

/// Returns the number of file descriptors that process `pid` has open.
fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn clients_never_reading_take_capped_descriptors() {
    let service = Service::start(&config());
    let addr = service.addr();
    let before = open_descriptors(service.pid());

    // Twice the cap of clients that request /metrics and never read: the ones beyond the cap
    // wait in the kernel's backlog, so the service uses no descriptor for them.
    let clients: Vec<TcpStream> = (0..2 * MAX_CONNECTIONS)
        .map(|_| send_and_stall(addr, "/metrics"))
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let during = open_descriptors(service.pid());
    assert!(
        during <= before + MAX_CONNECTIONS,
        "{during} descriptors open, {before} before the clients connected"
    );
    assert!(
        during >= before + MAX_CONNECTIONS / 2,
        "{during} descriptors open, {before} before the clients connected"
    );
    drop(clients);
}

/// Returns a config of `monitors` monitors on the three routes, probing a closed port once an
/// hour.
fn config_of(monitors: usize) -> String {
    let port = closed_port();
    let mut text = String::from("defaults:\n  schedule: every 1h\n  timeout: 2s\nroutes:\n");
    for route in ROUTES {
        text.push_str(&format!("  - name: {route}\n"));
    }
    text.push_str("monitors:\n");
    for monitor in 0..monitors {
        text.push_str(&format!(
            "  - name: m{monitor:04}\n    url: http://127.0.0.1:{port}/v1/models\n"
        ));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_steady_reader_gets_whole_document() {
    // 300 monitors on three routes give about 3 MB of exposition, read here at 100 KB/s for
    // about 30 seconds. NOTE: 3 MB fits in the buffers of a socket whose send buffer Linux
    // grows to 4 MB, so this test passes without the server's SO_SNDBUF too. Making it fail
    // there takes a document of at least 5 MB, which is about 50 seconds at this rate.
    const MONITORS_READ_SLOWLY: usize = 300;
    const BYTES_PER_READ: usize = 10_000;
    const READ_EVERY: Duration = Duration::from_millis(100);
    let service = Service::start(&config_of(MONITORS_READ_SLOWLY));

    // A small receive buffer keeps the client's kernel from taking the document in ahead of
    // the reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    let stream = socket.connect(service.addr()).await.unwrap();
    let mut stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();

    let raw = tokio::task::spawn_blocking(move || {
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let started = Instant::now();
        let mut raw = Vec::new();
        let mut buffer = vec![0; BYTES_PER_READ];
        loop {
            let read = stream.read(&mut buffer).unwrap();
            if read == 0 {
                break;
            }
            raw.extend_from_slice(&buffer[..read]);
            std::thread::sleep(READ_EVERY);
            assert!(started.elapsed() < Duration::from_secs(120), "too slow");
        }
        raw
    })
    .await
    .unwrap();

    assert!(raw.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(raw.len() > 2_500_000, "{} bytes", raw.len());
    assert!(
        raw.ends_with(b"\r\n0\r\n\r\n"),
        "the response was cut short: {} bytes, {:?}",
        raw.len(),
        String::from_utf8_lossy(&raw[raw.len() - 200..])
    );
    let last = format!(
        "routewatch_ticks_total{{monitor=\"m{:04}\",route=\"r2\"}} ",
        MONITORS_READ_SLOWLY - 1
    );
    assert!(String::from_utf8_lossy(&raw).contains(&last));
}
