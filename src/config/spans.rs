//! Positions of every key and value in the file, by key path (`monitors[2].routes[0]`).
//!
//! serde_yaml reports no positions for values that deserialize fine but fail validation, so
//! this module replays the file through yaml-rust2's marked event parser and records where
//! each node starts. The same pass finds syntax errors with their line and column.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    const START: Position = Position { line: 1, column: 1 };

    fn from_marker(marker: Marker) -> Position {
        // yaml-rust2 counts lines from 1 and columns from 0.
        Position {
            line: marker.line(),
            column: marker.col() + 1,
        }
    }
}

/// A YAML syntax error with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SyntaxError {
    pub position: Position,
    pub message: String,
}

/// Value and key positions by key path, and the structure that serde_yaml rejects with
/// unhelpful messages.
#[derive(Debug, Default)]
pub(super) struct Spans {
    values: HashMap<String, Position>,
    keys: HashMap<String, Position>,
    /// Key paths and positions of YAML merge keys (a plain `<<` key).
    pub merge_keys: Vec<(String, Position)>,
    /// The start of each document. More than one means a multi-document file.
    pub document_starts: Vec<Position>,
}

impl Spans {
    /// Scans `text`, returning the positions or the first syntax error.
    pub fn scan(text: &str) -> Result<Spans, SyntaxError> {
        let mut recorder = Recorder::default();
        let mut parser = Parser::new_from_str(text);
        parser
            .load(&mut recorder, true)
            .map_err(|error| SyntaxError {
                position: Position::from_marker(*error.marker()),
                message: error.info().to_owned(),
            })?;
        Ok(recorder.spans)
    }

    /// Returns where the value at `path` starts, or the nearest ancestor's position.
    pub fn value(&self, path: &str) -> Position {
        let mut current = path;
        loop {
            if let Some(position) = self.values.get(current) {
                return *position;
            }
            match parent(current) {
                Some(up) => current = up,
                None => return Position::START,
            }
        }
    }

    /// Returns where the key of `path` is written, falling back to its value's position.
    pub fn key(&self, path: &str) -> Position {
        match self.keys.get(path) {
            Some(position) => *position,
            None => self.value(path),
        }
    }
}

/// Strips the last `.key` or `[index]` from a path; `None` at the root.
fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

/// Appends a mapping key to a path.
pub(super) fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

enum Frame {
    Mapping {
        path: String,
        /// The key just read, while its value is awaited.
        key: Option<String>,
        /// The mapping's start mark, used as its position only when it has no keys.
        start: Position,
    },
    Sequence {
        path: String,
        next_index: usize,
    },
}

#[derive(Default)]
struct Recorder {
    spans: Spans,
    stack: Vec<Frame>,
}

impl Recorder {
    /// Works out the path of the node that starts now; `None` when the node is a mapping key.
    fn place_node(&mut self, event: &Event, mark: Marker) -> Option<String> {
        let position = Position::from_marker(mark);
        let path = match self.stack.last_mut() {
            None => String::new(),
            Some(Frame::Sequence { path, next_index }) => {
                let indexed = format!("{path}[{next_index}]");
                *next_index += 1;
                indexed
            }
            Some(Frame::Mapping { path, key, .. }) => match key.take() {
                Some(key) => join_key(path, &key),
                None => {
                    // A key: complex keys (mappings, sequences) get a placeholder name.
                    let name = match event {
                        Event::Scalar(value, ..) => value.clone(),
                        _ => "?".to_owned(),
                    };
                    // yaml-rust2 marks a block mapping's start after its first key, so the
                    // first key's own position stands for the mapping.
                    self.spans.values.entry(path.clone()).or_insert(position);
                    if let Event::Scalar(value, TScalarStyle::Plain, ..) = event {
                        if value == "<<" {
                            self.spans
                                .merge_keys
                                .push((join_key(path, &name), position));
                        }
                    }
                    self.spans
                        .keys
                        .entry(join_key(path, &name))
                        .or_insert(position);
                    *key = Some(name);
                    return None;
                }
            },
        };
        if !matches!(event, Event::MappingStart(..)) {
            self.spans.values.entry(path.clone()).or_insert(position);
        }
        Some(path)
    }
}

impl MarkedEventReceiver for Recorder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(..) | Event::Alias(..) => {
                self.place_node(&event, mark);
            }
            Event::MappingStart(..) => {
                let path = self
                    .place_node(&event, mark)
                    .unwrap_or_else(|| "?".to_owned());
                let start = Position::from_marker(mark);
                self.stack.push(Frame::Mapping {
                    path,
                    key: None,
                    start,
                });
            }
            Event::SequenceStart(..) => {
                let path = self
                    .place_node(&event, mark)
                    .unwrap_or_else(|| "?".to_owned());
                self.stack.push(Frame::Sequence {
                    path,
                    next_index: 0,
                });
            }
            Event::MappingEnd => {
                if let Some(Frame::Mapping { path, start, .. }) = self.stack.pop() {
                    self.spans.values.entry(path).or_insert(start);
                }
            }
            Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::DocumentStart => {
                self.spans.document_starts.push(Position::from_marker(mark));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
global:
  concurrency: 4
monitors:
  - name: a
    routes: [direct, us]
    headers:
      Authorization: x
";

    #[test]
    fn spans_value_positions() {
        let spans = Spans::scan(TEXT).unwrap();
        assert_eq!(
            spans.value("global.concurrency"),
            Position {
                line: 2,
                column: 16
            }
        );
        assert_eq!(
            spans.value("monitors[0].name"),
            Position {
                line: 4,
                column: 11
            }
        );
        assert_eq!(
            spans.value("monitors[0].routes[1]"),
            Position {
                line: 5,
                column: 22
            }
        );
        assert_eq!(
            spans.value("monitors[0].headers.Authorization"),
            Position {
                line: 7,
                column: 22
            }
        );
    }

    #[test]
    fn spans_key_positions() {
        let spans = Spans::scan(TEXT).unwrap();
        assert_eq!(
            spans.key("monitors[0].headers.Authorization"),
            Position { line: 7, column: 7 }
        );
        assert_eq!(spans.key("global"), Position { line: 1, column: 1 });
    }

    #[test]
    fn spans_unknown_path_falls_back_to_ancestor() {
        let spans = Spans::scan(TEXT).unwrap();
        assert_eq!(
            spans.value("monitors[0].url"),
            Position { line: 4, column: 5 }
        );
        assert_eq!(spans.value("nothing"), Position::START);
    }

    #[test]
    fn spans_syntax_error_has_position() {
        let error = Spans::scan("a: [1, 2\nb: 3\n").unwrap_err();
        assert_eq!(error.position, Position { line: 2, column: 2 });
        assert_eq!(error.message, "illegal placement of ':' indicator");
    }
}
