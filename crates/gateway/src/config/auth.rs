//! Who may use Tether: authentication of every request (`mode = "jwt"`) and
//! the per-principal policy of which upstreams and tools they reach.

use serde::{Deserialize, Serialize};

/// How requests are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    /// Everyone is the principal `anonymous` (refused on a non-loopback
    /// listener unless `allow_unauthenticated` is set).
    #[default]
    None,
    /// A JWT bearer token on every request.
    Jwt,
}

/// The `[auth]` section.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `none` or `jwt`.
    pub mode: AuthMode,
    /// Serve without authentication on a non-loopback listener (not recommended).
    pub allow_unauthenticated: bool,
    /// This server's resource identifier for OAuth clients (its public MCP
    /// URL); default: derived from the request's `Host`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource: String,
    /// Authorization servers OAuth clients should get tokens from.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub authorization_servers: Vec<String>,
    /// Scopes clients may ask for, advertised in the metadata document.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scopes_supported: Vec<String>,
    /// Token verification.
    pub jwt: JwtConfig,
    /// Who reaches which upstreams and tools; empty: everyone reaches everything.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<Policy>,
}

/// How JWTs are verified.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// HS256 shared secret.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub hs256_secret: String,
    /// Environment variable holding the HS256 shared secret.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub hs256_secret_env: String,
    /// PEM public key (RSA or EC P-256), inline or as a file path.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub public_key_pem: String,
    /// JWKS document: an `http(s)://` URL (refreshed) or a file path.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub jwks_url: String,
    /// Seconds between JWKS refreshes (also the soonest a refresh for an
    /// unknown key id happens again).
    pub jwks_refresh_secs: u64,
    /// Required `iss`; empty: any.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub issuer: String,
    /// Required `aud`; empty: any.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            hs256_secret: String::new(),
            hs256_secret_env: String::new(),
            public_key_pem: String::new(),
            jwks_url: String::new(),
            jwks_refresh_secs: 300,
            issuer: String::new(),
            audience: String::new(),
            leeway_secs: 60,
        }
    }
}

/// One policy: principals it matches, and what they may reach. A principal
/// gets the union of every matching policy; with policies configured, one
/// that matches none reaches nothing.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Matches tokens carrying this scope (in `scope` or `scp`); empty: not used.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub scope: String,
    /// Matches tokens whose claim named `claim` equals (or, for an array,
    /// contains) `value`, e.g. `groups` / `admins`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub claim: String,
    /// The value for `claim`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// Matches everyone (e.g. a baseline policy).
    pub everyone: bool,
    /// Upstreams reachable (`*`: all).
    pub upstreams: Vec<String>,
    /// Tool names reachable, as exposed on the endpoint used (`*` wildcards;
    /// empty: every tool of the reachable upstreams).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
}
