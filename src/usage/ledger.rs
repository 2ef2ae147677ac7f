//! The usage ledger writer: every record reaches the `usage_events` table exactly once, through
//! crashes and database outages.
//!
//! A record is appended to the local spool (`usage::spool`) on the request's own task, before the
//! client's answer is complete; a background task reads the spool back every [`INTERVAL`] and writes
//! it to the database in batches (one transaction each, `ON CONFLICT (request_id) DO NOTHING`, so a
//! record read twice is one row), then removes the segments it has written. When the database fails,
//! the records wait in the spool and the task retries, backing off up to [`MAX_BACKOFF`], for as long
//! as it takes; readiness fails while more than `ledger.spool_max_mb` waits. At start, before the
//! counters are rebuilt from the ledger, the spools of gateways that died (a `SIGKILL`, a crash) are
//! replayed; while running, so are those of other gateways on the machine that die.
//!
//! What a `SIGKILL` can still lose: nothing a client saw answered (its record was written before the
//! answer's last byte); a machine crash, the records of the last [`spool::SYNC_EVERY`] not yet flushed.
//! Without a usable spool directory (read-only disk), records go through an in-memory queue instead, as
//! they did before the spool: a crash then loses what was queued (up to one [`INTERVAL`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::spool::{self, Spool};
use super::{UsageRecord, UsageSink};
use crate::store::Store;

const QUEUE: usize = 65_536;
const BATCH: usize = 512;
const INTERVAL: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the spools of other gateways on this machine are checked for ones that died.
const ORPHAN_SCAN: Duration = Duration::from_secs(10);
/// How often the database is pinged to know whether it is up.
const PING_EVERY: Duration = Duration::from_secs(1);
/// Read from a segment at a time.
const READ_LIMIT: usize = 1 << 20;
/// On a graceful stop, how long to wait for the database to take what is left (the rest stays in the
/// spool for the next start).
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// One line of the spool: a finished request's record; the row a running request gets if the process
/// dies (`begin`); or such a line carried forward from a segment being removed while its request still
/// ran.
#[derive(Serialize, Deserialize)]
enum Line {
    #[serde(rename = "r")]
    Record(UsageRecord),
    #[serde(rename = "b")]
    Begin(UsageRecord),
    #[serde(rename = "c")]
    Carried(UsageRecord),
}

#[derive(Serialize)]
enum LineRef<'a> {
    #[serde(rename = "r")]
    Record(&'a UsageRecord),
    #[serde(rename = "b")]
    Begin(&'a UsageRecord),
    #[serde(rename = "c")]
    Carried(&'a UsageRecord),
}

pub struct Ledger {
    spool: Option<Arc<Spool>>,
    /// Records that could not be spooled (no spool, or an append failed), for the database directly.
    tx: Mutex<Option<mpsc::Sender<UsageRecord>>>,
    task: Mutex<Option<JoinHandle<()>>>,
    stop: CancellationToken,
    spool_failing: AtomicBool,
    closed: AtomicBool,
    /// Whether the database took the writer's last statement (or answered its last ping).
    database: Arc<AtomicBool>,
}

impl Ledger {
    /// Opens this gateway's spool under `spool_dir`, replays the spools of gateways that died into the
    /// database, and starts the writer. Call before the limits are rebuilt from the ledger.
    pub async fn open(store: Store, config: &crate::config::LedgerConfig) -> Ledger {
        let spool_dir = Path::new(&config.spool_dir);
        let max_bytes = config.spool_max_mb.saturating_mul(1 << 20);
        let spool = match Spool::open(spool_dir, max_bytes, config.spool_segment_kb.saturating_mul(1024)) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(
                    error = %e, dir = %spool_dir.display(),
                    "ledger spool unavailable: usage records go to the database from memory, and a crash can lose the last ones"
                );
                None
            }
        };
        if let Some(spool) = &spool {
            adopt_orphans(spool, &store).await;
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let stop = CancellationToken::new();
        let database = Arc::new(AtomicBool::new(true));
        let task = tokio::spawn(write_loop(store, spool.clone(), rx, stop.clone(), database.clone()));
        Ledger {
            spool,
            tx: Mutex::new(Some(tx)),
            task: Mutex::new(Some(task)),
            stop,
            spool_failing: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            database,
        }
    }

    /// Stops taking records and waits until every one is in the database (or, if the database does not
    /// take them within a while, safe in the spool for the next start).
    pub async fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        self.stop.cancel();
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Whether the database is answering, as the writer last saw it (within about a second).
    pub fn database_ok(&self) -> bool {
        self.database.load(Ordering::Relaxed)
    }

    /// More waits for the database than the operator allows (readiness says so).
    pub fn is_backlogged(&self) -> bool {
        self.spool.as_ref().is_some_and(|s| s.is_full())
    }

    /// Bytes of records waiting in the spool for the database.
    pub fn spooled_bytes(&self) -> u64 {
        self.spool.as_ref().map_or(0, |s| s.pending_bytes())
    }

    fn spool_record(&self, spool: &Spool, record: LineRef<'_>) -> bool {
        let mut line = match serde_json::to_vec(&record) {
            Ok(line) => line,
            Err(_) => return false,
        };
        line.push(b'\n');
        match spool.append(&line) {
            Ok(()) => {
                if self.spool_failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("ledger spool: appending again");
                }
                true
            }
            Err(e) => {
                if !self.spool_failing.swap(true, Ordering::Relaxed) {
                    tracing::error!(error = %e, "ledger spool: append failed; records go to the database from memory");
                }
                false
            }
        }
    }
}

impl UsageSink for Ledger {
    fn begin(&self, if_lost: &UsageRecord) {
        if let Some(spool) = &self.spool
            && !self.closed.load(Ordering::Relaxed)
        {
            self.spool_record(spool, LineRef::Begin(if_lost));
        }
    }

    fn record(&self, record: UsageRecord) {
        if let Some(spool) = &self.spool
            && !self.closed.load(Ordering::Relaxed)
            && self.spool_record(spool, LineRef::Record(&record))
        {
            return;
        }
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

/// Where the writer is in this gateway's own spool, and the requests it has seen begin there and not
/// yet end (with the segment their line is in).
struct Tail {
    seq: u64,
    offset: u64,
    running: Running,
}

/// Requests begun and not ended, by request id: the segment of their latest line, and their row if the
/// process dies.
type Running = HashMap<String, (u64, UsageRecord)>;

/// Whether a spool is this gateway's own (lines carried forward only update what is known to run) or a
/// dead gateway's being replayed (every line that says a request began counts, its earlier lines gone).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reading {
    Own,
    Replay,
}

async fn write_loop(
    store: Store,
    spool: Option<Arc<Spool>>,
    mut rx: mpsc::Receiver<UsageRecord>,
    stop: CancellationToken,
    database: Arc<AtomicBool>,
) {
    let mut last_contact = tokio::time::Instant::now();
    // The spool's records were last refused for want of a database (a ping alone does not prove it is
    // back: SQLite answers `SELECT 1` while another process holds its write lock).
    let mut write_failing = false;
    let mut tail = Tail { seq: 1, offset: 0, running: HashMap::new() };
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = INTERVAL;
    let mut last_scan = tokio::time::Instant::now();
    let mut stopping_since: Option<tokio::time::Instant> = None;
    loop {
        // Wake on a timer, not on every record: a request never wakes this task to hand over its row.
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled(), if stopping_since.is_none() => {}
        }
        if stop.is_cancelled() && stopping_since.is_none() {
            stopping_since = Some(tokio::time::Instant::now());
        }
        let mut queued = Vec::new();
        let mut closed = false;
        loop {
            match rx.try_recv() {
                Ok(record) => queued.push(record),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        for chunk in queued.chunks(BATCH) {
            write_queued(&store, chunk).await;
        }
        let caught_up = match &spool {
            None => true,
            Some(spool) => match catch_up(spool, &store, &mut tail).await {
                Ok(done) => {
                    backoff = INTERVAL;
                    write_failing = false;
                    done
                }
                Err(e) => {
                    if e.is_unavailable() {
                        write_failing = true;
                        database.store(false, Ordering::Relaxed);
                    }
                    last_contact = tokio::time::Instant::now();
                    tracing::warn!(error = %e, waiting_bytes = spool.pending_bytes(), "usage ledger write failed; records wait in the spool");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    false
                }
            },
        };
        // With nothing to write, a ping every second keeps `database_ok` current (the admin API reads it).
        if last_contact.elapsed() >= PING_EVERY {
            last_contact = tokio::time::Instant::now();
            let up = !write_failing && tokio::time::timeout(PING_EVERY, store.ping()).await.is_ok_and(|r| r.is_ok());
            if database.swap(up, Ordering::Relaxed) != up {
                if up {
                    tracing::info!("the database answers again");
                } else {
                    tracing::warn!("the database does not answer; the admin API answers 503 until it does");
                }
            }
        }
        if let Some(spool) = &spool
            && last_scan.elapsed() >= ORPHAN_SCAN
        {
            last_scan = tokio::time::Instant::now();
            adopt_orphans(spool, &store).await;
        }
        if let Some(since) = stopping_since
            && closed
            && (caught_up || since.elapsed() >= CLOSE_WAIT)
        {
            if let Some(spool) = &spool {
                spool.sync();
                if caught_up {
                    remove_dir(spool.dir());
                } else {
                    tracing::error!(waiting_bytes = spool.pending_bytes(), dir = %spool.dir().display(), "usage ledger: the database did not take every record before the stop; the rest is replayed at the next start");
                }
            }
            return;
        }
    }
}

/// Writes what this gateway's spool holds beyond `tail`; `Ok(true)` when all of it is in the database.
async fn catch_up(spool: &Arc<Spool>, store: &Store, tail: &mut Tail) -> Result<bool, crate::store::StoreError> {
    loop {
        // Read before the data: a segment sealed now gets no more lines.
        let sealed = tail.seq < spool.active_seq();
        let path = spool::segment_path(spool.dir(), tail.seq);
        let offset = tail.offset;
        let read = tokio::task::spawn_blocking(move || spool::read_lines(&path, offset, READ_LIMIT)).await;
        let (lines, len) = match read {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "ledger spool: cannot read a segment; trying again");
                return Ok(false);
            }
            Err(_) => return Ok(false),
        };
        if !lines.is_empty() {
            write_lines(store, &lines, tail.seq, &mut tail.running, Reading::Own).await?;
            tail.offset += lines.len() as u64;
            spool.consumed(lines.len() as u64);
            continue;
        }
        if !sealed {
            return Ok(true);
        }
        if tail.offset < len {
            tracing::warn!(bytes = len - tail.offset, "ledger spool: a segment ends in a torn line; it is dropped");
            spool.consumed(len - tail.offset);
        }
        // Requests still running whose begin line is in this segment: carried to the active one first,
        // so a crash after the removal still finds them.
        for (_, if_lost) in tail.running.values().filter(|(seq, _)| *seq == tail.seq) {
            let mut line = serde_json::to_vec(&LineRef::Carried(if_lost)).unwrap_or_default();
            line.push(b'\n');
            if let Err(e) = spool.append(&line) {
                tracing::warn!(error = %e, "ledger spool: cannot carry a running request forward; the segment stays");
                return Ok(false);
            }
        }
        let _ = std::fs::remove_file(spool::segment_path(spool.dir(), tail.seq));
        tail.seq += 1;
        tail.offset = 0;
    }
}

/// Writes the records of some whole lines of segment `seq`, in batches, and keeps track of the requests
/// they say began.
async fn write_lines(
    store: &Store,
    lines: &[u8],
    seq: u64,
    running: &mut Running,
    reading: Reading,
) -> Result<(), crate::store::StoreError> {
    let mut records = Vec::with_capacity(BATCH);
    for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<Line>(line) {
            Ok(Line::Record(r)) => {
                running.remove(&r.request_id);
                records.push(r);
            }
            Ok(Line::Begin(r)) => {
                running.insert(r.request_id.clone(), (seq, r));
            }
            Ok(Line::Carried(r)) => match (running.get_mut(&r.request_id), reading) {
                (Some(entry), _) => entry.0 = seq,
                // Ended before its carried line was read.
                (None, Reading::Own) => {}
                (None, Reading::Replay) => {
                    running.insert(r.request_id.clone(), (seq, r));
                }
            },
            Err(e) => tracing::error!(error = %e, "ledger spool: a line is not a record; skipped"),
        }
        if records.len() == BATCH {
            store.insert_usage(&records).await?;
            records.clear();
        }
    }
    if !records.is_empty() {
        store.insert_usage(&records).await?;
    }
    Ok(())
}

/// Replays the spools of gateways that died into the database and removes them.
async fn adopt_orphans(spool: &Spool, store: &Store) {
    for (dir, lock) in spool.orphans() {
        match replay(&dir, store).await {
            Ok(0) => {}
            Ok(bytes) => {
                tracing::info!(dir = %dir.display(), bytes, "usage ledger: replayed the spool of a gateway that stopped")
            }
            Err(e) => {
                tracing::warn!(error = %e, dir = %dir.display(), "usage ledger: replaying a stopped gateway's spool failed; trying again later");
                continue;
            }
        }
        drop(lock);
        remove_dir(&dir);
    }
}

/// Writes a dead gateway's spool to the database: every record, and for each request that began and
/// never ended, the row it was to get if the process died (`Outcome::Crashed`). Its segments are removed
/// only once all of it is written, so a failure part-way replays it all again (one row per request id).
async fn replay(dir: &Path, store: &Store) -> Result<u64, crate::store::StoreError> {
    let mut total = 0;
    let mut running = Running::new();
    let segments = spool::segments(dir);
    for (seq, path) in &segments {
        let mut offset = 0;
        loop {
            let p: PathBuf = path.clone();
            let read = tokio::task::spawn_blocking(move || spool::read_lines(&p, offset, READ_LIMIT)).await;
            let Ok(Ok((lines, _))) = read else { break };
            if lines.is_empty() {
                break;
            }
            write_lines(store, &lines, *seq, &mut running, Reading::Replay).await?;
            offset += lines.len() as u64;
        }
        total += offset;
    }
    let lost: Vec<UsageRecord> = running.into_values().map(|(_, r)| r).collect();
    if !lost.is_empty() {
        tracing::warn!(requests = lost.len(), dir = %dir.display(), "usage ledger: requests cut by a gateway that stopped abruptly are recorded as crashed");
    }
    for chunk in lost.chunks(BATCH) {
        store.insert_usage(chunk).await?;
    }
    for (_, path) in segments {
        let _ = std::fs::remove_file(&path);
    }
    Ok(total)
}

fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        tracing::debug!(error = %e, dir = %dir.display(), "ledger spool: could not remove a directory");
    }
}

/// Records that could not be spooled, straight to the database (five tries, then the log).
async fn write_queued(store: &Store, rows: &[UsageRecord]) {
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
    fn begin(&self, if_lost: &UsageRecord) {
        self.0.begin(if_lost);
        self.1.begin(if_lost);
    }

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
