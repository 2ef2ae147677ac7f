//! Who is calling, and what they may do.
//!
//! The `/v1` API takes the master key or an active virtual key, resolved from memory (no I/O). The key
//! may be sent in any header an SDK uses (see `keys::from_headers`).
//!
//! The admin API takes a [`Principal`]: the master key (automation, the first sign-in), an
//! organisation's management key (`sk-sy-mgmt-…`: that organisation's virtual keys, nothing else), or a
//! dashboard session cookie (an account's role; every state-changing call also carries the session's
//! CSRF token in `X-CSRF-Token`). What each role may reach is [`allowed`]; which organisation's rows it
//! sees is the handlers' business, through [`Principal::scope`] and [`Principal::sees`]. Wrong
//! passwords and wrong admin credentials are counted per source address and per account by
//! [`Throttle`]; past the limit the source is refused with 429 before anything is checked.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method};

use super::GatewayError;
use crate::app::AppState;
use crate::keys;

/// The `/v1` API: the master key or an active virtual key. The key is resolved from memory, no I/O.
pub async fn require_caller(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let key = match keys::from_headers(req.headers()) {
        Err(e) => return GatewayError::ambiguous_key(e).into_response(),
        Ok(None) => return GatewayError::missing_key().into_response(),
        Ok(Some(token)) if state.master_key.matches(token) => None,
        Ok(Some(token)) => match state.keys.authenticate(token, crate::tenancy::now_ms()) {
            Some(key) => Some(key),
            None => return GatewayError::invalid_key().into_response(),
        },
    };
    if let Some(key) = key {
        tracing::Span::current().record("key_id", key.id.as_str());
        req.extensions_mut().insert(key);
    }
    next.run(req).await
}

/// `/metrics`: the master key only.
pub async fn require_master_key(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match keys::from_headers(req.headers()) {
        Err(e) => GatewayError::ambiguous_key(e).into_response(),
        Ok(None) => GatewayError::missing_key().into_response(),
        // The right key always opens, whatever others guessed from the same address.
        Ok(Some(token)) if state.master_key.matches(token) => next.run(req).await,
        Ok(Some(_)) => match state.throttle.attempt(&source_of(&req)) {
            Err(wait) => GatewayError::too_many_attempts(wait).into_response(),
            Ok(()) => GatewayError::invalid_key().into_response(),
        },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The whole gateway.
    Admin,
    /// One organisation's keys, members, management keys and usage.
    OrgAdmin,
    /// Read only: one organisation's, or the whole gateway's when it has none.
    Viewer,
    /// A management key: its organisation's virtual keys (create, list, read, revoke).
    KeyManager,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "org_admin" => Some(Role::OrgAdmin),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::OrgAdmin => "org_admin",
            Role::Viewer => "viewer",
            Role::KeyManager => "management_key",
        }
    }
}

/// Who is calling the admin API.
#[derive(Debug, Clone)]
pub struct Principal {
    /// As the audit log names it: `master_key`, `account:<id>` or `management_key:<id>`.
    pub actor: String,
    pub role: Role,
    /// The one organisation it may see; `None` for the whole gateway.
    pub organization_id: Option<String>,
    /// Signed in with a cookie: the session's CSRF token (for `GET /admin/v1/session` to hand back).
    pub csrf_token: Option<String>,
}

impl Principal {
    pub fn master() -> Principal {
        Principal { actor: "master_key".into(), role: Role::Admin, organization_id: None, csrf_token: None }
    }

    /// The organisation a request may look at: its own when it has one (naming another is "not found",
    /// so that another's existence is not revealed), else whatever was asked (`None`: all).
    pub fn scope(&self, asked: Option<String>) -> Result<Option<String>, GatewayError> {
        match (&self.organization_id, asked) {
            (None, asked) => Ok(asked),
            (Some(own), Some(asked)) if *own != asked => {
                Err(GatewayError::not_found(format!("No organization with id '{asked}'.")))
            }
            (Some(own), _) => Ok(Some(own.clone())),
        }
    }

    /// Whether a row of this organisation is visible to it.
    pub fn sees(&self, organization_id: &str) -> bool {
        self.organization_id.as_deref().is_none_or(|own| own == organization_id)
    }
}

/// Whether a role may call this route (its matched path) with this method at all; `org_scoped`: the
/// principal belongs to one organisation (then the gateway's own settings, health, configuration and
/// audit are not its to read, whatever its role).
pub fn allowed(role: Role, org_scoped: bool, method: &Method, route: &str) -> bool {
    let read = matches!(*method, Method::GET | Method::HEAD);
    let session = route == "/admin/v1/session";
    let organisation_reads = |route: &str| {
        route.starts_with("/admin/v1/keys")
            || route.starts_with("/admin/v1/accounts")
            || route.starts_with("/admin/v1/usage")
            || route == "/admin/v1/billing"
            || route.starts_with("/admin/v1/organizations")
            || route.starts_with("/admin/v1/plans")
    };
    match role {
        Role::Admin => true,
        // A gateway-wide viewer reads everything but management keys (their list is a credential
        // inventory); an organisation's viewer reads what its organisation admin reads.
        Role::Viewer if org_scoped => session || (read && organisation_reads(route)),
        Role::Viewer => session || (read && !route.starts_with("/admin/v1/management_keys")),
        Role::KeyManager => {
            matches!(
                (method.as_str(), route),
                ("GET" | "POST", "/admin/v1/keys")
                    | ("GET", "/admin/v1/keys/{id}")
                    | ("POST", "/admin/v1/keys/{id}/revoke")
            ) || session
        }
        // Its organisation's keys, members and management keys, and reads of the rest of it.
        Role::OrgAdmin => {
            session
                || route.starts_with("/admin/v1/keys")
                || route.starts_with("/admin/v1/accounts")
                || route.starts_with("/admin/v1/management_keys")
                || (read && organisation_reads(route))
        }
    }
}

/// The dashboard's session cookie.
pub const SESSION_COOKIE: &str = "switchyard_session";
/// The header a session's state-changing calls carry its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The admin API: the master key, a management key or a session; then [`allowed`].
pub async fn require_admin(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let source = source_of(&req);
    let principal = match principal_of(&state, req.headers(), req.method(), &source).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned()).unwrap_or_default();
    if !allowed(principal.role, principal.organization_id.is_some(), req.method(), &route) {
        return GatewayError::forbidden(format!(
            "A {} may not {} {route}.",
            principal.role.as_str().replace('_', " "),
            req.method()
        ))
        .into_response();
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

async fn principal_of(
    state: &AppState,
    headers: &HeaderMap,
    method: &Method,
    source: &str,
) -> Result<Principal, GatewayError> {
    let presented = keys::from_headers(headers).map_err(GatewayError::ambiguous_key)?;
    if let Some(token) = presented {
        if state.master_key.matches(token) {
            return Ok(Principal::master());
        }
        // Counted before the lookup, so that parallel guesses cannot all slip under the limit.
        state.throttle.attempt(source).map_err(GatewayError::too_many_attempts)?;
        if keys::is_management_key(token)
            && let Some(k) = state.store.management_key_by_hash(&keys::hash(token)).await?
        {
            state.throttle.forgive(source);
            return Ok(Principal {
                actor: format!("management_key:{}", k.id),
                role: Role::KeyManager,
                organization_id: Some(k.organization_id),
                csrf_token: None,
            });
        }
        return Err(GatewayError::invalid_key());
    }
    let Some(cookie) = cookie(headers, SESSION_COOKIE) else {
        return Err(GatewayError::missing_key());
    };
    let now = crate::tenancy::now_ms();
    let session = state.store.session(&keys::hash(cookie), now).await?.ok_or_else(GatewayError::session_expired)?;
    if !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        let sent = headers.get(CSRF_HEADER).map(http::HeaderValue::as_bytes).unwrap_or_default();
        if !bool::from(subtle::ConstantTimeEq::ct_eq(sent, session.csrf_token.as_bytes())) {
            return Err(GatewayError::forbidden(format!(
                "A signed-in call that changes something must carry the session's CSRF token in '{CSRF_HEADER}'."
            )));
        }
    }
    let csrf_token = Some(session.csrf_token);
    match session.account_id {
        // Opened with the master key: valid while that key is the one in force.
        None if session.master_digest.as_deref() == Some(master_digest(state).as_str()) => {
            Ok(Principal { csrf_token, ..Principal::master() })
        }
        None => Err(GatewayError::session_expired()),
        Some(id) => {
            let account =
                state.store.account(&id).await?.filter(|a| !a.disabled).ok_or_else(GatewayError::session_expired)?;
            let role = Role::parse(&account.role).ok_or_else(GatewayError::session_expired)?;
            Ok(Principal {
                actor: format!("account:{}", account.id),
                role,
                organization_id: account.organization_id,
                csrf_token,
            })
        }
    }
}

/// What a master-key session remembers of the key that opened it.
pub fn master_digest(state: &AppState) -> String {
    keys::hash(state.master_key.expose())
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// The address a request came from: the connection's peer (headers a client sets are not trusted).
pub fn source_of(req: &Request) -> String {
    match req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()) {
        // An IPv6 host usually holds a whole /64: counted as one source.
        Some(std::net::IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("source:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Some(ip) => format!("source:{}", ip.to_canonical()),
        None => "source:unknown".to_owned(),
    }
}

/// Sign-in attempts and wrong admin credentials, counted in fixed windows per source address and per
/// account. An attempt is counted before it is checked (so parallel guesses cannot all pass the check)
/// and forgiven when it succeeds. In memory, per replica: a guesser spread over replicas gets each
/// replica's allowance. Bounded: when full of live windows, new sources are refused until some expire
/// (an entry over its limit is never dropped early, so a flood cannot reset a locked account).
#[derive(Debug, Default)]
pub struct Throttle {
    seen: Mutex<HashMap<String, (u32, i64)>>,
}

/// The window failures are counted in.
pub const THROTTLE_WINDOW_MS: i64 = 15 * 60 * 1000;
/// Failures a source address may have in a window.
pub const PER_SOURCE: u32 = 20;
/// Failed passwords an account may have in a window.
pub const PER_ACCOUNT: u32 = 5;
/// Windows kept at most.
const MAX_ENTRIES: usize = 100_000;

impl Throttle {
    fn limit_of(key: &str) -> u32 {
        if key.starts_with("account:") { PER_ACCOUNT } else { PER_SOURCE }
    }

    /// Counts an attempt for `key`; `Err(seconds to wait)` when it is over its limit (not counted).
    pub fn attempt(&self, key: &str) -> Result<(), u64> {
        let now = crate::tenancy::now_ms();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_ENTRIES && !seen.contains_key(key) {
            seen.retain(|_, (_, since)| *since + THROTTLE_WINDOW_MS > now);
            if seen.len() >= MAX_ENTRIES {
                return Err(60);
            }
        }
        let entry = seen.entry(key.to_owned()).or_insert((0, now));
        if entry.1 + THROTTLE_WINDOW_MS <= now {
            *entry = (0, now);
        }
        if entry.0 >= Self::limit_of(key) {
            return Err(((entry.1 + THROTTLE_WINDOW_MS - now).max(1) as u64).div_ceil(1000));
        }
        entry.0 += 1;
        Ok(())
    }

    /// An attempt that succeeded is not held against `key`.
    pub fn forgive(&self, key: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = seen.get_mut(key) {
            entry.0 = entry.0.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_is_refused_after_its_allowance_and_a_success_is_not_held_against_it() {
        let t = Throttle::default();
        t.attempt("account:a@b").expect("first");
        t.forgive("account:a@b");
        for _ in 0..PER_ACCOUNT {
            t.attempt("account:a@b").expect("within the allowance");
        }
        let wait = t.attempt("account:a@b").expect_err("refused");
        assert!((1..=900).contains(&wait));
        assert!(t.attempt("account:other").is_ok());
    }

    #[test]
    fn roles_reach_only_their_routes() {
        let (get, post, patch) = (Method::GET, Method::POST, Method::PATCH);
        assert!(allowed(Role::KeyManager, true, &post, "/admin/v1/keys"));
        assert!(!allowed(Role::KeyManager, true, &patch, "/admin/v1/keys/{id}"));
        assert!(!allowed(Role::KeyManager, true, &get, "/admin/v1/usage"));
        assert!(!allowed(Role::Viewer, false, &post, "/admin/v1/keys"));
        assert!(allowed(Role::Viewer, false, &get, "/admin/v1/usage/requests"));
        assert!(!allowed(Role::OrgAdmin, true, &patch, "/admin/v1/organizations/{id}"));
        assert!(!allowed(Role::OrgAdmin, true, &post, "/admin/v1/plans"));
        assert!(!allowed(Role::OrgAdmin, true, &get, "/admin/v1/audit"));
        // A gateway-wide viewer reads the gateway's health, configuration and audit; an
        // organisation's viewer reads only what its organisation admin does; neither writes.
        for route in ["/admin/v1/audit", "/admin/v1/providers", "/admin/v1/config"] {
            assert!(allowed(Role::Viewer, false, &get, route), "{route}");
            assert!(!allowed(Role::Viewer, true, &get, route), "{route}");
        }
        assert!(allowed(Role::Viewer, true, &get, "/admin/v1/usage"));
        assert!(!allowed(Role::Viewer, false, &get, "/admin/v1/management_keys"));
        assert!(!allowed(Role::Viewer, false, &post, "/admin/v1/reload"));
        assert!(allowed(Role::OrgAdmin, true, &post, "/admin/v1/accounts"));
        assert!(allowed(Role::Admin, false, &post, "/admin/v1/plans"));
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut h = HeaderMap::new();
        h.append(http::header::COOKIE, "a=1; switchyard_session_x=2".parse().unwrap_or_else(|_| unreachable!()));
        h.append(http::header::COOKIE, "switchyard_session=abc".parse().unwrap_or_else(|_| unreachable!()));
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "b"), None);
    }
}
