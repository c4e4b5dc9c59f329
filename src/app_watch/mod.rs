//! Restarting an app when its files change (PM2's `watch`): this module owns
//! the file watches of one app, the filtering of what changed (ignore globs,
//! `.git`, `node_modules`, the app's own logs, reads), and the debounce that
//! turns a burst of changes into one [`WatchEvent`].
//!
//! # Theory of Operation
//!
//! notify calls back on its own thread; the callback ([`filter`]) filters
//! the event (cheap, pure but for a `stat` on creations) and sends each
//! relevant path into an unbounded channel, so it never waits on the
//! runtime. One task per app drains the channel through [`debounce::Debounce`] and sends one
//! [`WatchEvent`] per burst. With inotify the tree is watched directory by
//! directory ([`tree`]); a directory created later is walked and watched on
//! the blocking pool, since adding watches waits on notify's thread. Files
//! written into it before its watch exists are not seen, but the creation
//! itself already counts as a change, so the restart is not lost.

mod debounce;
mod filter;
mod ignore;
mod tree;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use notify::{PollWatcher, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::spec::WatchSpec;
use debounce::Debounce;
use filter::{Change, Filter};

/// Poll mode re-reads the whole tree at every interval, which is what
/// network file systems cost; the interval is the debounce but never under
/// this, so a short debounce does not turn into a busy loop over a big tree.
const MIN_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// A change that should restart `app`: the first path that changed in the
/// debounce window, so the restart reason can name it.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchEvent {
    /// The app whose watched files changed.
    pub app: String,
    /// The first path that changed in the burst.
    pub path: PathBuf,
}

/// Why an app's files could not be watched. Each variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum AppWatchError {
    /// A watched path does not exist (a typo in `watch`, or not deployed yet).
    #[error("watched path {path} does not exist")]
    Missing { path: PathBuf },
    /// A watched path exists but could not be read.
    #[error("cannot read watched path {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// An `ignore` glob does not compile.
    #[error("invalid ignore glob {glob:?}: {source}")]
    InvalidGlob { glob: String, source: globset::Error },
    /// The per-user inotify limit is reached: the operator must ignore more
    /// of the tree, raise `fs.inotify.max_user_watches`, or poll.
    #[error("inotify watch limit reached at {path}: ignore more directories, raise the limit, or use `poll`")]
    WatchLimit { path: PathBuf },
    /// notify could not set up a watch.
    #[error("cannot watch {path}: {source}")]
    Watch { path: PathBuf, source: notify::Error },
}

impl AppWatchError {
    fn from_notify(path: &Path, source: notify::Error) -> AppWatchError {
        let path = path.to_path_buf();
        match source.kind {
            notify::ErrorKind::MaxFilesWatch => AppWatchError::WatchLimit { path },
            notify::ErrorKind::PathNotFound => AppWatchError::Missing { path },
            _ => AppWatchError::Watch { path, source },
        }
    }
}

/// The watches of one app and the task that debounces them. Dropping it
/// stops both: no [`WatchEvent`] is sent afterwards.
pub struct AppWatcher {
    /// The notify watcher. Shared (weakly) with the blocking jobs that watch
    /// new directories, so dropping this drops the watches at once.
    _watcher: Arc<Mutex<Box<dyn Watcher + Send>>>,
    /// The debounce task, aborted on drop so a pending burst is not sent.
    task: JoinHandle<()>,
}

impl AppWatcher {
    /// Starts watching `spec.paths` for `app`. `own_files` are paths never
    /// to react to (the app's log files). Must be called inside a tokio
    /// runtime (it spawns the debounce task).
    ///
    /// The initial walk is done before returning, so a change right after
    /// `start` is seen and a missing path is an error here; on a very big
    /// tree the caller may run `start` on the blocking pool.
    pub fn start(
        app: &str,
        spec: &WatchSpec,
        own_files: Vec<PathBuf>,
        tx: UnboundedSender<WatchEvent>,
    ) -> Result<AppWatcher, AppWatchError> {
        let filter = Arc::new(Filter::new(spec, own_files)?);
        let (changes_tx, changes_rx) = unbounded_channel();
        let handler = {
            let filter = Arc::clone(&filter);
            move |res| filter.forward(res, &changes_tx)
        };
        let watcher: Box<dyn Watcher + Send> = if spec.poll {
            let config = notify::Config::default()
                .with_poll_interval(spec.debounce.max(MIN_POLL_INTERVAL))
                .with_follow_symlinks(spec.follow_symlinks);
            let mut watcher = PollWatcher::new(handler, config).map_err(|e| filter.init_error(e))?;
            for root in &filter.roots {
                let mode = if root.is_dir { RecursiveMode::Recursive } else { RecursiveMode::NonRecursive };
                watcher.watch(&root.path, mode).map_err(|e| AppWatchError::from_notify(&root.path, e))?;
            }
            Box::new(watcher)
        } else {
            let mut watcher =
                RecommendedWatcher::new(handler, notify::Config::default()).map_err(|e| filter.init_error(e))?;
            for root in &filter.roots {
                filter.watch_root(&mut watcher, root)?;
            }
            Box::new(watcher)
        };
        let watcher = Arc::new(Mutex::new(watcher));
        let task = tokio::spawn(debounce_changes(
            app.to_string(),
            Arc::clone(&filter),
            Arc::downgrade(&watcher),
            changes_rx,
            tx,
            spec.debounce,
        ));
        Ok(AppWatcher { _watcher: watcher, task })
    }
}

impl Drop for AppWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The debounce task: one [`WatchEvent`] per burst of changes. Ends when
/// the watcher is dropped (the changes channel closes) or nobody listens.
async fn debounce_changes(
    app: String,
    filter: Arc<Filter>,
    watcher: Weak<Mutex<Box<dyn Watcher + Send>>>,
    mut changes: UnboundedReceiver<Change>,
    tx: UnboundedSender<WatchEvent>,
    quiet: Duration,
) {
    let mut debounce = Debounce::new(quiet);
    loop {
        let deadline = debounce.deadline();
        tokio::select! {
            change = changes.recv() => {
                let Some(change) = change else { return };
                if change.walk {
                    watch_new_dir(Arc::clone(&filter), watcher.clone(), change.path.clone());
                }
                debounce.change(change.path, Instant::now());
            }
            () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                if let Some(path) = debounce.take_due(Instant::now())
                    && tx.send(WatchEvent { app: app.clone(), path }).is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Watches a directory that appeared in the tree, on the blocking pool:
/// walking it and adding watches waits on the file system and on notify.
fn watch_new_dir(filter: Arc<Filter>, watcher: Weak<Mutex<Box<dyn Watcher + Send>>>, dir: PathBuf) {
    tokio::task::spawn_blocking(move || {
        let (Some(watcher), Some(root)) = (watcher.upgrade(), filter.root_of(&dir)) else { return };
        let mut watcher = watcher.lock().unwrap_or_else(PoisonError::into_inner);
        if dir == root.path {
            // A replaced root (a swapped symlink): drop the watch on the old
            // target, or its writes would still restart the app. Subdirs of
            // the old target keep theirs; they are rarely written again.
            let _ = watcher.unwatch(&dir);
        }
        if let Err(e) = tree::watch_tree(&mut **watcher, &root.path, &dir, &filter.rules, filter.follow_symlinks) {
            tracing::warn!("not watching new directory {}: {e}", dir.display());
        }
    });
}
