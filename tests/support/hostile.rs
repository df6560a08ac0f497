//! A raw-TCP server that misbehaves on purpose: it drips, floods, resets, stalls, sends
//! garbage, and plays a broken HTTP or SOCKS proxy.
//!
//! hyper's server cannot send most of these responses, so [`HostileServer`] writes bytes straight to
//! the socket, one thread per connection. It listens on 127.0.0.1 on a free port and records
//! the head of every request it reads.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the accept loop and held connections check for shutdown.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Largest request head read before the server responds anyway.
const MAX_REQUEST_HEAD_BYTES: usize = 64 * 1024;

/// How long a connection may take to send its request head.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What the server does after it reads the request head.
#[derive(Clone, Debug)]
pub enum Mode {
    /// 200 JSON headers with a Content-Length of 100, then one body byte per second.
    Drip,
    /// 200 JSON headers and a chunked JSON array that never ends, sent as fast as the client
    /// reads.
    Endless,
    /// 200 JSON headers, `Content-Encoding: gzip` and this gzip body.
    Gzip(Arc<Vec<u8>>),
    /// A 200 response with one header whose value is this many bytes.
    HugeHeader(usize),
    /// A 200 response with this many headers.
    ManyHeaders(usize),
    /// A 302 to this Location.
    Redirect(String),
    /// 200 headers with a Content-Length of 1000, 10 body bytes, then a TCP reset.
    ResetMidBody,
    /// Reads the request, then sends nothing until the server stops.
    Silent,
    /// Accepts the connection and never reads or writes, so a TLS handshake stalls.
    SilentNoRead,
    /// A response that is not HTTP at all, then the connection closes.
    Garbage,
    /// 200 headers with `Transfer-Encoding: chunked` and an invalid chunk size line.
    InvalidChunked,
    /// A SOCKS5 server that reads the greeting, sends one byte of its reply and closes.
    SocksHangup,
}

/// A running hostile server; dropping it closes every connection.
pub struct HostileServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    heads: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl HostileServer {
    /// Starts a server that answers every connection with `mode`.
    pub fn start(mode: Mode) -> HostileServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("make the hostile listener non-blocking");
        let addr = listener.local_addr().expect("read the bound address");
        let stop = Arc::new(AtomicBool::new(false));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let thread = std::thread::spawn({
            let stop = Arc::clone(&stop);
            let heads = Arc::clone(&heads);
            move || accept_loop(listener, mode, stop, heads)
        });
        HostileServer {
            addr,
            stop,
            heads,
            thread: Some(thread),
        }
    }

    /// Returns the listening port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Returns `scheme://127.0.0.1:PORT/path`.
    pub fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://127.0.0.1:{}{path}", self.port())
    }

    /// Returns the request heads read so far, lossily decoded.
    pub fn heads(&self) -> Vec<String> {
        self.heads
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            // The accept loop only stops; connection threads notice the flag on their own.
            let _ = thread.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    mode: Mode,
    stop: Arc<AtomicBool>,
    heads: Arc<Mutex<Vec<String>>>,
) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let mode = mode.clone();
                let stop = Arc::clone(&stop);
                let heads = Arc::clone(&heads);
                std::thread::spawn(move || serve(stream, &mode, &stop, &heads));
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(POLL_INTERVAL);
            }
            Err(error) => panic!("hostile server accept failed: {error}"),
        }
    }
}

fn serve(mut stream: TcpStream, mode: &Mode, stop: &AtomicBool, heads: &Mutex<Vec<String>>) {
    // The listener is non-blocking; accepted sockets inherit that on some platforms.
    let _ = stream.set_nonblocking(false);
    if let Mode::SilentNoRead = mode {
        hold(stop);
        return;
    }
    let _ = stream.set_read_timeout(Some(REQUEST_READ_TIMEOUT));
    let head = if let Mode::SocksHangup = mode {
        read_some(&mut stream)
    } else {
        read_head(&mut stream)
    };
    heads
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .push(String::from_utf8_lossy(&head).into_owned());

    // Write errors mean the client gave up, which is what most modes provoke.
    let _ = answer(&mut stream, mode, stop);
}

fn answer(stream: &mut TcpStream, mode: &Mode, stop: &AtomicBool) -> std::io::Result<()> {
    const JSON_200: &str = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n";
    match mode {
        Mode::Drip => {
            stream.write_all(format!("{JSON_200}Content-Length: 100\r\n\r\n").as_bytes())?;
            for _ in 0..100 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                stream.write_all(b" ")?;
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        Mode::Endless => {
            stream.write_all(format!("{JSON_200}Transfer-Encoding: chunked\r\n\r\n").as_bytes())?;
            stream.write_all(b"9\r\n{\"data\":[\r\n")?;
            let chunk = format!("4000\r\n{}\r\n", "0,".repeat(0x2000));
            while !stop.load(Ordering::SeqCst) {
                stream.write_all(chunk.as_bytes())?;
            }
        }
        Mode::Gzip(body) => {
            let head = format!(
                "{JSON_200}Content-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes())?;
            stream.write_all(body)?;
            hold(stop);
        }
        Mode::HugeHeader(len) => {
            let head = format!(
                "{JSON_200}X-Huge: {}\r\nContent-Length: 2\r\n\r\n{{}}",
                "a".repeat(*len)
            );
            stream.write_all(head.as_bytes())?;
        }
        Mode::ManyHeaders(count) => {
            let mut head = String::from(JSON_200);
            for index in 0..*count {
                head.push_str(&format!("X-Header-{index}: {index}\r\n"));
            }
            head.push_str("Content-Length: 2\r\n\r\n{}");
            stream.write_all(head.as_bytes())?;
        }
        Mode::Redirect(location) => {
            let head =
                format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n");
            stream.write_all(head.as_bytes())?;
        }
        Mode::ResetMidBody => {
            stream.write_all(format!("{JSON_200}Content-Length: 1000\r\n\r\n").as_bytes())?;
            stream.write_all(b"{\"data\": [")?;
            std::thread::sleep(Duration::from_millis(100));
            reset(stream);
        }
        Mode::Silent | Mode::SilentNoRead => hold(stop),
        Mode::Garbage => {
            stream
                .write_all(b"SSH-2.0-OpenSSH_9.2p1\r\n\x00\x01\xfe\xffnot http at all\r\n\r\n")?;
        }
        Mode::InvalidChunked => {
            stream.write_all(format!("{JSON_200}Transfer-Encoding: chunked\r\n\r\n").as_bytes())?;
            stream.write_all(b"zz-not-hex\r\n{}\r\n0\r\n\r\n")?;
            hold(stop);
        }
        Mode::SocksHangup => {
            stream.write_all(&[0x05])?;
        }
    }
    Ok(())
}

/// Reads until the end of the request head (a blank line), the size cap or EOF.
fn read_head(stream: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    while head.len() < MAX_REQUEST_HEAD_BYTES {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => head.extend_from_slice(&buffer[..read]),
        }
        if head.windows(4).any(|window| window == b"\r\n\r\n") {
            break;
        }
    }
    head
}

/// Reads whatever the first read returns, for binary protocols such as SOCKS.
fn read_some(stream: &mut TcpStream) -> Vec<u8> {
    let mut buffer = [0u8; 512];
    match stream.read(&mut buffer) {
        Ok(read) => buffer[..read].to_vec(),
        Err(_) => Vec::new(),
    }
}

/// Keeps the calling connection thread (and so its socket) alive until the server stops.
fn hold(stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Closes `stream` with a TCP reset instead of a FIN: SO_LINGER on with a zero timeout.
fn reset(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads `linger` for the given size and touches nothing else; the fd
    // stays owned by `stream`, which is open for the whole call.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Compresses `len` zero bytes with the system's `gzip -9`, so a small body expands about a
/// thousandfold.
pub fn gzip_of_zeros(len: usize) -> Vec<u8> {
    let mut child = std::process::Command::new("gzip")
        .arg("-9c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run gzip (install the gzip package)");
    let mut stdin = child.stdin.take().expect("gzip stdin");
    let writer = std::thread::spawn(move || {
        let zeros = vec![0u8; 1024 * 1024];
        let mut left = len;
        while left > 0 {
            let size = left.min(zeros.len());
            stdin.write_all(&zeros[..size]).expect("write to gzip");
            left -= size;
        }
    });
    let output = child.wait_with_output().expect("read gzip output");
    writer.join().expect("the gzip writer thread panicked");
    assert!(output.status.success(), "gzip failed: {:?}", output.status);
    output.stdout
}
