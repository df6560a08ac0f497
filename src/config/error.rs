//! Configuration errors: each names the file, line, column and key path of the problem.

use std::fmt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::spans::{Position, Spans, SyntaxError, join_key};

/// One problem in a configuration file.
///
/// Displays as `file:line:column: key.path: message`. The position parts are left out when
/// `line` is 0 (a problem with the whole file, such as its size), and the path part when
/// `path` is empty (a syntax error, or a problem at the top level).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    /// The configuration file as given to [`super::load`] or [`super::parse`].
    pub file: PathBuf,
    /// 1-based line, 0 when the error is about the whole file.
    pub line: usize,
    /// 1-based column, 0 when the error is about the whole file.
    pub column: usize,
    /// Key path such as `monitors[2].routes[0]`; empty for syntax errors and top-level ones.
    pub path: String,
    /// The problem and, where known, the fix.
    pub message: String,
}

impl ConfigError {
    /// Creates an error about the whole file, with no position.
    pub(super) fn whole_file(file: &Path, message: String) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            path: String::new(),
            message,
        }
    }

    pub(super) fn at(file: &Path, position: Position, path: &str, message: String) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            line: position.line,
            column: position.column,
            path: path.to_owned(),
            message,
        }
    }

    fn render(&self) -> String {
        let mut text = self.file.display().to_string();
        if self.line > 0 {
            text.push_str(&format!(":{}:{}", self.line, self.column));
        }
        text.push_str(": ");
        if !self.path.is_empty() {
            text.push_str(&self.path);
            text.push_str(": ");
        }
        text.push_str(&self.message);
        text
    }
}

/// Every problem found in one configuration file, sorted by position.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct ConfigErrors {
    /// The problems; never empty when returned by this module.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    /// Writes one error per line, without a trailing newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.errors.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        ConfigErrors {
            errors: vec![error],
        }
    }
}

/// Maps a yaml-rust2 syntax error.
pub(super) fn from_syntax(file: &Path, error: SyntaxError) -> ConfigError {
    ConfigError::at(
        file,
        error.position,
        "",
        format!("invalid YAML: {}", error.message),
    )
}

/// Rejects what serde_yaml would reject with a message in its own terms: more than one
/// document, and merge keys (which it reads as a key named `<<`).
pub(super) fn check_structure(file: &Path, spans: &Spans) -> Result<(), ConfigErrors> {
    if let Some(second) = spans.document_starts.get(1) {
        let message =
            "config contains more than one YAML document (remove the --- separators)".to_owned();
        return Err(ConfigError::at(file, *second, "", message).into());
    }
    let errors: Vec<ConfigError> = spans
        .merge_keys
        .iter()
        .map(|(path, position)| {
            let message =
                "YAML merge keys (<<) are not supported; repeat the keys instead".to_owned();
            ConfigError::at(file, *position, path, message)
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors { errors })
    }
}

/// Message openings that serde and serde_yaml put after the `path: ` prefix.
const SERDE_MESSAGE_STARTS: &[&str] = &[
    "unknown field",
    "missing field",
    "duplicate field",
    "invalid type",
    "invalid value",
    "invalid length",
    "unknown variant",
];

/// Maps a serde_yaml error (unknown key, missing key, wrong type) to a positioned error.
pub(super) fn from_serde(file: &Path, spans: &Spans, error: &serde_yaml::Error) -> ConfigError {
    let location = super::raw::error_location(error);
    let full = error.to_string();
    let without_location = match location {
        Some((line, column)) => {
            let suffix = format!(" at line {line} column {column}");
            full.strip_suffix(&suffix).unwrap_or(&full).to_owned()
        }
        None => full.clone(),
    };
    let (path, message) = split_path(&without_location);

    let mut position = match location {
        Some((line, column)) => Position { line, column },
        None => spans.value(&path),
    };
    let (path, message) = match parse_unknown_field(&message) {
        Some((key, allowed)) => {
            let key_path = join_key(&path, &key);
            position = spans.key(&key_path);
            (key_path, format!("unknown key \"{key}\" ({allowed})"))
        }
        None => (path, reword(&message)),
    };
    ConfigError::at(file, position, &path, message)
}

/// Splits `monitors[0].expect: invalid type: ...` into the path and the message.
fn split_path(text: &str) -> (String, String) {
    for start in SERDE_MESSAGE_STARTS {
        if text.starts_with(start) {
            return (String::new(), text.to_owned());
        }
        if let Some(index) = text.find(&format!(": {start}")) {
            return (text[..index].to_owned(), text[index + 2..].to_owned());
        }
    }
    (String::new(), text.to_owned())
}

/// Reads serde's `unknown field `x`, expected one of `a`, `b`` into the key and a hint.
fn parse_unknown_field(message: &str) -> Option<(String, String)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, rest) = rest.split_once('`')?;
    let allowed: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let hint = if allowed.is_empty() {
        "this mapping takes no keys".to_owned()
    } else {
        format!("allowed keys: {}", allowed.join(", "))
    };
    Some((key.to_owned(), hint))
}

/// Rewords serde's Rust-flavoured phrases into the file's terms.
fn reword(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("missing field `") {
        if let Some((key, _)) = rest.split_once('`') {
            return format!("missing key \"{key}\"");
        }
    }
    if let Some(rest) = message.strip_prefix("duplicate field `") {
        if let Some((key, _)) = rest.split_once('`') {
            return format!("duplicate key \"{key}\" (keep one)");
        }
    }
    // serde_yaml stops expanding aliases after 100 expansions per event in the file, which
    // defuses "billion laughs" files; its own message does not say what repeated.
    if message == "repetition limit exceeded" {
        return "invalid YAML: aliases expand to too many nodes (over 100 per node in the file); write the values out or use fewer aliases".to_owned();
    }
    message
        .replace("expected usize", "expected a whole number")
        .replace("invalid type: unit value", "invalid type: empty value")
        .replace("struct RawGlobal", "a mapping")
        .replace("struct RawDefaults", "a mapping")
        .replace("struct RawRoute", "a mapping")
        .replace("struct RawMonitor", "a mapping")
        .replace("struct RawExpect", "a mapping")
        .replace("struct RawRule", "a mapping")
        .replace("struct RawWhen", "a mapping")
        .replace("struct RawConfig", "a mapping")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_error_display_forms() {
        let mut error = ConfigError {
            file: PathBuf::from("monitors.yaml"),
            line: 14,
            column: 15,
            path: "monitors[2].routes[0]".to_owned(),
            message: "unknown route \"hk\" (routes are: direct, us)".to_owned(),
        };
        assert_eq!(
            error.to_string(),
            "monitors.yaml:14:15: monitors[2].routes[0]: unknown route \"hk\" (routes are: direct, us)"
        );
        error.path.clear();
        assert_eq!(
            error.to_string(),
            "monitors.yaml:14:15: unknown route \"hk\" (routes are: direct, us)"
        );
        error.line = 0;
        assert_eq!(
            error.to_string(),
            "monitors.yaml: unknown route \"hk\" (routes are: direct, us)"
        );
    }

    #[test]
    fn config_errors_one_per_line() {
        let first = ConfigError::whole_file(Path::new("a.yaml"), "one".to_owned());
        let second = ConfigError::whole_file(Path::new("a.yaml"), "two".to_owned());
        let errors = ConfigErrors {
            errors: vec![first, second],
        };
        assert_eq!(errors.to_string(), "a.yaml: one\na.yaml: two");
    }

    #[test]
    fn split_path_cases() {
        assert_eq!(
            split_path("monitors[0].expect: invalid type: string \"x\", expected a boolean"),
            (
                "monitors[0].expect".to_owned(),
                "invalid type: string \"x\", expected a boolean".to_owned()
            )
        );
        assert_eq!(
            split_path("unknown field `x`, expected `a`"),
            (String::new(), "unknown field `x`, expected `a`".to_owned())
        );
    }

    #[test]
    fn parse_unknown_field_forms() {
        assert_eq!(
            parse_unknown_field("unknown field `urll`, expected one of `name`, `url`"),
            Some(("urll".to_owned(), "allowed keys: name, url".to_owned()))
        );
        assert_eq!(
            parse_unknown_field("unknown field `x`, expected `status` or `json`"),
            Some(("x".to_owned(), "allowed keys: status, json".to_owned()))
        );
        assert_eq!(
            parse_unknown_field("unknown field `x`, there are no fields"),
            Some(("x".to_owned(), "this mapping takes no keys".to_owned()))
        );
    }
}
