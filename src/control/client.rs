//! The client side of the control socket, synchronous so a `procd status`
//! costs one connect, one write and one read, and no async runtime. This is
//! also procd's public Rust API (`procd::Client`).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::protocol::{Envelope, MAX_FRAME, PROTOCOL_VERSION, Request, Response};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the procd daemon at {path}: {source} (is `procd daemon` running with the same --home?)")]
    Connect { path: PathBuf, source: io::Error },
    #[error("lost the connection to the daemon at {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("the daemon sent an invalid response: {0}")]
    Protocol(String),
}

/// A connection factory for one daemon's socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Client {
        Client { socket: socket.into() }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one request and waits for its response.
    pub fn call(&self, request: Request) -> Result<Response, ClientError> {
        let io_err = |source| ClientError::Io { path: self.socket.clone(), source };
        let mut stream = UnixStream::connect(&self.socket)
            .map_err(|source| ClientError::Connect { path: self.socket.clone(), source })?;
        let mut line = serde_json::to_vec(&Envelope { v: PROTOCOL_VERSION, request })
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        stream.write_all(&line).map_err(io_err)?;
        let mut reader = BufReader::new(stream.take(MAX_FRAME as u64 + 1));
        let mut buf = Vec::new();
        reader.read_until(b'\n', &mut buf).map_err(io_err)?;
        if buf.is_empty() {
            return Err(ClientError::Protocol("the daemon closed the connection without answering".into()));
        }
        serde_json::from_slice(&buf).map_err(|e| ClientError::Protocol(e.to_string()))
    }
}
