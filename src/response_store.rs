//! Stored responses of the Responses API, per organisation: what `previous_response_id`, `item_reference`
//! and `GET`/`DELETE /v1/responses/{id}` read.
//!
//! No database write waits on a response: [`ResponseStore::put`] puts it in this replica's memory (the
//! most recent ones, bounded in number and bytes) and queues its rows for a background writer that
//! writes everything queued every 100 ms. So the very next request on this replica finds it at once, and
//! one on another replica finds the row once the writer has run; a read of a response created moments
//! ago (its id carries its creation time) polls the database for up to two seconds before saying it does
//! not exist. A crash loses what was queued and not yet written (about a tick's worth). Item references
//! are looked up in the item index and do not wait for a row in flight.
//!
//! Scope: a response belongs to the organisation whose key made it (`''` for the master key); any other
//! scope reads it as absent. Retention: every row expires after `responses.retention_days`; an expired
//! response is never served, and a sweeper removes the rows in the background.
//! Not here: SQL (`store::responses`), the wire format (`protocols::responses`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::protocols::responses::wire::Item;
use crate::store::responses::{NewResponse, ResponseRow};
use crate::store::{Store, StoreError};

const DAY_MS: i64 = 86_400_000;
const QUEUE: usize = 65_536;
const BATCH: usize = 256;
const INTERVAL: Duration = Duration::from_millis(100);
/// How often a read looks again for a row another replica is writing.
const POLL: Duration = Duration::from_millis(100);
/// How long a deleted id is remembered, so a write still queued for it is dropped.
const DELETED_KEPT_MS: i64 = 60_000;
const SWEEP_EVERY: Duration = Duration::from_secs(600);
/// How long after its creation a response another replica made may still be on its way to the database.
const IN_FLIGHT_MS: i64 = 2_000;
/// The longest conversation `previous_response_id` is followed through.
pub const MAX_TURNS: usize = 1_000;

/// One stored response.
#[derive(Debug, Clone)]
pub struct StoredResponse {
    pub id: String,
    /// The owning organisation's id, or `""` for the master key.
    pub scope: String,
    pub key_id: Option<String>,
    /// The provider that answered: encrypted reasoning in the output can go back to it only.
    pub provider: Option<String>,
    pub previous_response_id: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    /// The turn's input items, references resolved, each with an id (reasoning without its encrypted
    /// content: that stays with the turn that produced it).
    pub input: Vec<Item>,
    /// The output items as the provider gave them (encrypted reasoning included, for the next turn).
    pub output: Vec<Item>,
    /// The response object as it was returned to the caller.
    pub response: Value,
}

/// An item of a stored conversation, with the provider that produced it when it is an output item.
#[derive(Debug, Clone)]
pub struct Sourced {
    pub item: Item,
    pub provider: Option<String>,
}

impl StoredResponse {
    fn item(&self, id: &str) -> Option<Sourced> {
        let has = |i: &&Item| i.id.as_deref() == Some(id);
        if let Some(item) = self.output.iter().find(has) {
            return Some(Sourced { item: item.clone(), provider: self.provider.clone() });
        }
        self.input.iter().find(has).map(|item| Sourced { item: item.clone(), provider: None })
    }

    /// The turn as conversation items: its input, then its output.
    fn items(&self) -> impl Iterator<Item = Sourced> + '_ {
        let input = self.input.iter().map(|item| Sourced { item: item.clone(), provider: None });
        input.chain(self.output.iter().map(|item| Sourced { item: item.clone(), provider: self.provider.clone() }))
    }

    fn item_ids(&self) -> Vec<String> {
        self.input.iter().chain(&self.output).filter_map(|i| i.id.clone()).collect()
    }

    fn to_row(&self) -> Result<NewResponse, serde_json::Error> {
        Ok(NewResponse {
            row: ResponseRow {
                id: self.id.clone(),
                scope: self.scope.clone(),
                key_id: self.key_id.clone(),
                provider: self.provider.clone(),
                previous_response_id: self.previous_response_id.clone(),
                created_at: self.created_at,
                expires_at: self.expires_at,
                input: serde_json::to_string(&self.input)?,
                output: serde_json::to_string(&self.output)?,
                body: serde_json::to_string(&self.response)?,
            },
            item_ids: self.item_ids(),
        })
    }

    fn from_row(row: ResponseRow) -> Result<StoredResponse, StoreError> {
        let bad = |e: serde_json::Error| StoreError::Setup(format!("stored response {} is unreadable: {e}", row.id));
        Ok(StoredResponse {
            input: serde_json::from_str(&row.input).map_err(bad)?,
            output: serde_json::from_str(&row.output).map_err(bad)?,
            response: serde_json::from_str(&row.body).map_err(bad)?,
            id: row.id,
            scope: row.scope,
            key_id: row.key_id,
            provider: row.provider,
            previous_response_id: row.previous_response_id,
            created_at: row.created_at,
            expires_at: row.expires_at,
        })
    }
}

/// A new response id: `resp_` and a UUIDv7, so the id tells when it was made.
pub fn new_response_id() -> String {
    format!("resp_{}", uuid::Uuid::now_v7().simple())
}

/// When an id of [`new_response_id`]'s form was made (Unix ms).
fn made_at(id: &str) -> Option<i64> {
    let uuid = uuid::Uuid::try_parse(id.strip_prefix("resp_")?).ok()?;
    let (secs, nanos) = uuid.get_timestamp()?.to_unix();
    Some(secs as i64 * 1000 + i64::from(nanos / 1_000_000))
}

/// The most recent responses, by id, and their items' ids; bounded in number and in bytes.
#[derive(Default)]
struct Recent {
    by_id: HashMap<String, (Arc<StoredResponse>, usize)>,
    order: VecDeque<String>,
    items: HashMap<(String, String), String>,
    bytes: usize,
}

impl Recent {
    fn insert(&mut self, r: Arc<StoredResponse>, size: usize, limits: (usize, usize)) {
        for item in r.item_ids() {
            self.items.insert((r.scope.clone(), item), r.id.clone());
        }
        self.order.push_back(r.id.clone());
        self.bytes += size;
        self.by_id.insert(r.id.clone(), (r, size));
        let (entries, bytes) = limits;
        while self.order.len() > entries.max(1) || (self.bytes > bytes && self.order.len() > 1) {
            if let Some(old) = self.order.pop_front() {
                self.remove(&old);
            }
        }
    }

    fn remove(&mut self, id: &str) {
        if let Some((r, size)) = self.by_id.remove(id) {
            self.bytes -= size;
            for item in r.item_ids() {
                let key = (r.scope.clone(), item);
                if self.items.get(&key).is_some_and(|owner| owner == id) {
                    self.items.remove(&key);
                }
            }
        }
    }
}

/// What a conversation lookup found.
#[derive(Debug)]
pub enum History {
    /// The conversation's items, oldest first.
    Found(Vec<Sourced>),
    /// The response, or a turn it follows, is not stored for this caller.
    Missing,
    /// Longer than the gateway follows (`MAX_TURNS`).
    TooLong,
}

/// Stored responses: the public face of this module.
pub struct ResponseStore {
    store: Store,
    clock: Clock,
    retention_ms: i64,
    /// Most entries and bytes kept in memory.
    limits: (usize, usize),
    recent: Mutex<Recent>,
    /// Deleted (with when) while their row may still be queued: the writer skips them.
    deleted: Arc<Mutex<HashMap<String, i64>>>,
    tx: Mutex<Option<mpsc::Sender<NewResponse>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ResponseStore {
    /// The store, with its writer and sweeper started on the current runtime (at start-up).
    pub fn start(store: Store, clock: Clock, config: &crate::config::ResponsesConfig) -> ResponseStore {
        let (tx, rx) = mpsc::channel(QUEUE);
        let deleted: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
        let writer = tokio::spawn(write_loop(store.clone(), rx, deleted.clone()));
        let sweeper = tokio::spawn(sweep_loop(store.clone(), clock.clone()));
        ResponseStore {
            store,
            clock,
            retention_ms: i64::from(config.retention_days) * DAY_MS,
            limits: (config.memory_entries, config.memory_mb.saturating_mul(1 << 20)),
            recent: Mutex::default(),
            deleted,
            tx: Mutex::new(Some(tx)),
            tasks: Mutex::new(vec![writer, sweeper]),
        }
    }

    /// Now, by the store's clock (what retention is measured with).
    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    /// When a response made at `created_at` expires.
    pub fn expires_at(&self, created_at: i64) -> i64 {
        created_at.saturating_add(self.retention_ms)
    }

    /// Called when a response is complete, before its last byte is sent: keeps it readable here at once
    /// and queues its rows for the background writer.
    pub fn put(&self, r: StoredResponse) {
        let row = match r.to_row() {
            Ok(row) => row,
            Err(e) => {
                tracing::error!(response_id = %r.id, error = %e, "cannot store the response");
                return;
            }
        };
        let size = row.row.input.len() + row.row.output.len() + row.row.body.len();
        lock(&self.recent).insert(Arc::new(r), size, self.limits);
        let guard = lock(&self.tx);
        let Some(tx) = guard.as_ref() else {
            tracing::warn!(response_id = %row.row.id, "response store closed; the response is kept in memory only");
            return;
        };
        if let Err(e) = tx.try_send(row) {
            let id = match &e {
                mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r) => r.row.id.clone(),
            };
            tracing::error!(response_id = %id, "response store queue full; the response is kept in memory only");
        }
    }

    /// The response `id` of `scope`, if it exists and has not expired.
    pub async fn get(&self, scope: &str, id: &str) -> Result<Option<Arc<StoredResponse>>, StoreError> {
        if let Some(r) = self.recent(scope, id) {
            return Ok(Some(r));
        }
        // Made moments ago (by the wall clock) on another replica: its row may not have landed yet.
        let in_flight = made_at(id).map_or(0, |at| IN_FLIGHT_MS - (crate::clock::now_ms() - at)).clamp(0, IN_FLIGHT_MS);
        let until = tokio::time::Instant::now() + Duration::from_millis(in_flight as u64);
        loop {
            if let Some(row) = self.store.response(scope, id, self.now()).await? {
                return Ok(Some(Arc::new(StoredResponse::from_row(row)?)));
            }
            if tokio::time::Instant::now() >= until || lock(&self.deleted).contains_key(id) {
                return Ok(None);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn recent(&self, scope: &str, id: &str) -> Option<Arc<StoredResponse>> {
        let recent = lock(&self.recent);
        let (r, _) = recent.by_id.get(id)?;
        (r.scope == scope && r.expires_at > self.now()).then(|| r.clone())
    }

    /// The stored items `ids` of `scope` (for `item_reference`), each owning response read once; the ids
    /// not found are absent from the answer.
    pub async fn items(&self, scope: &str, ids: &[&str]) -> Result<HashMap<String, Sourced>, StoreError> {
        let mut owners: HashMap<String, Option<Arc<StoredResponse>>> = HashMap::new();
        let mut found = HashMap::new();
        for &item_id in ids {
            if found.contains_key(item_id) {
                continue;
            }
            let owner = lock(&self.recent).items.get(&(scope.to_owned(), item_id.to_owned())).cloned();
            let owner = match owner {
                Some(id) => Some(id),
                None => self.store.response_of_item(scope, item_id, self.now()).await?,
            };
            let Some(owner) = owner else { continue };
            if !owners.contains_key(&owner) {
                let response = self.get(scope, &owner).await?;
                owners.insert(owner.clone(), response);
            }
            if let Some(item) = owners.get(&owner).and_then(Option::as_ref).and_then(|r| r.item(item_id)) {
                found.insert(item_id.to_owned(), item);
            }
        }
        Ok(found)
    }

    /// The conversation up to and including the response `id`: every earlier turn's input and output,
    /// oldest first.
    pub async fn history(&self, scope: &str, id: &str) -> Result<History, StoreError> {
        let mut turns = Vec::new();
        let mut next = Some(id.to_owned());
        while let Some(id) = next {
            if turns.len() >= MAX_TURNS {
                return Ok(History::TooLong);
            }
            let Some(turn) = self.get(scope, &id).await? else { return Ok(History::Missing) };
            next = turn.previous_response_id.clone();
            turns.push(turn);
        }
        Ok(History::Found(turns.iter().rev().flat_map(|t| t.items()).collect()))
    }

    /// Deletes the response `id` of `scope`; `false` when there was none. (Another replica's memory
    /// still holds its copy until it is evicted there.)
    pub async fn delete(&self, scope: &str, id: &str) -> Result<bool, StoreError> {
        let here = self.recent(scope, id).is_some();
        if here {
            let mut recent = lock(&self.recent);
            recent.remove(id);
            recent.order.retain(|o| o != id);
            let now = crate::clock::now_ms();
            let mut deleted = lock(&self.deleted);
            deleted.retain(|_, at| now - *at < DELETED_KEPT_MS);
            deleted.insert(id.to_owned(), now);
        }
        Ok(self.store.delete_response(scope, id).await? || here)
    }

    /// Removes expired responses now (the sweeper does it every ten minutes); returns how many rows.
    pub async fn sweep(&self) -> Result<u64, StoreError> {
        let now = self.now();
        {
            let mut recent = lock(&self.recent);
            let expired: HashSet<String> =
                recent.by_id.values().filter(|(r, _)| r.expires_at <= now).map(|(r, _)| r.id.clone()).collect();
            for id in &expired {
                recent.remove(id);
            }
            recent.order.retain(|id| !expired.contains(id));
        }
        self.store.delete_expired_responses(now).await
    }

    /// Called at shutdown: stops taking responses and waits until every queued one is written.
    pub async fn close(&self) {
        drop(lock(&self.tx).take());
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        let mut tasks = tasks.into_iter();
        if let Some(writer) = tasks.next() {
            let _ = writer.await;
        }
        for sweeper in tasks {
            sweeper.abort();
        }
    }
}

/// Every tick, writes everything queued, `BATCH` responses to a transaction.
async fn write_loop(store: Store, mut rx: mpsc::Receiver<NewResponse>, deleted: Arc<Mutex<HashMap<String, i64>>>) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut queued = Vec::new();
        let mut closed = false;
        loop {
            match rx.try_recv() {
                Ok(r) => queued.push(r),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        {
            let deleted = lock(&deleted);
            queued.retain(|r| !deleted.contains_key(&r.row.id));
        }
        for batch in queued.chunks(BATCH) {
            write_batch(&store, batch).await;
        }
        if closed {
            return;
        }
    }
}

async fn write_batch(store: &Store, rows: &[NewResponse]) {
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=5 {
        match store.insert_responses(rows).await {
            Ok(()) => return,
            Err(e) if attempt < 5 => {
                tracing::warn!(error = %e, responses = rows.len(), attempt, "response store write failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => {
                let ids: Vec<&str> = rows.iter().map(|r| r.row.id.as_str()).collect();
                tracing::error!(error = %e, ?ids, "response store write failed; these responses stay in memory only");
            }
        }
    }
}

async fn sweep_loop(store: Store, clock: Clock) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match store.delete_expired_responses(clock()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "expired stored responses removed"),
            Err(e) => tracing::warn!(error = %e, "sweeping expired stored responses failed"),
        }
        // Idempotency keys' kept answers expire the same way.
        if let Err(e) = store.sweep_sessions(clock()).await {
            tracing::warn!(error = %e, "sweeping expired dashboard sessions failed");
        }
        if let Err(e) = store.delete_expired_idempotency_keys(clock()).await {
            tracing::warn!(error = %e, "sweeping expired idempotency keys failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_id_tells_when_it_was_made() {
        let before = crate::clock::now_ms();
        let id = new_response_id();
        let at = made_at(&id).unwrap();
        assert!(id.starts_with("resp_") && id.len() == 37, "{id}");
        assert!((before..=crate::clock::now_ms()).contains(&at));
        assert_eq!(made_at("resp_nonsense"), None);
    }
}
