//! `routewatch classify FILE...`: classifies saved raw HTTP responses (as `curl -si` writes
//! them) with the same rules the service uses, one output line per file.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::json;
use thiserror::Error;

use crate::classify::{self, Expectation, Observation, Rule, Verdict};
use crate::cli::OutputFormat;

/// Input bytes read per file; enough for the largest header section and a body far beyond
/// the 64 KiB the classifier looks at.
pub const MAX_INPUT_BYTES: u64 = 16 * 1024 * 1024;

/// An error that stops the command before it has gone through every file.
#[derive(Debug, Error)]
pub enum ClassifyCommandError {
    /// Writing a result line failed.
    #[error("failed to write classify output: {0}")]
    Output(#[from] io::Error),
}

/// Classifies each file (`-` is standard input) against the default expectation (2xx JSON)
/// and `user_rules`, writing one line per file to `out`.
///
/// Returns whether every file was read and parsed. A file that failed gets an error line,
/// and the command goes on with the next one.
///
/// # Errors
///
/// [`ClassifyCommandError::Output`] when writing to `out` fails.
pub fn run(
    files: &[PathBuf],
    format: OutputFormat,
    user_rules: &[Rule],
    out: &mut dyn Write,
) -> Result<bool, ClassifyCommandError> {
    let expectation = Expectation::default();
    let mut all_parsed = true;
    for file in files {
        let name = file.display().to_string();
        let result = read_input(file)
            .map_err(|error| format!("cannot read {name}: {error}"))
            .and_then(|bytes| {
                classify::parse_raw_response(&bytes).map_err(|error| error.to_string())
            });
        match result {
            Ok(response) => {
                let status = response.status;
                let verdict =
                    classify::classify(&Observation::Response(response), &expectation, user_rules);
                write_verdict(out, format, &name, status, &verdict)?;
            }
            Err(message) => {
                all_parsed = false;
                write_failure(out, format, &name, &message)?;
            }
        }
    }
    Ok(all_parsed)
}

fn read_input(file: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if file.as_os_str() == "-" {
        io::stdin()
            .lock()
            .take(MAX_INPUT_BYTES)
            .read_to_end(&mut bytes)?;
    } else {
        File::open(file)?
            .take(MAX_INPUT_BYTES)
            .read_to_end(&mut bytes)?;
    }
    Ok(bytes)
}

fn write_verdict(
    out: &mut dyn Write,
    format: OutputFormat,
    name: &str,
    status: u16,
    verdict: &Verdict,
) -> io::Result<()> {
    match format {
        OutputFormat::Text => writeln!(
            out,
            "{name}: {} {} — {}",
            verdict.class, verdict.reason, verdict.evidence
        ),
        OutputFormat::Json => {
            let line = json!({
                "file": name,
                "class": verdict.class.as_str(),
                "reason": verdict.reason,
                "evidence": verdict.evidence,
                "http_status": status,
            });
            writeln!(out, "{line}")
        }
    }
}

fn write_failure(
    out: &mut dyn Write,
    format: OutputFormat,
    name: &str,
    message: &str,
) -> io::Result<()> {
    match format {
        OutputFormat::Text => writeln!(out, "{name}: error: {message}"),
        OutputFormat::Json => writeln!(out, "{}", json!({ "file": name, "error": message })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_fixture(dir: &Path, name: &str, contents: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn run_to_string(files: &[PathBuf], format: OutputFormat) -> (bool, String) {
        let mut out = Vec::new();
        let parsed = run(files, format, &[], &mut out).unwrap();
        (parsed, String::from_utf8(out).unwrap())
    }

    const GEO_403: &str = "HTTP/2 403\r\ncontent-type: application/json\r\n\r\n\
        {\"error\":{\"code\":\"unsupported_country_region_territory\"}}";

    #[test]
    fn run_text_format_prints_one_line_per_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = write_fixture(dir.path(), "geo.http", GEO_403);

        let (parsed, output) = run_to_string(std::slice::from_ref(&file), OutputFormat::Text);

        assert!(parsed);
        assert_eq!(
            output,
            format!(
                "{}: geo_block openai.unsupported_region — HTTP 403; \
                 JSON error.code = unsupported_country_region_territory\n",
                file.display()
            )
        );
    }

    #[test]
    fn run_json_format_prints_fields() {
        let dir = tempfile::tempdir().unwrap();
        let file = write_fixture(dir.path(), "geo.http", GEO_403);

        let (parsed, output) = run_to_string(std::slice::from_ref(&file), OutputFormat::Json);

        assert!(parsed);
        let line: serde_json::Value = serde_json::from_str(output.trim_end()).unwrap();
        assert_eq!(
            line,
            json!({
                "file": file.display().to_string(),
                "class": "geo_block",
                "reason": "openai.unsupported_region",
                "evidence": "HTTP 403; JSON error.code = unsupported_country_region_territory",
                "http_status": 403,
            })
        );
    }

    #[test]
    fn run_invalid_file_reports_error_and_continues() {
        let dir = tempfile::tempdir().unwrap();
        let bad = write_fixture(dir.path(), "bad.http", "hello\n");
        let good = write_fixture(dir.path(), "geo.http", GEO_403);

        let (parsed, output) = run_to_string(&[bad.clone(), good], OutputFormat::Text);

        assert!(!parsed);
        let first = output.lines().next().unwrap();
        assert_eq!(
            first,
            format!(
                "{}: error: input is not an HTTP response: expected a status line such as \
                 \"HTTP/1.1 200 OK\", found \"hello\" (save responses with curl -si)",
                bad.display()
            )
        );
        assert_eq!(output.lines().count(), 2);
    }

    #[test]
    fn run_missing_file_json_reports_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.http");

        let (parsed, output) = run_to_string(std::slice::from_ref(&missing), OutputFormat::Json);

        assert!(!parsed);
        let line: serde_json::Value = serde_json::from_str(output.trim_end()).unwrap();
        let name = missing.display().to_string();
        assert_eq!(line["file"], json!(name));
        assert_eq!(
            line["error"],
            json!(format!(
                "cannot read {name}: No such file or directory (os error 2)"
            ))
        );
    }
}
