//! Validation of `monitors[]`: provider presets, URL, headers, expectation, timing, routes.

use url::Url;

use super::provider::{self, KeyPlacement, Preset};
use super::raw::{RawExpect, RawMonitor, Text};
use super::validate::{Defaults, Validator, as_written};
use super::values::{check_header_name, check_header_value};
use crate::classify::Expectation;

use super::{DEFAULT_RETRY_BACKOFF, MAX_RETRIES, Monitor};

impl Validator<'_> {
    pub(super) fn monitors(
        &mut self,
        raw_monitors: &[RawMonitor],
        defaults: &Defaults,
        route_names: &[String],
    ) -> Vec<Monitor> {
        let mut names = Vec::new();
        let mut monitors = Vec::new();
        for (index, raw) in raw_monitors.iter().enumerate() {
            let path = format!("monitors[{index}]");
            let before = self.error_count();
            let name = self.name(&format!("{path}.name"), &raw.name);
            let monitor = self.monitor(&path, raw, defaults, route_names);
            let Some(name) = name else { continue };
            names.push((name.clone(), format!("{path}.name")));
            if let (Some(monitor), true) = (monitor, self.error_count() == before) {
                monitors.push(Monitor { name, ..monitor });
            }
        }
        self.reject_duplicates("monitor", &names);
        monitors
    }

    /// Builds one monitor; the caller checks the name and sets it.
    fn monitor(
        &mut self,
        path: &str,
        raw: &RawMonitor,
        defaults: &Defaults,
        route_names: &[String],
    ) -> Option<Monitor> {
        let preset = self.preset(path, raw);
        let api_key = self.api_key(path, raw, preset.is_some());
        let url = self.monitor_url(path, raw, preset);
        let method = self.method(&format!("{path}.method"), raw);
        let headers = self.headers(path, raw, preset, api_key.as_deref());
        let body = raw
            .body
            .as_ref()
            .and_then(|text| self.text(&format!("{path}.body"), text));
        let expect = self.expect(
            &format!("{path}.expect"),
            raw.expect.as_ref(),
            preset.is_some(),
        );

        let schedule = match &raw.schedule {
            Some(text) => self.schedule(&format!("{path}.schedule"), text),
            None => Some(defaults.schedule.clone()),
        };
        let timeout = match &raw.timeout {
            Some(text) => self.timeout(&format!("{path}.timeout"), text),
            None => Some(defaults.timeout),
        };
        let max_body_bytes = match &raw.max_body {
            Some(text) => self.max_body(&format!("{path}.max_body"), text),
            None => Some(defaults.max_body_bytes),
        };
        let routes = self.monitor_routes(&format!("{path}.routes"), raw, route_names);
        let retries = match &raw.retries {
            Some(text) => self.retries(&format!("{path}.retries"), text),
            None => Some(0),
        };
        let retry_backoff = match &raw.retry_backoff {
            Some(text) => self.duration(&format!("{path}.retry_backoff"), text),
            None => Some(DEFAULT_RETRY_BACKOFF),
        };

        let mut url = url?;
        if let (Some(preset), Some(key)) = (preset, api_key.as_deref()) {
            add_query_key(&mut url, preset.key, key);
        }
        Some(Monitor {
            name: String::new(),
            url,
            method: method?,
            headers: headers?,
            body,
            expect: expect?,
            schedule: schedule?,
            timeout: timeout?,
            max_body_bytes: max_body_bytes?,
            routes: routes?,
            retries: retries?,
            retry_backoff: retry_backoff?,
        })
    }

    fn retries(&mut self, path: &str, text: &Text) -> Option<u32> {
        let value = self.text(path, text)?;
        let parsed = value
            .parse::<u32>()
            .ok()
            .filter(|count| *count <= MAX_RETRIES)
            .ok_or_else(|| {
                format!(
                    "invalid retries \"{value}\" (expected a whole number from 0 to {MAX_RETRIES})"
                )
            });
        self.check(path, parsed)
    }

    fn preset(&mut self, path: &str, raw: &RawMonitor) -> Option<&'static Preset> {
        let key_path = format!("{path}.provider");
        let written = raw.provider.as_ref()?;
        let name = self.text(&key_path, written)?;
        let found = provider::find(&name);
        if found.is_none() {
            let message = format!(
                "unknown provider \"{name}\" (providers are: {})",
                provider::names()
            );
            self.error(&key_path, as_written(message, &name, written));
        }
        found
    }

    /// Returns the expanded key, `None` when absent or empty.
    fn api_key(&mut self, path: &str, raw: &RawMonitor, has_preset: bool) -> Option<String> {
        let key_path = format!("{path}.api_key");
        let text = raw.api_key.as_ref()?;
        if !has_preset && raw.provider.is_none() {
            let message = "api_key needs provider: to know where the key goes (without a provider, set the header yourself, e.g. headers: { Authorization: \"Bearer ${KEY}\" })";
            self.error(&key_path, message.to_owned());
            return None;
        }
        let key = self.optional_text(&key_path, Some(text))?;
        if let Err(message) = check_header_value(&key) {
            self.error(&key_path, message);
            return None;
        }
        Some(key)
    }

    fn monitor_url(
        &mut self,
        path: &str,
        raw: &RawMonitor,
        preset: Option<&Preset>,
    ) -> Option<Url> {
        let key_path = format!("{path}.url");
        if let Some(text) = &raw.url {
            let value = self.url_text(&key_path, text)?;
            return self.http_url(&key_path, text, &value);
        }

        match preset {
            Some(Preset { url: Some(url), .. }) => Url::parse(url).ok(),
            Some(preset) => {
                let message = format!(
                    "provider {} needs url (e.g. url: {})",
                    preset.name, preset.url_example
                );
                self.error(path, message);
                None
            }
            // An unknown provider was reported already; a missing url would only repeat it.
            None if raw.provider.is_some() => None,
            None => {
                let message = format!(
                    "missing key \"url\" (set url, or provider: one of {})",
                    provider::names()
                );
                self.error(path, message);
                None
            }
        }
    }

    fn method(&mut self, path: &str, raw: &RawMonitor) -> Option<String> {
        let Some(text) = &raw.method else {
            return Some("GET".to_owned());
        };
        let method = self.text(path, text)?.to_ascii_uppercase();
        let is_token = !method.is_empty() && check_header_name(&method).is_ok();
        if !is_token {
            self.error(
                path,
                format!(
                    "invalid HTTP method \"{}\" (use a method such as GET, HEAD or POST)",
                    text.0
                ),
            );
            return None;
        }
        Some(method)
    }

    /// Builds the request headers: preset headers, then the key, then the monitor's own
    /// headers, each replacing an earlier header of the same name.
    fn headers(
        &mut self,
        path: &str,
        raw: &RawMonitor,
        preset: Option<&Preset>,
        api_key: Option<&str>,
    ) -> Option<Vec<(String, String)>> {
        let mut headers: Vec<(String, String)> = Vec::new();
        if let Some(preset) = preset {
            for (name, value) in preset.headers {
                set_header(&mut headers, name, value.to_string());
            }
            match (preset.key, api_key) {
                (KeyPlacement::Bearer, Some(key)) => {
                    set_header(&mut headers, "Authorization", format!("Bearer {key}"))
                }
                (KeyPlacement::Header(name), Some(key)) => {
                    set_header(&mut headers, name, key.to_owned())
                }
                _ => {}
            }
        }

        let before = self.error_count();
        let mut written_names: Vec<(&str, String)> = Vec::new();
        for (name, text) in raw.headers.iter().flat_map(|map| map.0.iter()) {
            let header_path = format!("{path}.headers.{name}");
            if let Err(message) = check_header_name(name) {
                self.key_error(&header_path, message);
                continue;
            }
            let first = written_names
                .iter()
                .find(|(earlier, _)| earlier.eq_ignore_ascii_case(name));
            if let Some((earlier, earlier_path)) = first {
                let line = self.key_line(earlier_path);
                let message = format!(
                    "duplicate header \"{name}\" (header names ignore case, so it repeats \"{earlier}\" on line {line}; keep one)"
                );
                self.key_error(&header_path, message);
                continue;
            }
            written_names.push((name, header_path.clone()));
            let Some(value) = self.text(&header_path, text) else {
                continue;
            };
            if let Err(message) = check_header_value(&value) {
                self.error(&header_path, message);
                continue;
            }
            set_header(&mut headers, name, value);
        }
        (self.error_count() == before).then_some(headers)
    }

    fn expect(
        &mut self,
        path: &str,
        raw: Option<&RawExpect>,
        has_preset: bool,
    ) -> Option<Expectation> {
        // Preset URLs are list endpoints whose healthy status is exactly 200.
        let default_statuses = if has_preset { vec![200] } else { Vec::new() };
        let Some(raw) = raw else {
            return Some(Expectation {
                statuses: default_statuses,
                json: true,
            });
        };

        let statuses = match &raw.status {
            Some(status) => self.statuses(&format!("{path}.status"), status)?,
            None => default_statuses,
        };
        Some(Expectation {
            statuses,
            json: raw.json.unwrap_or(true),
        })
    }

    fn monitor_routes(
        &mut self,
        path: &str,
        raw: &RawMonitor,
        route_names: &[String],
    ) -> Option<Vec<String>> {
        let Some(listed) = &raw.routes else {
            return Some(route_names.to_vec());
        };
        if listed.is_empty() {
            self.error(
                path,
                "empty route list (remove routes: to run on every route)".to_owned(),
            );
            return None;
        }

        let before = self.error_count();
        let mut routes: Vec<String> = Vec::new();
        for (index, text) in listed.iter().enumerate() {
            let item_path = format!("{path}[{index}]");
            let Some(name) = self.text(&item_path, text) else {
                continue;
            };
            if !route_names.contains(&name) {
                let message = format!(
                    "unknown route \"{name}\" (routes are: {})",
                    route_names.join(", ")
                );
                self.error(&item_path, as_written(message, &name, text));
            } else if routes.contains(&name) {
                let message = format!("route \"{name}\" is listed twice");
                self.error(&item_path, as_written(message, &name, text));
            } else {
                routes.push(name);
            }
        }
        (self.error_count() == before).then_some(routes)
    }
}

/// Sets a header, replacing any header of the same name (case-insensitive) in place.
fn set_header(headers: &mut Vec<(String, String)>, name: &str, value: String) {
    match headers
        .iter_mut()
        .find(|(existing, _)| existing.eq_ignore_ascii_case(name))
    {
        Some(entry) => *entry = (name.to_owned(), value),
        None => headers.push((name.to_owned(), value)),
    }
}

/// Appends the key as a query parameter unless the URL already carries that parameter.
fn add_query_key(url: &mut Url, placement: KeyPlacement, key: &str) {
    let KeyPlacement::Query(parameter) = placement else {
        return;
    };
    if url.query_pairs().any(|(name, _)| name == parameter) {
        return;
    }
    url.query_pairs_mut().append_pair(parameter, key);
}
