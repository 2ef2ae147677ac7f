//! Test support: a fake provider on a real socket, the gateway on port 0 pointed at it, an HTTP client,
//! and a usage sink the tests can read. No fixed ports, no sleeps to wait for something.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use switchyard::app::AppOptions;
use switchyard::config::{Config, ConfigSource, FakeSettings};
use switchyard::fake::FakeState;
use switchyard::server::RunningServer;
use switchyard::sse::{SseDecoder, SseEvent};
use switchyard::usage::{UsageRecord, UsageSink};
use tokio::net::TcpListener;

pub const MASTER_KEY: &str = "sk-sy-master-test-key-0123456789";
pub const PROVIDER_KEY: &str = "sk-upstream-canary-5f3a9c";
/// An AWS secret the fake Bedrock does not accept (a canary for the secret-leak checks too).
pub const AWS_WRONG_SECRET: &str = "wrong/aws+secret-canary-7d1e";

/// A Bedrock provider on the fake signing with the test access key and the secret in `secret_env`
/// (`TEST_AWS_SECRET_ACCESS_KEY`, the one the fake checks against, or `TEST_AWS_WRONG_SECRET`).
pub fn bedrock_provider(name: &str, region: &str, secret_env: &str) -> String {
    format!(
        r#"
[[providers]]
name = "{name}"
kind = "bedrock"
base_url = "{{root}}"
aws = {{ region = "{region}", access_key_id_env = "TEST_AWS_ACCESS_KEY_ID", secret_access_key_env = "{secret_env}" }}
"#
    )
}

/// A Vertex provider on the fake whose service account is in `credentials_env`
/// (`TEST_GOOGLE_CREDENTIALS`, trusted by the fake's token endpoint, or `TEST_GOOGLE_UNTRUSTED`).
pub fn vertex_provider(name: &str, credentials_env: &str) -> String {
    format!(
        r#"
[[providers]]
name = "{name}"
kind = "vertex"
base_url = "{{root}}"
vertex = {{ project = "switchyard-test", location = "us-east5", credentials_env = "{credentials_env}", token_uri = "{{root}}/token" }}
"#
    )
}

/// The fake provider, served over HTTP on a random port.
pub struct FakeUpstream {
    pub state: Arc<FakeState>,
    pub base_url: String,
    /// Over TLS: the protocol each connection's ALPN settled on.
    pub alpn: Arc<Mutex<Vec<String>>>,
}

impl FakeUpstream {
    pub async fn start(settings: FakeSettings) -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        let state = Arc::new(FakeState::new(settings));
        tokio::spawn(switchyard::fake::serve(listener, state.clone()));
        FakeUpstream { state, base_url, alpn: Arc::default() }
    }

    /// The fake over TLS, HTTP/2 offered by ALPN, with the certificate in `tests/fixtures/tls` (issued
    /// for 127.0.0.1 by a test CA whose key was thrown away).
    pub async fn start_tls(settings: FakeSettings) -> FakeUpstream {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        use rustls::pki_types::pem::PemObject;
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls");
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(format!("{dir}/server.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(format!("{dir}/server.key")).unwrap();
        let mut tls =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("https://{}/v1", listener.local_addr().unwrap());
        let state = Arc::new(FakeState::new(settings));
        let router = switchyard::fake::router(state.clone());
        let alpn: Arc<Mutex<Vec<String>>> = Arc::default();
        let negotiated = alpn.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, router, negotiated) = (acceptor.clone(), router.clone(), negotiated.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let protocol = tls.get_ref().1.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned());
                    negotiated.lock().unwrap().push(protocol.unwrap_or_default());
                    let service = hyper_util::service::TowerToHyperService::new(router);
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        FakeUpstream { state, base_url, alpn }
    }

    pub fn last_request(&self) -> switchyard::fake::RecordedRequest {
        self.state.requests().pop().expect("the fake received no request")
    }
}

/// Collects usage records, and lets a test wait for them.
#[derive(Default)]
pub struct CollectSink {
    records: Mutex<Vec<UsageRecord>>,
    changed: tokio::sync::Notify,
}

impl UsageSink for CollectSink {
    fn record(&self, record: UsageRecord) {
        self.records.lock().unwrap().push(record);
        self.changed.notify_waiters();
    }
}

impl CollectSink {
    pub fn all(&self) -> Vec<UsageRecord> {
        self.records.lock().unwrap().clone()
    }

    /// Waits until `n` records exist (at most 10 s), and returns them.
    pub async fn wait_for(&self, n: usize) -> Vec<UsageRecord> {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let notified = self.changed.notified();
                if self.records.lock().unwrap().len() >= n {
                    return self.all();
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("expected {n} usage records, have {:?}", self.all()))
    }
}

/// A gateway on port 0 in front of one fake upstream, plus everything a test needs to drive it.
pub struct Harness {
    pub gateway: RunningServer,
    pub upstream: FakeUpstream,
    pub usage: Arc<CollectSink>,
    pub client: reqwest::Client,
    config: Config,
    opts: AppOptions,
    /// The configuration the gateway reads again on `POST /admin/v1/reload`.
    pub config_file: std::path::PathBuf,
}

/// Knobs for the harness's configuration.
#[derive(Default)]
pub struct Setup {
    pub fake: FakeSettings,
    /// Extra TOML appended to the `[[providers]]` table of the upstream (e.g. timeouts).
    pub provider_extra: String,
    /// Extra TOML for the `[server]` table.
    pub server_extra: String,
    /// The provider key variable's value (several keys comma-separated); default [`PROVIDER_KEY`].
    pub keys: Option<String>,
    /// More configuration appended at the end; `{base}` is replaced by the fake's OpenAI base URL.
    pub extra: String,
    /// Serve the fake over TLS (see [`FakeUpstream::start_tls`]).
    pub tls: bool,
    /// The gateway's clock (Unix ms); the system's when `None`.
    pub clock: Option<switchyard::clock::Clock>,
    /// The database to use instead of [`database_url`]'s.
    pub database_url: Option<String>,
    /// The Redis to share counters through instead of `REDIS_URL`'s (a test's own [`RedisServer`]).
    pub redis_url: Option<String>,
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::with(Setup::default()).await
    }

    pub async fn with(setup: Setup) -> Harness {
        let upstream =
            if setup.tls { FakeUpstream::start_tls(setup.fake).await } else { FakeUpstream::start(setup.fake).await };
        let toml = format!(
            r#"
            [catalog]
            file = ""

            [server]
            {server_extra}
            [ledger]
            spool_dir = "{spool}"

            [[providers]]
            name = "upstream"
            kind = "openai"
            base_url = "{base}"
            api_key_env = "TEST_UPSTREAM_KEY"
            {provider_extra}

            [[providers]]
            name = "nowhere"
            kind = "openai"
            base_url = "http://127.0.0.1:9/v1"
            api_key_env = "TEST_UPSTREAM_KEY"
            timeouts = {{ connect_ms = 2000 }}

            [[providers]]
            name = "unconfigured"
            kind = "openai"
            base_url = "https://api.example.com/v1"
            api_key_env = "TEST_MISSING_KEY"

            [[providers]]
            name = "anthropic"
            kind = "anthropic"
            base_url = "{root}"
            api_key_env = "TEST_UPSTREAM_KEY"
            {provider_extra}

            [[providers]]
            name = "gemini"
            kind = "gemini"
            base_url = "{root}"
            api_key_env = "TEST_UPSTREAM_KEY"
            {provider_extra}

            [[providers]]
            name = "azure"
            kind = "azure"
            base_url = "{root}"
            api_key_env = "TEST_UPSTREAM_KEY"
            api_version = "2024-10-21"

            [[models]]
            name = "test-model"
            provider = "upstream"
            upstream = "upstream-model-id"
            input_per_mtok = 1.0
            output_per_mtok = 2.0

            [[models]]
            name = "claude-test"
            provider = "anthropic"
            upstream = "claude-sonnet-4-5"

            [[models]]
            name = "gemini-test"
            provider = "gemini"
            upstream = "gemini-2.5-flash"

            [[models]]
            name = "azure-test"
            provider = "azure"
            upstream = "my-gpt-deployment"

            [[models]]
            name = "embed-openai"
            provider = "upstream"
            upstream = "text-embedding-3-small"

            [[models]]
            name = "embed-gemini"
            provider = "gemini"
            upstream = "gemini-embedding-001"

            [[models]]
            name = "omni-moderation-latest"
            provider = "upstream"

            [[models]]
            name = "dead-model"
            provider = "nowhere"

            [[models]]
            name = "keyless-model"
            provider = "unconfigured"

            {extra}
            "#,
            base = upstream.base_url,
            root = upstream.base_url.trim_end_matches("/v1"),
            server_extra = setup.server_extra,
            // A spool of this harness's own: its replicas share it, other tests' gateways do not.
            spool = std::env::temp_dir().join(format!("switchyard-it-spool-{}", uuid::Uuid::now_v7())).display(),
            provider_extra = setup.provider_extra,
            extra = setup
                .extra
                .replace("{base}", &upstream.base_url)
                .replace("{root}", upstream.base_url.trim_end_matches("/v1")),
        );
        let config = Config::parse(&toml).unwrap_or_else(|p| panic!("test config invalid: {p:?}"));
        // Written to a file of its own, so the gateway can be told to read it again (`reload`).
        let config_file = std::env::temp_dir().join(format!("switchyard-it-config-{}.toml", uuid::Uuid::now_v7()));
        std::fs::write(&config_file, &toml).unwrap();
        let usage = Arc::new(CollectSink::default());
        let keys = setup.keys.unwrap_or_else(|| PROVIDER_KEY.to_owned());
        let opts = AppOptions {
            env: Arc::new(move |name| match name {
                "SWITCHYARD_MASTER_KEY" => Some(MASTER_KEY.to_owned()),
                "TEST_UPSTREAM_KEY" => Some(keys.clone()),
                // The AWS identity the fake Bedrock checks signatures against, and one it refuses.
                "TEST_AWS_ACCESS_KEY_ID" => Some(switchyard::fake::bedrock::ACCESS_KEY_ID.to_owned()),
                "TEST_AWS_SECRET_ACCESS_KEY" => Some(switchyard::fake::bedrock::SECRET_ACCESS_KEY.to_owned()),
                "TEST_AWS_WRONG_SECRET" => Some(AWS_WRONG_SECRET.to_owned()),
                // Service-account key files for the fake Vertex: one its token endpoint trusts, one not.
                "TEST_GOOGLE_CREDENTIALS" => {
                    Some(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/vertex/service-account.json").to_owned())
                }
                "TEST_GOOGLE_UNTRUSTED" => Some(
                    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/vertex/untrusted-service-account.json")
                        .to_owned(),
                ),
                "TEST_GOOGLE_NOT_A_KEY" => {
                    Some(r#"{"type": "authorized_user", "refresh_token": "rt-canary"}"#.to_owned())
                }
                _ => None,
            }),
            usage_sink: usage.clone(),
            database_url: Some(setup.database_url.unwrap_or_else(database_url)),
            // The shared counters of several replicas, when the run names a Redis (CI's Postgres pass does).
            redis_url: setup.redis_url.or_else(|| std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty())),
            clock: setup.clock.unwrap_or_else(switchyard::clock::system),
            config_source: Some(ConfigSource::File(config_file.clone())),
        };
        let gateway = RunningServer::start(&config, &opts, "127.0.0.1:0").await.unwrap();
        Harness { gateway, upstream, usage, client: reqwest::Client::new(), config, opts, config_file }
    }

    /// A second gateway with the same configuration, database and Redis: another replica.
    pub async fn replica(&self) -> RunningServer {
        RunningServer::start(&self.config, &self.opts, "127.0.0.1:0").await.unwrap()
    }

    /// Whether this run shares counters through Redis (several replicas are only exact with it).
    pub fn has_redis(&self) -> bool {
        self.opts.redis_url.is_some()
    }

    pub fn url(&self, path: &str) -> String {
        self.gateway.url(path)
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(self.url(path)).bearer_auth(MASTER_KEY)
    }

    /// `GET path` with the master key, read as JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        self.get_json_as(MASTER_KEY, path).await
    }

    /// `GET path` with `key`, read as JSON.
    pub async fn get_json_as(&self, key: &str, path: &str) -> Value {
        self.client.get(self.url(path)).bearer_auth(key).send().await.unwrap().json().await.unwrap()
    }

    /// A new organisation (`body` as the admin API takes it), created with the master key.
    pub async fn new_org(&self, body: Value) -> Value {
        let resp = self.post("/admin/v1/organizations").json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 201);
        resp.json().await.unwrap()
    }

    /// A key of organisation `org` on the unlimited plan with `fields` (limits, allowlist): its id and
    /// secret.
    pub async fn new_key(&self, org: &Value, fields: Value) -> (String, String) {
        let mut body = serde_json::json!({"organization_id": org["id"], "plan": "unlimited"});
        body.as_object_mut().unwrap().extend(fields.as_object().cloned().unwrap_or_default());
        let resp = self.post("/admin/v1/keys").json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 201);
        let key: Value = resp.json().await.unwrap();
        (key["id"].as_str().unwrap().to_owned(), key["key"].as_str().unwrap().to_owned())
    }

    pub async fn chat(&self, body: Value) -> reqwest::Response {
        self.post("/v1/chat/completions").json(&body).send().await.unwrap()
    }
}

/// The database for one test: the Postgres of `DATABASE_URL` when it names one (CI runs the suite on both),
/// otherwise a fresh SQLite file.
pub fn database_url() -> String {
    match std::env::var("DATABASE_URL") {
        Ok(url) if url.starts_with("postgres") => url,
        _ => format!("sqlite://{}/switchyard-test-{}.db", std::env::temp_dir().display(), uuid::Uuid::now_v7()),
    }
}

/// A response header's value, empty when absent.
pub fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers().get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

pub fn hello(model: &str) -> Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": "Say hello"}]})
}

/// Reads a whole SSE response into events.
pub async fn sse_events(resp: reqwest::Response) -> Vec<SseEvent> {
    let mut decoder = SseDecoder::default();
    let mut events = Vec::new();
    let mut resp = resp;
    while let Some(chunk) = resp.chunk().await.unwrap_or(None) {
        decoder.push(&chunk, &mut events).unwrap();
    }
    events
}

/// The JSON payloads of a stream's events, `[DONE]` excluded; and whether `[DONE]` was last.
pub fn payloads(events: &[SseEvent]) -> (Vec<Value>, bool) {
    let done = events.last().is_some_and(|e| e.data == "[DONE]");
    let values = events.iter().filter(|e| e.data != "[DONE]").map(|e| serde_json::from_str(&e.data).unwrap()).collect();
    (values, done)
}

/// Polls `f` until it is true, failing after 10 s.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The ledger's row for `request_id`, once the ledger writer has written it (fails after 10 s).
pub async fn ledger_row(h: &Harness, request_id: &str) -> Value {
    for _ in 0..200 {
        let page = h.get_json(&format!("/admin/v1/usage/requests?request_id={request_id}")).await;
        if let Some(row) = page["data"].as_array().and_then(|rows| rows.first()) {
            return row.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no ledger row for {request_id}");
}

pub async fn error_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    let e = &body["error"];
    for key in ["message", "type", "param", "code"] {
        assert!(e.get(key).is_some(), "error body lacks {key}: {body}");
    }
    (status, body)
}

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogCapture;

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends every log line of this test binary, at debug level and below, to a buffer [`captured_logs`] reads.
pub fn capture_logs() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("switchyard=trace,reqwest=debug,hyper=debug,info"))
            .with_writer(|| LogCapture)
            .with_ansi(false)
            .init();
    });
}

pub fn captured_logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

/// An HTTP egress proxy: `CONNECT` tunnels, and absolute-form requests piped to the host they name.
/// It records the head of the first request on each connection.
pub struct TestProxy {
    pub addr: std::net::SocketAddr,
    pub seen: Arc<Mutex<Vec<String>>>,
}

impl TestProxy {
    pub async fn start() -> TestProxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match client.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let first = text.lines().next().unwrap_or_default().to_owned();
                    let mut parts = first.split(' ');
                    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
                    let end = text.find("\r\n\r\n").unwrap() + 4;
                    record.lock().unwrap().push(text[..end].to_owned());
                    let authority = if method == "CONNECT" {
                        target.to_owned()
                    } else {
                        target.trim_start_matches("http://").split('/').next().unwrap_or_default().to_owned()
                    };
                    let Ok(mut upstream) = tokio::net::TcpStream::connect(&authority).await else {
                        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n").await;
                        return;
                    };
                    if method == "CONNECT" {
                        let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await;
                        if head.len() > end {
                            let _ = upstream.write_all(&head[end..]).await;
                        }
                    } else if upstream.write_all(&head).await.is_err() {
                        return;
                    }
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
            }
        });
        TestProxy { addr, seen }
    }

    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// A TCP forwarder to `target` that a test can cut: `down` closes every open connection and refuses new
/// ones until `up` (a database outage, as the gateway sees it).
pub struct Cuttable {
    pub addr: std::net::SocketAddr,
    down: Arc<std::sync::atomic::AtomicBool>,
    cut: Arc<tokio::sync::Notify>,
}

impl Cuttable {
    pub async fn start(target: std::net::SocketAddr) -> Cuttable {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cut = Arc::new(tokio::sync::Notify::new());
        let (is_down, on_cut) = (down.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if is_down.load(Ordering::SeqCst) {
                    continue; // dropped at once
                }
                let on_cut = on_cut.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = on_cut.notified() => {}
                    }
                });
            }
        });
        Cuttable { addr, down, cut }
    }

    pub fn down(&self) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    pub fn up(&self) {
        self.down.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A Redis server of a test's own (a real `redis-server` process on a free port), to kill, freeze and
/// restart empty, without touching the Redis other tests share.
pub struct RedisServer {
    pub port: u16,
    child: std::process::Child,
}

impl RedisServer {
    /// `None` when `redis-server` is not installed (outside CI, the test is then skipped; in CI it fails).
    pub async fn start() -> Option<RedisServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        RedisServer::start_on(port).await
    }

    pub async fn start_on(port: u16) -> Option<RedisServer> {
        let spawned = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--enable-debug-command",
                "local",
            ])
            .args(["--dir", &std::env::temp_dir().display().to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("CI needs redis-server: {e}"),
            Err(_) => return None,
        };
        let server = RedisServer { port, child };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(std::time::Instant::now() < deadline, "redis-server did not start on port {port}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `kill -9`: the server and everything in it are gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Keeps the server busy for `seconds` (`DEBUG SLEEP`, as a long script or a slow fork would): what
    /// clients send meanwhile waits, and runs when it wakes. Returns at once.
    pub fn freeze(&self, seconds: f64) -> std::process::Child {
        std::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "DEBUG", "SLEEP", &seconds.to_string()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }
}

impl RedisServer {
    /// Freezes the process (`SIGSTOP`): connections stay open, nothing is read or answered until
    /// [`RedisServer::resume`].
    pub fn stall(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, which: &str) {
        let ok = std::process::Command::new("kill").args([which, &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success(), "kill {which}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = std::process::Command::new("kill").args(["-CONT", &self.child.id().to_string()]).status();
        }
        self.kill();
    }
}
