//! Who is calling: every request's principal (with `auth.mode = "jwt"`, the
//! verified token's issuer and subject; otherwise `anonymous`) and what the
//! policies let it reach.

mod jwt;
mod policy;

pub use jwt::KeyError;
pub use policy::Access;

use std::sync::Arc;

use http::HeaderMap;

use crate::config::{AuthConfig, AuthMode, Policy};

/// The principal of every caller when authentication is off.
pub const ANONYMOUS: &str = "anonymous";

/// The caller of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// `issuer|subject` of the token, or `anonymous`.
    pub principal: Arc<str>,
    /// What it may reach.
    pub access: Arc<Access>,
    /// Its `Authorization` header, for upstreams configured to receive it.
    pub credentials: Option<http::HeaderValue>,
}

/// Why a request was not authenticated.
#[derive(Debug)]
pub enum Denial {
    /// No bearer token.
    Missing,
    /// A token that does not verify (the reason is safe to show).
    Invalid(String),
}

/// Verified tokens remembered at most (the memory is cleared when full).
const MAX_REMEMBERED: usize = 10_000;

/// The configured authentication.
pub struct Auth {
    verifier: Option<Arc<jwt::Verifier>>,
    /// Tokens already verified, with their expiry (s since the epoch), so a
    /// client's repeated requests skip the signature check (RS256/ES256 cost
    /// tens of microseconds each).
    verified: dashmap::DashMap<Box<str>, (u64, Caller)>,
    leeway: u64,
    policies: Vec<Policy>,
    anonymous: Caller,
    /// The `[auth]` section (for the protected-resource metadata).
    pub config: AuthConfig,
}

impl Auth {
    /// Builds the authenticator (fetching a JWKS URL once).
    pub async fn new(config: &AuthConfig) -> Result<Auth, KeyError> {
        let verifier = match config.mode {
            AuthMode::None => None,
            AuthMode::Jwt => {
                let v = Arc::new(jwt::Verifier::new(&config.jwt).await?);
                v.spawn_refresh();
                Some(v)
            }
        };
        Ok(Auth {
            verifier,
            verified: dashmap::DashMap::new(),
            leeway: config.jwt.leeway_secs,
            policies: config.policies.clone(),
            anonymous: Caller {
                principal: Arc::from(ANONYMOUS),
                access: Arc::new(Access::everything()),
                credentials: None,
            },
            config: config.clone(),
        })
    }

    /// The caller of a request with these headers.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, Denial> {
        if let Some(decided) = self.authenticate_now(headers) {
            return decided;
        }
        let Some(verifier) = &self.verifier else {
            return Ok(self.anonymous(headers));
        };
        let token = bearer_token(headers).ok_or(Denial::Missing)?;
        let claims = verifier
            .verify(token)
            .await
            .map_err(|jwt::Invalid(why)| Denial::Invalid(why))?;
        Ok(self.remember(token, &claims, credentials(headers)))
    }

    /// The caller, when that can be told without waiting (no
    /// authentication, a token verified before, or its key at hand); `None`
    /// when a key set must be fetched first.
    pub fn authenticate_now(&self, headers: &HeaderMap) -> Option<Result<Caller, Denial>> {
        let Some(verifier) = &self.verifier else {
            return Some(Ok(self.anonymous(headers)));
        };
        let Some(token) = bearer_token(headers) else {
            return Some(Err(Denial::Missing));
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if let Some(known) = self.verified.get(token)
            && now <= known.0.saturating_add(self.leeway)
        {
            return Some(Ok(Caller {
                credentials: credentials(headers),
                ..known.1.clone()
            }));
        }
        let verified = verifier.verify_now(token)?;
        Some(match verified {
            Ok(claims) => Ok(self.remember(token, &claims, credentials(headers))),
            Err(jwt::Invalid(why)) => Err(Denial::Invalid(why)),
        })
    }

    /// The caller when authentication is off.
    fn anonymous(&self, headers: &HeaderMap) -> Caller {
        Caller {
            credentials: credentials(headers),
            ..self.anonymous.clone()
        }
    }

    /// The caller a verified token's `claims` make, remembered until the token expires.
    fn remember(
        &self,
        token: &str,
        claims: &serde_json::Value,
        credentials: Option<http::HeaderValue>,
    ) -> Caller {
        let issuer = claims.get("iss").and_then(|v| v.as_str()).unwrap_or("");
        let subject = claims.get("sub").and_then(|v| v.as_str()).unwrap_or("");
        let caller = Caller {
            principal: Arc::from(format!("{issuer}|{subject}")),
            access: Arc::new(Access::from_policies(&self.policies, claims)),
            credentials,
        };
        let expires = claims.get("exp").and_then(|v| v.as_u64()).unwrap_or(0);
        if self.verified.len() >= MAX_REMEMBERED {
            self.verified.clear();
        }
        self.verified
            .insert(token.into(), (expires, caller.clone()));
        caller
    }
}

/// The request's `Authorization`, kept out of logs.
fn credentials(headers: &HeaderMap) -> Option<http::HeaderValue> {
    headers.get(http::header::AUTHORIZATION).map(|v| {
        let mut v = v.clone();
        v.set_sensitive(true);
        v
    })
}

/// The bearer token of `Authorization`, if there is one.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
}
