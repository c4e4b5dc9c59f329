//! procd: a declarative process manager for Linux servers.
#![deny(unsafe_code)]

pub mod logs;
pub mod spec;
