//! Redaction: removes secrets from any text that leaves the process (status JSON, metrics,
//! logs, command output, error messages).
//!
//! Two layers work together: the exact secret values that the config names (API keys, proxy
//! passwords, sensitive header values), and patterns that hide credentials even when their
//! value is not known in advance (`user:password@` in URLs, `key=` query parameters).

use url::Url;

use crate::classify::Observation;

/// The text that replaces every secret.
pub const REDACTED: &str = "[REDACTED]";

/// Secrets shorter than this are not searched for: replacing every "a" in a body would
/// destroy the text without hiding anything worth hiding.
const MIN_SECRET_LEN: usize = 4;

/// Replaces known secret values and credential patterns in text.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Secret values, longest first so that a secret containing another is replaced whole.
    secrets: Vec<String>,
}

impl Redactor {
    /// Builds a redactor for these secret values; empty and very short values are ignored.
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .filter(|secret| secret.len() >= MIN_SECRET_LEN)
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Redactor { secrets }
    }

    /// Returns `text` with every known secret and credential pattern replaced by [`REDACTED`].
    pub fn redact(&self, text: &str) -> String {
        let mut clean = text.to_owned();
        for secret in &self.secrets {
            if clean.contains(secret.as_str()) {
                clean = clean.replace(secret.as_str(), REDACTED);
            }
        }
        redact_patterns(&clean)
    }

    /// Replaces every known secret in a probe's observation: the body bytes, the header
    /// values and a transport error's detail. The probe calls this before anything reads the
    /// observation, so the classifier's evidence and the body snippet are cut from text that
    /// no longer contains a secret; cutting first could leave the start of one behind.
    ///
    /// The body may get shorter or longer by the difference between a secret and the mark.
    pub fn redact_observation(&self, observation: &mut Observation) {
        match observation {
            Observation::Response(response) => {
                if let Some(clean) = self.redact_bytes(&response.body) {
                    response.body = clean;
                }
                for (_, value) in &mut response.headers {
                    *value = self.redact(value);
                }
            }
            Observation::Transport(error) => error.detail = self.redact(&error.detail),
        }
    }

    /// Returns `bytes` with every known secret replaced by [`REDACTED`], or `None` when no
    /// secret occurs. A secret cut by the end of the bytes (a body stopped at its cap) is
    /// replaced too, when at least four of its characters remain.
    pub fn redact_bytes(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let mut clean: Option<Vec<u8>> = None;
        for secret in &self.secrets {
            let current = clean.as_deref().unwrap_or(bytes);
            let replaced = replace_bytes(current, secret.as_bytes());
            let replaced =
                replace_cut_tail(replaced.as_deref().unwrap_or(current), secret.as_bytes())
                    .or(replaced);
            if replaced.is_some() {
                clean = replaced;
            }
        }
        clean
    }

    /// Returns the URL as text with its password and `key` query value replaced.
    pub fn redact_url(&self, url: &Url) -> String {
        self.redact(&redact_url(url))
    }
}

/// Returns `haystack` with every occurrence of `needle` replaced, or `None` when there is none.
fn replace_bytes(haystack: &[u8], needle: &[u8]) -> Option<Vec<u8>> {
    let first = find_bytes(haystack, needle)?;
    let mut out = Vec::with_capacity(haystack.len());
    out.extend_from_slice(&haystack[..first]);
    out.extend_from_slice(REDACTED.as_bytes());
    let mut rest = &haystack[first + needle.len()..];
    while let Some(next) = find_bytes(rest, needle) {
        out.extend_from_slice(&rest[..next]);
        out.extend_from_slice(REDACTED.as_bytes());
        rest = &rest[next + needle.len()..];
    }
    out.extend_from_slice(rest);
    Some(out)
}

fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return None;
    }
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Replaces a tail of `bytes` that is a cut-off start of `secret` (at least
/// [`MIN_SECRET_LEN`] bytes long).
fn replace_cut_tail(bytes: &[u8], secret: &[u8]) -> Option<Vec<u8>> {
    let longest = secret.len().saturating_sub(1).min(bytes.len());
    let cut = (MIN_SECRET_LEN..=longest)
        .rev()
        .find(|&length| bytes.ends_with(&secret[..length]))?;
    let mut out = bytes[..bytes.len() - cut].to_vec();
    out.extend_from_slice(REDACTED.as_bytes());
    Some(out)
}

/// Returns the URL as text with the password and any `key`, `api_key` or `api-key` query
/// value replaced by [`REDACTED`].
pub fn redact_url(url: &Url) -> String {
    let mut clean = url.clone();
    if clean.password().is_some() {
        // set_password fails only for URLs that cannot have credentials, which have none.
        let _ = clean.set_password(Some(REDACTED));
    }
    if clean.query().is_some() {
        let pairs: Vec<(String, String)> = clean
            .query_pairs()
            .map(|(name, value)| {
                let value = if is_secret_query_name(&name) {
                    REDACTED.to_owned()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        clean.query_pairs_mut().clear().extend_pairs(pairs);
    }
    // The URL serialiser percent-encodes the brackets of the mark; show it as written.
    clean.as_str().replace("%5BREDACTED%5D", REDACTED)
}

fn is_secret_query_name(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "key" | "api_key" | "api-key" | "apikey" | "access_token" | "token"
    )
}

/// Hides `scheme://user:password@` credentials and `key=` query values in free text, such as
/// an error message that quotes a URL.
fn redact_patterns(text: &str) -> String {
    let text = redact_userinfo(text);
    redact_query_keys(&text)
}

fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("://") {
        let (head, tail) = rest.split_at(start + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace() || c == '"')
            .unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.split_once(':') {
                    Some((user, _password)) => {
                        out.push_str(user);
                        out.push(':');
                        out.push_str(REDACTED);
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    out
}

fn redact_query_keys(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let Some(position) = find_query_key(rest) else {
            out.push_str(rest);
            return out;
        };
        let (head, tail) = rest.split_at(position);
        out.push_str(head);
        let value_end = tail
            .find(|c: char| c == '&' || c == '#' || c == '"' || c == '\'' || c.is_whitespace())
            .unwrap_or(tail.len());
        if tail[..value_end].starts_with(REDACTED) {
            out.push_str(&tail[..value_end]);
        } else {
            out.push_str(REDACTED);
        }
        rest = &tail[value_end..];
    }
}

/// Returns the byte offset of the value after `?key=` or `&key=` (and the other secret names).
fn find_query_key(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut best: Option<usize> = None;
    for name in [
        "key=",
        "api_key=",
        "api-key=",
        "apikey=",
        "access_token=",
        "token=",
    ] {
        let mut from = 0;
        while let Some(found) = text[from..].find(name) {
            let at = from + found;
            let preceded_by_separator = at > 0 && matches!(bytes[at - 1], b'?' | b'&');
            if preceded_by_separator {
                let value_start = at + name.len();
                best = Some(best.map_or(value_start, |b: usize| b.min(value_start)));
                break;
            }
            from = at + name.len();
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_known_secret_is_replaced() {
        let redactor = Redactor::new(["sk-test-123456".to_owned()]);
        assert_eq!(
            redactor.redact("Incorrect API key provided: sk-test-123456."),
            "Incorrect API key provided: [REDACTED]."
        );
    }

    #[test]
    fn redact_short_secret_is_ignored() {
        let redactor = Redactor::new(["ab".to_owned(), String::new()]);
        assert_eq!(redactor.redact("a cab"), "a cab");
    }

    #[test]
    fn redact_longer_secret_wins_over_its_prefix() {
        let redactor = Redactor::new(["abcd".to_owned(), "abcdefgh".to_owned()]);
        assert_eq!(
            redactor.redact("x abcdefgh y abcd"),
            "x [REDACTED] y [REDACTED]"
        );
    }

    #[test]
    fn redact_bytes_replaces_whole_and_cut_secrets() {
        let redactor = Redactor::new(["BEARERSECRET333".to_owned()]);
        assert_eq!(
            redactor
                .redact_bytes(b"a BEARERSECRET333 b BEARERSEC")
                .unwrap(),
            b"a [REDACTED] b [REDACTED]".to_vec()
        );
        assert_eq!(redactor.redact_bytes(b"nothing here BEA"), None);
    }

    #[test]
    fn redact_url_hides_password_and_key_query() {
        let url =
            Url::parse("socks5h://user:hunter22@127.0.0.1:1080/?key=AIzaSecret&alt=json").unwrap();
        assert_eq!(
            redact_url(&url),
            "socks5h://user:[REDACTED]@127.0.0.1:1080/?key=[REDACTED]&alt=json"
        );
    }

    #[test]
    fn redact_text_hides_userinfo_and_query_key() {
        let redactor = Redactor::default();
        assert_eq!(
            redactor
                .redact("proxy socks5://bob:pw1@10.0.0.1:1080 failed for https://x/v1?key=abc&a=1"),
            "proxy socks5://bob:[REDACTED]@10.0.0.1:1080 failed for https://x/v1?key=[REDACTED]&a=1"
        );
    }

    #[test]
    fn redact_observation_hides_body_and_headers() {
        use crate::classify::HttpResponse;

        let redactor = Redactor::new(["tok-5512".to_owned()]);
        let mut observation = Observation::Response(HttpResponse {
            status: 401,
            headers: vec![("www-authenticate".to_owned(), "Bearer tok-5512".to_owned())],
            body: b"\xffbad tok-5512 and tok-5512!".to_vec(),
            body_truncated: false,
        });
        redactor.redact_observation(&mut observation);
        let Observation::Response(response) = observation else {
            panic!("still a response");
        };
        assert_eq!(response.body, b"\xffbad [REDACTED] and [REDACTED]!");
        assert_eq!(response.headers[0].1, "Bearer [REDACTED]");
    }

    #[test]
    fn replace_bytes_without_match_is_none() {
        assert_eq!(replace_bytes(b"abc", b"zz"), None);
        assert_eq!(
            replace_bytes(b"zzabzz", b"zz"),
            Some(b"[REDACTED]ab[REDACTED]".to_vec())
        );
    }

    #[test]
    fn redact_text_keeps_monkey_param() {
        let redactor = Redactor::default();
        assert_eq!(
            redactor.redact("https://x/?monkey=1"),
            "https://x/?monkey=1"
        );
    }
}
