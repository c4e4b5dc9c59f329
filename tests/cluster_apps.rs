//! The example cluster apps (examples/apps/cluster.{js,py}) keep their
//! promise without procd: two copies share one listening socket passed as
//! fd 3 (LISTEN_FDS), and replacing them one by one under load, as a
//! rolling reload does, fails no request; every stopped copy exits 0.

mod common;

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::http_load::{Load, LoadPlan};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn apps_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/apps")
}

/// One running copy of an example, its output in a file.
struct Copy {
    child: Child,
    log: PathBuf,
}

impl Copy {
    /// Starts `program script` with `socket` at fd 3 and the socket
    /// activation variables; `LISTEN_PID` is set by the shell to its own
    /// pid, which `exec` keeps.
    fn start(program: &str, script: &str, socket: &OwnedFd, instance: u32, dir: &Path) -> Copy {
        let log = dir.join(format!("{script}-{instance}.log"));
        let out = fs::File::create(&log).unwrap();
        let raw = socket.as_raw_fd();
        let mut command = Command::new("sh");
        command
            .args(["-c", &format!("LISTEN_PID=$$ exec {program} {script}")])
            .current_dir(apps_dir())
            .env("LISTEN_FDS", "1")
            .env("LISTEN_FDNAMES", "http")
            .env("PROCD_INSTANCE", instance.to_string())
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                let result = if raw == 3 { libc::fcntl(3, libc::F_SETFD, 0) } else { libc::dup2(raw, 3) };
                if result == -1 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
            });
        }
        let copy = Copy { child: command.spawn().expect("spawn example"), log };
        copy.wait_log("serving on fd 3");
        copy
    }

    fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_log(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.output().contains(text) {
            assert!(Instant::now() < deadline, "no {text:?} in:\n{}", self.output());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGINT, as procd's default stop, then the exit status.
    fn stop(mut self) -> (ExitStatus, String) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, self.output());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the example did not stop within 10 s:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Copy {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Two copies on one socket; under load, replace copy 0 by copy 2, then
/// copy 1 by copy 3, as a rolling reload would.
fn rolling_replacement_fails_no_request(program: &str, script: &str) {
    let dir = tempfile::tempdir().unwrap();
    let socket = procd::listen::bind_tcp("tcp://127.0.0.1:0", "127.0.0.1", 0).unwrap();
    let addr = std::net::TcpListener::from(socket.try_clone().unwrap()).local_addr().unwrap();
    let first = Copy::start(program, script, &socket, 0, dir.path());
    let second = Copy::start(program, script, &socket, 1, dir.path());

    let plan = LoadPlan {
        requests: 4000,
        connections: 4,
        fresh_every: Some(Duration::from_millis(3)),
        pace: Some(Duration::from_micros(500)),
        ..LoadPlan::new(addr)
    };
    let load = Load::start(plan);
    assert!(load.wait_done(300, Duration::from_secs(20)), "the load did not get going");
    let (status, output) = first.stop();
    assert_eq!(status.code(), Some(0), "copy 0 exited with {status:?} (signal {:?}):\n{output}", status.signal());
    let third = Copy::start(program, script, &socket, 2, dir.path());
    let (status, output) = second.stop();
    assert_eq!(status.code(), Some(0), "copy 1 exited with {status:?}:\n{output}");
    let still_running = load.done.load(std::sync::atomic::Ordering::Relaxed) < 4000;
    let fourth = Copy::start(program, script, &socket, 3, dir.path());
    let report = load.join();
    eprintln!("{script}: {report:?}");
    assert!(still_running, "the load ended before both copies were replaced; raise `requests`");
    assert_eq!(report.failed(), 0, "{script}: failed requests: {:?}\n{:?}", report.failures, report.samples);
    // The examples announce every close (`Connection: close`), so a client
    // never has to retry a request on a connection closed under it.
    assert_eq!(report.retried, 0, "{script} closed a keep-alive connection without saying so");
    assert!(report.ok >= 4000 && report.fresh_ok > 50, "{report:?}");
    assert!(report.by_server.len() >= 3, "old and new copies all served: {:?}", report.by_server);
    for copy in [third, fourth] {
        let (status, output) = copy.stop();
        assert_eq!(status.code(), Some(0), "{output}");
    }
}

#[test]
fn node_example_is_replaced_under_load_without_a_failed_request() {
    rolling_replacement_fails_no_request("node", "cluster.js");
}

#[test]
fn python_example_is_replaced_under_load_without_a_failed_request() {
    rolling_replacement_fails_no_request("python3", "cluster.py");
}
