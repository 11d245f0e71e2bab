//! JWT bearer token verification: an HS256 shared secret, an RSA or EC
//! public key (PEM), or a JWKS document (a file, or a URL fetched and
//! refreshed, and fetched again — at most every few seconds — when a token
//! names a key id it does not know). `alg: none` and algorithms the key does
//! not fit are refused.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::config::JwtConfig;
use crate::sync::{read, write};

/// The soonest an unknown key id makes Tether fetch the JWKS again.
const REFETCH_FLOOR: Duration = Duration::from_secs(10);
/// How long a JWKS fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where verification keys come from.
enum Keys {
    /// HS256 with a shared secret.
    Shared(DecodingKey),
    /// One public key and the algorithm it is for.
    Public(DecodingKey, Algorithm),
    /// A JWKS document.
    Set {
        source: String,
        current: RwLock<(Option<Instant>, JwkSet)>,
        refresh: Duration,
        fetching: tokio::sync::Mutex<()>,
    },
}

/// Verifies tokens against the configured keys and claims.
pub struct Verifier {
    keys: Keys,
    issuer: String,
    audience: String,
    leeway: u64,
    http: reqwest::Client,
}

/// Why a token was refused (the text goes to the client; no secrets in it).
#[derive(Debug)]
pub struct Invalid(pub String);

/// Why the keys could not be set up (at start, or on a JWKS refresh).
#[derive(Debug)]
pub enum KeyError {
    /// `auth.jwt.hs256_secret_env` names a variable that is not set.
    UnsetSecret {
        /// The variable.
        variable: String,
        /// Why it could not be read.
        source: std::env::VarError,
    },
    /// A key or JWKS file could not be read.
    File {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The PEM holds no RSA or EC public key.
    Pem(jsonwebtoken::errors::Error),
    /// No key is configured for `mode = "jwt"`.
    NoKey,
    /// The JWKS URL could not be fetched.
    Fetch(reqwest::Error),
    /// The JWKS URL answered with an error status.
    FetchStatus(http::StatusCode),
    /// The JWKS is not a valid key set.
    Jwks(serde_json::Error),
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::UnsetSecret { variable, .. } => {
                write!(f, "auth.jwt.hs256_secret_env: {variable} is not set")
            }
            KeyError::File { path, source } => write!(f, "reading {path}: {source}"),
            KeyError::Pem(e) => write!(
                f,
                "auth.jwt.public_key_pem: not an RSA or EC public key: {e}"
            ),
            KeyError::NoKey => f.write_str(
                "auth.mode = \"jwt\" needs auth.jwt.hs256_secret(_env), public_key_pem or jwks_url",
            ),
            KeyError::Fetch(e) => write!(f, "fetching the JWKS failed: {e}"),
            KeyError::FetchStatus(status) => write!(f, "fetching the JWKS failed: HTTP {status}"),
            KeyError::Jwks(e) => write!(f, "the JWKS is not valid: {e}"),
        }
    }
}

impl std::error::Error for KeyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KeyError::UnsetSecret { source, .. } => Some(source),
            KeyError::File { source, .. } => Some(source),
            KeyError::Pem(e) => Some(e),
            KeyError::Fetch(e) => Some(e),
            KeyError::Jwks(e) => Some(e),
            KeyError::NoKey | KeyError::FetchStatus(_) => None,
        }
    }
}

impl Verifier {
    /// Builds a verifier; fails on a missing secret or an unreadable key.
    pub async fn new(config: &JwtConfig) -> Result<Verifier, KeyError> {
        let secret = if !config.hs256_secret_env.is_empty() {
            std::env::var(&config.hs256_secret_env).map_err(|source| KeyError::UnsetSecret {
                variable: config.hs256_secret_env.clone(),
                source,
            })?
        } else {
            config.hs256_secret.clone()
        };
        let keys = if !secret.is_empty() {
            Keys::Shared(DecodingKey::from_secret(secret.as_bytes()))
        } else if !config.public_key_pem.is_empty() {
            let pem = if config.public_key_pem.contains("-----BEGIN") {
                config.public_key_pem.clone().into_bytes()
            } else {
                std::fs::read(&config.public_key_pem).map_err(|source| KeyError::File {
                    path: config.public_key_pem.clone(),
                    source,
                })?
            };
            if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
                Keys::Public(key, Algorithm::RS256)
            } else {
                let key = DecodingKey::from_ec_pem(&pem).map_err(KeyError::Pem)?;
                Keys::Public(key, Algorithm::ES256)
            }
        } else if !config.jwks_url.is_empty() {
            Keys::Set {
                source: config.jwks_url.clone(),
                current: RwLock::new((None, JwkSet { keys: Vec::new() })),
                refresh: Duration::from_secs(config.jwks_refresh_secs.max(10)),
                fetching: tokio::sync::Mutex::new(()),
            }
        } else {
            return Err(KeyError::NoKey);
        };
        let verifier = Verifier {
            keys,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway: config.leeway_secs,
            http: reqwest::Client::builder()
                .timeout(FETCH_TIMEOUT)
                .build()
                .map_err(KeyError::Fetch)?,
        };
        if let Keys::Set { .. } = verifier.keys {
            verifier.fetch_jwks(None).await?;
        }
        Ok(verifier)
    }

    /// The verified claims of `token`, fetching the key set again when it
    /// names a key not known yet.
    pub async fn verify(&self, token: &str) -> Result<Value, Invalid> {
        if let Some(verified) = self.verify_now(token) {
            return verified;
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| Invalid("malformed token".into()))?;
        let (key, alg) = self.key_from_set(header.kid.as_deref(), header.alg).await?;
        self.claims(token, header.alg, &key, alg)
    }

    /// The verified claims of `token` when the key is at hand; `None` when
    /// the key set must be fetched again first.
    pub fn verify_now(&self, token: &str) -> Option<Result<Value, Invalid>> {
        let header = match jsonwebtoken::decode_header(token) {
            Ok(h) => h,
            Err(_) => return Some(Err(Invalid("malformed token".into()))),
        };
        let (key, alg) = match &self.keys {
            Keys::Shared(key) => (key.clone(), Algorithm::HS256),
            Keys::Public(key, alg) => (key.clone(), *alg),
            Keys::Set { .. } => self.find_key(header.kid.as_deref(), header.alg)?,
        };
        Some(self.claims(token, header.alg, &key, alg))
    }

    /// The claims of `token` (signed with `token_alg`) verified with `key`.
    fn claims(
        &self,
        token: &str,
        token_alg: Algorithm,
        key: &DecodingKey,
        alg: Algorithm,
    ) -> Result<Value, Invalid> {
        if token_alg != alg {
            return Err(Invalid(format!("algorithm {token_alg:?} is not accepted")));
        }
        let mut validation = Validation::new(alg);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        // A configured issuer or audience must be present, not just not wrong.
        let mut required = vec!["exp", "sub"];
        if self.issuer.is_empty() {
            validation.iss = None;
        } else {
            validation.set_issuer(&[&self.issuer]);
            required.push("iss");
        }
        if self.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&[&self.audience]);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        jsonwebtoken::decode::<Value>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| Invalid(describe(&e)))
    }

    /// The JWKS key for `kid` (or the only key when the token names none),
    /// fetching the set again when the id is unknown and the set is not fresh.
    async fn key_from_set(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<(DecodingKey, Algorithm), Invalid> {
        let stale = match &self.keys {
            Keys::Set { current, .. } => {
                read(current).0.is_none_or(|t| t.elapsed() > REFETCH_FLOOR)
            }
            _ => false,
        };
        if stale
            && self.fetch_jwks(Some(REFETCH_FLOOR)).await.is_ok()
            && let Some(found) = self.find_key(kid, alg)
        {
            return Ok(found);
        }
        Err(Invalid("no key for this token".into()))
    }

    fn find_key(&self, kid: Option<&str>, alg: Algorithm) -> Option<(DecodingKey, Algorithm)> {
        let Keys::Set { current, .. } = &self.keys else {
            return None;
        };
        let set = read(current);
        let jwk = match kid {
            Some(kid) => set.1.find(kid)?,
            None if set.1.keys.len() == 1 => &set.1.keys[0],
            None => return None,
        };
        let key = DecodingKey::from_jwk(jwk).ok()?;
        // The key's own algorithm (when it names one) must be the token's.
        let fits = match jwk.common.key_algorithm {
            Some(ka) => format!("{ka:?}") == format!("{alg:?}"),
            None => matches!(alg, Algorithm::RS256 | Algorithm::ES256),
        };
        fits.then_some((key, alg))
    }

    /// Loads the JWKS document (one fetch at a time); with `unless_younger`,
    /// not when another caller fetched it that recently (a burst of tokens
    /// with unknown key ids fetches once).
    async fn fetch_jwks(&self, unless_younger: Option<Duration>) -> Result<(), KeyError> {
        let Keys::Set {
            source,
            current,
            fetching,
            ..
        } = &self.keys
        else {
            return Ok(());
        };
        let _one = fetching.lock().await;
        let fresh = read(current)
            .0
            .is_some_and(|t| unless_younger.is_some_and(|floor| t.elapsed() < floor));
        if fresh {
            return Ok(());
        }
        let text = if source.starts_with("http://") || source.starts_with("https://") {
            let resp = self
                .http
                .get(source)
                .send()
                .await
                .map_err(KeyError::Fetch)?;
            if !resp.status().is_success() {
                return Err(KeyError::FetchStatus(resp.status()));
            }
            resp.text().await.map_err(KeyError::Fetch)?
        } else {
            let path = source.strip_prefix("file://").unwrap_or(source);
            std::fs::read_to_string(path).map_err(|source| KeyError::File {
                path: path.to_owned(),
                source,
            })?
        };
        let set: JwkSet = serde_json::from_str(&text).map_err(KeyError::Jwks)?;
        *write(current) = (Some(Instant::now()), set);
        Ok(())
    }

    /// Refreshes a JWKS URL in the background at its interval while `self` lives.
    pub fn spawn_refresh(self: &std::sync::Arc<Self>) {
        let Keys::Set { refresh, .. } = &self.keys else {
            return;
        };
        let (every, weak) = (*refresh, std::sync::Arc::downgrade(self));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(verifier) = weak.upgrade() else {
                    return;
                };
                if let Err(e) = verifier.fetch_jwks(None).await {
                    tracing::warn!(error = %e, "JWKS refresh failed; keeping the keys already known");
                }
            }
        });
    }
}

/// A short reason a token was refused.
fn describe(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet".into(),
        ErrorKind::InvalidAudience => "the token is for another audience".into(),
        ErrorKind::InvalidIssuer => "the token is from another issuer".into(),
        ErrorKind::InvalidSignature => "the token's signature is invalid".into(),
        ErrorKind::MissingRequiredClaim(c) => format!("the token has no {c} claim"),
        _ => "the token is invalid".into(),
    }
}
