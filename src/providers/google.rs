//! Google service-account credentials for Vertex AI: a signed JWT exchanged for an OAuth2 access token.
//!
//! The service account's JSON key (`type = "service_account"`: `client_email`, `private_key` in PKCS#8
//! PEM, `private_key_id`, `token_uri`) is read once when the provider is built. A token is minted by
//! posting an RS256-signed JWT (`iss` the account, `aud` the token URI, `scope` cloud-platform, one hour)
//! to the token URI (`urn:ietf:params:oauth:grant-type:jwt-bearer`), as Google's OAuth2 for service
//! accounts describes. The token is kept until shortly before it expires: in its last minutes a request
//! still uses it and starts one refresh in the background; only a request that finds no valid token waits,
//! and then for a single fetch shared by everyone waiting. A failed fetch is not repeated for a backoff
//! (1 s, doubling to a minute): meanwhile requests get its error at once, classified as what it was (an
//! unreachable endpoint, a 5xx, a refusal of the key). A token the provider refuses is forgotten. The
//! token's expiry is read by the gateway's injectable clock, so tests move it; the JWT's times are the
//! wall clock's. The key and tokens are [`Secret`]s; no error or log line carries them, nor do callers
//! get Google's words about a refusal (they go to the log).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderValue, header};
use serde::Deserialize;

use super::{HttpClients, client};
use crate::clock::Clock;
use crate::protocols::{ErrorKind, ProviderError};
use crate::secret::Secret;

/// What a token is asked for.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Google's token endpoint, when the key names none.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// A token is not used in its last minute (a request may take that long to reach Google).
const EXPIRY_MARGIN_MS: i64 = 60_000;
/// In its last five minutes, a token is refreshed in the background while it is still used.
const REFRESH_AHEAD_MS: i64 = 5 * 60_000;
/// The longest a token fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// After a failed fetch no request fetches again for this long, doubling with each failure in a row.
const FIRST_BACKOFF_MS: i64 = 1_000;
const MAX_BACKOFF_MS: i64 = 60_000;
/// The largest token response read.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: String,
    private_key: String,
    private_key_id: Option<String>,
    token_uri: Option<String>,
}

/// A service account's identity and signing key.
pub struct ServiceAccount {
    pub client_email: String,
    key_id: Option<String>,
    key: RsaKeyPair,
    /// The token URI the key file names.
    pub token_uri: Option<String>,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount").field("client_email", &self.client_email).finish_non_exhaustive()
    }
}

impl ServiceAccount {
    /// Reads a service account's JSON key. Errors name what is wrong, never the key.
    pub fn from_json(json: &str) -> Result<ServiceAccount, String> {
        let file: KeyFile =
            serde_json::from_str(json).map_err(|e| format!("the service account key is not valid JSON ({e})"))?;
        if file.kind.as_deref().is_some_and(|k| k != "service_account") {
            return Err(
                "the Google credentials are not a service account key (type must be \"service_account\")".into()
            );
        }
        use rustls::pki_types::PrivateKeyDer;
        use rustls::pki_types::pem::PemObject;
        let der = PrivateKeyDer::from_pem_slice(file.private_key.as_bytes())
            .map_err(|_| "the service account's private_key is not a PEM private key".to_owned())?;
        let PrivateKeyDer::Pkcs8(pkcs8) = der else {
            return Err("the service account's private_key is not a PKCS#8 key".into());
        };
        let key = RsaKeyPair::from_pkcs8(pkcs8.secret_pkcs8_der())
            .map_err(|_| "the service account's private_key is not an RSA key".to_owned())?;
        Ok(ServiceAccount {
            client_email: file.client_email,
            key_id: file.private_key_id,
            key,
            token_uri: file.token_uri,
        })
    }

    /// The signed JWT asking `token_uri` for a token, issued at `now_s` (Unix seconds).
    pub fn assertion(&self, token_uri: &str, now_s: i64) -> Result<String, ProviderError> {
        let mut head = serde_json::json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.key_id {
            head["kid"] = kid.clone().into();
        }
        let claims = serde_json::json!({
            "iss": self.client_email, "scope": SCOPE, "aud": token_uri, "iat": now_s, "exp": now_s + 3600,
        });
        let signing_input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(head.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), signing_input.as_bytes(), &mut signature)
            .map_err(|_| ProviderError::new(ErrorKind::Authentication, "the service account's key could not sign"))?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

struct Token {
    value: Secret,
    expires_at_ms: i64,
}

/// A provider's access tokens: the one in use, and how to get the next.
pub struct GoogleTokens {
    account: ServiceAccount,
    token_uri: String,
    clients: HttpClients,
    clock: Clock,
    current: std::sync::Mutex<Option<Token>>,
    /// The token before the current one (still in flight in some requests), for redaction.
    previous: std::sync::Mutex<Option<Secret>>,
    /// Held while a token is being fetched, so requests that must wait share one fetch.
    fetching: tokio::sync::Mutex<()>,
    /// The last failed fetch: when, how many in a row, and what the caller was told. Until its backoff
    /// has passed no request fetches again; each gets this error at once.
    failure: std::sync::Mutex<Option<(i64, u32, ProviderError)>>,
    background: AtomicBool,
}

impl std::fmt::Debug for GoogleTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoogleTokens").field("account", &self.account).field("token_uri", &self.token_uri).finish()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<i64>,
}

#[derive(Deserialize, Default)]
struct TokenError {
    error: Option<String>,
    error_description: Option<String>,
}

impl GoogleTokens {
    pub fn new(
        account: ServiceAccount,
        token_uri: String,
        settings: client::ClientSettings,
        clock: Clock,
    ) -> GoogleTokens {
        GoogleTokens {
            account,
            token_uri,
            clients: HttpClients::new(settings),
            clock,
            current: std::sync::Mutex::new(None),
            previous: std::sync::Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            failure: std::sync::Mutex::new(None),
            background: AtomicBool::new(false),
        }
    }

    fn valid(&self, now: i64) -> Option<(Secret, bool)> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let t = current.as_ref().filter(|t| t.expires_at_ms - now > EXPIRY_MARGIN_MS)?;
        Some((t.value.clone(), t.expires_at_ms - now <= REFRESH_AHEAD_MS))
    }

    /// The error of the last failed fetch while its backoff lasts.
    fn backing_off(&self, now: i64) -> Option<ProviderError> {
        let failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        let (at, count, e) = failure.as_ref()?;
        let backoff = (FIRST_BACKOFF_MS << (*count - 1).min(6)).min(MAX_BACKOFF_MS);
        (now < at + backoff).then(|| e.clone())
    }

    /// A token to send now.
    pub async fn token(self: &Arc<Self>) -> Result<Secret, ProviderError> {
        let now = (self.clock)();
        if let Some((token, stale)) = self.valid(now) {
            if stale && self.backing_off(now).is_none() && !self.background.swap(true, Ordering::AcqRel) {
                let tokens = self.clone();
                tokio::spawn(async move {
                    let _fetching = tokens.fetching.lock().await;
                    let still_stale = tokens.valid((tokens.clock)()).is_none_or(|(_, stale)| stale);
                    if still_stale && let Err(e) = tokens.fetch().await {
                        tracing::warn!(token_uri = %tokens.token_uri, error = %e.message, "a background token refresh failed; the token in hand is used meanwhile");
                    }
                    tokens.background.store(false, Ordering::Release);
                });
            }
            return Ok(token);
        }
        if let Some(e) = self.backing_off(now) {
            return Err(e);
        }
        let _fetching = self.fetching.lock().await;
        // Another request may have fetched one (or failed to) while this one waited.
        let now = (self.clock)();
        if let Some((token, _)) = self.valid(now) {
            return Ok(token);
        }
        if let Some(e) = self.backing_off(now) {
            return Err(e);
        }
        self.fetch().await
    }

    /// Forgets the token in hand (the provider refused it: revoked, or its key disabled), so the next
    /// request fetches another.
    pub fn forget(&self) {
        let dropped = self.current.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = dropped {
            *self.previous.lock().unwrap_or_else(|p| p.into_inner()) = Some(t.value);
        }
    }

    /// One fetch, its failure remembered for the backoff.
    async fn fetch(&self) -> Result<Secret, ProviderError> {
        let result = self.exchange().await;
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Ok(_) => *failure = None,
            Err(e) => {
                let count = failure.as_ref().map_or(1, |(_, n, _)| n + 1);
                *failure = Some(((self.clock)(), count, e.clone()));
            }
        }
        result
    }

    async fn exchange(&self) -> Result<Secret, ProviderError> {
        let now = (self.clock)();
        // The assertion's times are the wall clock's (Google checks them against its own), a little in
        // the past so a clock slightly ahead of Google's is not refused.
        let wall_s = crate::clock::now_ms().div_euclid(1000) - 10;
        let assertion = self.account.assertion(&self.token_uri, wall_s)?;
        let form = serde_urlencoded::to_string([
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion.as_str()),
        ])
        .map_err(|_| ProviderError::new(ErrorKind::Authentication, "the token request could not be encoded"))?;
        let failed = |kind: ErrorKind, what: &str| {
            let mut e = ProviderError::new(kind, format!("Google did not issue an access token: {what}"));
            e.status = Some(if kind == ErrorKind::Authentication { 401 } else { 502 });
            e
        };
        let uri: http::Uri =
            self.token_uri.parse().map_err(|_| failed(ErrorKind::Authentication, "the token URI is not valid"))?;
        let mut request = http::Request::post(uri);
        if let Some(h) = request.headers_mut() {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
            h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
            if let Some(auth) = self.clients.settings.proxy_authorization() {
                h.insert(header::PROXY_AUTHORIZATION, auth.clone());
            }
        }
        let request = request
            .body(super::client::whole(Bytes::from(form)))
            .map_err(|_| failed(ErrorKind::Authentication, "the token request could not be built"))?;
        let exchange = async {
            let resp = self
                .clients
                .get()
                .request(request)
                .await
                .map_err(|_| failed(ErrorKind::Connection, "its token endpoint could not be reached"))?;
            let status = resp.status();
            let mut body = http_body_util::BodyDataStream::new(resp.into_body());
            let mut bytes = Vec::new();
            while let Some(piece) = body.next().await {
                let piece = piece.map_err(|_| failed(ErrorKind::Connection, "the token response was cut off"))?;
                if bytes.len() + piece.len() > MAX_TOKEN_RESPONSE {
                    return Err(failed(ErrorKind::InvalidResponse, "the token response is too large"));
                }
                bytes.extend_from_slice(&piece);
            }
            Ok((status, bytes))
        };
        let (status, body) = tokio::time::timeout(FETCH_TIMEOUT, exchange)
            .await
            .map_err(|_| ProviderError::timeout(crate::protocols::TimeoutPhase::Total))??;
        if !status.is_success() {
            // Google's own words go to the log; the caller learns what kind of failure it was.
            let e: TokenError = serde_json::from_slice(&body).unwrap_or_default();
            let why = e.error_description.or(e.error).unwrap_or_default();
            tracing::warn!(token_uri = %self.token_uri, %status, reason = %why, "Google refused to issue an access token");
            let kind = match status.as_u16() {
                429 => ErrorKind::RateLimited,
                500..=599 => ErrorKind::ServerError,
                _ => ErrorKind::Authentication,
            };
            return Err(failed(kind, &format!("the token endpoint answered HTTP {}", status.as_u16())));
        }
        let token: TokenResponse = serde_json::from_slice(&body)
            .map_err(|_| failed(ErrorKind::InvalidResponse, "the token response is not readable"))?;
        let value = Secret::new(token.access_token);
        let lifetime_ms = token.expires_in.unwrap_or(3600).clamp(0, 24 * 3600) * 1000;
        let replaced = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(Token { value: value.clone(), expires_at_ms: now + lifetime_ms });
        if let Some(old) = replaced {
            *self.previous.lock().unwrap_or_else(|p| p.into_inner()) = Some(old.value);
        }
        Ok(value)
    }

    /// The tokens that may be in flight (the current one and the one before), for redaction.
    pub fn secrets(&self) -> Vec<Secret> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|t| t.value.clone());
        let previous = self.previous.lock().unwrap_or_else(|p| p.into_inner()).clone();
        current.into_iter().chain(previous).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = include_str!("../../tests/fixtures/vertex/service-account.json");

    #[test]
    fn the_assertion_is_an_rs256_jwt_for_the_token_uri_that_verifies_with_the_accounts_key() {
        let account = ServiceAccount::from_json(KEY).unwrap();
        let jwt = account.assertion("https://oauth2.example/token", 1_700_000_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let head: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(head["alg"], "RS256");
        assert!(head["kid"].is_string());
        let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["aud"], "https://oauth2.example/token");
        assert_eq!(claims["scope"], SCOPE);
        assert_eq!(claims["iss"], account.client_email);
        assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 3600);
        let public = aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
            aws_lc_rs::signature::KeyPair::public_key(&account.key).as_ref().to_vec(),
        );
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        public.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature).unwrap();
        assert!(!format!("{account:?}").contains("PRIVATE"));
    }

    #[test]
    fn a_key_that_is_not_a_service_account_is_refused_without_echoing_it() {
        let e = ServiceAccount::from_json(r#"{"type":"authorized_user","client_email":"a","private_key":"x"}"#)
            .unwrap_err();
        assert!(e.contains("service account"), "{e}");
        let e = ServiceAccount::from_json(r#"{"client_email":"a","private_key":"-----BEGIN PRIVATE KEY-----\nnot-a-key\n-----END PRIVATE KEY-----\n"}"#).unwrap_err();
        assert!(!e.contains("not-a-key"), "{e}");
    }
}
