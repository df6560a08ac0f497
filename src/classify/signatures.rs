//! The built-in signature table and the index of its body needles.
//!
//! The table is data: one row per signature, checked top to bottom after the user rules, and
//! the first row whose matchers all hold gives the verdict. Rows may share an id when a
//! family has several shapes. All body needles are lowercase ASCII, so one pass of a
//! multi-literal search over the lowercased body finds every needle of the table at once.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::LazyLock;

use regex::bytes::Regex as BytesRegex;

use super::Class::{self, Auth, GeoBlock, Proxy, RateLimited, ServerError, WafHtml};
use super::rule::{Matcher, Rule};

/// The compiled built-in table.
pub(crate) struct BuiltinTable {
    pub(crate) rules: Vec<Rule>,
    pub(crate) needles: NeedleIndex,
}

/// The built-in table, compiled on first use.
pub(crate) static BUILTIN: LazyLock<BuiltinTable> = LazyLock::new(|| {
    let rules = builtin_rules();
    let needles = NeedleIndex::new(&rules);
    BuiltinTable { rules, needles }
});

/// Needles per multi-literal searcher. The regex crate runs its SIMD literal search only for
/// small sets of literals. On a 64 KiB HTML page (2-core development machine, release
/// build), one alternation of all 66 needles took about 29 µs, groups of 16 about 41 µs,
/// and groups of 32 about 21 µs.
const NEEDLES_PER_SEARCHER: usize = 32;

/// Phrases that a provider or CDN uses to refuse the caller's country or region.
const REGION_PHRASES: [&str; 11] = [
    "not available in your region",
    "not available in your country",
    "unavailable in your region",
    "unavailable in your country",
    "not supported in your region",
    "not supported in your country",
    "not available in your location",
    "isn't available in your country",
    "is not available in your area",
    "country, region, or territory not supported",
    "unsupported country",
];

/// Words in a captive portal's redirect target.
const PORTAL_WORDS: [&str; 8] = [
    "login", "portal", "hotspot", "captive", "signin", "sign-in", "splash", "guest",
];

/// Returns the built-in rows in the order they are checked.
fn builtin_rules() -> Vec<Rule> {
    let mut rules = Vec::new();
    rules.extend(proxy_rules());
    rules.extend(provider_rules());
    rules.extend(edge_rules());
    rules
}

/// Pages that the route's proxy sent itself. These come first because a proxy's page hides
/// whatever the endpoint would have returned.
fn proxy_rules() -> Vec<Rule> {
    vec![
        rule("squid.error_page", Proxy, vec![header("x-squid-error")]),
        // tinyproxy passes the upstream's own Server header through on forwarded responses,
        // so `server: tinyproxy` marks a page that tinyproxy generated itself (its refusals
        // of a wrong proxy password and its "Unable to connect" pages).
        rule(
            "tinyproxy.error_page",
            Proxy,
            vec![
                Matcher::StatusRange(400..=599),
                header_with("server", "tinyproxy"),
            ],
        ),
        // Proxy-Authenticate is the proxy's challenge (RFC 9110), never the endpoint's,
        // whether the proxy sent it with 407 or, for a plain-HTTP request, with 401.
        rule(
            "proxy.auth_required",
            Proxy,
            vec![status(&[401, 407]), header("proxy-authenticate")],
        ),
        // A gateway page that names the proxy's own failure. Via is required: a CDN 5xx
        // page has no such phrase, and an API's own 502 without Via is the server's.
        rule(
            "proxy.upstream_error",
            Proxy,
            vec![
                Matcher::StatusRange(500..=504),
                header("via"),
                Matcher::HtmlBody,
                any(bodies(&[
                    "proxy error",
                    "the proxy server",
                    "proxy server received",
                    "unable to connect",
                ])),
            ],
        ),
    ]
}

/// Provider error codes in JSON bodies. They come before every header and HTML rule because
/// providers behind Cloudflare send `server: cloudflare`, `cf-ray` and `__cf_bm` with their
/// own JSON errors: those headers never decide a verdict on their own.
fn provider_rules() -> Vec<Rule> {
    let mut rules = vec![rule("http.451", GeoBlock, vec![status(&[451])])];
    rules.extend(provider_geo_rules());
    rules.extend(provider_auth_rules());
    rules.extend(provider_limit_rules());
    rules
}

fn provider_geo_rules() -> Vec<Rule> {
    vec![
        rule(
            "openai.unsupported_region",
            GeoBlock,
            vec![any(vec![
                json("error.code", "unsupported_country_region_territory"),
                json("code", "unsupported_country_region_territory"),
            ])],
        ),
        // A 403 `forbidden` from Anthropic is its country refusal; `permission_error` (below)
        // is the key's missing permission.
        rule(
            "anthropic.forbidden",
            GeoBlock,
            vec![status(&[403]), json("error.type", "forbidden")],
        ),
        rule(
            "gateway.region_error",
            GeoBlock,
            vec![any(vec![
                json("error.type", "RegionError"),
                json("error.name", "RegionError"),
                json("type", "RegionError"),
            ])],
        ),
        rule(
            "bedrock.unsupported_country",
            GeoBlock,
            vec![
                status(&[400, 403]),
                body("not allowed from unsupported countries"),
            ],
        ),
        // Gemini returns 400 for both a bad key and a refused location, so the body decides.
        rule(
            "gemini.location",
            GeoBlock,
            vec![status(&[400]), body("user location is not supported")],
        ),
        rule(
            "openrouter.model_region",
            GeoBlock,
            vec![
                status(&[403]),
                json("error.code", "403"),
                body("model is not available in your region"),
            ],
        ),
        // Network rules refuse the exit IP, not the country; their ids tell them apart from
        // country bans.
        rule(
            "azure.network_rule",
            GeoBlock,
            vec![status(&[403]), body("virtual network/firewall rules")],
        ),
        rule(
            "azure.public_access_disabled",
            GeoBlock,
            vec![status(&[403]), body("public access is disabled")],
        ),
        rule(
            "network.ip_not_allowed",
            GeoBlock,
            vec![
                status(&[401, 403]),
                any(bodies(&[
                    "ip address is not allowed",
                    "ip is not allowed",
                    "not in the ip allow list",
                    "not in the allowlist",
                    "ip not whitelisted",
                    "ip_not_allowed",
                ])),
            ],
        ),
    ]
}

fn provider_auth_rules() -> Vec<Rule> {
    vec![
        // Billing, sent with 429 by OpenAI: waiting never helps, so it is auth and must come
        // before the rate-limit rows.
        rule(
            "api.insufficient_quota",
            Auth,
            vec![any(vec![
                json("error.code", "insufficient_quota"),
                json("error.type", "insufficient_quota"),
            ])],
        ),
        rule(
            "api.invalid_api_key",
            Auth,
            vec![any(vec![
                json("error.code", "invalid_api_key"),
                json("code", "invalid_api_key"),
            ])],
        ),
        rule(
            "api.organization_restricted",
            Auth,
            vec![json("error.code", "organization_restricted")],
        ),
        rule(
            "anthropic.authentication_error",
            Auth,
            vec![json("error.type", "authentication_error")],
        ),
        rule(
            "anthropic.permission_error",
            Auth,
            vec![json("error.type", "permission_error")],
        ),
        rule(
            "gemini.api_key_invalid",
            Auth,
            vec![any(vec![
                json("error.details.reason", "API_KEY_INVALID"),
                body("api_key_invalid"),
            ])],
        ),
        rule(
            "azure.invalid_key_or_endpoint",
            Auth,
            vec![
                status(&[401]),
                body("invalid subscription key or wrong api endpoint"),
            ],
        ),
        rule(
            "xai.invalid_key",
            Auth,
            vec![status(&[400]), body("incorrect api key provided")],
        ),
        rule(
            "openrouter.invalid_key",
            Auth,
            vec![
                status(&[401]),
                json("error.code", "401"),
                any(bodies(&[
                    "no auth credentials found",
                    "user not found",
                    "missing authentication header",
                ])),
            ],
        ),
        rule(
            "openrouter.no_credits",
            Auth,
            vec![status(&[402]), body("credits")],
        ),
        rule(
            "deepseek.insufficient_balance",
            Auth,
            vec![status(&[402]), body("insufficient balance")],
        ),
        // Payment Required is billing whatever the body contains.
        rule("http.402", Auth, vec![status(&[402])]),
    ]
}

fn provider_limit_rules() -> Vec<Rule> {
    vec![
        rule(
            "api.rate_limit",
            RateLimited,
            vec![
                status(&[429]),
                any(vec![
                    json("error.code", "rate_limit_exceeded"),
                    json("error.type", "rate_limit_error"),
                    json("error.type", "rate_limit_exceeded"),
                    json("error.type", "requests"),
                    json("error.type", "tokens"),
                    json("error.status", "RESOURCE_EXHAUSTED"),
                    json("type", "rate_limited"),
                ]),
            ],
        ),
        rule(
            "anthropic.overloaded",
            ServerError,
            vec![json("error.type", "overloaded_error")],
        ),
    ]
}

/// CDN, WAF, captive portal and interception pages.
fn edge_rules() -> Vec<Rule> {
    let mut rules = edge_geo_rules();
    rules.extend(cloudflare_block_rules());
    rules.extend(other_block_rules());
    rules.extend(edge_server_error_rules());
    rules
}

/// Country bans served by a CDN or as HTML. They come before the challenge rows because a
/// ban page may embed the CDN's challenge script and is still a ban.
fn edge_geo_rules() -> Vec<Rule> {
    vec![
        rule(
            "cloudflare.1009",
            GeoBlock,
            vec![any(bodies(&[
                "banned the country or region",
                "error code: 1009",
                "cf-error-code\">1009",
            ]))],
        ),
        rule(
            "cloudfront.geo_restriction",
            GeoBlock,
            vec![body("configured to block access from your country")],
        ),
        // A region page is a ban whatever its status: some edges send it with 200.
        rule(
            "html.region_unavailable",
            GeoBlock,
            vec![Matcher::HtmlBody, any(bodies(&REGION_PHRASES))],
        ),
        rule(
            "api.region_unavailable",
            GeoBlock,
            vec![
                Matcher::StatusRange(400..=499),
                any(bodies(&REGION_PHRASES)),
            ],
        ),
    ]
}

/// Cloudflare's numbered errors and block pages, from the most specific marker to the most
/// general. A Cloudflare 5xx page is not among them: it has none of these markers.
fn cloudflare_block_rules() -> Vec<Rule> {
    vec![
        rule(
            "cloudflare.1015",
            RateLimited,
            vec![any(vec![
                body("error code: 1015"),
                body("cf-error-code\">1015"),
                title("you are being rate limited"),
            ])],
        ),
        rule(
            "cloudflare.1020",
            WafHtml,
            vec![any(bodies(&["error code: 1020", "cf-error-code\">1020"]))],
        ),
        rule(
            "cloudflare.1010",
            WafHtml,
            vec![any(bodies(&["error code: 1010", "cf-error-code\">1010"]))],
        ),
        rule(
            "cloudflare.blocked",
            WafHtml,
            vec![
                Matcher::HtmlBody,
                any(vec![
                    body("sorry, you have been blocked"),
                    title("attention required! | cloudflare"),
                ]),
            ],
        ),
        rule(
            "cloudflare.challenge",
            WafHtml,
            vec![header_with("cf-mitigated", "challenge")],
        ),
        // Cloudflare has served "Just a moment..." with 503 as well as 403, so these rows
        // come before the 5xx page rows.
        rule(
            "cloudflare.challenge",
            WafHtml,
            vec![Matcher::HtmlBody, title("just a moment")],
        ),
        // The challenge script alone also appears on ordinary pages of sites behind
        // Cloudflare, so it only counts on a 403.
        rule(
            "cloudflare.challenge",
            WafHtml,
            vec![
                status(&[403]),
                Matcher::HtmlBody,
                body("/cdn-cgi/challenge-platform"),
            ],
        ),
    ]
}

fn other_block_rules() -> Vec<Rule> {
    vec![
        rule(
            "vercel.checkpoint",
            WafHtml,
            vec![
                status(&[403, 429]),
                any(vec![
                    header("x-vercel-mitigated"),
                    title("vercel security checkpoint"),
                ]),
            ],
        ),
        rule(
            "akamai.access_denied",
            WafHtml,
            vec![
                status(&[403]),
                any(vec![
                    header_with("server", "akamaighost"),
                    body("errors.edgesuite.net"),
                    body("errors&#46;edgesuite&#46;net"),
                ]),
            ],
        ),
        rule("aws.waf_block", WafHtml, vec![header("x-amzn-waf-action")]),
        rule(
            "aws.waf_block",
            WafHtml,
            vec![
                status(&[403]),
                body("request blocked"),
                body("generated by cloudfront"),
            ],
        ),
        rule(
            "zscaler.block_page",
            WafHtml,
            vec![Matcher::HtmlBody, body("zscaler")],
        ),
        rule(
            "corporate.block_page",
            WafHtml,
            vec![
                Matcher::HtmlBody,
                any(vec![
                    title("website blocked"),
                    title("web page blocked"),
                    title("access blocked"),
                    body("blocked by your organization"),
                    body("in accordance with company policy"),
                    body("blocked by corporate policy"),
                ]),
            ],
        ),
        rule(
            "captive_portal.page",
            WafHtml,
            vec![
                status(&[200]),
                Matcher::HtmlBody,
                any(bodies(&[
                    "http-equiv=\"refresh\"",
                    "http-equiv='refresh'",
                    "http-equiv=refresh",
                ])),
                any(bodies(&PORTAL_WORDS)),
            ],
        ),
        rule(
            "captive_portal.redirect",
            WafHtml,
            vec![
                status(&[301, 302, 303, 307, 308]),
                any(PORTAL_WORDS
                    .iter()
                    .map(|word| header_with("location", word))
                    .collect()),
            ],
        ),
        // An empty 403 carrying a CDN's headers came from the edge, because the provider APIs
        // in the table explain a refusal in their body.
        rule(
            "cdn.empty_403",
            WafHtml,
            vec![
                status(&[403]),
                Matcher::EmptyBody,
                any(vec![
                    header("cf-ray"),
                    header_with("server", "cloudflare"),
                    header("x-amz-cf-id"),
                    header_with("server", "cloudfront"),
                    header_with("x-cache", "cloudfront"),
                    header_with("server", "akamaighost"),
                    header("x-akamai-request-id"),
                    header("x-served-by"),
                    header("x-vercel-id"),
                    header_with("via", "cloudfront"),
                ]),
            ],
        ),
    ]
}

/// Error pages of a CDN or web server in front of the API: the upstream failed.
fn edge_server_error_rules() -> Vec<Rule> {
    vec![
        rule(
            "cloudflare.5xx_page",
            ServerError,
            vec![
                Matcher::StatusRange(500..=599),
                Matcher::HtmlBody,
                body("cloudflare"),
            ],
        ),
        rule(
            "cloudfront.5xx_page",
            ServerError,
            vec![
                Matcher::StatusRange(500..=599),
                Matcher::HtmlBody,
                body("generated by cloudfront"),
            ],
        ),
        rule(
            "nginx.5xx_page",
            ServerError,
            vec![
                Matcher::StatusRange(500..=599),
                Matcher::HtmlBody,
                body("<center>nginx"),
            ],
        ),
    ]
}

fn rule(id: &'static str, class: Class, when: Vec<Matcher>) -> Rule {
    Rule {
        id: Cow::Borrowed(id),
        class,
        when,
    }
}

fn status(codes: &[u16]) -> Matcher {
    Matcher::Status(codes.to_vec())
}

fn header(name: &str) -> Matcher {
    Matcher::Header {
        name: name.to_owned(),
        contains: None,
    }
}

fn header_with(name: &str, text: &str) -> Matcher {
    Matcher::Header {
        name: name.to_owned(),
        contains: Some(text.to_owned()),
    }
}

fn body(text: &str) -> Matcher {
    Matcher::BodyContains(text.to_owned())
}

fn bodies(texts: &[&str]) -> Vec<Matcher> {
    texts.iter().map(|text| body(text)).collect()
}

fn json(path: &str, equals: &str) -> Matcher {
    Matcher::JsonField {
        path: path.to_owned(),
        equals: equals.to_owned(),
    }
}

fn title(text: &str) -> Matcher {
    Matcher::HtmlTitle(text.to_owned())
}

fn any(choices: Vec<Matcher>) -> Matcher {
    Matcher::AnyOf(choices)
}

/// Every body needle of the built-in table and the searchers that find them, one pass per
/// group of needles.
pub(crate) struct NeedleIndex {
    positions: HashMap<String, usize>,
    /// For each needle, the needles it contains (itself included): a match of the longer
    /// one proves the shorter ones are present too.
    contained: Vec<Vec<usize>>,
    /// Alternations of the needles in groups of [`NEEDLES_PER_SEARCHER`], each longest
    /// first, so that at any start offset the longest needle of the group is reported.
    /// `None` if the regex crate refused to build one, in which case each needle is
    /// searched separately.
    searchers: Option<Vec<BytesRegex>>,
    needles: Vec<String>,
}

impl NeedleIndex {
    fn new(rules: &[Rule]) -> Self {
        let mut needles: Vec<String> = Vec::new();
        for matcher in rules.iter().flat_map(|rule| &rule.when) {
            matcher.visit(&mut |inner| {
                if let Matcher::BodyContains(text) = inner {
                    let text = text.to_ascii_lowercase();
                    if !needles.contains(&text) {
                        needles.push(text);
                    }
                }
            });
        }
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));

        let positions = needles
            .iter()
            .enumerate()
            .map(|(index, needle)| (needle.clone(), index))
            .collect();
        let contained = needles
            .iter()
            .map(|outer| {
                (0..needles.len())
                    .filter(|&index| outer.contains(needles[index].as_str()))
                    .collect()
            })
            .collect();
        let searchers = needles
            .chunks(NEEDLES_PER_SEARCHER)
            .map(|group| {
                let escaped: Vec<String> =
                    group.iter().map(|needle| regex::escape(needle)).collect();
                BytesRegex::new(&escaped.join("|")).ok()
            })
            .collect();

        NeedleIndex {
            positions,
            contained,
            searchers,
            needles,
        }
    }

    /// Returns the index of `needle` (lowercase), or `None` when the table does not use it.
    pub(crate) fn position(&self, needle: &str) -> Option<usize> {
        self.positions.get(needle).copied()
    }

    /// Returns, for each needle, whether `lower` contains it.
    pub(crate) fn scan(&self, lower: &str) -> Vec<bool> {
        let mut hits = vec![false; self.needles.len()];
        let Some(searchers) = &self.searchers else {
            for (hit, needle) in hits.iter_mut().zip(&self.needles) {
                *hit = lower.contains(needle.as_str());
            }
            return hits;
        };
        for searcher in searchers {
            self.scan_with(searcher, lower.as_bytes(), &mut hits);
        }
        hits
    }

    /// Marks in `hits` every needle of one group found in `haystack`, and the needles that
    /// those contain.
    fn scan_with(&self, searcher: &BytesRegex, haystack: &[u8], hits: &mut [bool]) {
        let mut start = 0;
        // Restarting one byte after each match start finds needles that overlap a match.
        while start < haystack.len() {
            let Some(found) = searcher.find_at(haystack, start) else {
                break;
            };
            let text = std::str::from_utf8(found.as_bytes()).unwrap_or_default();
            if let Some(index) = self.position(text) {
                for &inner in &self.contained[index] {
                    hits[inner] = true;
                }
            }
            start = found.start() + 1;
        }
    }

    /// Returns every needle, longest first.
    #[cfg(test)]
    pub(crate) fn needles(&self) -> &[String] {
        &self.needles
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_needles_are_lowercase_ascii() {
        for needle in BUILTIN.needles.needles() {
            assert!(needle.is_ascii(), "{needle:?}");
            assert_eq!(needle, &needle.to_ascii_lowercase());
        }
    }

    #[test]
    fn builtin_table_builds_its_searcher() {
        assert!(BUILTIN.needles.searchers.is_some());
    }

    #[test]
    fn builtin_rules_every_row_has_a_matcher() {
        for rule in &BUILTIN.rules {
            assert!(!rule.when.is_empty(), "{}", rule.id);
        }
    }

    #[test]
    fn needle_scan_overlapping_needles_found() {
        // "error code: 1020" and "cf-error-code\">1020" share text with other needles; a
        // body holding many needles at once must report each of them.
        let body = "x error code: 1020 error code: 1015 banned the country or region \
                    sorry, you have been blocked cloudflare zscaler credits";
        let index = &BUILTIN.needles;
        let hits = index.scan(body);
        for (needle, hit) in index.needles().iter().zip(&hits) {
            assert_eq!(*hit, body.contains(needle.as_str()), "{needle:?}");
        }
        assert_eq!(hits.iter().filter(|hit| **hit).count(), 7);
    }

    #[test]
    fn needle_scan_prefix_inside_longer_needle() {
        let rules = vec![rule(
            "test.prefix",
            WafHtml,
            vec![any(bodies(&["abc", "abcdef", "cde"]))],
        )];
        let index = NeedleIndex::new(&rules);
        let hits = index.scan("xxabcdefxx");
        assert_eq!(index.needles(), ["abcdef", "abc", "cde"]);
        assert_eq!(hits, [true, true, true]);
        assert_eq!(index.scan("xxabcxx"), [false, true, false]);
    }

    #[test]
    fn needle_position_unknown_needle_is_none() {
        assert_eq!(BUILTIN.needles.position("not a table needle"), None);
        assert!(BUILTIN.needles.position("zscaler").is_some());
    }
}
