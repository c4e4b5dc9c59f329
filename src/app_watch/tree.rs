//! Watching a tree directory by directory. notify's recursive mode would put
//! an inotify watch on every directory, `node_modules` included, and the
//! limit is per user; walking the tree ourselves lets ignored directories
//! cost nothing.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use notify::{RecursiveMode, Watcher};

use super::AppWatchError;
use super::ignore::IgnoreRules;

/// Adds a non-recursive watch on `start` and on every directory below it
/// that is not ignored, `root` being the watched path `start` lies in.
/// Returns how many directories are now watched.
///
/// `start` failing is an error; a subdirectory that vanishes or cannot be
/// read mid-walk is skipped (its parent's watch reports what happens to
/// it), but hitting the inotify limit stops the walk, since every further
/// watch would fail too.
pub(super) fn watch_tree(
    watcher: &mut dyn Watcher,
    root: &Path,
    start: &Path,
    rules: &IgnoreRules,
    follow_symlinks: bool,
) -> Result<usize, AppWatchError> {
    // Directories already entered, by device and inode: with symlinks
    // followed, a link back up the tree would otherwise loop forever.
    let mut entered = HashSet::new();
    let mut pending = vec![start.to_path_buf()];
    let mut watched = 0;
    while let Some(dir) = pending.pop() {
        let is_start = dir == start;
        match watch_dir(watcher, &dir, &mut entered) {
            Ok(true) => watched += 1,
            Ok(false) => continue,
            Err(e) if is_start || matches!(e, AppWatchError::WatchLimit { .. }) => return Err(e),
            Err(e) => {
                tracing::debug!("not watching {}: {e}", dir.display());
                continue;
            }
        }
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if is_start => return Err(AppWatchError::Read { path: dir, source: e }),
            Err(e) => {
                tracing::debug!("not descending into {}: {e}", dir.display());
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if is_subdir(&entry, follow_symlinks) && !rules.is_ignored(root, &path) {
                pending.push(path);
            }
        }
    }
    Ok(watched)
}

/// Watches one directory unless it was entered already (returns false then).
fn watch_dir(
    watcher: &mut dyn Watcher,
    dir: &PathBuf,
    entered: &mut HashSet<(u64, u64)>,
) -> Result<bool, AppWatchError> {
    let meta = std::fs::metadata(dir).map_err(|source| AppWatchError::Read { path: dir.clone(), source })?;
    if !entered.insert((meta.dev(), meta.ino())) {
        return Ok(false);
    }
    watcher.watch(dir, RecursiveMode::NonRecursive).map_err(|e| AppWatchError::from_notify(dir, e))?;
    Ok(true)
}

/// A directory entry to descend into. A symlink to a directory is one only
/// when following symlinks; otherwise the link itself is still seen, as an
/// entry of its (watched) parent.
fn is_subdir(entry: &std::fs::DirEntry, follow_symlinks: bool) -> bool {
    match entry.file_type() {
        Ok(t) if t.is_dir() => true,
        Ok(t) if t.is_symlink() && follow_symlinks => entry.path().is_dir(),
        _ => false,
    }
}
