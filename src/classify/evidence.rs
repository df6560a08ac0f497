//! Evidence: the one line of a verdict that shows an operator what matched. Every line is
//! capped at [`MAX_EVIDENCE_CHARS`], never repeats the value of a credential header, and has
//! key-like tokens replaced with [`REDACTED`], the same mark the redactor writes.

use super::facts::{ResponseFacts, collapse_whitespace, scalar_text, values_at};
use crate::redact::REDACTED;

/// Maximum evidence line length in characters, including the trailing ellipsis of a cut line.
pub const MAX_EVIDENCE_CHARS: usize = 200;

/// Longest quoted body or header text inside an evidence line, in characters.
const MAX_QUOTED_CHARS: usize = 80;

/// Longest body excerpt quoted for a response that no signature matched, in characters.
/// Only the first line of the body is quoted.
const MAX_BODY_EXCERPT_CHARS: usize = 60;

/// Longest redirect target shown, in characters, after its query is removed.
const MAX_LOCATION_CHARS: usize = 100;

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

/// Scrubs key-like tokens from `line`, collapses its whitespace and caps its length at a
/// word boundary.
pub(crate) fn finish(line: &str) -> String {
    let scrubbed = scrub_secrets(&collapse_whitespace(line));
    truncate_words(&scrubbed, MAX_EVIDENCE_CHARS)
}

/// Quotes `text` for an evidence line, cut at a word boundary within [`MAX_QUOTED_CHARS`].
pub(crate) fn quote(text: &str) -> String {
    quote_within(text, MAX_QUOTED_CHARS)
}

/// Quotes `text`, scrubbed before it is cut: a token cut first could slip past the
/// scrubber, and a cut inside a word is moved back to the word's start.
fn quote_within(text: &str, max_chars: usize) -> String {
    let scrubbed = scrub_secrets(&collapse_whitespace(text));
    format!("\"{}\"", truncate_words(&scrubbed, max_chars))
}

/// Describes a redirect target as `redirect to <target>`. The query and fragment are
/// replaced with `?…` and user info is removed, because either can carry a credential.
pub(crate) fn describe_redirect(location: &str) -> String {
    let location = location.trim();
    let (target, had_query) = match location.find(['?', '#']) {
        Some(cut) => (&location[..cut], true),
        None => (location, false),
    };
    let target = strip_user_info(target);
    let mut shown = truncate_chars(&scrub_secrets(&target), MAX_LOCATION_CHARS);
    if had_query && !shown.ends_with('…') {
        shown.push_str("?…");
    }
    format!("redirect to {shown}")
}

/// Removes `user:password@` from an absolute URL's authority.
fn strip_user_info(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let authority_len = url[authority_start..]
        .find('/')
        .unwrap_or(url.len() - authority_start);
    let authority = &url[authority_start..authority_start + authority_len];
    match authority.rfind('@') {
        Some(at) => format!(
            "{}{}",
            &url[..authority_start],
            &url[authority_start + at + 1..]
        ),
        None => url.to_owned(),
    }
}

/// Describes a matched header. For credential headers only the name and the matched text
/// appear, never the value.
pub(crate) fn describe_header(name: &str, value: &str, matched: Option<&str>) -> String {
    let name = name.to_ascii_lowercase();
    if name == "location" {
        return describe_redirect(value);
    }
    let secret = SECRET_HEADERS.contains(&name.as_str());
    match (secret, matched) {
        (true, Some(text)) => format!("header {name} contains {}", quote(text)),
        (true, None) => format!("header {name} present"),
        (false, _) => format!(
            "header {name}: {}",
            truncate_words(&scrub_secrets(value.trim()), MAX_QUOTED_CHARS)
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
    let first_line = facts
        .text
        .lines()
        .find(|line| !line.trim().is_empty())
        .unwrap_or_default();
    format!("body {}", quote_within(first_line, MAX_BODY_EXCERPT_CHARS))
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

/// Cuts `text` to `max_chars` characters like [`truncate_chars`], but never inside a word:
/// a cut word is dropped whole, so a cut text may be much shorter, down to only `…`.
pub(crate) fn truncate_words(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let kept: String = text.chars().take(max_chars.saturating_sub(1)).collect();
    let next = text.chars().nth(kept.chars().count());
    let cut_inside_word = next.is_some_and(|c| !c.is_whitespace());
    let mut cut = if cut_inside_word {
        match kept.rfind(char::is_whitespace) {
            Some(space) => kept[..space].to_owned(),
            None => String::new(),
        }
    } else {
        kept
    };
    cut.truncate(cut.trim_end().len());
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
    fn finish_long_line_is_capped_at_a_word() {
        let line = finish(&"word ".repeat(100));
        // 40 words and their spaces end at character 199, so the 40th word fits whole.
        assert_eq!(line, format!("{}…", "word ".repeat(40).trim_end()));
        assert_eq!(line.chars().count(), MAX_EVIDENCE_CHARS);
    }

    #[test]
    fn truncate_words_drops_a_cut_word() {
        assert_eq!(truncate_words("abc defgh", 8), "abc…");
        assert_eq!(truncate_words("abc defgh", 9), "abc defgh");
        assert_eq!(truncate_words("abc def gh", 8), "abc def…");
        assert_eq!(truncate_words("abcdefghij", 5), "…");
    }

    #[test]
    fn quote_cut_secret_is_dropped_not_shown() {
        let text = format!("authorization: Bearer {}", "BEARERSECRET33".repeat(6));
        assert_eq!(
            quote_within(&text, 40),
            "\"authorization: Bearer [REDACTED]\""
        );
        let unscrubbable = format!("authorization: Bearer {}", "s3cr3t".repeat(3));
        assert_eq!(
            quote_within(&unscrubbable, 30),
            "\"authorization: Bearer…\""
        );
    }

    #[test]
    fn describe_redirect_drops_query_and_user_info() {
        assert_eq!(
            describe_redirect("https://api.example.com/v2/models"),
            "redirect to https://api.example.com/v2/models"
        );
        assert_eq!(
            describe_redirect("https://u:pw@api.example.com/v2/models?key=SECRET&x=1"),
            "redirect to https://api.example.com/v2/models?…"
        );
        assert_eq!(describe_redirect("/login#top"), "redirect to /login?…");
        let long = format!("https://api.example.com/{}", "segment/".repeat(20));
        assert_eq!(
            describe_redirect(&long).chars().count(),
            "redirect to ".len() + MAX_LOCATION_CHARS
        );
    }
}
