//! What replicas tell each other through Redis pub/sub: "keys, plans or organisations changed, reload".
//!
//! An admin change on one replica reloads that replica's key cache at once and publishes a notice; every
//! replica (this one included) that hears it reloads too. Pub/sub is best effort (a replica that is
//! reconnecting misses notices), so the periodic reload in `server` stays as the backstop.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::ConnectionManager;

const CHANNEL: &str = "switchyard:keys-changed";

pub struct Bus {
    client: redis::Client,
    conn: ConnectionManager,
}

impl Bus {
    pub async fn connect(url: &str) -> Result<Bus, String> {
        let client = redis::Client::open(url).map_err(|e| format!("invalid Redis URL: {e}"))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(1)));
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| format!("cannot connect to Redis: {e}"))?;
        Ok(Bus { client, conn })
    }

    /// Tells every replica to reload its keys. Does not wait.
    pub fn keys_changed(&self) {
        let mut conn = self.conn.clone();
        tokio::spawn(async move {
            let sent: Result<i64, _> = redis::cmd("PUBLISH").arg(CHANNEL).arg("keys").query_async(&mut conn).await;
            if let Err(e) = sent {
                tracing::warn!(error = %e, "could not tell other replicas to reload keys; they will within 15 s");
            }
        });
    }

    /// Calls `reload` whenever a notice arrives, reconnecting after failures, until the task is aborted.
    pub async fn listen<F, Fut>(self: Arc<Self>, reload: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = ()>,
    {
        loop {
            match self.client.get_async_pubsub().await {
                Ok(mut pubsub) => match pubsub.subscribe(CHANNEL).await {
                    Ok(()) => {
                        // Whatever changed while we were not listening.
                        reload().await;
                        let mut messages = pubsub.on_message();
                        while messages.next().await.is_some() {
                            reload().await;
                        }
                        tracing::warn!("key-change subscription ended; reconnecting");
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot subscribe to key changes"),
                },
                Err(e) => tracing::warn!(error = %e, "cannot open a Redis pub/sub connection"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
