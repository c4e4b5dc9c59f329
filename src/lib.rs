//! procd: a declarative process manager for Linux servers.
#![deny(unsafe_code)]

pub mod monitor;
pub mod process;
pub mod spec;
