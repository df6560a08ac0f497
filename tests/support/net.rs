//! Loopback port helpers: free and closed ports, a listener that never responds, and a wait
//! for a port to accept connections.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often [`wait_until_accepting`] and the silent listener poll.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Returns a port on 127.0.0.1 that was free a moment ago: it binds port 0 and drops the
/// listener. Another process can take the port before the caller binds it, so callers that
/// start a server on it should retry when the bind fails.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener
        .local_addr()
        .expect("read the bound address")
        .port()
}

/// Returns a port on 127.0.0.1 with no listener, so a connection to it is refused. It is
/// [`free_port`] under the name a test means when it wants "connection refused".
pub fn closed_port() -> u16 {
    free_port()
}

/// Waits until a TCP connection to `addr` succeeds or `timeout` passes.
///
/// Returns `false` on timeout.
pub fn wait_until_accepting(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, POLL_INTERVAL * 5).is_ok() {
            return true;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    false
}

/// A TCP listener on 127.0.0.1 that accepts connections and keeps them open without reading
/// or writing a byte, so a client sees the connection succeed and then waits forever for a
/// TLS handshake or an HTTP response. Connections close when the listener is dropped.
pub struct SilentListener {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SilentListener {
    /// Binds 127.0.0.1 on a free port and starts holding connections in a thread.
    pub fn start() -> SilentListener {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("make the silent listener non-blocking");
        let addr = listener.local_addr().expect("read the bound address");

        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let accepted = Arc::clone(&accepted);
            let stop = Arc::clone(&stop);
            move || hold_connections(listener, &accepted, &stop)
        });

        SilentListener {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    /// Returns the listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns the listening port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Returns the number of connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for SilentListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            // A panic in the thread only loses held connections, which drop closes anyway.
            let _ = thread.join();
        }
    }
}

fn hold_connections(listener: TcpListener, accepted: &AtomicUsize, stop: &AtomicBool) {
    let mut open_streams = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                open_streams.push(stream);
                accepted.fetch_add(1, Ordering::SeqCst);
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(POLL_INTERVAL);
            }
            Err(error) => panic!("silent listener accept failed: {error}"),
        }
    }
}
