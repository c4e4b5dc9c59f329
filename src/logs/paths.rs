//! Which files an instance's streams go to.
//!
//! # Naming rule
//!
//! - Defaults live in the log dir: `<app>-out.log` and `<app>-err.log`; no
//!   combined file unless `combined` is given.
//! - Instance 0 always uses the plain name; instance N ≥ 1 inserts `-N`
//!   before the extension (`web-out-2.log`, `/var/log/web.out-2.log`) unless
//!   `merge true`, where every instance shares the plain names. Keeping index
//!   0 unsuffixed gives a single-instance app PM2's fork-mode names and keeps
//!   instance 0's file stable when the app is scaled, without the path
//!   depending on the instance count.
//! - Explicit paths follow the same rule; a relative one is taken from the
//!   log dir. `"/dev/null"` disables the stream (its pipe is still drained).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::spec::model::LogSpec;

/// The files one instance writes; `None` means the stream is not written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogPaths {
    /// Where stdout lines go.
    pub out: Option<PathBuf>,
    /// Where stderr lines go.
    pub err: Option<PathBuf>,
    /// Where both go, interleaved by whole chunks of lines.
    pub combined: Option<PathBuf>,
}

/// Applies the naming rule above.
pub fn resolve(log_dir: &Path, app: &str, index: u32, spec: &LogSpec) -> LogPaths {
    let safe_app = app.replace('/', "_");
    let suffix = (!spec.merge && index > 0).then_some(index);
    let pick = |explicit: Option<&PathBuf>, default: Option<String>| -> Option<PathBuf> {
        let path = match explicit {
            Some(p) if p == Path::new("/dev/null") => return None,
            Some(p) => log_dir.join(p),
            None => log_dir.join(default?),
        };
        Some(match suffix {
            Some(i) => with_index(&path, i),
            None => path,
        })
    };
    LogPaths {
        out: pick(spec.out.as_ref(), Some(format!("{safe_app}-out.log"))),
        err: pick(spec.err.as_ref(), Some(format!("{safe_app}-err.log"))),
        combined: pick(spec.combined.as_ref(), None),
    }
}

/// `dir/name.ext` → `dir/name-N.ext` (`dir/name` → `dir/name-N`).
fn with_index(path: &Path, index: u32) -> PathBuf {
    let mut name = OsString::from(path.file_stem().unwrap_or_default());
    name.push(format!("-{index}"));
    if let Some(ext) = path.extension() {
        name.push(".");
        name.push(ext);
    }
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(merge: bool, out: Option<&str>, combined: Option<&str>) -> LogSpec {
        LogSpec { merge, out: out.map(PathBuf::from), combined: combined.map(PathBuf::from), ..LogSpec::default() }
    }

    #[test]
    fn naming_rule_table() {
        let d = Path::new("/logs");
        let p = |app, i, s: &LogSpec| resolve(d, app, i, s);
        let def = spec(false, None, None);
        assert_eq!(p("web", 0, &def).out.unwrap(), Path::new("/logs/web-out.log"));
        assert_eq!(p("web", 2, &def).err.unwrap(), Path::new("/logs/web-err-2.log"));
        assert_eq!(p("web", 0, &def).combined, None);
        assert_eq!(p("web", 3, &spec(true, None, None)).out.unwrap(), Path::new("/logs/web-out.log"));
        let exp = spec(false, Some("/var/log/web.out.log"), Some("all"));
        assert_eq!(p("web", 1, &exp).out.unwrap(), Path::new("/var/log/web.out-1.log"));
        assert_eq!(p("web", 1, &exp).combined.unwrap(), Path::new("/logs/all-1"));
        assert_eq!(p("web", 1, &spec(false, Some("/dev/null"), None)).out, None);
    }
}
