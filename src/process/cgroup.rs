//! Cgroup v2 containment: the daemon's own subtree ([`CgroupRoot`]) and one
//! cgroup per app instance ([`InstanceCgroup`]).
//!
//! A process group misses every descendant that called `setsid` (a
//! double-forked daemon); a cgroup does not, since a process cannot leave it
//! without write access to the hierarchy. So where the host has a writable
//! cgroup2 hierarchy, each instance joins its own cgroup before `exec` (see
//! [`LaunchSpec::cgroup`](super::LaunchSpec::cgroup)) and a stop ends with
//! [`InstanceCgroup::kill_all`]. Where it has none, procd relies on process
//! groups alone: nothing here is required to run.
//!
//! The hierarchy is found through `/proc/self/mountinfo` (fstype `cgroup2`),
//! never by a fixed path: it is `/sys/fs/cgroup` on a pure v2 host and
//! `/sys/fs/cgroup/unified` on a hybrid one. The subtree is created under the
//! daemon's own cgroup (`0::` in `/proc/self/cgroup`), the only place systemd
//! lets a service with `Delegate=yes` create cgroups.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A failed cgroup file operation, carried inside the `io::Error`s of this
/// module so that the message names the path.
#[derive(Debug, thiserror::Error)]
#[error("{doing} {}: {source}", path.display())]
pub struct CgroupError {
    /// What was attempted: "creating cgroup", "removing cgroup", "reading".
    pub doing: &'static str,
    /// The directory or file involved.
    pub path: PathBuf,
    /// The underlying system error.
    #[source]
    pub source: io::Error,
}

/// The daemon's cgroup subtree, e.g. `<cgroup2 mount><own cgroup>/procd-<home hash>`.
///
/// It holds no process itself, only instance cgroups, so that controllers
/// can be enabled for them (cgroup v2's "no internal processes" rule).
#[derive(Debug, Clone)]
pub struct CgroupRoot {
    /// Absolute path of the subtree's directory in the cgroup2 mount.
    path: PathBuf,
}

impl CgroupRoot {
    /// Creates (or reuses, after a daemon restart) the subtree `name` under
    /// the daemon's own cgroup, if a writable cgroup2 hierarchy exists.
    ///
    /// `Ok(None)` when there is none, when the daemon's cgroup is not visible
    /// in it, or when the daemon may not write there: procd then falls back
    /// to process groups. The memory controller is enabled for instances
    /// when the parent offers it, best effort, so that
    /// [`InstanceCgroup::memory_current`] works where the host allows it.
    pub fn detect(name: &str) -> io::Result<Option<CgroupRoot>> {
        let Some(base) = own_cgroup_dir()? else { return Ok(None) };
        let path = base.join(escape(name));
        match make_dir(&path) {
            Ok(()) => {}
            Err(e) if denied(&e) => return Ok(None),
            Err(e) => return Err(e),
        }
        if nix::unistd::access(&path.join("cgroup.procs"), nix::unistd::AccessFlags::W_OK).is_err() {
            return Ok(None);
        }
        let available = fs::read_to_string(path.join("cgroup.controllers")).unwrap_or_default();
        if available.split_whitespace().any(|c| c == "memory") {
            // Fails if the subtree holds processes, which procd never puts there.
            let _ = fs::write(path.join("cgroup.subtree_control"), "+memory");
        }
        Ok(Some(CgroupRoot { path }))
    }

    /// The cgroup for one instance, created or reused; `key` (e.g. `web-0`)
    /// is escaped into a single path component that cannot collide with the
    /// kernel's interface files (which all contain a dot).
    pub fn instance(&self, key: &str) -> io::Result<InstanceCgroup> {
        let path = self.path.join(escape(key));
        make_dir(&path)?;
        Ok(InstanceCgroup { path })
    }

    /// The subtree's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every instance cgroup in the subtree (left by this daemon, or by a
    /// previous one).
    pub fn instances(&self) -> Vec<InstanceCgroup> {
        let Ok(dir) = fs::read_dir(&self.path) else { return Vec::new() };
        dir.flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| InstanceCgroup { path: e.path() })
            .collect()
    }

    /// Removes the subtree once every instance cgroup in it is removed, at
    /// daemon shutdown; an already removed subtree is not an error.
    pub fn remove(&self) -> io::Result<()> {
        remove_dir(&self.path)
    }
}

/// The cgroup of one app instance: every process the instance ever forked is
/// in it, whatever its process group or session.
#[derive(Debug, Clone)]
pub struct InstanceCgroup {
    /// Absolute path of the cgroup's directory.
    path: PathBuf,
}

impl InstanceCgroup {
    /// An instance cgroup that already exists at `path`: a run adopted from
    /// the keeper, or the target the keeper is asked to start a child in.
    pub fn existing(path: PathBuf) -> InstanceCgroup {
        InstanceCgroup { path }
    }

    /// The cgroup's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pids in the cgroup (`cgroup.procs`); empty on any error. Pids of
    /// another pid namespace read as 0 and are left out.
    pub fn pids(&self) -> Vec<i32> {
        let Ok(text) = fs::read_to_string(self.path.join("cgroup.procs")) else { return Vec::new() };
        text.lines().filter_map(|l| l.trim().parse().ok()).filter(|&pid: &i32| pid > 0).collect()
    }

    /// Whether any process is left in the cgroup (`populated 1` in
    /// `cgroup.events`): a stop is complete only once this is false.
    pub fn populated(&self) -> bool {
        match fs::read_to_string(self.path.join("cgroup.events")) {
            Ok(text) => match text.lines().find_map(|l| l.strip_prefix("populated ")) {
                Some(value) => value.trim() != "0",
                None => !self.pids().is_empty(),
            },
            Err(_) => !self.pids().is_empty(),
        }
    }

    /// Sends `sig` to every process in the cgroup: the graceful half of a
    /// stop, reaching descendants that left the instance's process group.
    /// Processes that exit meanwhile (`ESRCH`) are ignored.
    pub fn signal_all(&self, sig: i32) {
        for pid in self.pids() {
            signal(pid, sig);
        }
    }

    /// Kills every process in the cgroup, the forced half of a stop.
    ///
    /// `cgroup.kill` (Linux 5.14) does it atomically in the kernel. Without
    /// it, the cgroup is frozen first (when `cgroup.freeze` exists) so that
    /// no process can fork between reading `cgroup.procs` and the SIGKILLs;
    /// frozen processes still die of SIGKILL. Best effort: check
    /// [`populated`](Self::populated) for the outcome.
    pub fn kill_all(&self) {
        if fs::write(self.path.join("cgroup.kill"), "1").is_err() {
            self.kill_each();
        }
    }

    /// [`kill_all`](Self::kill_all) for kernels without `cgroup.kill`.
    fn kill_each(&self) {
        let freeze = self.path.join("cgroup.freeze");
        let frozen = fs::write(&freeze, "1").is_ok();
        // Without a freezer a fork can race each pass; a few passes close it
        // in practice, and the caller's stop keeps checking `populated`.
        for _ in 0..4 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                signal(pid, libc::SIGKILL);
            }
        }
        if frozen {
            // A cgroup left frozen would freeze the next instance it receives.
            let _ = fs::write(&freeze, "0");
        }
    }

    /// Removes the cgroup; fails with `EBUSY` while a process is still in
    /// it. An already removed cgroup is not an error.
    pub fn remove(&self) -> io::Result<()> {
        remove_dir(&self.path)
    }

    /// Memory charged to the whole instance, descendants included, in bytes
    /// (`memory.current`); `None` when the memory controller is not enabled
    /// for this cgroup.
    pub fn memory_current(&self) -> Option<u64> {
        fs::read_to_string(self.path.join("memory.current")).ok()?.trim().parse().ok()
    }
}

/// `kill(pid, sig)` for a pid read from `cgroup.procs`; errors (the process
/// is gone, `ESRCH`) are ignored since the kill's purpose is then served.
fn signal(pid: i32, sig: i32) {
    // pid 0 or 1 would hit our own group or init: never from a cgroup we made.
    if pid > 1 {
        // SAFETY: kill takes plain integers and touches no memory of ours.
        unsafe { libc::kill(pid, sig) };
    }
}

/// The directory of the daemon's own cgroup in the cgroup2 mount, if there
/// is one where that cgroup is visible.
fn own_cgroup_dir() -> io::Result<Option<PathBuf>> {
    let mountinfo = read("/proc/self/mountinfo")?;
    let own = read("/proc/self/cgroup")?;
    let Some(own) = own.lines().find_map(|l| l.strip_prefix("0::")) else { return Ok(None) };
    Ok(cgroup_dir(&mountinfo, own.trim_end()))
}

/// Where the cgroup `own` (a path from `/proc/self/cgroup`) is in the first
/// cgroup2 mount of `mountinfo` whose root contains it.
fn cgroup_dir(mountinfo: &str, own: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split(' ').next()? != "cgroup2" {
            return None;
        }
        let mut fields = left.split(' ');
        let root = unescape(fields.nth(3)?);
        let mount = unescape(fields.next()?);
        let rest = if root == "/" { own } else { own.strip_prefix(root.as_str())? };
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        Some(Path::new(&mount).join(rest.trim_start_matches('/')))
    })
}

/// Decodes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let code = bytes.get(i + 1..i + 4).and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match code {
            Some(c) if bytes[i] == b'\\' => {
                out.push(c);
                i += 4;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One path component from any string, injectively: ASCII letters, digits,
/// `-` and `_` are kept, every other byte becomes `%XX`. Since a dot is
/// escaped, the result never names a kernel interface file (`cgroup.procs`)
/// nor `.`/`..`.
fn escape(key: &str) -> String {
    if key.is_empty() {
        return "%".to_owned();
    }
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

/// `mkdir`, accepting an existing directory (a daemon restart reuses its cgroups).
fn make_dir(path: &Path) -> io::Result<()> {
    match fs::create_dir(path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        result => result.map_err(|e| with_path(e, "creating cgroup", path)),
    }
}

/// `rmdir`, accepting a missing directory.
fn remove_dir(path: &Path) -> io::Result<()> {
    match fs::remove_dir(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        result => result.map_err(|e| with_path(e, "removing cgroup", path)),
    }
}

/// Reads a file of `/proc`, naming it on error.
fn read(path: &str) -> io::Result<String> {
    fs::read_to_string(path).map_err(|e| with_path(e, "reading", Path::new(path)))
}

/// Whether `mkdir` failed because this daemon may not create cgroups there.
fn denied(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EACCES | libc::EPERM | libc::EROFS | libc::ENOENT))
}

/// The same error, with what was attempted and on which path; the kind is
/// kept so callers can still tell `ResourceBusy` from `PermissionDenied`.
fn with_path(source: io::Error, doing: &'static str, path: &Path) -> io::Error {
    io::Error::new(source.kind(), CgroupError { doing, path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 1 0:23 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
41 25 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 25 0:39 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory";

    #[test]
    fn hierarchy_found_by_fstype_not_by_path() {
        let dir = cgroup_dir(HYBRID, "/system.slice/procd.service").unwrap();
        assert_eq!(dir, Path::new("/sys/fs/cgroup/unified/system.slice/procd.service"));
        assert_eq!(cgroup_dir(HYBRID, "/").unwrap(), Path::new("/sys/fs/cgroup/unified"));
        let pure = "30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate";
        assert_eq!(cgroup_dir(pure, "/user.slice").unwrap(), Path::new("/sys/fs/cgroup/user.slice"));
        assert!(cgroup_dir("25 1 0:23 / /sys/fs/cgroup rw - tmpfs tmpfs rw", "/").is_none());
    }

    #[test]
    fn mount_root_and_escapes_are_honoured() {
        let bind = r"50 1 0:26 /ctr /mnt/cg\040v2 rw - cgroup2 cgroup2 rw";
        assert_eq!(cgroup_dir(bind, "/ctr/app").unwrap(), Path::new("/mnt/cg v2/app"));
        // A cgroup outside the mounted subtree is not reachable through it.
        assert!(cgroup_dir(bind, "/other").is_none());
        assert!(cgroup_dir(bind, "/ctrx").is_none());
    }

    #[test]
    fn keys_become_one_safe_component_without_collisions() {
        assert_eq!(escape("web-0"), "web-0");
        assert_eq!(escape("my_app-12"), "my_app-12");
        assert_eq!(escape("a/b"), "a%2fb");
        assert_eq!(escape(".."), "%2e%2e");
        assert_eq!(escape("cgroup.procs"), "cgroup%2eprocs");
        assert_ne!(escape("api.v2-0"), escape("api_v2-0"));
        assert_ne!(escape("a%2e"), escape("a."));
        assert_eq!(escape(""), "%");
    }

    /// The fallback of kernels before 5.14, run here on whatever kernel.
    #[test]
    fn kill_each_ends_every_process_without_cgroup_kill() {
        let root = match CgroupRoot::detect(&format!("procd-unit-{}", std::process::id())) {
            Ok(Some(root)) if nix::unistd::Uid::effective().is_root() => root,
            _ => return eprintln!("skipping: needs root and a writable cgroup2 hierarchy"),
        };
        let cgroup = root.instance("kill-each").unwrap();
        let argv = ["sleep".to_owned(), "1000".to_owned()];
        let env = [("PATH".to_owned(), "/usr/bin:/bin".to_owned())];
        let spec = crate::process::LaunchSpec {
            argv: &argv,
            cwd: Path::new("/"),
            env: &env,
            credentials: None,
            cgroup: Some(&cgroup),
        };
        let pids: Vec<i32> = (0..2).filter_map(|_| crate::process::launch(&spec).ok().map(|l| l.pid)).collect();
        // Polls until `done` or a shared deadline; asserts come after cleanup.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let poll = |done: &dyn Fn() -> bool| {
            while !done() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        };
        poll(&|| cgroup.pids().len() >= 2);
        let seen = cgroup.pids();
        cgroup.kill_each();
        poll(&|| !cgroup.populated());
        let populated = cgroup.populated();
        for &pid in &pids {
            poll(&|| !matches!(crate::process::try_reap(pid), Ok(None)));
        }
        let frozen = fs::read_to_string(cgroup.path().join("cgroup.freeze")).unwrap_or_default();
        let removed = cgroup.remove().and_then(|()| root.remove());
        assert_eq!(pids.len(), 2);
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(!populated);
        assert_ne!(frozen.trim(), "1", "left frozen");
        removed.unwrap();
    }
}
