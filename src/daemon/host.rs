//! The daemon's dealings with its host: its cgroup subtree, the
//! environment it passes on, the service manager (sd_notify), replacing its
//! own image, and routing the apps' notify datagrams.

use std::sync::Arc;
use std::time::Duration;

use super::DaemonError;
use crate::paths::Paths;
use crate::process;
use crate::supervisor::ExitRouter;
use crate::supervisor::task::Control;

/// Hands each notify datagram to the instance it comes from: the sender's
/// pid, or the nearest ancestor of it that is an instance leader (a worker
/// process of the app may send READY=1 too).
pub(super) async fn route_notifications(socket: crate::ready::NotifySocket, router: ExitRouter) {
    loop {
        let datagram = match socket.recv().await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("notify socket: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let routes = router.routes();
        let mut pid = datagram.pid;
        for _ in 0..8 {
            if let Some((leader, route)) = routes.iter().find(|(p, _)| *p == pid) {
                route.send(Control::Notify { pid: *leader, messages: datagram.messages });
                break;
            }
            match crate::monitor::parent_pid(pid) {
                Some(parent) if parent > 1 => pid = parent,
                _ => break,
            }
        }
    }
}

/// Tells the service manager, if any, about our state; a failure is worth a
/// warning only.
pub(super) fn sd_notify(state: &str) {
    if let Err(e) = crate::sd_notify::notify(state) {
        tracing::warn!("cannot notify the service manager ({state}): {e}");
    }
}

/// Replaces this process by `exe` with the same arguments: the pid (and a
/// service manager's view of it) stays, the new image adopts everything
/// from the keeper. Returns only on failure.
pub(super) fn reexec(exe: &std::path::Path) -> DaemonError {
    use std::os::unix::process::CommandExt;
    let source = std::process::Command::new(exe).args(std::env::args_os().skip(1)).exec();
    DaemonError::Reexec { exe: exe.to_owned(), source }
}

/// The daemon's cgroup v2 subtree, named after its state dir so that
/// several daemons side by side never share one.
pub(super) fn detect_cgroups(paths: &Paths) -> Option<Arc<process::CgroupRoot>> {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(paths.state_dir.as_os_str().as_encoded_bytes());
    let name = format!("procd-{:02x}{:02x}{:02x}{:02x}", digest[0], digest[1], digest[2], digest[3]);
    match process::CgroupRoot::detect(&name) {
        Ok(Some(root)) => {
            tracing::info!("each instance runs in its own cgroup under {}", root.path().display());
            Some(Arc::new(root))
        }
        Ok(None) => {
            tracing::info!("no writable cgroup v2 hierarchy: stops reach process groups only");
            None
        }
        Err(e) => {
            tracing::warn!("cgroups unavailable: {e}; stops reach process groups only");
            None
        }
    }
}

/// The daemon's environment minus what belongs to the daemon alone (its
/// own socket activation and notify socket).
pub(super) fn base_env() -> Vec<(String, String)> {
    const PRIVATE: &[&str] =
        &["NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID"];
    std::env::vars().filter(|(k, _)| !PRIVATE.contains(&k.as_str())).collect()
}
