//! What replicas tell each other through Redis: "keys, plans or organisations changed, reload".
//!
//! An admin change on one replica reloads that replica's key cache at once, bumps a version counter in
//! Redis and publishes a notice; every replica (this one included) that hears the notice reloads too.
//! Pub/sub is best effort (a replica that is reconnecting misses notices, a Redis that restarts drops
//! subscriptions), so each replica also reads the version every [`POLL`] and reloads when it moved: a
//! missed notice is caught up within a second. The subscription reconnects at once, then every
//! [`POLL`] while Redis is away; the periodic reload in `server` stays as the last backstop.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::ConnectionManager;

const CHANNEL: &str = "switchyard:keys-changed";
const VERSION: &str = "switchyard:keys-version";
/// How often the version is read, and how long a lost subscription waits before reconnecting.
pub const POLL: Duration = Duration::from_secs(1);

pub struct Bus {
    client: redis::Client,
    conn: ConnectionManager,
}

impl Bus {
    pub async fn connect(url: &str) -> Result<Bus, String> {
        let client = redis::Client::open(url).map_err(|e| format!("invalid Redis URL: {e}"))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(2);
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| format!("cannot connect to Redis: {e}"))?;
        Ok(Bus { client, conn })
    }

    /// A connection to the same Redis, for other shared state (the response cache).
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Tells every replica to reload its keys. Does not wait. A first try on a connection that Redis
    /// dropped (a restart) fails; the manager reconnects, and the notice is sent again.
    pub fn keys_changed(&self) {
        let mut conn = self.conn.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(50);
            for attempt in 1..=5 {
                let sent: Result<(i64, i64), _> = redis::pipe()
                    .cmd("INCR")
                    .arg(VERSION)
                    .cmd("PUBLISH")
                    .arg(CHANNEL)
                    .arg("keys")
                    .query_async(&mut conn)
                    .await;
                match sent {
                    Ok(_) => return,
                    Err(e) if attempt == 5 => {
                        tracing::warn!(error = %e, "could not tell other replicas to reload keys; they will within 15 s");
                    }
                    Err(_) => {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                }
            }
        });
    }

    async fn version(&self) -> Option<i64> {
        redis::cmd("GET")
            .arg(VERSION)
            .query_async::<Option<i64>>(&mut self.conn.clone())
            .await
            .ok()
            .map(|v| v.unwrap_or(0))
    }

    /// Calls `reload` whenever a notice arrives or the version moves, reconnecting after failures, until
    /// the task is aborted.
    pub async fn listen<F, Fut>(self: Arc<Self>, reload: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut seen = self.version().await;
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut pubsub = match self.client.get_async_pubsub().await {
                Ok(mut pubsub) => match pubsub.subscribe(CHANNEL).await {
                    Ok(()) => Some(pubsub),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot subscribe to key changes");
                        None
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open a Redis pub/sub connection");
                    None
                }
            };
            if pubsub.is_some() {
                // Whatever changed while we were not listening.
                reload().await;
            }
            let mut messages = pubsub.as_mut().map(|p| p.on_message());
            loop {
                tokio::select! {
                    message = async {
                        match messages.as_mut() {
                            Some(m) => m.next().await,
                            None => std::future::pending().await,
                        }
                    } => {
                        if message.is_none() {
                            tracing::warn!("key-change subscription ended; reconnecting");
                            break;
                        }
                        reload().await;
                    }
                    _ = poll.tick() => {
                        let now = self.version().await;
                        if now.is_some() && now != seen {
                            if seen.is_some() {
                                reload().await;
                            }
                            seen = now;
                        }
                        if messages.is_none() {
                            break; // try to subscribe again
                        }
                    }
                }
            }
        }
    }
}
