//! Signature rules: a class and reason chosen when every matcher of the rule holds.
//! User rules from monitors.yaml and the built-in table share this type.

use std::borrow::Cow;
use std::ops::RangeInclusive;

use regex::Regex;

use super::Class;
use super::evidence::{describe_header, quote};
use super::facts::{ResponseFacts, scalar_text, values_at};

/// One condition on an HTTP response. A rule matches when all of its matchers match.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// The status is one of these codes.
    Status(Vec<u16>),
    /// The status is in this inclusive range, e.g. `500..=599`.
    StatusRange(RangeInclusive<u16>),
    /// The header is present; with a value, its value contains it (case-insensitive).
    Header {
        name: String,
        contains: Option<String>,
    },
    /// The content type contains this text (case-insensitive), e.g. "html".
    ContentType(String),
    /// The body contains this text (ASCII case-insensitive; other letters must match exactly).
    BodyContains(String),
    /// The body matches this regular expression (case-sensitive unless it sets `(?i)`).
    BodyRegex(Regex),
    /// A JSON field, addressed by a dotted path such as `error.code`, equals this text.
    /// The path also finds fields of a JSON document carried as a string inside the body
    /// (an upstream error wrapped in a gateway's message). Numbers compare by their text.
    JsonField { path: String, equals: String },
    /// The HTML `<title>` contains this text (case-insensitive).
    HtmlTitle(String),
    /// The body is HTML, by content type or by its first tag.
    HtmlBody,
    /// The body is JSON, by parsing it (a body cut at the cap only needs to start like JSON).
    JsonBody,
    /// The body is empty or only whitespace.
    EmptyBody,
    /// At least one of these matchers matches; the first match gives the evidence.
    AnyOf(Vec<Matcher>),
}

/// A named signature.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The reason id reported when the rule matches.
    pub id: Cow<'static, str>,
    /// The class reported when the rule matches.
    pub class: Class,
    /// Conditions that must all hold.
    pub when: Vec<Matcher>,
}

/// The result of one matcher: `None` when it does not match, otherwise an evidence fragment,
/// empty when the status line already covers it.
pub(crate) type Finding = Option<String>;

impl Rule {
    /// Returns the evidence fragments when every matcher holds, in matcher order.
    /// Matchers run in order and stop at the first that fails, so cheap ones go first.
    pub(crate) fn evaluate(&self, facts: &ResponseFacts<'_>) -> Option<Vec<String>> {
        let mut fragments = Vec::new();
        for matcher in &self.when {
            let fragment = matcher.evaluate(facts)?;
            // HtmlBody and HtmlTitle can both name the title, so keep one copy.
            if !fragment.is_empty() && !fragments.contains(&fragment) {
                fragments.push(fragment);
            }
        }
        Some(fragments)
    }
}

impl Matcher {
    /// Checks this matcher against `facts`.
    pub(crate) fn evaluate(&self, facts: &ResponseFacts<'_>) -> Finding {
        let status = facts.response.status;
        match self {
            Matcher::Status(codes) => codes.contains(&status).then(String::new),
            Matcher::StatusRange(range) => range.contains(&status).then(String::new),
            Matcher::Header { name, contains } => evaluate_header(facts, name, contains.as_deref()),
            Matcher::ContentType(text) => facts
                .content_type
                .contains(&text.to_ascii_lowercase())
                .then(|| format!("content-type {}", facts.content_type)),
            Matcher::BodyContains(text) => facts
                .body_contains(text)
                .then(|| format!("body contains {}", quote(&text.to_ascii_lowercase()))),
            Matcher::BodyRegex(regex) => regex
                .find(&facts.text)
                .map(|found| format!("body matches {}", quote(found.as_str()))),
            Matcher::JsonField { path, equals } => evaluate_json_field(facts, path, equals),
            Matcher::HtmlTitle(text) => {
                let title = facts.title()?;
                title
                    .to_lowercase()
                    .contains(&text.to_lowercase())
                    .then(|| format!("HTML title {}", quote(title)))
            }
            Matcher::HtmlBody => facts.body_is_html().then(|| html_fragment(facts)),
            Matcher::JsonBody => facts.body_is_json().then(String::new),
            Matcher::EmptyBody => facts.body_is_empty().then(|| "empty body".to_owned()),
            Matcher::AnyOf(choices) => choices.iter().find_map(|choice| choice.evaluate(facts)),
        }
    }

    /// Calls `visit` on this matcher and every matcher nested in it.
    pub(crate) fn visit(&self, visit: &mut dyn FnMut(&Matcher)) {
        visit(self);
        if let Matcher::AnyOf(choices) = self {
            for choice in choices {
                choice.visit(visit);
            }
        }
    }
}

fn evaluate_header(facts: &ResponseFacts<'_>, name: &str, contains: Option<&str>) -> Finding {
    let value = facts.response.header(name)?;
    match contains {
        None => Some(describe_header(name, value, None)),
        Some(text) => value
            .to_ascii_lowercase()
            .contains(&text.to_ascii_lowercase())
            .then(|| describe_header(name, value, Some(text))),
    }
}

fn evaluate_json_field(facts: &ResponseFacts<'_>, path: &str, equals: &str) -> Finding {
    let found = facts.documents().iter().any(|document| {
        values_at(document, path)
            .into_iter()
            .filter_map(scalar_text)
            .any(|text| text == equals)
    });
    found.then(|| format!("JSON {path} = {equals}"))
}

/// Describes an HTML body by its title, or by its content type when it has none.
fn html_fragment(facts: &ResponseFacts<'_>) -> String {
    match facts.title() {
        Some(title) if !title.is_empty() => format!("HTML title {}", quote(title)),
        _ => "HTML body".to_owned(),
    }
}
