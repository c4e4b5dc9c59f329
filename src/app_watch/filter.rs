//! What an app's watch reacts to: the validated roots, and the decision,
//! made on notify's thread for each event, whether it is a change and
//! whether it brought a new directory to watch.

use std::path::{Path, PathBuf};

use notify::event::ModifyKind;
use notify::{Event, EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc::UnboundedSender;

use super::ignore::IgnoreRules;
use super::{AppWatchError, tree};
use crate::spec::WatchSpec;

/// One watched path, as validated at start.
#[derive(Debug)]
pub(super) struct Root {
    pub(super) path: PathBuf,
    /// A single file is watched through its parent directory: editors
    /// replace files by renaming, which a watch on the file itself would
    /// miss after the first save.
    pub(super) is_dir: bool,
}

/// A relevant change, from notify's thread to the debounce task.
#[derive(Debug)]
pub(super) struct Change {
    pub(super) path: PathBuf,
    /// `path` is a new directory (or the tree may have been missed, after an
    /// inotify overflow) and needs watches.
    pub(super) walk: bool,
}

/// What notify's callback needs to decide whether an event matters.
#[derive(Debug)]
pub(super) struct Filter {
    pub(super) roots: Vec<Root>,
    pub(super) rules: IgnoreRules,
    pub(super) follow_symlinks: bool,
    poll: bool,
}

impl Filter {
    pub(super) fn new(spec: &WatchSpec, own_files: Vec<PathBuf>) -> Result<Filter, AppWatchError> {
        let rules = IgnoreRules::new(&spec.ignore, own_files)?;
        let roots = spec
            .paths
            .iter()
            .map(|path| match std::fs::metadata(path) {
                Ok(meta) => Ok(Root { path: path.clone(), is_dir: meta.is_dir() }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(AppWatchError::Missing { path: path.clone() })
                }
                Err(source) => Err(AppWatchError::Read { path: path.clone(), source }),
            })
            .collect::<Result<_, _>>()?;
        Ok(Filter { roots, rules, follow_symlinks: spec.follow_symlinks, poll: spec.poll })
    }

    pub(super) fn init_error(&self, source: notify::Error) -> AppWatchError {
        let path = self.roots.first().map(|r| r.path.clone()).unwrap_or_default();
        AppWatchError::Watch { path, source }
    }

    /// Watches a root's tree, and the directory holding the root: a file is
    /// watched only through it, and for a directory it is the only watch
    /// that sees the root itself replaced (`rm -rf dist && mkdir dist`, or
    /// `ln -sfn` swapping a symlinked root), which then gets walked anew.
    pub(super) fn watch_root(&self, watcher: &mut dyn Watcher, root: &Root) -> Result<(), AppWatchError> {
        let parent = root.path.parent().unwrap_or(Path::new("/"));
        if !root.is_dir {
            let watched = watcher.watch(parent, RecursiveMode::NonRecursive);
            return watched.map_err(|e| AppWatchError::from_notify(parent, e));
        }
        tree::watch_tree(watcher, &root.path, &root.path, &self.rules, self.follow_symlinks)?;
        // Only a safety net for a directory root: not fatal (`/` has no parent).
        if let Err(e) = watcher.watch(parent, RecursiveMode::NonRecursive) {
            tracing::debug!("not watching {} for replacements of {}: {e}", parent.display(), root.path.display());
        }
        Ok(())
    }

    /// The watched root `path` lies in, if any (a file root's parent also
    /// reports its siblings, which are not watched).
    pub(super) fn root_of(&self, path: &Path) -> Option<&Root> {
        self.roots.iter().find(|r| if r.is_dir { path.starts_with(&r.path) } else { path == r.path })
    }

    /// notify's callback: runs on notify's thread, never blocks on the runtime.
    pub(super) fn forward(&self, res: notify::Result<Event>, changes: &UnboundedSender<Change>) {
        let event = match res {
            Ok(event) => event,
            Err(e) => return tracing::warn!("file watch error: {e}"),
        };
        if event.need_rescan() {
            // The kernel dropped events: some change (maybe a new directory)
            // was missed. Count it as a change and re-walk every tree.
            for root in self.roots.iter().filter(|r| r.is_dir) {
                let _ = changes.send(Change { path: root.path.clone(), walk: !self.poll });
            }
            return;
        }
        // Opens and reads (even by the app itself) are not changes.
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        for path in event.paths {
            let Some(root) = self.root_of(&path) else { continue };
            if self.rules.is_ignored(&root.path, &path) {
                continue;
            }
            // A poller sees a directory's mtime move with every entry added
            // or removed, which is reported on its own and names the file.
            if self.poll && matches!(event.kind, EventKind::Modify(_)) && path.is_dir() {
                continue;
            }
            let walk = !self.poll && self.is_new_dir(&event.kind, &path);
            let _ = changes.send(Change { path, walk });
        }
    }

    /// A directory created or moved into the tree, that must be walked.
    fn is_new_dir(&self, kind: &EventKind, path: &Path) -> bool {
        if !matches!(kind, EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(_))) {
            return false;
        }
        // A root is followed even if it is a symlink: the operator named it.
        let follow = self.follow_symlinks || self.roots.iter().any(|r| r.path == path);
        let is_dir = if follow { std::fs::metadata(path) } else { std::fs::symlink_metadata(path) };
        is_dir.is_ok_and(|meta| meta.is_dir())
    }
}
