//! What the daemon and the keeper say to each other. Every message is one
//! seqpacket datagram ([`wire`](super::wire)); the fds each one carries are
//! listed in its doc comment, in order.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::process::{Credentials, ExitStatus};

/// Bumped when a message changes meaning; a daemon and a keeper of
/// different versions refuse each other rather than misread (an update
/// re-executes the keeper first, so they always match after one).
pub const VERSION: u32 = 1;

/// Daemon → keeper.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "kebab-case")]
pub enum ToKeeper {
    /// First message of a connection. The keeper answers with one
    /// [`FromKeeper::Child`] per child it holds, one [`FromKeeper::Held`] per
    /// fd set, one [`FromKeeper::Stored`] per record, then
    /// [`FromKeeper::Welcome`].
    Hello { version: u32 },
    /// Start a program. Carries the fds to place on 3, 4, ... in the child.
    /// Answered by [`FromKeeper::Spawned`] or [`FromKeeper::SpawnFailed`].
    Spawn { id: u64, launch: LaunchRequest, tag: String },
    /// The daemon has seen this child's exit: the keeper drops its record
    /// and its copies of the output pipes.
    Forget { pid: i32 },
    /// Keep (`Some`) or drop (`None`) a record for the next daemon.
    Store { key: String, value: Option<String> },
    /// Keep the attached fds under `key` (listening sockets) for the next
    /// daemon, replacing any held before.
    Hold { key: String },
    /// Close the fds held under `key`.
    Release { key: String },
    /// Replace the keeper's program by `exe`, keeping every child, pipe,
    /// socket and record (`procd update`). The connection closes.
    Reexec { exe: PathBuf },
    /// The daemon stopped every app and exits: the keeper exits too once it
    /// has no child left.
    Exit,
}

/// Keeper → daemon.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "kebab-case")]
pub enum FromKeeper {
    /// A child started for an earlier daemon; `exit` is set when it ended
    /// while no daemon was there to hear it. Fds: stdout, stderr read ends.
    Child { pid: i32, tag: String, exit: Option<ExitStatus> },
    /// Fds held under `key`, attached.
    Held { key: String },
    /// A record kept for the daemon.
    Stored { key: String, value: String },
    /// End of the answer to `Hello`.
    Welcome { version: u32, keeper_pid: i32 },
    /// The program runs. Fds: stdout, stderr read ends.
    Spawned { id: u64, pid: i32 },
    /// The program could not be started; nothing runs.
    SpawnFailed { id: u64, error: String },
    /// A child exited.
    Exited { pid: i32, status: ExitStatus },
}

/// Everything the keeper needs to start one instance: the daemon has
/// resolved it all (PATH, user, cgroup), so the keeper only forks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaunchRequest {
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
    pub credentials: Option<Credentials>,
    /// The cgroup directory to create the child in.
    pub cgroup: Option<PathBuf>,
    /// Set `LISTEN_PID` to the child's pid (the spawn's attached fds are its
    /// listening sockets, placed on 3, 4, ...).
    #[serde(default)]
    pub listen_pid: bool,
}
