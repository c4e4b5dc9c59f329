//! `process::cgroup` against the host's real cgroup2 hierarchy: instances
//! launched into their own cgroup, and stops that reach descendants which
//! left the process group.
//!
//! Skipped (with a note) unless running as root on a host with a writable
//! cgroup2 hierarchy. Each test works in its own subtree, named after the
//! test and this process, which a [`Sandbox`] empties and removes even when
//! the test fails. The test process is a subreaper so that orphaned
//! grandchildren are reaped here, by pid, rather than left as zombies.

use std::path::Path;
use std::time::{Duration, Instant};

use procd::process::{
    CgroupRoot, Credentials, InstanceCgroup, LaunchSpec, Launched, ProcessError, become_subreaper, current_uid,
    group_alive, launch, try_reap,
};

const DEADLINE: Duration = Duration::from_secs(10);

/// One test's cgroup subtree, and every process it may have left: emptied,
/// reaped and removed on drop, whatever the test's outcome.
struct Sandbox {
    root: CgroupRoot,
    cgroups: Vec<InstanceCgroup>,
    /// Our children and adopted orphans, reaped on drop.
    pids: Vec<i32>,
    /// Read ends of the launched instances' output, kept open until the end.
    outputs: Vec<Launched>,
}

impl Sandbox {
    /// The sandbox, or `None` (after saying why) when the host cannot run the test.
    fn new(test: &str) -> Option<Sandbox> {
        if current_uid() != 0 {
            eprintln!("skipping {test}: cgroup tests need root");
            return None;
        }
        let name = format!("procd-test-{}-{test}", std::process::id());
        match CgroupRoot::detect(&name) {
            Ok(Some(root)) => {
                become_subreaper().unwrap();
                Some(Sandbox { root, cgroups: Vec::new(), pids: Vec::new(), outputs: Vec::new() })
            }
            Ok(None) => {
                eprintln!("skipping {test}: no writable cgroup2 hierarchy");
                None
            }
            Err(e) => panic!("detecting cgroup2: {e}"),
        }
    }

    fn instance(&mut self, key: &str) -> InstanceCgroup {
        let cgroup = self.root.instance(key).unwrap_or_else(|e| panic!("instance {key}: {e}"));
        self.cgroups.push(cgroup.clone());
        cgroup
    }

    /// Launches `sh -c script` into `cgroup`; returns the leader's pid.
    fn sh(&mut self, cgroup: &InstanceCgroup, script: &str) -> i32 {
        let argv: Vec<String> = ["sh", "-c", script].map(String::from).into();
        let env = vec![("PATH".to_owned(), "/usr/bin:/bin".to_owned())];
        let spec = LaunchSpec { argv: &argv, cwd: Path::new("/"), env: &env, credentials: None, cgroup: Some(cgroup) };
        let launched = launch(&spec).unwrap_or_else(|e| panic!("launching {script:?}: {e}"));
        let pid = launched.pid;
        self.pids.push(pid);
        self.outputs.push(launched);
        pid
    }

    /// Remembers the processes now in `cgroup`, to reap them once killed.
    fn track(&mut self, cgroup: &InstanceCgroup) -> Vec<i32> {
        let pids = cgroup.pids();
        self.pids.extend(pids.iter().filter(|p| !self.pids.contains(p)).collect::<Vec<_>>());
        pids
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for cgroup in &self.cgroups {
            cgroup.kill_all();
            let deadline = Instant::now() + DEADLINE;
            while cgroup.populated() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        for &pid in &self.pids {
            reap(pid);
        }
        for cgroup in &self.cgroups {
            if let Err(e) = cgroup.remove() {
                eprintln!("leaving {}: {e}", cgroup.path().display());
            }
        }
        if let Err(e) = self.root.remove() {
            eprintln!("leaving {}: {e}", self.root.path().display());
        }
    }
}

/// Polls `done` until it holds, failing the test at the deadline.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Reaps `pid` if it is our child (or adopted orphan) and has exited or
/// exits before the deadline; true once it is gone.
fn reap(pid: i32) -> bool {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match try_reap(pid) {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if Instant::now() >= deadline => return false,
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// The session of `pid`, from `/proc/<pid>/stat`.
fn session(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split(' ').nth(3)?.parse().ok()
}

/// The process group of `pid`, from `/proc/<pid>/stat`.
fn pgrp(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split(' ').nth(2)?.parse().ok()
}

#[test]
fn kill_all_ends_a_double_forked_daemon_that_left_the_group() {
    let Some(mut sandbox) = Sandbox::new("double-fork") else { return };
    let cgroup = sandbox.instance("web-0");
    assert!(cgroup.pids().is_empty() && !cgroup.populated(), "a new cgroup is empty");

    let leader = sandbox.sh(&cgroup, "setsid sleep 1000 </dev/null >/dev/null 2>&1 & exit 0");
    assert!(reap(leader), "the leader exits at once");
    wait_until("only the daemon is left", || cgroup.pids().len() == 1);
    let daemon = sandbox.track(&cgroup)[0];
    assert_ne!(daemon, leader);
    wait_until("the daemon leads its own group", || pgrp(daemon) == Some(daemon));
    assert!(!group_alive(leader), "a stop by process group would find nothing to kill");

    cgroup.kill_all();
    wait_until("the cgroup is empty", || !cgroup.populated());
    assert!(reap(daemon));
    assert!(!Path::new(&format!("/proc/{daemon}")).exists(), "the daemon is gone");
    assert!(cgroup.pids().is_empty());
    cgroup.remove().unwrap();
    assert!(!cgroup.path().exists());
}

#[test]
fn signal_all_reaches_every_process() {
    let Some(mut sandbox) = Sandbox::new("signal-all") else { return };
    let cgroup = sandbox.instance("api-1");
    let leader = sandbox.sh(&cgroup, "sleep 1000 & sleep 1000 & setsid sleep 1000 & wait");
    wait_until("leader and three children are in", || cgroup.pids().len() == 4);
    let pids = sandbox.track(&cgroup);
    assert!(pids.contains(&leader), "the leader joined before exec: {pids:?}");

    cgroup.signal_all(libc::SIGTERM);
    wait_until("every process ended on SIGTERM", || !cgroup.populated());
    for pid in pids {
        assert!(reap(pid), "pid {pid} ended");
    }
    assert!(cgroup.pids().is_empty());
    cgroup.remove().unwrap();
}

#[test]
fn detect_and_instance_reuse_what_exists() {
    let Some(mut sandbox) = Sandbox::new("reuse") else { return };
    let name = sandbox.root.path().file_name().unwrap().to_str().unwrap().to_owned();
    let again = CgroupRoot::detect(&name).unwrap().expect("detected once, detected again");
    assert_eq!(again.path(), sandbox.root.path());

    let first = sandbox.instance("app.v2/0");
    let second = again.instance("app.v2/0").unwrap();
    assert_eq!(first.path(), second.path());
    assert_eq!(first.path().parent(), Some(sandbox.root.path()), "a hostile key stays one component");
    let has_memory = first.path().join("memory.current").exists();
    assert_eq!(first.memory_current().is_some(), has_memory);

    // A cgroup removed behind procd's back: the launch says which.
    first.remove().unwrap();
    let argv = vec!["true".to_owned()];
    let spec = LaunchSpec { argv: &argv, cwd: Path::new("/"), env: &[], credentials: None, cgroup: Some(&first) };
    let err = launch(&spec).unwrap_err();
    assert!(matches!(err, ProcessError::Cgroup { .. }), "{err}");
    assert!(err.to_string().contains(&*first.path().to_string_lossy()), "{err}");
}

/// Our children (alive or zombie) whose cgroup is `cgroup`, from `/proc`.
fn children_in(cgroup: &InstanceCgroup) -> Vec<i32> {
    let me = std::process::id() as i32;
    let suffix = {
        let mut parts = cgroup.path().iter().rev().take(2).collect::<Vec<_>>();
        parts.reverse();
        format!("/{}", Path::new(parts[0]).join(parts[1]).display())
    };
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat.rfind(')').and_then(|i| stat[i + 2..].split(' ').nth(1)?.parse::<i32>().ok());
            let group = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            ppid == Some(me) && group.lines().any(|l| l.starts_with("0::") && l.ends_with(&suffix))
        })
        .collect()
}

#[test]
fn children_start_inside_the_cgroup() {
    let Some(mut sandbox) = Sandbox::new("start-inside") else { return };
    let cgroup = sandbox.instance("worker-0");
    let leader = sandbox.sh(&cgroup, "setsid sh -c 'sleep 1000 & exit 0' </dev/null >/dev/null 2>&1; exec sleep 1000");
    // The leader is in the cgroup from its first instruction, not after
    // joining: nothing it starts can escape, not even a daemonised grandchild.
    assert!(cgroup.pids().contains(&leader), "{:?}", cgroup.pids());
    let sleeping = |pids: Vec<i32>| {
        pids.len() == 2
            && pids.iter().all(|p| std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c == b"sleep\x001000\x00"))
    };
    wait_until("the leader and the double-forked grandchild sleep in it", || sleeping(cgroup.pids()));
    let pids = sandbox.track(&cgroup);
    let grandchild = *pids.iter().find(|&&p| p != leader).unwrap();
    assert_eq!(session(leader), Some(leader), "the leader leads its own session");
    let escaped = session(grandchild);
    assert!(escaped.is_some() && escaped != Some(leader), "the grandchild left the session: {escaped:?}");

    // As another user, from this multi-threaded process: the child's
    // setuid must change the child alone.
    let creds = Credentials { uid: 65534, gid: 65534, groups: vec![65534] };
    let other = sandbox.instance("worker-1");
    let argv: Vec<String> = ["sleep", "1000"].map(String::from).into();
    let env = vec![("PATH".to_owned(), "/usr/bin:/bin".to_owned())];
    let spec =
        LaunchSpec { argv: &argv, cwd: Path::new("/"), env: &env, credentials: Some(&creds), cgroup: Some(&other) };
    let launched = launch(&spec).unwrap();
    let pid = launched.pid;
    sandbox.pids.push(pid);
    sandbox.outputs.push(launched);
    assert_eq!(other.pids(), vec![pid]);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Uid:", "65534", "65534", "65534", "65534"]),
        "{status}"
    );
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Gid:", "65534", "65534", "65534", "65534"]),
        "{status}"
    );
    assert_eq!(current_uid(), 0, "the test process kept its uid");
}

#[test]
fn failures_inside_a_cgroup_name_the_program_and_leave_no_zombie() {
    let Some(mut sandbox) = Sandbox::new("fail-inside") else { return };
    let cgroup = sandbox.instance("broken-0");
    let env = vec![("PATH".to_owned(), "/usr/bin:/bin".to_owned())];
    let launch_in = |argv: &[&str], cwd: &str| {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let spec = LaunchSpec { argv: &argv, cwd: Path::new(cwd), env: &env, credentials: None, cgroup: Some(&cgroup) };
        launch(&spec).map(|launched| launched.pid)
    };

    // A missing program with a slash is found missing by execve in the child.
    let err = launch_in(&["/nonexistent/procd-no-such-app", "x"], "/").unwrap_err();
    assert!(matches!(err, ProcessError::Exec { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/procd-no-such-app"), "{err}");
    // Not executable (a directory): EACCES from execve.
    let err = launch_in(&["/tmp"], "/").unwrap_err();
    assert!(matches!(err, ProcessError::Exec { .. }) && err.to_string().contains("/tmp"), "{err}");
    // A step of the child's setup: chdir, reported as such.
    let err = launch_in(&["sleep", "1000"], "/nonexistent/procd-cwd").unwrap_err();
    assert!(matches!(err, ProcessError::Chdir { .. }), "{err}");
    assert!(err.to_string().contains("sleep") && err.to_string().contains("/nonexistent/procd-cwd"), "{err}");

    // Each failed child was reaped by launch: none of ours is left there,
    // not even a zombie, and the cgroup is empty.
    wait_until("no child of ours is left in the cgroup", || children_in(&cgroup).is_empty());
    assert!(!cgroup.populated());

    // And the cgroup still takes a good launch afterwards.
    let pid = launch_in(&["sleep", "1000"], "/").unwrap();
    sandbox.pids.push(pid);
    assert_eq!(children_in(&cgroup), vec![pid]);
    assert!(Path::new(&format!("/proc/{pid}")).exists());
}

/// Not a check but a measurement (`--ignored --nocapture`): the median time
/// of a launch into a fresh instance cgroup. Joining by writing
/// `cgroup.procs` in the child cost 13–25 ms (an RCU grace period under the
/// cgroup threadgroup rwsem); `clone3(CLONE_INTO_CGROUP)` avoids it.
#[test]
#[ignore]
fn launch_into_cgroup_timing() {
    let Some(mut sandbox) = Sandbox::new("timing") else { return };
    let argv: Vec<String> = ["sleep", "1000"].map(String::from).into();
    let env = vec![("PATH".to_owned(), "/usr/bin:/bin".to_owned())];
    let mut times = Vec::new();
    for i in 0..20 {
        let cgroup = sandbox.instance(&format!("sleep-{i}"));
        let spec = LaunchSpec { argv: &argv, cwd: Path::new("/"), env: &env, credentials: None, cgroup: Some(&cgroup) };
        let start = Instant::now();
        let launched = launch(&spec).unwrap();
        times.push(start.elapsed());
        sandbox.pids.push(launched.pid);
        sandbox.outputs.push(launched);
        std::thread::sleep(Duration::from_millis(50));
    }
    times.sort();
    eprintln!("launch into a cgroup: median {:?}, min {:?}, max {:?}", times[10], times[0], times[19]);
}
