//! The control plane: the typed protocol, the daemon's socket server, and
//! the client (also the public Rust API).

pub mod client;
pub mod protocol;
pub mod server;

pub use client::{Client, ClientError};
pub use protocol::{Request, Response};
