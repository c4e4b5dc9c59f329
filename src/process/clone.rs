//! Starting a child directly inside its instance cgroup with `clone3` and
//! `CLONE_INTO_CGROUP` (Linux 5.7), for [`launch`](super::launch).
//!
//! Why not `fork` and then join: a process moving itself into a cgroup
//! (writing `cgroup.procs`) takes the kernel's `cgroup_threadgroup_rwsem`
//! for writing, which waits for an RCU grace period: 13–25 ms per launch
//! instead of about 1 ms. A child created in the cgroup never migrates.
//!
//! `std::process::Command` cannot pass a cgroup to its `clone`, so this is a
//! small `fork`+`exec` of its own, with the same rules as `child.rs`:
//! everything the child touches ([`Exec`], the [`ChildSetup`], the fds) is
//! prepared before the clone, and the child only makes async-signal-safe
//! system calls, never allocates, never panics, and ends in `execve` or
//! `_exit(127)`. A failure before or in `execve` travels to the parent over
//! a close-on-exec pipe as the folded errno of `child.rs` (4 bytes, native
//! endian); EOF on that pipe means `execve` succeeded.

use std::collections::BTreeMap;
use std::ffi::{CString, c_char};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::OFlag;
use nix::unistd::pipe2;

use super::child::{ChildSetup, Step};

/// `CLONE_INTO_CGROUP` from `<linux/sched.h>` (not in every libc version).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Set once `clone3` turned out unusable (kernel older than 5.7, or refused
/// by a seccomp policy or the cgroup's delegation), so that later launches
/// go straight to `fork` and join instead of failing the same way again.
static UNUSABLE: AtomicBool = AtomicBool::new(false);

/// `struct clone_args` up to `cgroup` (`CLONE_ARGS_SIZE_VER2`, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Program, arguments and environment as the NUL-terminated pointer arrays
/// `execve` takes, built before the clone. The pointers point into the
/// `CString`s owned alongside them, which do not move (heap buffers).
pub(super) struct Exec {
    program: CString,
    _strings: Vec<CString>,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
    /// `LISTEN_PID=` followed by room for the digits, written in the child
    /// once its pid is known (the socket-activation protocol wants it).
    /// A leaked `Box<[u8; LISTEN_PID_SLOT]>` (freed on drop): the child
    /// writes through this pointer, so it must not come from a shared borrow.
    listen_pid: Option<*mut u8>,
}

/// Room for `LISTEN_PID=` and any pid (at most 2^22 on Linux) plus NUL.
const LISTEN_PID_SLOT: usize = "LISTEN_PID=".len() + 12;

impl Exec {
    /// `execve(executable, argv, env)`, with `argv[0]` as given. As with
    /// `std`, a later duplicate of an environment variable wins; fails with
    /// `InvalidInput` on a NUL byte, as `std` does.
    pub(super) fn new(
        executable: &Path,
        argv: &[String],
        env: &[(String, String)],
        listen_pid: bool,
    ) -> io::Result<Exec> {
        let c = |bytes: &[u8]| CString::new(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e));
        let program = c(executable.as_os_str().as_bytes())?;
        let env: BTreeMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let args = argv.iter().map(|a| c(a.as_bytes())).collect::<io::Result<Vec<_>>>()?;
        let vars = env.iter().map(|(k, v)| c(format!("{k}={v}").as_bytes())).collect::<io::Result<Vec<_>>>()?;
        let pointers = |strings: &[CString]| {
            strings.iter().map(|s| s.as_ptr()).chain(std::iter::once(std::ptr::null())).collect::<Vec<_>>()
        };
        let argv = pointers(&args);
        let mut envp = pointers(&vars);
        let listen_pid = listen_pid.then(|| {
            let mut slot = Box::new([0u8; LISTEN_PID_SLOT]);
            slot[.."LISTEN_PID=".len()].copy_from_slice(b"LISTEN_PID=");
            Box::into_raw(slot).cast::<u8>()
        });
        if let Some(slot) = listen_pid {
            // Before the terminating null; the leaked box never moves.
            envp.insert(envp.len() - 1, slot.cast_const().cast());
        }
        let mut strings = args;
        strings.extend(vars);
        Ok(Exec { program, _strings: strings, argv, envp, listen_pid })
    }
}

impl Drop for Exec {
    fn drop(&mut self) {
        if let Some(slot) = self.listen_pid.take() {
            // SAFETY: made by Box::into_raw of this very type in `new`.
            drop(unsafe { Box::from_raw(slot.cast::<[u8; LISTEN_PID_SLOT]>()) });
        }
    }
}

/// Why [`spawn_in_cgroup`] did not start the program.
pub(super) enum Failure {
    /// `clone3` with `CLONE_INTO_CGROUP` cannot work here: use `fork` and
    /// join. Remembered; [`usable`] is false from now on.
    Unsupported,
    /// `clone3` failed otherwise: out of processes or memory, or the cgroup
    /// cannot take processes (removed, not a leaf).
    Clone(io::Error),
    /// The child reported this (folded, see `child.rs`) errno and exited.
    Child(io::Error),
    /// Opening `/dev/null` or creating the error pipe failed.
    Setup(io::Error),
}

/// Whether `clone3` into a cgroup is still worth trying.
pub(super) fn usable() -> bool {
    !UNUSABLE.load(Ordering::Relaxed)
}

/// Starts `exec` as a child created in the cgroup whose directory is
/// `cgroup` (opened `O_RDONLY | O_DIRECTORY`; `None`: a plain fork), stdin
/// on `/dev/null`, stdout/stderr on `stdout`/`stderr` and `extra` on fds
/// 3, 4, ... in order, after `setup`; returns its pid once `execve`
/// succeeded. The child is left for the Reaper; a child whose setup or
/// `execve` failed is reaped here, by pid.
pub(super) fn spawn_in_cgroup(
    exec: &Exec,
    setup: &ChildSetup,
    cgroup: Option<BorrowedFd>,
    stdout: BorrowedFd,
    stderr: BorrowedFd,
    extra: &[BorrowedFd],
) -> Result<i32, Failure> {
    let extra: Vec<libc::c_int> = extra.iter().map(|f| f.as_raw_fd()).collect();
    let dev_null = open_dev_null().map_err(Failure::Setup)?;
    let (err_read, err_write) = pipe2(OFlag::O_CLOEXEC).map_err(|e| Failure::Setup(e.into()))?;
    let fds = ChildFds {
        stdin: dev_null.as_raw_fd(),
        stdout: stdout.as_raw_fd(),
        stderr: stderr.as_raw_fd(),
        report: err_write.as_raw_fd(),
        extra: &extra,
    };
    let args = CloneArgs {
        flags: if cgroup.is_some() { CLONE_INTO_CGROUP } else { 0 },
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.map_or(0, |c| c.as_raw_fd() as u64),
        ..CloneArgs::default()
    };

    // SAFETY: sigset_t is plain data, initialised by sigfillset; the masks
    // are valid for the calls. Blocking every signal around the clone keeps
    // the daemon's handlers from running in the child before `setup` resets
    // them (`setup.run` unblocks all signals just before exec).
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    // SAFETY: args is a valid clone_args of the size passed. Without
    // CLONE_VM the child gets a copy of our memory, like fork: it returns
    // here with 0 and runs only `child`, which never returns.
    let pid = unsafe {
        if cgroup.is_some() {
            libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, std::mem::size_of::<CloneArgs>())
        } else {
            libc::fork() as libc::c_long
        }
    };
    if pid == 0 {
        child(exec, setup, &fds);
    }
    let clone_error = io::Error::last_os_error();
    // SAFETY: restores the mask saved above; no pointers beyond the call.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
    drop(dev_null);
    drop(err_write);
    if pid < 0 {
        return Err(match clone_error.raw_os_error() {
            Some(libc::ENOSYS | libc::EINVAL | libc::E2BIG | libc::EPERM) if cgroup.is_some() => {
                UNUSABLE.store(true, Ordering::Relaxed);
                Failure::Unsupported
            }
            _ => Failure::Clone(clone_error),
        });
    }
    let pid = pid as i32;
    match read_report(&err_read) {
        None => Ok(pid),
        Some(err) => {
            reap(pid);
            Err(Failure::Child(err))
        }
    }
}

/// The fds the child arranges, as raw numbers read before the clone.
struct ChildFds<'a> {
    stdin: libc::c_int,
    stdout: libc::c_int,
    stderr: libc::c_int,
    /// Write end of the close-on-exec error pipe.
    report: libc::c_int,
    /// Placed on 3, 4, ... (listening sockets).
    extra: &'a [libc::c_int],
}

/// The child after `clone3`: fds 0–2, [`ChildSetup::run`], `execve`; on any
/// failure the folded errno goes to the parent and the child exits 127.
fn child(exec: &Exec, setup: &ChildSetup, fds: &ChildFds) -> ! {
    // SAFETY (whole function): runs in the single-threaded child of clone3
    // on memory copied from the parent and prepared before the clone; only
    // async-signal-safe system calls, no allocation (io::Error from an errno
    // is a plain integer), no panic. exec's pointer arrays are
    // NUL-terminated and point at live CStrings.
    unsafe {
        let mut report = fds.report;
        let code = 'failed: {
            for (from, to) in [(fds.stdin, 0), (fds.stdout, 1), (fds.stderr, 2)] {
                // dup2 onto itself would keep close-on-exec: clear it instead.
                let ok =
                    if from == to { libc::fcntl(from, libc::F_SETFD, 0) != -1 } else { libc::dup2(from, to) != -1 };
                if !ok {
                    break 'failed Step::Stdio.failed();
                }
            }
            if let Err(err) = setup.run() {
                break 'failed err;
            }
            if let Err(err) = place_extra(fds.extra, &mut report) {
                break 'failed err;
            }
            if let Some(slot) = exec.listen_pid {
                write_pid(slot.add("LISTEN_PID=".len()), libc::getpid());
            }
            libc::execve(exec.program.as_ptr(), exec.argv.as_ptr(), exec.envp.as_ptr());
            io::Error::last_os_error()
        };
        let raw = code.raw_os_error().unwrap_or(libc::EIO).to_ne_bytes();
        // Nothing to do if this fails: the parent then sees EOF early and
        // the exit status 127 is all that is left.
        libc::write(report, raw.as_ptr().cast(), raw.len());
        libc::_exit(127)
    }
}

/// Puts `extra[i]` on fd `3 + i` (without close-on-exec), first moving the
/// sources and the `report` pipe above the targets so that no `dup2`
/// overwrites one still to be placed. Child side: async-signal-safe only.
unsafe fn place_extra(extra: &[libc::c_int], report: &mut libc::c_int) -> Result<(), io::Error> {
    if extra.is_empty() {
        return Ok(());
    }
    let above = 3 + extra.len() as libc::c_int;
    // SAFETY (whole function): fcntl and dup2 on fds of this process.
    unsafe {
        let moved = libc::fcntl(*report, libc::F_DUPFD_CLOEXEC, above);
        if moved < 0 {
            return Err(Step::Stdio.failed());
        }
        *report = moved;
        // At most a few listening sockets: a fixed array, no allocation.
        let mut high = [0 as libc::c_int; 64];
        if extra.len() > high.len() {
            return Err(io::Error::from_raw_os_error(libc::EMFILE));
        }
        for (i, &fd) in extra.iter().enumerate() {
            high[i] = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, above);
            if high[i] < 0 {
                return Err(Step::Stdio.failed());
            }
        }
        for (i, &fd) in high[..extra.len()].iter().enumerate() {
            // dup2 clears close-on-exec on the target.
            if libc::dup2(fd, 3 + i as libc::c_int) < 0 {
                return Err(Step::Stdio.failed());
            }
        }
    }
    Ok(())
}

/// Writes `pid` in decimal and a NUL at `at` (room for 12 bytes).
unsafe fn write_pid(at: *mut u8, pid: libc::pid_t) {
    let mut digits = [0u8; 11];
    let mut n = pid.max(0) as u32;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // SAFETY: the slot has room for 11 digits and the NUL.
    unsafe {
        for i in 0..len {
            *at.add(i) = digits[len - 1 - i];
        }
        *at.add(len) = 0;
    }
}

/// Reads the child's report: `None` at EOF, once `execve` succeeded (the
/// pipe closed on exec), else the folded errno it sent before exiting.
fn read_report(pipe: &OwnedFd) -> Option<io::Error> {
    let mut buf = [0u8; 4];
    let mut len = 0;
    while let Some(rest) = buf.get_mut(len..).filter(|rest| !rest.is_empty()) {
        // SAFETY: rest is a valid writable buffer of rest.len() bytes.
        let n = unsafe { libc::read(pipe.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len()) };
        match n {
            0 => break,
            n if n > 0 => len += n as usize,
            _ if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => {}
            // Cannot happen on our own pipe; without a report the child is
            // taken as started, and the Reaper sees it exit if it did not.
            _ => return None,
        }
    }
    match len {
        0 => None,
        4 => Some(io::Error::from_raw_os_error(i32::from_ne_bytes(buf))),
        _ => Some(io::Error::new(io::ErrorKind::UnexpectedEof, "short error report from the child")),
    }
}

/// Waits for the child that reported a failure and is exiting with 127.
/// By pid, never -1: other children are the Reaper's. `ECHILD` (the Reaper
/// took it first) is fine: either way no zombie is left.
fn reap(pid: i32) {
    loop {
        let mut status = 0;
        // SAFETY: status is a valid, writable c_int for the call's duration.
        let got = unsafe { libc::waitpid(pid, &mut status, 0) };
        if got != -1 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}

/// `/dev/null` for the child's stdin, close-on-exec in the daemon.
fn open_dev_null() -> io::Result<OwnedFd> {
    // SAFETY: a valid NUL-terminated path; the fd, if any, is ours to own.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the cgroup's directory for `CLONE_INTO_CGROUP`, close-on-exec.
pub(super) fn open_cgroup_dir(path: &Path) -> io::Result<OwnedFd> {
    let dir = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY).open(path)?;
    Ok(OwnedFd::from(dir))
}
