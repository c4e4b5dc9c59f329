//! Issue #2, point 4: a broken file never stops anything; its errors are
//! shown with file, line and column until it is fixed.

mod common;

use std::time::Duration;

use common::{Daemon, sleeper};

#[test]
fn a_broken_file_keeps_its_apps_running_and_shows_where() {
    let d = Daemon::start();
    d.write("web.kdl", &sleeper("web", "instances 2"));
    let pids = d.wait_online("web", 2);
    let cases = [
        ("typo'd key", "app \"web\" {\n    run \"sleep\" \"1000\"\n    instanse 2\n}\n", 3, "instances"),
        ("wrong type", "app \"web\" {\n    run \"sleep\" \"1000\"\n    instances \"many\"\n}\n", 3, "instances"),
        ("bad duration", "app \"web\" {\n    run \"sleep\" \"1000\"\n    stop timeout=\"soon\"\n}\n", 3, "duration"),
        ("bad signal", "app \"web\" {\n    run \"sleep\" \"1000\"\n    stop signal=\"SIGNOPE\"\n}\n", 3, "signal"),
        (
            "duplicate app",
            "app \"web\" {\n    run \"sleep\" \"1000\"\n}\napp \"web\" {\n    run \"sleep\" \"1\"\n}\n",
            4,
            "web",
        ),
        ("invalid KDL", "app \"web\" {\n    run \"sleep\" \"1000\"\n", 0, ""),
    ];
    let mut errors_text = String::new();
    for (what, text, line, needle) in cases {
        d.write("web.kdl", text);
        let mut errors = serde_json::Value::Null;
        let previous = errors_text.clone();
        d.wait_until(&format!("{what}: error shown"), Duration::from_secs(10), || {
            errors = d.status()["errors"].clone();
            let text = errors.to_string();
            !errors.as_array().unwrap().is_empty() && text != previous
        });
        errors_text = errors.to_string();
        let e = &errors[0];
        assert_eq!(e["file"], d.conf.join("web.kdl").display().to_string(), "{what}");
        assert!(e["line"].as_u64().unwrap() >= 1 && e["column"].as_u64().unwrap() >= 1, "{what}: {e}");
        if line > 0 {
            assert_eq!(e["line"], line, "{what}: {e}");
        }
        assert!(e["message"].as_str().unwrap().contains(needle), "{what}: {e}");
        assert_eq!(d.wait_online("web", 2), pids, "{what}: nothing restarted");
        let table = d.ok(&["status"]);
        assert!(table.contains("web.kdl:"), "{what}: status table shows the error:\n{table}");
    }
    // Fixing the file clears the error and applies the change.
    d.write("web.kdl", &sleeper("web", "instances 3"));
    d.wait_until("error cleared", Duration::from_secs(10), || d.status()["errors"].as_array().unwrap().is_empty());
    let now = d.wait_online("web", 3);
    assert_eq!(&now[..2], &pids[..]);
}

#[test]
fn a_file_broken_from_the_start_starts_nothing_and_others_run() {
    let d = Daemon::start_with(
        &[("bad.kdl", "app \"bad\" {\n    rnu \"x\"\n}\n"), ("good.kdl", &sleeper("good", ""))],
        &[],
    );
    d.wait_online("good", 1);
    assert!(d.app("bad").is_none());
    let e = &d.status()["errors"][0];
    assert_eq!((e["line"].as_u64(), e["column"].as_u64()), (Some(2), Some(5)), "{e}");
}

#[test]
fn check_reports_errors_without_a_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.kdl");
    std::fs::write(&bad, "app \"x\" {\n    run \"sleep\" \"1\"\n    instanse 2\n}\n").unwrap();
    std::fs::write(dir.path().join("good.kdl"), sleeper("good", "")).unwrap();
    let run = |arg: &std::path::Path| std::process::Command::new(common::BIN).arg("check").arg(arg).output().unwrap();
    let out = run(&bad);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with(&format!("{}:3:5: ", bad.display())), "{stderr}");
    assert!(stderr.contains("did you mean `instances`"), "{stderr}");
    assert_eq!(run(dir.path()).status.code(), Some(1), "a dir with a bad file fails");
    assert_eq!(run(&dir.path().join("good.kdl")).status.code(), Some(0));
    // Ansible's validate passes a temp file that is not named *.kdl.
    let tmp = dir.path().join("ansible-tmp-123");
    std::fs::write(&tmp, sleeper("t", "")).unwrap();
    assert_eq!(run(&tmp).status.code(), Some(0));
}
