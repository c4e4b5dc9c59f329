//! One log file on disk, shared by every stream that writes to it: appending
//! whole chunks of lines, rotating by size, reopening by path, truncating,
//! and surviving write failures.
//!
//! Every write happens under one lock with one `write()` on an `O_APPEND`
//! descriptor, so chunks of different instances (merge) or of stdout and
//! stderr (combined) never interleave mid-line. Regular-file writes are
//! short and are done inline on the runtime thread: moving them to a blocking
//! pool would cost more than the write.
//!
//! A failure (EACCES, ENOSPC, a vanished directory...) drops the descriptor
//! and *suspends* the file for [`RETRY_AFTER`]: writes during that time fail
//! at once without touching the disk, so the pumps keep draining pipes and
//! the app is never blocked; the first write after it reopens the path.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::logs::rotate::{self, Generation};
use crate::spec::model::RotateSpec;

/// How long a failing file is left alone before writing is tried again.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why a chunk did not reach a file; the pump counts its lines as lost.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot write {}: {message}", path.display())]
pub struct LogFileError {
    /// The file that failed.
    pub path: PathBuf,
    /// The OS error of the latest attempt (repeated while suspended).
    pub message: String,
}

/// A shared, appending, rotating log file.
pub struct LogFile {
    /// Where the file lives; reopen and rotation always go back to it.
    path: PathBuf,
    /// Rotation count, shared with compression threads (see `rotate`).
    generation: Generation,
    /// The daemon's own log must not log about itself (it would recurse).
    quiet: bool,
    state: Mutex<State>,
}

struct State {
    /// `None` until first opened, after a failure, or after `reopen`.
    file: Option<File>,
    /// Bytes in the live file, to decide rotation without a `stat` per write.
    size: u64,
    rotate: Option<RotateSpec>,
    /// Set for the length of a failure episode.
    failure: Option<Failure>,
}

struct Failure {
    message: String,
    retry_at: Instant,
}

impl LogFile {
    /// A file at `path`, opened lazily on the first write.
    pub fn new(path: PathBuf, rotate: Option<RotateSpec>, quiet: bool) -> LogFile {
        LogFile {
            path,
            generation: Arc::default(),
            quiet,
            state: Mutex::new(State { file: None, size: 0, rotate, failure: None }),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the rotation policy (the latest spec attached wins).
    pub fn set_rotate(&self, rotate: Option<RotateSpec>) {
        self.lock().rotate = rotate;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `data`, which holds whole lines; rotation happens between
    /// lines, never inside one.
    pub fn write(&self, data: &[u8]) -> Result<(), LogFileError> {
        let mut st = self.lock();
        let now = Instant::now();
        if let Some(f) = &st.failure
            && now < f.retry_at
        {
            return Err(LogFileError { path: self.path.clone(), message: f.message.clone() });
        }
        match self.write_lines(&mut st, data) {
            Ok(()) => {
                if st.failure.take().is_some() && !self.quiet {
                    tracing::info!(path = %self.path.display(), "log file writable again");
                }
                Ok(())
            }
            Err(e) => {
                st.file = None;
                let kept = e.to_string();
                let first = st.failure.is_none();
                st.failure = Some(Failure { message: kept.clone(), retry_at: now + RETRY_AFTER });
                drop(st);
                if first && !self.quiet {
                    tracing::warn!(path = %self.path.display(), error = %kept,
                        "cannot write log file; lines are counted as lost and writing is retried every second");
                }
                Err(LogFileError { path: self.path.clone(), message: kept })
            }
        }
    }

    fn write_lines(&self, st: &mut State, mut rest: &[u8]) -> io::Result<()> {
        while !rest.is_empty() {
            if st.file.is_none() {
                self.open(st)?;
            }
            let take = match &st.rotate {
                None => rest.len(),
                Some(r) => take_within(rest, r.size.saturating_sub(st.size), st.size == 0),
            };
            if take > 0 {
                if let Some(f) = st.file.as_mut() {
                    f.write_all(&rest[..take])?;
                }
                st.size += take as u64;
                rest = &rest[take..];
            }
            if !rest.is_empty() {
                self.rotate(st)?;
            }
        }
        Ok(())
    }

    fn open(&self, st: &mut State) -> io::Result<()> {
        if let Some(dir) = self.path.parent()
            && !dir.as_os_str().is_empty()
            && !dir.exists()
        {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().append(true).create(true).open(&self.path)?;
        st.size = file.metadata()?.len();
        st.file = Some(file);
        Ok(())
    }

    fn rotate(&self, st: &mut State) -> io::Result<()> {
        let Some(spec) = st.rotate.clone() else {
            return Ok(());
        };
        st.file = None;
        {
            let mut gen_lock = self.generation.lock().unwrap_or_else(PoisonError::into_inner);
            rotate::shift(&self.path, spec.keep)?;
            *gen_lock += 1;
            if spec.compress && spec.keep > 0 {
                // Opened now, before another rotation can move the name.
                if let Ok(src) = File::open(rotate::rotated_path(&self.path, 1)) {
                    let (path, generation) = (self.path.clone(), self.generation.clone());
                    rotate::spawn_compress(path, src, generation, *gen_lock, spec.keep);
                }
            }
        }
        self.open(st)
    }

    /// Closes the descriptor and opens the path again (after an external
    /// logrotate moved the file); a suspended file is retried at once.
    pub fn reopen(&self) {
        let mut st = self.lock();
        st.file = None;
        if let Some(f) = st.failure.as_mut() {
            f.retry_at = Instant::now();
        }
        // An error here is met again, and reported, by the next write.
        let _ = self.open(&mut st);
    }

    /// Empties the file and removes its rotated generations.
    pub fn truncate(&self) -> io::Result<()> {
        let mut st = self.lock();
        match st.file.as_ref() {
            Some(f) => f.set_len(0)?,
            None => truncate_path(&self.path)?,
        }
        st.size = 0;
        // Any compression still running now finds its generation gone.
        let mut gen_lock = self.generation.lock().unwrap_or_else(PoisonError::into_inner);
        *gen_lock += u64::from(u32::MAX) + 1;
        rotate::remove_generations(&self.path)
    }
}

/// Truncates a file that no pump has open, if it exists.
pub fn truncate_path(path: &Path) -> io::Result<()> {
    match OpenOptions::new().write(true).open(path) {
        Ok(f) => f.set_len(0),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// How many bytes of `rest` (whole lines) fit in `room`. A fresh file takes
/// at least one line even if it is larger than the rotation size: a line is
/// never split across files.
fn take_within(rest: &[u8], room: u64, fresh: bool) -> usize {
    if rest.len() as u64 <= room {
        return rest.len();
    }
    let room = usize::try_from(room).unwrap_or(usize::MAX).min(rest.len());
    match memchr::memrchr(b'\n', &rest[..room]) {
        Some(i) => i + 1,
        None if fresh => memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1),
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::take_within;

    #[test]
    fn take_within_keeps_lines_whole() {
        assert_eq!(take_within(b"ab\ncd\n", 10, false), 6);
        assert_eq!(take_within(b"ab\ncd\n", 4, false), 3);
        assert_eq!(take_within(b"ab\ncd\n", 2, false), 0);
        assert_eq!(take_within(b"abcdef\ngh\n", 3, true), 7);
    }
}
