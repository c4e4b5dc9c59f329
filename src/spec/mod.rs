//! App specs: from conf.d KDL files to validated, hashed [`AppSpec`]s.
//!
//! `decode` turns one `KdlDocument` into app declarations, collecting every
//! error with its line and column; `resolve` applies the env profile, reads
//! env files and finds interpreters; `hash` gives the canonical [`SpecHash`];
//! `load` reads whole directories and keeps the last good apps of a file that
//! became invalid.

pub mod model;

pub use model::*;

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// One problem in a spec file, located precisely enough for an editor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpecError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem concerns the whole file (unreadable).
    pub line: usize,
    /// 1-based; 0 when the problem concerns the whole file.
    pub column: usize,
    pub message: String,
}

impl fmt::Display for SpecError {
    /// `FILE:LINE:COL: message`, the form compilers use and editors jump to.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}
