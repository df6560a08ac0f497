//! Parsers for the text forms inside values: durations, sizes, schedules, `${VAR}`
//! expansion, names and header names. Each returns the error message without a position.

use std::time::Duration;

use chrono::Utc;
use croner::parser::{CronParser, Seconds, Year};

use super::Schedule;

/// The shortest period that `every` accepts.
pub(super) const MIN_EVERY_PERIOD: Duration = Duration::from_secs(1);

const DURATION_HINT: &str = "expected a duration such as 10s or 500ms";
const SIZE_HINT: &str = "expected a size such as 64KiB, 1MiB or 65536";

/// Expands `${VAR}`, `${VAR:-default}` and `$$` in `text`.
///
/// A `$` followed by anything else is kept as written. A `${` inside `${...}` is an error,
/// because the first `}` would end the outer expansion and leave the rest as literal text.
pub(super) fn expand_env(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    expand_env_with(text, env, &|value| value.to_owned())
}

/// Expands `${VAR}` in a URL, percent-encoding `@`, `/`, `?`, `#` and `\` in the values that
/// land in the user info (`user:password@`), so that a password with those characters cannot
/// move the host. `:` and `%` are kept: `${USER_AND_PASSWORD}` may hold `user:password`, and a
/// value may already be percent-encoded.
pub(super) fn expand_url(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let Some((start, end)) = user_info_span(text) else {
        return expand_env(text, env);
    };
    nested_expansion(text)?;
    let mut output = expand_env(&text[..start], env)?;
    output.push_str(&expand_env_with(&text[start..end], env, &encode_user_info)?);
    output.push_str(&expand_env(&text[end..], env)?);
    Ok(output)
}

/// Returns the byte range of the user info in a URL as written, when the scheme is literal
/// and the `@` that ends the user info is outside every `${...}`.
fn user_info_span(text: &str) -> Option<(usize, usize)> {
    let start = text.find("://")? + 3;
    if text[..start].contains('$') {
        return None;
    }
    let mut index = start;
    let mut at = None;
    while index < text.len() {
        let rest = &text[index..];
        if rest.starts_with("${") {
            index += rest.find('}')? + 1;
            continue;
        }
        match rest.as_bytes()[0] {
            b'/' | b'?' | b'#' => break,
            b'@' => at = Some(index),
            _ => {}
        }
        index += rest.chars().next().map_or(1, char::len_utf8);
    }
    at.map(|at| (start, at))
}

fn encode_user_info(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for character in value.chars() {
        match character {
            '@' => encoded.push_str("%40"),
            '/' => encoded.push_str("%2F"),
            '?' => encoded.push_str("%3F"),
            '#' => encoded.push_str("%23"),
            '\\' => encoded.push_str("%5C"),
            other => encoded.push(other),
        }
    }
    encoded
}

/// Rejects `${` inside `${...}`, quoting the whole value as written.
fn nested_expansion(text: &str) -> Result<(), String> {
    let mut rest = text;
    while let Some(open) = rest.find("${") {
        let body = &rest[open + 2..];
        let Some(close) = body.find('}') else {
            return Ok(());
        };
        if body[..close].contains("${") {
            return Err(format!(
                "nested ${{...}} is not supported in \"{text}\" (set the default to a plain value)"
            ));
        }
        rest = &body[close + 1..];
    }
    Ok(())
}

fn expand_env_with(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    transform: &dyn Fn(&str) -> String,
) -> Result<String, String> {
    nested_expansion(text)?;
    let mut output = String::with_capacity(text.len());
    let mut rest = text;

    while let Some(dollar) = rest.find('$') {
        output.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];

        if let Some(tail) = after.strip_prefix('$') {
            output.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(close) = body.find('}') else {
                return Err(
                    "unterminated ${ (close it with }, or write $$ for a literal $)".to_owned(),
                );
            };
            output.push_str(&transform(&expand_variable(&body[..close], env)?));
            rest = &body[close + 1..];
        } else {
            output.push('$');
            rest = after;
        }
    }

    output.push_str(rest);
    Ok(output)
}

fn expand_variable(inner: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let (name, default) = match inner.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (inner, None),
    };

    if !is_variable_name(name) {
        return Err(format!(
            "invalid environment variable name \"{name}\" in ${{{inner}}} (use letters, digits and _, not starting with a digit)"
        ));
    }

    match (env(name), default) {
        (Some(value), _) => Ok(value),
        (None, Some(default)) => Ok(default.to_owned()),
        (None, None) => Err(format!(
            "environment variable {name} is not set (set it, or write ${{{name}:-}} for an empty default)"
        )),
    }
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses `500ms`, `10s`, `2m`, `1h` and combinations in descending order such as `1m30s`.
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration \"{text}\" ({DURATION_HINT})");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }

    let mut total = Duration::ZERO;
    // Units must not repeat or go up: `1m30s` is fine, `30s1m` is a typo.
    let mut previous_unit_millis = u64::MAX;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];

        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_millis = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(invalid()),
        };
        if unit_millis >= previous_unit_millis {
            return Err(invalid());
        }
        previous_unit_millis = unit_millis;
        rest = &rest[unit_len..];

        let millis = number.checked_mul(unit_millis).ok_or_else(invalid)?;
        total = total
            .checked_add(Duration::from_millis(millis))
            .ok_or_else(invalid)?;
    }
    Ok(total)
}

/// Parses a byte count: plain bytes (`65536`) or a number with B, KiB, MiB, GiB, kB, MB, GB.
pub(super) fn parse_size(text: &str) -> Result<usize, String> {
    let invalid = || format!("invalid size \"{text}\" ({SIZE_HINT})");
    let trimmed = text.trim();
    let digits = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let number: usize = trimmed[..digits].parse().map_err(|_| invalid())?;

    let multiplier: usize = match trimmed[digits..].trim_start() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(invalid()),
    };
    number.checked_mul(multiplier).ok_or_else(invalid)
}

/// Parses `every <duration>` or a cron expression of 5 fields (minute first) or 6 fields
/// (seconds first). Cron expressions come back with six fields.
pub(super) fn parse_schedule(text: &str) -> Result<Schedule, String> {
    let trimmed = text.trim();

    if let Some(period) = trimmed.strip_prefix("every ") {
        // The message quotes the whole value, so that a caller can swap in the text as
        // written before `${VAR}` expansion.
        let period = parse_duration(period).map_err(|_| {
            format!("invalid schedule \"{text}\" (expected every and a duration such as 30s or 5m)")
        })?;
        if period < MIN_EVERY_PERIOD {
            return Err(format!(
                "schedule \"{text}\" is shorter than 1s (use every 1s or longer)"
            ));
        }
        // The cron scheduler counts whole seconds and would drop the fraction silently.
        if period.subsec_nanos() != 0 {
            let whole = period.as_secs();
            return Err(format!(
                "schedule \"{text}\" is not a whole number of seconds (use every {whole}s or every {}s)",
                whole + 1
            ));
        }
        return Ok(Schedule::Every(period));
    }

    let fields: Vec<&str> = trimmed.split_whitespace().collect();
    let six_fields = match fields.len() {
        5 => format!("0 {}", fields.join(" ")),
        6 => fields.join(" "),
        _ => {
            return Err(format!(
                "invalid schedule \"{text}\" (expected \"every 30s\", or a cron expression of 5 fields, or of 6 fields with seconds first)"
            ));
        }
    };

    let parser = CronParser::builder()
        .seconds(Seconds::Required)
        .year(Year::Disallowed)
        .build();
    let cron = parser.parse(&six_fields).map_err(|error| {
        format!(
            "invalid cron expression \"{text}\": {error} (expected 5 fields: minute hour day month weekday, or 6 with seconds first)"
        )
    })?;
    // croner stops searching at the year 5000, so this search is bounded. It is quick for an
    // expression that fires; one that never fires (30 February) takes most of a second in a
    // debug build, and only a broken config pays that.
    if cron.find_next_occurrence(&Utc::now(), false).is_err() {
        return Err(format!(
            "cron \"{text}\" never fires (check the day and month fields)"
        ));
    }
    Ok(Schedule::Cron(six_fields))
}

/// Checks that a name is safe as a metric label value: `[A-Za-z0-9_.-]+`.
pub(super) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name is empty".to_owned());
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        None => Ok(()),
        Some(bad) => Err(format!(
            "name \"{name}\" contains {bad:?} (use only letters, digits, _, . and -)"
        )),
    }
}

/// Checks an HTTP header name against the token grammar of RFC 9110.
pub(super) fn check_header_name(name: &str) -> Result<(), String> {
    let is_token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if !name.is_empty() && name.chars().all(is_token_char) {
        return Ok(());
    }
    Err(format!(
        "invalid header name \"{name}\" (use letters, digits and !#$%&'*+-.^_`|~, no spaces or colons)"
    ))
}

/// Checks that a header value has no control characters other than tab.
pub(super) fn check_header_value(value: &str) -> Result<(), String> {
    match value.chars().find(|&c| c.is_control() && c != '\t') {
        None => Ok(()),
        Some(bad) => Err(format!(
            "header value contains the control character {bad:?} (remove it)"
        )),
    }
}

/// Parses an HTTP status code between 100 and 599.
pub(super) fn parse_status(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u16>() {
        Ok(code) if (100..=599).contains(&code) => Ok(code),
        _ => Err(format!(
            "invalid HTTP status \"{text}\" (use a code from 100 to 599)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("secret".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expand_env_forms() {
        assert_eq!(expand_env("a ${KEY} b", &fake_env).unwrap(), "a secret b");
        assert_eq!(expand_env("${EMPTY:-x}", &fake_env).unwrap(), "");
        assert_eq!(
            expand_env("${UNSET:-fallback}", &fake_env).unwrap(),
            "fallback"
        );
        assert_eq!(expand_env("${UNSET:-}", &fake_env).unwrap(), "");
        assert_eq!(
            expand_env("cost $$5 ${KEY}", &fake_env).unwrap(),
            "cost $5 secret"
        );
        assert_eq!(expand_env("^a$ $x", &fake_env).unwrap(), "^a$ $x");
        assert_eq!(expand_env("$$${KEY}", &fake_env).unwrap(), "$secret");
    }

    #[test]
    fn expand_env_errors() {
        assert_eq!(
            expand_env("${GROQ_API_KEY}", &fake_env).unwrap_err(),
            "environment variable GROQ_API_KEY is not set (set it, or write ${GROQ_API_KEY:-} for an empty default)"
        );
        assert_eq!(
            expand_env("x ${KEY", &fake_env).unwrap_err(),
            "unterminated ${ (close it with }, or write $$ for a literal $)"
        );
        assert_eq!(
            expand_env("${1A}", &fake_env).unwrap_err(),
            "invalid environment variable name \"1A\" in ${1A} (use letters, digits and _, not starting with a digit)"
        );
    }

    #[test]
    fn expand_env_nested_is_an_error() {
        assert_eq!(
            expand_env("a ${KEY:-${UNSET:-z}} b", &fake_env).unwrap_err(),
            "nested ${...} is not supported in \"a ${KEY:-${UNSET:-z}} b\" (set the default to a plain value)"
        );
        // A `}` after an expansion is literal text, as in a JSON body.
        assert_eq!(
            expand_env("{\"a\":${KEY}}", &fake_env).unwrap(),
            "{\"a\":secret}"
        );
    }

    fn password_env(name: &str) -> Option<String> {
        (name == "PASSWORD").then(|| "pa/ss@wo:r?d#1".to_owned())
    }

    #[test]
    fn expand_url_encodes_user_info_values() {
        assert_eq!(
            expand_url("http://user:${PASSWORD}@127.0.0.1:3128", &password_env).unwrap(),
            "http://user:pa%2Fss%40wo:r%3Fd%231@127.0.0.1:3128"
        );
        // Outside the user info the value is kept as it is.
        assert_eq!(
            expand_url("http://127.0.0.1:3128/${PASSWORD}", &password_env).unwrap(),
            "http://127.0.0.1:3128/pa/ss@wo:r?d#1"
        );
        assert_eq!(
            expand_url("${PASSWORD}", &password_env).unwrap(),
            "pa/ss@wo:r?d#1"
        );
    }

    #[test]
    fn user_info_span_cases() {
        assert_eq!(user_info_span("http://u:${P}@h:1/x"), Some((7, 13)));
        assert_eq!(user_info_span("http://h:1/a@b"), None);
        assert_eq!(user_info_span("${URL}"), None);
        assert_eq!(user_info_span("http://${P:-a@b}@h"), Some((7, 16)));
    }

    #[test]
    fn parse_duration_accepts_units() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_duration("1h2m3s4ms").unwrap(),
            Duration::from_millis(3_723_004)
        );
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn parse_duration_rejects_bad_forms() {
        for text in ["", "10", "s", "10x", "1.5s", "30s1m", "1s1s", "-1s", "10 s"] {
            assert_eq!(
                parse_duration(text).unwrap_err(),
                format!("invalid duration \"{text}\" (expected a duration such as 10s or 500ms)"),
                "input {text:?}"
            );
        }
    }

    #[test]
    fn parse_size_units() {
        assert_eq!(parse_size("65536").unwrap(), 65536);
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("1MiB").unwrap(), 1_048_576);
        assert_eq!(parse_size("2 kB").unwrap(), 2000);
        assert_eq!(parse_size("10B").unwrap(), 10);
        assert_eq!(
            parse_size("64kib").unwrap_err(),
            "invalid size \"64kib\" (expected a size such as 64KiB, 1MiB or 65536)"
        );
    }

    #[test]
    fn parse_schedule_forms() {
        assert_eq!(
            parse_schedule("every 30s").unwrap(),
            Schedule::Every(Duration::from_secs(30))
        );
        assert_eq!(
            parse_schedule("*/5 * * * *").unwrap(),
            Schedule::Cron("0 */5 * * * *".to_owned())
        );
        assert_eq!(
            parse_schedule("*/30  * * * * *").unwrap(),
            Schedule::Cron("*/30 * * * * *".to_owned())
        );
        assert_eq!(
            parse_schedule("every 500ms").unwrap_err(),
            "schedule \"every 500ms\" is shorter than 1s (use every 1s or longer)"
        );
        assert_eq!(
            parse_schedule("every 1500ms").unwrap_err(),
            "schedule \"every 1500ms\" is not a whole number of seconds (use every 1s or every 2s)"
        );
        assert_eq!(
            parse_schedule("every 2000ms").unwrap(),
            Schedule::Every(Duration::from_secs(2))
        );
        assert_eq!(
            parse_schedule("every 10x").unwrap_err(),
            "invalid schedule \"every 10x\" (expected every and a duration such as 30s or 5m)"
        );
        assert_eq!(
            parse_schedule("hourly").unwrap_err(),
            "invalid schedule \"hourly\" (expected \"every 30s\", or a cron expression of 5 fields, or of 6 fields with seconds first)"
        );
    }

    #[test]
    fn parse_schedule_rejects_out_of_range_cron() {
        let message = parse_schedule("61 * * * *").unwrap_err();
        assert!(
            message.starts_with("invalid cron expression \"61 * * * *\": "),
            "{message}"
        );
    }

    #[test]
    fn parse_schedule_rejects_cron_that_never_fires() {
        assert_eq!(
            parse_schedule("0 0 30 2 *").unwrap_err(),
            "cron \"0 0 30 2 *\" never fires (check the day and month fields)"
        );
        // 29 February on a Monday is rare but real.
        assert_eq!(
            parse_schedule("0 0 29 2 1").unwrap(),
            Schedule::Cron("0 0 0 29 2 1".to_owned())
        );
    }

    #[test]
    fn check_name_rules() {
        assert_eq!(check_name("hk-socks_1.a"), Ok(()));
        assert_eq!(check_name("").unwrap_err(), "name is empty");
        assert_eq!(
            check_name("hk socks").unwrap_err(),
            "name \"hk socks\" contains ' ' (use only letters, digits, _, . and -)"
        );
    }

    #[test]
    fn header_checks() {
        assert_eq!(check_header_name("X-Api-Key"), Ok(()));
        assert!(check_header_name("Bad Name").is_err());
        assert!(check_header_name("a:b").is_err());
        assert_eq!(check_header_value("Bearer x\ty"), Ok(()));
        assert!(check_header_value("a\nb").is_err());
    }

    #[test]
    fn parse_status_range() {
        assert_eq!(parse_status("200"), Ok(200));
        assert_eq!(
            parse_status("99").unwrap_err(),
            "invalid HTTP status \"99\" (use a code from 100 to 599)"
        );
        assert!(parse_status("abc").is_err());
    }
}
