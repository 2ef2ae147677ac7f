//! Accepting connections, and stopping gracefully.
//!
//! Our own accept loop instead of `axum::serve`, for what it does not offer: a deadline on a new
//! connection's first byte and on reading request headers (slow-loris), a drain deadline, and a budget
//! of client connections under the open-file limit (raised to its maximum at start), so that client
//! load cannot take the descriptors the database, Redis and the ledger's spool need. On shutdown
//! readiness turns 503, the listener closes, in-flight requests and streams run on until they finish or
//! the drain deadline passes; then running streams end with a `shutting_down` error event.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::app::{AppOptions, AppState, MasterKey};
use crate::config::Config;

#[derive(Debug, Clone, Copy)]
pub struct ServeSettings {
    pub header_read_timeout: Duration,
    pub drain_timeout: Duration,
    /// The header block the HTTP layer reads at most (431 beyond): twice the configured block, so the
    /// edge layer (`http::framing`) answers most oversized requests itself, with a message.
    pub max_header_read: usize,
}

impl ServeSettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            header_read_timeout: Duration::from_millis(config.server.header_read_timeout_ms),
            drain_timeout: Duration::from_millis(config.server.drain_timeout_ms),
            max_header_read: config.server.max_header_block_bytes.saturating_mul(2).max(8192),
        }
    }
}

/// How often the key cache is reloaded from the database.
const KEY_RELOAD: Duration = Duration::from_secs(15);

/// How long to wait, after the drain deadline, for streams to flush their final error event.
const FINAL_FLUSH: Duration = Duration::from_secs(2);

/// File descriptors kept out of the clients' reach: the database pool, Redis, the ledger's spool, logs.
const RESERVED_FDS: u64 = 256;

/// Raises the process's open-file soft limit to its hard limit, and returns how many client
/// connections may be open at once so that billing can never be starved of descriptors: each
/// connection may hold one upstream connection too, and [`RESERVED_FDS`] stay free.
pub fn connection_budget() -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-file limit; assuming 1024");
            1024
        }
    };
    let budget = limit.saturating_sub(RESERVED_FDS) / 2;
    usize::try_from(budget.max(16)).unwrap_or(usize::MAX)
}

/// Binds the address to serve on. With several workers, each listens on a socket of its own with
/// SO_REUSEPORT, so this one is bound that way too, after checking that the address is free: otherwise
/// a second gateway started on the same port would silently share its connections.
pub async fn bind(listen: &str, workers: usize) -> std::io::Result<TcpListener> {
    let probe = TcpListener::bind(listen).await?;
    if workers <= 1 || !cfg!(unix) {
        return Ok(probe);
    }
    let addr = probe.local_addr()?;
    drop(probe);
    bind_shared(addr)
}

/// A listening socket that other workers' sockets may share.
fn bind_shared(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Serves until `shutdown` completes, then drains.
///
/// `listener` is served on the calling task's runtime; with `workers > 1`, each further worker is a
/// thread with its own single-threaded runtime and its own socket on the same address (see `bind`).
/// A connection then lives on one thread from accept to close, with its upstream connections (see
/// `providers::HttpClients`): no wake-ups of other threads on the way, which is most of what a hop costs
/// at low load, and no work-stealing bookkeeping under load. The process-wide tasks (ledger writer, key
/// reloads, Redis upkeep) run on the calling runtime.
pub async fn serve(
    listener: TcpListener,
    workers: usize,
    state: Arc<AppState>,
    settings: ServeSettings,
    shutdown: impl Future<Output = ()>,
) {
    let app = crate::http::router(state.clone());
    let connections = Arc::new(tokio::sync::Semaphore::new(connection_budget()));
    tracing::debug!(max_connections = connections.available_permits(), "client connections allowed at once");
    let background = Background::start(&state);
    let stop = CancellationToken::new();
    // Worker runtimes outlive their drain until the end, so tasks they started (settles, upstream
    // connections) are not dropped half-way.
    let exit = CancellationToken::new();
    let mut threads = Vec::new();
    let mut drained = Vec::new();
    if let Ok(addr) = listener.local_addr() {
        for i in 1..workers {
            let worker = Worker { app: app.clone(), state: state.clone(), connections: connections.clone() };
            match start_worker(i, addr, worker, settings, stop.clone(), exit.clone()).await {
                Ok((thread, done)) => {
                    threads.push(thread);
                    drained.push(done);
                }
                Err(e) => tracing::error!(worker = i, error = %e, "a worker could not start; serving with fewer"),
            }
        }
    }
    tracing::debug!(workers = threads.len() + 1, "serving");
    let own = accept_and_drain(listener, Worker { app, state: state.clone(), connections }, settings, &stop);
    let trigger = async {
        shutdown.await;
        background.quiet();
        state.draining.store(true, Ordering::Relaxed);
        tracing::info!(
            drain_timeout_ms = settings.drain_timeout.as_millis() as u64,
            "shutting down: draining in-flight requests"
        );
        stop.cancel();
    };
    tokio::join!(own, trigger);
    for done in drained {
        let _ = done.await;
    }
    // Every usage record of the drained requests reaches the ledger before the process ends, and every
    // hold in shared counters is settled.
    state.ledger.close().await;
    state.responses.close().await;
    if let Some(tracer) = &state.tracer {
        tracer.flush(std::time::Duration::from_secs(5)).await;
    }
    background.end();
    state.limiter.retire().await;
    exit.cancel();
    let _ = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await;
    tracing::info!("stopped");
}

/// Starts worker `i` on a thread of its own; returns once it listens, with a signal for when it has
/// drained.
async fn start_worker(
    i: usize,
    addr: SocketAddr,
    worker: Worker,
    settings: ServeSettings,
    stop: CancellationToken,
    exit: CancellationToken,
) -> std::io::Result<(std::thread::JoinHandle<()>, oneshot::Receiver<()>)> {
    let (ready_tx, ready_rx) = oneshot::channel::<std::io::Result<()>>();
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new().name(format!("switchyard-worker-{i}")).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        runtime.block_on(async move {
            let listener = match bind_shared(addr) {
                Ok(l) => l,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            accept_and_drain(listener, worker, settings, &stop).await;
            let _ = done_tx.send(());
            exit.cancelled().await;
        });
    })?;
    match ready_rx.await {
        Ok(Ok(())) => Ok((thread, done_rx)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::other("the worker thread ended before listening")),
    }
}

/// The process-wide tasks beside the accept loops.
struct Background {
    reloader: JoinHandle<()>,
    maintenance: JoinHandle<()>,
    bus_listener: Option<JoinHandle<()>>,
}

impl Background {
    fn start(state: &Arc<AppState>) -> Self {
        // Keys changed elsewhere (the CLI, another replica's admin API) are picked up within this interval;
        // this replica's own admin changes take effect at once.
        let reloader = {
            let state = state.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(KEY_RELOAD);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if let Err(e) = state.keys.reload(&state.store).await {
                        tracing::warn!(error = %e, "key cache reload failed; keeping the previous keys");
                    }
                }
            })
        };
        // With Redis: heartbeats, and releasing what replicas that died were holding.
        let maintenance = {
            let (limiter, store) = (state.limiter.clone(), state.store.clone());
            tokio::spawn(async move { limiter.maintain(&store).await })
        };
        // With Redis, other replicas' admin changes arrive at once as notices.
        let bus_listener = state.bus.clone().map(|bus| {
            let state = state.clone();
            tokio::spawn(bus.listen(move || {
                let state = state.clone();
                async move {
                    if let Err(e) = state.keys.reload(&state.store).await {
                        tracing::warn!(error = %e, "key cache reload failed; keeping the previous keys");
                    }
                }
            }))
        });
        Self { reloader, maintenance, bus_listener }
    }

    /// Stops picking up key changes: the gateway is shutting down.
    fn quiet(&self) {
        self.reloader.abort();
        if let Some(task) = &self.bus_listener {
            task.abort();
        }
    }

    fn end(self) {
        self.quiet();
        self.maintenance.abort();
    }
}

/// Accepts connections until `stop`, then lets the open ones finish, up to the drain deadline; after it,
/// running streams are ended (`hard_stop`).
/// What each accept loop serves with: the application, and the connection budget shared by all loops.
struct Worker {
    app: axum::Router,
    state: Arc<AppState>,
    connections: Arc<tokio::sync::Semaphore>,
}

async fn accept_and_drain(listener: TcpListener, worker: Worker, settings: ServeSettings, stop: &CancellationToken) {
    let Worker { app, state, connections } = worker;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_read);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_read).unwrap_or(u32::MAX));
    let graceful = GracefulShutdown::new();
    loop {
        // At the budget, new connections wait in the kernel's backlog rather than take descriptors
        // the ledger and the database need.
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = stop.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let (builder, app, watcher) = (builder.clone(), app.clone(), graceful.watcher());
        let first_byte = settings.header_read_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            // A connection that never sends a byte never reaches hyper's header timer; it gets the same
            // deadline here.
            let mut probe = [0u8; 1];
            match tokio::time::timeout(first_byte, stream.peek(&mut probe)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => {
                    tracing::debug!(%peer, "connection closed before sending a request");
                    return;
                }
            }
            // The peer's address, for what is counted per source (failed sign-ins).
            let app = tower::ServiceExt::map_request(app, move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                req
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(app));
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let drained = graceful.shutdown();
    tokio::pin!(drained);
    if tokio::time::timeout(settings.drain_timeout, &mut drained).await.is_err() {
        if !state.hard_stop.is_cancelled() {
            tracing::warn!("drain deadline passed: ending the remaining streams");
        }
        state.hard_stop.cancel();
        let _ = tokio::time::timeout(FINAL_FLUSH, &mut drained).await;
    }
}

/// A server running in the background, as tests and embedders use it.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    pub master_key: MasterKey,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl RunningServer {
    /// Builds the application from `config` and serves it on `listen` (port 0 picks a free port).
    pub async fn start(config: &Config, opts: &AppOptions, listen: &str) -> anyhow::Result<RunningServer> {
        let (state, master_key) = AppState::new(config, opts).await?;
        // Embedders choose their workers; unset, one (on the caller's runtime).
        let workers = config.server.workers.unwrap_or(1);
        let listener = bind(listen, workers).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let settings = ServeSettings::from_config(config);
        let task = tokio::spawn(serve(listener, workers, state.clone(), settings, async move {
            let _ = stopped.await;
        }));
        Ok(RunningServer { addr, state, master_key, stop: Some(stop), task })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Begins a graceful shutdown, as SIGTERM does.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts down and waits until the server has stopped.
    pub async fn shutdown(mut self) {
        self.begin_shutdown();
        let _ = self.task.await;
    }

    /// Waits for a shutdown begun elsewhere to complete.
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}
