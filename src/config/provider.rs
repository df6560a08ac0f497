//! Provider presets (`provider:` on a monitor): the default URL of a request that spends no
//! tokens, where the API key goes, and fixed extra headers.
//!
//! A preset only fills in what the monitor leaves out: an explicit `url`, a header of the
//! same name or an `expect` field replaces the preset's value.

/// The place in the request for the monitor's `api_key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPlacement {
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// The key as the whole value of this header.
    Header(&'static str),
    /// The key as this query parameter of the URL.
    Query(&'static str),
}

/// One provider preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    /// The value of `provider:`.
    pub name: &'static str,
    /// The default URL; `None` when it depends on the account (the monitor must set `url`).
    pub url: Option<&'static str>,
    /// The place of the API key in the request.
    pub key: KeyPlacement,
    /// Headers sent on every request, besides the key.
    pub headers: &'static [(&'static str, &'static str)],
    /// An example URL shown when `url` is required and missing.
    pub url_example: &'static str,
}

/// Every preset, in the order the documentation lists them.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "openai",
        url: Some("https://api.openai.com/v1/models"),
        key: KeyPlacement::Bearer,
        headers: &[],
        url_example: "",
    },
    Preset {
        name: "groq",
        url: Some("https://api.groq.com/openai/v1/models"),
        key: KeyPlacement::Bearer,
        headers: &[],
        url_example: "",
    },
    Preset {
        name: "anthropic",
        url: Some("https://api.anthropic.com/v1/models"),
        key: KeyPlacement::Header("x-api-key"),
        headers: &[("anthropic-version", "2023-06-01")],
        url_example: "",
    },
    Preset {
        name: "gemini",
        url: Some("https://generativelanguage.googleapis.com/v1beta/models"),
        key: KeyPlacement::Query("key"),
        headers: &[],
        url_example: "",
    },
    Preset {
        name: "mistral",
        url: Some("https://api.mistral.ai/v1/models"),
        key: KeyPlacement::Bearer,
        headers: &[],
        url_example: "",
    },
    Preset {
        name: "deepseek",
        url: Some("https://api.deepseek.com/models"),
        key: KeyPlacement::Bearer,
        headers: &[],
        url_example: "",
    },
    // OpenRouter serves its model list without a key, so the preset requests the key's own
    // record instead, which returns 401 for a bad key.
    Preset {
        name: "openrouter",
        url: Some("https://openrouter.ai/api/v1/key"),
        key: KeyPlacement::Bearer,
        headers: &[],
        url_example: "",
    },
    Preset {
        name: "xai",
        url: Some("https://api.x.ai/v1/models"),
        key: KeyPlacement::Bearer,
        headers: &[],
        url_example: "",
    },
    Preset {
        name: "azure_openai",
        url: None,
        key: KeyPlacement::Header("api-key"),
        headers: &[],
        url_example: "https://RESOURCE.openai.azure.com/openai/models?api-version=2024-10-21",
    },
    Preset {
        name: "cohere",
        url: Some("https://api.cohere.com/v1/models"),
        key: KeyPlacement::Bearer,
        headers: &[],
        url_example: "",
    },
];

/// Finds the preset named `name`.
pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|preset| preset.name == name)
}

/// Returns the preset names joined with ", ", for error messages.
pub fn names() -> String {
    PRESETS
        .iter()
        .map(|preset| preset.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_have_unique_names() {
        let mut names: Vec<&str> = PRESETS.iter().map(|preset| preset.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PRESETS.len());
    }

    #[test]
    fn presets_without_url_have_an_example() {
        for preset in PRESETS {
            assert_eq!(
                preset.url.is_none(),
                !preset.url_example.is_empty(),
                "{}",
                preset.name
            );
        }
    }

    #[test]
    fn find_returns_anthropic_headers() {
        let preset = find("anthropic").unwrap();
        assert_eq!(preset.key, KeyPlacement::Header("x-api-key"));
        assert_eq!(preset.headers, &[("anthropic-version", "2023-06-01")]);
        assert_eq!(find("nope"), None);
    }
}
