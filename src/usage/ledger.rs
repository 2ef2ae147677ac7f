//! The usage ledger writer: records go into a bounded queue and a background task writes them in
//! batches (one transaction each, `ON CONFLICT (request_id) DO NOTHING`, so a request is recorded once).
//!
//! Off the hot path: a request only enqueues. A graceful stop drains the queue; a crash loses what was
//! queued and not yet written (at most one batch interval, ~250 ms, of rows). If the queue is full (the
//! database is far behind), the record is written to the log instead, with an error line.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{UsageRecord, UsageSink};
use crate::store::Store;

const QUEUE: usize = 65_536;
const BATCH: usize = 512;
const INTERVAL: Duration = Duration::from_millis(250);

pub struct Ledger {
    tx: Mutex<Option<mpsc::Sender<UsageRecord>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Ledger {
    pub fn start(store: Store) -> Ledger {
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(write_loop(store, rx));
        Ledger { tx: Mutex::new(Some(tx)), task: Mutex::new(Some(task)) }
    }

    /// Stops taking records and waits until every queued one is written.
    pub async fn close(&self) {
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl UsageSink for Ledger {
    fn record(&self, record: UsageRecord) {
        let guard = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = guard.as_ref() else {
            tracing::error!(request_id = %record.request_id, "usage ledger closed; record kept in the log only: {record:?}");
            return;
        };
        if let Err(e) = tx.try_send(record) {
            let record = match e {
                mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r) => r,
            };
            tracing::error!(request_id = %record.request_id, "usage ledger queue full; record kept in the log only: {record:?}");
        }
    }
}

async fn write_loop(store: Store, mut rx: mpsc::Receiver<UsageRecord>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Wake on a timer, not on every record: a request then never wakes this task (and, on a busy
        // machine, another thread) just to hand over its row.
        tick.tick().await;
        let mut closed = false;
        loop {
            match rx.try_recv() {
                Ok(record) => batch.push(record),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        for chunk in batch.chunks(BATCH) {
            write_batch(&store, chunk).await;
        }
        batch.clear();
        if closed {
            return; // closed and drained
        }
    }
}

async fn write_batch(store: &Store, rows: &[UsageRecord]) {
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=5 {
        match store.insert_usage(rows).await {
            Ok(()) => return,
            Err(e) if attempt < 5 => {
                tracing::warn!(error = %e, rows = rows.len(), attempt, "usage ledger write failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => {
                tracing::error!(error = %e, rows = rows.len(), "usage ledger write failed; rows kept in the log only: {rows:?}");
            }
        }
    }
}

/// Sends every record to two sinks (the ledger, and the log or a test's collector).
pub struct Tee(pub std::sync::Arc<dyn UsageSink>, pub std::sync::Arc<dyn UsageSink>);

impl UsageSink for Tee {
    fn record(&self, record: UsageRecord) {
        if self.1.wants() {
            self.0.record(record.clone());
            self.1.record(record);
        } else {
            self.0.record(record);
        }
    }

    fn wants(&self) -> bool {
        self.0.wants() || self.1.wants()
    }
}
