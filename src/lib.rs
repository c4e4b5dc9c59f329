//! procd: a declarative process manager for Linux servers.
//!
//! A daemon watches a conf.d directory of KDL app specs and keeps the
//! running processes equal to what the files declare, restarting only the
//! apps whose spec actually changed.
//!
//! # Layout
//!
//! The pure core sits at the bottom and imports nothing above it:
//!
//! - [`spec`]: KDL files → validated, resolved, hashed [`spec::AppSpec`]s.
//! - [`reconcile`]: (desired, observed) → the [`reconcile::Action`]s to apply.
//! - [`supervisor`]: the pure instance lifecycle, restart delays, and one
//!   actor task per instance carrying the lifecycle's effects out.
//! - [`process`]: the only module that forks, signals and reaps (and the
//!   only one with `unsafe`); [`monitor`] reads memory and CPU from /proc.
//! - [`listen`]: the app's listening sockets, bound by procd and passed to
//!   every instance (`LISTEN_FDS`), so reloads never refuse a connection.
//! - [`ready`]: readiness probes (tcp, http, exec) and the receivers of the
//!   systemd notify protocol and of Node's IPC channel (PM2's `wait_ready`).
//! - [`logs`]: pipes → log files, rotation, tailing.
//! - [`watch`]: config dir events → "rescan".
//! - [`state`]: operator state, written atomically.
//! - [`control`]: the socket protocol, its server, and [`Client`], the
//!   public Rust API.
//! - [`daemon`]: wires the above together; [`cli`]: the client commands.
//! - [`sd_notify`]: tells systemd the daemon is ready and alive.
//!
//! # Theory of Operation
//!
//! On every change in the config dir (coalesced over a short quiet time),
//! on SIGHUP, on `procd reconcile` and every 30 s, the daemon re-reads every
//! `*.kdl` file. A file that fails to parse or validate keeps its last good
//! apps and contributes its errors to `status`. Each app's instance template
//! is hashed canonically (instance count excluded); [`reconcile::plan`]
//! compares the desired apps with the running ones and yields start, stop,
//! restart (hash changed) and scale actions, so an app whose hash did not
//! change is never signalled and scaling touches only the added or removed
//! indices. Each instance is an actor whose pure [`supervisor::state`]
//! machine decides restarts, delays and `errored`; the actor performs the
//! effects through [`process`], whose single reaper routes exit statuses
//! back by pid. Stops reach the whole process group: stop signal, kill
//! timeout, SIGKILL, and a stop completes only when no process of the group
//! is left. Operator stops persist in the state dir; CLI-created apps are
//! KDL files in the state dir, reconciled like conf.d files.
#![deny(unsafe_code)]

pub mod app_watch;
pub mod cli;
pub mod control;
pub mod daemon;
pub mod listen;
pub mod logs;
pub mod monitor;
pub mod paths;
pub mod process;
pub mod ready;
pub mod reconcile;
pub mod sd_notify;
pub mod spec;
pub mod startup;
pub mod state;
pub mod supervisor;
pub mod watch;

pub use control::Client;
