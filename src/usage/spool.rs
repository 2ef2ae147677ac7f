//! The ledger's local spool: an append-only log of usage records on this machine's disk, between a
//! request and the database.
//!
//! Every record is appended (one JSON line, one `O_APPEND` `write(2)`, under a shared lock: requests on
//! different threads do not wait for each other) on the request's own task before its
//! client's answer is complete, so once a client has its answer its record is in the kernel's page
//! cache: a `SIGKILL` of the process cannot lose it. A thread flushes the file to disk (`fdatasync`)
//! every [`SYNC_EVERY`], so a crash of the machine itself loses at most that much. The ledger writer
//! (`usage::ledger`) reads the spool back and writes it to the database, and removes a segment once
//! every record in it is there; when the database is down, records wait here, and the writer catches
//! up when it returns.
//!
//! Layout: `<spool_dir>/<instance id>/` per running gateway, holding a `lock` file (an exclusive
//! `flock` held for the process's life) and numbered segments (`00000000000000000001.log`, …) of about
//! `ledger.spool_segment_kb` each. A directory whose lock can be taken belongs to a gateway that is gone: any
//! gateway sharing the spool directory replays it and removes it. Replays are idempotent (the ledger
//! keeps one row per request id), so a record written twice is one row.
//!
//! The file descriptors it needs are opened up front (the lock and the active segment); rotation opens
//! the next segment and, if it cannot (descriptors or disk exhausted), keeps appending to the current.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

/// How often appended records are flushed to disk.
pub const SYNC_EVERY: Duration = Duration::from_millis(100);
const LOCK_FILE: &str = "lock";
const SUFFIX: &str = ".log";

pub struct Spool {
    root: PathBuf,
    dir: PathBuf,
    /// Appends share it (each is one `O_APPEND` write, which the kernel places whole at the end), so
    /// requests on different threads never wait for each other here; rotation and flushing take it alone.
    active: RwLock<Active>,
    /// Bytes in this instance's segments that the database does not have yet.
    pending: AtomicU64,
    max_bytes: u64,
    /// A segment is sealed (a new one begun) past this size.
    segment_bytes: u64,
    dirty: AtomicBool,
    /// Held for the process's life: the directory is in use.
    _lock: File,
}

struct Active {
    file: Arc<File>,
    seq: u64,
    len: AtomicU64,
    /// Sealed segments not yet flushed to disk.
    unsynced: Vec<Arc<File>>,
}

impl Spool {
    /// A directory of this instance's own under `root`, locked, with its first segment open.
    pub fn open(root: &Path, max_bytes: u64, segment_bytes: u64) -> io::Result<Arc<Spool>> {
        fs::create_dir_all(root)?;
        let dir = root.join(uuid::Uuid::now_v7().to_string());
        fs::create_dir(&dir)?;
        let lock = File::create(dir.join(LOCK_FILE))?;
        lock.try_lock().map_err(|e| io::Error::other(format!("cannot lock {}: {e}", dir.display())))?;
        let file = Arc::new(open_segment(&dir, 1)?);
        sync_dir(&dir);
        let spool = Arc::new(Spool {
            root: root.to_owned(),
            dir,
            active: RwLock::new(Active { file, seq: 1, len: AtomicU64::new(0), unsynced: Vec::new() }),
            pending: AtomicU64::new(0),
            max_bytes,
            segment_bytes,
            dirty: AtomicBool::new(false),
            _lock: lock,
        });
        let weak = Arc::downgrade(&spool);
        std::thread::Builder::new().name("switchyard-spool-sync".into()).spawn(move || sync_loop(&weak))?;
        Ok(spool)
    }

    /// Appends one whole line (ending in `\n`) with a single write.
    pub fn append(&self, line: &[u8]) -> io::Result<()> {
        let n = line.len() as u64;
        let full = {
            let a = self.active.read().unwrap_or_else(|p| p.into_inner());
            match (&*a.file).write(line) {
                Ok(written) if written == line.len() => {}
                Ok(_) => {
                    // Short (a full disk): the fragment is ended, so the next line reads whole; it is skipped.
                    let _ = (&*a.file).write(b"\n");
                    return Err(io::Error::new(io::ErrorKind::WriteZero, "short write to the spool"));
                }
                Err(e) => return Err(e),
            }
            a.len.fetch_add(n, Ordering::Relaxed) + n >= self.segment_bytes
        };
        self.pending.fetch_add(n, Ordering::Relaxed);
        self.dirty.store(true, Ordering::Relaxed);
        if full {
            self.rotate();
        }
        Ok(())
    }

    /// Seals the active segment and begins the next (unless another append just did).
    fn rotate(&self) {
        let mut a = self.active.write().unwrap_or_else(|p| p.into_inner());
        if a.len.load(Ordering::Relaxed) < self.segment_bytes {
            return;
        }
        match open_segment(&self.dir, a.seq + 1) {
            Ok(next) => {
                let sealed = std::mem::replace(&mut a.file, Arc::new(next));
                a.unsynced.push(sealed);
                a.seq += 1;
                a.len = AtomicU64::new(0);
            }
            Err(e) => tracing::warn!(error = %e, "ledger spool: cannot begin a new segment; the current one grows"),
        }
    }

    /// The segment being appended to; every lower one is sealed.
    pub fn active_seq(&self) -> u64 {
        self.active.read().unwrap_or_else(|p| p.into_inner()).seq
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes waiting for the database.
    pub fn pending_bytes(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// More is waiting than the operator allows: the database has been away too long.
    pub fn is_full(&self) -> bool {
        self.pending_bytes() > self.max_bytes
    }

    /// So many bytes of this instance's lines are in the database (or dropped as torn).
    pub fn consumed(&self, bytes: u64) {
        let _ = self.pending.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| Some(p.saturating_sub(bytes)));
    }

    /// Flushes what was appended to disk.
    pub fn sync(&self) {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return;
        }
        let (file, sealed) = {
            let mut a = self.active.write().unwrap_or_else(|p| p.into_inner());
            (a.file.clone(), std::mem::take(&mut a.unsynced))
        };
        for f in sealed.iter().chain(std::iter::once(&file)) {
            if let Err(e) = f.sync_data() {
                tracing::warn!(error = %e, "ledger spool: flush to disk failed");
                self.dirty.store(true, Ordering::Relaxed);
            }
        }
    }

    /// The directories of gateways that are gone (their lock could be taken), each with its lock held
    /// until the returned file is dropped.
    pub fn orphans(&self) -> Vec<(PathBuf, File)> {
        let Ok(entries) = fs::read_dir(&self.root) else { return Vec::new() };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path == self.dir || !path.is_dir() {
                continue;
            }
            let Ok(lock) =
                OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path.join(LOCK_FILE))
            else {
                continue;
            };
            if lock.try_lock().is_ok() {
                out.push((path, lock));
            }
        }
        out
    }
}

/// A directory's segments, oldest first.
pub fn segments(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let seq = name.strip_suffix(SUFFIX)?.parse().ok()?;
            Some((seq, e.path()))
        })
        .collect();
    out.sort_by_key(|(seq, _)| *seq);
    out
}

pub fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}{SUFFIX}"))
}

/// What a segment holds from `offset`: whole lines only (a line still being written, or torn by a crash,
/// is left for later), at most `limit` bytes of them, and the segment's length.
pub fn read_lines(path: &Path, offset: u64, limit: usize) -> io::Result<(Vec<u8>, u64)> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    f.take(limit as u64).read_to_end(&mut buf)?;
    let whole = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    buf.truncate(whole);
    Ok((buf, len))
}

fn open_segment(dir: &Path, seq: u64) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(segment_path(dir, seq))
}

/// Makes a new directory entry durable (best effort: not every filesystem supports it).
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn sync_loop(spool: &Weak<Spool>) {
    loop {
        std::thread::sleep(SYNC_EVERY);
        let Some(spool) = spool.upgrade() else { return };
        spool.sync();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_appended_read_back_whole_and_segments_rotate() {
        let root = std::env::temp_dir().join(format!("sy-spool-{}", uuid::Uuid::now_v7()));
        let spool = Spool::open(&root, 1 << 30, 4 << 20).unwrap();
        spool.append(b"{\"a\":1}\n").unwrap();
        let path = segment_path(spool.dir(), 1);
        // A torn tail (no newline yet) is not read.
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"b\":").unwrap();
        let (lines, len) = read_lines(&path, 0, 1 << 20).unwrap();
        assert_eq!(lines, b"{\"a\":1}\n");
        assert_eq!(len, 13);
        let line = vec![b'x'; 1024 * 1024 - 1].into_iter().chain([b'\n']).collect::<Vec<u8>>();
        for _ in 0..4 {
            spool.append(&line).unwrap();
        }
        assert_eq!(spool.active_seq(), 2, "the first segment was sealed past its size");
        assert_eq!(segments(spool.dir()).len(), 2);
        spool.sync();
        // Another instance sees no orphan while this one lives.
        let other = Spool::open(&root, 1 << 30, 4 << 20).unwrap();
        assert!(other.orphans().is_empty());
        let dir = spool.dir().to_owned();
        drop(spool);
        let orphans = other.orphans();
        assert_eq!(orphans.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(), vec![dir]);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn lines_appended_from_many_threads_at_once_are_each_read_back_whole_once() {
        let root = std::env::temp_dir().join(format!("sy-spool-{}", uuid::Uuid::now_v7()));
        // Small segments, so appends race rotations too.
        let spool = Spool::open(&root, 1 << 30, 64 << 10).unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let spool = &spool;
                s.spawn(move || {
                    for i in 0..5000 {
                        let line = format!("{{\"t\":{t},\"i\":{i},\"pad\":\"{}\"}}\n", "x".repeat(i % 300));
                        spool.append(line.as_bytes()).unwrap();
                    }
                });
            }
        });
        let mut seen = std::collections::HashSet::new();
        for (_, path) in segments(spool.dir()) {
            let (lines, len) = read_lines(&path, 0, usize::MAX).unwrap();
            assert_eq!(lines.len() as u64, len, "no torn line");
            for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let v: serde_json::Value = serde_json::from_slice(line).unwrap();
                assert!(seen.insert((v["t"].as_i64().unwrap(), v["i"].as_i64().unwrap())), "a line twice: {v}");
            }
        }
        assert_eq!(seen.len(), 4 * 5000);
        assert!(spool.active_seq() > 10, "segments rotated meanwhile");
        drop(spool);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
