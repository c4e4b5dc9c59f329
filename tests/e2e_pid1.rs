//! Issue #6: procd as PID 1 of a container. Under `unshare --pid --fork
//! --mount-proc` the daemon is PID 1 of a fresh pid namespace: orphans of
//! its apps come back to it and must be reaped (no zombie piles up), and
//! SIGTERM stops every app and exits 0, leaving the namespace empty.
//!
//! Skipped, with a note, where `unshare` cannot make a pid namespace
//! (no root, no user namespaces). On failure the daemon gets SIGKILL, and
//! the kernel kills the rest of its namespace with it.

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Daemon, alive, signal};

/// The unshare process and the daemon it forked; SIGKILL to the daemon on
/// drop (a test that failed midway), which empties the namespace.
struct Pid1 {
    unshare: Child,
    /// The daemon's pid as the host sees it.
    daemon: Option<i32>,
}

impl Drop for Pid1 {
    fn drop(&mut self) {
        if let Some(pid) = self.daemon.filter(|p| alive(*p as i64)) {
            signal(pid, "KILL");
        }
        let _ = self.unshare.wait();
    }
}

fn unshare_works() -> bool {
    Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The children of `pid` (from /proc/PID/task/*/children, or by scanning
/// parents where the kernel lacks that file).
fn children(pid: u32) -> Vec<i32> {
    let mut kids = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
                kids.extend(list.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
    }
    if kids.is_empty() {
        kids = processes().into_iter().filter(|(_, st)| st.ppid == pid as i32).map(|(p, _)| p).collect();
    }
    kids
}

struct Stat {
    state: char,
    ppid: i32,
}

fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = text.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some(Stat { state, ppid })
}

fn processes() -> Vec<(i32, Stat)> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, stat(pid)?)))
        .collect()
}

fn pid_ns(pid: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok().map(|l| l.display().to_string())
}

/// Host pids and states of the processes of pid namespace `ns`.
fn members(ns: &str) -> Vec<(i32, char)> {
    processes().into_iter().filter(|(pid, _)| pid_ns(*pid).as_deref() == Some(ns)).map(|(p, s)| (p, s.state)).collect()
}

#[test]
fn as_pid_1_it_reaps_orphans_and_stops_every_app_on_sigterm() {
    if !unshare_works() {
        println!("note: skipped, `unshare --pid --fork --mount-proc` does not work here");
        return;
    }
    // One app makes an orphan every 50 ms (the subshell exits at once,
    // leaving its `sleep` to PID 1), one just runs.
    let d = Daemon::prepare(&[(
        "apps.kdl",
        "app \"orphans\" {\n    run \"sh\" \"-c\" \"while :; do (sleep 0.01 &); sleep 0.05; done\"\n}\n\
         app \"long\" {\n    run \"sleep\" \"1000\"\n}\n",
    )]);
    let log = std::fs::File::create(d.dir.path().join("daemon.stderr")).unwrap();
    let unshare = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", BIN, "daemon", "--config-dir"])
        .arg(&d.conf)
        .arg("--home")
        .arg(&d.home)
        .env("RUST_LOG", "procd=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn unshare");
    let unshare_pid = unshare.id();
    let mut guard = Pid1 { unshare, daemon: None };

    d.wait_until("unshare forks the daemon", Duration::from_secs(10), || {
        guard.daemon = children(unshare_pid).first().copied();
        guard.daemon.is_some()
    });
    let daemon = guard.daemon.unwrap();
    let ns = pid_ns(daemon).expect("daemon's pid namespace");
    assert_ne!(Some(&ns), pid_ns(std::process::id() as i32).as_ref(), "the daemon has a namespace of its own");

    // Status pids are the namespace's, not ours: read them, never signal them
    // (so not Daemon::status, which remembers pids to kill at drop).
    d.wait_until("both apps online", Duration::from_secs(10), || {
        let out = d.procd(&["status", "--json"]);
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else { return false };
        let online = |name: &str| {
            v["apps"].as_array().into_iter().flatten().any(|a| {
                a["name"] == name
                    && a["instances"].as_array().is_some_and(|i| i.iter().all(|i| i["status"] == "online"))
            })
        };
        out.status.success() && online("orphans") && online("long")
    });

    // Over about a second: every zombie of the namespace is reaped soon
    // after it appears, and orphans are being made at all.
    let mut zombie_since: HashMap<i32, Instant> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    let until = Instant::now() + Duration::from_millis(1200);
    while Instant::now() < until {
        let now = Instant::now();
        let current = members(&ns);
        seen.extend(current.iter().map(|(p, _)| *p));
        zombie_since.retain(|pid, _| current.iter().any(|(p, s)| p == pid && *s == 'Z'));
        for (pid, state) in &current {
            if *state == 'Z' {
                let since = *zombie_since.entry(*pid).or_insert(now);
                assert!(
                    now - since < Duration::from_millis(500),
                    "pid {pid} has been a zombie for {:?}\n--- daemon log ---\n{}",
                    now - since,
                    d.daemon_log()
                );
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(seen.len() > 8, "the orphan maker ran ({} pids seen)", seen.len());

    signal(daemon, "TERM");
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = guard.unshare.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "daemon did not exit on SIGTERM\n{}", d.daemon_log());
        std::thread::sleep(Duration::from_millis(20));
    };
    // Gone: its pid may be reused, so the guard must not signal it any more.
    guard.daemon = None;
    assert_eq!(status.code(), Some(0), "daemon exit status, through unshare\n{}", d.daemon_log());
    d.wait_until("the namespace is empty", Duration::from_secs(5), || members(&ns).is_empty());
}
