//! The keeper process: the parent of every app, the holder of every pipe
//! and listening socket, and the memory that outlives a daemon.
//!
//! It is deliberately dumb: one thread, no async runtime, no config
//! parsing, no timers. It forks when the daemon asks, reaps its children
//! (it is a child subreaper, so orphaned grandchildren come back to it) and
//! tells the daemon who exited, queueing exits while no daemon is
//! connected. A new daemon connects and gets every child, pipe, socket and
//! record back. `procd update` re-executes it in place: children stay its
//! children and every fd is inherited.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use serde::{Deserialize, Serialize};

use super::protocol::{FromKeeper, LaunchRequest, ToKeeper, VERSION};
use super::wire;
use crate::process::{ExitStatus, InstanceCgroup, LaunchSpec, launch_passing};

/// How the keeper was started.
pub enum KeeperStart {
    /// Fresh, with the daemon's listening socket inherited at this fd.
    Listen(RawFd),
    /// After `Reexec`: the listening socket and a memfd holding the state.
    Resume { listen: RawFd, state: RawFd },
}

/// Writes a line to the keeper's stderr (the first daemon's), ignoring
/// errors: a closed terminal or pipe must not kill the parent of every app,
/// as `eprintln!` would by panicking.
macro_rules! log {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Quiet time after which the keeper trims its resident memory.
const IDLE_TRIM_MS: u16 = 1000;

struct Child {
    tag: String,
    stdout: OwnedFd,
    stderr: OwnedFd,
    exit: Option<ExitStatus>,
}

/// A message the daemon could not take yet (its socket buffer was full).
struct Queued {
    body: Vec<u8>,
    fds: Vec<OwnedFd>,
}

struct Keeper {
    listener: OwnedFd,
    signals: SignalFd,
    conn: Option<OwnedFd>,
    outbox: VecDeque<Queued>,
    children: BTreeMap<i32, Child>,
    records: BTreeMap<String, String>,
    held: BTreeMap<String, Vec<OwnedFd>>,
    /// The daemon stopped every app and left: exit once no child runs.
    exiting: bool,
    buf: Vec<u8>,
}

/// Runs the keeper until it is told to exit and no child is left; returns
/// an error only when it cannot start at all.
pub fn run(start: KeeperStart) -> io::Result<()> {
    if let Err(e) = crate::process::become_subreaper() {
        log!("procd keeper: cannot become a child subreaper: {e}");
    }
    let mask = keeper_signals();
    // Blocked, and read from a signalfd; children get a clean mask at spawn.
    mask.thread_block().map_err(io::Error::from)?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
    let mut keeper = match start {
        // SAFETY: the daemon passed this listening socket for us alone.
        KeeperStart::Listen(fd) => Keeper::new(unsafe { wire::inherited(fd) }, signals),
        KeeperStart::Resume { listen, state } => {
            // SAFETY: our previous image passed both for us alone.
            let (listener, state) = unsafe { (wire::inherited(listen), OwnedFd::from_raw_fd(state)) };
            let mut k = Keeper::new(listener, signals);
            k.restore(state)?;
            k
        }
    };
    set_cloexec(keeper.listener.as_fd(), true)?;
    keeper.reap();
    keeper.serve();
    Ok(())
}

impl Keeper {
    fn new(listener: OwnedFd, signals: SignalFd) -> Keeper {
        Keeper {
            listener,
            signals,
            conn: None,
            outbox: VecDeque::new(),
            children: BTreeMap::new(),
            records: BTreeMap::new(),
            held: BTreeMap::new(),
            exiting: false,
            buf: Vec::new(),
        }
    }

    fn serve(&mut self) {
        // Whether work happened since the resident set was last trimmed.
        let mut busy = true;
        loop {
            if self.exiting && self.children.values().all(|c| c.exit.is_some()) {
                return;
            }
            let mut fds = vec![
                PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
            ];
            if let Some(conn) = &self.conn {
                let mut want = PollFlags::POLLIN;
                if !self.outbox.is_empty() {
                    want |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(conn.as_fd(), want));
            }
            let timeout = if busy { PollTimeout::from(IDLE_TRIM_MS) } else { PollTimeout::NONE };
            match poll(&mut fds, timeout) {
                Ok(0) => {
                    // A quiet second: give back the pages the last burst of
                    // work brought in; the next one maps what it needs.
                    busy = false;
                    crate::process::release_free_memory();
                    crate::process::trim_code_pages();
                    continue;
                }
                Ok(_) | Err(nix::errno::Errno::EINTR) => busy = true,
                Err(e) => {
                    log!("procd keeper: poll failed: {e}");
                    return;
                }
            }
            let ready = |i: usize| fds.get(i).and_then(|f| f.revents()).unwrap_or(PollFlags::empty());
            let (listen, sig, conn) = (ready(0), ready(1), ready(2));
            drop(fds);
            if sig.contains(PollFlags::POLLIN) {
                self.on_signals();
            }
            if listen.contains(PollFlags::POLLIN) {
                self.accept();
            }
            if conn.contains(PollFlags::POLLOUT) {
                self.flush();
            }
            if conn.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                self.read_conn();
            }
        }
    }

    fn on_signals(&mut self) {
        while let Ok(Some(info)) = self.signals.read_signal() {
            // SIGTERM/SIGINT end an idle keeper only: with apps running it
            // would orphan them and their pipes. SIGCHLD is handled below.
            if let Ok(Signal::SIGTERM | Signal::SIGINT) = Signal::try_from(info.ssi_signo as i32) {
                let running = self.children.values().filter(|c| c.exit.is_none()).count();
                if running == 0 {
                    self.exiting = true;
                } else {
                    log!("procd keeper: ignoring the signal: {running} app processes run; stop them with procd");
                }
            }
        }
        self.reap();
    }

    /// Collects every exited child; apps' exits go to the daemon (or wait
    /// for the next one), orphaned grandchildren are just reaped.
    fn reap(&mut self) {
        for (pid, status) in crate::process::reap::drain() {
            if let Some(child) = self.children.get_mut(&pid) {
                child.exit = Some(status);
                if self.conn.is_some() {
                    self.send(&FromKeeper::Exited { pid, status }, &[]);
                }
            }
        }
    }

    /// A new daemon replaces the old connection: only one daemon runs per
    /// state dir (it holds `daemon.lock`), so the old one is gone.
    fn accept(&mut self) {
        match wire::accept(self.listener.as_fd()) {
            Ok(fd) => {
                self.conn = Some(fd);
                self.outbox.clear();
            }
            Err(e) => log!("procd keeper: accept failed: {e}"),
        }
    }

    fn read_conn(&mut self) {
        loop {
            let Some(conn) = &self.conn else { return };
            match wire::recv::<ToKeeper>(conn.as_fd(), &mut self.buf) {
                Ok(Some((msg, fds))) => self.handle(msg, fds),
                Ok(None) => {
                    self.conn = None;
                    self.outbox.clear();
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log!("procd keeper: dropping the daemon connection: {e}");
                    self.conn = None;
                    self.outbox.clear();
                    return;
                }
            }
        }
    }

    fn handle(&mut self, msg: ToKeeper, fds: Vec<OwnedFd>) {
        match msg {
            ToKeeper::Hello { version } => self.hello(version),
            ToKeeper::Spawn { id, launch, tag } => self.spawn(id, &launch, tag, &fds),
            ToKeeper::Forget { pid } => {
                self.children.remove(&pid);
            }
            ToKeeper::Store { key, value: Some(value) } => {
                self.records.insert(key, value);
            }
            ToKeeper::Store { key, value: None } => {
                self.records.remove(&key);
            }
            ToKeeper::Hold { key } => {
                self.held.insert(key, fds);
            }
            ToKeeper::Release { key } => {
                self.held.remove(&key);
            }
            ToKeeper::Reexec { exe } => {
                let err = self.reexec(&exe);
                log!("procd keeper: cannot re-execute {}: {err}; the old keeper goes on", exe.display());
                self.conn = None;
            }
            ToKeeper::Exit => self.exiting = true,
        }
    }

    fn hello(&mut self, version: u32) {
        // A daemon is back: whatever an earlier one said about exiting is void.
        self.exiting = false;
        if version != VERSION {
            log!("procd keeper: daemon speaks protocol {version}, keeper {VERSION}; refusing");
            self.conn = None;
            return;
        }
        let children: Vec<(i32, String, Option<ExitStatus>)> =
            self.children.iter().map(|(pid, c)| (*pid, c.tag.clone(), c.exit)).collect();
        for (pid, tag, exit) in children {
            let c = &self.children[&pid];
            let (out, err) = (c.stdout.try_clone(), c.stderr.try_clone());
            let (Ok(out), Ok(err)) = (out, err) else { continue };
            self.send_owned(&FromKeeper::Child { pid, tag, exit }, vec![out, err]);
        }
        let held: Vec<(String, Vec<OwnedFd>)> = self
            .held
            .iter()
            .map(|(k, fds)| (k.clone(), fds.iter().filter_map(|f| f.try_clone().ok()).collect()))
            .collect();
        for (key, fds) in held {
            self.send_owned(&FromKeeper::Held { key }, fds);
        }
        let records: Vec<(String, String)> = self.records.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (key, value) in records {
            self.send(&FromKeeper::Stored { key, value }, &[]);
        }
        self.send(&FromKeeper::Welcome { version: VERSION, keeper_pid: std::process::id() as i32 }, &[]);
    }

    fn spawn(&mut self, id: u64, req: &LaunchRequest, tag: String, fds: &[OwnedFd]) {
        let cgroup = req.cgroup.clone().map(InstanceCgroup::existing);
        let spec = LaunchSpec {
            argv: &req.argv,
            cwd: &req.cwd,
            env: &req.env,
            credentials: req.credentials.as_ref(),
            cgroup: cgroup.as_ref(),
        };
        let passed: Vec<BorrowedFd> = fds.iter().map(|f| f.as_fd()).collect();
        match launch_passing(&spec, &passed, req.listen_pid) {
            Ok(launched) => {
                let fds = [launched.stdout.as_fd(), launched.stderr.as_fd()];
                let body = encode(&FromKeeper::Spawned { id, pid: launched.pid });
                self.send_borrowed(body, &fds);
                let child = Child { tag, stdout: launched.stdout, stderr: launched.stderr, exit: None };
                self.children.insert(launched.pid, child);
            }
            Err(e) => self.send(&FromKeeper::SpawnFailed { id, error: e.to_string() }, &[]),
        }
    }

    fn send(&mut self, msg: &FromKeeper, fds: &[BorrowedFd]) {
        self.send_borrowed(encode(msg), fds);
    }

    fn send_owned(&mut self, msg: &FromKeeper, fds: Vec<OwnedFd>) {
        let borrowed: Vec<BorrowedFd> = fds.iter().map(|f| f.as_fd()).collect();
        self.send_borrowed(encode(msg), &borrowed);
    }

    /// Sends now, or queues (with copies of the fds) behind earlier
    /// messages when the daemon's socket is full: order is kept.
    fn send_borrowed(&mut self, body: Vec<u8>, fds: &[BorrowedFd]) {
        let Some(conn) = &self.conn else { return };
        if self.outbox.is_empty() {
            match wire::send_raw(conn.as_fd(), &body, fds) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    // The daemon is gone; the next one asks for everything.
                    self.conn = None;
                    return;
                }
            }
        }
        let fds = fds.iter().filter_map(|f| f.try_clone_to_owned().ok()).collect();
        self.outbox.push_back(Queued { body, fds });
    }

    fn flush(&mut self) {
        while let (Some(conn), Some(q)) = (&self.conn, self.outbox.front()) {
            let fds: Vec<BorrowedFd> = q.fds.iter().map(|f| f.as_fd()).collect();
            match wire::send_raw(conn.as_fd(), &q.body, &fds) {
                Ok(()) => {
                    self.outbox.pop_front();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.conn = None;
                    self.outbox.clear();
                }
            }
        }
    }
}

/// The signals the keeper reads from its signalfd (blocked otherwise).
fn keeper_signals() -> SigSet {
    let mut mask = SigSet::empty();
    for sig in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGPIPE] {
        mask.add(sig);
    }
    mask
}

fn encode(msg: &FromKeeper) -> Vec<u8> {
    serde_json::to_vec(msg).unwrap_or_default()
}

/// What a keeper hands to its next image: plain data plus fd numbers that
/// stay open across `execve`.
#[derive(Serialize, Deserialize)]
struct ResumeState {
    children: Vec<ResumeChild>,
    records: BTreeMap<String, String>,
    held: Vec<(String, Vec<RawFd>)>,
}

#[derive(Serialize, Deserialize)]
struct ResumeChild {
    pid: i32,
    tag: String,
    stdout: RawFd,
    stderr: RawFd,
    exit: Option<ExitStatus>,
}

impl Keeper {
    /// Replaces the program image, keeping children and fds; returns only
    /// on failure, with everything as it was.
    fn reexec(&mut self, exe: &Path) -> io::Error {
        let state = ResumeState {
            children: self
                .children
                .iter()
                .map(|(pid, c)| ResumeChild {
                    pid: *pid,
                    tag: c.tag.clone(),
                    stdout: c.stdout.as_raw_fd(),
                    stderr: c.stderr.as_raw_fd(),
                    exit: c.exit,
                })
                .collect(),
            records: self.records.clone(),
            held: self.held.iter().map(|(k, fds)| (k.clone(), fds.iter().map(|f| f.as_raw_fd()).collect())).collect(),
        };
        let memfd = match write_memfd(&state) {
            Ok(fd) => fd,
            Err(e) => return e,
        };
        let inherited = self.inherited_fds();
        for fd in &inherited {
            let _ = set_cloexec(*fd, false);
        }
        let args = [
            "keeper".to_owned(),
            "--listen-fd".to_owned(),
            self.listener.as_raw_fd().to_string(),
            "--resume-fd".to_owned(),
            memfd.as_raw_fd().to_string(),
        ];
        let err = exec(exe, &args);
        // std cleared the signal mask before its failed execve: block our
        // signals again, or SIGCHLD never reaches the signalfd.
        let _ = keeper_signals().thread_block();
        for fd in &inherited {
            let _ = set_cloexec(*fd, true);
        }
        err
    }

    fn inherited_fds(&self) -> Vec<BorrowedFd<'_>> {
        let mut fds = vec![self.listener.as_fd()];
        for c in self.children.values() {
            fds.push(c.stdout.as_fd());
            fds.push(c.stderr.as_fd());
        }
        fds.extend(self.held.values().flatten().map(|f| f.as_fd()));
        fds
    }

    fn restore(&mut self, state: OwnedFd) -> io::Result<()> {
        let mut file = std::fs::File::from(state);
        file.rewind()?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        let state: ResumeState = serde_json::from_str(&text).map_err(io::Error::other)?;
        // SAFETY (all three): these fds were ours before execve and were
        // left open for exactly this; nothing else in this image owns them.
        let own = |fd: RawFd| -> OwnedFd {
            let _ = set_cloexec(unsafe { BorrowedFd::borrow_raw(fd) }, true);
            unsafe { OwnedFd::from_raw_fd(fd) }
        };
        for c in state.children {
            let child = Child { tag: c.tag, stdout: own(c.stdout), stderr: own(c.stderr), exit: c.exit };
            self.children.insert(c.pid, child);
        }
        self.records = state.records;
        for (key, fds) in state.held {
            self.held.insert(key, fds.into_iter().map(own).collect());
        }
        Ok(())
    }
}

fn write_memfd(state: &ResumeState) -> io::Result<OwnedFd> {
    // SAFETY: a NUL-terminated name and no flags: a plain anonymous file
    // that stays open across execve.
    let raw = unsafe { libc::memfd_create(c"procd-keeper-state".as_ptr(), 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a new fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut file = std::fs::File::from(fd);
    file.write_all(&serde_json::to_vec(state).map_err(io::Error::other)?)?;
    Ok(OwnedFd::from(file))
}

fn set_cloexec(fd: BorrowedFd, on: bool) -> io::Result<()> {
    let flags = if on { FdFlag::FD_CLOEXEC } else { FdFlag::empty() };
    fcntl(fd, FcntlArg::F_SETFD(flags))?;
    Ok(())
}

/// `execv(exe, ["procd", args...])` with the keeper's signal mask cleared
/// (a blocked mask survives exec); returns only the error.
fn exec(exe: &Path, args: &[String]) -> io::Error {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg0("procd").args(args);
    // Command::exec keeps the environment and the fds without CLOEXEC.
    cmd.exec()
}
