//! The listening sockets procd binds for an app and hands to every instance.
//!
//! This is what makes cluster mode and zero-downtime reload work for any
//! language: the socket is bound once, before the first instance starts,
//! and lives as long as the app's `listen` entries do. Every instance gets
//! the same sockets (the kernel spreads connections over the processes
//! accepting on them), so stopping one instance, or all but one during a
//! rolling reload, never refuses a connection.
//!
//! The sockets are passed by the systemd socket-activation protocol, which
//! Node, Python, Go and Rust servers already understand: the fds sit at 3,
//! 4, ... in declaration order, and [`listen_env`] gives `LISTEN_FDS` and
//! `LISTEN_FDNAMES`. `LISTEN_PID` must equal the child's own pid, which is
//! known only after fork, so the spawn code adds it in the child.
//!
//! The fds are left **blocking** and close-on-exec. Blocking, because the
//! flag lives on the shared open file description: setting it here would set
//! it for every instance, and each program decides for itself (Node's libuv
//! and Python's selectors set non-blocking themselves; a Python server with
//! several instances must, see the examples). Close-on-exec, so no other
//! child inherits them by accident: the spawn code `dup2`s each one onto its
//! number, which clears the flag on the copy (and must clear it with `fcntl`
//! when an fd already sits on its target number, since `dup2(fd, fd)` does
//! nothing).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, UnixAddr, bind, listen, setsockopt, socket, sockopt,
};
use thiserror::Error;

use crate::spec::{ListenAddr, ListenSpec};

/// The first fd number of the systemd protocol (after stdin, stdout, stderr).
pub const FIRST_FD: RawFd = 3;
/// The backlog of every socket: enough to ride out a burst while all
/// instances are busy or being replaced (the kernel caps it at somaxconn).
pub const BACKLOG: i32 = 1024;
/// Name of the variable the spawn code must set in the child to its own pid.
pub const LISTEN_PID: &str = "LISTEN_PID";

/// Why an address could not be bound; every variant names the address, since
/// the message ends up in `status` next to the app.
#[derive(Debug, Error)]
pub enum ListenError {
    #[error("cannot listen on {address}: address already in use (another process listens there)")]
    InUse { address: String },
    #[error("cannot listen on {address}: permission denied{hint}")]
    PermissionDenied { address: String, hint: &'static str },
    #[error("cannot listen on {address}: cannot resolve host {host:?}: {reason}")]
    BadHost { address: String, host: String, reason: String },
    #[error("cannot listen on {address}: {} exists and is not a socket; procd leaves it alone", path.display())]
    NotASocket { address: String, path: PathBuf },
    #[error("cannot listen on {address}: {action}: {source}")]
    Io { address: String, action: &'static str, source: io::Error },
}

/// Who should own a Unix socket file: the app's user and group, so an app
/// that drops privileges can still `chmod` or remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketOwner {
    pub uid: u32,
    pub gid: u32,
}

/// One bound, listening socket.
#[derive(Debug)]
pub struct BoundSocket {
    /// The address as text (`tcp://127.0.0.1:8080`): the socket's identity
    /// across spec changes.
    pub key: String,
    /// Its `LISTEN_FDNAMES` entry.
    pub name: String,
    /// The listening socket, blocking and close-on-exec (see the module doc).
    pub fd: OwnedFd,
    /// For Unix sockets, the file to remove when the address leaves the spec.
    path: Option<PathBuf>,
}

/// An app's sockets in declaration order (fd 3 is the first).
#[derive(Debug, Default)]
pub struct ListenSet {
    sockets: Vec<BoundSocket>,
}

impl ListenSet {
    /// Binds every address, or none: on an error the sockets bound so far
    /// are closed again.
    pub fn bind(specs: &[ListenSpec], owner: Option<SocketOwner>) -> Result<ListenSet, ListenError> {
        let mut set = ListenSet::default();
        set.update(specs, owner)?;
        Ok(set)
    }

    /// Makes the set match `specs`: sockets whose address is unchanged are
    /// kept (same fd, so running instances keep accepting on them), new
    /// addresses are bound, removed ones are closed and their Unix socket
    /// files removed. Names and modes of kept sockets are updated. On an
    /// error the set is unchanged. Returns the keys of the sockets closed.
    ///
    /// New sockets are bound while the removed ones are still open, so
    /// moving a port from one host address to another that overlaps it
    /// (`127.0.0.1:8080` to `0.0.0.0:8080`) fails as "in use": remove the
    /// old address first, or change the port.
    pub fn update(&mut self, specs: &[ListenSpec], owner: Option<SocketOwner>) -> Result<Vec<String>, ListenError> {
        for spec in specs {
            if let (ListenAddr::Unix(path), Some(mode)) = (&spec.address, spec.mode)
                && self.sockets.iter().any(|s| s.path.as_deref() == Some(path.as_path()))
            {
                set_mode(&spec.address.to_string(), path, mode)?;
            }
        }
        let mut fresh: HashMap<String, BoundSocket> = HashMap::new();
        for spec in specs {
            let key = spec.address.to_string();
            if self.sockets.iter().any(|s| s.key == key) || fresh.contains_key(&key) {
                continue;
            }
            match bind_one(spec, owner) {
                Ok(socket) => {
                    fresh.insert(key, socket);
                }
                Err(error) => {
                    fresh.values().filter_map(|s| s.path.as_deref()).for_each(remove_if_socket);
                    return Err(error);
                }
            }
        }
        let mut old: HashMap<String, BoundSocket> = self.sockets.drain(..).map(|s| (s.key.clone(), s)).collect();
        for spec in specs {
            let key = spec.address.to_string();
            if let Some(socket) = old.remove(&key).or_else(|| fresh.remove(&key)) {
                self.sockets.push(BoundSocket { name: spec.name.clone(), ..socket });
            }
        }
        let closed: Vec<String> = old.keys().cloned().collect();
        old.values().filter_map(|s| s.path.as_deref()).for_each(remove_if_socket);
        Ok(closed)
    }

    /// Sockets bound earlier and held across a daemon restart (by the
    /// keeper), by address key, in fd order; [`update`](Self::update) then
    /// sets their names and binds whatever else the spec lists.
    pub fn from_held(held: Vec<(String, OwnedFd)>) -> ListenSet {
        let sockets = held
            .into_iter()
            .map(|(key, fd)| {
                let path = key.strip_prefix("unix://").map(PathBuf::from);
                BoundSocket { name: key.clone(), key, fd, path }
            })
            .collect();
        ListenSet { sockets }
    }

    /// The sockets back as `(address key, fd)`, the form of [`from_held`](Self::from_held).
    pub fn into_held(self) -> Vec<(String, OwnedFd)> {
        self.sockets.into_iter().map(|s| (s.key, s.fd)).collect()
    }

    /// Whether the set is exactly `specs`, names included.
    pub fn matches(&self, specs: &[ListenSpec]) -> bool {
        self.sockets.len() == specs.len()
            && self.sockets.iter().zip(specs).all(|(s, spec)| s.key == spec.address.to_string() && s.name == spec.name)
    }

    /// Copies of every socket, for a set that replaces this one.
    pub fn duplicate(&self) -> std::io::Result<Vec<(String, OwnedFd)>> {
        self.sockets.iter().map(|s| Ok((s.key.clone(), s.fd.try_clone()?))).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    /// The sockets in fd order: the i-th goes to fd `FIRST_FD + i`.
    pub fn sockets(&self) -> &[BoundSocket] {
        &self.sockets
    }

    /// The fds to place at 3, 4, ... in the child, in that order.
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        self.sockets.iter().map(|s| s.fd.as_fd()).collect()
    }

    /// `LISTEN_FDS` and `LISTEN_FDNAMES` for these sockets (empty when
    /// there are none); the spawn code adds `LISTEN_PID`.
    pub fn env(&self) -> Vec<(String, String)> {
        let names: Vec<&str> = self.sockets.iter().map(|s| s.name.as_str()).collect();
        listen_env(&names)
    }
}

/// The environment of the socket-activation protocol for sockets named
/// `names` (in fd order): `LISTEN_FDS=n` and `LISTEN_FDNAMES=a:b`. Without
/// sockets, nothing: an app must not see `LISTEN_FDS=0` and go looking.
pub fn listen_env(names: &[&str]) -> Vec<(String, String)> {
    if names.is_empty() {
        return Vec::new();
    }
    vec![("LISTEN_FDS".into(), names.len().to_string()), ("LISTEN_FDNAMES".into(), names.join(":"))]
}

/// The fd numbers the sockets occupy in the child: 3..3+n.
pub fn listen_fd_numbers(count: usize) -> Range<RawFd> {
    FIRST_FD..FIRST_FD + RawFd::try_from(count).unwrap_or(RawFd::MAX - FIRST_FD)
}

fn bind_one(spec: &ListenSpec, owner: Option<SocketOwner>) -> Result<BoundSocket, ListenError> {
    let key = spec.address.to_string();
    let (fd, path) = match &spec.address {
        ListenAddr::Tcp { host, port } => (bind_tcp(&key, host, *port)?, None),
        ListenAddr::Unix(path) => (bind_unix(&key, path, spec.mode, owner)?, Some(path.clone())),
    };
    Ok(BoundSocket { key, name: spec.name.clone(), fd, path })
}

/// Binds the first address `host` resolves to, with SO_REUSEADDR so a
/// restarted daemon can bind while old connections sit in TIME_WAIT.
pub fn bind_tcp(key: &str, host: &str, port: u16) -> Result<OwnedFd, ListenError> {
    let bad_host = |reason: String| ListenError::BadHost { address: key.into(), host: host.into(), reason };
    let addr: SocketAddr = (host, port)
        .to_socket_addrs()
        .map_err(|e| bad_host(e.to_string()))?
        .next()
        .ok_or_else(|| bad_host("no address found".into()))?;
    let family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let io = |action| move |errno: Errno| errno_error(key, action, errno, port < 1024);
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).map_err(io("create socket"))?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(io("set SO_REUSEADDR"))?;
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr)).map_err(io("bind"))?;
    listen(&fd, Backlog::new(BACKLOG).map_err(io("set backlog"))?).map_err(io("listen"))?;
    Ok(fd)
}

/// Binds a Unix stream socket, first removing a stale socket file (one
/// that nobody accepts on any more) but never a live socket or another
/// kind of file; then applies `mode` and `owner`.
pub fn bind_unix(
    key: &str,
    path: &Path,
    mode: Option<u32>,
    owner: Option<SocketOwner>,
) -> Result<OwnedFd, ListenError> {
    let io_err = |action, source| ListenError::Io { address: key.into(), action, source };
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ListenError::InUse { address: key.into() });
            }
            fs::remove_file(path).map_err(|e| io_err("remove the stale socket file", e))?;
        }
        Ok(_) => return Err(ListenError::NotASocket { address: key.into(), path: path.to_path_buf() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("inspect the socket path", e)),
    }
    let io = |action| move |errno: Errno| errno_error(key, action, errno, false);
    let fd =
        socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).map_err(io("create socket"))?;
    let addr = UnixAddr::new(path).map_err(io("make the socket address"))?;
    bind(fd.as_raw_fd(), &addr).map_err(io("bind"))?;
    listen(&fd, Backlog::new(BACKLOG).map_err(io("set backlog"))?).map_err(io("listen"))?;
    if let Some(mode) = mode {
        set_mode(key, path, mode)?;
    }
    if let Some(owner) = owner {
        std::os::unix::fs::chown(path, Some(owner.uid), Some(owner.gid))
            .map_err(|e| io_err("give the socket file to the app's user", e))?;
    }
    Ok(fd)
}

fn set_mode(key: &str, path: &Path, mode: u32) -> Result<(), ListenError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|source| ListenError::Io {
        address: key.into(),
        action: "set the socket file's mode",
        source,
    })
}

fn remove_if_socket(path: &Path) {
    if fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_socket()) {
        let _ = fs::remove_file(path);
    }
}

fn errno_error(key: &str, action: &'static str, errno: Errno, privileged_port: bool) -> ListenError {
    match errno {
        Errno::EADDRINUSE => ListenError::InUse { address: key.into() },
        Errno::EACCES | Errno::EPERM => ListenError::PermissionDenied {
            address: key.into(),
            hint: if privileged_port {
                " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
            } else {
                " (check the directory's permissions)"
            },
        },
        Errno::EADDRNOTAVAIL => ListenError::BadHost {
            address: key.into(),
            host: key.into(),
            reason: "the address is not one of this host's".into(),
        },
        other => ListenError::Io { address: key.into(), action, source: io::Error::from(other) },
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;
    use std::os::unix::net::UnixStream;

    use super::*;

    fn tcp(host: &str, port: u16) -> ListenSpec {
        ListenSpec { address: ListenAddr::Tcp { host: host.into(), port }, name: format!("tcp-{port}"), mode: None }
    }

    fn unix(path: &Path, mode: Option<u32>) -> ListenSpec {
        ListenSpec { address: ListenAddr::Unix(path.to_path_buf()), name: "unix".into(), mode }
    }

    /// A port that was free a moment ago.
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    fn listener(fd: &OwnedFd) -> std::net::TcpListener {
        std::net::TcpListener::from(fd.try_clone().unwrap())
    }

    #[test]
    fn binds_tcp_and_accepts_connections() {
        let port = free_port();
        let set = ListenSet::bind(&[tcp("127.0.0.1", port)], None).unwrap();
        assert_eq!(set.len(), 1);
        let accept = listener(&set.sockets()[0].fd);
        let _client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        accept.accept().unwrap();
        let flags = nix::fcntl::fcntl(&set.sockets()[0].fd, nix::fcntl::FcntlArg::F_GETFL).unwrap();
        assert_eq!(flags & libc::O_NONBLOCK, 0, "left blocking for the children to decide");
        assert_eq!(
            set.env(),
            [("LISTEN_FDS".to_string(), "1".to_string()), ("LISTEN_FDNAMES".into(), format!("tcp-{port}"))]
        );
    }

    #[test]
    fn ipv6_and_hostnames_and_any_address() {
        let port = free_port();
        ListenSet::bind(&[tcp("localhost", port)], None).unwrap();
        let port = free_port();
        ListenSet::bind(&[tcp("0.0.0.0", port)], None).unwrap();
        if std::net::TcpListener::bind("[::1]:0").is_ok() {
            let port = free_port();
            let set = ListenSet::bind(&[tcp("::1", port)], None).unwrap();
            assert_eq!(set.sockets()[0].key, format!("tcp://[::1]:{port}"));
        }
    }

    #[test]
    fn errors_name_the_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let error = ListenSet::bind(&[tcp("127.0.0.1", port)], None).unwrap_err();
        assert!(matches!(error, ListenError::InUse { .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            format!("cannot listen on tcp://127.0.0.1:{port}: address already in use (another process listens there)")
        );
        let error = ListenSet::bind(&[tcp("no-such-host.invalid", 8080)], None).unwrap_err();
        assert!(matches!(error, ListenError::BadHost { .. }), "{error:?}");
        assert!(error.to_string().starts_with("cannot listen on tcp://no-such-host.invalid:8080: cannot resolve"));
        let error = ListenSet::bind(&[tcp("192.0.2.1", 8080)], None).unwrap_err();
        assert!(error.to_string().contains("not one of this host's"), "{error}");
        if !nix::unistd::geteuid().is_root() {
            let error = ListenSet::bind(&[tcp("127.0.0.1", 80)], None).unwrap_err();
            assert!(matches!(error, ListenError::PermissionDenied { .. }), "{error:?}");
        }
    }

    #[test]
    fn unix_sockets_replace_stale_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.sock");
        // A stale socket: bound, then its listener closed.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let set = ListenSet::bind(&[unix(&path, Some(0o660))], None).unwrap();
        UnixStream::connect(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o660);
        // A live one is not taken over.
        let error = ListenSet::bind(&[unix(&path, None)], None).unwrap_err();
        assert!(matches!(error, ListenError::InUse { .. }), "{error:?}");
        drop(set);
        let file = dir.path().join("file");
        fs::write(&file, "keep me").unwrap();
        let error = ListenSet::bind(&[unix(&file, None)], None).unwrap_err();
        assert!(matches!(error, ListenError::NotASocket { .. }), "{error:?}");
        assert_eq!(fs::read_to_string(&file).unwrap(), "keep me");
    }

    #[test]
    fn update_keeps_unchanged_sockets_and_rebinds_only_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("a.sock");
        let (p1, p2) = (free_port(), free_port());
        let mut set = ListenSet::bind(&[tcp("127.0.0.1", p1), unix(&sock, None)], None).unwrap();
        let kept = set.sockets()[0].fd.as_raw_fd();
        let closed =
            set.update(&[ListenSpec { name: "http".into(), ..tcp("127.0.0.1", p1) }, tcp("127.0.0.1", p2)], None);
        assert_eq!(closed.unwrap(), [format!("unix://{}", sock.display())]);
        assert_eq!(set.sockets()[0].fd.as_raw_fd(), kept, "same socket, not rebound");
        assert!(!sock.exists(), "the removed unix socket's file is gone");
        assert_eq!(set.env()[1].1, format!("http:tcp-{p2}"));
        TcpStream::connect(("127.0.0.1", p2)).unwrap();

        // A failing update changes nothing.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p3 = taken.local_addr().unwrap().port();
        let before: Vec<RawFd> = set.sockets().iter().map(|s| s.fd.as_raw_fd()).collect();
        set.update(&[tcp("127.0.0.1", p3)], None).unwrap_err();
        let after: Vec<RawFd> = set.sockets().iter().map(|s| s.fd.as_raw_fd()).collect();
        assert_eq!(before, after);
        assert_eq!(set.sockets()[0].name, "http");
    }

    #[test]
    fn env_and_fd_numbers() {
        assert!(listen_env(&[]).is_empty());
        assert_eq!(
            listen_env(&["http", "admin"]),
            [("LISTEN_FDS".to_string(), "2".to_string()), ("LISTEN_FDNAMES".into(), "http:admin".into())]
        );
        assert_eq!(listen_fd_numbers(2), 3..5);
        assert_eq!(listen_fd_numbers(0), 3..3);
    }
}
