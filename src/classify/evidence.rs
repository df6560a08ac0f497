//! Evidence: the one line of a verdict that shows an operator what matched. Every line is
//! capped at [`MAX_EVIDENCE_CHARS`], never repeats the value of a credential header, and has
//! key-like tokens replaced with [`REDACTED`], the same mark the redactor writes.

use super::facts::{ResponseFacts, collapse_whitespace, scalar_text, values_at};
use crate::redact::REDACTED;

/// Maximum evidence line length in characters, including the trailing ellipsis of a cut line.
pub const MAX_EVIDENCE_CHARS: usize = 200;

/// Longest quoted body or header text inside an evidence line, in characters.
const MAX_QUOTED_CHARS: usize = 80;

/// Headers whose values are credentials; evidence names them but never shows their values.
const SECRET_HEADERS: [&str; 8] = [
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "cookie",
    "set-cookie",
    "ocp-apim-subscription-key",
];

/// Prefixes of provider API keys; a token with one of these and 12 or more characters is
/// treated as a key.
const KEY_PREFIXES: [&str; 6] = ["sk-", "sk_", "gsk_", "xai-", "aiza", "pk-"];

/// A token this long made of letters and digits (both present), `-` and `_` is treated as a
/// secret. Requiring a digit keeps long snake_case error codes readable.
const MIN_OPAQUE_TOKEN_CHARS: usize = 32;

/// Joins the status and the fragments into one capped, scrubbed line.
pub(crate) fn response_line(status: u16, fragments: &[String]) -> String {
    let mut line = format!("HTTP {status}");
    for fragment in fragments {
        line.push_str("; ");
        line.push_str(fragment);
    }
    finish(&line)
}

/// Scrubs key-like tokens from `line`, collapses its whitespace and caps its length.
pub(crate) fn finish(line: &str) -> String {
    let scrubbed = scrub_secrets(&collapse_whitespace(line));
    truncate_chars(&scrubbed, MAX_EVIDENCE_CHARS)
}

/// Quotes `text` for an evidence line, cut at [`MAX_QUOTED_CHARS`].
pub(crate) fn quote(text: &str) -> String {
    let collapsed = collapse_whitespace(text);
    format!("\"{}\"", truncate_chars(&collapsed, MAX_QUOTED_CHARS))
}

/// Describes a matched header. For credential headers only the name and the matched text
/// appear, never the value.
pub(crate) fn describe_header(name: &str, value: &str, matched: Option<&str>) -> String {
    let name = name.to_ascii_lowercase();
    let secret = SECRET_HEADERS.contains(&name.as_str());
    match (secret, matched) {
        (true, Some(text)) => format!("header {name} contains {}", quote(text)),
        (true, None) => format!("header {name} present"),
        (false, _) => format!(
            "header {name}: {}",
            truncate_chars(value.trim(), MAX_QUOTED_CHARS)
        ),
    }
}

/// Summarises a response that no signature matched: JSON error fields, the HTML title, or
/// the start of the body.
pub(crate) fn summarize_body(facts: &ResponseFacts<'_>) -> String {
    if facts.body_is_empty() {
        return "empty body".to_owned();
    }
    if let Some(document) = facts.documents().first() {
        let fragments = json_summary(document);
        if !fragments.is_empty() {
            return fragments.join("; ");
        }
        return "JSON body".to_owned();
    }
    if facts.body_is_html() {
        return match facts.title() {
            Some(title) if !title.is_empty() => format!("HTML title {}", quote(title)),
            _ => "HTML body without a title".to_owned(),
        };
    }
    format!("body {}", quote(&facts.text))
}

/// Returns fragments for the best-known error fields of a JSON error document: at most one
/// code-like field and one message.
fn json_summary(document: &serde_json::Value) -> Vec<String> {
    let mut fragments = Vec::new();
    let code_paths = [
        "error.code",
        "error.type",
        "error.status",
        "code",
        "type",
        "error",
    ];
    for path in code_paths {
        if let Some(text) = first_scalar(document, path) {
            fragments.push(format!("JSON {path} = {}", truncate_chars(&text, 60)));
            break;
        }
    }
    for path in ["error.message", "message", "detail"] {
        if let Some(text) = first_scalar(document, path) {
            fragments.push(format!("JSON {path} {}", quote(&text)));
            break;
        }
    }
    fragments
}

fn first_scalar(document: &serde_json::Value, path: &str) -> Option<String> {
    values_at(document, path)
        .into_iter()
        .filter(|value| !value.is_null())
        .find_map(scalar_text)
        .map(|text| text.into_owned())
}

/// Replaces key-like tokens with [`REDACTED`]: provider key prefixes and long opaque tokens.
/// Known secrets are removed before classification; this catches keys the config does not
/// name, such as a provider echoing a key from another request.
pub(crate) fn scrub_secrets(text: &str) -> String {
    let mut scrubbed = String::with_capacity(text.len());
    let mut token_start = None;
    for (index, character) in text.char_indices() {
        let in_token = character.is_ascii_alphanumeric() || character == '-' || character == '_';
        match (in_token, token_start) {
            (true, None) => token_start = Some(index),
            (false, Some(start)) => {
                push_token(&mut scrubbed, &text[start..index]);
                token_start = None;
                scrubbed.push(character);
            }
            (false, None) => scrubbed.push(character),
            (true, Some(_)) => {}
        }
    }
    if let Some(start) = token_start {
        push_token(&mut scrubbed, &text[start..]);
    }
    scrubbed
}

fn push_token(out: &mut String, token: &str) {
    let lower = token.to_ascii_lowercase();
    let has_key_prefix = KEY_PREFIXES.iter().any(|prefix| lower.starts_with(prefix));
    let opaque = token.len() >= MIN_OPAQUE_TOKEN_CHARS
        && token.bytes().any(|b| b.is_ascii_digit())
        && token.bytes().any(|b| b.is_ascii_alphabetic());
    if opaque || (has_key_prefix && token.len() >= 12) {
        out.push_str(REDACTED);
    } else {
        out.push_str(token);
    }
}

/// Cuts `text` to `max_chars` characters, ending a cut text with `…` within the limit.
pub(crate) fn truncate_chars(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max_chars.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_secrets_openai_key_is_redacted() {
        assert_eq!(
            scrub_secrets("Incorrect API key provided: sk-proj-abcdefghijklmnop."),
            "Incorrect API key provided: [REDACTED]."
        );
    }

    #[test]
    fn scrub_secrets_masked_key_is_kept() {
        assert_eq!(
            scrub_secrets("Incorrect API key provided: sk-ab***yz."),
            "Incorrect API key provided: sk-ab***yz."
        );
    }

    #[test]
    fn scrub_secrets_long_opaque_token_is_redacted() {
        let token = "a1".repeat(20);
        assert_eq!(
            scrub_secrets(&format!("token {token} end")),
            "token [REDACTED] end"
        );
    }

    #[test]
    fn scrub_secrets_long_error_code_is_kept() {
        assert_eq!(
            scrub_secrets("code = unsupported_country_region_territory"),
            "code = unsupported_country_region_territory"
        );
    }

    #[test]
    fn scrub_secrets_ray_id_is_kept() {
        assert_eq!(
            scrub_secrets("ray 8f1c2a3b4d5e6f70-HKG"),
            "ray 8f1c2a3b4d5e6f70-HKG"
        );
    }

    #[test]
    fn describe_header_cookie_hides_value() {
        assert_eq!(
            describe_header("set-cookie", "__cf_bm=secretvalue; path=/", Some("__cf_bm")),
            "header set-cookie contains \"__cf_bm\""
        );
        assert_eq!(
            describe_header("Authorization", "Bearer sk-live", None),
            "header authorization present"
        );
    }

    #[test]
    fn describe_header_plain_header_shows_value() {
        assert_eq!(
            describe_header("cf-mitigated", "challenge", Some("challenge")),
            "header cf-mitigated: challenge"
        );
    }

    #[test]
    fn truncate_chars_long_text_ends_with_ellipsis() {
        assert_eq!(truncate_chars("abcdef", 4), "abc…");
        assert_eq!(truncate_chars("abcd", 4), "abcd");
        assert_eq!(truncate_chars("ééééé", 3), "éé…");
    }

    #[test]
    fn finish_long_line_is_capped() {
        let line = finish(&"word ".repeat(100));
        assert_eq!(line.chars().count(), MAX_EVIDENCE_CHARS);
        assert!(line.ends_with('…'));
    }
}
