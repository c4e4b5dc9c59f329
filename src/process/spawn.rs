//! [`launch`]: starting one app instance as the leader of a new session, with
//! exactly the environment, working directory, credentials and output pipes
//! it was given, and nothing else of the daemon's.
//!
//! It is on the respawn path (target: 1.2 ms from a death to the new process
//! running), so it forks once, directly `exec`s the program (no shell, no
//! helper process) and never sleeps. `std::process::Command` does the fork
//! and reports `exec` errors synchronously over its close-on-exec pipe; the
//! returned `Child` is dropped unwaited, the [`Reaper`](super::Reaper) reaps.
//!
//! With a cgroup, the child is created in it by `clone3(CLONE_INTO_CGROUP)`
//! (`clone.rs`) instead: a child joining it after `fork` costs an RCU grace
//! period (13–25 ms). Where `clone3` is unusable, `fork` and join it is.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::unistd::{Gid, Uid, pipe2};

use super::child::{ChildSetup, Step, split};
use super::clone::{self, Exec, Failure};
use super::{Credentials, InstanceCgroup, ProcessError};

/// Capacity asked for each output pipe, so that a burst of output does not
/// block the app while the daemon is busy; pages are only used when filled.
const PIPE_CAPACITY: i32 = 1 << 20;

/// `execvp`'s search path when the environment has no `PATH`.
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// What to start: borrowed from the instance's resolved spec.
#[derive(Debug, Clone, Copy)]
pub struct LaunchSpec<'a> {
    /// Program and arguments; `argv[0]` without a slash is searched in the
    /// `PATH` of `env`, with a slash it is relative to `cwd`.
    pub argv: &'a [String],
    /// Working directory, entered as the app's user.
    pub cwd: &'a Path,
    /// The complete environment: nothing is inherited from the daemon.
    pub env: &'a [(String, String)],
    /// Who to run as; `None` keeps the daemon's uid, gid and groups.
    pub credentials: Option<&'a Credentials>,
    /// The instance's cgroup, where the child is created (or which it joins
    /// before `exec`) so that every descendant is found and killed by a
    /// stop; `None` relies on the process group.
    pub cgroup: Option<&'a InstanceCgroup>,
}

/// A started instance: its pid and the read ends of its output.
#[derive(Debug)]
pub struct Launched {
    /// The child's pid, which is also its process group and session id.
    pub pid: i32,
    /// Read end of the app's stdout: close-on-exec and non-blocking, ready
    /// for `tokio::net::unix::pipe::Receiver::from_owned_fd`.
    pub stdout: OwnedFd,
    /// Read end of the app's stderr, a pipe of its own so lines can be tagged.
    pub stderr: OwnedFd,
}

/// Starts `spec.argv` in a new session (pgid == pid), stdin on `/dev/null`,
/// stdout and stderr on two fresh pipes, all signals unblocked and at their
/// default disposition, no fd of the daemon's open beyond 0–2.
///
/// `exec` failures (missing program, not executable, bad `cwd`, missing
/// privilege for `credentials`) are returned here, naming the program.
/// Must run on the thread that polls the [`Reaper`](super::Reaper).
pub fn launch(spec: &LaunchSpec) -> Result<Launched, ProcessError> {
    launch_passing(spec, &[], false)
}

/// [`launch`] that also places `fds` on fds 3, 4, ... of the child (the
/// app's listening sockets, systemd's socket-activation protocol) and, with
/// `listen_pid`, sets `LISTEN_PID` to the child's own pid, which only the
/// child knows before `exec`.
pub fn launch_passing(spec: &LaunchSpec, fds: &[BorrowedFd], listen_pid: bool) -> Result<Launched, ProcessError> {
    let program = spec.argv.first().ok_or(ProcessError::EmptyArgv)?;
    let executable = find_program(program, spec.env, spec.cwd)?;
    if let Some(cgroup) = spec.cgroup
        && clone::usable()
        && let Some(launched) = launch_direct(spec, program, &executable, Some(cgroup.path()), fds, listen_pid)?
    {
        return Ok(launched);
    }
    if !fds.is_empty() || listen_pid {
        // std's Command can neither place fds nor patch the environment
        // after fork: our own fork, joining the cgroup if there is one.
        return launch_direct(spec, program, &executable, None, fds, listen_pid)?.ok_or_else(|| ProcessError::Exec {
            program: program.clone(),
            source: std::io::ErrorKind::Unsupported.into(),
        });
    }
    let cgroup_procs = spec.cgroup.map(|c| open_procs(c.path(), program)).transpose()?;
    let setup = ChildSetup::new(spec.cwd, switch_to(spec.credentials), cgroup_procs)
        .map_err(|source| ProcessError::Chdir { program: program.clone(), cwd: spec.cwd.to_owned(), source })?;
    let pipe_err = |source| ProcessError::Pipe { program: program.clone(), source };
    let (stdout, stdout_w) = output_pipe().map_err(pipe_err)?;
    let (stderr, stderr_w) = output_pipe().map_err(pipe_err)?;

    let mut command = Command::new(&executable);
    command
        .arg0(program)
        .args(&spec.argv[1..])
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout_w))
        .stderr(Stdio::from(stderr_w));
    // SAFETY: ChildSetup::run only makes async-signal-safe system calls on
    // memory prepared before fork (see child.rs).
    unsafe {
        command.pre_exec(move || setup.run());
    }
    let child = command.spawn().map_err(|e| spawn_error(e, program, spec))?;
    // Closes our copies of the write ends, so EOF can reach the reader.
    drop(command);
    Ok(Launched { pid: child.id() as i32, stdout, stderr })
}

/// [`launch`] by our own `clone3(CLONE_INTO_CGROUP)` into `cgroup_dir`, or
/// by our own `fork` (joining `spec.cgroup`, if any, before `exec`) when it
/// is `None`; `Ok(None)` when `clone3` turned out unusable and the caller
/// should fork and join instead.
fn launch_direct(
    spec: &LaunchSpec,
    program: &str,
    executable: &Path,
    cgroup_dir: Option<&Path>,
    fds: &[BorrowedFd],
    listen_pid: bool,
) -> Result<Option<Launched>, ProcessError> {
    let dir = cgroup_dir
        .map(|cgroup| {
            clone::open_cgroup_dir(cgroup).map_err(|source| ProcessError::Cgroup {
                program: program.to_owned(),
                path: cgroup.to_owned(),
                source,
            })
        })
        .transpose()?;
    let join = match (cgroup_dir, spec.cgroup) {
        (None, Some(c)) => Some(open_procs(c.path(), program)?),
        _ => None,
    };
    let exec = Exec::new(executable, spec.argv, spec.env, listen_pid)
        .map_err(|source| ProcessError::Exec { program: program.to_owned(), source })?;
    let setup = ChildSetup::new(spec.cwd, switch_to(spec.credentials), join).map_err(|source| ProcessError::Chdir {
        program: program.to_owned(),
        cwd: spec.cwd.to_owned(),
        source,
    })?;
    let pipe_err = |source| ProcessError::Pipe { program: program.to_owned(), source };
    let (stdout, stdout_w) = output_pipe().map_err(pipe_err)?;
    let (stderr, stderr_w) = output_pipe().map_err(pipe_err)?;
    let dir_fd = dir.as_ref().map(|d| d.as_fd());
    match clone::spawn_in_cgroup(&exec, &setup, dir_fd, stdout_w.as_fd(), stderr_w.as_fd(), fds) {
        Ok(pid) => Ok(Some(Launched { pid, stdout, stderr })),
        Err(Failure::Unsupported) => Ok(None),
        Err(Failure::Child(err)) => Err(spawn_error(err, program, spec)),
        Err(Failure::Clone(source)) if matches!(source.raw_os_error(), Some(libc::EAGAIN | libc::ENOMEM)) => {
            Err(ProcessError::Exec { program: program.to_owned(), source })
        }
        Err(Failure::Clone(source)) => match cgroup_dir {
            Some(cgroup) => Err(ProcessError::Cgroup { program: program.to_owned(), path: cgroup.to_owned(), source }),
            None => Err(ProcessError::Exec { program: program.to_owned(), source }),
        },
        Err(Failure::Setup(source)) => Err(ProcessError::Pipe { program: program.to_owned(), source }),
    }
}

/// The credentials to actually switch to. An unprivileged daemon asked for
/// its own uid and gid keeps its groups rather than fail on `setgroups`.
fn switch_to(credentials: Option<&Credentials>) -> Option<&Credentials> {
    let c = credentials?;
    let euid = Uid::effective();
    let own = c.uid == euid.as_raw() && c.gid == Gid::effective().as_raw();
    if own && !euid.is_root() { None } else { Some(c) }
}

/// Opens `cgroup.procs` of the instance's cgroup for the child to join.
fn open_procs(cgroup: &Path, program: &str) -> Result<OwnedFd, ProcessError> {
    let path = cgroup.join("cgroup.procs");
    let file = std::fs::OpenOptions::new().write(true).open(&path);
    // std opens with O_CLOEXEC: the fd reaches the child, not the app.
    file.map(OwnedFd::from).map_err(|source| ProcessError::Cgroup { program: program.to_owned(), path, source })
}

/// One output pipe: `(read end for the daemon, write end for the child)`.
fn output_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = pipe2(OFlag::O_CLOEXEC)?;
    // Only the daemon's end is non-blocking: a writer that finds the pipe
    // full must wait, not get EAGAIN (and likely lose the line).
    fcntl(&read, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    // Best effort: fails when above /proc/sys/fs/pipe-max-size or the
    // user's pipe quota; the default 64 KiB still works.
    let _ = fcntl(&read, FcntlArg::F_SETPIPE_SZ(PIPE_CAPACITY));
    Ok((read, write))
}

/// Resolves `argv[0]` the way `execvp` would, but in the app's `PATH`.
fn find_program(program: &str, env: &[(String, String)], cwd: &Path) -> Result<PathBuf, ProcessError> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let path = env.iter().rev().find(|(k, _)| k == "PATH").map_or(DEFAULT_PATH, |(_, v)| v.as_str());
    let mut not_executable = None;
    if !program.is_empty() {
        for dir in path.split(':') {
            // An empty entry means the current directory, as for execvp.
            let candidate = cwd.join(dir).join(program);
            match std::fs::metadata(&candidate) {
                Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {
                    return Ok(candidate);
                }
                Ok(m) if m.is_file() => {
                    not_executable.get_or_insert(candidate);
                }
                _ => {}
            }
        }
    }
    // exec reports the EACCES of a file that is there but not executable.
    not_executable.ok_or_else(|| ProcessError::NotFound { program: program.to_owned(), path: path.to_owned() })
}

/// Turns `spawn`'s error into one naming the program and the failed step.
fn spawn_error(err: std::io::Error, program: &str, spec: &LaunchSpec) -> ProcessError {
    let program = program.to_owned();
    let Some((step, source)) = split(&err) else {
        return ProcessError::Exec { program, source: err };
    };
    let denied = source.raw_os_error() == Some(libc::EPERM);
    match (step, spec.credentials) {
        (Step::Setgroups | Step::Setgid | Step::Setuid, Some(c)) if denied => {
            ProcessError::NotPrivileged { program, uid: c.uid, gid: c.gid, daemon_uid: Uid::effective().as_raw() }
        }
        (Step::Chdir, _) => ProcessError::Chdir { program, cwd: spec.cwd.to_owned(), source },
        (step, _) => ProcessError::ChildSetup { program, step: step.name(), source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(path: &str) -> Vec<(String, String)> {
        vec![("PATH".to_owned(), path.to_owned())]
    }

    #[test]
    fn program_searched_in_the_apps_path() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("myapp");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("/nonexistent:{}", dir.path().display());
        assert_eq!(find_program("myapp", &env(&path), Path::new("/")).unwrap(), exe);
        // A relative PATH entry is relative to the app's cwd.
        assert_eq!(find_program("myapp", &env("."), dir.path()).unwrap(), dir.path().join("./myapp"));
        let err = find_program("myapp", &env("/usr/bin"), Path::new("/")).unwrap_err();
        assert!(matches!(err, ProcessError::NotFound { .. }), "{err}");
        assert!(err.to_string().contains("myapp") && err.to_string().contains("/usr/bin"));
    }

    #[test]
    fn slash_means_no_search_and_no_path_means_default() {
        let found = find_program("./run", &[], Path::new("/")).unwrap();
        assert_eq!(found, Path::new("./run"));
        assert_eq!(find_program("sh", &[], Path::new("/")).unwrap(), Path::new("/bin/sh"));
    }

    #[test]
    fn non_executable_file_is_left_for_exec_to_refuse() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("data"), "").unwrap();
        let path = dir.path().display().to_string();
        assert_eq!(find_program("data", &env(&path), Path::new("/")).unwrap(), dir.path().join("data"));
    }

    #[test]
    fn denied_credential_change_reads_as_missing_privilege() {
        let creds = Credentials { uid: 65534, gid: 65534, groups: vec![] };
        let argv = vec!["app".to_owned()];
        let spec =
            LaunchSpec { argv: &argv, cwd: Path::new("/srv/app"), env: &[], credentials: Some(&creds), cgroup: None };
        let folded = |step: Step, errno: i32| std::io::Error::from_raw_os_error(((step as i32) << 16) | errno);
        let err = spawn_error(folded(Step::Setgroups, libc::EPERM), "app", &spec);
        assert!(matches!(err, ProcessError::NotPrivileged { uid: 65534, .. }), "{err}");
        assert!(err.to_string().contains("may not switch users"), "{err}");
        let err = spawn_error(folded(Step::Chdir, libc::EACCES), "app", &spec);
        assert!(err.to_string().contains("/srv/app"), "{err}");
        let err = spawn_error(folded(Step::Setsid, libc::EPERM), "app", &spec);
        assert!(err.to_string().contains("setsid failed"), "{err}");
    }

    #[test]
    fn empty_argv_is_an_error() {
        let spec = LaunchSpec { argv: &[], cwd: Path::new("/"), env: &[], credentials: None, cgroup: None };
        assert!(matches!(launch(&spec), Err(ProcessError::EmptyArgv)));
    }
}
