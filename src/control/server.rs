//! The daemon's end of the control socket: accepts connections, checks the
//! caller's uid (SO_PEERCRED) on every request, reads one size-capped
//! request, hands it to the daemon loop and writes back the answer.
//!
//! Requests that must wait for processes (`restart`, `reconcile --wait`) are
//! answered with a [`Reply::Later`] future, awaited here on the connection's
//! own task so the daemon loop never blocks on one client.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use super::protocol::{Envelope, MAX_FRAME, PROTOCOL_VERSION, Request, Response};
use crate::process;

/// The daemon's answer: now, or once something has happened.
pub enum Reply {
    Now(Response),
    Later(Pin<Box<dyn Future<Output = Response> + Send>>),
}

/// A request on its way to the daemon loop, with where to send the reply.
pub type Incoming = (Request, oneshot::Sender<Reply>);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("another procd daemon is already listening on {0}")]
    AlreadyRunning(PathBuf),
    #[error("cannot create the control socket {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
}

/// Binds the socket with mode 0600. A leftover socket file from a daemon
/// that died is replaced; a live daemon on it is an error.
pub fn bind(path: &Path) -> Result<UnixListener, ServerError> {
    let err = |source| ServerError::Bind { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(ServerError::AlreadyRunning(path.to_path_buf()));
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(err)?;
    process::set_socket_mode(path, 0o600).map_err(err)?;
    Ok(listener)
}

/// Accepts connections until the daemon drops the receiver.
pub async fn serve(listener: UnixListener, daemon: mpsc::Sender<Incoming>) {
    let own_uid = process::current_uid();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("control socket accept failed: {e}");
                continue;
            }
        };
        let daemon = daemon.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, daemon, own_uid).await {
                tracing::debug!("control connection: {e}");
            }
        });
    }
}

async fn handle(stream: UnixStream, daemon: mpsc::Sender<Incoming>, own_uid: u32) -> io::Result<()> {
    let uid = process::peer_uid(&stream)?;
    let (read, mut write) = stream.into_split();
    // The request is read even from a refused caller, so that it gets the
    // refusal rather than a broken pipe.
    let request = read_request(read).await?;
    let response = if uid != 0 && uid != own_uid {
        Response::Error { message: format!("permission denied: uid {uid} may not control this daemon") }
    } else {
        match request {
            Ok(request) => dispatch(request, &daemon).await,
            Err(message) => Response::Error { message },
        }
    };
    let mut line = serde_json::to_vec(&response)
        .unwrap_or_else(|e| serde_json::to_vec(&Response::Error { message: e.to_string() }).unwrap_or_default());
    line.push(b'\n');
    write.write_all(&line).await?;
    write.shutdown().await
}

async fn read_request(read: tokio::net::unix::OwnedReadHalf) -> io::Result<Result<Request, String>> {
    let mut reader = BufReader::new(read.take(MAX_FRAME as u64 + 1));
    let mut buf = Vec::new();
    reader.read_until(b'\n', &mut buf).await?;
    if buf.len() > MAX_FRAME {
        return Ok(Err(format!("request larger than {MAX_FRAME} bytes")));
    }
    // The version is checked before the body so that an old client gets a
    // clear message even when the request shapes differ.
    let value: serde_json::Value = match serde_json::from_slice(&buf) {
        Ok(v) => v,
        Err(e) => return Ok(Err(format!("malformed request: {e}"))),
    };
    let v = value.get("v").and_then(|v| v.as_u64()).unwrap_or(0);
    if v != u64::from(PROTOCOL_VERSION) {
        return Ok(Err(format!(
            "protocol version {v} is not supported by this daemon (it speaks {PROTOCOL_VERSION}); use the matching procd binary"
        )));
    }
    Ok(serde_json::from_value::<Envelope>(value).map(|e| e.request).map_err(|e| format!("malformed request: {e}")))
}

async fn dispatch(request: Request, daemon: &mpsc::Sender<Incoming>) -> Response {
    let (tx, rx) = oneshot::channel();
    if daemon.send((request, tx)).await.is_err() {
        return Response::Error { message: "the daemon is shutting down".into() };
    }
    match rx.await {
        Ok(Reply::Now(r)) => r,
        Ok(Reply::Later(fut)) => fut.await,
        Err(_) => Response::Error { message: "the daemon is shutting down".into() },
    }
}
