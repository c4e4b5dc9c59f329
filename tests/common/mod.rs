//! The end-to-end harness: a real `procd daemon` on a temp dir holding
//! conf.d, socket, state and logs, driven through the real CLI. Waits poll
//! with a deadline; a daemon that does not stop is killed; only pids this
//! harness started (and the apps it saw) are ever signalled.
#![allow(dead_code)]

pub mod http_load;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_procd");

pub struct Daemon {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub conf: PathBuf,
    pub home: PathBuf,
    /// App pids seen in any status, killed at drop if still alive.
    seen: std::cell::RefCell<Vec<i32>>,
}

impl Daemon {
    /// A daemon on an empty conf.d.
    pub fn start() -> Daemon {
        Self::start_with(&[], &[])
    }

    /// A daemon with `files` (name, content) already in conf.d and extra
    /// daemon flags.
    pub fn start_with(files: &[(&str, &str)], flags: &[&str]) -> Daemon {
        let mut d = Self::prepare(files);
        d.spawn(flags);
        d
    }

    /// The temp dir with `files` in conf.d and no daemon, for a test that
    /// starts the daemon its own way (under `unshare`) and so owns its end.
    pub fn prepare(files: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("conf.d");
        let home = dir.path().join("home");
        std::fs::create_dir_all(&conf).unwrap();
        let d = Daemon { child: None, dir, conf, home, seen: Default::default() };
        for (name, content) in files {
            d.write(name, content);
        }
        d
    }

    pub fn spawn(&mut self, flags: &[&str]) {
        self.spawn_env(flags, &[]);
    }

    /// [`spawn`](Self::spawn) with extra environment variables.
    pub fn spawn_env(&mut self, flags: &[&str], env: &[(&str, &str)]) {
        let log = std::fs::File::create(self.dir.path().join("daemon.stderr")).unwrap();
        let child = Command::new(BIN)
            .envs(env.iter().copied())
            .arg("daemon")
            .arg("--config-dir")
            .arg(&self.conf)
            .arg("--home")
            .arg(&self.home)
            .args(["--debounce", "20ms"])
            .args(flags)
            .env("RUST_LOG", "procd=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn daemon");
        self.child = Some(child);
        self.wait_until("daemon answers", Duration::from_secs(10), || {
            self.procd(&["status", "--json"]).status.success()
        });
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.stderr")).unwrap_or_default()
    }

    pub fn write(&self, name: &str, content: &str) {
        // Write then rename, as editors and config tools do.
        let tmp = self.conf.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, self.conf.join(name)).unwrap();
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.conf.join(name)).unwrap();
    }

    /// Runs `procd ARGS --home HOME`.
    pub fn procd(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--home")
            .arg(&self.home)
            .arg("--config-dir")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .output()
            .expect("run procd")
    }

    /// Runs procd and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.procd(args);
        assert!(
            out.status.success(),
            "procd {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn status(&self) -> Value {
        let out = self.procd(&["status", "--json"]);
        assert!(out.status.success(), "status failed: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).expect("status json");
        for app in v["apps"].as_array().unwrap() {
            for i in app["instances"].as_array().unwrap() {
                if let Some(pid) = i["pid"].as_i64() {
                    let mut seen = self.seen.borrow_mut();
                    if !seen.contains(&(pid as i32)) {
                        seen.push(pid as i32);
                    }
                }
            }
        }
        v
    }

    pub fn app(&self, name: &str) -> Option<Value> {
        self.status()["apps"].as_array().unwrap().iter().find(|a| a["name"] == name).cloned()
    }

    /// Pids of an app's instances by index; None for an instance without one.
    pub fn pids(&self, name: &str) -> Vec<Option<i64>> {
        self.app(name)
            .map(|a| a["instances"].as_array().unwrap().iter().map(|i| i["pid"].as_i64()).collect())
            .unwrap_or_default()
    }

    /// Waits until every instance of `name` is online, `n` of them; returns pids.
    pub fn wait_online(&self, name: &str, n: usize) -> Vec<i64> {
        let mut pids = Vec::new();
        self.wait_until(&format!("{name} has {n} online instance(s)"), Duration::from_secs(10), || {
            let Some(app) = self.app(name) else { return false };
            let inst = app["instances"].as_array().unwrap().clone();
            pids = inst.iter().filter_map(|i| i["pid"].as_i64()).collect();
            inst.len() == n && inst.iter().all(|i| i["status"] == "online")
        });
        pids
    }

    pub fn wait_until(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("timed out waiting for: {what}\n--- daemon log ---\n{}", self.daemon_log());
    }

    /// The keeper's pid, as the daemon recorded it.
    pub fn keeper_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.home.join("state/keeper.pid")).ok()?.trim().parse().ok()
    }

    /// SIGKILL the daemon and collect it; its apps stay with the keeper.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("daemon running");
        let _ = child.kill();
        let _ = child.wait();
    }

    pub fn daemon_pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// SIGTERM and wait for the exit status; SIGKILL after 15 s.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        signal(child.id() as i32, "TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let st = child.wait().unwrap();
                panic!("daemon did not stop on SIGTERM ({st})");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id() as i32, "TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Whatever the daemon left behind (a test failure mid-way): its groups,
        // and the keeper it started (which exits by itself after a clean stop).
        for pid in self.seen.borrow().iter() {
            if alive(*pid as i64) {
                signal(-*pid, "KILL");
            }
        }
        if let Some(keeper) = self.keeper_pid()
            && alive(keeper as i64)
            && std::fs::read(format!("/proc/{keeper}/cmdline")).is_ok_and(|c| c.windows(6).any(|w| w == b"keeper"))
        {
            let deadline = Instant::now() + Duration::from_secs(5);
            while alive(keeper as i64) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if alive(keeper as i64) {
                signal(keeper, "KILL");
            }
        }
    }
}

/// Sends a signal by pid (negative: process group) with kill(1).
pub fn signal(pid: i32, sig: &str) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg("--").arg(pid.to_string()).status();
}

/// True while a process exists and is not a zombie.
pub fn alive(pid: i64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Writes an executable script into `dir`.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// An app spec running `sleep` (one instance unless said).
pub fn sleeper(name: &str, extra: &str) -> String {
    format!("app \"{name}\" {{\n    run \"sleep\" \"1000\"\n    {extra}\n}}\n")
}
