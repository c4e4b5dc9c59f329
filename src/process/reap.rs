//! Collecting the exit statuses of children: the daemon's single [`Reaper`],
//! the [`ExitStatus`] it reports, and becoming a child subreaper.
//!
//! There is exactly one waiter in the daemon, because `waitpid(-1)` takes any
//! child's status, and a subreaper inherits orphaned grandchildren that only a
//! `waitpid(-1)` can collect. Nothing else in the daemon may wait for children
//! (no `std::process::Child::wait`, no `tokio::process`).

use std::fmt;
use std::io;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::signal::{parse_signal, signal_name};

/// How a process ended.
///
/// Serialized as `{"code":1}` or `{"signal":"SIGKILL"}`, shown as
/// "exit code 1" or "killed by SIGKILL".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExitStatus {
    /// It called `exit` (or returned from `main`) with this code.
    Code(i32),
    /// It was terminated by this signal number.
    #[serde(serialize_with = "ser_signal", deserialize_with = "de_signal")]
    Signal(i32),
}

impl ExitStatus {
    /// Decodes a raw `waitpid` status; `None` for stopped/continued reports.
    fn from_raw(status: i32) -> Option<ExitStatus> {
        if libc::WIFEXITED(status) {
            Some(ExitStatus::Code(libc::WEXITSTATUS(status)))
        } else if libc::WIFSIGNALED(status) {
            Some(ExitStatus::Signal(libc::WTERMSIG(status)))
        } else {
            None
        }
    }

    /// Whether the process exited by itself with code 0.
    pub fn success(&self) -> bool {
        *self == ExitStatus::Code(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(code) => write!(f, "exit code {code}"),
            ExitStatus::Signal(sig) => write!(f, "killed by {}", signal_name(*sig)),
        }
    }
}

fn ser_signal<S: Serializer>(sig: &i32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&signal_name(*sig))
}

fn de_signal<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    let name = String::deserialize(d)?;
    parse_signal(&name).ok_or_else(|| serde::de::Error::custom(format!("unknown signal `{name}`")))
}

/// The daemon's only waiter for children.
///
/// It wakes on `SIGCHLD` and collects every exited child with
/// `waitpid(-1, WNOHANG)`, including orphaned grandchildren re-parented to
/// the daemon when it is a subreaper; the caller ignores pids it does not
/// know. Create it before launching anything, inside the tokio runtime.
pub struct Reaper {
    /// Tokio's `SIGCHLD` stream; it coalesces signals, hence the drain loop.
    sigchld: Signal,
}

impl Reaper {
    /// Registers for `SIGCHLD`. Children that exited before this call are
    /// collected by the first [`reaped`](Reaper::reaped), which always drains
    /// once before waiting.
    pub fn new() -> io::Result<Reaper> {
        Ok(Reaper { sigchld: signal(SignalKind::child())? })
    }

    /// Waits until at least one child has exited and returns all that have,
    /// as `(pid, status)`.
    ///
    /// Cancel-safe: statuses are only taken from the kernel after the last
    /// await point, so dropping the future in a `select!` loses nothing.
    pub async fn reaped(&mut self) -> Vec<(i32, ExitStatus)> {
        loop {
            let exited = drain();
            if !exited.is_empty() {
                return exited;
            }
            if self.sigchld.recv().await.is_none() {
                // The signal driver is gone: the runtime is shutting down.
                return exited;
            }
        }
    }
}

/// Collects every exited child without blocking.
pub(crate) fn drain() -> Vec<(i32, ExitStatus)> {
    let mut exited = Vec::new();
    loop {
        let mut status = 0;
        // SAFETY: status is a valid, writable c_int for the call's duration.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid > 0 {
            exited.extend(ExitStatus::from_raw(status).map(|s| (pid, s)));
            continue;
        }
        if pid < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        // 0: children remain but none has exited; ECHILD: no children at all.
        return exited;
    }
}

/// Reaps one child by pid if it has exited, without blocking.
///
/// For tools and tests that run without a [`Reaper`]; never mix the two in
/// one process.
pub fn try_reap(pid: i32) -> io::Result<Option<ExitStatus>> {
    if pid <= 0 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    loop {
        let mut status = 0;
        // SAFETY: as in drain.
        let got = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        match got {
            0 => return Ok(None),
            p if p == pid => match ExitStatus::from_raw(status) {
                Some(s) => return Ok(Some(s)),
                None => continue,
            },
            _ => {
                let err = io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::EINTR) {
                    return Err(err);
                }
            }
        }
    }
}

/// Makes the daemon a child subreaper (`PR_SET_CHILD_SUBREAPER`): orphaned
/// descendants of its apps are re-parented to it instead of to init, so that
/// their exit is seen and no zombie of ours outlives a stop.
pub fn become_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialized_forms() {
        let code = serde_json::to_string(&ExitStatus::Code(1)).unwrap();
        let sig = serde_json::to_string(&ExitStatus::Signal(9)).unwrap();
        assert_eq!(code, r#"{"code":1}"#);
        assert_eq!(sig, r#"{"signal":"SIGKILL"}"#);
        assert_eq!(serde_json::from_str::<ExitStatus>(&sig).unwrap(), ExitStatus::Signal(9));
        assert_eq!(serde_json::from_str::<ExitStatus>(&code).unwrap(), ExitStatus::Code(1));
        assert!(serde_json::from_str::<ExitStatus>(r#"{"signal":"SIGNOPE"}"#).is_err());
    }

    #[test]
    fn displayed_forms() {
        assert_eq!(ExitStatus::Code(1).to_string(), "exit code 1");
        assert_eq!(ExitStatus::Signal(9).to_string(), "killed by SIGKILL");
        assert!(ExitStatus::Code(0).success() && !ExitStatus::Signal(15).success());
    }

    #[test]
    fn raw_statuses_decoded() {
        assert_eq!(ExitStatus::from_raw(3 << 8), Some(ExitStatus::Code(3)));
        assert_eq!(ExitStatus::from_raw(9), Some(ExitStatus::Signal(9)));
        assert_eq!(ExitStatus::from_raw(0x137f), None); // stopped by SIGSTOP
    }
}
