//! Readiness: how procd learns that a started instance can take traffic.
//!
//! A rolling reload stops an old instance only once its replacement is
//! ready, so these are the signals it waits for:
//!
//! - probes procd runs, each retried until it passes or its timeout ends:
//!   [`tcp`] (a connect succeeds), [`http`] (a `GET` answers 2xx) and
//!   [`exec`] (a command exits 0);
//! - messages the app sends: the systemd notify protocol ([`NotifySocket`],
//!   `READY=1`, `WATCHDOG=1`, ...) and, for Node apps written for PM2's
//!   `wait_ready`, `process.send('ready')` over Node's IPC channel
//!   ([`NodeChannel`]).
//!
//! Everything here is async on tokio and works on a current-thread runtime.
//! A probe aimed at a socket procd holds for `listen` proves nothing (the
//! kernel accepts on it before any instance runs), which the spec decoder
//! rejects.

pub mod exec;
pub mod http;
pub mod node;
pub mod notify;
pub mod tcp;

use std::time::Duration;

pub use exec::exec;
pub use http::{HttpUrl, http};
pub use node::{NodeChannel, NodeChannelError, is_ready, node_channel_env};
pub use notify::{NotifyDatagram, NotifyError, NotifyMsg, NotifySocket, parse_notify};
pub use tcp::tcp;

use thiserror::Error;

/// Pause between two attempts of a probe: short, since a reload waits on
/// it, but not a busy loop.
pub const RETRY_EVERY: Duration = Duration::from_millis(50);

/// Why a probe did not pass.
#[derive(Debug, Error)]
pub enum ProbeError {
    /// Never passed within the timeout; `last` is why the last attempt failed.
    #[error("not ready after {}ms ({what}): {last}", waited.as_millis())]
    Timeout { what: String, waited: Duration, last: String },
    /// The probe cannot work at all (bad URL, empty command).
    #[error("{0}")]
    Invalid(String),
}
