//! Response bodies shaped like the real providers' responses, for scripting the upstream.
//! They are short stand-ins written for these tests, with the fields and markers that the
//! classifier looks at.

/// An OpenAI-style `GET /v1/models` success.
pub const MODELS: &str = r#"{"object":"list","data":[{"id":"test-model","object":"model","created":1700000000,"owned_by":"routewatch-test"}]}"#;

/// An OpenAI-style 401 for a wrong key.
pub const OPENAI_INVALID_KEY: &str = r#"{"error":{"message":"Incorrect API key provided: sk-test***1234.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;

/// An OpenAI-style 403 for a caller in an unsupported country.
pub const OPENAI_UNSUPPORTED_REGION: &str = r#"{"error":{"code":"unsupported_country_region_territory","message":"Country, region, or territory not supported","param":null,"type":"request_forbidden"}}"#;

/// A Cloudflare-style 403 block page, as served instead of the API.
pub const CLOUDFLARE_BLOCK_HTML: &str = "<!DOCTYPE html>\n<html lang=\"en-US\">\n<head><title>Attention Required! | Cloudflare</title></head>\n<body>\n<h1>Sorry, you have been blocked</h1>\n<p>You are unable to access api.test.invalid</p>\n<p>Cloudflare Ray ID: 0123456789abcdef</p>\n</body>\n</html>\n";
