//! The gateway as a real process, killed with `SIGKILL` and started again on the same database and
//! spool: every request a client saw answered has exactly one ledger row, and the counters rebuilt at
//! the restart agree with the ledger.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use switchyard::config::FakeSettings;
use switchyard::store::Store;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::{FakeUpstream, MASTER_KEY, hello};

/// A gateway process on its own directory (configuration, spool) and database.
pub(crate) struct Gateway {
    pub(crate) child: Child,
    addr: SocketAddr,
}

pub(crate) struct Site {
    pub(crate) dir: PathBuf,
    database_url: String,
    upstream: String,
    /// More of the `[ledger]` table.
    ledger_extra: String,
}

impl Site {
    pub(crate) fn new(upstream: &FakeUpstream) -> Site {
        let dir = std::env::temp_dir().join(format!("switchyard-crash-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let database_url = match std::env::var("DATABASE_URL") {
            Ok(url) if url.starts_with("postgres") => url,
            _ => format!("sqlite://{}/db.sqlite", dir.display()),
        };
        Site { dir, database_url, upstream: upstream.base_url.clone(), ledger_extra: String::new() }
    }

    /// Starts the gateway on `dir/switchyard.toml` (written here).
    pub(crate) async fn start(&self) -> Gateway {
        let config = format!(
            r#"
            [log]
            format = "json"
            level = "info"

            [server]
            workers = 2
            drain_timeout_ms = 1000

            [ledger]
            spool_dir = "{spool}"
            {ledger_extra}

            [catalog]
            file = ""

            [[providers]]
            name = "upstream"
            kind = "openai"
            base_url = "{upstream}"
            api_key_env = "TEST_UPSTREAM_KEY"

            [[models]]
            name = "test-model"
            provider = "upstream"
            upstream = "upstream-model-id"
            input_per_mtok = 1.0
            output_per_mtok = 2.0
            "#,
            spool = self.dir.join("spool").display(),
            upstream = self.upstream,
            ledger_extra = self.ledger_extra,
        );
        let path = self.dir.join("switchyard.toml");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("--config")
            .arg(&path)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("SWITCHYARD_MASTER_KEY", MASTER_KEY)
            .env("TEST_UPSTREAM_KEY", "sk-upstream")
            .env("DATABASE_URL", &self.database_url)
            .env_remove("REDIS_URL")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the gateway binary starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["message"] == "switchyard is listening"
                {
                    return v["address"].as_str().unwrap().parse::<SocketAddr>().unwrap();
                }
            }
            panic!("the gateway exited before listening");
        })
        .await
        .expect("the gateway listens within 30 s");
        // Keep reading its output, so a full pipe never blocks it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Gateway { child, addr }
    }

    async fn store(&self) -> Store {
        Store::connect(Some(&self.database_url)).await.unwrap()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Gateway {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn kill(mut self) {
        self.child.start_kill().unwrap();
        let _ = self.child.wait().await;
    }
}

/// An organisation and a key with a generous daily quota, on the running gateway.
async fn key(client: &reqwest::Client, g: &Gateway) -> (String, String) {
    let org: Value = client
        .post(g.url("/admin/v1/organizations"))
        .bearer_auth(MASTER_KEY)
        .json(&json!({"name": "Crash"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key: Value = client
        .post(g.url("/admin/v1/keys"))
        .bearer_auth(MASTER_KEY)
        .json(&json!({"organization_id": org["id"], "plan": "unlimited", "daily_prompt_quota": 100000}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (key["id"].as_str().unwrap().to_owned(), key["key"].as_str().unwrap().to_owned())
}

/// One request, whole or streamed; its ledger id when the client saw the whole answer.
async fn answered(client: &reqwest::Client, base: &str, key: &str, stream: bool) -> Option<String> {
    let mut body = hello("test-model");
    body["stream"] = json!(stream);
    let resp = client.post(format!("{base}/v1/chat/completions")).bearer_auth(key).json(&body).send().await.ok()?;
    if resp.status() != 200 {
        return None;
    }
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    if !stream {
        let v: Value = resp.json().await.ok()?;
        return v["choices"][0]["message"]["content"].is_string().then_some(id);
    }
    let mut seen = String::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        seen.push_str(&String::from_utf8_lossy(&chunk.ok()?));
        if seen.contains("data: [DONE]") {
            return Some(id);
        }
    }
    None
}

async fn rows_of(store: &Store, ids: &[String]) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for id in ids {
        out.push((id.clone(), store.usage_rows(id).await.unwrap().len()));
    }
    out
}

/// After a restart: the key's counters (rebuilt from the ledger) say what the ledger says.
async fn counters_agree(client: &reqwest::Client, g: &Gateway, store: &Store, key_id: &str, key: &str) {
    let totals = store.ledger_totals_since(0).await.unwrap();
    let prompts = totals.iter().find(|(k, _)| k == key_id).map_or(0, |(_, t)| t.prompts);
    let me: Value = client.get(g.url("/v1/key")).bearer_auth(key).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["used"]["prompts_today"].as_i64(), Some(prompts), "{me}");
}

#[tokio::test]
async fn a_sigkill_under_load_loses_no_answered_request() {
    let upstream =
        FakeUpstream::start(FakeSettings { latency_ms: 2, tokens_per_second: 400.0, completion_tokens: 8 }).await;
    let site = Site::new(&upstream);
    let g = site.start().await;
    let client = reqwest::Client::new();
    let (key_id, key) = key(&client, &g).await;
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let clients: Vec<_> = (0..12)
        .map(|i| {
            let (client, base, key, seen) = (client.clone(), g.url(""), key.clone(), seen.clone());
            tokio::spawn(async move {
                let mut n = 0u32;
                loop {
                    match answered(&client, &base, &key, (i + n).is_multiple_of(2)).await {
                        Some(id) => seen.lock().unwrap().push(id),
                        // The gateway is gone, or going.
                        None if client.get(format!("{base}/health/liveness")).send().await.is_err() => return,
                        None => {}
                    }
                    n += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    g.kill().await;
    for c in clients {
        let _ = tokio::time::timeout(Duration::from_secs(10), c).await;
    }
    let answered = seen.lock().unwrap().clone();
    assert!(answered.len() > 50, "the load ran: {}", answered.len());

    let g = site.start().await;
    let store = site.store().await;
    let missing: Vec<_> = rows_of(&store, &answered).await.into_iter().filter(|(_, n)| *n != 1).collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered requests have no ledger row: {missing:?}",
        missing.len(),
        answered.len()
    );
    counters_agree(&client, &g, &store, &key_id, &key).await;
    assert!(
        std::fs::read_dir(site.dir.join("spool")).unwrap().count() == 1,
        "the dead gateway's spool was replayed and removed; only the new one's remains"
    );
    g.kill().await;
}

#[tokio::test]
async fn a_sigkill_right_after_the_answer_keeps_its_row() {
    let upstream =
        FakeUpstream::start(FakeSettings { latency_ms: 0, tokens_per_second: 200.0, completion_tokens: 10 }).await;
    let site = Site::new(&upstream);
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    let mut key_pair = None;
    for stream in [false, true, false, true] {
        let g = site.start().await;
        if key_pair.is_none() {
            key_pair = Some(key(&client, &g).await);
        }
        let (_, key) = key_pair.clone().unwrap();
        let id = answered(&client, &g.url(""), &key, stream).await.expect("answered");
        // Killed the moment the client has its answer: no drain, no batch interval.
        g.kill().await;
        ids.push(id);
    }
    let g = site.start().await;
    let store = site.store().await;
    for (id, n) in rows_of(&store, &ids).await {
        assert_eq!(n, 1, "request {id}");
    }
    let (key_id, key) = key_pair.unwrap();
    counters_agree(&client, &g, &store, &key_id, &key).await;
    g.kill().await;
}

/// The key's ledger rows, as the admin API lists them.
async fn rows_of_key(client: &reqwest::Client, g: &Gateway, key_id: &str) -> Vec<Value> {
    let page: Value = client
        .get(g.url(&format!("/admin/v1/usage/requests?key_id={key_id}&limit=500")))
        .bearer_auth(MASTER_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["data"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_sigkill_at_each_phase_of_a_request_leaves_one_row_for_it() {
    // A second before the first token, then ten tokens a second.
    let upstream =
        FakeUpstream::start(FakeSettings { latency_ms: 1000, tokens_per_second: 10.0, completion_tokens: 100 }).await;
    let site = Site::new(&upstream);
    let g = site.start().await;
    let client = reqwest::Client::new();
    let (key_id, key) = key(&client, &g).await;
    let send = |phase: &str, stream: bool, max_tokens: Option<u32>| {
        let mut body = hello("test-model");
        body["stream"] = json!(stream);
        if let Some(m) = max_tokens {
            body["max_tokens"] = json!(m);
        }
        client.post(g.url("/v1/chat/completions")).bearer_auth(&key).header("x-request-id", phase).json(&body).send()
    };
    // Finished before the kill: its [DONE] seen.
    let done = async {
        let resp = send("phase-done", true, Some(2)).await.unwrap();
        let text = resp.text().await.unwrap();
        assert!(text.contains("[DONE]"), "{text}");
    };
    // Its first event seen, then held open.
    let first_byte = async {
        let resp = send("phase-first-byte", true, None).await.unwrap();
        let mut body = resp.bytes_stream();
        body.next().await.unwrap().unwrap();
        body
    };
    // Several events seen.
    let mid_stream = async {
        let resp = send("phase-mid-stream", true, None).await.unwrap();
        let mut body = resp.bytes_stream();
        let mut seen = String::new();
        while seen.matches("data: ").count() < 4 {
            seen.push_str(&String::from_utf8_lossy(&body.next().await.unwrap().unwrap()));
        }
        body
    };
    let ((), _first, _mid) = tokio::join!(done, first_byte, mid_stream);
    // Admitted and sent upstream, its answer not yet begun.
    let admitted = tokio::spawn(send("phase-admitted", false, None));
    tokio::time::sleep(Duration::from_millis(300)).await;
    g.kill().await;
    assert!(admitted.await.unwrap().is_err(), "the waiting request was cut by the kill");

    let g = site.start().await;
    let rows = rows_of_key(&client, &g, &key_id).await;
    let phase = |id: &str| rows.iter().filter(|r| r["client_request_id"] == id).cloned().collect::<Vec<_>>();
    let done = phase("phase-done");
    assert_eq!(done.len(), 1, "{rows:?}");
    assert_eq!(done[0]["outcome"], "completed");
    for id in ["phase-first-byte", "phase-mid-stream", "phase-admitted"] {
        let cut = phase(id);
        assert_eq!(cut.len(), 1, "{id}: {rows:?}");
        assert_eq!(cut[0]["outcome"], "crashed", "{id}: {cut:?}");
        assert!(cut[0]["prompt_tokens"].as_i64() > Some(0) && cut[0]["cost_micros"].as_i64() > Some(0), "{cut:?}");
    }
    assert_eq!(rows.len(), 4, "{rows:?}");
    let store = site.store().await;
    counters_agree(&client, &g, &store, &key_id, &key).await;
    g.kill().await;
}

#[tokio::test]
async fn a_request_running_while_its_spool_segment_is_removed_still_gets_its_row_after_a_sigkill() {
    let upstream =
        FakeUpstream::start(FakeSettings { latency_ms: 0, tokens_per_second: 10.0, completion_tokens: 100 }).await;
    let mut site = Site::new(&upstream);
    // Segments of 4 KiB: a few requests fill one, and the writer removes it while the stream runs.
    site.ledger_extra = "spool_segment_kb = 4".into();
    let g = site.start().await;
    let client = reqwest::Client::new();
    let (key_id, key) = key(&client, &g).await;
    let mut body = hello("test-model");
    body["stream"] = json!(true);
    let resp = client
        .post(g.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("x-request-id", "long-stream")
        .json(&body)
        .send()
        .await
        .unwrap();
    let mut long = resp.bytes_stream();
    long.next().await.unwrap().unwrap();
    let mut quick = hello("test-model");
    quick["max_tokens"] = json!(1);
    for _ in 0..40 {
        let resp = client.post(g.url("/v1/chat/completions")).bearer_auth(&key).json(&quick).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    // The writer has written them all and removed the sealed segments (the long stream's begin among them).
    let spool = std::fs::read_dir(site.dir.join("spool")).unwrap().flatten().next().unwrap().path();
    let mut tries = 0;
    while std::fs::read_dir(&spool).unwrap().count() > 2 && tries < 100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        tries += 1;
    }
    assert!(
        std::fs::read_dir(&spool).unwrap().flatten().all(|e| e.file_name() != "00000000000000000001.log"),
        "the first segment is gone"
    );
    g.kill().await;
    drop(long);

    let g = site.start().await;
    let rows = rows_of_key(&client, &g, &key_id).await;
    assert_eq!(rows.len(), 41, "{rows:?}");
    let cut: Vec<_> = rows.iter().filter(|r| r["client_request_id"] == "long-stream").collect();
    assert_eq!(cut.len(), 1, "{rows:?}");
    assert_eq!(cut[0]["outcome"], "crashed");
    g.kill().await;
}
