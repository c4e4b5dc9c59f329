//! Watching the directories that hold app specs (conf.d and the state dir's
//! `apps/`), reduced to one signal: "something may have changed, rescan".
//!
//! Event paths are not trusted (editors rename temp files, `ln -sfn` swaps a
//! link); any event but a read means a rescan, and the rescan diffs by spec
//! hash, so spurious events cost a directory read and nothing else. Each
//! directory's parent is watched too: a watch on a symlinked conf.d stays on
//! the old target after an `ln -sfn` swap, and only the parent sees it; the
//! daemon then calls [`ConfigWatcher::refresh`] to follow the link anew.

use std::path::PathBuf;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

pub struct ConfigWatcher {
    watcher: RecommendedWatcher,
    dirs: Vec<PathBuf>,
    watched: Vec<PathBuf>,
}

impl ConfigWatcher {
    /// Starts watching `dirs` (and their parents); every relevant event
    /// sends `()` on `tx`.
    pub fn new(dirs: Vec<PathBuf>, tx: mpsc::UnboundedSender<()>) -> notify::Result<ConfigWatcher> {
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            // procd's own reads of the files would otherwise retrigger it.
            Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
            Ok(_) => {
                let _ = tx.send(());
            }
            Err(e) => {
                tracing::warn!("config watch error: {e}; rescanning");
                let _ = tx.send(());
            }
        })?;
        let mut me = ConfigWatcher { watcher, dirs, watched: Vec::new() };
        me.refresh();
        Ok(me)
    }

    /// Re-establishes every watch, following symlinks to their current
    /// targets. A directory that does not exist (yet) is skipped; its
    /// parent's watch reports its creation.
    pub fn refresh(&mut self) {
        for path in self.watched.drain(..) {
            let _ = self.watcher.unwatch(&path);
        }
        let mut targets = Vec::new();
        for dir in &self.dirs {
            targets.push(dir.clone());
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                targets.push(parent.to_path_buf());
            }
        }
        targets.sort();
        targets.dedup();
        for path in targets {
            match self.watcher.watch(&path, RecursiveMode::NonRecursive) {
                Ok(()) => self.watched.push(path),
                Err(e) => tracing::debug!("not watching {}: {e}", path.display()),
            }
        }
    }
}
