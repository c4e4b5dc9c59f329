//! `procd startup` / `procd unstartup`: the init-system file that starts the
//! daemon at boot, for systemd, upstart, launchd, OpenRC, FreeBSD rc.d and
//! SysV init.
//!
//! Rendering is pure ([`render`]: a [`Platform`] and [`Options`] in, a
//! [`Rendered`] file and its commands out), so every template is snapshot
//! tested; only [`install`] touches the system and only [`detect`] looks at
//! it.
//!
//! Every file runs `<this binary> daemon --keep-apps`: stopping the service
//! stops the daemon but not the apps (a keeper process holds them and the
//! next daemon adopts them), so restarting procd or upgrading it never
//! restarts an app. `procd stop all` is how an operator stops the apps.
//! Nothing depends on a language runtime's location (PM2 bakes node's path
//! into PATH): the daemon resolves interpreters itself, so PATH is the plain
//! system one.

mod account;
mod install;
mod launchd;
mod openrc;
mod quote;
mod rcd;
mod systemd;
mod systemv;
mod upstart;

use std::fmt;
use std::path::{Path, PathBuf};

pub use account::{Account, lookup_account};
pub use install::{install, uninstall};

/// The PATH every generated file sets: the system directories and nothing
/// tied to an interpreter's install.
pub const PLAIN_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// An init system procd can generate a file for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Platform {
    Systemd,
    Upstart,
    Launchd,
    Openrc,
    Rcd,
    Systemv,
}

impl Platform {
    pub const ALL: [Platform; 6] =
        [Platform::Systemd, Platform::Upstart, Platform::Launchd, Platform::Openrc, Platform::Rcd, Platform::Systemv];

    /// The name used on the command line and in file names.
    pub fn name(self) -> &'static str {
        match self {
            Platform::Systemd => "systemd",
            Platform::Upstart => "upstart",
            Platform::Launchd => "launchd",
            Platform::Openrc => "openrc",
            Platform::Rcd => "rcd",
            Platform::Systemv => "systemv",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the generated file must say, all resolved: no lookup happens while
/// rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Absolute path of the procd binary the init system runs.
    pub binary: PathBuf,
    /// The service's name (file name, unit name, launchd label).
    pub service_name: String,
    /// The account the daemon runs as; `None`: root.
    pub run_as: Option<Account>,
    /// Passed to the daemon as `--home` (socket, state and logs under it).
    pub home: Option<PathBuf>,
    /// Passed to the daemon as `--config-dir`.
    pub config_dir: Option<PathBuf>,
}

impl Options {
    /// The daemon's argv after the binary.
    pub fn daemon_args(&self) -> Vec<String> {
        let mut args = vec!["daemon".to_string(), "--keep-apps".to_string()];
        args.extend(self.location_args());
        args
    }

    /// `--config-dir` and `--home` as given: what a client needs too to
    /// reach this daemon.
    pub fn location_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(dir) = &self.config_dir {
            args.extend(["--config-dir".to_string(), dir.display().to_string()]);
        }
        if let Some(home) = &self.home {
            args.extend(["--home".to_string(), home.display().to_string()]);
        }
        args
    }

    /// The environment of the daemon: PATH, and HOME/USER/LOGNAME for
    /// another user, since not every init system sets them.
    pub fn environment(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("PATH", PLAIN_PATH.to_string())];
        if let Some(a) = &self.run_as {
            env.push(("HOME", a.home.display().to_string()));
            env.push(("USER", a.name.clone()));
            env.push(("LOGNAME", a.name.clone()));
        }
        env
    }
}

/// The default service name: `procd`, or `procd-USER` for another user, so
/// a root daemon and per-user daemons can coexist.
pub fn default_service_name(user: Option<&str>) -> String {
    match user {
        Some(user) if user != "root" => format!("procd-{user}"),
        _ => "procd".to_string(),
    }
}

/// Accepts a service name that is safe as a file name, a unit name, a
/// launchd label and (with `-`/`.` mapped to `_`) an rc.d variable.
pub fn parse_service_name(name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['-', '.'])
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok { Ok(name.to_string()) } else { Err("use letters, digits, `-`, `_` and `.` (at most 64)".to_string()) }
}

/// Why `startup` or `unstartup` could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("--install needs root (try sudo); without --install procd prints the file and the commands instead")]
    NotRoot,
    #[error("no such user: {0}")]
    UnknownUser(String),
    #[error("the account entry of {user} is malformed: {line:?}")]
    BadAccountEntry { user: String, line: String },
    #[error("cannot find the path of this procd binary: {0}")]
    Binary(#[source] std::io::Error),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot remove {path}: {source}")]
    Remove { path: PathBuf, source: std::io::Error },
    #[error("cannot run `{command}`: {source}")]
    Spawn { command: String, source: std::io::Error },
    #[error("`{command}` failed ({status})")]
    Command { command: String, status: std::process::ExitStatus },
}

/// A command to run, as argv (never through a shell unless argv says so).
pub type Cmd = Vec<String>;

/// The file for one platform and what to run around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub platform: Platform,
    /// Where the init system looks for it.
    pub path: PathBuf,
    /// File mode: 0o755 for scripts, 0o644 for declarative files.
    pub mode: u32,
    pub contents: String,
    /// Run after writing the file: register, enable and start the service.
    pub install_cmds: Vec<Cmd>,
    /// Run before removing the file: stop (the daemon only) and disable.
    pub uninstall_cmds: Vec<Cmd>,
    /// Run after removing the file (e.g. `systemctl daemon-reload`).
    pub after_remove_cmds: Vec<Cmd>,
}

/// Renders the file for `platform`.
pub fn render(platform: Platform, opts: &Options) -> Rendered {
    match platform {
        Platform::Systemd => systemd::render(opts),
        Platform::Upstart => upstart::render(opts),
        Platform::Launchd => launchd::render(opts),
        Platform::Openrc => openrc::render(opts),
        Platform::Rcd => rcd::render(opts),
        Platform::Systemv => systemv::render(opts),
    }
}

/// Prints a command for a human to run (POSIX shell quoting).
pub fn shell_line(cmd: &[String]) -> String {
    cmd.iter().map(|a| quote::sh(a)).collect::<Vec<_>>().join(" ")
}

fn cmd(args: &[&str]) -> Cmd {
    args.iter().map(|a| a.to_string()).collect()
}

/// What [`detect`] looks at, gathered apart so the decision is tested.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// `std::env::consts::OS`.
    pub os: &'static str,
    /// `/run/systemd/system` is a directory: systemd is PID 1.
    pub systemd_running: bool,
    /// `/sbin/openrc-run` exists.
    pub openrc: bool,
    /// `/sbin/initctl` exists and `/etc/init` is a directory.
    pub upstart: bool,
}

impl HostFacts {
    pub fn probe() -> HostFacts {
        HostFacts {
            os: std::env::consts::OS,
            systemd_running: Path::new("/run/systemd/system").is_dir(),
            openrc: Path::new("/sbin/openrc-run").exists(),
            // Not `/sbin/init --version`: on a SysV host that binary is
            // telinit when not PID 1, and running it is not harmless.
            upstart: Path::new("/sbin/initctl").exists() && Path::new("/etc/init").is_dir(),
        }
    }
}

/// The init system of this host.
pub fn detect() -> Platform {
    detect_from(&HostFacts::probe())
}

/// The init system a host with these facts runs; SysV when nothing else fits.
pub fn detect_from(facts: &HostFacts) -> Platform {
    match facts.os {
        "macos" => Platform::Launchd,
        "freebsd" => Platform::Rcd,
        _ if facts.systemd_running => Platform::Systemd,
        _ if facts.openrc => Platform::Openrc,
        _ if facts.upstart => Platform::Upstart,
        _ => Platform::Systemv,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_prefers_the_running_init_system() {
        let linux = HostFacts { os: "linux", ..HostFacts::default() };
        let cases = [
            (HostFacts { os: "macos", ..HostFacts::default() }, Platform::Launchd),
            (HostFacts { os: "freebsd", ..HostFacts::default() }, Platform::Rcd),
            (HostFacts { systemd_running: true, openrc: true, upstart: true, ..linux.clone() }, Platform::Systemd),
            (HostFacts { openrc: true, upstart: true, ..linux.clone() }, Platform::Openrc),
            (HostFacts { upstart: true, ..linux.clone() }, Platform::Upstart),
            (linux, Platform::Systemv),
        ];
        for (facts, want) in cases {
            assert_eq!(detect_from(&facts), want, "{facts:?}");
        }
    }

    #[test]
    fn service_names_are_checked_not_trusted() {
        assert_eq!(default_service_name(None), "procd");
        assert_eq!(default_service_name(Some("root")), "procd");
        assert_eq!(default_service_name(Some("app")), "procd-app");
        for good in ["procd", "procd-app", "web_1.svc"] {
            assert!(parse_service_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", ".x", "a b", "a/b", "a;rm", "é"] {
            assert!(parse_service_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_daemon_keeps_apps_and_gets_the_locations_given() {
        let opts = Options {
            binary: "/usr/local/bin/procd".into(),
            service_name: "procd".into(),
            run_as: None,
            home: Some("/srv/procd".into()),
            config_dir: Some("/etc/x".into()),
        };
        assert_eq!(opts.daemon_args(), ["daemon", "--keep-apps", "--config-dir", "/etc/x", "--home", "/srv/procd"]);
        assert_eq!(opts.environment(), [("PATH", PLAIN_PATH.to_string())]);
    }
}
