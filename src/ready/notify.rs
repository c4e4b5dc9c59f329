//! The receiving end of the systemd notify protocol (`sd_notify`).
//!
//! Each instance of a `ready "notify"` app gets `NOTIFY_SOCKET=PATH`, the
//! path of a datagram socket the daemon binds with [`NotifySocket::bind`].
//! Apps (or libraries such as sd-notify, python-systemd, or a plain
//! `socket.sendto`) send newline-separated `KEY=VALUE` datagrams:
//! `READY=1`, `STATUS=...`, `WATCHDOG=1`, `STOPPING=1`, ...
//!
//! SO_PASSCRED makes the kernel attach the sender's pid to every datagram,
//! so the daemon can attribute it without trusting its content. The pid may
//! be a grandchild of an instance (a shell wrapper, a worker): this module
//! only reports it; the caller maps it to an instance (by process group or
//! cgroup) and decides. One socket can serve every app.

use std::fs;
use std::io::{self, IoSliceMut};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixDatagram as StdDatagram;
use std::path::{Path, PathBuf};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, UnixAddr, recvmsg, setsockopt, sockopt};
use thiserror::Error;
use tokio::io::Interest;
use tokio::net::UnixDatagram;

/// systemd drops longer datagrams too.
const MAX_DATAGRAM: usize = 4096;

/// One message of the protocol; keys procd does not use are dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyMsg {
    /// `READY=1`: startup is finished.
    Ready,
    /// `RELOADING=1`: the app reloads its configuration (not ready until READY=1).
    Reloading,
    /// `STOPPING=1`: shutdown has begun.
    Stopping,
    /// `STATUS=...`: free text shown in `status`.
    Status(String),
    /// `WATCHDOG=1`: the app is alive; resets the watchdog timer.
    Watchdog,
    /// `WATCHDOG=trigger`: the app asks to be treated as hung.
    WatchdogTrigger,
    /// `WATCHDOG_USEC=N`: the app changes its watchdog timeout.
    WatchdogUsec(u64),
    /// `MAINPID=N`: the main process is another pid (a forking server).
    MainPid(i32),
}

/// One datagram: who sent it and what it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyDatagram {
    /// The sender's pid as the kernel reports it (SCM_CREDENTIALS).
    pub pid: i32,
    pub messages: Vec<NotifyMsg>,
}

#[derive(Debug, Error)]
pub enum NotifyError {
    #[error("notify socket {}: {action}: {source}", path.display())]
    Io { path: PathBuf, action: &'static str, source: io::Error },
    #[error("notify socket {}: {} exists and is not a socket; procd leaves it alone", path.display(), path.display())]
    NotASocket { path: PathBuf },
}

/// The daemon's notify socket.
#[derive(Debug)]
pub struct NotifySocket {
    socket: UnixDatagram,
    /// Shown in errors and given to apps as `NOTIFY_SOCKET`.
    path: PathBuf,
}

impl NotifySocket {
    /// Binds `path` (a stale socket file left by a previous daemon is
    /// replaced) with SO_PASSCRED, mode 0666 since apps may run as other
    /// users. Must be called inside a tokio runtime.
    pub fn bind(path: &Path) -> Result<NotifySocket, NotifyError> {
        let io_err = |action, source| NotifyError::Io { path: path.to_path_buf(), action, source };
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                fs::remove_file(path).map_err(|e| io_err("remove the stale socket", e))?
            }
            Ok(_) => return Err(NotifyError::NotASocket { path: path.to_path_buf() }),
            Err(_) => {}
        }
        let socket = StdDatagram::bind(path).map_err(|e| io_err("bind", e))?;
        setsockopt(&socket, sockopt::PassCred, &true).map_err(|e| io_err("set SO_PASSCRED", e.into()))?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o666)).map_err(|e| io_err("chmod", e))?;
        socket.set_nonblocking(true).map_err(|e| io_err("set non-blocking", e))?;
        let socket = UnixDatagram::from_std(socket).map_err(|e| io_err("register with tokio", e))?;
        Ok(NotifySocket { socket, path: path.to_path_buf() })
    }

    /// The value of `NOTIFY_SOCKET` for the apps.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next datagram that carries credentials and at least one known
    /// message. Oversized or credential-less datagrams are skipped.
    pub async fn recv(&self) -> io::Result<NotifyDatagram> {
        loop {
            let received = self.socket.async_io(Interest::READABLE, || receive(self.socket.as_raw_fd())).await?;
            if let Some(datagram) = received {
                return Ok(datagram);
            }
        }
    }
}

/// One `recvmsg`: `Ok(None)` for a datagram to skip.
fn receive(fd: i32) -> io::Result<Option<NotifyDatagram>> {
    let mut buf = [0u8; MAX_DATAGRAM];
    let mut iov = [IoSliceMut::new(&mut buf)];
    // Room for credentials and a few passed fds (FDSTORE=1), which are closed.
    let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials, [i32; 16]);
    let msg =
        recvmsg::<UnixAddr>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC).map_err(io::Error::from)?;
    let mut pid = None;
    for control in msg.cmsgs().map_err(io::Error::from)? {
        match control {
            ControlMessageOwned::ScmCredentials(creds) => pid = Some(creds.pid()),
            ControlMessageOwned::ScmRights(fds) => fds.into_iter().for_each(|fd| {
                let _ = nix::unistd::close(fd);
            }),
            _ => {}
        }
    }
    let truncated = msg.flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
    let len = msg.bytes;
    let (Some(pid), false) = (pid, truncated) else { return Ok(None) };
    let messages = parse_notify(&buf[..len]);
    Ok((!messages.is_empty()).then_some(NotifyDatagram { pid, messages }))
}

/// Parses one datagram's `KEY=VALUE` lines; unknown keys and malformed
/// lines are dropped, as systemd does.
pub fn parse_notify(datagram: &[u8]) -> Vec<NotifyMsg> {
    let text = String::from_utf8_lossy(datagram);
    text.split('\n')
        .filter_map(|line| {
            let (key, value) = line.split_once('=')?;
            Some(match (key, value) {
                ("READY", "1") => NotifyMsg::Ready,
                ("RELOADING", "1") => NotifyMsg::Reloading,
                ("STOPPING", "1") => NotifyMsg::Stopping,
                ("WATCHDOG", "1") => NotifyMsg::Watchdog,
                ("WATCHDOG", "trigger") => NotifyMsg::WatchdogTrigger,
                ("STATUS", status) => NotifyMsg::Status(status.to_string()),
                ("WATCHDOG_USEC", usec) => NotifyMsg::WatchdogUsec(usec.parse().ok()?),
                ("MAINPID", pid) => NotifyMsg::MainPid(pid.parse().ok().filter(|p| *p > 0)?),
                _ => return None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn parses_the_known_keys_and_drops_the_rest() {
        let got = parse_notify(
            b"READY=1\nSTATUS=serving 3 clients\nWATCHDOG=1\nWATCHDOG_USEC=5000000\nMAINPID=42\nFOO=bar\nnonsense\nSTOPPING=1\nRELOADING=1\nMAINPID=x\nWATCHDOG=trigger\nREADY=0",
        );
        assert_eq!(
            got,
            [
                NotifyMsg::Ready,
                NotifyMsg::Status("serving 3 clients".into()),
                NotifyMsg::Watchdog,
                NotifyMsg::WatchdogUsec(5_000_000),
                NotifyMsg::MainPid(42),
                NotifyMsg::Stopping,
                NotifyMsg::Reloading,
                NotifyMsg::WatchdogTrigger,
            ]
        );
        assert!(parse_notify(b"").is_empty());
        assert!(parse_notify(&[0xff, b'=', 0xfe]).is_empty());
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn datagrams_carry_the_senders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        rt().block_on(async {
            let socket = NotifySocket::bind(&path).unwrap();
            let sender = StdDatagram::unbound().unwrap();
            sender.send_to(b"NOTHING=1", &path).unwrap();
            sender.send_to(b"READY=1\nSTATUS=up", &path).unwrap();
            let got = tokio::time::timeout(Duration::from_secs(2), socket.recv()).await.unwrap().unwrap();
            assert_eq!(got.pid, std::process::id() as i32);
            assert_eq!(got.messages, [NotifyMsg::Ready, NotifyMsg::Status("up".into())]);
        });
    }

    #[test]
    fn a_child_process_is_attributed_by_its_own_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.sock");
        rt().block_on(async {
            let socket = NotifySocket::bind(&path).unwrap();
            let script = "import os,socket; s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(b'READY=1', os.environ['NOTIFY_SOCKET'])";
            let mut child =
                std::process::Command::new("python3").args(["-c", script]).env("NOTIFY_SOCKET", &path).spawn().unwrap();
            let got = tokio::time::timeout(Duration::from_secs(5), socket.recv()).await.unwrap().unwrap();
            assert_eq!(got.pid, child.id() as i32);
            assert_eq!(got.messages, [NotifyMsg::Ready]);
            child.wait().unwrap();
        });
    }

    #[test]
    fn rebinding_replaces_a_stale_socket_but_not_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.sock");
        rt().block_on(async {
            drop(NotifySocket::bind(&path).unwrap());
            NotifySocket::bind(&path).unwrap();
            let file = dir.path().join("plain");
            fs::write(&file, "").unwrap();
            assert!(matches!(NotifySocket::bind(&file), Err(NotifyError::NotASocket { .. })));
        });
    }
}
