//! Accepting connections, and stopping gracefully.
//!
//! Our own accept loop instead of `axum::serve`, for two things it does not offer: a deadline on a new
//! connection's first byte and on reading request headers (slow-loris), and a drain deadline. On shutdown
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

use crate::app::{AppOptions, AppState, MasterKey};
use crate::config::Config;

#[derive(Debug, Clone, Copy)]
pub struct ServeSettings {
    pub header_read_timeout: Duration,
    pub drain_timeout: Duration,
}

impl ServeSettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            header_read_timeout: Duration::from_millis(config.server.header_read_timeout_ms),
            drain_timeout: Duration::from_millis(config.server.drain_timeout_ms),
        }
    }
}

/// How often the key cache is reloaded from the database.
const KEY_RELOAD: Duration = Duration::from_secs(15);

/// How long to wait, after the drain deadline, for streams to flush their final error event.
const FINAL_FLUSH: Duration = Duration::from_secs(2);

/// Serves until `shutdown` completes, then drains.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    settings: ServeSettings,
    shutdown: impl Future<Output = ()>,
) {
    let app = crate::http::router(state.clone());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(settings.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
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
        let limiter = state.limiter.clone();
        tokio::spawn(async move { limiter.maintain().await })
    };
    // With Redis, other replicas' admin changes arrive at once as notices.
    let listener_task = state.bus.clone().map(|bus| {
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
    tokio::pin!(shutdown);
    loop {
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
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (builder, app, watcher) = (builder.clone(), app.clone(), graceful.watcher());
        let first_byte = settings.header_read_timeout;
        tokio::spawn(async move {
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
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(app));
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    reloader.abort();
    if let Some(task) = listener_task {
        task.abort();
    }
    state.draining.store(true, Ordering::Relaxed);
    tracing::info!(
        drain_timeout_ms = settings.drain_timeout.as_millis() as u64,
        "shutting down: draining in-flight requests"
    );
    let drained = graceful.shutdown();
    tokio::pin!(drained);
    if tokio::time::timeout(settings.drain_timeout, &mut drained).await.is_err() {
        tracing::warn!("drain deadline passed: ending the remaining streams");
        state.hard_stop.cancel();
        let _ = tokio::time::timeout(FINAL_FLUSH, &mut drained).await;
    }
    // Every usage record of the drained requests reaches the ledger before the process ends, and every
    // hold in shared counters is settled.
    state.ledger.close().await;
    maintenance.abort();
    state.limiter.retire().await;
    tracing::info!("stopped");
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
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let settings = ServeSettings::from_config(config);
        let task = tokio::spawn(serve(listener, state.clone(), settings, async move {
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
