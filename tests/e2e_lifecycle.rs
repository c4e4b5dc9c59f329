//! Issue #2, points 1 and 9: the daemon's own lifecycle (graceful stop of
//! every app on SIGTERM/SIGINT), restart policies, users, the socket's
//! protection.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{Daemon, alive, sleeper};

#[test]
fn sigterm_stops_every_app_gracefully_then_by_sigkill_and_exits_0() {
    let mut d = Daemon::start();
    let log = d.dir.path().join("graceful.log");
    // One app exits on its stop signal; one ignores it and needs SIGKILL.
    d.write(
        "apps.kdl",
        &format!(
            "app \"polite\" {{\n    run \"sh\" \"-c\" \"trap 'echo got-int >> {log}; exit 0' INT; touch {log}.armed; while true; do sleep 0.05; done\"\n}}\n\
             app \"stubborn\" {{\n    run \"sh\" \"-c\" \"trap '' INT TERM; touch {log}.stubborn; while true; do sleep 0.05; done\"\n    stop signal=\"SIGTERM\" timeout=\"300ms\"\n}}\n",
            log = log.display()
        ),
    );
    let polite = d.wait_online("polite", 1)[0];
    let stubborn = d.wait_online("stubborn", 1)[0];
    // Online is as soon as exec succeeded; the shell sets its trap after.
    let armed = d.dir.path().join("graceful.log.armed");
    let stubborn_armed = d.dir.path().join("graceful.log.stubborn");
    d.wait_until("both apps trapping signals", Duration::from_secs(5), || armed.exists() && stubborn_armed.exists());
    let started = Instant::now();
    let status = d.terminate();
    assert_eq!(status.code(), Some(0));
    assert!(started.elapsed() >= Duration::from_millis(300), "the stubborn app got its kill timeout");
    assert!(!alive(polite) && !alive(stubborn));
    assert_eq!(std::fs::read_to_string(&log).unwrap().trim(), "got-int", "SIGINT reached the polite app");
    assert!(!d.home.join("procd.sock").exists(), "socket removed");
}

#[test]
fn sigint_also_stops_the_daemon() {
    let mut d = Daemon::start_with(&[("a.kdl", &sleeper("a", ""))], &[]);
    let pid = d.wait_online("a", 1)[0];
    let mut child = d.child.take().unwrap();
    common::signal(child.id() as i32, "INT");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "daemon did not exit on SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    assert!(!alive(pid));
}

#[test]
fn crashed_instances_restart_per_policy() {
    let d = Daemon::start();
    d.write(
        "p.kdl",
        "app \"crashy\" {\n    run \"sh\" \"-c\" \"sleep 0.2; exit 3\"\n    restart \"always\" { delay \"50ms\"; }\n}\n\
         app \"clean\" {\n    run \"sh\" \"-c\" \"exit 0\"\n    restart \"on-failure\"\n}\n\
         app \"once\" {\n    run \"sh\" \"-c\" \"exit 1\"\n    restart \"never\"\n}\n",
    );
    d.wait_until("crashy restarted twice", Duration::from_secs(10), || {
        d.app("crashy").is_some_and(|a| a["instances"][0]["restarts"].as_u64().unwrap_or(0) >= 2)
    });
    let crashy = d.app("crashy").unwrap();
    assert_eq!(crashy["instances"][0]["last_exit"]["code"], 3, "{crashy}");
    assert_eq!(crashy["instances"][0]["last_restart_reason"], "exit code 3");
    for name in ["clean", "once"] {
        d.wait_until(&format!("{name} stopped"), Duration::from_secs(5), || {
            d.app(name).is_some_and(|a| a["instances"][0]["status"] == "stopped")
        });
        assert_eq!(d.app(name).unwrap()["instances"][0]["restarts"], 0, "{name}");
    }
}

#[test]
fn control_socket_is_private_and_checks_the_callers_uid() {
    let d = Daemon::start();
    let sock = d.home.join("procd.sock");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let setpriv = std::path::Path::new("/usr/bin/setpriv");
    if !is_root() || !setpriv.exists() {
        return;
    }
    // Even with the file opened up, another uid is refused by SO_PEERCRED.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&d.home, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", common::BIN, "status", "--home"])
        .arg(&d.home)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn apps_run_as_their_user() {
    if !is_root() {
        return;
    }
    let d = Daemon::start_with(&[("u.kdl", &sleeper("u", "user \"nobody\"\n    cwd \"/\""))], &[]);
    let pid = d.wait_online("u", 1)[0];
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid_line.split_whitespace().skip(1).all(|u| u == "65534"), "{uid_line}");
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}
