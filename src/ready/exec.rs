//! The exec probe: ready once a command exits 0.
//!
//! The daemon reaps every child with one `waitpid(-1)` reaper, which would
//! steal the exit status from tokio's or std's `Child::wait`. So the probe
//! never waits for its process: it runs the command under
//! `/bin/sh -c '"$@" 1>&2; echo $?'`, and the shell writes the command's
//! exit status on its stdout pipe, which the probe reads. The command's own
//! stdout goes to stderr, so the status line is the only thing on stdout;
//! stderr is kept (its tail) for the error message.
//!
//! The shell is left to the daemon's reaper; outside the daemon it stays a
//! zombie until the caller exits. Waiting for it by pid here would be
//! wrong: once the reaper has collected it, the pid may belong to a new
//! instance. The command runs in its own process group, killed whole when
//! an attempt outlives the timeout.

use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::unix::pipe;
use tokio::time::{Instant, sleep, timeout as within};

use super::{ProbeError, RETRY_EVERY};

/// How much of the command's output is kept for the error message.
const KEPT_OUTPUT: usize = 2048;
/// `$0` of the wrapping shell, as `ps` shows it.
const SHELL_NAME: &str = "procd-ready-exec";

/// Runs `argv` (not through a shell: arguments stay as given) with exactly
/// `env` (pass the instance's environment, PATH included) in `cwd`, again
/// and again until one run exits 0 or `timeout` has passed.
pub async fn exec(argv: &[String], env: &[(String, String)], cwd: &Path, timeout: Duration) -> Result<(), ProbeError> {
    if argv.is_empty() {
        return Err(ProbeError::Invalid("the exec probe has no command".into()));
    }
    let deadline = Instant::now() + timeout;
    let what = format!("exec {}", argv.join(" "));
    loop {
        let last = match run_once(argv, env, cwd, deadline).await {
            Ok(()) => return Ok(()),
            Err(why) => why,
        };
        if Instant::now() + RETRY_EVERY >= deadline {
            return Err(ProbeError::Timeout { what, waited: timeout, last });
        }
        sleep(RETRY_EVERY).await;
    }
}

/// One run; `Err` says why it did not pass.
async fn run_once(argv: &[String], env: &[(String, String)], cwd: &Path, deadline: Instant) -> Result<(), String> {
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg("\"$@\" 1>&2; echo $?")
        .arg(SHELL_NAME)
        .args(argv)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start /bin/sh in {}: {e}", cwd.display()))?;
    let pgid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
    let pipes = child.stdout.take().zip(child.stderr.take());
    // `child` is dropped without waiting: see the module doc.
    drop(child);
    let Some((stdout, stderr)) = pipes else {
        return Err("the probe's pipes are missing".into());
    };
    let (Ok(stdout), Ok(stderr)) =
        (pipe::Receiver::from_owned_fd(OwnedFd::from(stdout)), pipe::Receiver::from_owned_fd(OwnedFd::from(stderr)))
    else {
        let _ = killpg(pgid, Signal::SIGKILL);
        return Err("cannot watch the probe's pipes".into());
    };
    let mut status_line = String::new();
    let mut stdout = BufReader::new(stdout);
    let mut stderr = stderr;
    let mut output = Vec::new();
    let mut chunk = [0u8; 512];
    let mut stderr_open = true;
    let left = deadline.saturating_duration_since(Instant::now());
    let outcome = within(left, async {
        loop {
            tokio::select! {
                line = stdout.read_line(&mut status_line) => return line.map(|_| ()),
                n = stderr.read(&mut chunk), if stderr_open => match n {
                    Ok(0) | Err(_) => stderr_open = false,
                    Ok(n) => {
                        output.extend_from_slice(&chunk[..n]);
                        let excess = output.len().saturating_sub(KEPT_OUTPUT);
                        output.drain(..excess);
                    }
                },
            }
        }
    })
    .await;
    let said = String::from_utf8_lossy(&output).trim().to_string();
    let said = if said.is_empty() { String::new() } else { format!("; it said: {said}") };
    match outcome {
        Err(_) => {
            let _ = killpg(pgid, Signal::SIGKILL);
            Err(format!("still running at the deadline, killed{said}"))
        }
        Ok(Err(e)) => Err(format!("cannot read the probe's status: {e}")),
        Ok(Ok(())) => match status_line.trim().parse::<i32>() {
            Ok(0) => Ok(()),
            Ok(127) => Err(format!("command not found (exit 127){said}")),
            Ok(code) if code > 128 => Err(format!("killed by signal {}{said}", code - 128)),
            Ok(code) => Err(format!("exit status {code}{said}")),
            // No line at all: the shell itself was killed.
            Err(_) => Err(format!("the probe's shell ended without a status{said}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(argv: &[&str], timeout: Duration) -> Result<(), ProbeError> {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let env = vec![("PATH".to_string(), "/usr/bin:/bin".to_string()), ("PROBE_X".into(), "7".into())];
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(exec(&argv, &env, Path::new("/tmp"), timeout))
    }

    #[test]
    fn exit_zero_passes_and_arguments_are_not_reparsed() {
        run(&["true"], Duration::from_secs(2)).unwrap();
        run(
            &["sh", "-c", "test \"$1\" = 'a b;c' && test \"$PROBE_X\" = 7 && test \"$PWD\" = /tmp", "x", "a b;c"],
            Duration::from_secs(2),
        )
        .unwrap();
    }

    #[test]
    fn failures_name_the_status_and_the_output() {
        let error = run(&["sh", "-c", "echo warming up; exit 3"], Duration::from_millis(300)).unwrap_err().to_string();
        assert!(error.contains("exit status 3") && error.contains("warming up"), "{error}");
        let error = run(&["no-such-command-procd"], Duration::from_millis(200)).unwrap_err().to_string();
        assert!(error.contains("not found"), "{error}");
    }

    #[test]
    fn a_hung_command_is_killed_at_the_deadline() {
        let started = std::time::Instant::now();
        let error = run(&["sleep", "30"], Duration::from_millis(300)).unwrap_err().to_string();
        assert!(error.contains("killed"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn passes_once_the_condition_holds() {
        let flag = tempfile::NamedTempFile::new().unwrap().into_temp_path();
        let path = flag.to_path_buf();
        std::fs::remove_file(&path).unwrap();
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                std::fs::write(path, "").unwrap();
            })
        };
        run(&["test", "-e", path.to_str().unwrap()], Duration::from_secs(3)).unwrap();
        writer.join().unwrap();
    }
}
