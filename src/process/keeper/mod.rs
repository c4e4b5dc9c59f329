//! The keeper: a tiny process that is the parent of every app and holds
//! every app's output pipes, listening sockets and runtime records, so the
//! daemon can die (`kill -9`) or be replaced (`procd update`) without an app
//! noticing. See `server.rs` for the keeper itself, `client.rs` for the
//! daemon's end, `protocol.rs` for what they say and `wire.rs` for how.

mod client;
mod protocol;
mod server;
mod wire;

pub use client::{Connected, KeeperLink};
pub use protocol::{FromKeeper, LaunchRequest, ToKeeper, VERSION};
pub use server::{KeeperStart, run};
