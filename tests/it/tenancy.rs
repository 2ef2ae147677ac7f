//! Organisations and virtual keys through the admin API, on SQLite (and on Postgres when DATABASE_URL
//! names one).

use serde_json::{Value, json};

use crate::support::{Harness, MASTER_KEY, Setup, error_of, hello};

async fn admin(h: &Harness, method: reqwest::Method, path: &str, body: Option<Value>) -> reqwest::Response {
    let mut req = h.client.request(method, h.url(path)).bearer_auth(MASTER_KEY);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

async fn new_org(h: &Harness, name: &str) -> Value {
    let resp = admin(h, reqwest::Method::POST, "/admin/v1/organizations", Some(json!({"name": name}))).await;
    assert_eq!(resp.status(), 201);
    resp.json().await.unwrap()
}

async fn new_key(h: &Harness, org: &str, plan: &str) -> Value {
    let resp = admin(
        h,
        reqwest::Method::POST,
        "/admin/v1/keys",
        Some(json!({"organization_id": org, "plan": plan, "name": "ci"})),
    )
    .await;
    assert_eq!(resp.status(), 201);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn an_admin_creates_an_organisation_and_a_key_that_then_serves_requests_until_revoked() {
    let h = Harness::start().await;
    let org = new_org(&h, "Acme").await;
    let key = new_key(&h, org["id"].as_str().unwrap(), "free").await;
    let secret = key["key"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("sk-sy-") && secret.len() >= 6 + 32);
    assert!(secret.starts_with(key["display_prefix"].as_str().unwrap()));
    assert_eq!(key["plan"], "free");

    let chat = |k: String| {
        let req = h.client.post(h.url("/v1/chat/completions")).bearer_auth(k).json(&hello("test-model"));
        async move { req.send().await.unwrap() }
    };
    assert_eq!(chat(secret.clone()).await.status(), 200);
    let via_anthropic_header = h
        .client
        .post(h.url("/v1/chat/completions"))
        .header("x-api-key", &secret)
        .json(&hello("test-model"))
        .send()
        .await
        .unwrap();
    assert_eq!(via_anthropic_header.status(), 200);

    // The secret is shown once: never in reads or lists, and stored only as its hash.
    let id = key["id"].as_str().unwrap();
    let read: Value =
        admin(&h, reqwest::Method::GET, &format!("/admin/v1/keys/{id}"), None).await.json().await.unwrap();
    assert!(read.get("key").is_none());
    let listed = admin(&h, reqwest::Method::GET, "/admin/v1/keys", None).await.text().await.unwrap();
    assert!(!listed.contains(&secret));
    let row = h.gateway.state.store.key(id).await.unwrap().unwrap();
    assert_eq!(row.key_hash, switchyard::keys::hash(&secret));
    assert!(!format!("{row:?}").contains(&secret));

    let revoked: Value =
        admin(&h, reqwest::Method::POST, &format!("/admin/v1/keys/{id}/revoke"), None).await.json().await.unwrap();
    assert_eq!(revoked["status"], "revoked");
    let (status, body) = error_of(chat(secret).await).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_api_key")),
        "revocation takes effect at once"
    );
}

#[tokio::test]
async fn malformed_or_unknown_keys_are_refused_and_virtual_keys_cannot_administer() {
    let h = Harness::start().await;
    let org = new_org(&h, "Beta").await;
    let key = new_key(&h, org["id"].as_str().unwrap(), "pro").await;
    let secret = key["key"].as_str().unwrap();
    let mut tampered = secret.to_owned();
    tampered.replace_range(10..11, if &secret[10..11] == "a" { "b" } else { "a" });
    for bad in [tampered.as_str(), "sk-sy-tooshort", "sk-proj-somebodyelseskey"] {
        let resp = h
            .client
            .post(h.url("/v1/chat/completions"))
            .bearer_auth(bad)
            .json(&hello("test-model"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{bad}");
    }
    let resp = h.client.get(h.url("/admin/v1/organizations")).bearer_auth(secret).send().await.unwrap();
    assert_eq!(resp.status(), 401, "a virtual key is not the master key");
}

#[tokio::test]
async fn admin_input_is_validated_and_stored_literally() {
    let h = Harness::start().await;
    let injection = "x'); DROP TABLE organizations; --";
    let org = new_org(&h, injection).await;
    let read: Value =
        admin(&h, reqwest::Method::GET, &format!("/admin/v1/organizations/{}", org["id"].as_str().unwrap()), None)
            .await
            .json()
            .await
            .unwrap();
    assert_eq!(read["name"], injection);
    // LIKE wildcards in a search are matched literally (names are unique per run: Postgres keeps rows).
    let run = uuid::Uuid::now_v7().simple().to_string();
    new_org(&h, &format!("100%{run}")).await;
    new_org(&h, &format!("plain{run}")).await;
    let found: Value = admin(&h, reqwest::Method::GET, &format!("/admin/v1/organizations?search=%25{run}"), None)
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = found["data"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(names, [format!("100%{run}")]);

    let (status, body) = error_of(
        admin(&h, reqwest::Method::POST, "/admin/v1/organizations", Some(json!({"name": "x", "owner": "me"}))).await,
    )
    .await;
    assert_eq!(status, 400, "unknown fields are rejected: {body}");
    let (status, _) =
        error_of(admin(&h, reqwest::Method::POST, "/admin/v1/organizations", Some(json!({"name": " "}))).await).await;
    assert_eq!(status, 400);
    let (status, body) = error_of(
        admin(&h, reqwest::Method::POST, "/admin/v1/keys", Some(json!({"organization_id": org["id"], "plan": "gold"})))
            .await,
    )
    .await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("plan")));
    let (status, _) = error_of(admin(&h, reqwest::Method::GET, "/admin/v1/organizations/nope", None).await).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_product_plans_are_seeded_with_their_quotas() {
    let h = Harness::start().await;
    let plans: Value = admin(&h, reqwest::Method::GET, "/admin/v1/plans", None).await.json().await.unwrap();
    let free = plans["data"].as_array().unwrap().iter().find(|p| p["name"] == "free").unwrap().clone();
    assert_eq!((free["daily_prompt_quota"].as_i64(), free["monthly_prompt_quota"].as_i64()), (Some(200), Some(1000)));
    assert_eq!(free["public_alias"], "smart-route-mini");
    let unlimited: Value =
        admin(&h, reqwest::Method::GET, "/admin/v1/plans/unlimited", None).await.json().await.unwrap();
    assert_eq!(unlimited["daily_prompt_quota"], Value::Null);
}

#[tokio::test]
async fn a_free_keys_201st_prompt_of_the_day_is_refused_while_a_pro_key_carries_on_and_the_ledger_has_every_request() {
    let h = Harness::start().await;
    let org = new_org(&h, "Gamma").await;
    let org_id = org["id"].as_str().unwrap();
    let free_key = new_key(&h, org_id, "free").await;
    let (free_id, free) = (free_key["id"].as_str().unwrap(), free_key["key"].as_str().unwrap().to_owned());
    let pro = new_key(&h, org_id, "pro").await["key"].as_str().unwrap().to_owned();

    // 210 requests at once against 200 prompts: exactly 200 get through.
    let sends = (0..210).map(|_| {
        let req = h.client.post(h.url("/v1/chat/completions")).bearer_auth(&free).json(&hello("test-model"));
        async move { req.send().await.unwrap() }
    });
    let responses = futures_util::future::join_all(sends).await;
    let mut ok_ids = Vec::new();
    let mut refused = 0;
    for resp in responses {
        match resp.status().as_u16() {
            200 => ok_ids.push(resp.headers()["x-request-id"].to_str().unwrap().to_owned()),
            429 => {
                assert_eq!(resp.headers()["x-should-retry"], "false");
                assert!(resp.headers().contains_key("retry-after"));
                let (_, body) = error_of(resp).await;
                assert_eq!(body["error"]["code"], "insufficient_quota");
                assert!(body["error"]["message"].as_str().unwrap().contains("daily prompt quota of 200"));
                refused += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((ok_ids.len(), refused), (200, 10));

    let resp =
        h.client.post(h.url("/v1/chat/completions")).bearer_auth(&pro).json(&hello("test-model")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "another plan's key carries on");
    assert_eq!(resp.headers()["x-switchyard-prompts-remaining-day"], "2999");
    // With no per-minute limit, OpenAI's request headers report the daily quota, as OpenAI does for RPD.
    assert_eq!(resp.headers()["x-ratelimit-limit-requests"], "3000");
    assert_eq!(resp.headers()["x-ratelimit-remaining-requests"], "2999");

    // Every served request is in the ledger exactly once, with its cost in micro-dollars.
    let store = &h.gateway.state.store;
    for id in [&ok_ids[0], &ok_ids[199]] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let rows = loop {
            let rows = store.usage_rows(id).await.unwrap();
            if !rows.is_empty() || std::time::Instant::now() > deadline {
                break rows;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        assert_eq!(rows.len(), 1, "{id}");
        let row = &rows[0];
        assert_eq!(row.outcome, "completed");
        assert!(row.prompt_counted);
        // test-model costs $1 per million prompt tokens and $2 per million completion tokens.
        assert!(row.prompt_tokens > 0 && row.completion_tokens > 0);
        assert_eq!(row.cost_micros, Some(row.prompt_tokens + 2 * row.completion_tokens));
    }
    // All 210, refused ones included, each once (the ledger writes a batch in chunks of several sizes).
    let rows = ledger_rows(&h, free_id, 210).await;
    let ids: std::collections::HashSet<&str> = rows.iter().map(|r| r["request_id"].as_str().unwrap()).collect();
    assert_eq!((rows.len(), ids.len()), (210, 210));
    assert!(ok_ids.iter().all(|id| ids.contains(id.as_str())));
    let refused_rows = rows.iter().filter(|r| r["prompt_counted"] == false).count();
    assert_eq!(refused_rows, 10, "{rows:?}");
}

#[tokio::test]
async fn a_regenerated_key_keeps_the_old_secret_working_for_the_grace_period_only() {
    let h = Harness::start().await;
    let org = new_org(&h, "Delta").await;
    let key = new_key(&h, org["id"].as_str().unwrap(), "pro").await;
    let (id, old) = (key["id"].as_str().unwrap().to_owned(), key["key"].as_str().unwrap().to_owned());
    let works = |k: String| {
        let req = h.client.post(h.url("/v1/chat/completions")).bearer_auth(k).json(&hello("test-model"));
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let path = format!("/admin/v1/keys/{id}/regenerate");
    let rotated: Value =
        admin(&h, reqwest::Method::POST, &path, Some(json!({"grace_seconds": 3600}))).await.json().await.unwrap();
    let new = rotated["key"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!((works(old.clone()).await, works(new.clone()).await), (200, 200), "both work during the grace period");

    let rotated: Value =
        admin(&h, reqwest::Method::POST, &path, Some(json!({"grace_seconds": 0}))).await.json().await.unwrap();
    let newest = rotated["key"].as_str().unwrap().to_owned();
    assert_eq!(works(new).await, 401, "no grace: the previous secret stops at once");
    assert_eq!(works(old).await, 401, "the first secret is long gone");
    assert_eq!(works(newest).await, 200);
}

#[tokio::test]
async fn a_keys_allowlist_and_its_organisations_blocked_providers_are_respected() {
    let h = Harness::start().await;
    let org = new_org(&h, "Epsilon").await;
    let org_id = org["id"].as_str().unwrap();
    let resp = admin(
        &h,
        reqwest::Method::POST,
        "/admin/v1/keys",
        Some(json!({"organization_id": org_id, "models": ["test-model"]})),
    )
    .await;
    let key = resp.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_owned();
    let chat = |model: &str| {
        let req = h.client.post(h.url("/v1/chat/completions")).bearer_auth(&key).json(&hello(model));
        async move { req.send().await.unwrap() }
    };
    assert_eq!(chat("test-model").await.status(), 200);
    let (status, body) = error_of(chat("claude-test").await).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("model_not_allowed")));
    let embed = h
        .client
        .post(h.url("/v1/embeddings"))
        .bearer_auth(&key)
        .json(&json!({"model": "embed-openai", "input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(embed.status(), 403, "the allowlist covers every route");

    let path = format!("/admin/v1/organizations/{org_id}");
    let patched = admin(&h, reqwest::Method::PATCH, &path, Some(json!({"blocked_providers": ["upstream"]}))).await;
    assert_eq!(patched.status(), 200);
    let (status, body) = error_of(chat("test-model").await).await;
    assert_eq!(status, 403);
    assert!(body["error"]["message"].as_str().unwrap().contains("blocked"), "{body}");
}

#[tokio::test]
async fn a_plan_alias_resolves_to_the_keys_own_plan_profile() {
    let profiles = r#"
[[aliases]]
name = "smart-route-mini"
targets = ["test-model"]

[[aliases]]
name = "smart-route-deep"
targets = ["claude-test"]
"#;
    let h = Harness::with(crate::support::Setup { extra: profiles.into(), ..Default::default() }).await;
    let org = new_org(&h, "Zeta").await;
    let org_id = org["id"].as_str().unwrap();
    let free = new_key(&h, org_id, "free").await["key"].as_str().unwrap().to_owned();
    let pro = new_key(&h, org_id, "pro").await["key"].as_str().unwrap().to_owned();
    let served = |key: String, model: &'static str| {
        let req = h.client.post(h.url("/v1/chat/completions")).bearer_auth(key).json(&hello(model));
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.headers()["x-switchyard-model"].to_str().unwrap().to_owned()
        }
    };
    assert_eq!(served(free.clone(), "smart-route-deep").await, "test-model", "a Free key gets its own profile");
    assert_eq!(served(pro.clone(), "smart-route").await, "claude-test", "a Pro key gets the deep profile");
    assert_eq!(
        served(MASTER_KEY.to_owned(), "smart-route-deep").await,
        "claude-test",
        "the master key gets what it names"
    );
}

#[tokio::test]
async fn plans_and_keys_can_be_edited_and_limits_are_validated() {
    let h = Harness::start().await;
    let plan = format!("tiny-{}", uuid::Uuid::now_v7().simple());
    let resp =
        admin(&h, reqwest::Method::POST, "/admin/v1/plans", Some(json!({"name": plan, "daily_prompt_quota": 2}))).await;
    assert_eq!(resp.status(), 201);
    for bad in [
        json!({"name": "x-neg", "rpm_limit": -1}),
        json!({"name": "x-budget", "budget_usd": -5.0}),
        json!({"name": "x-period", "budget_period": "year"}),
    ] {
        let (status, _) = error_of(admin(&h, reqwest::Method::POST, "/admin/v1/plans", Some(bad.clone())).await).await;
        assert_eq!(status, 400, "{bad}");
    }
    let org = new_org(&h, "Eta").await;
    let key = new_key(&h, org["id"].as_str().unwrap(), &plan).await;
    let (id, secret) = (key["id"].as_str().unwrap().to_owned(), key["key"].as_str().unwrap().to_owned());
    let chat = || {
        let req = h.client.post(h.url("/v1/chat/completions")).bearer_auth(&secret).json(&hello("test-model"));
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!((chat().await, chat().await, chat().await), (200, 200, 429));

    let resp =
        admin(&h, reqwest::Method::PATCH, &format!("/admin/v1/plans/{plan}"), Some(json!({"daily_prompt_quota": 3})))
            .await;
    assert_eq!(resp.status(), 200);
    assert_eq!((chat().await, chat().await), (200, 429), "a raised quota applies at once");

    let resp = admin(
        &h,
        reqwest::Method::PATCH,
        &format!("/admin/v1/keys/{id}"),
        Some(json!({"plan": "pro", "name": "renamed"})),
    )
    .await;
    let patched: Value = resp.json().await.unwrap();
    assert_eq!((patched["plan"].as_str(), patched["name"].as_str()), (Some("pro"), Some("renamed")));
    assert_eq!(chat().await, 200, "moved to a larger plan");

    // A key's own limits override its plan's.
    let resp = admin(&h, reqwest::Method::POST, "/admin/v1/keys", Some(json!({"organization_id": org["id"], "plan": "pro", "daily_prompt_quota": 1, "budget_usd": 5.5, "budget_period": "month"}))).await;
    assert_eq!(resp.status(), 201);
    let own: Value = resp.json().await.unwrap();
    assert_eq!((own["daily_prompt_quota"].as_i64(), own["budget_usd"].as_f64()), (Some(1), Some(5.5)));
    let own_secret = own["key"].as_str().unwrap().to_owned();
    let own_chat = || {
        let req = h.client.post(h.url("/v1/chat/completions")).bearer_auth(&own_secret).json(&hello("test-model"));
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!((own_chat().await, own_chat().await), (200, 429));
    // PATCH changes a key's own limits; null hands a limit back to the plan.
    let own_path = format!("/admin/v1/keys/{}", own["id"].as_str().unwrap());
    let resp =
        admin(&h, reqwest::Method::PATCH, &own_path, Some(json!({"daily_prompt_quota": 2, "tpm_limit": 100000}))).await;
    let patched: Value = resp.json().await.unwrap();
    assert_eq!((patched["daily_prompt_quota"].as_i64(), patched["tpm_limit"].as_i64()), (Some(2), Some(100000)));
    assert_eq!(patched["budget_usd"].as_f64(), Some(5.5), "what the patch leaves out is kept");
    assert_eq!((own_chat().await, own_chat().await), (200, 429));
    let resp = admin(&h, reqwest::Method::PATCH, &own_path, Some(json!({"daily_prompt_quota": null}))).await;
    assert_eq!(resp.json::<Value>().await.unwrap()["daily_prompt_quota"], Value::Null);
    assert_eq!(own_chat().await, 200, "back to the pro plan's 3000 a day");
    let (status, body) =
        error_of(admin(&h, reqwest::Method::PATCH, &own_path, Some(json!({"budget_usd": -1}))).await).await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("budget_usd")));
    let (status, body) =
        error_of(admin(&h, reqwest::Method::PATCH, &own_path, Some(json!({"budget_period": "fortnight"}))).await).await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("budget_period")));
    let (status, body) = error_of(
        admin(
            &h,
            reqwest::Method::POST,
            "/admin/v1/keys",
            Some(json!({"organization_id": org["id"], "max_parallel": -3})),
        )
        .await,
    )
    .await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("max_parallel")));
    let (status, _) = error_of(
        admin(&h, reqwest::Method::POST, "/admin/v1/keys", Some(json!({"organization_id": org["id"], "bogus": 1})))
            .await,
    )
    .await;
    assert_eq!(status, 400, "unknown fields are rejected");

    let (status, _) = error_of(admin(&h, reqwest::Method::DELETE, "/admin/v1/plans/pro", None).await).await;
    assert_eq!(status, 400, "a plan in use is not deleted");
    let resp = admin(&h, reqwest::Method::DELETE, &format!("/admin/v1/plans/{plan}"), None).await;
    assert_eq!(resp.status(), 200, "an unused plan is");
}

#[tokio::test]
async fn usage_and_spend_are_reported_by_key_model_and_day() {
    let h = Harness::start().await;
    let org = new_org(&h, "Theta").await;
    let key = new_key(&h, org["id"].as_str().unwrap(), "pro").await;
    let (id, secret) = (key["id"].as_str().unwrap().to_owned(), key["key"].as_str().unwrap().to_owned());
    for _ in 0..3 {
        let resp = h
            .client
            .post(h.url("/v1/chat/completions"))
            .bearer_auth(&secret)
            .json(&hello("test-model"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let by_model = loop {
        let v: Value = admin(&h, reqwest::Method::GET, &format!("/admin/v1/usage?key_id={id}&group_by=model"), None)
            .await
            .json()
            .await
            .unwrap();
        if v["data"][0]["requests"] == 3 || std::time::Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(by_model["data"].as_array().unwrap().len(), 1, "{by_model}");
    let row = &by_model["data"][0];
    assert_eq!((row["group"].as_str(), row["requests"].as_i64()), (Some("test-model"), Some(3)));
    assert!(row["cost_micros"].as_i64().unwrap() > 0);
    let by_day: Value = admin(&h, reqwest::Method::GET, &format!("/admin/v1/usage?key_id={id}&group_by=day"), None)
        .await
        .json()
        .await
        .unwrap();
    let day = by_day["data"][0]["group"].as_str().unwrap();
    assert_eq!(day.len(), 10, "a YYYY-MM-DD date: {day}");
    let (status, _) = error_of(admin(&h, reqwest::Method::GET, "/admin/v1/usage?group_by=provider", None).await).await;
    assert_eq!(status, 400, "grouping comes from a fixed list");
}

#[tokio::test]
async fn a_per_minute_rate_limit_answers_with_openai_rate_limit_headers() {
    let h = Harness::start().await;
    let org = new_org(&h, "Iota").await;
    // Three requests must fall in one UTC minute; if a minute boundary splits them, try once more.
    for attempt in 0..2 {
        let plan = format!("rpm-{}", uuid::Uuid::now_v7().simple());
        let resp =
            admin(&h, reqwest::Method::POST, "/admin/v1/plans", Some(json!({"name": plan, "rpm_limit": 2}))).await;
        assert_eq!(resp.status(), 201);
        let secret = new_key(&h, org["id"].as_str().unwrap(), &plan).await["key"].as_str().unwrap().to_owned();
        let send = || {
            let req = h.client.post(h.url("/v1/chat/completions")).bearer_auth(&secret).json(&hello("test-model"));
            async move { req.send().await.unwrap() }
        };
        let first = send().await;
        assert_eq!(first.status(), 200);
        assert_eq!(first.headers()["x-ratelimit-limit-requests"], "2");
        assert_eq!(first.headers()["x-ratelimit-remaining-requests"], "1");
        assert!(first.headers()["x-ratelimit-reset-requests"].to_str().unwrap().ends_with("ms"));
        assert_eq!(send().await.status(), 200);
        let third = send().await;
        if third.status() == 200 && attempt == 0 {
            continue;
        }
        assert!(third.headers().contains_key("retry-after-ms"));
        assert!(third.headers().get("x-should-retry").is_none(), "waiting helps, so the SDKs may retry");
        let (status, body) = error_of(third).await;
        assert_eq!((status, body["error"]["code"].as_str()), (429, Some("rate_limit_exceeded")));
        return;
    }
}

async fn key_with(h: &Harness, org: &str, fields: Value) -> (String, String) {
    let mut body = json!({"organization_id": org, "plan": "unlimited", "name": "limited"});
    body.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
    let resp = admin(h, reqwest::Method::POST, "/admin/v1/keys", Some(body)).await;
    assert_eq!(resp.status(), 201);
    let key: Value = resp.json().await.unwrap();
    (key["id"].as_str().unwrap().to_owned(), key["key"].as_str().unwrap().to_owned())
}

/// Waits until the ledger holds `n` rows for the key, and returns them.
async fn ledger_rows(h: &Harness, key_id: &str, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let page: Value =
            admin(h, reqwest::Method::GET, &format!("/admin/v1/usage/requests?key_id={key_id}&limit=500"), None)
                .await
                .json()
                .await
                .unwrap();
        let rows = page["data"].as_array().cloned().unwrap_or_default();
        if rows.len() >= n || std::time::Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_budget_is_never_passed_by_concurrent_requests_and_responses_say_what_is_left() {
    let h = Harness::start().await;
    let org = new_org(&h, "Kappa").await;
    // $0.0006 a day. test-model costs 1 micro-USD per prompt token and 2 per completion token, so a
    // request capped at 30 output tokens may cost about 75 micro-USD and really costs about 30.
    let (id, secret) =
        key_with(&h, org["id"].as_str().unwrap(), json!({"budget_usd": 0.0006, "budget_period": "day"})).await;
    let body = json!({"model": "test-model", "max_tokens": 30, "messages": [{"role": "user", "content": "Say hello"}]});
    let sends = (0..60).map(|_| {
        let req = h.client.post(h.url("/v1/chat/completions")).bearer_auth(&secret).json(&body);
        async move { req.send().await.unwrap() }
    });
    let mut ok = 0;
    let mut refused = 0;
    for resp in futures_util::future::join_all(sends).await {
        match resp.status().as_u16() {
            200 => {
                ok += 1;
                assert_eq!(resp.headers()["x-switchyard-budget-limit-usd"], "0.000600");
                assert_eq!(resp.headers()["x-switchyard-budget-period"], "day");
                let left: f64 = resp.headers()["x-switchyard-budget-remaining-usd"].to_str().unwrap().parse().unwrap();
                assert!((0.0..0.0006).contains(&left));
            }
            429 => {
                assert_eq!(resp.headers()["x-should-retry"], "false");
                let (_, e) = error_of(resp).await;
                assert_eq!(e["error"]["code"], "insufficient_quota");
                assert!(e["error"]["message"].as_str().unwrap().contains("budget of $0.000600 per day"), "{e}");
                refused += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(ok >= 5 && refused > 0, "{ok} served, {refused} refused");
    let rows = ledger_rows(&h, &id, 60).await;
    assert_eq!(rows.len(), 60, "every request is in the ledger once, refusals too");
    let spent: i64 = rows.iter().filter_map(|r| r["cost_micros"].as_i64()).sum();
    assert!(spent <= 600, "spend {spent} passed the budget");
    assert_eq!(rows.iter().filter(|r| r["outcome"] == "rejected").count(), refused);
    assert!(
        rows.iter()
            .filter(|r| r["outcome"] == "rejected")
            .all(|r| r["status"] == 429 && r["cost_micros"].as_i64().unwrap_or(0) == 0)
    );

    // The key's own view agrees with the ledger.
    let me: Value = h.client.get(h.url("/v1/key")).bearer_auth(&secret).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["limits"]["budget_usd"], 0.0006);
    assert_eq!(me["used"]["spend_today_usd"].as_f64().unwrap(), spent as f64 / 1e6);
    assert_eq!(me["used"]["in_flight"], 0);
}

/// Two more providers on the same fake: one prices what the catalog does not, one lets budgeted keys
/// use its unpriced models free; and an alias whose first target has no price.
fn unpriced_setup() -> Setup {
    Setup {
        extra: r#"
            [[providers]]
            name = "priced"
            kind = "openai"
            base_url = "{base}"
            api_key_env = "TEST_UPSTREAM_KEY"
            default_prices = { input_per_mtok = 1.0, output_per_mtok = 2.0 }

            [[providers]]
            name = "freebie"
            kind = "openai"
            base_url = "{base}"
            api_key_env = "TEST_UPSTREAM_KEY"
            budget_unpriced = "free"

            [[models]]
            name = "unpriced-model"
            provider = "upstream"

            [[aliases]]
            name = "mixed"
            targets = ["unpriced-model", "test-model"]
        "#
        .into(),
        ..Setup::default()
    }
}

#[tokio::test]
async fn a_budgeted_key_cannot_spend_on_an_unpriced_model_unless_the_operator_says_how() {
    let h = Harness::with(unpriced_setup()).await;
    let org = new_org(&h, "Omicron").await;
    let org = org["id"].as_str().unwrap();
    let (_, budgeted) = key_with(&h, org, json!({"budget_usd": 1.0, "budget_period": "month"})).await;
    let (_, open) = key_with(&h, org, json!({})).await;
    let chat = |key: &str, model: &str| {
        let req = h.client.post(h.url("/v1/chat/completions")).bearer_auth(key).json(&hello(model));
        async move { req.send().await.unwrap() }
    };
    for model in ["upstream/anything-unlisted", "unpriced-model", "claude-test"] {
        let (status, e) = error_of(chat(&budgeted, model).await).await;
        assert_eq!((status, e["error"]["code"].as_str()), (403, Some("model_unpriced")), "{model}: {e}");
        let message = e["error"]["message"].as_str().unwrap();
        assert!(message.contains("USD budget") && message.contains("default_prices"), "{message}");
    }
    assert!(h.upstream.state.requests().is_empty(), "nothing was sent upstream");
    // The Anthropic door says it in Anthropic's shape.
    let resp = h
        .client
        .post(h.url("/v1/messages"))
        .header("x-api-key", &budgeted)
        .json(&json!({"model": "claude-test", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let e: Value = resp.json().await.unwrap();
    assert_eq!(e["error"]["type"], "permission_error", "{e}");
    // A key without a budget may; priced by the provider's defaults, or free by the operator's say, a
    // budgeted key may too; an alias skips its unpriced target for it.
    assert_eq!(chat(&open, "upstream/anything-unlisted").await.status(), 200);
    let priced = chat(&budgeted, "priced/anything-unlisted").await;
    assert_eq!(priced.status(), 200);
    assert!(priced.headers().contains_key("x-switchyard-cost-micros"), "priced by the provider's defaults");
    assert_eq!(chat(&budgeted, "freebie/anything-unlisted").await.status(), 200);
    let mixed = chat(&budgeted, "mixed").await;
    assert_eq!(mixed.status(), 200);
    assert_eq!(mixed.headers()["x-switchyard-model"], "test-model");
    assert_eq!(chat(&open, "mixed").await.headers()["x-switchyard-model"], "unpriced-model");
}

#[tokio::test]
async fn a_budget_is_never_passed_on_a_model_priced_by_its_providers_defaults() {
    let h = Harness::with(unpriced_setup()).await;
    let org = new_org(&h, "Pi").await;
    let (id, secret) =
        key_with(&h, org["id"].as_str().unwrap(), json!({"budget_usd": 0.0006, "budget_period": "day"})).await;
    let body = json!({"model": "priced/unlisted-model", "max_tokens": 30, "messages": [{"role": "user", "content": "Say hello"}]});
    let sends = (0..60).map(|_| {
        let req = h.client.post(h.url("/v1/chat/completions")).bearer_auth(&secret).json(&body);
        async move { req.send().await.unwrap().status().as_u16() }
    });
    let statuses = futures_util::future::join_all(sends).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(ok + refused, 60, "{statuses:?}");
    assert!(ok >= 5 && refused > 0, "{ok} served, {refused} refused");
    let rows = ledger_rows(&h, &id, 60).await;
    let spent: i64 = rows.iter().filter_map(|r| r["cost_micros"].as_i64()).sum();
    assert!(spent > 0 && spent <= 600, "spend {spent}");
    assert!(rows.iter().filter(|r| r["outcome"] == "completed").all(|r| r["cost_micros"].as_i64() > Some(0)));
}

#[tokio::test]
async fn an_attempt_that_never_reached_a_provider_costs_nothing() {
    let h = Harness::start().await;
    let org = new_org(&h, "Rho").await;
    let (id, secret) = key_with(&h, org["id"].as_str().unwrap(), json!({})).await;
    for model in ["keyless-model", "dead-model"] {
        let resp = h.client.post(h.url("/v1/chat/completions")).bearer_auth(&secret).json(&hello(model)).send().await;
        assert!(resp.unwrap().status().is_server_error());
    }
    let rows = ledger_rows(&h, &id, 2).await;
    assert_eq!(rows.len(), 2);
    for r in rows {
        assert_eq!(r["outcome"], "failed", "{r}");
        assert_eq!((r["prompt_tokens"].as_i64(), r["completion_tokens"].as_i64()), (Some(0), Some(0)), "{r}");
        assert!(r["cost_micros"].as_i64().unwrap_or(0) == 0, "{r}");
    }
}

#[tokio::test]
async fn max_parallel_refuses_requests_beyond_the_limit_while_others_run() {
    let h = Harness::with(Setup {
        fake: switchyard::config::FakeSettings { latency_ms: 400, ..Default::default() },
        ..Setup::default()
    })
    .await;
    let org = new_org(&h, "Lambda").await;
    let (_, secret) = key_with(&h, org["id"].as_str().unwrap(), json!({"max_parallel": 2})).await;
    let sends = (0..5).map(|_| {
        let req = h.client.post(h.url("/v1/chat/completions")).bearer_auth(&secret).json(&hello("test-model"));
        async move { req.send().await.unwrap() }
    });
    let mut statuses = Vec::new();
    for resp in futures_util::future::join_all(sends).await {
        let status = resp.status().as_u16();
        if status == 429 {
            assert!(resp.headers().contains_key("retry-after"), "waiting helps");
            let (_, e) = error_of(resp).await;
            assert_eq!(e["error"]["code"], "rate_limit_exceeded");
            assert!(e["error"]["message"].as_str().unwrap().contains("2 requests in flight"));
        }
        statuses.push(status);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 429, 429, 429]);
    // Once they are done, the slots are free again.
    let again = h.client.post(h.url("/v1/chat/completions")).bearer_auth(&secret).json(&hello("test-model"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let status = again.try_clone().unwrap().send().await.unwrap().status();
        if status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "slots never came back");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_tokens_per_minute_limit_shows_in_openai_token_headers_and_refuses_an_oversized_request() {
    let h = Harness::start().await;
    let org = new_org(&h, "Mu").await;
    let (_, secret) = key_with(&h, org["id"].as_str().unwrap(), json!({"tpm_limit": 5000})).await;
    let resp = h
        .client
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(&secret)
        .json(&hello("test-model"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-ratelimit-limit-tokens"], "5000");
    let left: i64 = resp.headers()["x-ratelimit-remaining-tokens"].to_str().unwrap().parse().unwrap();
    assert!((4900..5000).contains(&left), "{left}");
    assert!(resp.headers()["x-ratelimit-reset-tokens"].to_str().unwrap().ends_with("ms"));

    let huge = json!({"model": "test-model", "max_tokens": 100000, "messages": [{"role": "user", "content": "Hi"}]});
    let resp = h.client.post(h.url("/v1/chat/completions")).bearer_auth(&secret).json(&huge).send().await.unwrap();
    assert_eq!(resp.headers()["x-should-retry"], "false", "waiting would not help");
    let (status, e) = error_of(resp).await;
    assert_eq!((status, e["error"]["code"].as_str()), (429, Some("rate_limit_exceeded")));
    assert!(e["error"]["message"].as_str().unwrap().contains("more than this key's limit of 5000 tokens per minute"));
}

#[tokio::test]
async fn two_replicas_share_quotas_and_learn_of_a_revocation_at_once_through_redis() {
    let h = Harness::start().await;
    if !h.has_redis() {
        eprintln!("skipped: several replicas share limits only through Redis, and REDIS_URL is not set");
        return;
    }
    let other = h.replica().await;
    let org = new_org(&h, "Nu").await;
    let (_, secret) = key_with(&h, org["id"].as_str().unwrap(), json!({"daily_prompt_quota": 30})).await;
    // The other replica hears of the new key through Redis (its own key view uses no prompt).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while h.client.get(other.url("/v1/key")).bearer_auth(&secret).send().await.unwrap().status() != 200 {
        assert!(std::time::Instant::now() < deadline, "the other replica never learned of the new key");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // 60 requests at once, half to each replica, against 30 prompts: exactly 30 get through.
    let sends = (0..60).map(|i| {
        let url = if i % 2 == 0 { h.url("/v1/chat/completions") } else { other.url("/v1/chat/completions") };
        let req = h.client.post(url).bearer_auth(&secret).json(&hello("test-model"));
        async move { req.send().await.unwrap().status().as_u16() }
    });
    let statuses = futures_util::future::join_all(sends).await;
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 30, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 30);

    // A key revoked through one replica stops working on the other well before its periodic reload.
    let (fresh_id, fresh) = key_with(&h, org["id"].as_str().unwrap(), json!({})).await;
    let on_other = || {
        let req = h.client.post(other.url("/v1/chat/completions")).bearer_auth(&fresh).json(&hello("test-model"));
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while on_other().await != 200 {
        assert!(std::time::Instant::now() < deadline, "the other replica never learned of the new key");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let resp = admin(&h, reqwest::Method::POST, &format!("/admin/v1/keys/{fresh_id}/revoke"), None).await;
    assert_eq!(resp.status(), 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while on_other().await != 401 {
        assert!(std::time::Instant::now() < deadline, "the other replica still accepts a revoked key");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn key_and_organisation_lists_search_literally_and_sort_by_allowed_fields_only() {
    let h = Harness::start().await;
    let org = new_org(&h, "Xi").await;
    let org_id = org["id"].as_str().unwrap();
    for name in ["alpha", "beta_%", "gamma"] {
        let body = json!({"organization_id": org_id, "name": name});
        assert_eq!(admin(&h, reqwest::Method::POST, "/admin/v1/keys", Some(body)).await.status(), 201);
    }
    let names = |v: Value| -> Vec<String> {
        v["data"].as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap().to_owned()).collect()
    };
    let list = |q: String| {
        let h = &h;
        async move { admin(h, reqwest::Method::GET, &format!("/admin/v1/keys?organization_id={org_id}&{q}"), None).await }
    };
    let found: Value = list("search=_%25".into()).await.json().await.unwrap();
    assert_eq!(names(found), ["beta_%"], "wildcards in a search are literal");
    let sorted: Value = list("sort=-name".into()).await.json().await.unwrap();
    assert_eq!(names(sorted), ["gamma", "beta_%", "alpha"]);
    let (status, e) = error_of(list("sort=key_hash".into()).await).await;
    assert_eq!((status, e["error"]["param"].as_str()), (400, Some("sort")), "only listed fields sort");
    let (status, _) = error_of(list("sort=name;DROP TABLE api_keys".into()).await).await;
    assert_eq!(status, 400);
    let orgs: Value = admin(&h, reqwest::Method::GET, "/admin/v1/organizations?sort=-created_at&limit=1", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(orgs["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn tokens_beyond_a_plans_monthly_allowance_are_metered_as_overage_at_passthrough_cost() {
    let h = Harness::start().await;
    let plan = format!("metered-{}", uuid::Uuid::now_v7().simple());
    let body = json!({"name": plan, "monthly_token_allowance": 1});
    assert_eq!(admin(&h, reqwest::Method::POST, "/admin/v1/plans", Some(body)).await.status(), 201);
    let org = new_org(&h, "Omicron").await;
    let org_id = org["id"].as_str().unwrap();
    let key = new_key(&h, org_id, &plan).await;
    let (id, secret) = (key["id"].as_str().unwrap().to_owned(), key["key"].as_str().unwrap().to_owned());
    let mut usages = Vec::new();
    for _ in 0..3 {
        let resp = h
            .client
            .post(h.url("/v1/chat/completions"))
            .bearer_auth(&secret)
            .json(&hello("test-model"))
            .send()
            .await
            .unwrap();
        let body: Value = resp.json().await.unwrap();
        usages.push(body["usage"].clone());
    }
    let t = usages[0]["total_tokens"].as_i64().unwrap();
    let c = usages[0]["prompt_tokens"].as_i64().unwrap() + 2 * usages[0]["completion_tokens"].as_i64().unwrap();
    assert!(usages.iter().all(|u| u["total_tokens"].as_i64() == Some(t)), "the fake answers alike");
    ledger_rows(&h, &id, 3).await;
    // The plan includes one and a half requests' tokens: the second request crosses it, the third is all overage.
    let allowance = t + t / 2;
    let path = format!("/admin/v1/plans/{plan}");
    let body = json!({"monthly_token_allowance": allowance});
    assert_eq!(admin(&h, reqwest::Method::PATCH, &path, Some(body)).await.status(), 200);
    let bill: Value = admin(&h, reqwest::Method::GET, &format!("/admin/v1/billing?organization_id={org_id}"), None)
        .await
        .json()
        .await
        .unwrap();
    let row = &bill["keys"][0];
    assert_eq!(row["key_id"], id.as_str());
    assert_eq!((row["tokens"].as_i64(), row["included_tokens"].as_i64()), (Some(3 * t), Some(allowance)));
    assert_eq!(row["overage_tokens"].as_i64(), Some(3 * t - allowance));
    assert_eq!(row["cost_micros"].as_i64(), Some(3 * c));
    assert_eq!(row["overage_micros"].as_i64(), Some(c + c * (2 * t - allowance) / t));
    assert_eq!(bill["organizations"][0]["overage_tokens"].as_i64(), Some(3 * t - allowance));

    let me: Value = h.client.get(h.url("/v1/key")).bearer_auth(&secret).send().await.unwrap().json().await.unwrap();
    // The key cache holds the plan as of its last reload (the PATCH reloaded it).
    assert_eq!(me["used"]["tokens_this_month"].as_i64(), Some(3 * t));
    assert_eq!(me["overage_tokens_this_month"].as_i64(), Some(3 * t - allowance));
    let (status, _) = error_of(admin(&h, reqwest::Method::GET, "/admin/v1/billing?month=2026-13", None).await).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_is_billed_once_in_the_ledger_and_its_holds_are_settled() {
    let h = Harness::with(Setup {
        fake: switchyard::config::FakeSettings { latency_ms: 0, tokens_per_second: 50.0, completion_tokens: 400 },
        ..Setup::default()
    })
    .await;
    let org = new_org(&h, "Pi").await;
    let (id, secret) = key_with(
        &h,
        org["id"].as_str().unwrap(),
        json!({"max_parallel": 1, "budget_usd": 1.0, "budget_period": "month"}),
    )
    .await;
    let body = json!({"model": "test-model", "stream": true, "messages": [{"role": "user", "content": "Tell me a long story"}]});
    let mut resp = h.client.post(h.url("/v1/chat/completions")).bearer_auth(&secret).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    for _ in 0..3 {
        resp.chunk().await.unwrap().unwrap();
    }
    drop(resp);

    let rows = ledger_rows(&h, &id, 1).await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(
        (row["outcome"].as_str(), row["usage_source"].as_str()),
        (Some("client_disconnected"), Some("estimated"))
    );
    assert!(row["prompt_tokens"].as_i64().unwrap() > 0 && row["completion_tokens"].as_i64().unwrap() > 0);
    let cost = row["cost_micros"].as_i64().unwrap();
    assert!(cost > 0, "a stream the client left is still billed for what it generated");
    assert!(row["prompt_counted"].as_bool().unwrap());

    // Its parallel slot is free again and its worst-case hold settled to the billed cost.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let me: Value = h.client.get(h.url("/v1/key")).bearer_auth(&secret).send().await.unwrap().json().await.unwrap();
        if me["used"]["in_flight"] == 0 && me["used"]["spend_this_month_usd"].as_f64() == Some(cost as f64 / 1e6) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "holds never settled: {me}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let again = h.client.post(h.url("/v1/chat/completions")).bearer_auth(&secret).json(&hello("test-model"));
    assert_eq!(again.send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_caller_that_reuses_its_request_id_is_still_billed_for_every_request() {
    let h = Harness::start().await;
    let org = new_org(&h, "Rho").await;
    let (id, secret) = key_with(&h, org["id"].as_str().unwrap(), json!({})).await;
    for _ in 0..3 {
        let resp = h
            .client
            .post(h.url("/v1/chat/completions"))
            .bearer_auth(&secret)
            .header("x-request-id", "same-id-every-time")
            .json(&hello("test-model"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-request-id"], "same-id-every-time", "the caller's id is echoed");
    }
    let rows = ledger_rows(&h, &id, 3).await;
    assert_eq!(rows.len(), 3, "three requests, three ledger rows");
    assert!(rows.iter().all(|r| r["client_request_id"] == "same-id-every-time"));
    let ours: std::collections::HashSet<&str> = rows.iter().map(|r| r["request_id"].as_str().unwrap()).collect();
    assert_eq!(ours.len(), 3, "the ledger keys them by the gateway's own ids");
    let path = format!("/admin/v1/usage/requests?request_id=same-id-every-time&key_id={id}");
    let found: Value = admin(&h, reqwest::Method::GET, &path, None).await.json().await.unwrap();
    assert_eq!(found["data"].as_array().unwrap().len(), 3, "found by the caller's id too");
}

#[tokio::test]
async fn a_key_lists_only_the_models_it_may_use_in_openais_or_anthropics_shape() {
    let h = Harness::start().await;
    let org = new_org(&h, "Sigma").await;
    let (_, secret) = key_with(&h, org["id"].as_str().unwrap(), json!({"models": ["test-model", "claude-test"]})).await;
    let list: Value =
        h.client.get(h.url("/v1/models")).bearer_auth(&secret).send().await.unwrap().json().await.unwrap();
    let mut ids: Vec<&str> = list["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["claude-test", "test-model"]);
    let hidden = h.client.get(h.url("/v1/models/gemini-test")).bearer_auth(&secret).send().await.unwrap();
    assert_eq!(hidden.status(), 404, "a model outside the allowlist does not exist for this key");

    let anthropic: Value = h
        .client
        .get(h.url("/v1/models"))
        .header("x-api-key", &secret)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(anthropic["has_more"], false);
    assert!(anthropic["data"].as_array().unwrap().iter().all(|m| m["type"] == "model" && m["created_at"].is_string()));
    let all: Value =
        h.client.get(h.url("/v1/models")).bearer_auth(MASTER_KEY).send().await.unwrap().json().await.unwrap();
    assert!(all["data"].as_array().unwrap().len() > 2, "the master key sees everything");
}

#[tokio::test]
async fn an_organisation_that_opts_in_gets_the_cheapest_capable_model_of_the_same_band() {
    let band = r#"
[[models]]
name = "band-pricey"
provider = "upstream"
upstream = "pricey-id"
input_per_mtok = 3.0
output_per_mtok = 15.0
capabilities = ["tools", "vision", "json_schema"]

[[models]]
name = "band-cheap-text"
provider = "upstream"
upstream = "cheap-text-id"
input_per_mtok = 0.1
output_per_mtok = 0.2
capabilities = ["tools", "json_schema"]

[[models]]
name = "band-cheap-vision"
provider = "upstream"
upstream = "cheap-vision-id"
input_per_mtok = 0.5
output_per_mtok = 1.0
capabilities = ["tools", "vision", "json_schema"]

[[models]]
name = "band-keyless"
provider = "unconfigured"
input_per_mtok = 0.01
output_per_mtok = 0.01

[[tiers]]
name = "band"
swap_band = true
models = ["band-pricey", "band-cheap-text", "band-cheap-vision", "band-keyless"]
"#;
    let h = Harness::with(Setup { extra: band.into(), ..Default::default() }).await;
    let opted = admin(
        &h,
        reqwest::Method::POST,
        "/admin/v1/organizations",
        Some(json!({"name": "Saver", "allow_cheaper_swaps": true})),
    )
    .await
    .json::<Value>()
    .await
    .unwrap();
    let key = new_key(&h, opted["id"].as_str().unwrap(), "free").await["key"].as_str().unwrap().to_owned();
    let other = new_org(&h, "Exact").await;
    let exact_key = new_key(&h, other["id"].as_str().unwrap(), "free").await["key"].as_str().unwrap().to_owned();

    let send = |key: &str, body: Value, explicit: bool| {
        let mut req = h.client.post(h.url("/v1/chat/completions")).bearer_auth(key).json(&body);
        if explicit {
            req = req.header("x-gateway-routing", "explicit");
        }
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            let header = |n: &str| resp.headers().get(n).map(|v| v.to_str().unwrap().to_owned());
            (header("x-switchyard-model").unwrap(), header("x-switchyard-routed-from"), header("x-switchyard-swap"))
        }
    };
    // Text: the cheapest configured model of the band (the keyless one is cheaper but unavailable).
    let (served, from, swap) = send(&key, hello("band-pricey"), false).await;
    assert_eq!(
        (served.as_str(), from.as_deref(), swap.as_deref()),
        ("band-cheap-text", Some("band-pricey"), Some("band"))
    );
    assert_eq!(h.upstream.last_request().body["model"], "cheap-text-id");
    // Images: never to a model without vision.
    let image = json!({"model": "band-pricey", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]});
    assert_eq!(send(&key, image, false).await.0, "band-cheap-vision");
    // Tools: never swapped.
    let mut tools = hello("band-pricey");
    tools["tools"] = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
    assert_eq!(send(&key, tools, false).await, ("band-pricey".to_owned(), None, None));
    // A request that asks for the exact model, an organisation that did not opt in, the master key.
    assert_eq!(send(&key, hello("band-pricey"), true).await.0, "band-pricey");
    assert_eq!(send(&exact_key, hello("band-pricey"), false).await.0, "band-pricey");
    assert_eq!(send(MASTER_KEY, hello("band-pricey"), false).await.0, "band-pricey");
    // A key whose allowlist names only the model it asks for: naming it does not allow its band.
    let narrow = admin(
        &h,
        reqwest::Method::POST,
        "/admin/v1/keys",
        Some(json!({"organization_id": opted["id"], "models": ["band-pricey"]})),
    )
    .await
    .json::<Value>()
    .await
    .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(send(&narrow, hello("band-pricey"), false).await.0, "band-pricey");
    // Asking for the cheapest already: nothing to swap to.
    assert_eq!(send(&key, hello("band-cheap-text"), false).await, ("band-cheap-text".to_owned(), None, None));
    // When the cheaper model fails, the model asked for answers.
    h.upstream.state.push_fault(Some("cheap-text-id"), switchyard::fake::Fault::status(500));
    assert_eq!(send(&key, hello("band-pricey"), false).await, ("band-pricey".to_owned(), None, None));
    // Switched off for the organisation: exact again.
    let path = format!("/admin/v1/organizations/{}", opted["id"].as_str().unwrap());
    assert_eq!(
        admin(&h, reqwest::Method::PATCH, &path, Some(json!({"allow_cheaper_swaps": false}))).await.status(),
        200
    );
    assert_eq!(send(&key, hello("band-pricey"), false).await.0, "band-pricey");
}

#[tokio::test]
async fn patching_a_plan_changes_only_the_fields_given() {
    let h = Harness::start().await;
    // Unique per run: the Postgres of a test run keeps its rows.
    let name = format!("partial-{}", uuid::Uuid::now_v7().simple());
    let created = json!({"name": name, "daily_prompt_quota": 500, "monthly_prompt_quota": 9000,
                         "rpm_limit": 60, "budget_usd": 12.345678, "budget_period": "month", "public_alias": "smart-route"});
    assert_eq!(admin(&h, reqwest::Method::POST, "/admin/v1/plans", Some(created)).await.status(), 201);
    let path = &format!("/admin/v1/plans/{name}");
    let patched: Value =
        admin(&h, reqwest::Method::PATCH, path, Some(json!({"rpm_limit": 120}))).await.json().await.unwrap();
    let read: Value = admin(&h, reqwest::Method::GET, path, None).await.json().await.unwrap();
    for plan in [&patched, &read] {
        assert_eq!(plan["rpm_limit"], 120, "{plan}");
        assert_eq!(
            (plan["daily_prompt_quota"].as_i64(), plan["monthly_prompt_quota"].as_i64()),
            (Some(500), Some(9000))
        );
        assert_eq!((plan["budget_micros"].as_i64(), plan["budget_period"].as_str()), (Some(12_345_678), Some("month")));
        assert_eq!(plan["public_alias"], "smart-route");
    }
    // null makes a limit unlimited, and only that one.
    let cleared: Value =
        admin(&h, reqwest::Method::PATCH, path, Some(json!({"daily_prompt_quota": null}))).await.json().await.unwrap();
    assert_eq!((cleared["daily_prompt_quota"].clone(), cleared["rpm_limit"].as_i64()), (Value::Null, Some(120)));
    // A bad value is refused and changes nothing.
    let (status, _) = error_of(admin(&h, reqwest::Method::PATCH, path, Some(json!({"rpm_limit": -1}))).await).await;
    assert_eq!(status, 400);
    let read: Value = admin(&h, reqwest::Method::GET, path, None).await.json().await.unwrap();
    assert_eq!((read["rpm_limit"].as_i64(), read["monthly_prompt_quota"].as_i64()), (Some(120), Some(9000)));
}

#[tokio::test]
async fn admin_answers_and_a_keys_own_view_are_never_cached() {
    let h = Harness::start().await;
    let org = new_org(&h, "Cacheless").await;
    let created = admin(&h, reqwest::Method::POST, "/admin/v1/keys", Some(json!({"organization_id": org["id"]}))).await;
    assert_eq!(created.status(), 201);
    let no_store =
        |resp: &reqwest::Response| resp.headers().get("cache-control").map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(no_store(&created).as_deref(), Some("no-store"), "the response holding a new secret");
    let secret = created.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_owned();
    for resp in [
        admin(&h, reqwest::Method::GET, "/admin/v1/plans", None).await,
        h.client.get(h.url("/admin/v1/keys")).bearer_auth("sk-sy-wrong-0123456789abcdefghijkl").send().await.unwrap(),
        h.client.get(h.url("/v1/key")).bearer_auth(&secret).send().await.unwrap(),
    ] {
        assert_eq!(no_store(&resp).as_deref(), Some("no-store"), "{}", resp.url());
    }
    // Inference answers are not marked so.
    let chat = h.client.post(h.url("/v1/chat/completions")).bearer_auth(&secret).json(&hello("test-model"));
    assert_eq!(no_store(&chat.send().await.unwrap()), None);
}

#[tokio::test]
async fn a_deleted_key_stops_working_at_once_and_its_usage_stays() {
    let h = Harness::start().await;
    let org = new_org(&h, "Deleting").await;
    let key = new_key(&h, org["id"].as_str().unwrap(), "unlimited").await;
    let (id, secret) = (key["id"].as_str().unwrap().to_owned(), key["key"].as_str().unwrap().to_owned());
    let chat = || h.client.post(h.url("/v1/chat/completions")).bearer_auth(&secret).json(&hello("test-model")).send();
    let used = chat().await.unwrap();
    assert_eq!(used.status(), 200);
    let request_id = used.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(ledger_rows(&h, &id, 1).await.len(), 1, "the request is in the ledger");

    let path = format!("/admin/v1/keys/{id}");
    let deleted = admin(&h, reqwest::Method::DELETE, &path, None).await;
    assert_eq!(deleted.status(), 200);
    assert_eq!(deleted.json::<Value>().await.unwrap(), json!({"id": id, "object": "key", "deleted": true}));
    assert_eq!(chat().await.unwrap().status(), 401, "refused at once");
    assert_eq!(admin(&h, reqwest::Method::GET, &path, None).await.status(), 404);
    assert_eq!(admin(&h, reqwest::Method::DELETE, &path, None).await.status(), 404);
    // What it used stays in the ledger, and the deletion is audited.
    let rows = h.get_json(&format!("/admin/v1/usage/requests?request_id={request_id}")).await;
    assert_eq!(rows["data"][0]["key_id"], id.as_str(), "{rows}");
    let audit = h.get_json("/admin/v1/audit?limit=500").await;
    assert!(
        audit["data"].as_array().unwrap().iter().any(|a| a["action"] == "key.delete" && a["target_id"] == id.as_str()),
        "{audit}"
    );
}

#[tokio::test]
async fn a_key_regenerates_and_revokes_itself_with_its_own_credentials() {
    let h = Harness::start().await;
    let org = new_org(&h, "Self service").await;
    let key = new_key(&h, org["id"].as_str().unwrap(), "unlimited").await;
    let (id, old) = (key["id"].as_str().unwrap().to_owned(), key["key"].as_str().unwrap().to_owned());
    let chat = |secret: String| {
        let req = h.client.post(h.url("/v1/chat/completions")).bearer_auth(secret).json(&hello("test-model"));
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let resp = h
        .client
        .post(h.url("/v1/key/regenerate"))
        .bearer_auth(&old)
        .json(&json!({"grace_seconds": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let regenerated: Value = resp.json().await.unwrap();
    assert_eq!(regenerated["id"], id.as_str());
    let new = regenerated["key"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(chat(new.clone()).await, 200, "the new secret works");
    assert_eq!(chat(old.clone()).await, 200, "the old one still works within its grace period");
    // Revoked with the new secret: both stop at once.
    let resp = h.client.post(h.url("/v1/key/revoke")).bearer_auth(&new).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["status"], "revoked");
    assert_eq!(chat(new.clone()).await, 401);
    assert_eq!(chat(old).await, 401);
    let audit = h.get_json("/admin/v1/audit?limit=500").await;
    let mine: Vec<&Value> =
        audit["data"].as_array().unwrap().iter().filter(|a| a["target_id"] == id.as_str()).collect();
    let by_itself = format!("key:{id}");
    assert!(mine.iter().any(|a| a["action"] == "key.regenerate" && a["actor"] == by_itself.as_str()), "{mine:?}");
    assert!(mine.iter().any(|a| a["action"] == "key.revoke" && a["actor"] == by_itself.as_str()), "{mine:?}");
    assert!(mine.iter().all(|a| !a.to_string().contains(&new)), "no secret in the audit trail");
    // The master key has no key of its own to change.
    let (status, _) = error_of(h.post("/v1/key/revoke").send().await.unwrap()).await;
    assert_eq!(status, 400);
}
