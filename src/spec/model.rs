//! The typed, validated form of an app spec: what the rest of procd consumes.
//!
//! [`AppSpec`] is what one `app` node of a conf.d file means once it has been
//! decoded, validated and resolved (env profile applied, env files read,
//! interpreter found). Everything that defines *one instance* lives in
//! [`InstanceSpec`], and only that is hashed ([`SpecHash`]); the instance count
//! and where the app was declared are outside it, so scaling or moving an app
//! between files never restarts it. No I/O happens in this module.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One declared app, validated and resolved, ready to reconcile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppSpec {
    /// Unique app name across the whole config dir and the state dir.
    pub name: String,
    /// Where the app was declared; shown in `status` and used by `delete` to
    /// refuse removing conf.d apps.
    pub source: SourceRef,
    /// How many instances to run; deliberately outside the hash.
    pub instances: Instances,
    /// Everything that defines one instance; the hash is taken over this.
    pub template: InstanceSpec,
    /// Hash of the canonical JSON form of `template`.
    pub hash: SpecHash,
    /// Restart an instance whose process tree's resident memory passes this.
    /// A policy over instances, not part of one: outside the hash, so
    /// changing it applies at once without restarting anything.
    pub max_memory: Option<MemoryLimit>,
    /// Restart the app when files under these paths change. Outside the
    /// hash for the same reason.
    pub watch: Option<WatchSpec>,
    /// Sockets procd binds and hands to every instance (`LISTEN_FDS`). A
    /// property of the app, not of one instance: the sockets outlive every
    /// instance, so they are outside the hash; a change rebinds only the
    /// addresses that changed and rolls the instances over.
    pub listen: Vec<ListenSpec>,
    /// When a started instance counts as ready; a policy, outside the hash.
    pub ready: ReadySpec,
    /// How a reload replaces instances; a policy, outside the hash.
    pub rollout: RolloutSpec,
}

/// `listen "tcp://127.0.0.1:8080" name="http"` or
/// `listen "unix:///run/web.sock" mode="0660"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListenSpec {
    /// What to bind; its text form is the socket's identity across spec changes.
    pub address: ListenAddr,
    /// The socket's entry in `LISTEN_FDNAMES` (`tcp-8080` unless given), so
    /// an app with several sockets can tell them apart.
    pub name: String,
    /// Permission bits of a Unix socket file; `None` leaves the umask's.
    pub mode: Option<u32>,
}

/// A listening address, kept as written apart from normalisation
/// (`tcp://:8080` is `tcp://0.0.0.0:8080`; Unix paths are absolute after
/// resolving).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(into = "String")]
pub enum ListenAddr {
    /// A host name or IP literal (without brackets) and a port.
    Tcp {
        host: String,
        port: u16,
    },
    Unix(PathBuf),
}

impl fmt::Display for ListenAddr {
    /// `tcp://HOST:PORT` (IPv6 in brackets) or `unix:///PATH`: the form
    /// status shows and the key of the app's socket set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp { host, port } if host.contains(':') => write!(f, "tcp://[{host}]:{port}"),
            ListenAddr::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            ListenAddr::Unix(path) => write!(f, "unix://{}", path.display()),
        }
    }
}

impl From<ListenAddr> for String {
    fn from(addr: ListenAddr) -> String {
        addr.to_string()
    }
}

/// `ready "notify" timeout="3s"` and its siblings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadySpec {
    pub check: ReadyCheck,
    /// How long a new instance has to become ready (PM2's `listen_timeout`);
    /// past it a rollout stops and the old instances keep serving.
    #[serde(with = "duration_ms")]
    pub timeout: Duration,
}

impl ReadySpec {
    /// PM2's `listen_timeout` default.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
}

impl Default for ReadySpec {
    fn default() -> Self {
        ReadySpec { check: ReadyCheck::None, timeout: Self::DEFAULT_TIMEOUT }
    }
}

/// How readiness is observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum ReadyCheck {
    /// Ready as soon as the program has been executed.
    None,
    /// The systemd protocol (`READY=1` on `NOTIFY_SOCKET`), or for Node
    /// `process.send('ready')` as under PM2's `wait_ready`.
    Notify {
        /// Restart an instance that sends no `WATCHDOG=1` for this long.
        #[serde(with = "option_duration_ms")]
        watchdog: Option<Duration>,
    },
    /// A TCP connect to `HOST:PORT` succeeds.
    Tcp { address: String },
    /// `GET URL` answers 2xx (plain `http://` only).
    Http { url: String },
    /// The command exits 0; run in the app's cwd with its env.
    Exec { argv: Vec<String> },
}

/// `rollout max-surge=1 max-unavailable=0`: Kubernetes' two knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RolloutSpec {
    /// New instances that may run beyond the desired count during a reload.
    pub max_surge: u32,
    /// Old instances that may be stopped before their replacement is ready.
    pub max_unavailable: u32,
}

impl Default for RolloutSpec {
    /// One extra instance at a time and never fewer than desired: the
    /// zero-downtime order (start, wait ready, then stop one old).
    fn default() -> Self {
        RolloutSpec { max_surge: 1, max_unavailable: 0 }
    }
}

/// `max-memory "300M" every="1s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemoryLimit {
    /// Resident bytes of the instance's whole process tree (or cgroup).
    pub bytes: u64,
    /// How often to compare; `None` means the daemon's `--sample-every`.
    #[serde(with = "option_duration_ms")]
    pub every: Option<Duration>,
}

/// `watch "src" "config" { ignore ...; debounce "100ms"; poll #false; follow-symlinks #false }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatchSpec {
    /// Absolute paths watched recursively (the app's cwd for `watch #true`).
    pub paths: Vec<PathBuf>,
    /// Globs of paths to ignore, matched against the path relative to the
    /// watched root and against each path component; `.git`,
    /// `node_modules` and the app's own log files are always ignored.
    pub ignore: Vec<String>,
    /// Changes within this quiet time collapse into one restart (PM2's `watch_delay`).
    #[serde(with = "duration_ms")]
    pub debounce: Duration,
    /// Poll instead of inotify (network file systems).
    pub poll: bool,
    /// Descend into symlinked directories.
    pub follow_symlinks: bool,
}

impl WatchSpec {
    /// Default quiet time between a change and the restart.
    pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(100);
}

/// The file and line of an `app` node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRef {
    pub file: PathBuf,
    pub line: usize,
    /// True when the app was created by `procd start SCRIPT` and lives in the
    /// state dir rather than the config dir.
    pub cli_created: bool,
}

/// The requested instance count, kept symbolic so that `max` follows the CPU
/// count of the host the daemon runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Instances {
    /// Exactly N (N >= 1).
    Count(u32),
    /// One per CPU.
    Max,
    /// CPUs minus N, at least one.
    CpusMinus(u32),
}

impl Instances {
    /// The concrete count for a host with `cpus` CPUs; never below one.
    pub fn resolve(self, cpus: u32) -> u32 {
        match self {
            Instances::Count(n) => n.max(1),
            Instances::Max => cpus.max(1),
            Instances::CpusMinus(n) => cpus.saturating_sub(n).max(1),
        }
    }
}

/// Everything that defines one running instance. Field order is the
/// canonical order of the hash; maps are sorted, so formatting, comments and
/// key order in the KDL file never change the hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceSpec {
    /// The full argv, interpreter included and resolved to an absolute path
    /// when it came from an extension or a bare name.
    pub argv: Vec<String>,
    /// Working directory; `None` means the directory of the declaring file
    /// for conf.d apps (resolved at load time, so it is always `Some` after
    /// loading) .
    pub cwd: Option<PathBuf>,
    /// The final environment the spec adds, after env-file, `env` and the
    /// selected profile were merged (later wins). Contents of env files are
    /// included, so editing an env file restarts the app.
    pub env: BTreeMap<String, String>,
    /// User to run as (name or numeric uid); `None` keeps the daemon's.
    pub user: Option<String>,
    /// Primary group; `None` means the user's primary group.
    pub group: Option<String>,
    /// Supplementary groups; empty means the user's groups from /etc/group.
    pub groups: Vec<String>,
    pub stop: StopSpec,
    pub restart: RestartSpec,
    pub logs: LogSpec,
}

/// How an instance is stopped: this signal to its process group, then
/// SIGKILL to the group after `timeout`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StopSpec {
    /// Signal number; decoded from names like "SIGINT", "INT" or numbers.
    pub signal: i32,
    #[serde(with = "duration_ms")]
    pub timeout: Duration,
}

impl Default for StopSpec {
    /// PM2's defaults: SIGINT, then SIGKILL after 1600 ms.
    fn default() -> Self {
        StopSpec { signal: 2, timeout: Duration::from_millis(1600) }
    }
}

/// When an exited instance is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RestartSpec {
    pub policy: RestartPolicy,
    /// Fixed delay before a restart (PM2 `restart_delay`).
    #[serde(with = "duration_ms")]
    pub delay: Duration,
    /// Exponential backoff; when set it replaces `delay`.
    pub backoff: Option<BackoffSpec>,
    /// Consecutive short-lived exits allowed before `errored` (PM2 16).
    pub max_restarts: u32,
    /// An exit after less than this uptime counts as short-lived (PM2 1 s).
    #[serde(with = "duration_ms")]
    pub min_uptime: Duration,
}

impl Eq for RestartSpec {}

impl Default for RestartSpec {
    fn default() -> Self {
        RestartSpec {
            policy: RestartPolicy::Always,
            delay: Duration::ZERO,
            backoff: None,
            max_restarts: 16,
            min_uptime: Duration::from_secs(1),
        }
    }
}

/// PM2's exponential backoff: next = floor(min(max, previous * factor)).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackoffSpec {
    #[serde(with = "duration_ms")]
    pub initial: Duration,
    pub factor: f64,
    #[serde(with = "duration_ms")]
    pub max: Duration,
    #[serde(with = "duration_ms")]
    pub reset_after: Duration,
}

impl Default for BackoffSpec {
    fn default() -> Self {
        BackoffSpec {
            initial: Duration::from_millis(100),
            factor: 1.5,
            max: Duration::from_secs(15),
            reset_after: Duration::from_secs(30),
        }
    }
}

/// Where an instance's output goes. `None` paths mean the defaults in the
/// daemon's log dir (`<app>-out.log`, `<app>-err.log`); unless `merge` is
/// set, instance N >= 1 writes to `<app>-out-N.log` (and so on), so
/// instance 0's files keep their names when the app is scaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct LogSpec {
    pub out: Option<PathBuf>,
    pub err: Option<PathBuf>,
    pub combined: Option<PathBuf>,
    pub format: LogFormat,
    /// strftime-style prefix for plain lines.
    pub timestamp: Option<String>,
    /// All instances share the same files.
    pub merge: bool,
    pub rotate: Option<RotateSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    #[default]
    Plain,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RotateSpec {
    /// Rotate when a file would pass this many bytes.
    pub size: u64,
    /// Rotated files kept (`file.1` .. `file.N`).
    pub keep: u32,
    pub compress: bool,
}

/// Hex SHA-256 of an [`InstanceSpec`]'s canonical JSON.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(transparent)]
pub struct SpecHash(pub String);

impl fmt::Display for SpecHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) mod option_duration_ms {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }
}

/// Durations serialize as whole milliseconds so the canonical form is stable.
pub(crate) mod duration_ms {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}
