//! Issue #2, points 2–3: files in conf.d become processes, and only what
//! changed is touched.

mod common;

use std::time::Duration;

use common::{Daemon, alive, sleeper};

#[test]
fn dropping_a_file_starts_every_app_it_declares() {
    let d = Daemon::start();
    d.write("web.kdl", &format!("{}{}", sleeper("web", "instances 2"), sleeper("jobs", "")));
    d.wait_online("web", 2);
    d.wait_online("jobs", 1);
    let app = d.app("web").unwrap();
    assert_eq!(app["source"], d.conf.join("web.kdl").display().to_string());
    assert_eq!(app["instances_desired"], 2);
}

#[test]
fn editor_and_package_manager_leftovers_are_ignored() {
    let d = Daemon::start();
    for name in ["a.kdl~", ".b.kdl", "c.kdl.dpkg-new", "d.kdl.rpmnew", ".#e.kdl", "f.kdl.swp", "g.conf"] {
        d.write(name, &sleeper(&format!("ignored{}", name.len()), ""));
    }
    d.write("real.kdl", &sleeper("real", ""));
    d.wait_online("real", 1);
    d.ok(&["reconcile"]);
    let apps = d.status()["apps"].as_array().unwrap().len();
    assert_eq!(apps, 1, "only real.kdl counts");
}

#[test]
fn editing_one_app_restarts_only_that_app() {
    let d = Daemon::start();
    let three = |b_env: &str| {
        format!(
            "{}{}{}",
            sleeper("a", ""),
            sleeper("b", &format!("env {{ V \"{b_env}\"; }}")),
            sleeper("c", "instances 2")
        )
    };
    d.write("three.kdl", &three("1"));
    let a = d.wait_online("a", 1);
    let b = d.wait_online("b", 1);
    let c = d.wait_online("c", 2);
    d.write("three.kdl", &three("2"));
    d.wait_until("b restarted", Duration::from_secs(10), || {
        let p = d.pids("b");
        p.len() == 1 && p[0].is_some() && p[0] != Some(b[0])
    });
    assert_eq!(d.wait_online("a", 1), a, "a untouched");
    assert_eq!(d.wait_online("c", 2), c, "c untouched");
    let b_app = d.app("b").unwrap();
    assert_eq!(b_app["instances"][0]["restarts"], 1);
    assert_eq!(b_app["instances"][0]["last_restart_reason"], "spec changed");
    assert!(!alive(b[0]), "the old b is gone");
}

#[test]
fn formatting_and_comments_do_not_restart() {
    let d = Daemon::start();
    d.write("w.kdl", "app \"w\" {\n  run \"sleep\" \"1000\"\n  env { A \"1\"; B \"2\"; }\n}\n");
    let before = d.wait_online("w", 1);
    let hash = d.app("w").unwrap()["spec_hash"].clone();
    d.write("w.kdl", "// a comment\napp \"w\" {\n    env {\n        B \"2\"\n        A \"1\"\n    }\n    run \"sleep\" \"1000\"\n}\n");
    d.ok(&["reconcile"]);
    assert_eq!(d.wait_online("w", 1), before);
    assert_eq!(d.app("w").unwrap()["spec_hash"], hash);
}

#[test]
fn scaling_keeps_the_remaining_instances() {
    let d = Daemon::start();
    d.write("s.kdl", &sleeper("s", "instances 2"));
    let two = d.wait_online("s", 2);
    d.write("s.kdl", &sleeper("s", "instances 4"));
    let four = d.wait_online("s", 4);
    assert_eq!(&four[..2], &two[..], "instances 0 and 1 kept their pids");
    d.write("s.kdl", &sleeper("s", "instances 1"));
    d.wait_until("scaled down to 1", Duration::from_secs(10), || d.pids("s").len() == 1);
    assert_eq!(d.wait_online("s", 1), vec![two[0]]);
    for pid in &four[1..] {
        d.wait_until("surplus instance gone", Duration::from_secs(5), || !alive(*pid));
    }
    let restarts = d.app("s").unwrap()["instances"][0]["restarts"].clone();
    assert_eq!(restarts, 0);
}

#[test]
fn removing_a_file_stops_its_apps_and_their_grandchildren() {
    let d = Daemon::start();
    let marker = d.dir.path().join("grandchild.pid");
    d.write(
        "g.kdl",
        &format!(
            "app \"g\" {{\n    run \"sh\" \"-c\" \"sleep 1000 & echo $! > {}; wait\"\n    stop timeout=\"500ms\"\n}}\n",
            marker.display()
        ),
    );
    let pid = d.wait_online("g", 1)[0];
    d.wait_until("grandchild started", Duration::from_secs(5), || {
        std::fs::read_to_string(&marker).is_ok_and(|s| s.trim().parse::<i64>().is_ok())
    });
    let grandchild: i64 = std::fs::read_to_string(&marker).unwrap().trim().parse().unwrap();
    assert!(alive(grandchild));
    d.remove("g.kdl");
    d.wait_until("app gone from status", Duration::from_secs(10), || d.app("g").is_none());
    d.wait_until("leader and grandchild dead", Duration::from_secs(5), || !alive(pid) && !alive(grandchild));
}

#[test]
fn symlinked_files_and_ln_sfn_swaps_are_followed() {
    let d = Daemon::start();
    let gens = d.dir.path().join("generations");
    std::fs::create_dir_all(&gens).unwrap();
    std::fs::write(gens.join("v1.kdl"), sleeper("n", "env { GEN \"1\"; }")).unwrap();
    std::fs::write(gens.join("v2.kdl"), sleeper("n", "env { GEN \"2\"; }")).unwrap();
    std::os::unix::fs::symlink(gens.join("v1.kdl"), d.conf.join("n.kdl")).unwrap();
    let v1 = d.wait_online("n", 1);
    // ln -sfn: a temp link renamed over the old one.
    let tmp = d.conf.join(".n.kdl.tmp");
    std::os::unix::fs::symlink(gens.join("v2.kdl"), &tmp).unwrap();
    std::fs::rename(&tmp, d.conf.join("n.kdl")).unwrap();
    d.wait_until("swap applied", Duration::from_secs(10), || {
        let p = d.pids("n");
        p.len() == 1 && p[0].is_some() && p[0] != Some(v1[0])
    });
    let env = d.ok(&["env", "n"]);
    assert!(env.lines().any(|l| l == "GEN=2"), "{env}");
}

#[test]
fn symlinked_conf_dir_swap_is_seen() {
    // The Nix pattern: conf.d itself is a link to a generation directory.
    let dir = tempfile::tempdir().unwrap();
    let (g1, g2) = (dir.path().join("gen1"), dir.path().join("gen2"));
    std::fs::create_dir_all(&g1).unwrap();
    std::fs::create_dir_all(&g2).unwrap();
    std::fs::write(g1.join("a.kdl"), sleeper("a", "")).unwrap();
    std::fs::write(g2.join("b.kdl"), sleeper("b", "")).unwrap();
    let mut d = Daemon::start();
    d.terminate();
    std::fs::remove_dir_all(&d.conf).unwrap();
    std::os::unix::fs::symlink(&g1, &d.conf).unwrap();
    d.spawn(&[]);
    d.wait_online("a", 1);
    let tmp = d.dir.path().join("conf.d.tmp");
    std::os::unix::fs::symlink(&g2, &tmp).unwrap();
    std::fs::rename(&tmp, &d.conf).unwrap();
    d.wait_online("b", 1);
    d.wait_until("a stopped", Duration::from_secs(10), || d.app("a").is_none());
}

#[test]
fn sighup_and_reconcile_reread_changes_no_event_reports() {
    let d = Daemon::start_with(&[], &["--rescan", "1h"]);
    // The link's target lives outside the watched tree: editing it in place
    // produces no event in conf.d.
    let outside = d.dir.path().join("elsewhere/outside.kdl");
    std::fs::create_dir_all(outside.parent().unwrap()).unwrap();
    std::fs::write(&outside, sleeper("o", "env { V \"1\"; }")).unwrap();
    std::os::unix::fs::symlink(&outside, d.conf.join("o.kdl")).unwrap();
    let first = d.wait_online("o", 1);

    std::fs::write(&outside, sleeper("o", "env { V \"2\"; }")).unwrap();
    common::signal(d.daemon_pid(), "HUP");
    d.wait_until("SIGHUP applied the edit", Duration::from_secs(10), || {
        d.pids("o").first().copied().flatten().is_some_and(|p| p != first[0])
    });
    let second = d.wait_online("o", 1);

    std::fs::write(&outside, sleeper("o", "env { V \"3\"; }")).unwrap();
    d.ok(&["reconcile"]);
    let third = d.wait_online("o", 1);
    assert_ne!(third, second, "reconcile applied the edit");
}
