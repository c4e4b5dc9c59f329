//! Watching the directories that hold app specs (conf.d and the state dir's
//! `apps/`), reduced to one signal: "something may have changed, rescan".
//!
//! Event paths are not trusted (editors rename temp files, `ln -sfn` swaps a
//! link); any event but a read means a rescan, and the rescan diffs by spec
//! hash, so spurious events cost a directory read and nothing else. Each
//! directory's parent is watched too: a watch on a symlinked conf.d stays on
//! the old target after an `ln -sfn` swap, and only the parent sees it; the
//! daemon then calls [`ConfigWatcher::refresh`] to follow the link anew.

use std::path::{Path, PathBuf};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

pub struct ConfigWatcher {
    watcher: RecommendedWatcher,
    dirs: Vec<PathBuf>,
    watched: Vec<PathBuf>,
    /// What each dir resolved to when last watched; a watch is re-made only
    /// when this changes (re-making it needlessly would itself produce
    /// events, and so endless rescans).
    resolved: Vec<Option<PathBuf>>,
}

impl ConfigWatcher {
    /// Starts watching `dirs` (and their parents); every relevant event
    /// sends `()` on `tx`.
    pub fn new(dirs: Vec<PathBuf>, tx: mpsc::UnboundedSender<()>) -> notify::Result<ConfigWatcher> {
        let relevant = dirs.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            // procd's own reads of the files would otherwise retrigger it.
            Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
            // The parents are watched for swaps of the dirs themselves; other
            // files there (a log next to conf.d) must not cause rescans.
            Ok(event) if !event.paths.is_empty() && !event.paths.iter().any(|p| concerns(&relevant, p)) => {}
            Ok(_) => {
                let _ = tx.send(());
            }
            Err(e) => {
                tracing::warn!("config watch error: {e}; rescanning");
                let _ = tx.send(());
            }
        })?;
        let mut me = ConfigWatcher { watcher, dirs, watched: Vec::new(), resolved: Vec::new() };
        me.rewatch();
        Ok(me)
    }

    /// Re-establishes every watch, following symlinks to their current
    /// targets. A directory that does not exist (yet) is skipped; its
    /// parent's watch reports its creation.
    pub fn refresh(&mut self) {
        if self.dirs.iter().map(|d| d.canonicalize().ok()).collect::<Vec<_>>() != self.resolved {
            self.rewatch();
        }
    }

    fn rewatch(&mut self) {
        self.resolved = self.dirs.iter().map(|d| d.canonicalize().ok()).collect();
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

/// Whether an event at `path` can change what the spec dirs hold: the dir
/// itself (created, removed, swapped) or an entry directly in it.
fn concerns(dirs: &[PathBuf], path: &Path) -> bool {
    dirs.iter().any(|d| path == d || path.parent() == Some(d.as_path()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_dirs_and_their_entries_matter() {
        let dirs = [PathBuf::from("/etc/procd/conf.d"), PathBuf::from("/var/lib/procd/apps")];
        let cases = [
            ("/etc/procd/conf.d", true),
            ("/etc/procd/conf.d/web.kdl", true),
            ("/var/lib/procd/apps/api.kdl", true),
            ("/etc/procd/daemon.log", false),
            ("/var/lib/procd/state.json", false),
            ("/etc/procd/conf.d/sub/x.kdl", false),
        ];
        for (path, want) in cases {
            assert_eq!(concerns(&dirs, Path::new(path)), want, "{path}");
        }
    }
}
