//! One message per `SOCK_SEQPACKET` datagram: a JSON body and, beside it,
//! the file descriptors it refers to (`SCM_RIGHTS`).
//!
//! Seqpacket keeps message boundaries and delivers the fds with the very
//! message that names them, so neither side ever parses a stream or matches
//! fds to messages by counting.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::sys::socket::{
    self, AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr,
};
use serde::de::DeserializeOwned;

/// The largest message either side sends: a spawn request carries the whole
/// environment of an app.
pub const MAX_MESSAGE: usize = 1 << 20;

/// File descriptors that may travel with one message.
pub const MAX_FDS: usize = 64;

/// Socket buffer asked for each end, so a burst of exits or spawn requests
/// never blocks a sender on a slow reader.
const SOCKET_BUFFER: usize = 4 << 20;

/// Sends one encoded message with `fds`; fails with `WouldBlock` on a full
/// non-blocking socket.
pub fn send_raw(sock: BorrowedFd, body: &[u8], fds: &[BorrowedFd]) -> io::Result<()> {
    if body.len() > MAX_MESSAGE || fds.len() > MAX_FDS {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "message too large for the keeper socket"));
    }
    let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let cmsgs = if raw.is_empty() { vec![] } else { vec![ControlMessage::ScmRights(&raw)] };
    let iov = [IoSlice::new(body)];
    loop {
        match socket::sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives one message into `buf` (reused between calls). `Ok(None)` is
/// the peer's close; `WouldBlock` an empty non-blocking socket. The fds
/// arrive close-on-exec.
pub fn recv<T: DeserializeOwned>(sock: BorrowedFd, buf: &mut Vec<u8>) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
    if buf.len() < MAX_MESSAGE {
        // Zeroed allocation maps fresh pages without writing them: only the
        // pages a message lands in become resident (the keeper's PSS).
        *buf = vec![0; MAX_MESSAGE];
    }
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (len, fds, truncated) = loop {
        let mut iov = [IoSliceMut::new(buf)];
        match socket::recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC) {
            Ok(got) => {
                let mut fds = Vec::new();
                for c in got.cmsgs()? {
                    if let ControlMessageOwned::ScmRights(raw) = c {
                        // SAFETY: the kernel just installed these fds in our
                        // table for us; nothing else owns them.
                        fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
                    }
                }
                let truncated = got.flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
                break (got.bytes, fds, truncated);
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    if len == 0 && fds.is_empty() {
        return Ok(None);
    }
    if truncated {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated message on the keeper socket"));
    }
    let msg = serde_json::from_slice(&buf[..len]).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(Some((msg, fds)))
}

/// A listening seqpacket socket at `path` (a stale socket file is
/// replaced), mode 0600: only the daemon's user may drive the keeper.
pub fn listen(path: &Path) -> io::Result<OwnedFd> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type())) {
        std::fs::remove_file(path)?;
    }
    let fd = socket::socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None)?;
    let addr = UnixAddr::new(path)?;
    socket::bind(fd.as_raw_fd(), &addr)?;
    super::super::set_socket_mode(path, 0o600)?;
    socket::listen(&fd, Backlog::new(16).map_err(io::Error::from)?)?;
    Ok(fd)
}

/// Connects to the keeper listening at `path`.
pub fn connect(path: &Path) -> io::Result<OwnedFd> {
    let fd = socket::socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None)?;
    socket::connect(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    size_buffers(fd.as_fd());
    Ok(fd)
}

/// Accepts one connection, close-on-exec and non-blocking.
pub fn accept(listener: BorrowedFd) -> io::Result<OwnedFd> {
    let raw = socket::accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK)?;
    // SAFETY: accept4 returned a new fd that we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    size_buffers(fd.as_fd());
    Ok(fd)
}

/// Best effort: larger buffers where the limits allow (root may force them).
fn size_buffers(fd: BorrowedFd) {
    use nix::sys::socket::sockopt::{RcvBuf, RcvBufForce, SndBuf, SndBufForce};
    if socket::setsockopt(&fd, SndBufForce, &SOCKET_BUFFER).is_err() {
        let _ = socket::setsockopt(&fd, SndBuf, &SOCKET_BUFFER);
    }
    if socket::setsockopt(&fd, RcvBufForce, &SOCKET_BUFFER).is_err() {
        let _ = socket::setsockopt(&fd, RcvBuf, &SOCKET_BUFFER);
    }
}

/// Adopts a listening socket inherited as a raw fd number (`--listen-fd`).
///
/// # Safety
/// `fd` must be an open socket that nothing else in the process owns.
pub unsafe fn inherited(fd: RawFd) -> OwnedFd {
    // SAFETY: the caller's contract.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A connected pair, to test the wire without a keeper.
#[cfg(test)]
fn pair() -> (OwnedFd, OwnedFd) {
    socket::socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn messages_carry_their_fds() {
        let (a, b) = pair();
        let (mut r, w) = std::io::pipe().unwrap();
        let w = OwnedFd::from(w);
        let body = serde_json::to_vec(&serde_json::json!({"t": "x", "n": 1})).unwrap();
        send_raw(a.as_fd(), &body, &[w.as_fd()]).unwrap();
        drop(w);
        let mut buf = Vec::new();
        let (msg, fds): (serde_json::Value, _) = recv(b.as_fd(), &mut buf).unwrap().unwrap();
        assert_eq!(msg["n"], 1);
        assert_eq!(fds.len(), 1);
        let mut passed = std::fs::File::from(fds.into_iter().next().unwrap());
        passed.write_all(b"through the socket").unwrap();
        drop(passed);
        let mut got = String::new();
        r.read_to_string(&mut got).unwrap();
        assert_eq!(got, "through the socket");
    }

    #[test]
    fn close_reads_as_none_and_oversized_is_refused() {
        let (a, b) = pair();
        let big = vec![b'x'; MAX_MESSAGE + 1];
        assert!(send_raw(a.as_fd(), &big, &[]).is_err());
        drop(a);
        let mut buf = Vec::new();
        assert!(recv::<serde_json::Value>(b.as_fd(), &mut buf).unwrap().is_none());
    }
}
