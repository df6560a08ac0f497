//! A prepared view of one HTTP response that the matchers share: the body as text and in ASCII
//! lowercase, the parsed JSON documents, the HTML title and the hits of the built-in body
//! needles. Each is computed at most once per classification, on first use.

use std::borrow::Cow;
use std::cell::OnceCell;

use serde_json::Value;

use super::HttpResponse;
use super::signatures::NeedleIndex;

/// Maximum body bytes the classifier reads. The probe's default body cap is the same size,
/// so only a response built by hand can be longer.
pub(crate) const MAX_SCAN_BYTES: usize = 64 * 1024;

/// String values nested inside a JSON document that are parsed as JSON in turn, at most.
const MAX_NESTED_DOCUMENTS: usize = 4;

/// JSON values visited when looking for nested JSON strings, at most.
const MAX_VISITED_VALUES: usize = 512;

/// Longest HTML title kept, in characters.
const MAX_TITLE_CHARS: usize = 120;

/// The facts of one response, prepared for matching.
pub(crate) struct ResponseFacts<'a> {
    pub(crate) response: &'a HttpResponse,
    /// The scanned body prefix as lossy UTF-8.
    pub(crate) text: Cow<'a, str>,
    /// `text` in ASCII lowercase; byte offsets are the same as in `text`.
    pub(crate) lower: String,
    /// The content-type header value in ASCII lowercase, empty when absent.
    pub(crate) content_type: String,
    documents: OnceCell<Vec<Value>>,
    title: OnceCell<Option<String>>,
    needle_hits: OnceCell<Vec<bool>>,
    needles: &'a NeedleIndex,
}

impl<'a> ResponseFacts<'a> {
    /// Prepares `response`; `needles` is the built-in body needle index.
    pub(crate) fn new(response: &'a HttpResponse, needles: &'a NeedleIndex) -> Self {
        let scanned = &response.body[..response.body.len().min(MAX_SCAN_BYTES)];
        // The standard library's validation is much faster than `from_utf8_lossy` on valid
        // input, which is the common case.
        let text = match std::str::from_utf8(scanned) {
            Ok(valid) => Cow::Borrowed(valid),
            Err(_) => String::from_utf8_lossy(scanned),
        };
        let lower = text.to_ascii_lowercase();
        let content_type = response
            .header("content-type")
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        ResponseFacts {
            response,
            text,
            lower,
            content_type,
            documents: OnceCell::new(),
            title: OnceCell::new(),
            needle_hits: OnceCell::new(),
            needles,
        }
    }

    /// Returns true when the body, ignoring leading whitespace, is empty.
    pub(crate) fn body_is_empty(&self) -> bool {
        self.lower.trim_start().is_empty()
    }

    /// Returns true when the body starts like a JSON object or array.
    pub(crate) fn body_looks_json(&self) -> bool {
        matches!(
            self.lower.trim_start().as_bytes().first(),
            Some(b'{' | b'[')
        )
    }

    /// Returns true when the body is JSON: it parses, or it starts like JSON and was cut at
    /// the body cap so it cannot parse.
    pub(crate) fn body_is_json(&self) -> bool {
        if !self.body_looks_json() {
            return false;
        }
        let cut = self.response.body_truncated || self.response.body.len() > MAX_SCAN_BYTES;
        cut || !self.documents().is_empty()
    }

    /// Returns true when the content type names HTML or the body starts with HTML markup.
    pub(crate) fn body_is_html(&self) -> bool {
        if self.content_type.contains("html") {
            return true;
        }
        let start = self
            .lower
            .trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
        [
            "<!doctype html",
            "<html",
            "<head",
            "<body",
            "<title",
            "<meta",
            "<script",
        ]
        .iter()
        .any(|tag| start.starts_with(tag))
    }

    /// Returns the parsed JSON body followed by JSON documents found in its string values
    /// (an error message that carries an upstream error as JSON text). Empty when the body
    /// is not JSON. serde_json stops at 128 levels of nesting, so deep input fails fast.
    pub(crate) fn documents(&self) -> &[Value] {
        self.documents.get_or_init(|| {
            if !self.body_looks_json() {
                return Vec::new();
            }
            match serde_json::from_str::<Value>(&self.text) {
                Ok(document) => with_nested_documents(document),
                Err(_) => Vec::new(),
            }
        })
    }

    /// Returns the text of the HTML `<title>`, whitespace collapsed and common entities
    /// decoded, or `None` when the body has no title.
    pub(crate) fn title(&self) -> Option<&str> {
        self.title
            .get_or_init(|| extract_title(&self.text, &self.lower))
            .as_deref()
    }

    /// Returns true when the lowercased body contains `needle` (compared in ASCII lowercase).
    pub(crate) fn body_contains(&self, needle: &str) -> bool {
        let needle: Cow<'_, str> = if needle.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(needle.to_ascii_lowercase())
        } else {
            Cow::Borrowed(needle)
        };
        match self.needles.position(&needle) {
            Some(index) => self
                .needle_hits
                .get_or_init(|| self.needles.scan(&self.lower))[index],
            None => self.lower.contains(needle.as_ref()),
        }
    }
}

/// Returns `document` followed by up to [`MAX_NESTED_DOCUMENTS`] documents parsed from its
/// string values, searched breadth first and one level deep per nested document.
fn with_nested_documents(document: Value) -> Vec<Value> {
    let mut documents = vec![document];
    let mut next = 0;
    while next < documents.len() && documents.len() <= MAX_NESTED_DOCUMENTS {
        let found = nested_json_strings(&documents[next]);
        for text in found {
            if documents.len() > MAX_NESTED_DOCUMENTS {
                break;
            }
            if let Ok(inner) = serde_json::from_str::<Value>(&text) {
                documents.push(inner);
            }
        }
        next += 1;
    }
    documents
}

/// Returns the JSON-looking parts (from the first `{` to the last `}`) of string values in
/// `document`, visiting at most [`MAX_VISITED_VALUES`] values.
fn nested_json_strings(document: &Value) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![document];
    let mut visited = 0;
    while let Some(value) = stack.pop() {
        visited += 1;
        if visited > MAX_VISITED_VALUES || found.len() >= MAX_NESTED_DOCUMENTS {
            break;
        }
        match value {
            Value::String(text) if text.contains("{\"") => {
                let start = text.find('{').unwrap_or(0);
                let end = text.rfind('}').map_or(text.len(), |end| end + 1);
                if start < end {
                    found.push(text[start..end].to_owned());
                }
            }
            Value::Array(items) => stack.extend(items.iter().rev()),
            Value::Object(fields) => stack.extend(fields.values().rev()),
            _ => {}
        }
    }
    found
}

/// Finds `<title ...>...</title>` in `lower` and returns that span of `text`, tidied.
fn extract_title(text: &str, lower: &str) -> Option<String> {
    let open = lower.find("<title")?;
    let content_start = open + lower[open..].find('>')? + 1;
    // An unclosed title (a page cut at the body cap) keeps what follows, up to the cap below.
    let content_len = lower[content_start..]
        .find("</title")
        .unwrap_or(lower.len() - content_start);
    let mut content_end = content_start + content_len.min(MAX_TITLE_CHARS * 4);
    while !text.is_char_boundary(content_end) {
        content_end -= 1;
    }
    let raw = &text[content_start..content_end];
    let decoded = decode_entities(raw);
    let collapsed = collapse_whitespace(&decoded);
    Some(collapsed.chars().take(MAX_TITLE_CHARS).collect())
}

/// Decodes the HTML entities that block pages put in titles.
fn decode_entities(raw: &str) -> Cow<'_, str> {
    if !raw.contains('&') {
        return Cow::Borrowed(raw);
    }
    let mut decoded = raw.to_owned();
    for (entity, character) in [
        ("&lt;", "<"),
        ("&gt;", ">"),
        ("&quot;", "\""),
        ("&#39;", "'"),
        ("&#x27;", "'"),
        ("&nbsp;", " "),
        ("&#32;", " "),
        ("&amp;", "&"),
    ] {
        decoded = decoded.replace(entity, character);
    }
    Cow::Owned(decoded)
}

/// Replaces every run of whitespace with one space and trims both ends.
pub(crate) fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Returns the JSON values at a dotted `path` in `document`. A segment applied to an array
/// applies to each element, and a numeric segment also indexes the array.
pub(crate) fn values_at<'v>(document: &'v Value, path: &str) -> Vec<&'v Value> {
    let mut current = vec![document];
    for segment in path.split('.') {
        let mut next = Vec::new();
        for value in current {
            match value {
                Value::Object(fields) => next.extend(fields.get(segment)),
                Value::Array(items) => {
                    if let Ok(index) = segment.parse::<usize>() {
                        next.extend(items.get(index));
                    } else {
                        next.extend(items.iter().filter_map(|item| item.get(segment)));
                    }
                }
                _ => {}
            }
        }
        current = next;
    }
    current
}

/// Returns a scalar JSON value as text; `None` for objects and arrays.
pub(crate) fn scalar_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(text) => Some(Cow::Borrowed(text)),
        Value::Number(number) => Some(Cow::Owned(number.to_string())),
        Value::Bool(flag) => Some(Cow::Owned(flag.to_string())),
        Value::Null => Some(Cow::Borrowed("null")),
        Value::Array(_) | Value::Object(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::signatures::BUILTIN;

    fn response(content_type: &str, body: &str) -> HttpResponse {
        HttpResponse {
            status: 403,
            headers: vec![("content-type".to_owned(), content_type.to_owned())],
            body: body.as_bytes().to_vec(),
            body_truncated: false,
        }
    }

    #[test]
    fn title_with_entities_and_newlines_is_tidied() {
        let response = response("text/html", "<html><TITLE lang=en>\n A &amp; B\n</TITLE>");
        let facts = ResponseFacts::new(&response, &BUILTIN.needles);
        assert_eq!(facts.title(), Some("A & B"));
    }

    #[test]
    fn title_missing_is_none() {
        let response = response("text/html", "<html><body>no title</body></html>");
        let facts = ResponseFacts::new(&response, &BUILTIN.needles);
        assert_eq!(facts.title(), None);
    }

    #[test]
    fn title_unclosed_keeps_following_text() {
        let response = response("text/html", "<title>Cut here");
        let facts = ResponseFacts::new(&response, &BUILTIN.needles);
        assert_eq!(facts.title(), Some("Cut here"));
    }

    #[test]
    fn documents_nested_json_string_is_parsed() {
        let body = r#"{"error":{"message":"upstream said: {\"error\":{\"code\":\"x\"}} end"}}"#;
        let response = response("application/json", body);
        let facts = ResponseFacts::new(&response, &BUILTIN.needles);
        let documents = facts.documents();
        assert_eq!(documents.len(), 2);
        assert_eq!(documents[1], serde_json::json!({"error": {"code": "x"}}));
    }

    #[test]
    fn documents_deeply_nested_array_is_rejected() {
        let response = response("application/json", &"[".repeat(60_000));
        let facts = ResponseFacts::new(&response, &BUILTIN.needles);
        assert!(facts.documents().is_empty());
        assert!(!facts.body_is_json());
    }

    #[test]
    fn documents_non_json_body_is_not_parsed() {
        let response = response("application/json", "error code: 1020");
        let facts = ResponseFacts::new(&response, &BUILTIN.needles);
        assert!(facts.documents().is_empty());
    }

    #[test]
    fn body_is_json_truncated_object_counts() {
        let mut response = response("application/json", "{\"data\": [1, 2");
        response.body_truncated = true;
        let facts = ResponseFacts::new(&response, &BUILTIN.needles);
        assert!(facts.body_is_json());
    }

    #[test]
    fn body_is_html_by_first_tag() {
        let response = response("", "\n  <!DOCTYPE html><html></html>");
        let facts = ResponseFacts::new(&response, &BUILTIN.needles);
        assert!(facts.body_is_html());
        let xml = super::tests::response("", "<?xml version=\"1.0\"?><Error/>");
        let facts = ResponseFacts::new(&xml, &BUILTIN.needles);
        assert!(!facts.body_is_html());
    }

    #[test]
    fn body_contains_is_ascii_case_insensitive() {
        let response = response("text/plain", "Error Code: 1020");
        let facts = ResponseFacts::new(&response, &BUILTIN.needles);
        assert!(facts.body_contains("error code: 1020"));
        assert!(facts.body_contains("ERROR CODE"));
        assert!(!facts.body_contains("1015"));
    }

    #[test]
    fn values_at_array_segment_applies_to_each_element() {
        let document = serde_json::json!({"error": {"details": [{"a": 1}, {"reason": "R"}]}});
        let found = values_at(&document, "error.details.reason");
        assert_eq!(found, [&serde_json::json!("R")]);
        let indexed = values_at(&document, "error.details.0.a");
        assert_eq!(indexed, [&serde_json::json!(1)]);
    }
}
