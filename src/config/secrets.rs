//! The secret values in a validated config, for the redactor.
//!
//! API keys are not kept apart once a monitor is built: a preset puts the key in a header
//! or a query parameter, so scanning sensitive headers and parameters finds every key, both
//! preset and hand-written.

use url::Url;

use super::Config;

/// Parts of header and query parameter names that mark a value as secret
/// (`authorization`, `x-api-key`, `api-key`, `x-goog-api-key`, `x-auth-token`, `cookie`...).
const SENSITIVE_NAME_PARTS: &[&str] = &[
    "auth", "key", "token", "secret", "password", "cookie", "session", "sig",
];

fn is_sensitive(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SENSITIVE_NAME_PARTS.iter().any(|part| lower.contains(part))
}

/// Collects the secrets of `config`, longest first, without duplicates or empty strings.
pub(super) fn collect(config: &Config) -> Vec<String> {
    let mut secrets = Vec::new();

    for route in &config.routes {
        if let Some(proxy) = &route.proxy {
            add_url_password(&mut secrets, proxy);
        }
    }

    for monitor in &config.monitors {
        add_url_password(&mut secrets, &monitor.url);
        for (name, value) in monitor.url.query_pairs() {
            if is_sensitive(&name) {
                secrets.push(value.into_owned());
            }
        }
        for (name, value) in &monitor.headers {
            if is_sensitive(name) {
                add_header_value(&mut secrets, value);
            }
        }
    }

    secrets.retain(|secret| !secret.is_empty());
    // Longest first: a redactor that replaces in this order cannot break up a longer secret
    // by first replacing a shorter secret contained in it.
    secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    secrets.dedup();
    secrets
}

/// Adds a header value and, for `Scheme credentials` forms such as Bearer, the credentials.
fn add_header_value(secrets: &mut Vec<String>, value: &str) {
    secrets.push(value.to_owned());
    if let Some((_, credentials)) = value.trim().split_once(' ') {
        secrets.push(credentials.trim().to_owned());
    }
}

/// Adds the password of a URL as written (percent-encoded) and decoded, and the Basic
/// credentials built from the user info: reqwest sends `Authorization: Basic` (or
/// `Proxy-Authorization: Basic`) with the base64 of the decoded `user:password`, and the
/// form without decoding is added too in case a client does not decode.
fn add_url_password(secrets: &mut Vec<String>, url: &Url) {
    let Some(password) = url.password() else {
        return;
    };
    secrets.push(password.to_owned());
    let user = url.username();
    secrets.push(base64_encode(format!("{user}:{password}").as_bytes()));

    let decoded_user = percent_decode(user).unwrap_or_else(|()| user.to_owned());
    if let Ok(decoded) = percent_decode(password) {
        secrets.push(base64_encode(
            format!("{decoded_user}:{decoded}").as_bytes(),
        ));
        secrets.push(decoded);
    }
}

/// Encodes `bytes` as standard base64 with padding (RFC 4648), as HTTP Basic credentials are.
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut encoded = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let group = chunk.iter().enumerate().fold(0u32, |group, (index, byte)| {
            group | u32::from(*byte) << (16 - 8 * index)
        });
        for position in 0..4 {
            if position <= chunk.len() {
                let index = (group >> (18 - 6 * position)) & 0x3f;
                encoded.push(char::from(ALPHABET[index as usize]));
            } else {
                encoded.push('=');
            }
        }
    }
    encoded
}

/// Decodes `%XX` escapes; fails on malformed escapes or invalid UTF-8.
fn percent_decode(text: &str) -> Result<String, ()> {
    let bytes = text.as_bytes();
    let mut output = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text.get(index + 1..index + 3).ok_or(())?;
            output.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
            index += 3;
        } else {
            output.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(output).map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decode_cases() {
        assert_eq!(percent_decode("p%40ss%3A1"), Ok("p@ss:1".to_owned()));
        assert_eq!(percent_decode("plain"), Ok("plain".to_owned()));
        assert_eq!(percent_decode("bad%4"), Err(()));
    }

    #[test]
    fn base64_encode_known_values() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(
            base64_encode(b"Aladdin:open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }

    #[test]
    fn add_url_password_adds_basic_credentials() {
        let url = Url::parse("http://user:p%40ss@127.0.0.1:3128").unwrap();
        let mut secrets = Vec::new();
        add_url_password(&mut secrets, &url);
        assert_eq!(
            secrets,
            [
                "p%40ss",
                // base64 of "user:p%40ss"
                "dXNlcjpwJTQwc3M=",
                // base64 of "user:p@ss", what reqwest sends
                "dXNlcjpwQHNz",
                "p@ss",
            ]
        );
    }

    #[test]
    fn is_sensitive_names() {
        for name in [
            "Authorization",
            "Proxy-Authorization",
            "x-api-key",
            "api-key",
            "key",
            "X-Auth-Token",
        ] {
            assert!(is_sensitive(name), "{name}");
        }
        for name in ["anthropic-version", "accept", "content-type", "api-version"] {
            assert!(!is_sensitive(name), "{name}");
        }
    }
}
