//! Configuration changes without a restart: `POST /admin/v1/reload` and `SIGHUP` read the file again,
//! validate it whole and swap it in; a broken file, or one that changes what cannot change while
//! running, is refused with its paths and the configuration in force stays; a request in flight ends
//! on the configuration it started with.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use switchyard::config::FakeSettings;

use crate::support::{Harness, MASTER_KEY, Setup, error_of, header, hello};

const ALIAS: &str = r#"
[[aliases]]
name = "team-default"
targets = ["test-model"]
"#;

fn with_alias() -> Setup {
    Setup { extra: ALIAS.to_owned(), ..Setup::default() }
}

/// Rewrites the harness's configuration file: `from` (which must be there) becomes `to`.
fn edit(h: &Harness, from: &str, to: &str) {
    let text = std::fs::read_to_string(&h.config_file).unwrap();
    assert!(text.contains(from), "the configuration holds {from:?}");
    std::fs::write(&h.config_file, text.replacen(from, to, 1)).unwrap();
}

async fn reload(h: &Harness) -> (u16, Value) {
    let resp = h.post("/admin/v1/reload").send().await.unwrap();
    let status = resp.status().as_u16();
    assert_eq!(header(&resp, "cache-control"), "no-store");
    (status, resp.json().await.unwrap())
}

async fn served_by(h: &Harness, model: &str) -> String {
    let resp = h.chat(hello(model)).await;
    assert_eq!(resp.status(), 200, "{model} is served");
    header(&resp, "x-switchyard-model")
}

#[tokio::test]
async fn an_alias_changed_in_the_file_takes_effect_on_reload_and_is_audited() {
    let h = Harness::with(with_alias()).await;
    assert_eq!(served_by(&h, "team-default").await, "test-model");
    let first = h.get_json("/admin/v1/config").await;
    assert_eq!(first["version"], 1);
    assert_eq!(first["digest"].as_str().unwrap().len(), 16);
    assert!(first["loaded_at"].as_str().unwrap().ends_with('Z'), "{first}");

    edit(&h, r#"targets = ["test-model"]"#, r#"targets = ["claude-test", "test-model"]"#);
    let (status, body) = reload(&h).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changed"], true);
    assert_eq!(body["version"], 2);
    assert_ne!(body["digest"], first["digest"]);
    assert_eq!(served_by(&h, "team-default").await, "claude-test");
    assert_eq!(h.get_json("/admin/v1/config").await["version"], 2);

    // The same file again changes nothing, and says so.
    let (status, again) = reload(&h).await;
    assert_eq!((status, &again["changed"], &again["version"]), (200, &json!(false), &json!(2)));

    // This gateway's reloads (the database may hold other gateways' rows): its digests are its own.
    let audit = h.get_json("/admin/v1/audit?limit=500").await;
    let rows: Vec<&Value> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "config.reload" && r["before"]["digest"] == first["digest"])
        .collect();
    assert_eq!(rows.len(), 1, "{audit}");
    assert_eq!(rows[0]["actor"], "master_key");
    assert_eq!(rows[0]["before"]["version"], 1);
    assert_eq!(rows[0]["after"]["version"], 2);
}

#[tokio::test]
async fn a_broken_configuration_is_refused_with_its_path_and_the_one_in_force_stays() {
    let h = Harness::with(with_alias()).await;
    let original = std::fs::read_to_string(&h.config_file).unwrap();

    // A target that names nothing: refused whole, with the path of what is wrong.
    edit(&h, r#"targets = ["test-model"]"#, r#"targets = ["claude-test", "no-such-model"]"#);
    let (status, body) = reload(&h).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "config_invalid");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let problems = body["error"]["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p["path"] == "aliases[0].targets[1]" && p["message"].as_str().unwrap().contains("no-such-model")),
        "{body}"
    );
    assert!(body["error"]["message"].as_str().unwrap().contains("version 1 stays in force"), "{body}");
    assert_eq!(served_by(&h, "team-default").await, "test-model", "the old alias still answers");

    // Not TOML at all.
    std::fs::write(&h.config_file, format!("{original}\n[[aliases]\n")).unwrap();
    let (status, body) = reload(&h).await;
    assert_eq!(status, 422, "{body}");
    assert!(!body["error"]["message"].as_str().unwrap().is_empty());

    // A file that is gone.
    std::fs::remove_file(&h.config_file).unwrap();
    let (status, body) = reload(&h).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("cannot read"), "{body}");

    // What cannot change while running is named, and nothing else of the file is taken.
    let moved = original.replacen("[server]", "[server]\nlisten = \"127.0.0.1:1\"\nworkers = 3", 1);
    std::fs::write(&h.config_file, moved.replacen(r#"targets = ["test-model"]"#, r#"targets = ["claude-test"]"#, 1))
        .unwrap();
    let (status, body) = reload(&h).await;
    assert_eq!(status, 422, "{body}");
    let paths: Vec<&str> =
        body["error"]["problems"].as_array().unwrap().iter().map(|p| p["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["server.listen", "server.workers"], "{body}");
    assert!(body["error"]["problems"][0]["message"].as_str().unwrap().contains("restart"), "{body}");
    assert_eq!(served_by(&h, "team-default").await, "test-model");
    assert_eq!(h.get_json("/admin/v1/config").await["version"], 1);

    // Only a gateway admin may reload: a virtual key may not (viewers: tests/it/accounts.rs).
    let org = h.new_org(json!({"name": format!("reload-{}", uuid::Uuid::now_v7())})).await;
    let (_, key) = h.new_key(&org, json!({})).await;
    let resp = h.client.post(h.url("/admin/v1/reload")).bearer_auth(&key).send().await.unwrap();
    assert!(matches!(resp.status().as_u16(), 401 | 403), "{}", resp.status());
}

#[tokio::test]
async fn a_stream_in_flight_ends_on_the_configuration_it_started_with() {
    let h = Harness::with(Setup {
        fake: FakeSettings { latency_ms: 0, tokens_per_second: 40.0, completion_tokens: 80 },
        ..with_alias()
    })
    .await;
    let mut body = hello("team-default");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let resp = h.chat(body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-switchyard-model"), "test-model");
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(!first.is_empty());

    // The model the stream is on leaves the catalog while it runs, and its price goes up a hundredfold.
    let text = std::fs::read_to_string(&h.config_file).unwrap();
    let without = text
        .replacen(
            "name = \"test-model\"\n            provider = \"upstream\"",
            "name = \"renamed-model\"\n            provider = \"upstream\"",
            1,
        )
        .replacen(
            "input_per_mtok = 1.0\n            output_per_mtok = 2.0",
            "input_per_mtok = 100.0\n            output_per_mtok = 200.0",
            1,
        )
        .replacen(r#"targets = ["test-model"]"#, r#"targets = ["claude-test"]"#, 1);
    assert!(without.contains("renamed-model") && without.contains("100.0"), "every edit applied");
    std::fs::write(&h.config_file, without).unwrap();
    let (status, reloaded) = reload(&h).await;
    assert_eq!(status, 200, "{reloaded}");

    let mut rest = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap() {
        rest.extend_from_slice(&chunk.unwrap());
    }
    let after = String::from_utf8(rest).unwrap();
    assert!(
        after.matches("\"content\":").count() >= 5,
        "the stream was still running when the reload was done, and went on: {after}"
    );
    assert!(after.trim_end().ends_with("data: [DONE]"), "the stream ended whole: {after}");
    let records = h.usage.wait_for(1).await;
    let row = records.iter().find(|r| r.requested_model == "team-default").unwrap();
    assert_eq!(row.served_model.as_deref(), Some("test-model"));
    // $1 and $2 a million tokens are one and two micro-dollars a token: the old prices, not the new.
    assert!(row.completion_tokens >= 40, "{row:?}");
    let at_old_prices = row.prompt_tokens as i64 + 2 * row.completion_tokens as i64;
    assert_eq!(row.cost_micros, Some(at_old_prices), "priced by the configuration it started on");

    // New requests see the new one.
    let (status, err) = error_of(h.chat(hello("test-model")).await).await;
    assert_eq!(status, 404, "{err}");
    assert_eq!(served_by(&h, "renamed-model").await, "renamed-model");
    assert_eq!(served_by(&h, "team-default").await, "claude-test");
}

#[tokio::test]
async fn a_reload_keeps_what_the_breakers_learned() {
    let h = Harness::with(with_alias()).await;
    for _ in 0..6 {
        let _ = h.chat(hello("dead-model")).await;
    }
    let breaker_of = |providers: &Value, model: &str| {
        providers["models"].as_array().unwrap().iter().find(|m| m["name"] == model).unwrap()["breaker"].clone()
    };
    assert_eq!(breaker_of(&h.get_json("/admin/v1/providers").await, "dead-model"), "open");
    edit(&h, r#"targets = ["test-model"]"#, r#"targets = ["claude-test"]"#);
    let (status, _) = reload(&h).await;
    assert_eq!(status, 200);
    let after = h.get_json("/admin/v1/providers").await;
    assert_eq!(breaker_of(&after, "dead-model"), "open", "{after}");
    assert_eq!(breaker_of(&after, "test-model"), "closed");
}

#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_a_running_gateway() {
    let upstream = crate::support::FakeUpstream::start(FakeSettings::default()).await;
    let site = crate::crash::Site::new(&upstream);
    let gateway = site.start().await;
    let client = reqwest::Client::new();
    let config_of = || async {
        let resp = client.get(gateway.url("/admin/v1/config")).bearer_auth(MASTER_KEY).send().await.unwrap();
        resp.json::<Value>().await.unwrap()
    };
    assert_eq!(config_of().await["version"], 1);
    let path = site.dir.join("switchyard.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}\n[[aliases]]\nname = \"hup-alias\"\ntargets = [\"test-model\"]\n")).unwrap();
    let pid = gateway.child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    assert!(sent.success());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while config_of().await["version"] != 2 {
        assert!(tokio::time::Instant::now() < deadline, "SIGHUP reloaded the configuration within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resp = client
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(MASTER_KEY)
        .json(&hello("hup-alias"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-switchyard-model"), "test-model");
}
