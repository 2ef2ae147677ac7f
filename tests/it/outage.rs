//! The database goes away under traffic: inference keeps working from the key cache, usage records
//! wait in the spool, and every one of them is in the ledger once the database is back. On Postgres the
//! outage is a cut connection (every open one closed, new ones refused); on SQLite, another writer
//! holding the database's write lock past the gateway's busy timeout. Meanwhile the admin API answers
//! 503 at once, and again normally once the database is back.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard::store::Store;

use crate::support::{Cuttable, Harness, MASTER_KEY, Setup, hello};

async fn spooled_bytes(h: &Harness) -> u64 {
    let text = h.client.get(h.url("/metrics")).bearer_auth(MASTER_KEY).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("switchyard_ledger_spool_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn virtual_key(h: &Harness) -> String {
    h.new_key(&h.new_org(json!({"name": "Outage"})).await, json!({})).await.1
}

/// Sends `n` requests with `key`; all must be answered. Their ledger ids.
async fn traffic(h: &Harness, key: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let mut body = hello("test-model");
        body["stream"] = json!(i % 2 == 1);
        let resp = h.client.post(h.url("/v1/chat/completions")).bearer_auth(key).json(&body).send().await.unwrap();
        if resp.status() != 200 {
            panic!("inference works while the database is away: {}", resp.text().await.unwrap());
        }
        ids.push(resp.headers()["x-request-id"].to_str().unwrap().to_owned());
        resp.bytes().await.unwrap();
    }
    ids
}

/// While the database is away, the admin API answers 503 at once instead of waiting on it.
async fn admin_refuses_promptly(h: &Harness) {
    let started = std::time::Instant::now();
    let resp = h.client.get(h.url("/admin/v1/organizations")).bearer_auth(MASTER_KEY).send().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "database_unavailable", "{body}");
    assert!(elapsed < Duration::from_millis(500), "at once, not after the pool's timeout: {elapsed:?}");
}

/// Once the database is back, the admin API answers again within a few seconds.
async fn admin_answers_again(h: &Harness) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let resp = h.client.get(h.url("/admin/v1/organizations")).bearer_auth(MASTER_KEY).send().await.unwrap();
        if resp.status() == 200 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the admin API stays down: {}", resp.status());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn all_in_ledger(store: &Store, ids: &[String]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut missing = 0;
        for id in ids {
            let rows = store.usage_rows(id).await.unwrap();
            assert!(rows.len() <= 1, "one row per request: {rows:?}");
            missing += usize::from(rows.is_empty());
        }
        if missing == 0 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{missing} of {} records never reached the ledger", ids.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_database_outage_under_traffic_loses_no_usage_record() {
    match std::env::var("DATABASE_URL") {
        Ok(url) if url.starts_with("postgres") => postgres_cut(&url).await,
        _ => sqlite_locked().await,
    }
}

async fn postgres_cut(url: &str) {
    let (scheme_user, rest) = url.split_once('@').expect("a postgres URL with a host");
    let (host_port, db) = rest.split_once('/').unwrap_or((rest, ""));
    let target: std::net::SocketAddr =
        tokio::net::lookup_host(host_port).await.unwrap().next().expect("the database's address");
    let cut = Cuttable::start(target).await;
    let through = format!("{scheme_user}@{}/{db}", cut.addr);
    let h = Harness::with(Setup { database_url: Some(through), ..Setup::default() }).await;
    let key = virtual_key(&h).await;
    let store = Store::connect(Some(url)).await.unwrap();
    let before = traffic(&h, &key, 4).await;
    all_in_ledger(&store, &before).await;

    cut.down();
    let during = traffic(&h, &key, 30).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(spooled_bytes(&h).await > 0, "the records wait in the spool");
    for id in &during[..3] {
        assert!(store.usage_rows(id).await.unwrap().is_empty(), "the database had no way to take them");
    }
    let ready = h.client.get(h.url("/health/readiness")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "a short outage keeps the gateway ready (the spool has room)");
    admin_refuses_promptly(&h).await;
    cut.up();
    all_in_ledger(&store, &during).await;
    admin_answers_again(&h).await;
    assert_eq!(spooled_bytes(&h).await, 0);
}

async fn sqlite_locked() {
    use sqlx::Connection;
    let url = format!("sqlite://{}/switchyard-outage-{}.db", std::env::temp_dir().display(), uuid::Uuid::now_v7());
    let h = Harness::with(Setup { database_url: Some(url.clone()), ..Setup::default() }).await;
    let key = virtual_key(&h).await;
    let store = Store::connect(Some(&url)).await.unwrap();
    let before = traffic(&h, &key, 4).await;
    all_in_ledger(&store, &before).await;

    // Another writer takes the write lock and keeps it past the gateway's 5 s busy timeout.
    let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE").execute(&mut other).await.unwrap();
    let during = traffic(&h, &key, 30).await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(spooled_bytes(&h).await > 0, "the records wait in the spool");
    admin_refuses_promptly(&h).await;
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    drop(other);
    all_in_ledger(&store, &during).await;
    admin_answers_again(&h).await;
    assert_eq!(spooled_bytes(&h).await, 0);
}
