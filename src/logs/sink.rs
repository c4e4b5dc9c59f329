//! The pump of one pipe: drain it until EOF, hand whole lines to the
//! formatter and write the result to the stream's files.
//!
//! The pump never stops reading because of a file: a failed write counts the
//! chunk's lines as lost and reading goes on, so the app is never blocked on
//! a full pipe. While the app writes fast, several reads are batched into one
//! write (see [`LineBuf`]); when the pipe runs dry, what was read is written
//! at once, so latency stays one read.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::unix::pipe;

use crate::logs::file::LogFile;
use crate::logs::format::Formatter;
use crate::logs::lines::{LineBuf, READ_SIZE};

/// Loss accounting of one instance, shared by its two pumps and the hub.
#[derive(Default)]
pub struct StatsCell {
    /// Lines that missed at least one of their files.
    pub lines_lost: AtomicU64,
    /// The most recent write error, for `status`.
    pub last_error: Mutex<Option<String>>,
}

impl StatsCell {
    fn record_loss(&self, lines: u64, error: String) {
        self.lines_lost.fetch_add(lines, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
    }
}

/// Everything one pipe's pump needs.
pub struct Pump {
    /// Turns whole lines into file bytes (plain, stamped or JSON).
    pub formatter: Formatter,
    /// The stream's own file and/or the combined file; empty when disabled
    /// (the pipe is still drained).
    pub targets: Vec<Arc<LogFile>>,
    /// Where losses are counted.
    pub stats: Arc<StatsCell>,
    /// For diagnostics only.
    pub label: String,
    /// Bumped when the daemon is about to replace itself: write the partial
    /// line held now (ended with a newline) rather than lose it.
    pub flush: tokio::sync::watch::Receiver<u64>,
}

impl Pump {
    /// Drains `fd` until EOF (or a read error), writing every line.
    pub async fn run(mut self, fd: OwnedFd) {
        let rx = match pipe::Receiver::from_owned_fd(fd) {
            Ok(rx) => rx,
            Err(e) => {
                tracing::warn!(stream = %self.label, error = %e, "cannot read app output: not a pipe");
                return;
            }
        };
        let mut lb = LineBuf::default();
        loop {
            let readable = tokio::select! {
                r = rx.readable() => r,
                Ok(()) = self.flush.changed() => {
                    lb.finish();
                    self.emit(lb.complete());
                    lb.consume();
                    continue;
                }
            };
            let eof = match readable {
                Ok(()) => fill(&rx, &mut lb, &self.label),
                Err(e) => {
                    tracing::warn!(stream = %self.label, error = %e, "waiting for app output failed");
                    true
                }
            };
            if eof {
                lb.finish();
            }
            self.emit(lb.complete());
            lb.consume();
            if eof {
                return;
            }
        }
    }

    fn emit(&mut self, lines: &[u8]) {
        if lines.is_empty() || self.targets.is_empty() {
            return;
        }
        let bytes = self.formatter.format(lines);
        let mut failed = None;
        for file in &self.targets {
            if let Err(e) = file.write(bytes) {
                failed = Some(e);
            }
        }
        if let Some(e) = failed {
            let n = memchr::memchr_iter(b'\n', lines).count() as u64;
            self.stats.record_loss(n, e.to_string());
        }
    }
}

/// Reads what the pipe holds (up to the buffer's room); true at EOF.
fn fill(rx: &pipe::Receiver, lb: &mut LineBuf, label: &str) -> bool {
    while lb.has_room() {
        match rx.try_read(lb.spare()) {
            Ok(0) => return true,
            Ok(n) => {
                lb.commit(n);
                if n < READ_SIZE {
                    // The pipe is (nearly) empty: write now rather than wait.
                    return false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(stream = %label, error = %e, "reading app output failed");
                return true;
            }
        }
    }
    false
}
