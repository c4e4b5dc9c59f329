//! Operator state that must survive a daemon restart: which apps an operator
//! stopped. Written atomically (temp file, fsync, rename, fsync of the
//! directory), so a crash or a full disk leaves either the old or the new
//! file, never a torn one. The conf.d files stay the source of truth: an
//! unreadable state file is reported and treated as empty, so every
//! declared app still starts.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Version of the state file's format; older files are kept as fixtures.
const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorState {
    pub version: u32,
    /// Apps stopped by `procd stop`; they stay stopped until `start`.
    pub stopped: BTreeSet<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("state file {path} is not valid: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

impl OperatorState {
    /// Loads the state; a missing file is an empty state.
    pub fn load(path: &Path) -> Result<OperatorState, StateError> {
        let text = match fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(OperatorState::default()),
            Err(source) => return Err(StateError::Read { path: path.to_path_buf(), source }),
        };
        serde_json::from_slice(&text).map_err(|source| StateError::Parse { path: path.to_path_buf(), source })
    }

    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let mut me = self.clone();
        me.version = STATE_VERSION;
        let mut bytes = serde_json::to_vec_pretty(&me).expect("state serializes");
        bytes.push(b'\n');
        write_atomic(path, &bytes)
    }
}

/// Replaces `path` with `bytes` so that readers and crashes only ever see the
/// old or the new content: write a temp file beside it, fsync, rename over,
/// fsync the directory. On failure the previous file is untouched and the
/// temp file removed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let err = |source| StateError::Write { path: path.to_path_buf(), source };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(err)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(OperatorState::load(&path).unwrap(), OperatorState::default());
        let mut s = OperatorState::default();
        s.stopped.insert("web".into());
        s.save(&path).unwrap();
        let back = OperatorState::load(&path).unwrap();
        assert_eq!(back.stopped, s.stopped);
        assert_eq!(back.version, STATE_VERSION);
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file left behind");
    }

    #[test]
    fn failed_write_keeps_the_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"old").unwrap();
        // A directory squatting on the temp name makes the write fail.
        let tmp = dir.path().join(format!(".state.json.tmp-{}", std::process::id()));
        fs::create_dir(&tmp).unwrap();
        assert!(write_atomic(&path, b"new").is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
    }

    #[test]
    fn corrupt_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, b"{not json").unwrap();
        assert!(matches!(OperatorState::load(&path), Err(StateError::Parse { .. })));
    }
}
