//! Issue #2, points 5–8: status, show, env, stop/start/restart with
//! targets, persisted stops, CLI-created apps, reconcile --dry-run/--wait.

mod common;

use std::time::Duration;

use common::{Daemon, alive, script, sleeper};

#[test]
fn status_json_follows_the_contract_and_the_table_reads() {
    let d = Daemon::start_with(&[("web.kdl", &sleeper("web", "instances 2"))], &[]);
    d.wait_online("web", 2);
    let s = d.status();
    let app = &s["apps"][0];
    for key in ["name", "source", "spec_hash", "instances_desired", "state", "instances"] {
        assert!(app.get(key).is_some(), "missing {key}");
    }
    assert_eq!(app["state"], "running");
    assert_eq!(app["spec_hash"].as_str().unwrap().len(), 64);
    for key in [
        "index",
        "pid",
        "status",
        "restarts",
        "uptime_ms",
        "memory_bytes",
        "cpu_percent",
        "last_exit",
        "last_restart_reason",
    ] {
        assert!(app["instances"][0].get(key).is_some(), "missing instance {key}");
    }
    assert!(s["errors"].as_array().unwrap().is_empty());
    d.wait_until("memory sampled", Duration::from_secs(5), || {
        d.app("web").unwrap()["instances"][0]["memory_bytes"].as_u64().unwrap_or(0) > 0
    });
    for alias in ["status", "ls", "list"] {
        let table = d.ok(&[alias]);
        for col in ["name", "pid", "status", "uptime", "restarts", "cpu", "mem", "web", "online"] {
            assert!(table.contains(col), "{alias} lacks {col}:\n{table}");
        }
    }
    let show = d.ok(&["show", "web"]);
    assert!(show.contains("argv") && show.contains("sleep"), "{show}");
    let show_json: serde_json::Value = serde_json::from_str(&d.ok(&["show", "web", "--json"])).unwrap();
    assert_eq!(show_json["detail"]["spec"]["argv"][0], "sleep");
}

#[test]
fn env_shows_what_runs_and_profiles_and_env_files_apply() {
    let mut d = Daemon::start();
    let envfile = d.dir.path().join("web.env");
    std::fs::write(&envfile, "# comment\nFROM_FILE=yes\nexport SHARED=file\n").unwrap();
    let spec = format!(
        "app \"web\" {{\n    run \"sleep\" \"1000\"\n    instances 2\n    env-file \"{}\"\n    env {{ SHARED \"base\"; ONLY_BASE \"1\"; }}\n    env \"staging\" {{ SHARED \"staging\"; }}\n}}\n",
        envfile.display()
    );
    d.write("web.kdl", &spec);
    d.wait_online("web", 2);
    let env = d.ok(&["env", "web:1"]);
    for line in
        ["PROCD_APP=web", "PROCD_INSTANCE=1", "NODE_APP_INSTANCE=1", "FROM_FILE=yes", "SHARED=base", "ONLY_BASE=1"]
    {
        assert!(env.lines().any(|l| l == line), "missing {line} in\n{env}");
    }
    // The real process has it too.
    let pid = d.pids("web")[1].unwrap();
    let real = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(real.split(|b| *b == 0).any(|kv| kv == b"PROCD_INSTANCE=1"));

    d.terminate();
    d.spawn(&["--env", "staging"]);
    d.wait_online("web", 2);
    assert!(d.ok(&["env", "web"]).lines().any(|l| l == "SHARED=staging"));

    // A variable removed from the spec is gone after the restart.
    d.write("web.kdl", &spec.replace(" ONLY_BASE \"1\";", ""));
    d.wait_until("restarted without ONLY_BASE", Duration::from_secs(10), || {
        d.pids("web").iter().flatten().all(|p| {
            std::fs::read(format!("/proc/{p}/environ"))
                .is_ok_and(|e| !e.split(|b| *b == 0).any(|kv| kv.starts_with(b"ONLY_BASE=")))
        }) && d.app("web").unwrap()["instances"][0]["status"] == "online"
    });
    assert!(!d.ok(&["env", "web"]).contains("ONLY_BASE"));
}

#[test]
fn stop_start_restart_by_name_all_and_regex_and_stops_persist() {
    let mut d = Daemon::start_with(
        &[("apps.kdl", &format!("{}{}{}", sleeper("api-a", ""), sleeper("api-b", ""), sleeper("web", "")))],
        &[],
    );
    let web = d.wait_online("web", 1);
    let a = d.wait_online("api-a", 1);
    d.ok(&["stop", "/^api-/"]);
    for app in ["api-a", "api-b"] {
        let s = d.app(app).unwrap();
        assert_eq!(s["state"], "stopped");
        assert_eq!(s["instances"][0]["status"], "stopped");
        assert!(s["instances"][0]["pid"].is_null());
    }
    assert!(!alive(a[0]));
    assert_eq!(d.wait_online("web", 1), web, "web untouched");

    // Across a daemon restart the stopped apps stay stopped.
    d.terminate();
    d.spawn(&[]);
    d.wait_online("web", 1);
    d.ok(&["reconcile"]);
    assert_eq!(d.app("api-a").unwrap()["state"], "stopped");

    d.ok(&["start", "api-a"]);
    d.wait_online("api-a", 1);
    assert_eq!(d.app("api-b").unwrap()["state"], "stopped");
    let before = d.wait_online("web", 1);
    d.ok(&["restart", "all"]);
    let after = d.wait_online("web", 1);
    assert_ne!(before, after);
    d.wait_online("api-b", 1);
    assert_eq!(d.app("web").unwrap()["instances"][0]["last_restart_reason"], "operator");

    let out = d.procd(&["stop", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no app named `nope`"));
}

#[test]
fn start_script_creates_a_persisted_app_and_delete_removes_it() {
    let mut d = Daemon::start_with(&[("web.kdl", &sleeper("web", ""))], &[]);
    let work = d.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    script(
        &work,
        "server.js",
        "console.log(JSON.stringify({argv: process.argv.slice(2), i: process.env.NODE_APP_INSTANCE}));\nsetInterval(() => {}, 1000);\n",
    );
    let out = std::process::Command::new(common::BIN)
        .arg("--home")
        .arg(&d.home)
        .args(["start", "./server.js", "--name", "api", "-i", "2", "--", "--port", "9000"])
        .current_dir(&work)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pids = d.wait_online("api", 2);
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", pids[0])).unwrap();
    let argv: Vec<String> =
        cmdline.split(|b| *b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect();
    assert!(argv[0].ends_with("node"), "{argv:?}");
    assert_eq!(&argv[2..], ["--port", "9000"]);
    let spec_file = d.home.join("state/apps/api.kdl");
    let text = std::fs::read_to_string(&spec_file).unwrap();
    assert!(text.contains("instances 2"), "{text}");
    assert_eq!(d.app("api").unwrap()["source"], spec_file.display().to_string());
    assert!(!d.conf.join("api.kdl").exists(), "nothing written into conf.d");

    // It is persisted: a new daemon runs it again.
    d.terminate();
    d.spawn(&[]);
    d.wait_online("api", 2);

    let refused = d.procd(&["delete", "web"]);
    assert_eq!(refused.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&refused.stderr);
    assert!(msg.contains(&d.conf.join("web.kdl").display().to_string()), "{msg}");

    let pids = d.wait_online("api", 2);
    d.ok(&["delete", "api"]);
    assert!(d.app("api").is_none());
    assert!(!spec_file.exists());
    for p in pids {
        assert!(!alive(p));
    }
}

#[test]
fn start_script_picks_the_interpreter_and_reports_a_missing_one() {
    let d = Daemon::start();
    let work = d.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    script(&work, "w.py", "import time\nwhile True: time.sleep(1)\n");
    script(&work, "tool", "#!/bin/sh\nexec sleep 1000\n");
    std::fs::write(work.join("x.rb"), "sleep\n").unwrap();
    let start = |args: &[&str]| {
        std::process::Command::new(common::BIN)
            .arg("start")
            .args(args)
            .arg("--home")
            .arg(&d.home)
            .current_dir(&work)
            .env(
                "PATH",
                std::env::var("PATH").unwrap().split(':').filter(|p| !p.contains("ruby")).collect::<Vec<_>>().join(":"),
            )
            .output()
            .unwrap()
    };
    assert!(start(&["w.py"]).status.success());
    let pid = d.wait_online("w", 1)[0];
    // The exec is confirmed when the old image is gone, a moment before the
    // kernel has set up the new argv: poll for it.
    d.wait_until("w runs python3", Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.contains("python3"))
    });
    assert!(start(&["tool"]).status.success(), "no extension: executed directly");
    d.wait_online("tool", 1);
    if which("ruby") {
        return;
    }
    let out = start(&["x.rb"]);
    assert_eq!(out.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("ruby") && msg.contains("not found"), "{msg}");
}

fn which(program: &str) -> bool {
    std::env::var("PATH").unwrap_or_default().split(':').any(|d| std::path::Path::new(d).join(program).is_file())
}

#[test]
fn reconcile_dry_run_shows_the_plan_and_wait_reports_failures() {
    let d = Daemon::start_with(&[], &["--rescan", "1h"]);
    // The file lives outside conf.d behind a symlink: editing it produces no
    // event, so only an explicit reconcile sees the edit.
    let outside = d.dir.path().join("elsewhere/a.kdl");
    std::fs::create_dir_all(outside.parent().unwrap()).unwrap();
    std::fs::write(&outside, sleeper("a", "instances 2")).unwrap();
    std::os::unix::fs::symlink(&outside, d.conf.join("a.kdl")).unwrap();
    let pids = d.wait_online("a", 2);
    std::fs::write(&outside, sleeper("a", "instances 3\n    env { X \"1\"; }")).unwrap();
    let plan = d.ok(&["reconcile", "--dry-run"]);
    assert!(plan.contains("would restart  a [0,1] changed: env"), "{plan}");
    assert!(plan.contains("would scale-up a +[2]"), "{plan}");
    assert_eq!(d.wait_online("a", 2), pids, "a dry run changes nothing");
    let applied = d.ok(&["reconcile"]);
    assert!(applied.contains("restart  a"), "{applied}");
    d.wait_online("a", 3);
    assert_ne!(d.pids("a")[0], Some(pids[0]));

    d.write("b.kdl", &sleeper("b", ""));
    d.ok(&["reconcile", "--wait", "--timeout", "10s"]);
    d.wait_online("b", 1);

    d.write(
        "broken.kdl",
        "app \"c\" {\n    run \"/nonexistent/program\"\n    restart \"always\" { max-restarts 2; }\n}\n",
    );
    let out = d.procd(&["reconcile", "--wait", "--timeout", "10s"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stderr).contains("c:0"), "{}", String::from_utf8_lossy(&out.stderr));
}
