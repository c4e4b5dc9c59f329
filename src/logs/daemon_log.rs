//! The daemon's own tracing log: `<log_dir>/procd.log`, rotated by size
//! (10 MiB × 3 by default) through the same [`LogFile`] the apps use.
//!
//! Combine it with stderr in the foreground:
//! `fmt().with_writer(DaemonLog::new(dir).and(std::io::stderr))`
//! (`tracing_subscriber::fmt::writer::MakeWriterExt`).
//!
//! The file is *quiet*: a failure to write the daemon log is not itself
//! logged, which would recurse into this writer. Events are dropped while the
//! file cannot be written; stderr still gets them.

use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use tracing_subscriber::fmt::MakeWriter;

use crate::logs::file::LogFile;
use crate::spec::model::RotateSpec;

/// Rotation size of `procd.log`.
pub const DAEMON_LOG_SIZE: u64 = 10 * 1024 * 1024;
/// Rotated generations of `procd.log` kept.
pub const DAEMON_LOG_KEEP: u32 = 3;

/// A `MakeWriter` appending to `procd.log` with size rotation.
#[derive(Clone)]
pub struct DaemonLog {
    file: Arc<LogFile>,
}

impl DaemonLog {
    /// Writes to `<log_dir>/procd.log` (the dir is created on first write).
    pub fn new(log_dir: &Path) -> DaemonLog {
        DaemonLog::with_rotation(log_dir, DAEMON_LOG_SIZE, DAEMON_LOG_KEEP)
    }

    /// Same with a chosen rotation (tests use small sizes).
    pub fn with_rotation(log_dir: &Path, size: u64, keep: u32) -> DaemonLog {
        let rotate = RotateSpec { size, keep, compress: false };
        DaemonLog { file: Arc::new(LogFile::new(log_dir.join("procd.log"), Some(rotate), true)) }
    }

    /// Reopens `procd.log` by path (with the apps' files on reload-logs).
    pub fn reopen(&self) {
        self.file.reopen();
    }
}

/// One event's writer. tracing's fmt layer formats an event into a buffer
/// and writes it in one call, so each event stays one whole line.
pub struct DaemonLogWriter<'a> {
    file: &'a LogFile,
}

impl Write for DaemonLogWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // A failed write is reported as done: the daemon must not stop or
        // retry in a loop because its own log file is unwritable.
        let _ = self.file.write(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for DaemonLog {
    type Writer = DaemonLogWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        DaemonLogWriter { file: &self.file }
    }
}
