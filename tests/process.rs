//! `process::launch`, signals and `monitor` against real processes.
//!
//! No test here may call `waitpid(-1)` (tests run in parallel threads of one
//! process and would steal each other's children): each reaps its own pids
//! with `try_reap`. The `Reaper` is tested alone in `tests/reaper.rs`.

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

use procd::monitor::{Monitor, process_tree, start_time_ticks};
use procd::process::{
    ExitStatus, LaunchSpec, Launched, ProcessError, become_subreaper, group_alive, launch, resolve_credentials,
    signal_group, try_reap,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::unix::pipe::Receiver;

const DEADLINE: Duration = Duration::from_secs(10);

fn base_env() -> Vec<(String, String)> {
    vec![("PATH".into(), "/usr/bin:/bin".into())]
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

fn start(words: &[&str], cwd: &Path, env: &[(String, String)]) -> Launched {
    let argv = argv(words);
    let spec = LaunchSpec { argv: &argv, cwd, env, credentials: None, cgroup: None };
    launch(&spec).unwrap_or_else(|e| panic!("launching {words:?}: {e}"))
}

fn sh(script: &str) -> Launched {
    start(&["sh", "-c", script], Path::new("/"), &base_env())
}

/// Kills a test's process group if the test fails before stopping it, so no
/// process outlives a failed run.
struct KillOnPanic(i32);

impl Drop for KillOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = signal_group(self.0, libc::SIGKILL);
            let _ = try_reap(self.0);
        }
    }
}

/// Polls until `pid` (our child) has exited and returns how.
fn wait_exit(pid: i32) -> ExitStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = try_reap(pid).unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "pid {pid} did not exit");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Polls until a grandchild (re-parented to us, a subreaper) is gone. Its
/// parent may have reaped it first, hence no status.
fn wait_gone(pid: i32) -> Option<ExitStatus> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match try_reap(pid) {
            Ok(Some(status)) => return Some(status),
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    return None;
                }
            }
            other => {
                other.unwrap();
            }
        }
        assert!(Instant::now() < deadline, "pid {pid} did not go away");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reads a pipe to EOF through tokio, as the daemon will.
async fn read_all(fd: OwnedFd) -> String {
    let mut pipe = Receiver::from_owned_fd(fd).unwrap();
    let mut out = String::new();
    tokio::time::timeout(DEADLINE, pipe.read_to_string(&mut out)).await.expect("pipe not closed in time").unwrap();
    out
}

async fn first_line(fd: OwnedFd) -> String {
    let mut lines = BufReader::new(Receiver::from_owned_fd(fd).unwrap()).lines();
    let line = tokio::time::timeout(DEADLINE, lines.next_line()).await;
    line.expect("no line in time").unwrap().unwrap_or_default()
}

fn stat_field(pid: i32, n: usize) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    rest.split_whitespace().nth(n - 3).unwrap().to_owned()
}

#[tokio::test]
async fn stdout_and_stderr_are_separate_pipes() {
    let child = sh("echo out; echo err >&2; exit 3");
    for fd in [&child.stdout, &child.stderr] {
        use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
        let fl = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL).unwrap());
        let fd_flags = FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD).unwrap());
        assert!(fl.contains(OFlag::O_NONBLOCK) && fd_flags.contains(FdFlag::FD_CLOEXEC));
        if procd::process::current_uid() == 0 {
            assert_eq!(fcntl(fd, FcntlArg::F_GETPIPE_SZ).unwrap(), 1 << 20);
        }
    }
    assert_eq!(read_all(child.stdout).await, "out\n");
    assert_eq!(read_all(child.stderr).await, "err\n");
    assert_eq!(wait_exit(child.pid), ExitStatus::Code(3));
}

#[test]
fn child_leads_a_new_session_with_clean_signals() {
    let child = start(&["sleep", "100"], Path::new("/"), &base_env());
    let _guard = KillOnPanic(child.pid);
    assert_eq!(stat_field(child.pid, 5), child.pid.to_string(), "pgid");
    assert_eq!(stat_field(child.pid, 6), child.pid.to_string(), "session");
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.pid)).unwrap();
    // The test harness ignores SIGPIPE and tokio may block signals: neither
    // may reach the app.
    assert!(status.contains("SigBlk:\t0000000000000000"), "{status}");
    assert!(status.contains("SigIgn:\t0000000000000000"), "{status}");
    signal_group(child.pid, libc::SIGKILL).unwrap();
    assert_eq!(wait_exit(child.pid), ExitStatus::Signal(libc::SIGKILL));
    assert!(!group_alive(child.pid));
    signal_group(child.pid, libc::SIGKILL).expect("a gone group is not an error");
}

#[tokio::test]
async fn environment_is_exactly_the_given_one() {
    let env = vec![
        ("PATH".to_owned(), "/usr/bin:/bin".to_owned()),
        ("GREETING".to_owned(), "hello world".to_owned()),
        ("EMPTY".to_owned(), String::new()),
    ];
    let child = start(&["env"], Path::new("/"), &env);
    let got: BTreeSet<String> = read_all(child.stdout).await.lines().map(String::from).collect();
    let want: BTreeSet<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    assert_eq!(got, want);
    assert_eq!(wait_exit(child.pid), ExitStatus::Code(0));
}

#[tokio::test]
async fn working_directory_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("where.sh");
    std::fs::write(&script, "#!/bin/sh\npwd\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // A relative argv[0] with a slash is relative to the app's cwd.
    let child = start(&["./where.sh"], dir.path(), &base_env());
    let got = read_all(child.stdout).await;
    assert_eq!(Path::new(got.trim()), dir.path().canonicalize().unwrap());
    assert_eq!(wait_exit(child.pid), ExitStatus::Code(0));
}

#[test]
fn launch_failures_name_the_program() {
    let dir = tempfile::tempdir().unwrap();
    let fail = |words: &[&str], cwd: &Path| {
        let argv = argv(words);
        let env = base_env();
        let spec = LaunchSpec { argv: &argv, cwd, env: &env, credentials: None, cgroup: None };
        launch(&spec).expect_err("launch should fail")
    };

    let err = fail(&["procd-no-such-program"], Path::new("/"));
    assert!(matches!(err, ProcessError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("procd-no-such-program"), "{err}");

    let err = fail(&["/nonexistent/procd-prog"], Path::new("/"));
    let ProcessError::Exec { program, source } = &err else { panic!("{err}") };
    assert_eq!(program, "/nonexistent/procd-prog");
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);

    let data = dir.path().join("data.txt");
    std::fs::write(&data, "").unwrap();
    let err = fail(&[data.to_str().unwrap()], Path::new("/"));
    let ProcessError::Exec { source, .. } = &err else { panic!("{err}") };
    assert_eq!(source.kind(), std::io::ErrorKind::PermissionDenied, "{err}");

    let missing = dir.path().join("gone");
    let err = fail(&["true"], &missing);
    let ProcessError::Chdir { cwd, .. } = &err else { panic!("{err}") };
    assert_eq!(cwd, &missing);
    assert!(err.to_string().contains("gone") && err.to_string().contains("`true`"), "{err}");
}

#[tokio::test]
async fn stop_reaches_a_grandchild() {
    // So the backgrounded sleep is re-parented to us and we can reap it.
    become_subreaper().unwrap();
    let child = sh("sleep 100 & echo $!; wait");
    let _guard = KillOnPanic(child.pid);
    let grandchild: i32 = first_line(child.stdout).await.parse().unwrap();
    assert_eq!(stat_field(grandchild, 5), child.pid.to_string());
    signal_group(child.pid, libc::SIGTERM).unwrap();
    assert_eq!(wait_exit(child.pid), ExitStatus::Signal(libc::SIGTERM));
    assert_ne!(wait_gone(grandchild), Some(ExitStatus::Code(0)));
    assert!(!group_alive(child.pid));
}

#[tokio::test]
async fn no_daemon_fd_leaks_into_the_child() {
    let file = std::fs::File::open("/dev/null").unwrap();
    nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty())).unwrap();
    let child = start(&["ls", "/proc/self/fd"], Path::new("/"), &base_env());
    let fds: BTreeSet<String> = read_all(child.stdout).await.split_whitespace().map(String::from).collect();
    // 0-2, plus the directory ls itself has open to list.
    assert_eq!(fds, ["0", "1", "2", "3"].map(String::from).into(), "leaked fds");
    assert_eq!(wait_exit(child.pid), ExitStatus::Code(0));
    drop(file);
}

#[tokio::test]
async fn runs_as_the_given_user() {
    if procd::process::current_uid() != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let creds = resolve_credentials(Some("nobody"), None, &[]).unwrap().unwrap();
    let argv = argv(&["sh", "-c", "id -u; id -g; id -G"]);
    let env = base_env();
    let spec = LaunchSpec { argv: &argv, cwd: Path::new("/"), env: &env, credentials: Some(&creds), cgroup: None };
    let child = launch(&spec).unwrap();
    let groups: Vec<String> = creds.groups.iter().map(u32::to_string).collect();
    let want = format!("{}\n{}\n{}\n", creds.uid, creds.gid, groups.join(" "));
    assert_eq!(read_all(child.stdout).await, want);
    assert_eq!(wait_exit(child.pid), ExitStatus::Code(0));

    // The working directory is entered as the app's user: a 0700 root
    // directory is refused.
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(private.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let spec = LaunchSpec { cwd: private.path(), ..spec };
    let err = launch(&spec).unwrap_err();
    let ProcessError::Chdir { source, .. } = &err else { panic!("{err}") };
    assert_eq!(source.kind(), std::io::ErrorKind::PermissionDenied);
}

#[tokio::test]
async fn monitor_sums_the_tree() {
    become_subreaper().unwrap();
    let python = "b = b'x' * (50 << 20); print('ready', flush=True); import time; time.sleep(100)";
    let child = start(&["sh", "-c", "python3 -c \"$0\" & wait", python], Path::new("/"), &base_env());
    let _guard = KillOnPanic(child.pid);
    assert_eq!(first_line(child.stdout).await, "ready");
    let tree = process_tree(child.pid);
    assert_eq!(tree.len(), 2, "sh and python: {tree:?}");
    assert!(start_time_ticks(tree[1]).unwrap() >= start_time_ticks(child.pid).unwrap());

    let mut monitor = Monitor::new();
    let t0 = Instant::now();
    let usage = monitor.sample(&[child.pid], t0)[&child.pid];
    assert!(usage.rss_bytes >= 50 << 20, "{usage:?}");
    assert_eq!(usage.cpu_percent, 0.0);
    let python_only = monitor.sample(&[tree[1]], t0)[&tree[1]];
    let with_sh = monitor.sample(&[child.pid], t0 + Duration::from_secs(1))[&child.pid];
    assert!(with_sh.rss_bytes > python_only.rss_bytes, "{with_sh:?} vs {python_only:?}");
    assert!(with_sh.cpu_percent >= 0.0);

    signal_group(child.pid, libc::SIGKILL).unwrap();
    assert_eq!(wait_exit(child.pid), ExitStatus::Signal(libc::SIGKILL));
    assert_ne!(wait_gone(tree[1]), Some(ExitStatus::Code(0)));
    assert!(monitor.sample(&[child.pid], Instant::now()).is_empty());
}
