//! Scripted responses for the test upstream: status, headers and body, plus the special
//! modes that exercise timeouts and body caps (hold, delayed headers, slow body, huge body).

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};

use super::bodies;

/// Size of each chunk that a huge body is streamed in.
const HUGE_CHUNK_BYTES: usize = 64 * 1024;

/// The response body type that the upstream sends.
pub type ReplyBody = BoxBody<Bytes, Infallible>;

/// One scripted response. Build it with a constructor, then adjust it with the builder
/// methods: `Reply::json(200, MODELS).header("x-request-id", "abc").delay(Duration::from_secs(2))`.
#[derive(Clone, Debug)]
pub struct Reply {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    mode: Mode,
    delay: Duration,
}

#[derive(Clone, Debug)]
enum Mode {
    /// Send the whole body at once.
    Full,
    /// Read the request, then never send response headers.
    Hold,
    /// Send headers at once, then the body in `parts` pieces, one every `interval`.
    Slow { interval: Duration, parts: usize },
    /// Stream a JSON document of exactly `len` bytes.
    Huge { len: usize },
}

impl Reply {
    /// Builds a response with `status`, no headers and an empty body.
    ///
    /// Panics if `status` is not a valid HTTP status code.
    pub fn new(status: u16) -> Reply {
        Reply {
            status: StatusCode::from_u16(status)
                .unwrap_or_else(|_| panic!("invalid HTTP status code {status}")),
            headers: Vec::new(),
            body: Bytes::new(),
            mode: Mode::Full,
            delay: Duration::ZERO,
        }
    }

    /// Builds a response with an `application/json` body.
    pub fn json(status: u16, body: &str) -> Reply {
        Reply::new(status)
            .header("content-type", "application/json")
            .body(Bytes::copy_from_slice(body.as_bytes()))
    }

    /// Builds a response with a `text/html; charset=utf-8` body.
    pub fn html(status: u16, body: &str) -> Reply {
        Reply::new(status)
            .header("content-type", "text/html; charset=utf-8")
            .body(Bytes::copy_from_slice(body.as_bytes()))
    }

    /// Builds a response with a `text/plain; charset=utf-8` body.
    pub fn text(status: u16, body: &str) -> Reply {
        Reply::new(status)
            .header("content-type", "text/plain; charset=utf-8")
            .body(Bytes::copy_from_slice(body.as_bytes()))
    }

    /// Builds a 401 with an OpenAI-style `invalid_api_key` JSON error.
    pub fn unauthorized() -> Reply {
        Reply::json(401, bodies::OPENAI_INVALID_KEY)
    }

    /// Builds a reply that never comes: the request is read and recorded, but no status line
    /// or header is sent. The connection stays open until the upstream is dropped.
    pub fn hold() -> Reply {
        Reply {
            mode: Mode::Hold,
            ..Reply::new(200)
        }
    }

    /// Builds a 200 `application/json` response whose body is a JSON object of exactly `len`
    /// bytes, streamed in 64 KiB chunks with a `content-length` header.
    ///
    /// Panics if `len` is below 10, the size of the smallest such object.
    pub fn huge(len: usize) -> Reply {
        assert!(
            len >= HUGE_FRAME.len(),
            "a huge body needs at least {} bytes, got {len}",
            HUGE_FRAME.len()
        );
        Reply {
            mode: Mode::Huge { len },
            ..Reply::new(200).header("content-type", "application/json")
        }
    }

    /// Sets a header, replacing any earlier value of the same name (names are
    /// case-insensitive).
    ///
    /// Panics if the name or value is not valid in HTTP.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        let (name, value) = parse_header(name, value);
        self.headers.retain(|(existing, _)| *existing != name);
        self.headers.push((name, value));
        self
    }

    /// Adds a header, keeping earlier values of the same name (for `set-cookie` and the like).
    ///
    /// Panics if the name or value is not valid in HTTP.
    pub fn append_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push(parse_header(name, value));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Reply {
        self.body = body.into();
        self
    }

    /// Waits `delay` before sending the status line and headers.
    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    /// Sends the headers at once, then the body split into `parts` pieces, each sent after
    /// waiting `interval`, so the whole body takes `parts * interval` to arrive.
    ///
    /// Panics if `parts` is zero.
    pub fn slow_body(mut self, interval: Duration, parts: usize) -> Reply {
        assert!(parts > 0, "a slow body needs at least one part");
        self.mode = Mode::Slow { interval, parts };
        self
    }

    /// Returns the status code.
    pub fn status(&self) -> u16 {
        self.status.as_u16()
    }

    /// Builds the response, after the configured delay. For [`Reply::hold`] it never
    /// returns.
    pub(super) async fn respond(&self) -> Response<ReplyBody> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }

        let body = match &self.mode {
            Mode::Full => Full::new(self.body.clone()).boxed(),
            Mode::Hold => std::future::pending().await,
            Mode::Slow { interval, parts } => slow_stream(self.body.clone(), *interval, *parts),
            Mode::Huge { len } => huge_stream(*len),
        };

        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        for (name, value) in &self.headers {
            response.headers_mut().append(name.clone(), value.clone());
        }
        if let Mode::Huge { len } = self.mode {
            response
                .headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(len));
        }
        if !response.headers().contains_key(CONTENT_TYPE) && !self.body.is_empty() {
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
        }
        response
    }
}

fn parse_header(name: &str, value: &str) -> (HeaderName, HeaderValue) {
    let name = HeaderName::from_bytes(name.as_bytes())
        .unwrap_or_else(|error| panic!("invalid header name {name:?}: {error}"));
    let value = HeaderValue::from_str(value)
        .unwrap_or_else(|error| panic!("invalid value {value:?} for header {name}: {error}"));
    (name, value)
}

fn slow_stream(body: Bytes, interval: Duration, parts: usize) -> ReplyBody {
    let part_len = body.len().div_ceil(parts).max(1);
    let pieces: Vec<Bytes> = (0..parts)
        .map(|index| {
            let start = (index * part_len).min(body.len());
            let end = ((index + 1) * part_len).min(body.len());
            body.slice(start..end)
        })
        .collect();

    let stream = futures_util::stream::iter(pieces).then(move |piece| async move {
        tokio::time::sleep(interval).await;
        Ok::<_, Infallible>(Frame::data(piece))
    });
    BodyExt::boxed(StreamBody::new(stream))
}

/// The fixed bytes around the padding of a huge body: `{"pad":"` and `"}` plus padding of
/// `x` characters make a valid JSON object.
const HUGE_FRAME: &str = "{\"pad\":\"\"}";

fn huge_stream(len: usize) -> ReplyBody {
    // Every padding chunk is a slice of one buffer, so streaming many MiB allocates 64 KiB.
    let padding = Bytes::from(vec![b'x'; HUGE_CHUNK_BYTES]);
    let mut remaining_padding = len - HUGE_FRAME.len();
    let mut chunks = vec![Bytes::from_static(b"{\"pad\":\"")];
    while remaining_padding > 0 {
        let size = remaining_padding.min(HUGE_CHUNK_BYTES);
        chunks.push(padding.slice(..size));
        remaining_padding -= size;
    }
    chunks.push(Bytes::from_static(b"\"}"));

    let stream =
        futures_util::stream::iter(chunks).map(|chunk| Ok::<_, Infallible>(Frame::data(chunk)));
    BodyExt::boxed(StreamBody::new(stream))
}
