//! PM2 compatibility, checked against the real `node`: an app written for
//! PM2's `wait_ready` calls `process.send('ready')`, and procd's
//! [`NodeChannel`] must see it. Also pins down what Node does when the
//! channel is not read, or closed (documented in `ready::node`).

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use procd::ready::{NodeChannel, is_ready, node_channel_env};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Starts `node -e script` with `channel` at fd 3, as the spawn code will.
fn node(script: &str, channel: OwnedFd) -> Child {
    let raw = channel.as_raw_fd();
    let mut command = Command::new("node");
    command.args(["-e", script]).envs(node_channel_env(3)).stdin(Stdio::null()).stderr(Stdio::piped());
    // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if raw == 3 {
                // dup2(3, 3) would keep close-on-exec: clear it instead.
                if libc::fcntl(3, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(raw, 3) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().expect("node is installed");
    drop(channel);
    child
}

fn wait(mut child: Child, within: Duration) -> (Option<i32>, String) {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            return (status.code(), err);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("node did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn process_send_ready_is_seen_as_ready() {
    rt().block_on(async {
        let (theirs, mut channel) = NodeChannel::pair().unwrap();
        let child = node(
            "require('http').createServer().listen(0, '127.0.0.1', () => { process.send('ready'); process.send({ type: 'x' }); setTimeout(() => process.exit(0), 100) })",
            theirs,
        );
        let first = tokio::time::timeout(Duration::from_secs(10), channel.recv()).await.unwrap().unwrap().unwrap();
        assert!(is_ready(&first), "{first}");
        let second = channel.recv().await.unwrap().unwrap();
        assert_eq!(second["type"], "x");
        assert_eq!(wait(child, Duration::from_secs(10)).0, Some(0));
        assert!(channel.recv().await.unwrap().is_none(), "EOF once node exited");
    });
}

#[test]
fn an_unread_channel_neither_blocks_nor_keeps_the_app_alive() {
    rt().block_on(async {
        let (theirs, _channel) = NodeChannel::pair().unwrap();
        let child = node("process.send('ready'); setTimeout(() => console.log('done'), 50)", theirs);
        let (code, err) = wait(child, Duration::from_secs(10));
        assert_eq!(code, Some(0), "{err}");
    });
}

/// Why the keeper must hold the daemon's end for the instance's lifetime.
#[test]
fn a_closed_daemon_end_makes_process_send_crash_the_app() {
    rt().block_on(async {
        let (theirs, channel) = NodeChannel::pair().unwrap();
        drop(channel);
        let child = node("setTimeout(() => process.send('ready'), 100)", theirs);
        let (code, err) = wait(child, Duration::from_secs(10));
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("EPIPE") || err.contains("ERR_IPC_CHANNEL_CLOSED"), "{err}");
    });
}
