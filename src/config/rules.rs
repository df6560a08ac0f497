//! Validation of `rules[]`: user signatures compiled to [`Rule`]s.

use std::borrow::Cow;

use regex::Regex;

use super::raw::{RawRule, RawWhen, Text};
use super::validate::{Validator, as_written};
use super::values::check_header_name;
use crate::classify::{Class, Matcher, Rule};

/// The keys of `when:`, for the message about an empty `when`.
const WHEN_KEYS: &str = "status, header, header_contains, content_type, body_contains, body_regex, json_field, json_equals, html_title";

impl Validator<'_> {
    pub(super) fn rules(&mut self, raw_rules: &[RawRule]) -> Vec<Rule> {
        let mut names = Vec::new();
        let mut rules = Vec::new();
        for (index, raw) in raw_rules.iter().enumerate() {
            let path = format!("rules[{index}]");
            let before = self.error_count();
            let name = self.name(&format!("{path}.name"), &raw.name);
            let class = self.class(&format!("{path}.class"), &raw.class);
            let when = self.when(&format!("{path}.when"), &raw.when);

            let Some(name) = name else { continue };
            names.push((name.clone(), format!("{path}.name")));
            if let (Some(class), Some(when), true) = (class, when, self.error_count() == before) {
                rules.push(Rule {
                    id: Cow::Owned(name),
                    class,
                    when,
                });
            }
        }
        self.reject_duplicates("rule", &names);
        rules
    }

    fn class(&mut self, path: &str, text: &Text) -> Option<Class> {
        let name = self.text(path, text)?;
        let class = Class::parse(&name);
        if class.is_none() {
            let known: Vec<&str> = Class::ALL.iter().map(|class| class.as_str()).collect();
            let message = format!(
                "unknown class \"{name}\" (classes are: {})",
                known.join(", ")
            );
            self.error(path, as_written(message, &name, text));
        }
        class
    }

    /// Compiles `when:` into matchers, in the order of [`WHEN_KEYS`].
    fn when(&mut self, path: &str, raw: &RawWhen) -> Option<Vec<Matcher>> {
        let before = self.error_count();
        let mut matchers = Vec::new();
        let key = |name: &str| format!("{path}.{name}");

        if let Some(status) = &raw.status {
            if let Some(codes) = self.statuses(&key("status"), status) {
                matchers.push(Matcher::Status(codes));
            }
        }
        if let Some(matcher) = self.header_matcher(path, raw) {
            matchers.push(matcher);
        }
        if let Some(text) = self.rule_text(&key("content_type"), raw.content_type.as_ref()) {
            matchers.push(Matcher::ContentType(text));
        }
        if let Some(text) = self.rule_text(&key("body_contains"), raw.body_contains.as_ref()) {
            matchers.push(Matcher::BodyContains(text));
        }
        if let Some(regex) = self.body_regex(&key("body_regex"), raw.body_regex.as_ref()) {
            matchers.push(Matcher::BodyRegex(regex));
        }
        if let Some(matcher) = self.json_matcher(path, raw) {
            matchers.push(matcher);
        }
        if let Some(text) = self.rule_text(&key("html_title"), raw.html_title.as_ref()) {
            matchers.push(Matcher::HtmlTitle(text));
        }

        if self.error_count() != before {
            return None;
        }
        if matchers.is_empty() {
            self.error(
                path,
                format!("no conditions (set at least one of {WHEN_KEYS})"),
            );
            return None;
        }
        Some(matchers)
    }

    /// Expands a matcher's text and rejects an empty one, which would match everything.
    fn rule_text(&mut self, path: &str, text: Option<&Text>) -> Option<String> {
        let value = self.text(path, text?)?;
        if value.is_empty() {
            self.error(
                path,
                "empty text would match every response (remove the key or give text)".to_owned(),
            );
            return None;
        }
        Some(value)
    }

    fn header_matcher(&mut self, path: &str, raw: &RawWhen) -> Option<Matcher> {
        let contains = self.rule_text(
            &format!("{path}.header_contains"),
            raw.header_contains.as_ref(),
        );
        let Some(text) = &raw.header else {
            if raw.header_contains.is_some() {
                let message =
                    "header_contains needs header (name the header to look in)".to_owned();
                self.error(&format!("{path}.header_contains"), message);
            }
            return None;
        };

        let name_path = format!("{path}.header");
        let name = self.text(&name_path, text)?;
        let name = self.check(
            &name_path,
            check_header_name(&name).map(|()| name.to_ascii_lowercase()),
        )?;
        Some(Matcher::Header { name, contains })
    }

    fn json_matcher(&mut self, path: &str, raw: &RawWhen) -> Option<Matcher> {
        let field_path = format!("{path}.json_field");
        let equals_path = format!("{path}.json_equals");
        match (&raw.json_field, &raw.json_equals) {
            (None, None) => None,
            (Some(_), None) => {
                self.error(
                    &field_path,
                    "json_field needs json_equals (the value the field must have)".to_owned(),
                );
                None
            }
            (None, Some(_)) => {
                self.error(
                    &equals_path,
                    "json_equals needs json_field (the dotted path of the field, e.g. error.code)"
                        .to_owned(),
                );
                None
            }
            (Some(field), Some(equals)) => {
                let field = self.rule_text(&field_path, Some(field));
                // An empty expected value is legitimate: it matches a field holding "".
                let equals = self.text(&equals_path, equals);
                Some(Matcher::JsonField {
                    path: field?,
                    equals: equals?,
                })
            }
        }
    }

    fn body_regex(&mut self, path: &str, text: Option<&Text>) -> Option<Regex> {
        let written = text?;
        let pattern = self.rule_text(path, Some(written))?;
        match Regex::new(&pattern) {
            Ok(regex) => Some(regex),
            Err(error) => {
                let message = format!(
                    "invalid regex \"{pattern}\": {}",
                    describe_regex_error(&error)
                );
                self.error(path, as_written(message, &pattern, written));
                None
            }
        }
    }
}

/// Turns the regex crate's multi-line syntax error into one line with the character
/// position (1-based) of the problem within the pattern.
fn describe_regex_error(error: &regex::Error) -> String {
    let regex::Error::Syntax(text) = error else {
        return error.to_string();
    };
    let lines: Vec<&str> = text.lines().collect();
    let description = lines
        .iter()
        .rev()
        .find_map(|line| line.strip_prefix("error: "))
        .unwrap_or(text.as_str());

    // The crate prints the pattern indented by four spaces and a line of carets under the
    // offending part. Patterns that span lines are printed with line numbers instead.
    let caret_column = lines.iter().find_map(|line| {
        let trimmed = line.trim_start();
        let is_caret_line = !trimmed.is_empty() && trimmed.chars().all(|c| c == '^');
        is_caret_line.then(|| line.chars().count() - trimmed.chars().count())
    });
    match caret_column {
        Some(column) if column >= 4 => format!("{description} at character {}", column - 4 + 1),
        _ => description.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_regex_error_unclosed_group() {
        // Built at run time: the patterns are invalid on purpose, which clippy flags in literals.
        let pattern = String::from("ab(c");
        let error = Regex::new(&pattern).unwrap_err();
        assert_eq!(
            describe_regex_error(&error),
            "unclosed group at character 3"
        );
    }

    #[test]
    fn describe_regex_error_bad_repetition() {
        let pattern = String::from("x|*a");
        let error = Regex::new(&pattern).unwrap_err();
        assert_eq!(
            describe_regex_error(&error),
            "repetition operator missing expression at character 3"
        );
    }
}
