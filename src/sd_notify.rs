//! A client of systemd's notify protocol for the daemon itself: `READY=1`
//! once the first reconcile is done, `WATCHDOG=1` pings, `STOPPING=1`.
//!
//! The generated unit (`procd startup systemd`) says `Type=notify` and
//! `WatchdogSec=`, so systemd considers procd started only when its apps
//! have been launched, and restarts a daemon whose loop is stuck. Outside
//! systemd `$NOTIFY_SOCKET` is unset and every call is a cheap no-op.
//!
//! std only: one datagram per message on a `UnixDatagram`, as `sd_notify(3)`
//! sends it; no libsystemd to link, nothing to configure.

use std::env;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// The service is started (sent after the first reconcile).
pub const READY: &str = "READY=1";
/// The service is alive; sent at half the [`watchdog_interval`].
pub const WATCHDOG: &str = "WATCHDOG=1";
/// The service is shutting down.
pub const STOPPING: &str = "STOPPING=1";

/// Sends `state` (one or more `KEY=VALUE` lines) to `$NOTIFY_SOCKET`.
///
/// Returns `Ok(false)` when the variable is unset or empty (not started by
/// systemd, or by a unit that does not want notifications), `Ok(true)` once
/// the datagram is sent.
pub fn notify(state: &str) -> io::Result<bool> {
    match env::var_os("NOTIFY_SOCKET") {
        Some(socket) if !socket.is_empty() => notify_to(&socket, state).map(|()| true),
        _ => Ok(false),
    }
}

/// Sends `state` to the notify socket `socket`: a filesystem path, or an
/// abstract name written `@name` as systemd does.
pub fn notify_to(socket: &OsStr, state: &str) -> io::Result<()> {
    let addr = socket_addr(socket)?;
    let sock = UnixDatagram::unbound()?;
    let sent = sock.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        // A datagram is all or nothing; a short count would be a kernel oddity.
        return Err(io::Error::new(io::ErrorKind::WriteZero, "notify message truncated"));
    }
    Ok(())
}

fn socket_addr(socket: &OsStr) -> io::Result<SocketAddr> {
    let bytes = socket.as_bytes();
    match bytes.split_first() {
        Some((b'@', name)) => abstract_addr(name),
        Some((b'/', _)) => SocketAddr::from_pathname(socket),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("NOTIFY_SOCKET {socket:?} is neither an absolute path nor an @abstract name"),
        )),
    }
}

#[cfg(target_os = "linux")]
fn abstract_addr(name: &[u8]) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(target_os = "linux"))]
fn abstract_addr(_name: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "abstract unix sockets exist only on Linux"))
}

/// How often systemd expects a [`WATCHDOG`] ping, from `$WATCHDOG_USEC`;
/// `None` when the watchdog is off or meant for another process
/// (`$WATCHDOG_PID` set to a pid other than ours).
///
/// Ping at half this interval, as `sd_watchdog_enabled(3)` advises, so one
/// late tick does not get the daemon killed.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = env::var("WATCHDOG_USEC").ok();
    let pid = env::var("WATCHDOG_PID").ok();
    watchdog_interval_from(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// [`watchdog_interval`] over given values, so it is tested without
/// touching the process environment.
pub fn watchdog_interval_from(usec: Option<&str>, pid: Option<&str>, our_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        // An unparsable WATCHDOG_PID cannot be ours: ignore the watchdog, as
        // libsystemd does, rather than ping for someone else.
        if pid.trim().parse::<u32>().ok() != Some(our_pid) {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_one_datagram_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        notify_to(path.as_os_str(), "READY=1\nSTATUS=3 apps").unwrap();
        assert_eq!(recv(&server), "READY=1\nSTATUS=3 apps");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_socket_written_with_an_at_sign() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("procd-test-notify-{}-{:?}", std::process::id(), std::time::Instant::now());
        let server = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        notify_to(OsStr::new(&format!("@{name}")), WATCHDOG).unwrap();
        assert_eq!(recv(&server), "WATCHDOG=1");
    }

    #[test]
    fn a_relative_or_empty_socket_is_an_error_not_a_panic() {
        assert!(notify_to(OsStr::new("relative.sock"), READY).is_err());
        assert!(notify_to(OsStr::new(""), READY).is_err());
    }

    #[test]
    fn a_missing_listener_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(notify_to(dir.path().join("nobody").as_os_str(), READY).is_err());
    }

    #[test]
    fn watchdog_interval_honours_watchdog_pid() {
        let cases: &[(Option<&str>, Option<&str>, Option<Duration>)] = &[
            (None, None, None),
            (Some("30000000"), None, Some(Duration::from_secs(30))),
            (Some("30000000"), Some("42"), Some(Duration::from_secs(30))),
            (Some("30000000"), Some("43"), None),
            (Some("30000000"), Some("x"), None),
            (Some("0"), None, None),
            (Some("soon"), None, None),
        ];
        for (usec, pid, want) in cases {
            assert_eq!(watchdog_interval_from(*usec, *pid, 42), *want, "usec={usec:?} pid={pid:?}");
        }
    }
}
