//! Log output: human-readable by default, JSON lines when configured. `RUST_LOG` overrides the level.
//! Secrets never reach here as values: they are `Secret`s, which print as `*****`.
//!
//! Lines are written to an in-memory buffer that a background thread flushes to stdout every 50 ms (or
//! sooner when it fills), so request threads never wait on a write system call; the profile of a loaded
//! gateway showed those writes as a tenth of its CPU. At most the last 50 ms of lines are lost on a crash;
//! [`flush`] runs on graceful shutdown.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::{LogConfig, LogFormat};

const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// A buffer this full is written out at once rather than waiting for the timer.
const HIGH_WATER: usize = 256 * 1024;

static BUFFER: Mutex<Vec<u8>> = Mutex::new(Vec::new());

fn lock() -> std::sync::MutexGuard<'static, Vec<u8>> {
    BUFFER.lock().unwrap_or_else(|p| p.into_inner())
}

/// Writes whatever is buffered to stdout.
pub fn flush() {
    let pending = std::mem::take(&mut *lock());
    if !pending.is_empty() {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&pending);
        let _ = out.flush();
    }
}

struct Buffered;

impl Write for Buffered {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let full = {
            let mut b = lock();
            b.extend_from_slice(buf);
            b.len() >= HIGH_WATER
        };
        if full {
            flush();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct MakeBuffered;

impl<'a> MakeWriter<'a> for MakeBuffered {
    type Writer = Buffered;

    fn make_writer(&'a self) -> Self::Writer {
        Buffered
    }
}

pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a terminal: escape codes in files cost CPU per line and clutter log pipelines.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(ansi).with_writer(MakeBuffered);
    let installed = match config.format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init(),
    };
    if installed.is_ok() {
        let _ = std::thread::Builder::new().name("log-flush".into()).spawn(|| {
            loop {
                std::thread::sleep(FLUSH_EVERY);
                flush();
            }
        });
    }
}
