//! Issue #6: `procd startup`. Every generated init file is compared with a
//! reviewed snapshot under `tests/snapshots/startup/` (rewrite them with
//! `PROCD_UPDATE_SNAPSHOTS=1 cargo test --test startup`, then review the
//! diff); the scripts pass `sh -n`, the systemd unit passes
//! `systemd-analyze verify`, and the command line behaves.

use std::path::{Path, PathBuf};
use std::process::Command;

use procd::startup::{Account, Options, Platform, Rendered, render, shell_line};

const BIN: &str = env!("CARGO_BIN_EXE_procd");

fn snapshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/startup")
}

/// Root with the default layout, and a user with its own home.
fn variants() -> Vec<(&'static str, Options)> {
    let root = Options {
        binary: "/usr/local/bin/procd".into(),
        service_name: "procd".into(),
        run_as: None,
        home: None,
        config_dir: None,
    };
    let user = Options {
        binary: "/usr/local/bin/procd".into(),
        service_name: "procd-app".into(),
        run_as: Some(Account { name: "app".into(), uid: 1001, group: "app".into(), home: "/home/app".into() }),
        home: Some("/home/app/.procd".into()),
        config_dir: Some("/home/app/.config/procd/conf.d".into()),
    };
    vec![("root", root), ("user", user)]
}

fn file_name(platform: Platform, variant: &str) -> String {
    let ext = match platform {
        Platform::Systemd => ".service",
        Platform::Upstart => ".conf",
        Platform::Launchd => ".plist",
        _ => "",
    };
    format!("{platform}-{variant}{ext}")
}

fn describe(r: &Rendered) -> String {
    let lines = |cmds: &[Vec<String>]| cmds.iter().map(|c| format!("  {}\n", shell_line(c))).collect::<String>();
    format!(
        "{} ({:o})\ninstall:\n{}uninstall:\n{}after remove:\n{}",
        r.path.display(),
        r.mode,
        lines(&r.install_cmds),
        lines(&r.uninstall_cmds),
        lines(&r.after_remove_cmds)
    )
}

/// Compares `actual` with the snapshot `name`, or rewrites it when asked.
fn check_snapshot(name: &str, actual: &str, mismatches: &mut Vec<String>) {
    let path = snapshot_dir().join(name);
    if std::env::var_os("PROCD_UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(snapshot_dir()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    match std::fs::read_to_string(&path) {
        Ok(expected) if expected == actual => {}
        Ok(expected) => mismatches.push(format!("{name} differs:\n--- expected\n{expected}\n--- actual\n{actual}")),
        Err(e) => mismatches.push(format!("{name}: {e} (PROCD_UPDATE_SNAPSHOTS=1 writes it)")),
    }
}

#[test]
fn every_generated_file_matches_its_reviewed_snapshot() {
    let mut mismatches = Vec::new();
    let mut commands = String::new();
    for (variant, opts) in variants() {
        for platform in Platform::ALL {
            let r = render(platform, &opts);
            check_snapshot(&file_name(platform, variant), &r.contents, &mut mismatches);
            commands.push_str(&format!("== {platform} {variant}: {}\n", describe(&r)));
        }
    }
    check_snapshot("commands.txt", &commands, &mut mismatches);
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn generated_files_run_the_daemon_keeping_apps_with_a_plain_path() {
    for (variant, opts) in variants() {
        for platform in Platform::ALL {
            let c = render(platform, &opts).contents;
            let what = format!("{platform} {variant}");
            assert!(c.contains("/usr/local/bin/procd"), "{what}: runs the given binary");
            assert!(c.contains("--keep-apps") || c.contains("<string>--keep-apps</string>"), "{what}");
            assert!(c.contains(procd::startup::PLAIN_PATH), "{what}: plain PATH");
            assert!(!c.contains("node"), "{what}: nothing tied to an interpreter");
            if variant == "user" {
                assert!(c.contains("/home/app/.procd") && c.contains("app"), "{what}: user and home");
            }
        }
    }
}

#[test]
fn shell_scripts_parse() {
    for (variant, opts) in variants() {
        for platform in [Platform::Openrc, Platform::Rcd, Platform::Systemv] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("script");
            std::fs::write(&path, render(platform, &opts).contents).unwrap();
            let out = Command::new("sh").arg("-n").arg(&path).output().unwrap();
            assert!(out.status.success(), "{platform} {variant}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

#[test]
fn the_plist_has_no_double_dash_inside_its_comment() {
    let c = render(Platform::Launchd, &variants()[0].1).contents;
    let start = c.find("<!--").unwrap() + 4;
    let end = c.find("-->").unwrap();
    assert!(!c[start..end].contains("--"), "XML forbids -- in a comment");
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let tool = Path::new("/usr/bin/systemd-analyze");
    if !tool.exists() {
        println!("note: skipped, no {}", tool.display());
        return;
    }
    for (variant, mut opts) in variants() {
        // verify checks that ExecStart's binary exists;
        // --man=no: the man page of Documentation= is not installed here.
        opts.binary = PathBuf::from(BIN);
        let dir = tempfile::tempdir().unwrap();
        let unit = dir.path().join(format!("{}.service", opts.service_name));
        std::fs::write(&unit, render(Platform::Systemd, &opts).contents).unwrap();
        let out = Command::new(tool).args(["verify", "--man=no"]).arg(&unit).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Complaints about the host's own units (broken symlinks, missing
        // binaries of other services) are not ours; only lines naming ours are.
        let ours: Vec<&str> = stderr.lines().filter(|l| l.contains(&opts.service_name)).collect();
        assert!(out.status.success() && ours.is_empty(), "{variant}: {stderr}");
    }
}

fn group_of(user: &str) -> String {
    let out = Command::new("id").args(["-gn", user]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn procd(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).env_remove("PROCD_HOME").env_remove("PROCD_CONFIG_DIR").output().unwrap()
}

#[test]
fn startup_prints_the_file_on_stdout_and_the_commands_after_it() {
    let out = procd(&["startup", "systemd"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.starts_with("# Generated by `procd startup systemd`"), "{stdout}");
    assert!(stdout.contains(&format!("ExecStart={BIN} daemon --keep-apps\n")), "{stdout}");
    assert!(stderr.contains("startup systemd --service-name procd --install"), "{stderr}");
    assert!(stderr.contains("> /etc/systemd/system/procd.service\nsystemctl daemon-reload\n"), "{stderr}");
    assert!(stderr.contains("systemctl enable --now procd\n"), "{stderr}");
}

#[test]
fn startup_for_a_user_gets_its_name_home_and_group() {
    let out = procd(&["startup", "systemd", "-u", "nobody"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let unit = String::from_utf8_lossy(&out.stdout);
    assert!(unit.contains("User=nobody\n") && unit.contains(&format!("Group={}\n", group_of("nobody"))), "{unit}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/etc/systemd/system/procd-nobody.service"), "{stderr}");

    let out = procd(&["startup", "upstart", "-u", "nobody", "--hp", "/srv/p", "--service-name", "web"]);
    let job = String::from_utf8_lossy(&out.stdout);
    assert!(job.contains("--home /srv/p\n") && job.contains("setuid nobody"), "{job}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("/etc/init/web.conf"));
}

#[test]
fn bad_usage_exits_2_and_failures_exit_1() {
    assert_eq!(procd(&["startup", "sysvinit"]).status.code(), Some(2), "unknown platform");
    assert_eq!(procd(&["startup", "systemd", "--service-name", "a/b"]).status.code(), Some(2));
    let out = procd(&["startup", "systemd", "-u", "no-such-user-procd-test"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such user"));
}

#[test]
fn unstartup_prints_how_to_stop_disable_and_remove() {
    let out = procd(&["unstartup", "openrc", "--service-name", "web"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().skip(1).collect::<Vec<_>>(),
        ["rc-service web stop", "rc-update del web default", "rm -f /etc/init.d/web"]
    );
}

#[test]
fn install_refuses_without_root() {
    // Root here would really install: only meaningful as another user.
    if procd::process::current_uid() == 0 {
        let out = Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", BIN, "startup", "systemd", "--install"])
            .output();
        let Ok(out) = out else {
            println!("note: skipped, setpriv unavailable");
            return;
        };
        if out.status.code() == Some(127) || String::from_utf8_lossy(&out.stderr).contains("Permission denied") {
            println!("note: skipped, nobody cannot run {BIN}");
            return;
        }
        assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).contains("--install needs root"));
        return;
    }
    let out = procd(&["startup", "systemd", "--install"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--install needs root"));
}
