//! Where procd keeps its config, socket, state and logs: the FHS layout for
//! root, the XDG layout for other users, and one `--home` override that puts
//! everything but the config dir under a single directory (PM2's PM2_HOME),
//! so several daemons can run side by side.

use std::env;
use std::path::{Path, PathBuf};

/// The resolved locations of one daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The conf.d directory the daemon watches.
    pub config_dir: PathBuf,
    /// The control socket.
    pub socket: PathBuf,
    /// Operator state (`state.json`) and CLI-created apps (`apps/`).
    pub state_dir: PathBuf,
    /// Default directory of the apps' log files and of the daemon's own log.
    pub log_dir: PathBuf,
}

impl Paths {
    /// Resolves the paths from explicit overrides, then the environment
    /// (`PROCD_CONFIG_DIR`, `PROCD_HOME`), then the defaults for this uid.
    pub fn resolve(config_dir: Option<&Path>, home: Option<&Path>) -> Paths {
        Self::resolve_relative(config_dir, home).absolute()
    }

    /// Makes every path absolute against the current directory, so a
    /// relative `--home` means the same to the daemon, its apps and clients
    /// started elsewhere.
    fn absolute(self) -> Paths {
        let abs = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
        Paths {
            config_dir: abs(self.config_dir),
            socket: abs(self.socket),
            state_dir: abs(self.state_dir),
            log_dir: abs(self.log_dir),
        }
    }

    fn resolve_relative(config_dir: Option<&Path>, home: Option<&Path>) -> Paths {
        let root = crate::process::current_uid() == 0;
        let config_dir = config_dir
            .map(Path::to_path_buf)
            .or_else(|| env::var_os("PROCD_CONFIG_DIR").map(PathBuf::from))
            .unwrap_or_else(|| default_config_dir(root));
        let home = home.map(Path::to_path_buf).or_else(|| env::var_os("PROCD_HOME").map(PathBuf::from));
        match home {
            Some(home) => Paths {
                config_dir,
                socket: home.join("procd.sock"),
                state_dir: home.join("state"),
                log_dir: home.join("logs"),
            },
            None if root => Paths {
                config_dir,
                socket: PathBuf::from("/run/procd/procd.sock"),
                state_dir: PathBuf::from("/var/lib/procd"),
                log_dir: PathBuf::from("/var/log/procd"),
            },
            None => {
                let user_home = env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"));
                let state = env::var_os("XDG_STATE_HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| user_home.join(".local/state"))
                    .join("procd");
                let socket = match env::var_os("XDG_RUNTIME_DIR") {
                    Some(runtime) => PathBuf::from(runtime).join("procd/procd.sock"),
                    None => state.join("procd.sock"),
                };
                Paths { config_dir, socket, log_dir: state.join("logs"), state_dir: state }
            }
        }
    }

    /// The directory of apps created with `procd start SCRIPT`.
    pub fn cli_apps_dir(&self) -> PathBuf {
        self.state_dir.join("apps")
    }

    /// The operator state file.
    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join("state.json")
    }

    /// The keeper's pid, for operators and tests (informational).
    pub fn keeper_pid_file(&self) -> PathBuf {
        self.state_dir.join("keeper.pid")
    }

    /// Where the keeper listens for the daemon (mode 0600).
    pub fn keeper_socket(&self) -> PathBuf {
        self.state_dir.join("keeper.sock")
    }
}

fn default_config_dir(root: bool) -> PathBuf {
    if root {
        return PathBuf::from("/etc/procd/conf.d");
    }
    env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("/etc"))
        .join("procd/conf.d")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_puts_everything_but_the_config_dir_under_it() {
        let p = Paths::resolve(Some(Path::new("/c")), Some(Path::new("/h")));
        assert_eq!(p.config_dir, Path::new("/c"));
        assert_eq!(p.socket, Path::new("/h/procd.sock"));
        assert_eq!(p.state_dir, Path::new("/h/state"));
        assert_eq!(p.log_dir, Path::new("/h/logs"));
        assert_eq!(p.cli_apps_dir(), Path::new("/h/state/apps"));
    }
}
