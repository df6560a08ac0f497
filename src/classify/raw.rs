//! Parsing of a raw HTTP response as `curl -si` writes it: a status line, headers, a blank
//! line and the body, with CRLF or LF line ends. Blocks that precede the real response
//! (`HTTP/1.1 200 Connection established` from a proxy tunnel, any 1xx) are skipped, and a
//! body still in chunked transfer coding is decoded.

use thiserror::Error;

use super::HttpResponse;
use super::facts::collapse_whitespace;

/// Body bytes kept from a raw response; the rest is dropped and `body_truncated` is set.
pub const MAX_RAW_BODY_BYTES: usize = 64 * 1024;

/// Largest header section accepted, in bytes, counted over all response blocks.
pub const MAX_RAW_HEADER_BYTES: usize = 256 * 1024;

/// An error for a byte string that is not a usable HTTP response.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RawResponseError {
    /// The input does not start with an HTTP status line.
    #[error(
        "input is not an HTTP response: expected a status line such as \"HTTP/1.1 200 OK\", \
         found {found:?} (save responses with curl -si)"
    )]
    NotHttp {
        /// The start of the first line, lossy UTF-8.
        found: String,
    },
    /// The status line has no valid three-digit status code.
    #[error("invalid status line {line:?}: expected \"HTTP/<version> <3-digit code> [reason]\"")]
    InvalidStatusLine {
        /// The status line, lossy UTF-8.
        line: String,
    },
    /// A header line has no colon.
    #[error("invalid header on line {line_number}: {line:?} has no \"name: value\" colon")]
    InvalidHeader {
        /// The 1-based line number in the input.
        line_number: usize,
        /// The line, lossy UTF-8.
        line: String,
    },
    /// The header section is larger than [`MAX_RAW_HEADER_BYTES`].
    #[error("header section is larger than {limit} bytes; is the input a raw HTTP response?")]
    HeadersTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
}

/// Characters of an offending line quoted in an error.
const MAX_QUOTED_LINE_CHARS: usize = 80;

/// Parses `input` as a raw HTTP response and returns the final response block.
///
/// Header names are lowercased and values trimmed (lossy UTF-8). A header block that ends
/// without a blank line is accepted with an empty body. The body is decoded from chunked
/// transfer coding when `transfer-encoding: chunked` is set and the body really is chunked
/// (curl usually decodes it already and keeps the header), then capped at
/// [`MAX_RAW_BODY_BYTES`].
///
/// # Errors
///
/// [`RawResponseError`] when the input does not start with a status line, a status line or
/// header line is malformed, or the headers exceed [`MAX_RAW_HEADER_BYTES`].
pub fn parse_raw_response(input: &[u8]) -> Result<HttpResponse, RawResponseError> {
    let mut reader = LineReader::new(input);
    reader.skip_blank_lines();
    loop {
        let block = read_block(&mut reader)?;
        let rest_is_response = reader.rest().trim_ascii_start().starts_with(b"HTTP/");
        if block.is_preamble() && rest_is_response {
            reader.skip_blank_lines();
            continue;
        }
        return Ok(block.into_response(reader.rest()));
    }
}

/// One status line and its headers.
struct Block {
    status: u16,
    reason: String,
    headers: Vec<(String, String)>,
}

impl Block {
    /// Returns true for a block that precedes the real response: an interim 1xx, or the
    /// proxy's reply to CONNECT.
    fn is_preamble(&self) -> bool {
        let tunnel = self.status == 200
            && self
                .reason
                .to_ascii_lowercase()
                .contains("connection established");
        (100..=199).contains(&self.status) || tunnel
    }

    fn into_response(self, body: &[u8]) -> HttpResponse {
        let chunked = self.headers.iter().any(|(name, value)| {
            name == "transfer-encoding" && value.to_ascii_lowercase().contains("chunked")
        });
        let decoded = if chunked {
            decode_chunked(body).unwrap_or_else(|| body.to_vec())
        } else {
            body.to_vec()
        };
        let body_truncated = decoded.len() > MAX_RAW_BODY_BYTES;
        let mut body = decoded;
        body.truncate(MAX_RAW_BODY_BYTES);
        HttpResponse {
            status: self.status,
            headers: self.headers,
            body,
            body_truncated,
        }
    }
}

fn read_block(reader: &mut LineReader<'_>) -> Result<Block, RawResponseError> {
    let Some(status_line) = reader.next_line() else {
        return Err(RawResponseError::NotHttp {
            found: String::new(),
        });
    };
    let (status, reason) = parse_status_line(status_line)?;

    let mut headers: Vec<(String, String)> = Vec::new();
    while let Some(line) = reader.next_line() {
        if line.is_empty() {
            break;
        }
        if reader.consumed() > MAX_RAW_HEADER_BYTES {
            return Err(RawResponseError::HeadersTooLarge {
                limit: MAX_RAW_HEADER_BYTES,
            });
        }
        // A line starting with whitespace continues the previous header (obsolete folding).
        if matches!(line.first(), Some(b' ' | b'\t')) {
            if let Some((_, value)) = headers.last_mut() {
                value.push(' ');
                value.push_str(String::from_utf8_lossy(line).trim());
                continue;
            }
        }
        let Some(colon) = line.iter().position(|&byte| byte == b':') else {
            return Err(RawResponseError::InvalidHeader {
                line_number: reader.line_number(),
                line: quote_line(line),
            });
        };
        let name = String::from_utf8_lossy(&line[..colon])
            .trim()
            .to_ascii_lowercase();
        let value = String::from_utf8_lossy(&line[colon + 1..])
            .trim()
            .to_owned();
        headers.push((name, value));
    }
    Ok(Block {
        status,
        reason,
        headers,
    })
}

/// Parses `HTTP/<version> <code> [reason]`.
fn parse_status_line(line: &[u8]) -> Result<(u16, String), RawResponseError> {
    if !line.starts_with(b"HTTP/") {
        return Err(RawResponseError::NotHttp {
            found: quote_line(line),
        });
    }
    let text = String::from_utf8_lossy(line);
    let mut parts = text.splitn(3, ' ');
    let _version = parts.next();
    let code = parts.next().unwrap_or_default();
    let reason = parts.next().unwrap_or_default().trim().to_owned();
    let valid = code.len() == 3 && code.bytes().all(|byte| byte.is_ascii_digit());
    match code.parse::<u16>() {
        Ok(status) if valid && status >= 100 => Ok((status, reason)),
        _ => Err(RawResponseError::InvalidStatusLine {
            line: quote_line(line),
        }),
    }
}

/// Decodes a chunked body; `None` when `body` is not in chunked coding.
fn decode_chunked(body: &[u8]) -> Option<Vec<u8>> {
    let mut reader = LineReader::new(body);
    let mut decoded = Vec::new();
    loop {
        let size_line = reader.next_line()?;
        let size_text = std::str::from_utf8(size_line).ok()?;
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        if size == 0 {
            // Trailer fields after the last chunk are dropped.
            return Some(decoded);
        }
        let chunk = reader.take(size)?;
        if decoded.len() <= MAX_RAW_BODY_BYTES {
            decoded.extend_from_slice(chunk);
        }
        // Each chunk ends with a line break.
        if !reader.next_line()?.is_empty() {
            return None;
        }
    }
}

fn quote_line(line: &[u8]) -> String {
    String::from_utf8_lossy(line)
        .chars()
        .take(MAX_QUOTED_LINE_CHARS)
        .collect()
}

/// Splits input into lines ending in LF or CRLF, keeping track of the offset.
struct LineReader<'a> {
    input: &'a [u8],
    offset: usize,
    line_number: usize,
}

impl<'a> LineReader<'a> {
    fn new(input: &'a [u8]) -> Self {
        LineReader {
            input,
            offset: 0,
            line_number: 0,
        }
    }

    /// Returns the next line without its line end; `None` at the end of the input.
    fn next_line(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest();
        if rest.is_empty() {
            return None;
        }
        let (line, advance) = match rest.iter().position(|&byte| byte == b'\n') {
            Some(end) => (&rest[..end], end + 1),
            None => (rest, rest.len()),
        };
        self.offset += advance;
        self.line_number += 1;
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }

    /// Returns the next `count` bytes; `None` when fewer remain.
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        let rest = self.rest();
        let taken = rest.get(..count)?;
        self.offset += count;
        Some(taken)
    }

    fn skip_blank_lines(&mut self) {
        while let Some(&byte) = self.rest().first() {
            if !byte.is_ascii_whitespace() {
                break;
            }
            if byte == b'\n' {
                self.line_number += 1;
            }
            self.offset += 1;
        }
    }

    fn rest(&self) -> &'a [u8] {
        &self.input[self.offset..]
    }

    fn consumed(&self) -> usize {
        self.offset
    }

    fn line_number(&self) -> usize {
        self.line_number
    }
}

/// Returns the start of the body as one line of text for display: lossy UTF-8, whitespace
/// runs collapsed to one space, at most `max_chars` characters (a cut text ends with `…`,
/// counted in `max_chars`). It removes no secrets: callers that show it must redact it.
pub fn body_snippet(response: &HttpResponse, max_chars: usize) -> String {
    let text = String::from_utf8_lossy(&response.body);
    let collapsed = collapse_whitespace(&text);
    if collapsed.chars().count() <= max_chars {
        return collapsed;
    }
    if max_chars == 0 {
        return String::new();
    }
    let mut snippet: String = collapsed.chars().take(max_chars - 1).collect();
    snippet.push('…');
    snippet
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_crlf_response_reads_status_headers_body() {
        let response =
            parse_raw_response(b"HTTP/1.1 403 Forbidden\r\nServer: cloudflare\r\n\r\nbody\r\n")
                .unwrap();
        assert_eq!(response.status, 403);
        assert_eq!(
            response.headers,
            [("server".to_owned(), "cloudflare".to_owned())]
        );
        assert_eq!(response.body, b"body\r\n");
        assert!(!response.body_truncated);
    }

    #[test]
    fn parse_lf_http2_response_reads_status() {
        let response = parse_raw_response(b"HTTP/2 429\ncontent-type: text/plain\n\nslow").unwrap();
        assert_eq!(response.status, 429);
        assert_eq!(response.header("Content-Type"), Some("text/plain"));
        assert_eq!(response.body, b"slow");
    }

    #[test]
    fn parse_connect_preamble_is_skipped() {
        let input = b"HTTP/1.1 200 Connection established\r\n\r\nHTTP/2 451\r\n\r\n{}";
        let response = parse_raw_response(input).unwrap();
        assert_eq!(response.status, 451);
        assert_eq!(response.body, b"{}");
    }

    #[test]
    fn parse_http10_preamble_and_100_continue_are_skipped() {
        let input = b"HTTP/1.0 200 Connection Established\n\nHTTP/1.1 100 Continue\n\n\
                      HTTP/1.1 200 OK\nx: 1\n\nok";
        let response = parse_raw_response(input).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"ok");
    }

    #[test]
    fn parse_plain_200_is_not_a_preamble() {
        let input = b"HTTP/1.1 200 OK\n\nHTTP/1.1 is text in the body";
        let response = parse_raw_response(input).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"HTTP/1.1 is text in the body");
    }

    #[test]
    fn parse_chunked_body_is_decoded() {
        let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                      4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nx-trailer: 1\r\n\r\n";
        let response = parse_raw_response(input).unwrap();
        assert_eq!(response.body, b"Wikipedia");
    }

    #[test]
    fn parse_already_decoded_chunked_body_is_kept() {
        let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{\"data\":[]}";
        let response = parse_raw_response(input).unwrap();
        assert_eq!(response.body, b"{\"data\":[]}");
    }

    #[test]
    fn parse_long_body_is_capped() {
        let mut input = b"HTTP/1.1 200 OK\n\n".to_vec();
        input.extend(std::iter::repeat_n(b'a', MAX_RAW_BODY_BYTES + 10));
        let response = parse_raw_response(&input).unwrap();
        assert_eq!(response.body.len(), MAX_RAW_BODY_BYTES);
        assert!(response.body_truncated);
    }

    #[test]
    fn parse_folded_header_joins_value() {
        let input = b"HTTP/1.1 403 Forbidden\nx-note: first\n  second\n\n";
        let response = parse_raw_response(input).unwrap();
        assert_eq!(response.header("x-note"), Some("first second"));
    }

    #[test]
    fn parse_headers_without_blank_line_gives_empty_body() {
        let response =
            parse_raw_response(b"HTTP/1.1 407 Proxy Authentication Required\nvia: x").unwrap();
        assert_eq!(response.status, 407);
        assert!(response.body.is_empty());
    }

    #[test]
    fn parse_non_http_input_is_not_http_error() {
        let error = parse_raw_response(b"<html>hello</html>").unwrap_err();
        assert_eq!(
            error,
            RawResponseError::NotHttp {
                found: "<html>hello</html>".to_owned()
            }
        );
        assert_eq!(
            error.to_string(),
            "input is not an HTTP response: expected a status line such as \"HTTP/1.1 200 OK\", \
             found \"<html>hello</html>\" (save responses with curl -si)"
        );
    }

    #[test]
    fn parse_empty_input_is_not_http_error() {
        let error = parse_raw_response(b"  \n").unwrap_err();
        assert_eq!(
            error,
            RawResponseError::NotHttp {
                found: String::new()
            }
        );
    }

    #[test]
    fn parse_bad_status_code_is_invalid_status_line() {
        let error = parse_raw_response(b"HTTP/1.1 abc Nope\n\n").unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid status line \"HTTP/1.1 abc Nope\": expected \"HTTP/<version> <3-digit code> [reason]\""
        );
    }

    #[test]
    fn parse_header_without_colon_is_invalid_header() {
        let error = parse_raw_response(b"HTTP/1.1 200 OK\nno colon here\n\n").unwrap_err();
        assert_eq!(
            error,
            RawResponseError::InvalidHeader {
                line_number: 2,
                line: "no colon here".to_owned()
            }
        );
    }

    #[test]
    fn parse_huge_headers_is_headers_too_large() {
        let mut input = b"HTTP/1.1 200 OK\n".to_vec();
        for index in 0..20_000 {
            input.extend(format!("x-filler-{index}: {}\n", "v".repeat(20)).as_bytes());
        }
        let error = parse_raw_response(&input).unwrap_err();
        assert_eq!(
            error,
            RawResponseError::HeadersTooLarge {
                limit: MAX_RAW_HEADER_BYTES
            }
        );
    }

    #[test]
    fn parse_invalid_utf8_header_is_lossy() {
        let response =
            parse_raw_response(b"HTTP/1.1 403 Forbidden\nx-odd: \xff\xfe\n\n\xff").unwrap();
        assert_eq!(response.header("x-odd"), Some("\u{fffd}\u{fffd}"));
        assert_eq!(response.body, b"\xff");
    }

    #[test]
    fn body_snippet_collapses_whitespace_and_cuts() {
        let response = HttpResponse {
            body: b"  <html>\n\n  <title>Hi</title>\t</html> ".to_vec(),
            ..HttpResponse::default()
        };
        assert_eq!(
            body_snippet(&response, 100),
            "<html> <title>Hi</title> </html>"
        );
        assert_eq!(body_snippet(&response, 10), "<html> <t…");
        assert_eq!(body_snippet(&response, 0), "");
    }

    #[test]
    fn body_snippet_invalid_utf8_is_lossy() {
        let response = HttpResponse {
            body: b"ok \xff end".to_vec(),
            ..HttpResponse::default()
        };
        assert_eq!(body_snippet(&response, 20), "ok \u{fffd} end");
    }
}
