//! Dashboard accounts, sessions with CSRF, roles scoped to an organisation, management keys and the
//! throttle on wrong passwords, driven over HTTP with raw cookies and headers.

use serde_json::{Value, json};

use crate::support::*;

/// A signed-in browser: its cookie and CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

fn email() -> String {
    format!("{}@example.com", uuid::Uuid::new_v4().simple())
}

async fn new_account(h: &Harness, email: &str, role: &str, org: Option<&Value>) -> Value {
    let mut body = json!({"email": email, "password": "correct horse battery", "role": role});
    if let Some(org) = org {
        body["organization_id"] = org["id"].clone();
    }
    let resp = h.post("/admin/v1/accounts").json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 201, "{:?}", resp.text().await);
    resp.json().await.unwrap()
}

async fn sign_in(h: &Harness, email: &str, password: &str) -> reqwest::Response {
    h.client.post(h.url("/admin/v1/session")).json(&json!({"email": email, "password": password})).send().await.unwrap()
}

async fn session(h: &Harness, email: &str) -> Session {
    session_with(h, email, "correct horse battery").await
}

async fn session_with(h: &Harness, email: &str, password: &str) -> Session {
    let resp = sign_in(h, email, password).await;
    assert_eq!(resp.status(), 200);
    let set = header(&resp, "set-cookie");
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
    assert!(!set.contains("Secure"), "plain HTTP: no Secure flag, {set}");
    let cookie = set.split(';').next().unwrap().to_owned();
    let body: Value = resp.json().await.unwrap();
    Session { cookie, csrf: body["csrf_token"].as_str().unwrap().to_owned() }
}

impl Session {
    fn get(&self, h: &Harness, path: &str) -> reqwest::RequestBuilder {
        h.client.get(h.url(path)).header("cookie", &self.cookie)
    }

    fn send(&self, h: &Harness, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        h.client.request(method, h.url(path)).header("cookie", &self.cookie).header("x-csrf-token", &self.csrf)
    }
}

#[tokio::test]
async fn an_organization_admin_manages_its_own_organization_and_sees_no_other() {
    let h = Harness::start().await;
    let (mine, theirs) = (h.new_org(json!({"name": "mine"})).await, h.new_org(json!({"name": "theirs"})).await);
    let (their_key, _) = h.new_key(&theirs, json!({})).await;
    let who = email();
    new_account(&h, &who, "org_admin", Some(&mine)).await;
    let s = session(&h, &who).await;

    let me: Value = s.get(&h, "/admin/v1/session").send().await.unwrap().json().await.unwrap();
    assert_eq!(me["role"], "org_admin");
    assert_eq!(me["organization_id"], mine["id"]);
    assert_eq!(me["csrf_token"], s.csrf.as_str());

    // A read needs the cookie only; a change without the CSRF token is refused, whatever the cookie.
    assert_eq!(s.get(&h, "/admin/v1/keys").send().await.unwrap().status(), 200);
    let no_csrf = h
        .client
        .post(h.url("/admin/v1/keys"))
        .header("cookie", &s.cookie)
        .json(&json!({"organization_id": mine["id"]}))
        .send()
        .await
        .unwrap();
    let (status, err) = error_of(no_csrf).await;
    assert_eq!(status, 403, "{err}");

    // Plans and their limits are the gateway admin's: not a plan the organisation does not have, not
    // looser limits than its plan's.
    let unlimited = s
        .send(&h, reqwest::Method::POST, "/admin/v1/keys")
        .json(&json!({"organization_id": mine["id"], "plan": "unlimited"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unlimited.status(), 403);
    let looser = s
        .send(&h, reqwest::Method::POST, "/admin/v1/keys")
        .json(&json!({"organization_id": mine["id"], "daily_prompt_quota": 1_000_000}))
        .send()
        .await
        .unwrap();
    assert_eq!(looser.status(), 403);
    h.new_key(&mine, json!({})).await; // the gateway admin gives it an unlimited key
    let plan = format!("capped-{}", uuid::Uuid::new_v4().simple());
    let capped = h.post("/admin/v1/plans").json(&json!({"name": plan, "budget_usd": 10.0, "budget_period": "month"}));
    assert_eq!(capped.send().await.unwrap().status(), 201);
    h.new_key(&mine, json!({"plan": plan})).await;
    // $10 a day is not within $10 a month; $2 a week is.
    let daily = s
        .send(&h, reqwest::Method::POST, "/admin/v1/keys")
        .json(&json!({"organization_id": mine["id"], "plan": plan, "budget_usd": 10.0, "budget_period": "day"}))
        .send()
        .await
        .unwrap();
    assert_eq!(daily.status(), 403);
    let weekly = s
        .send(&h, reqwest::Method::POST, "/admin/v1/keys")
        .json(&json!({"organization_id": mine["id"], "plan": plan, "budget_usd": 2.0, "budget_period": "week"}))
        .send()
        .await
        .unwrap();
    assert_eq!(weekly.status(), 201);
    let made = s
        .send(&h, reqwest::Method::POST, "/admin/v1/keys")
        .json(&json!({"organization_id": mine["id"], "plan": "unlimited"}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201);
    let key: Value = made.json().await.unwrap();
    let secret = key["key"].as_str().unwrap().to_owned();

    // Another organisation does not exist for it: not its keys, not its organisation, not a key in it.
    let other = s
        .send(&h, reqwest::Method::POST, "/admin/v1/keys")
        .json(&json!({"organization_id": theirs["id"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    assert_eq!(s.get(&h, &format!("/admin/v1/keys/{their_key}")).send().await.unwrap().status(), 404);
    assert_eq!(
        s.get(&h, &format!("/admin/v1/organizations/{}", theirs["id"].as_str().unwrap()))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let revoke_theirs =
        s.send(&h, reqwest::Method::POST, &format!("/admin/v1/keys/{their_key}/revoke")).send().await.unwrap();
    assert_eq!(revoke_theirs.status(), 404);
    let keys: Value = s.get(&h, "/admin/v1/keys").send().await.unwrap().json().await.unwrap();
    let data = keys["data"].as_array().unwrap();
    assert!(!data.is_empty() && data.iter().all(|k| k["organization_id"] == mine["id"]), "{keys}");
    let orgs: Value = s.get(&h, "/admin/v1/organizations").send().await.unwrap().json().await.unwrap();
    assert_eq!(orgs["data"].as_array().unwrap().len(), 1);
    assert_eq!(orgs["data"][0]["id"], mine["id"]);
    // The whole gateway's settings and audit are not an organisation admin's.
    assert_eq!(s.get(&h, "/admin/v1/audit").send().await.unwrap().status(), 403);
    let plan_edit = s
        .send(&h, reqwest::Method::PATCH, "/admin/v1/plans/free")
        .json(&json!({"daily_prompt_quota": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(plan_edit.status(), 403);

    // The key works, its request is in the organisation's request log, and not in the other's.
    let used = h
        .client
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(&secret)
        .json(&hello("test-model"))
        .send()
        .await
        .unwrap();
    assert_eq!(used.status(), 200);
    let request_id = header(&used, "x-request-id");
    ledger_row(&h, &request_id).await;
    let log: Value = s
        .get(&h, &format!("/admin/v1/usage/requests?request_id={request_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log["data"].as_array().unwrap().len(), 1, "{log}");
    let theirs_log = s
        .get(&h, &format!("/admin/v1/usage/requests?organization_id={}", theirs["id"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(theirs_log.status(), 404);

    // The audit log names the account that acted.
    let audit = h.get_json("/admin/v1/audit?limit=20").await;
    let created = audit["data"].as_array().unwrap().iter().find(|r| r["target_id"] == key["id"]).unwrap().clone();
    assert_eq!(created["actor"], me["actor"]);
    assert!(created["actor"].as_str().unwrap().starts_with("account:"));

    // Signed out, the cookie opens nothing.
    let out = s.send(&h, reqwest::Method::DELETE, "/admin/v1/session").send().await.unwrap();
    assert_eq!(out.status(), 200);
    assert!(header(&out, "set-cookie").contains("Max-Age=0"));
    let (status, err) = error_of(s.get(&h, "/admin/v1/keys").send().await.unwrap()).await;
    assert_eq!((status, err["error"]["code"].as_str()), (401, Some("session_expired")));
}

#[tokio::test]
async fn members_are_granted_only_within_the_granting_admins_reach() {
    let h = Harness::start().await;
    let (mine, theirs) = (h.new_org(json!({"name": "mine"})).await, h.new_org(json!({"name": "theirs"})).await);
    let boss = email();
    new_account(&h, &boss, "org_admin", Some(&mine)).await;
    let s = session(&h, &boss).await;
    let create = |body: Value| s.send(&h, reqwest::Method::POST, "/admin/v1/accounts").json(&body).send();
    let pw = "long enough password";
    assert_eq!(create(json!({"email": email(), "password": pw, "role": "admin"})).await.unwrap().status(), 403);
    let elsewhere = json!({"email": email(), "password": pw, "role": "viewer", "organization_id": theirs["id"]});
    assert_eq!(create(elsewhere).await.unwrap().status(), 403);
    let (status, err) =
        error_of(create(json!({"email": email(), "password": "short", "role": "viewer"})).await.unwrap()).await;
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("password")));
    let viewer_email = email();
    let made = create(json!({"email": viewer_email, "password": pw, "role": "viewer"})).await.unwrap();
    assert_eq!(made.status(), 201);
    let viewer: Value = made.json().await.unwrap();
    assert_eq!(viewer["organization_id"], mine["id"], "a member of the granting admin's organisation");
    assert!(viewer.get("password_hash").is_none());

    // The viewer reads and changes nothing.
    let v = session_with(&h, &viewer_email, pw).await;
    assert_eq!(v.get(&h, "/admin/v1/keys").send().await.unwrap().status(), 200);
    let post = v.send(&h, reqwest::Method::POST, "/admin/v1/keys").json(&json!({"organization_id": mine["id"]}));
    assert_eq!(post.send().await.unwrap().status(), 403);
    // An organisation's viewer reads what its organisation admin reads, not the gateway's own state.
    for path in ["/admin/v1/providers", "/admin/v1/config", "/admin/v1/audit"] {
        assert_eq!(v.get(&h, path).send().await.unwrap().status(), 403, "{path}");
    }

    // Disabled by its admin, the viewer's session ends at once.
    let id = viewer["id"].as_str().unwrap();
    let patch =
        s.send(&h, reqwest::Method::PATCH, &format!("/admin/v1/accounts/{id}")).json(&json!({"disabled": true}));
    assert_eq!(patch.send().await.unwrap().status(), 200);
    assert_eq!(v.get(&h, "/admin/v1/keys").send().await.unwrap().status(), 401);
    assert_eq!(sign_in(&h, &viewer_email, pw).await.status(), 401);

    // The same email twice is refused.
    let again =
        h.post("/admin/v1/accounts").json(&json!({"email": boss.to_uppercase(), "password": pw, "role": "viewer"}));
    let (status, err) = error_of(again.send().await.unwrap()).await;
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("email")));
}

#[tokio::test]
async fn wrong_passwords_are_throttled_per_account_even_before_the_right_one() {
    let h = Harness::start().await;
    let who = email();
    new_account(&h, &who, "admin", None).await;
    for _ in 0..5 {
        let (status, err) = error_of(sign_in(&h, &who, "not the password").await).await;
        assert_eq!((status, err["error"]["code"].as_str()), (401, Some("invalid_credentials")));
    }
    let resp = sign_in(&h, &who, "correct horse battery").await;
    let retry: u64 = header(&resp, "retry-after").parse().unwrap();
    assert!(retry > 0 && retry <= 900, "{retry}");
    let (status, err) = error_of(resp).await;
    assert_eq!((status, err["error"]["code"].as_str()), (429, Some("too_many_attempts")));
    // An unknown email answers like a wrong password, not "no such account".
    let (status, err) = error_of(sign_in(&h, &email(), "whatever it is").await).await;
    assert_eq!((status, err["error"]["code"].as_str()), (401, Some("invalid_credentials")));
}

#[tokio::test]
async fn wrong_admin_keys_are_throttled_per_source() {
    let h = Harness::start().await;
    for _ in 0..20 {
        let resp = h.client.get(h.url("/admin/v1/keys")).bearer_auth("sk-wrong").send().await.unwrap();
        assert_eq!(resp.status(), 401);
    }
    let resp = h.client.get(h.url("/admin/v1/keys")).bearer_auth("sk-wrong").send().await.unwrap();
    assert_eq!(resp.status(), 429);
    assert!(!header(&resp, "retry-after").is_empty());
    // The right key still opens: guessers cannot lock the operator out.
    assert_eq!(h.client.get(h.url("/admin/v1/keys")).bearer_auth(MASTER_KEY).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_management_key_manages_its_organizations_keys_and_nothing_else() {
    let h = Harness::start().await;
    let (mine, theirs) = (h.new_org(json!({"name": "mine"})).await, h.new_org(json!({"name": "theirs"})).await);
    let resp = h
        .post("/admin/v1/management_keys")
        .json(&json!({"organization_id": mine["id"], "name": "ci"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let made: Value = resp.json().await.unwrap();
    let mgmt = made["key"].as_str().unwrap().to_owned();
    assert!(mgmt.starts_with("sk-sy-mgmt-"));
    let listed = h.get_json("/admin/v1/management_keys").await;
    assert!(listed.to_string().contains(made["id"].as_str().unwrap()) && !listed.to_string().contains(&mgmt));

    let as_mgmt = |m: reqwest::Method, path: &str| h.client.request(m, h.url(path)).bearer_auth(&mgmt);
    let unlimited = as_mgmt(reqwest::Method::POST, "/admin/v1/keys")
        .json(&json!({"organization_id": mine["id"], "plan": "unlimited"}));
    assert_eq!(unlimited.send().await.unwrap().status(), 403, "a plan is the gateway admin's to give");
    let created = as_mgmt(reqwest::Method::POST, "/admin/v1/keys")
        .json(&json!({"organization_id": mine["id"], "name": "from a script"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let key: Value = created.json().await.unwrap();
    let other = as_mgmt(reqwest::Method::POST, "/admin/v1/keys").json(&json!({"organization_id": theirs["id"]}));
    assert_eq!(other.send().await.unwrap().status(), 404);
    let id = key["id"].as_str().unwrap();
    let patch = as_mgmt(reqwest::Method::PATCH, &format!("/admin/v1/keys/{id}")).json(&json!({"name": "x"}));
    assert_eq!(patch.send().await.unwrap().status(), 403);
    assert_eq!(as_mgmt(reqwest::Method::GET, "/admin/v1/usage").send().await.unwrap().status(), 403);
    assert_eq!(as_mgmt(reqwest::Method::GET, "/admin/v1/organizations").send().await.unwrap().status(), 403);
    // It is no inference key.
    let chat = h.client.post(h.url("/v1/chat/completions")).bearer_auth(&mgmt).json(&hello("test-model"));
    assert_eq!(chat.send().await.unwrap().status(), 401);
    let revoked = as_mgmt(reqwest::Method::POST, &format!("/admin/v1/keys/{id}/revoke")).send().await.unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(revoked.json::<Value>().await.unwrap()["status"], "revoked");

    // Revoked, it opens nothing.
    let mid = made["id"].as_str().unwrap();
    assert_eq!(h.post(&format!("/admin/v1/management_keys/{mid}/revoke")).send().await.unwrap().status(), 200);
    assert_eq!(as_mgmt(reqwest::Method::GET, "/admin/v1/keys").send().await.unwrap().status(), 401);
}

#[tokio::test]
async fn the_master_key_opens_a_session_for_the_first_sign_in() {
    let h = Harness::start().await;
    let resp = h.client.post(h.url("/admin/v1/session")).json(&json!({"master_key": MASTER_KEY})).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let cookie = header(&resp, "set-cookie").split(';').next().unwrap().to_owned();
    let csrf = resp.json::<Value>().await.unwrap()["csrf_token"].as_str().unwrap().to_owned();
    let s = Session { cookie, csrf };
    let made = s
        .send(&h, reqwest::Method::POST, "/admin/v1/accounts")
        .json(&json!({"email": email(), "password": "the first admin's", "role": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201);
    let wrong =
        h.client.post(h.url("/admin/v1/session")).json(&json!({"master_key": "sk-not-it"})).send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    // Behind a TLS-terminating proxy the cookie is Secure.
    let tls = h
        .client
        .post(h.url("/admin/v1/session"))
        .header("x-forwarded-proto", "https")
        .json(&json!({"master_key": MASTER_KEY}))
        .send()
        .await
        .unwrap();
    assert!(header(&tls, "set-cookie").contains("Secure"));
}

#[tokio::test]
async fn the_admin_api_reads_and_writes_moments_as_rfc_3339() {
    let h = Harness::start().await;
    let org = h.new_org(json!({"name": "dates"})).await;
    let made = h
        .post("/admin/v1/keys")
        .json(&json!({"organization_id": org["id"], "expires_at": "2099-01-01T00:00:00Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201);
    let key: Value = made.json().await.unwrap();
    assert_eq!(key["expires_at"], "2099-01-01T00:00:00Z");
    assert!(key["created_at"].as_str().unwrap().ends_with('Z'), "{key}");
    // Milliseconds are still understood, and answered the same way.
    let id = key["id"].as_str().unwrap();
    let patched = h
        .client
        .patch(h.url(&format!("/admin/v1/keys/{id}")))
        .bearer_auth(MASTER_KEY)
        .json(&json!({"expires_at": 4_102_444_800_000_i64}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.json::<Value>().await.unwrap()["expires_at"], "2100-01-01T00:00:00Z");
    let (status, err) = error_of(
        h.post("/admin/v1/keys")
            .json(&json!({"organization_id": org["id"], "expires_at": "next tuesday"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("RFC 3339"), "{err}");
    let past = h.post("/admin/v1/keys").json(&json!({"organization_id": org["id"], "expires_at": "2001-01-01"}));
    let (status, err) = error_of(past.send().await.unwrap()).await;
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("expires_at")));
    // Usage ranges take RFC 3339 too.
    let usage = h.get_json("/admin/v1/usage?from=2026-01-01T00:00:00Z&to=2026-02-01").await;
    assert_eq!(usage["from"], "2026-01-01T00:00:00Z");
    assert_eq!(usage["to"], "2026-02-01T00:00:00Z");
}

#[tokio::test]
async fn an_allowlist_entry_that_names_nothing_is_refused_with_what_it_may_have_meant() {
    let h = Harness::start().await;
    let org = h.new_org(json!({"name": "lists"})).await;
    let typo =
        h.post("/admin/v1/keys").json(&json!({"organization_id": org["id"], "models": ["test-model", "test-modle"]}));
    let (status, err) = error_of(typo.send().await.unwrap()).await;
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("models")));
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("'test-modle'") && message.contains("did you mean 'test-model'"), "{message}");
    let (key, _) = h.new_key(&org, json!({"models": ["test-model", "upstream/anything", "auto"]})).await;
    let patch = h.client.patch(h.url(&format!("/admin/v1/keys/{key}"))).bearer_auth(MASTER_KEY);
    let (status, _) = error_of(patch.json(&json!({"models": ["nothing-like-it-at-all"]})).send().await.unwrap()).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_gateway_wide_viewer_reads_health_configuration_and_audit_and_changes_nothing() {
    let h = Harness::start().await;
    let who = email();
    new_account(&h, &who, "viewer", None).await;
    let v = session(&h, &who).await;
    for path in ["/admin/v1/providers", "/admin/v1/config", "/admin/v1/audit", "/admin/v1/organizations"] {
        assert_eq!(v.get(&h, path).send().await.unwrap().status(), 200, "{path}");
    }
    assert_eq!(v.get(&h, "/admin/v1/management_keys").send().await.unwrap().status(), 403);
    assert_eq!(v.send(&h, reqwest::Method::POST, "/admin/v1/reload").send().await.unwrap().status(), 403);
    let org = v.send(&h, reqwest::Method::POST, "/admin/v1/organizations").json(&json!({"name": "nope"}));
    assert_eq!(org.send().await.unwrap().status(), 403);
}
