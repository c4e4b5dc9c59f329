//! App specs: from conf.d KDL files to validated, hashed [`AppSpec`]s.
//!
//! `decode` turns one `KdlDocument` into app declarations, collecting every
//! error with its line and column; `resolve` applies the env profile, reads
//! env files and finds interpreters; `hash` gives the canonical [`SpecHash`];
//! `load` reads whole directories and keeps the last good apps of a file that
//! became invalid.
//!
//! Helpers, private: `kdl_value` (spans to lines and columns, typed entry
//! access that records errors), `decode_blocks` (the `stop`, `restart` and
//! `logs` blocks), `decode_policies` (`max-memory`, `watch`), `decode_cluster`
//! (`listen`, `ready`, `rollout`), `env_file` (the `KEY=VALUE` format); public: `units`
//! (durations, sizes with PM2's powers of 1024, signal names).

pub mod decode;
mod decode_blocks;
mod decode_cluster;
mod decode_policies;
mod env_file;
pub mod hash;
mod kdl_value;
pub mod load;
pub mod model;
pub mod resolve;
pub mod units;

pub use decode::{AppDecl, CommandDecl, decode_document};
pub use decode_cluster::parse_listen_addr;
pub use hash::{changed_fields, spec_hash};
pub use kdl_value::{Located, Pos};
pub use load::{Loaded, Loader, SpecDir, check_paths, decode_file, is_spec_file, list_spec_files};
pub use model::*;
pub use resolve::{LoadOptions, resolve};

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One problem in a spec file, located precisely enough for an editor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
        write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.column, self.message)
    }
}
