//! The file as written: serde types that mirror monitors.yaml key for key.
//!
//! Every struct denies unknown keys. Scalars that later go through `${VAR}` expansion or a
//! unit parser stay text here, so that the validator can report them with their position.
//! No other module imports serde_yaml.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

/// Deserializes the whole file; the error is serde_yaml's, mapped by the caller.
pub(super) fn from_str(text: &str) -> Result<RawConfig, serde_yaml::Error> {
    serde_yaml::from_str(text)
}

/// Returns the line and column (both 1-based) that a serde_yaml error points at.
pub(super) fn error_location(error: &serde_yaml::Error) -> Option<(usize, usize)> {
    error
        .location()
        .map(|location| (location.line(), location.column()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub global: Option<RawGlobal>,
    pub defaults: Option<RawDefaults>,
    pub routes: Option<Vec<RawRoute>>,
    pub monitors: Option<Vec<RawMonitor>>,
    pub rules: Option<Vec<RawRule>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGlobal {
    pub concurrency: Option<usize>,
    pub history_size: Option<usize>,
    pub flap_threshold: Option<usize>,
    pub shard: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefaults {
    pub schedule: Option<Text>,
    pub timeout: Option<Text>,
    pub max_body: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub name: Text,
    pub proxy: Option<Text>,
    pub source_address: Option<Text>,
    pub ca_file: Option<Text>,
    pub trace_url: Option<Text>,
    pub trace_every: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMonitor {
    pub name: Text,
    pub provider: Option<Text>,
    pub api_key: Option<Text>,
    pub url: Option<Text>,
    pub method: Option<Text>,
    pub headers: Option<OrderedMap>,
    pub body: Option<Text>,
    pub expect: Option<RawExpect>,
    pub schedule: Option<Text>,
    pub timeout: Option<Text>,
    pub max_body: Option<Text>,
    pub routes: Option<Vec<Text>>,
    pub retries: Option<Text>,
    pub retry_backoff: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExpect {
    pub status: Option<OneOrMany>,
    pub json: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub name: Text,
    pub when: RawWhen,
    pub class: Text,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWhen {
    pub status: Option<OneOrMany>,
    pub header: Option<Text>,
    pub header_contains: Option<Text>,
    pub content_type: Option<Text>,
    pub body_contains: Option<Text>,
    pub body_regex: Option<Text>,
    pub json_field: Option<Text>,
    pub json_equals: Option<Text>,
    pub html_title: Option<Text>,
}

/// Any YAML scalar kept as its text (`10s`, `65536`, `true` all become strings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextVisitor)
    }
}

struct TextVisitor;

impl Visitor<'_> for TextVisitor {
    type Value = Text;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Text, E> {
        Ok(Text(value.to_owned()))
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Text, E> {
        Ok(Text(value.to_string()))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Text, E> {
        Ok(Text(value.to_string()))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Text, E> {
        Ok(Text(value.to_string()))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Text, E> {
        Ok(Text(value.to_string()))
    }
}

/// A scalar or a sequence of scalars (`status: 403` or `status: [401, 403]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OneOrMany {
    pub items: Vec<Text>,
    /// True when the file held a single scalar, so item paths carry no `[i]`.
    pub single: bool,
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(OneOrManyVisitor)
    }
}

struct OneOrManyVisitor;

impl OneOrManyVisitor {
    fn single(text: Text) -> OneOrMany {
        OneOrMany {
            items: vec![text],
            single: true,
        }
    }
}

impl<'de> Visitor<'de> for OneOrManyVisitor {
    type Value = OneOrMany;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a value or a list of values")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<OneOrMany, E> {
        TextVisitor.visit_str(value).map(Self::single)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<OneOrMany, E> {
        TextVisitor.visit_bool(value).map(Self::single)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<OneOrMany, E> {
        TextVisitor.visit_i64(value).map(Self::single)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<OneOrMany, E> {
        TextVisitor.visit_u64(value).map(Self::single)
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<OneOrMany, E> {
        TextVisitor.visit_f64(value).map(Self::single)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Text>()? {
            items.push(item);
        }
        Ok(OneOrMany {
            items,
            single: false,
        })
    }
}

/// A mapping of names to scalars in file order (`headers:`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct OrderedMap(pub Vec<(String, Text)>);

impl<'de> Deserialize<'de> for OrderedMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(OrderedMapVisitor)
    }
}

struct OrderedMapVisitor;

impl<'de> Visitor<'de> for OrderedMapVisitor {
    type Value = OrderedMap;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a mapping of header names to values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedMap, A::Error> {
        let mut entries = Vec::new();
        while let Some((key, value)) = map.next_entry::<Text, Text>()? {
            entries.push((key.0, value));
        }
        Ok(OrderedMap(entries))
    }
}
