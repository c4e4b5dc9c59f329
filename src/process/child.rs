//! The child's half of [`launch`](super::launch): what runs between `fork`
//! (or `clone3`, see `clone.rs`) and `exec`, and how its failures travel
//! back to the parent.
//!
//! Between `fork` and `exec` only async-signal-safe system calls are allowed
//! (another thread of the daemon may have held the allocator's lock at fork
//! time), so everything is prepared in the parent ([`ChildSetup::new`]) and
//! [`ChildSetup::run`] neither allocates nor locks. It makes raw system calls
//! where glibc's wrapper relies on glibc's own bookkeeping of the process:
//! after a raw `clone3` (no `fork` handlers ran) glibc still believes the
//! child has the daemon's threads, and its `setuid` would signal those.
//!
//! `std` reports an error of this code to the parent as a bare errno over its
//! close-on-exec pipe. To tell a failed `chdir` from a failed `setuid` without
//! a second pipe, the failing [`Step`] is folded into the errno's high bits
//! and unfolded by [`split`]; errnos are below 4096.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::sys::resource::{Resource, getrlimit};

use super::Credentials;

/// The setup steps that can fail in the child, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Writing 0 to the instance cgroup's `cgroup.procs`: first, while still
    /// privileged, and before the app can fork anything that escapes it.
    JoinCgroup = 1,
    /// `setsid`: a new session and process group led by the child.
    Setsid,
    /// `setgroups`: supplementary groups, while still privileged.
    Setgroups,
    /// `setgid`, before `setuid` gives up the right to change it.
    Setgid,
    /// `setuid`: from here on the child is the app's user.
    Setuid,
    /// `chdir`, as the app's user so it gets no access the user lacks.
    Chdir,
    /// Marking every fd above 2 close-on-exec.
    Cloexec,
    /// `dup2` of `/dev/null` and the output pipes onto fds 0–2, done by
    /// `clone.rs` before [`ChildSetup::run`] (`std` does it on its path).
    Stdio,
}

const STEPS: [Step; 8] = [
    Step::JoinCgroup,
    Step::Setsid,
    Step::Setgroups,
    Step::Setgid,
    Step::Setuid,
    Step::Chdir,
    Step::Cloexec,
    Step::Stdio,
];

/// Bits of the reported errno below the folded-in [`Step`].
const STEP_SHIFT: u32 = 16;

impl Step {
    /// The system call's name, for error messages.
    pub(super) fn name(self) -> &'static str {
        match self {
            Step::JoinCgroup => "join cgroup",
            Step::Setsid => "setsid",
            Step::Setgroups => "setgroups",
            Step::Setgid => "setgid",
            Step::Setuid => "setuid",
            Step::Chdir => "chdir",
            Step::Cloexec => "close_range",
            Step::Stdio => "dup2",
        }
    }

    /// The current errno, tagged with this step. Allocation-free.
    pub(super) fn failed(self) -> io::Error {
        let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
        io::Error::from_raw_os_error(((self as i32) << STEP_SHIFT) | (errno & 0xffff))
    }
}

/// Unfolds an error of [`ChildSetup::run`] into its step and the plain OS
/// error; `None` for errors of `fork`/`exec` and of `std`'s own setup.
pub(super) fn split(err: &io::Error) -> Option<(Step, io::Error)> {
    let raw = err.raw_os_error()?;
    let step = STEPS.into_iter().find(|s| *s as i32 == raw >> STEP_SHIFT)?;
    Some((step, io::Error::from_raw_os_error(raw & 0xffff)))
}

/// Everything the child needs, computed before `fork`.
pub(super) struct ChildSetup {
    /// The working directory as a C string.
    cwd: CString,
    /// `(groups, gid, uid)` to switch to, or `None` to stay the daemon's user.
    creds: Option<(Vec<libc::gid_t>, libc::gid_t, libc::uid_t)>,
    /// One past the highest signal number, for resetting dispositions.
    nsig: libc::c_int,
    /// Highest fd to mark close-on-exec if `close_range` is missing (< 5.11).
    fd_limit: libc::c_int,
    /// The instance cgroup's `cgroup.procs`, opened close-on-exec by the
    /// parent (the kernel checks the opener's rights); `None` without cgroup
    /// or when `clone3` already created the child in it.
    cgroup_procs: Option<OwnedFd>,
}

impl ChildSetup {
    /// Prepares the setup; fails only if `cwd` contains a NUL byte.
    pub(super) fn new(
        cwd: &Path,
        creds: Option<&Credentials>,
        cgroup_procs: Option<OwnedFd>,
    ) -> io::Result<ChildSetup> {
        let cwd =
            CString::new(cwd.as_os_str().as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let fd_limit = match getrlimit(Resource::RLIMIT_NOFILE) {
            Ok((soft, _)) => soft.min(1 << 20) as libc::c_int,
            Err(_) => 1024,
        };
        Ok(ChildSetup {
            cwd,
            creds: creds.map(|c| (c.groups.clone(), c.gid, c.uid)),
            nsig: libc::SIGRTMAX() + 1,
            fd_limit,
            cgroup_procs,
        })
    }

    /// Runs in the child after `fork`, after `std` has set up fds 0–2.
    ///
    /// Order matters: signals first so no handler of the daemon runs here;
    /// the cgroup next, while privileged and before anything can fork;
    /// groups, gid, then uid, since each needs the privilege the next drops;
    /// `chdir` as the app's user.
    pub(super) fn run(&self) -> io::Result<()> {
        // SAFETY (whole function): only async-signal-safe system calls on
        // memory prepared before fork and owned by self; this runs in the
        // single-threaded child between fork and exec.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut set);
            libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());

            // Writing "0" moves the writer itself into the cgroup.
            if let Some(procs) = &self.cgroup_procs
                && libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1
            {
                return Err(Step::JoinCgroup.failed());
            }

            if libc::setsid() == -1 {
                return Err(Step::Setsid.failed());
            }

            // Handlers are reset by exec anyway, but ignored signals stay
            // ignored (Rust ignores SIGPIPE; a parent may ignore more), so
            // reset every disposition. The raw system call, because glibc
            // refuses the two real-time signals it reserves. An all-zero
            // kernel sigaction is SIG_DFL with no flags on every layout.
            let dfl = [0u64; 4];
            for sig in 1..self.nsig {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    libc::syscall(libc::SYS_rt_sigaction, sig, dfl.as_ptr(), 0usize, 8usize);
                }
            }

            // Raw system calls: glibc's wrappers apply the change to every
            // thread it knows of, which after clone3 are the daemon's.
            if let Some((groups, gid, uid)) = &self.creds {
                if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) == -1 {
                    return Err(Step::Setgroups.failed());
                }
                if libc::syscall(libc::SYS_setgid, *gid) == -1 {
                    return Err(Step::Setgid.failed());
                }
                if libc::syscall(libc::SYS_setuid, *uid) == -1 {
                    return Err(Step::Setuid.failed());
                }
            }

            if libc::chdir(self.cwd.as_ptr()) == -1 {
                return Err(Step::Chdir.failed());
            }

            // Close-on-exec rather than close: std's error pipe must survive
            // until exec. This reaches fds opened without O_CLOEXEC by anyone.
            let flags = libc::CLOSE_RANGE_CLOEXEC as libc::c_uint;
            if libc::syscall(libc::SYS_close_range, 3 as libc::c_uint, libc::c_uint::MAX, flags) == -1 {
                for fd in 3..self.fd_limit {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }

            libc::sigemptyset(&mut set);
            libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_survive_the_errno_channel() {
        for step in STEPS {
            let folded = io::Error::from_raw_os_error(((step as i32) << STEP_SHIFT) | libc::EACCES);
            let (got, source) = split(&folded).unwrap();
            assert_eq!(got, step);
            assert_eq!(source.raw_os_error(), Some(libc::EACCES));
        }
        assert!(split(&io::Error::from_raw_os_error(libc::ENOENT)).is_none());
        assert!(split(&io::Error::other("x")).is_none());
    }
}
