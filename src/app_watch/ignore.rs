//! Which changed paths must not restart an app: the spec's ignore globs,
//! `.git` and `node_modules` always, and the app's own log files (with their
//! rotated generations). Pure apart from one `realpath` when a changed file
//! has a log file's name, so it is tested with plain paths.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};

use super::AppWatchError;

/// Directory names ignored whatever the spec says: version-control churn and
/// package installs would otherwise restart the app in a loop.
const ALWAYS_IGNORED: [&str; 2] = [".git", "node_modules"];

/// The compiled ignore rules of one app.
#[derive(Debug)]
pub(super) struct IgnoreRules {
    /// The spec's globs, matched against the path relative to its watched
    /// root and against each of that path's components.
    globs: GlobSet,
    /// The app's log files: writing them must never restart the app.
    own_files: Vec<OwnFile>,
}

/// One of the app's log files, split so a change is compared by name first
/// and the directory (possibly reached through a symlink) only on a match.
#[derive(Debug)]
struct OwnFile {
    dir: PathBuf,
    /// `dir` with symlinks resolved, when it exists.
    canonical_dir: Option<PathBuf>,
    name: OsString,
}

impl IgnoreRules {
    /// Compiles `globs`; an invalid glob is an error naming it.
    pub(super) fn new(globs: &[String], own_files: Vec<PathBuf>) -> Result<IgnoreRules, AppWatchError> {
        let mut builder = GlobSetBuilder::new();
        for glob in globs {
            let compiled =
                Glob::new(glob).map_err(|source| AppWatchError::InvalidGlob { glob: glob.clone(), source })?;
            builder.add(compiled);
        }
        let globs = builder.build().map_err(|source| AppWatchError::InvalidGlob { glob: globs.join(", "), source })?;
        let own_files = own_files
            .into_iter()
            .filter_map(|path| {
                let (dir, name) = (path.parent()?.to_path_buf(), path.file_name()?.to_os_string());
                let canonical_dir = std::fs::canonicalize(&dir).ok();
                Some(OwnFile { dir, canonical_dir, name })
            })
            .collect();
        Ok(IgnoreRules { globs, own_files })
    }

    /// Whether a change of `path`, found under the watched `root`, is to be
    /// ignored. The root itself is never ignored by a glob: the operator
    /// named it.
    pub(super) fn is_ignored(&self, root: &Path, path: &Path) -> bool {
        if self.is_own_file(path) {
            return true;
        }
        let relative = path.strip_prefix(root).unwrap_or(path);
        if relative.as_os_str().is_empty() {
            return false;
        }
        let component_ignored = relative.components().any(|c| match c {
            Component::Normal(name) => ALWAYS_IGNORED.iter().any(|d| name == *d) || self.globs.is_match(name),
            _ => false,
        });
        component_ignored || self.globs.is_match(relative)
    }

    /// A log file or one of its rotated generations (`out.log.1`,
    /// `out.log.1.gz`, the compressor's temp file): rotation renames would
    /// otherwise restart the app at every rotation.
    fn is_own_file(&self, path: &Path) -> bool {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return false;
        };
        self.own_files.iter().any(|own| {
            is_own_name(&own.name, name)
                && (dir == own.dir
                    || own.canonical_dir.is_some() && std::fs::canonicalize(dir).ok() == own.canonical_dir)
        })
    }
}

/// `name` is `own` or `own` followed by a `.suffix`.
fn is_own_name(own: &OsStr, name: &OsStr) -> bool {
    let (own, name) = (own.as_bytes(), name.as_bytes());
    name.starts_with(own) && (name.len() == own.len() || name[own.len()] == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(globs: &[&str], own: &[&str]) -> IgnoreRules {
        let globs: Vec<String> = globs.iter().map(|g| g.to_string()).collect();
        IgnoreRules::new(&globs, own.iter().map(PathBuf::from).collect()).unwrap()
    }

    #[test]
    fn globs_match_the_relative_path_and_each_component() {
        let r = rules(&["dist", "*.log", "src/*.tmp"], &[]);
        let root = Path::new("/app");
        for ignored in ["/app/dist/a.js", "/app/x/dist/b", "/app/a.log", "/app/deep/er/b.log", "/app/src/x.tmp"] {
            assert!(r.is_ignored(root, Path::new(ignored)), "{ignored} should be ignored");
        }
        for kept in ["/app/distant.js", "/app/src/a.js", "/app/a.log.js", "/app"] {
            assert!(!r.is_ignored(root, Path::new(kept)), "{kept} should not be ignored");
        }
    }

    #[test]
    fn git_and_node_modules_are_always_ignored() {
        let r = rules(&[], &[]);
        let root = Path::new("/app");
        assert!(r.is_ignored(root, Path::new("/app/.git/index")));
        assert!(r.is_ignored(root, Path::new("/app/web/node_modules/x/y.js")));
        assert!(!r.is_ignored(root, Path::new("/app/.github/ci.yml")));
    }

    #[test]
    fn own_log_files_and_their_rotations_are_ignored() {
        let r = rules(&[], &["/app/logs/out.log"]);
        let root = Path::new("/app");
        for ignored in ["/app/logs/out.log", "/app/logs/out.log.1", "/app/logs/out.log.2.gz"] {
            assert!(r.is_ignored(root, Path::new(ignored)), "{ignored} should be ignored");
        }
        for kept in ["/app/logs/out.log2", "/app/other/out.log", "/app/logs/err.log"] {
            assert!(!r.is_ignored(root, Path::new(kept)), "{kept} should not be ignored");
        }
    }

    #[test]
    fn an_invalid_glob_is_named_in_the_error() {
        let err = IgnoreRules::new(&["a[".to_string()], Vec::new()).unwrap_err();
        assert!(err.to_string().contains("a["), "{err}");
    }
}
