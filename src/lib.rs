//! procd: a declarative process manager for Linux servers.
#![deny(unsafe_code)]

pub mod spec;
