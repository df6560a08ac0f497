//! Signature rules: a class and reason chosen when every matcher of the rule holds.
//! User rules from monitors.yaml and the built-in table share this type.
// INTERFACE SKETCH: the classify helper owns this file and may extend it; keep the public
// names below (config compiles user rules with them).

use std::borrow::Cow;

use regex::Regex;

use super::Class;

/// One condition on an HTTP response. A rule matches when all of its matchers match.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// The status is one of these codes.
    Status(Vec<u16>),
    /// The header is present; with a value, its value contains it (case-insensitive).
    Header {
        name: String,
        contains: Option<String>,
    },
    /// The content type contains this text (case-insensitive), e.g. "html".
    ContentType(String),
    /// The body contains this text (case-insensitive).
    BodyContains(String),
    /// The body matches this regular expression.
    BodyRegex(Regex),
    /// A JSON field, addressed by a dotted path such as `error.code`, equals this text.
    JsonField { path: String, equals: String },
    /// The HTML `<title>` contains this text (case-insensitive).
    HtmlTitle(String),
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
