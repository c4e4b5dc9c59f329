//! App output capture: every instance's stdout and stderr pipes, drained by
//! the daemon and written, line by line, to rotating log files; plus reading
//! those files back (`tail`) and the daemon's own log (`daemon_log`).
//!
//! # Theory of operation
//!
//! [`LogHub::attach`] spawns one task per instance that runs a [`sink::Pump`]
//! for each pipe. A pump reads big chunks, keeps only whole lines
//! ([`lines`]), formats them per chunk ([`format`]) and appends them with one
//! `write()` to each target [`file::LogFile`]. Files are shared through the
//! hub's registry, keyed by path, so merged instances and the combined file
//! have one writer and one lock: lines never interleave mid-line. Rotation
//! ([`rotate`]) happens inside the file's write, between lines. A file that
//! cannot be written is suspended and retried every second; the pumps keep
//! draining and count lost lines ([`LogStats`]).
//!
//! The registry holds files weakly: a file closes when the last pump using
//! it ends, and the next attach reopens it.

pub mod daemon_log;
pub mod file;
pub mod format;
pub mod lines;
pub mod paths;
pub mod rotate;
pub mod sink;
pub mod tail;

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use crate::spec::model::{LogFormat, LogSpec};
use file::LogFile;
use format::{Formatter, Stream};
pub use paths::LogPaths;
use sink::{Pump, StatsCell};

/// What went wrong writing one instance's logs, for `status` and events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Lines that could not be written to at least one of their files.
    pub lines_lost: u64,
    /// The latest write error (`cannot write PATH: reason`), if any.
    pub last_error: Option<String>,
}

/// The daemon's registry of log files and pumps. Cheap to clone.
#[derive(Clone)]
pub struct LogHub {
    inner: Arc<Inner>,
}

struct Inner {
    /// Default location of log files.
    log_dir: PathBuf,
    /// Open files by path; weak so unused files close.
    files: Mutex<HashMap<PathBuf, Weak<LogFile>>>,
    /// Every path an app has been given, so `flush APP` finds them even
    /// while the app is stopped.
    app_paths: Mutex<HashMap<String, BTreeSet<PathBuf>>>,
    /// Loss accounting per (app, instance index).
    stats: Mutex<HashMap<(String, u32), Arc<StatsCell>>>,
    /// Tells every pump to write its partial line (see `flush_partial_lines`).
    flush: tokio::sync::watch::Sender<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LogHub {
    /// A hub whose default files live in `log_dir` (created on first write).
    pub fn new(log_dir: PathBuf) -> LogHub {
        LogHub {
            inner: Arc::new(Inner {
                log_dir,
                files: Mutex::default(),
                app_paths: Mutex::default(),
                stats: Mutex::default(),
                flush: tokio::sync::watch::channel(0).0,
            }),
        }
    }

    /// The files instance `index` of `app` writes (see [`paths`] for the rule).
    pub fn paths(&self, app: &str, index: u32, spec: &LogSpec) -> LogPaths {
        let p = paths::resolve(&self.inner.log_dir, app, index, spec);
        let mut apps = lock(&self.inner.app_paths);
        let set = apps.entry(app.to_owned()).or_default();
        set.extend([&p.out, &p.err, &p.combined].into_iter().flatten().cloned());
        p
    }

    /// Spawns, on the current tokio runtime, the pumps draining both pipes.
    /// The handle completes when both reached EOF and every line is written
    /// (a partial last line is written with a '\n' added).
    pub fn attach(
        &self,
        app: &str,
        index: u32,
        spec: &LogSpec,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> tokio::task::JoinHandle<()> {
        let p = self.paths(app, index, spec);
        let combined = p.combined.as_ref().map(|c| self.file(c, spec));
        let stats = lock(&self.inner.stats).entry((app.to_owned(), index)).or_default().clone();
        let pump = |stream: Stream, own: &Option<PathBuf>| {
            let targets = own.as_ref().map(|o| self.file(o, spec)).into_iter().chain(combined.clone()).collect();
            let formatter = match (spec.format, &spec.timestamp) {
                (LogFormat::Json, _) => Formatter::json(app, index, stream),
                (LogFormat::Plain, Some(ts)) => Formatter::timestamped(ts),
                (LogFormat::Plain, None) => Formatter::plain(),
            };
            let label = format!("{app}:{index}:{}", stream.as_str());
            Pump { formatter, targets, stats: stats.clone(), label, flush: self.inner.flush.subscribe() }
        };
        let (out, err) = (pump(Stream::Out, &p.out), pump(Stream::Err, &p.err));
        tokio::spawn(async move {
            tokio::join!(out.run(stdout), err.run(stderr));
        })
    }

    /// The shared file at `path`, opening a registry entry if none is live.
    fn file(&self, path: &PathBuf, spec: &LogSpec) -> Arc<LogFile> {
        let mut files = lock(&self.inner.files);
        if let Some(f) = files.get(path).and_then(Weak::upgrade) {
            f.set_rotate(spec.rotate.clone());
            return f;
        }
        // Dead entries are pruned only when a file is opened, not on every
        // attach (every respawn).
        files.retain(|_, w| w.strong_count() > 0);
        let f = Arc::new(LogFile::new(path.clone(), spec.rotate.clone(), false));
        files.insert(path.clone(), Arc::downgrade(&f));
        f
    }

    fn live_files(&self) -> Vec<Arc<LogFile>> {
        lock(&self.inner.files).values().filter_map(Weak::upgrade).collect()
    }

    /// Writes every pump's partial line (what an app wrote without a
    /// newline yet), ended with a newline, before the daemon replaces its
    /// image: the line is split in two in the file rather than lost. The
    /// pumps do it when they next run: yield to them after this.
    pub fn flush_partial_lines(&self) {
        self.inner.flush.send_modify(|n| *n += 1);
    }

    /// Reopens every open file by path (SIGUSR1, `procd reload-logs`), so
    /// writing continues in a fresh file after an external logrotate.
    pub fn reopen(&self) {
        for f in self.live_files() {
            f.reopen();
        }
    }

    /// Truncates the files of `app` (or of every app) and removes their
    /// rotated generations; returns the paths emptied. Files of stopped apps
    /// are truncated too. The first error stops the flush.
    pub fn flush(&self, app: Option<&str>) -> io::Result<Vec<PathBuf>> {
        let paths: BTreeSet<PathBuf> = {
            let apps = lock(&self.inner.app_paths);
            match app {
                Some(a) => apps.get(a).cloned().unwrap_or_default(),
                None => apps.values().flatten().cloned().collect(),
            }
        };
        let live: HashMap<PathBuf, Arc<LogFile>> =
            self.live_files().into_iter().map(|f| (f.path().to_owned(), f)).collect();
        let mut done = Vec::new();
        for path in paths {
            match live.get(&path) {
                Some(f) => f.truncate()?,
                None if path.exists() => {
                    file::truncate_path(&path)?;
                    rotate::remove_generations(&path)?;
                }
                None => continue,
            }
            done.push(path);
        }
        Ok(done)
    }

    /// Loss accounting of one instance (zero if it never lost a line).
    pub fn stats(&self, app: &str, index: u32) -> LogStats {
        match lock(&self.inner.stats).get(&(app.to_owned(), index)) {
            Some(s) => {
                LogStats { lines_lost: s.lines_lost.load(Ordering::Relaxed), last_error: lock(&s.last_error).clone() }
            }
            None => LogStats::default(),
        }
    }
}
