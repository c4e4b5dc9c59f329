//! [`ProcessError`]: why an app instance could not be started or its
//! credentials resolved, naming the program, path or user involved.
//!
//! All of these are errors the daemon survives: the instance goes to its
//! errored/backoff state and the message is shown in `status` and `events`.

use std::io;
use std::path::PathBuf;

/// A failure to resolve credentials or to launch a program.
///
/// Each variant carries what was attempted and on what, so that the message
/// alone tells an operator what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The spec had no program to run; validation should have caught it.
    #[error("cannot launch: the command line is empty")]
    EmptyArgv,

    /// `argv[0]` has no slash and no executable of that name is in the
    /// `PATH` of the app's own environment (not the daemon's).
    #[error("cannot launch `{program}`: not found in PATH `{path}`")]
    NotFound {
        /// `argv[0]` as written in the spec.
        program: String,
        /// The `PATH` that was searched (the default when the env has none).
        path: String,
    },

    /// The output pipes could not be created (usually out of file descriptors).
    #[error("cannot launch `{program}`: creating the output pipes failed: {source}")]
    Pipe {
        /// `argv[0]` as written in the spec.
        program: String,
        /// The error of `pipe2` or `fcntl`.
        source: io::Error,
    },

    /// `fork` or `exec` failed: no such file, not executable, bad interpreter
    /// line, argument list too long, out of processes...
    #[error("cannot execute `{program}`: {source}")]
    Exec {
        /// `argv[0]` as written in the spec.
        program: String,
        /// The error of `fork`/`execve`, as reported by the child.
        source: io::Error,
    },

    /// The child could not enter its working directory (as the app's user).
    #[error("cannot launch `{program}`: cannot enter working directory {}: {source}", cwd.display())]
    Chdir {
        /// `argv[0]` as written in the spec.
        program: String,
        /// The working directory of the spec.
        cwd: PathBuf,
        /// The error of `chdir`.
        source: io::Error,
    },

    /// The daemon lacks the privilege to run an app as another user or group.
    #[error(
        "cannot launch `{program}` as uid {uid} gid {gid}: procd runs as uid {daemon_uid} \
         and may not switch users (run procd as root, or drop `user`/`group` from the app)"
    )]
    NotPrivileged {
        /// `argv[0]` as written in the spec.
        program: String,
        /// The requested uid.
        uid: u32,
        /// The requested gid.
        gid: u32,
        /// The daemon's effective uid.
        daemon_uid: u32,
    },

    /// The instance's cgroup could not be opened for the child to join
    /// (removed behind procd's back, or not writable).
    #[error("cannot launch `{program}`: cannot open {}: {source}", path.display())]
    Cgroup {
        /// `argv[0]` as written in the spec.
        program: String,
        /// The cgroup's `cgroup.procs`.
        path: PathBuf,
        /// The error of `open`.
        source: io::Error,
    },

    /// A step of the child's setup before `exec` failed (joining the
    /// cgroup, `setsid`,
    /// `setgroups`, `setgid`, `setuid`, marking fds close-on-exec).
    #[error("cannot launch `{program}`: {step} failed in the child: {source}")]
    ChildSetup {
        /// `argv[0]` as written in the spec.
        program: String,
        /// The system call that failed.
        step: &'static str,
        /// Its error.
        source: io::Error,
    },

    /// `user` names no account, or a numeric uid has no passwd entry while
    /// its primary group was needed.
    #[error("unknown user `{user}`")]
    UnknownUser {
        /// The name or uid from the spec.
        user: String,
    },

    /// A `group` or `groups` entry names no group.
    #[error("unknown group `{group}`")]
    UnknownGroup {
        /// The name or gid from the spec.
        group: String,
    },

    /// The user or group database could not be read (NSS failure).
    #[error("looking up {what} `{name}` failed: {source}")]
    Lookup {
        /// "user", "group" or "supplementary groups of".
        what: &'static str,
        /// The name being looked up.
        name: String,
        /// The error of `getpwnam_r`/`getgrnam_r`/`getgrouplist`.
        source: io::Error,
    },
}
