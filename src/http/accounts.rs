//! Dashboard accounts, sign-in sessions and organisations' management keys, under `/admin/v1`.
//!
//! `POST /admin/v1/session` signs in with an email and password (or the master key, for the first
//! sign-in) and sets the session cookie (`HttpOnly`, `SameSite=Strict`, `Secure` behind TLS); its answer
//! carries the CSRF token the dashboard sends back on every change. Passwords are hashed with argon2id
//! on the blocking pool; an unknown email costs the same hash as a wrong password. Who may manage which
//! account is [`may_grant`]: an organisation admin makes members of its own organisation only, never a
//! gateway admin.

use std::sync::{Arc, LazyLock};

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};

use super::admin::{audit_as, check_name, ts, ts_opt};
use super::auth::{CSRF_HEADER, Principal, Role, SESSION_COOKIE, cookie};
use super::body::Query;
use super::{GatewayError, body};
use crate::app::AppState;
use crate::keys;
use crate::store::Store;
use crate::store::accounts::{AccountRow, ManagementKeyRow, SessionRow};
use crate::tenancy::{new_id, now_ms};

/// How long a session lasts from sign-in.
pub const SESSION_MS: i64 = 12 * 3600 * 1000;
const MIN_PASSWORD: usize = 12;
const MAX_PASSWORD: usize = 256;

/// An argon2id hash (the crate's defaults: 19 MiB, 2 passes, 1 lane, as OWASP recommends), on the
/// blocking pool.
pub async fn hash_password(password: String) -> Result<String, GatewayError> {
    let _turn = HASHING.acquire().await.map_err(|_| GatewayError::internal())?;
    tokio::task::spawn_blocking(move || {
        argon2::Argon2::default().hash_password(password.as_bytes()).map(|h| h.to_string())
    })
    .await
    .ok()
    .and_then(Result::ok)
    .ok_or_else(GatewayError::internal)
}

/// Whether `password` matches `stored`; `None` checks against a dummy hash, so that an unknown email
/// takes as long as a wrong password.
/// Hashes at once at most: each takes 19 MiB and a core for tens of milliseconds.
static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

async fn verify_password(password: String, stored: Option<String>) -> bool {
    let Ok(_turn) = HASHING.acquire().await else { return false };
    static DUMMY: LazyLock<String> = LazyLock::new(|| {
        argon2::Argon2::default().hash_password(b"not a password of anyone").map(|h| h.to_string()).unwrap_or_default()
    });
    tokio::task::spawn_blocking(move || {
        let known = stored.is_some();
        let hash = stored.unwrap_or_else(|| DUMMY.clone());
        argon2::Argon2::default().verify_password(password.as_bytes(), hash.as_str()).is_ok() && known
    })
    .await
    .unwrap_or(false)
}

fn check_password(password: &str) -> Result<(), GatewayError> {
    let n = password.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&n) {
        return Err(GatewayError::invalid_value(
            format!("'password' must be {MIN_PASSWORD} to {MAX_PASSWORD} characters."),
            "password",
        ));
    }
    Ok(())
}

fn normal_email(email: &str) -> Result<String, GatewayError> {
    let e = email.trim().to_lowercase();
    let ok = e.len() <= 254
        && e.split_once('@').is_some_and(|(user, host)| !user.is_empty() && host.contains('.') && !host.contains('@'))
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        return Err(GatewayError::invalid_value("'email' must be an email address.", "email"));
    }
    Ok(e)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    email: Option<String>,
    password: Option<String>,
    master_key: Option<String>,
}

/// `POST /admin/v1/session`: signs in; sets the cookie and answers with the CSRF token.
pub async fn sign_in(State(state): State<Arc<AppState>>, req: Request) -> Result<Response, GatewayError> {
    let source = super::auth::source_of(&req);
    let secure = behind_tls(req.headers());
    cross_site(req.headers())?;
    let (parts, raw) = req.into_parts();
    let body: SignIn = body::read_json(&parts.headers, raw, state.live().body_limits).await?;
    let account = match (body.email, body.password, body.master_key) {
        (None, None, Some(master)) => {
            if !state.master_key.matches(&master) {
                state.throttle.attempt(&source).map_err(GatewayError::too_many_attempts)?;
                return Err(GatewayError::invalid_key());
            }
            None
        }
        (Some(email), Some(password), None) => {
            // Malformed is wrong, and never a throttle entry of unbounded size.
            let Ok(email) = normal_email(&email) else { return Err(GatewayError::invalid_credentials()) };
            let account_key = format!("account:{email}");
            // Counted before the check, so that parallel guesses cannot all pass it.
            state.throttle.attempt(&source).map_err(GatewayError::too_many_attempts)?;
            if let Err(wait) = state.throttle.attempt(&account_key) {
                return Err(GatewayError::too_many_attempts(wait));
            }
            let found = state.store.account_by_email(&email).await?;
            let ok = verify_password(password, found.as_ref().map(|a| a.password_hash.clone())).await;
            match found.filter(|a| ok && !a.disabled) {
                Some(a) => {
                    state.throttle.forgive(&source);
                    state.throttle.forgive(&account_key);
                    Some(a)
                }
                None => return Err(GatewayError::invalid_credentials()),
            }
        }
        _ => {
            return Err(GatewayError::invalid_value(
                "Sign in with 'email' and 'password', or with 'master_key' alone.",
                "email",
            ));
        }
    };
    let now = now_ms();
    let token = keys::random_token();
    let session = SessionRow {
        token_hash: keys::hash(&token),
        account_id: account.as_ref().map(|a| a.id.clone()),
        master_digest: account.is_none().then(|| super::auth::master_digest(&state)),
        csrf_token: keys::random_token(),
        created_at: now,
        expires_at: now + SESSION_MS,
    };
    state.store.insert_session(&session).await?;
    let principal = match &account {
        Some(a) => {
            let mut signed = a.clone();
            signed.last_sign_in_at = Some(now);
            state.store.update_account(&signed).await?;
            Principal {
                actor: format!("account:{}", a.id),
                role: Role::parse(&a.role).unwrap_or(Role::Viewer),
                organization_id: a.organization_id.clone(),
                csrf_token: None,
            }
        }
        None => Principal::master(),
    };
    audit_as(&state, &principal.actor, "session.create", "session", &principal.actor, None, None).await;
    let mut out = session_json(&principal, account.as_ref(), Some(&session.csrf_token), session.expires_at);
    out["object"] = json!("session");
    let mut resp = Json(out).into_response();
    let cookie = format!(
        "{SESSION_COOKIE}={token}; Path=/admin/v1; Max-Age={}; HttpOnly; SameSite=Strict{}",
        SESSION_MS / 1000,
        if secure { "; Secure" } else { "" }
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

/// A sign-in posted from another site's page (login CSRF) is refused: a browser always says where a
/// cross-origin request comes from.
fn cross_site(headers: &HeaderMap) -> Result<(), GatewayError> {
    let (Some(origin), Some(host)) = (headers.get(header::ORIGIN), headers.get(header::HOST)) else { return Ok(()) };
    let origin = origin.to_str().unwrap_or_default();
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    if origin_host.eq_ignore_ascii_case(host.to_str().unwrap_or_default()) {
        Ok(())
    } else {
        Err(GatewayError::forbidden("Sign-in is accepted from this gateway's own pages only."))
    }
}

/// Whether the client reached us over TLS (a terminating proxy says so; the flag only makes the cookie
/// stricter, so the header is taken at its word).
fn behind_tls(headers: &HeaderMap) -> bool {
    headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn session_json(p: &Principal, account: Option<&AccountRow>, csrf: Option<&str>, expires_at: i64) -> Value {
    json!({
        "object": "session", "actor": p.actor, "role": p.role.as_str(), "organization_id": p.organization_id,
        "account": account.map(account_json), "csrf_token": csrf, "csrf_header": CSRF_HEADER,
        "expires_at": if expires_at > 0 { super::admin::ts(expires_at) } else { Value::Null },
    })
}

/// `GET /admin/v1/session`: who is calling, and (with a cookie) the session's CSRF token.
pub async fn whoami(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
) -> Result<Json<Value>, GatewayError> {
    let account = match p.actor.strip_prefix("account:") {
        Some(id) => state.store.account(id).await?,
        None => None,
    };
    Ok(Json(session_json(&p, account.as_ref(), p.csrf_token.as_deref(), 0)))
}

/// `DELETE /admin/v1/session`: signs out (the session ends on the server, the cookie is cleared).
pub async fn sign_out(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, GatewayError> {
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        state.store.delete_session(&keys::hash(token)).await?;
    }
    let mut resp = Json(json!({"object": "session", "deleted": true})).into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("switchyard_session=; Path=/admin/v1; Max-Age=0; HttpOnly; SameSite=Strict"),
    );
    Ok(resp)
}

fn account_json(a: &AccountRow) -> Value {
    json!({
        "id": a.id, "object": "account", "email": a.email, "name": a.name, "role": a.role,
        "organization_id": a.organization_id, "disabled": a.disabled, "created_at": ts(a.created_at),
        "updated_at": ts(a.updated_at), "last_sign_in_at": ts_opt(a.last_sign_in_at),
    })
}

/// Whether `who` may give an account this role in this organisation: a gateway admin anything; an
/// organisation admin members (org admins and viewers) of its own organisation only.
fn may_grant(who: &Principal, role: Role, organization_id: Option<&str>) -> Result<(), GatewayError> {
    match (role, organization_id) {
        (Role::Admin, Some(_)) => {
            return Err(GatewayError::invalid_value("A gateway admin belongs to no organization.", "organization_id"));
        }
        (Role::OrgAdmin, None) => {
            return Err(GatewayError::invalid_value("An org_admin needs an 'organization_id'.", "organization_id"));
        }
        (Role::KeyManager, _) => {
            return Err(GatewayError::invalid_value("'role' must be admin, org_admin or viewer.", "role"));
        }
        _ => {}
    }
    match &who.organization_id {
        None => Ok(()),
        Some(own) if organization_id == Some(own.as_str()) && role != Role::Admin => Ok(()),
        Some(_) => Err(GatewayError::forbidden("An organization admin manages its own organization's members only.")),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    pub email: String,
    pub name: Option<String>,
    pub password: String,
    pub role: String,
    pub organization_id: Option<String>,
}

fn role_of(s: &str) -> Result<Role, GatewayError> {
    Role::parse(s).ok_or_else(|| GatewayError::invalid_value("'role' must be admin, org_admin or viewer.", "role"))
}

/// Makes an account for `who` (the admin API's principal, or the CLI's gateway-admin one): checks every
/// field and what `who` may grant, hashes the password, writes the row and its audit row.
pub async fn new_account(store: &Store, who: &Principal, req: NewAccount) -> Result<AccountRow, GatewayError> {
    let email = normal_email(&req.email)?;
    let role = role_of(&req.role)?;
    // An organisation admin's members are its own organisation's unless it says otherwise.
    let org = req.organization_id.or_else(|| who.organization_id.clone().filter(|_| role != Role::Admin));
    may_grant(who, role, org.as_deref())?;
    if let Some(o) = &org
        && store.organization(o).await?.is_none()
    {
        return Err(GatewayError::invalid_value(format!("No organization with id '{o}'."), "organization_id"));
    }
    check_password(&req.password)?;
    let name = req.name.unwrap_or_else(|| email.clone());
    check_name(&name, "name")?;
    let now = now_ms();
    let row = AccountRow {
        id: new_id(),
        email,
        name,
        password_hash: hash_password(req.password).await?,
        role: role.as_str().to_owned(),
        organization_id: org,
        disabled: false,
        created_at: now,
        updated_at: now,
        last_sign_in_at: None,
    };
    if !store.insert_account(&row).await? {
        return Err(GatewayError::invalid_value("That email cannot be used for a new account.", "email"));
    }
    let view = account_json(&row);
    crate::tenancy::audit(store, &who.actor, "account.create", ("account", &row.id), None, Some(&view)).await;
    Ok(row)
}

/// `POST /admin/v1/accounts`.
pub async fn create_account(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    let req: NewAccount = body::read_json(&headers, body, state.live().body_limits).await?;
    let row = new_account(&state.store, &who, req).await?;
    Ok((StatusCode::CREATED, Json(account_json(&row))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountsQuery {
    organization_id: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

/// `GET /admin/v1/accounts`: an organisation's members (a gateway admin: everyone, or one organisation's).
pub async fn list_accounts(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    Query(q): Query<AccountsQuery>,
) -> Result<Json<Value>, GatewayError> {
    let org = who.scope(q.organization_id)?;
    let (limit, offset) = (q.limit.unwrap_or(50).clamp(1, 500), q.offset.unwrap_or(0).max(0));
    let rows = state.store.accounts(org.as_deref(), limit, offset).await?;
    Ok(Json(json!({"object": "list", "data": rows.iter().map(account_json).collect::<Vec<_>>(),
                   "limit": limit, "offset": offset})))
}

/// An account the caller may see, else "not found".
async fn visible_account(state: &AppState, who: &Principal, id: &str) -> Result<AccountRow, GatewayError> {
    state
        .store
        .account(id)
        .await?
        .filter(|a| who.organization_id.is_none() || a.organization_id.as_deref().is_some_and(|o| who.sees(o)))
        .ok_or_else(|| GatewayError::not_found(format!("No account with id '{id}'.")))
}

pub async fn get_account(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, GatewayError> {
    Ok(Json(account_json(&visible_account(&state, &who, &id).await?)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountPatch {
    name: Option<String>,
    password: Option<String>,
    role: Option<String>,
    disabled: Option<bool>,
}

/// `PATCH /admin/v1/accounts/{id}`: name, password, role, disabled. A new password, a new role or
/// disabling ends the account's sessions.
pub async fn update_account(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, GatewayError> {
    let patch: AccountPatch = body::read_json(&headers, body, state.live().body_limits).await?;
    let mut a = visible_account(&state, &who, &id).await?;
    let before = account_json(&a);
    // The account as it is must be the caller's to manage, and so must what it becomes.
    may_grant(&who, role_of(&a.role)?, a.organization_id.as_deref())?;
    let mut end_sessions = false;
    if let Some(name) = patch.name {
        check_name(&name, "name")?;
        a.name = name;
    }
    if let Some(role) = patch.role {
        let role = role_of(&role)?;
        may_grant(&who, role, a.organization_id.as_deref())?;
        end_sessions |= role.as_str() != a.role;
        a.role = role.as_str().to_owned();
    }
    if let Some(password) = patch.password {
        check_password(&password)?;
        a.password_hash = hash_password(password).await?;
        end_sessions = true;
    }
    if let Some(disabled) = patch.disabled {
        end_sessions |= disabled;
        a.disabled = disabled;
    }
    a.updated_at = now_ms();
    state.store.update_account(&a).await?;
    if end_sessions {
        state.store.delete_sessions_of(&a.id).await?;
    }
    let after = account_json(&a);
    audit_as(&state, &who.actor, "account.update", "account", &id, Some(&before), Some(&after)).await;
    Ok(Json(after))
}

pub async fn delete_account(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, GatewayError> {
    let a = visible_account(&state, &who, &id).await?;
    may_grant(&who, role_of(&a.role)?, a.organization_id.as_deref())?;
    state.store.delete_account(&id).await?;
    audit_as(&state, &who.actor, "account.delete", "account", &id, Some(&account_json(&a)), None).await;
    Ok(Json(json!({"id": id, "object": "account", "deleted": true})))
}

fn management_key_json(k: &ManagementKeyRow) -> Value {
    json!({
        "id": k.id, "object": "management_key", "organization_id": k.organization_id, "name": k.name,
        "display_prefix": k.display_prefix, "created_at": ts(k.created_at), "revoked_at": ts_opt(k.revoked_at),
        "status": if k.revoked_at.is_some() { "revoked" } else { "active" },
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewManagementKey {
    organization_id: Option<String>,
    name: Option<String>,
}

/// `POST /admin/v1/management_keys`: a key for an organisation's scripts; the secret is shown once.
pub async fn create_management_key(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    let req: NewManagementKey = body::read_json(&headers, body, state.live().body_limits).await?;
    let Some(org) = who.scope(req.organization_id)? else {
        return Err(GatewayError::invalid_value("'organization_id' is required.", "organization_id"));
    };
    if state.store.organization(&org).await?.is_none() {
        return Err(GatewayError::invalid_value(format!("No organization with id '{org}'."), "organization_id"));
    }
    let name = req.name.unwrap_or_else(|| "management".to_owned());
    check_name(&name, "name")?;
    let new = keys::generate_management();
    let row = ManagementKeyRow {
        id: new_id(),
        organization_id: org,
        name,
        key_hash: new.hash,
        display_prefix: new.display_prefix,
        created_at: now_ms(),
        revoked_at: None,
    };
    state.store.insert_management_key(&row).await?;
    let view = management_key_json(&row);
    audit_as(&state, &who.actor, "management_key.create", "management_key", &row.id, None, Some(&view)).await;
    let mut out = view;
    out["key"] = Value::String(new.secret.expose().to_owned());
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagementKeysQuery {
    organization_id: Option<String>,
}

pub async fn list_management_keys(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    Query(q): Query<ManagementKeysQuery>,
) -> Result<Json<Value>, GatewayError> {
    let org = who.scope(q.organization_id)?;
    let rows = state.store.management_keys(org.as_deref()).await?;
    Ok(Json(json!({"object": "list", "data": rows.iter().map(management_key_json).collect::<Vec<_>>()})))
}

/// `POST /admin/v1/management_keys/{id}/revoke`: it stops working at once.
pub async fn revoke_management_key(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, GatewayError> {
    let not_found = || GatewayError::not_found(format!("No management key with id '{id}'."));
    let before =
        state.store.management_key(&id).await?.filter(|k| who.sees(&k.organization_id)).ok_or_else(not_found)?;
    state.store.revoke_management_key(&id, now_ms()).await?;
    let after = state.store.management_key(&id).await?.ok_or_else(not_found)?;
    let (b, a) = (management_key_json(&before), management_key_json(&after));
    audit_as(&state, &who.actor, "management_key.revoke", "management_key", &id, Some(&b), Some(&a)).await;
    Ok(Json(a))
}
