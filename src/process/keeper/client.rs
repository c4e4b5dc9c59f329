//! The daemon's end of the keeper socket: connecting (starting a keeper
//! when none runs) and async send/receive on the current-thread runtime.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::protocol::{FromKeeper, ToKeeper};
use super::wire;

/// A connection to the keeper.
pub struct KeeperLink {
    fd: AsyncFd<OwnedFd>,
}

/// How the link came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connected {
    /// A keeper was already running: its children are adopted.
    Existing,
    /// No keeper answered; a new one was started.
    Started,
}

impl KeeperLink {
    /// Connects to the keeper at `socket`, starting `exe keeper` first when
    /// none answers. The keeper gets its listening socket as fd 3, so the
    /// connection never races its start.
    pub fn connect_or_start(socket: &Path, exe: &Path) -> io::Result<(KeeperLink, Connected)> {
        match wire::connect(socket) {
            Ok(fd) => return Ok((KeeperLink::new(fd)?, Connected::Existing)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ECONNREFUSED)) => {}
            Err(e) => return Err(e),
        }
        let listener = wire::listen(socket)?;
        start_keeper(exe, listener.as_fd())?;
        drop(listener);
        let fd = wire::connect(socket)?;
        Ok((KeeperLink::new(fd)?, Connected::Started))
    }

    fn new(fd: OwnedFd) -> io::Result<KeeperLink> {
        fcntl(&fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        // SAFETY: the AsyncFd owns the OwnedFd, which stays open and the
        // same file description until the link is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(KeeperLink { fd })
    }

    /// Sends one message, waiting while the socket is full.
    pub async fn send(&self, msg: &ToKeeper, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| wire::send_raw(fd.get_ref().as_fd(), &body, fds)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// The next message; `Ok(None)` when the keeper closed the connection.
    pub async fn recv(&self, buf: &mut Vec<u8>) -> io::Result<Option<(FromKeeper, Vec<OwnedFd>)>> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| wire::recv(fd.get_ref().as_fd(), buf)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

/// Starts `exe keeper --listen-fd 3` in a session of its own, so a
/// terminal's Ctrl-C or the daemon's death never reaches it.
fn start_keeper(exe: &Path, listener: BorrowedFd) -> io::Result<()> {
    let raw = listener.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.arg("keeper").arg("--listen-fd").arg("3").stdin(Stdio::null()).stdout(Stdio::null());
    // SAFETY: only async-signal-safe calls (dup2, setsid) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would keep close-on-exec: clear it instead.
            let placed = if raw == 3 { libc::fcntl(3, libc::F_SETFD, 0) } else { libc::dup2(raw, 3) };
            if placed < 0 || libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // Not waited for here: the daemon's reaper collects it if it ever exits
    // while the daemon runs.
    cmd.spawn().map(drop)
}
