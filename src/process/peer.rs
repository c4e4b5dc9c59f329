//! The control socket's needs from the kernel: who is on the other end
//! (`SO_PEERCRED`), and who may connect (the socket file's mode).

use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

/// The uid of the process that connected to the control socket, as the kernel
/// recorded it at `connect` time (it cannot be forged by the client).
pub fn peer_uid(stream: &tokio::net::UnixStream) -> io::Result<u32> {
    uid_of(stream)
}

/// [`peer_uid`] for a blocking `std` stream (CLI side, tests).
pub fn peer_uid_std(stream: &std::os::unix::net::UnixStream) -> io::Result<u32> {
    uid_of(stream)
}

fn uid_of(fd: &impl AsFd) -> io::Result<u32> {
    let cred = getsockopt(fd, PeerCredentials).map_err(io::Error::from)?;
    Ok(cred.uid())
}

/// Sets the permission bits of the socket file at `path` (`chmod`), e.g.
/// 0o600 so that only the daemon's user may connect; Linux checks write
/// permission on the file at `connect`.
pub fn set_socket_mode(path: &Path, mode: u32) -> io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::{UnixListener, UnixStream};

    #[test]
    fn peer_is_ourselves_and_mode_applies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let listener = UnixListener::bind(&path).unwrap();
        set_socket_mode(&path, 0o600).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let client = UnixStream::connect(&path).unwrap();
        let (server, _) = listener.accept().unwrap();
        assert_eq!(peer_uid_std(&server).unwrap(), super::super::current_uid());
        assert_eq!(peer_uid_std(&client).unwrap(), super::super::current_uid());
    }
}
