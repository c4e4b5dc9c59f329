//! The only module of procd that forks, signals and reaps, and the only one
//! allowed to use `unsafe` and `nix`.
//!
//! Everything here is a thin, synchronous wrapper over one or a few system
//! calls, so that the rest of the daemon reasons about plain data (pids, exit
//! statuses, file descriptors) and can be tested without processes.
//!
//! # Layout
//!
//! - `creds.rs`: turning `user`/`group`/`groups` names into numeric [`Credentials`].
//! - `spawn.rs` and its child-side half `child.rs`: [`launch`] one app instance
//!   in a new session with two output pipes; `clone.rs`: the same into a
//!   cgroup with `clone3(CLONE_INTO_CGROUP)`.
//! - `cgroup.rs`: the daemon's cgroup v2 subtree and one [`InstanceCgroup`]
//!   per instance, where the host has a writable cgroup2 hierarchy.
//! - `signal.rs`: signalling a whole process group, signal names.
//! - `reap.rs`: the daemon's single [`Reaper`] and [`ExitStatus`].
//! - `peer.rs`: Unix socket peers and permissions, for the control socket.
//! - `host.rs`: facts about the machine and the daemon (uid, CPUs, page size).
//!
//! # Rules the rest of the daemon must keep
//!
//! - Nothing but [`Reaper`] waits for children: it calls `waitpid(-1)`, which
//!   would steal the status of any child someone else waits for, and the other
//!   way round.
//! - [`launch`] and [`Reaper::reaped`] run on the same thread (the daemon's
//!   `current_thread` runtime): `std` (and `clone.rs`) waits by pid for a
//!   child whose `exec` failed, and a `waitpid(-1)` on another thread in that
//!   window would make `std` panic.
//! - A stop signals the group ([`signal_group`]), never the leader alone,
//!   and with a cgroup every process in it ([`InstanceCgroup::kill_all`]).
#![allow(unsafe_code)]

mod cgroup;
mod child;
mod clone;
mod creds;
mod error;
mod host;
pub mod keeper;
mod peer;
pub(crate) mod reap;
mod signal;
mod spawn;

pub use cgroup::{CgroupError, CgroupRoot, InstanceCgroup};
pub use creds::{Credentials, resolve_credentials};
pub use error::ProcessError;
pub use host::{
    clock_ticks_per_second, cpu_count, current_uid, lock_exclusive, page_size, raise_fd_limit, release_free_memory,
    trim_code_pages,
};
pub use peer::{peer_uid, peer_uid_std, set_socket_mode};
pub use reap::{ExitStatus, Reaper, become_subreaper, try_reap};
pub use signal::{group_alive, kill_group, parse_signal, signal_group, signal_name};
pub use spawn::{LaunchSpec, Launched, launch, launch_passing};
