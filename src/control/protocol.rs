//! The control protocol between `procd` commands and the daemon: one JSON
//! object per line each way, one request per connection, versioned, with a
//! size cap so a confused or hostile client cannot make the daemon buffer
//! without bound. The same types are the public Rust API (`procd::Client`).

use serde::{Deserialize, Serialize};

use crate::reconcile::Action;
use crate::spec::SpecError;

/// Bumped on any incompatible change; the daemon refuses other versions with
/// a message naming both.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest request or response line accepted, in bytes.
pub const MAX_FRAME: usize = 4 << 20;

/// A request with its protocol version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u32,
    #[serde(flatten)]
    pub request: Request,
}

/// What a client asks. Targets are app names, `all`, or `/regex/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// `detail` adds the resolved spec and log paths (`procd show`).
    Status {
        app: Option<String>,
        #[serde(default)]
        detail: bool,
    },
    Env {
        app: String,
        index: u32,
    },
    Start {
        targets: Vec<String>,
    },
    Stop {
        targets: Vec<String>,
    },
    Restart {
        targets: Vec<String>,
    },
    Reset {
        targets: Vec<String>,
    },
    /// Rolling replacement of apps that listen (a restart for the others);
    /// answered when done, with an error if a rollout was aborted.
    Reload {
        targets: Vec<String>,
    },
    /// Re-read the config dir. `dry_run` only computes the plan; `wait`
    /// replies once the started instances are online (or failed).
    Reconcile {
        dry_run: bool,
        wait: bool,
        timeout_ms: u64,
    },
    /// Create a persisted app from KDL text (what `procd start SCRIPT` sends).
    Create {
        name: String,
        kdl: String,
    },
    /// Remove a CLI-created app.
    Delete {
        app: String,
    },
    /// `procd reload-logs`: reopen every log file.
    ReloadLogs,
    /// `procd flush [APP]`: truncate log files.
    Flush {
        app: Option<String>,
    },
    Ping,
    /// `procd update`: re-execute the keeper and the daemon from the binary
    /// now on disk; no app restarts. Answered before the daemon goes.
    Update,
    /// `procd kill`: stop every app, then the keeper and the daemon.
    Kill,
}

/// What the daemon answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Response {
    Status(StatusReport),
    Env {
        vars: Vec<(String, String)>,
    },
    /// An operation succeeded; `message` is for humans.
    Done {
        message: String,
    },
    /// The result of `reconcile`.
    Plan {
        actions: Vec<Action>,
        errors: Vec<SpecError>,
        applied: bool,
        failed: Vec<String>,
    },
    /// The operation failed; nothing further was done.
    Error {
        message: String,
    },
    Pong {
        pid: u32,
        version: String,
        /// When this daemon image started (ms since the epoch): it changes
        /// across `procd update`, which keeps the pid.
        #[serde(default)]
        started_ms: u64,
    },
}

/// `procd status --json`: the interface contract of FEATURES.md §1.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatusReport {
    pub apps: Vec<AppStatus>,
    pub errors: Vec<SpecError>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppStatus {
    pub name: String,
    pub source: String,
    pub spec_hash: String,
    pub instances_desired: u32,
    /// `running`, `stopped` (by an operator), `errored` (some instance gave
    /// up), `starting` or `stopping`.
    pub state: String,
    pub instances: Vec<InstanceStatus>,
    /// Why the last rolling reload of the app was aborted, until the next
    /// one succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<String>,
    /// Only for `show`: the resolved spec and where its logs go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub index: u32,
    pub pid: Option<i32>,
    pub status: String,
    pub restarts: u32,
    pub uptime_ms: u64,
    pub memory_bytes: u64,
    pub cpu_percent: f32,
    pub last_exit: Option<serde_json::Value>,
    pub last_restart_reason: Option<String>,
    /// For `waiting-restart`: milliseconds until the next start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_in_ms: Option<u64>,
    /// Why the last start failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Output lines that could not be written to a log file (disk full,
    /// permissions); the app is never blocked, the loss is counted here.
    #[serde(default)]
    pub log_lines_lost: u64,
    /// The latest log write error, while lines are being lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_error: Option<String>,
}
