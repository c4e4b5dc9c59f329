//! Node's IPC channel, for Node apps written for PM2's `wait_ready`.
//!
//! Under PM2 such an app calls `process.send('ready')` once it listens.
//! `process.send` exists when Node starts with `NODE_CHANNEL_FD=N` (and
//! `NODE_CHANNEL_SERIALIZATION_MODE=json`): fd N is one end of a Unix stream
//! socketpair, and each message is written as one JSON line, so
//! `process.send('ready')` writes `"ready"\n`. Node removes the variable
//! from its own environment at startup, so its children do not inherit it.
//!
//! The spawn code places [`NodeChannel::pair`]'s child end at fd N (after
//! the listening sockets: `3 + LISTEN_FDS` is the natural choice) and sets
//! [`node_channel_env`]; the daemon keeps the other end and reads it.
//!
//! Measured with Node 20 (tests/ready_node.rs):
//! - an open channel does not keep the app alive, and a few unread
//!   messages do not block it (writes are asynchronous); but thousands of
//!   unread messages keep its event loop from exiting, so the daemon should
//!   keep draining the channel for the instance's lifetime;
//! - if the daemon's end is **closed**, `process.send` without a callback
//!   raises an unhandled `error` event (EPIPE, or ERR_IPC_CHANNEL_CLOSED)
//!   and the app **exits with status 1**. The daemon's end must therefore
//!   stay open as long as the instance runs: the keeper process holds a
//!   copy, so a daemon crash does not close it.

use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::net::UnixStream as StdStream;

use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use serde_json::Value;
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::UnixStream;

/// A longer line is skipped: no readiness message is anywhere near it.
const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Error)]
pub enum NodeChannelError {
    #[error("node IPC channel: {action}: {source}")]
    Io { action: &'static str, source: io::Error },
}

/// The daemon's end of a Node IPC channel.
#[derive(Debug)]
pub struct NodeChannel {
    reader: BufReader<UnixStream>,
}

impl NodeChannel {
    /// A new channel: the child's end (close-on-exec; `dup2` it onto the fd
    /// named in `NODE_CHANNEL_FD`) and the daemon's end. Must be called
    /// inside a tokio runtime.
    pub fn pair() -> Result<(OwnedFd, NodeChannel), NodeChannelError> {
        let io_err = |action| move |source| NodeChannelError::Io { action, source };
        let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)
            .map_err(|e| io_err("create the socketpair")(io::Error::from(e)))?;
        let ours = StdStream::from(ours);
        ours.set_nonblocking(true).map_err(io_err("set non-blocking"))?;
        let ours = UnixStream::from_std(ours).map_err(io_err("register with tokio"))?;
        Ok((theirs, NodeChannel { reader: BufReader::new(ours) }))
    }

    /// The daemon's end, for the keeper to hold a copy: an app whose
    /// channel closes dies on its next `process.send`.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(self.reader.get_ref())
    }

    /// The next JSON message the app sent; `None` once the app's end is
    /// closed (it exited). Lines that are not JSON, or too long, are skipped.
    pub async fn recv(&mut self) -> Result<Option<Value>, NodeChannelError> {
        let read_err = |source| NodeChannelError::Io { action: "read", source };
        loop {
            let mut line = Vec::new();
            let limit = MAX_LINE as u64 + 1;
            let n = (&mut self.reader).take(limit).read_until(b'\n', &mut line).await.map_err(read_err)?;
            if n == 0 {
                return Ok(None);
            }
            if line.len() > MAX_LINE {
                // Discard the rest of the oversized line.
                let mut rest = Vec::new();
                while !line.ends_with(b"\n") && !rest.ends_with(b"\n") {
                    rest.clear();
                    if (&mut self.reader).take(limit).read_until(b'\n', &mut rest).await.map_err(read_err)? == 0 {
                        return Ok(None);
                    }
                }
                continue;
            }
            if let Ok(value) = serde_json::from_slice(&line) {
                return Ok(Some(value));
            }
        }
    }
}

/// The variables that make Node open fd `fd` as its IPC channel.
pub fn node_channel_env(fd: RawFd) -> Vec<(String, String)> {
    vec![("NODE_CHANNEL_FD".into(), fd.to_string()), ("NODE_CHANNEL_SERIALIZATION_MODE".into(), "json".into())]
}

/// Whether a message means "ready" as PM2's `wait_ready` understands it:
/// the string `'ready'`.
pub fn is_ready(message: &Value) -> bool {
    message.as_str() == Some("ready")
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn reads_json_lines_and_skips_junk() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (theirs, mut channel) = NodeChannel::pair().unwrap();
            let mut app = StdStream::from(theirs);
            let long = "x".repeat(MAX_LINE + 10);
            write!(app, "\"ready\"\nnot json\n\"{long}\"\n{{\"type\":\"x\",\"data\":1}}\n").unwrap();
            drop(app);
            let first = channel.recv().await.unwrap().unwrap();
            assert!(is_ready(&first));
            let second = channel.recv().await.unwrap().unwrap();
            assert_eq!(second["type"], "x");
            assert!(!is_ready(&second));
            assert!(channel.recv().await.unwrap().is_none());
        });
    }

    #[test]
    fn env_names_the_fd() {
        let env = node_channel_env(4);
        assert_eq!(env[0], ("NODE_CHANNEL_FD".into(), "4".into()));
        assert_eq!(env[1].1, "json");
    }
}
