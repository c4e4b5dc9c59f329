//! The daemon's side of the keeper: every spawn goes through it, every exit
//! comes from it, and what a next daemon must know (which instance a child
//! is, its restart count, an `errored` status) is kept in it.
//!
//! One writer task sends requests in order; one reader task routes replies
//! to the waiting spawn and exits to the owning instance (through the
//! [`ExitRouter`]), then tells the keeper to forget the child.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use super::router::{ExitRouter, Route};
use super::state::{RestartReason, Status};
use crate::process::ExitStatus;
use crate::process::keeper::{Connected, FromKeeper, KeeperLink, LaunchRequest, ToKeeper, VERSION};
use crate::spec::SpecHash;

/// How long a connecting daemon waits for the keeper's inventory.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Who a child is, given to the keeper at spawn and handed back to the next
/// daemon: enough to adopt the run, or to stop it if its app is gone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunTag {
    pub app: String,
    pub index: u32,
    pub hash: SpecHash,
    /// The run's cgroup directory, when it has one.
    pub cgroup: Option<PathBuf>,
    /// The id in the run's cgroup name.
    pub runs: u64,
    /// When the process started, in milliseconds since the Unix epoch.
    pub started_ms: u64,
    pub stop_signal: i32,
    pub stop_timeout_ms: u64,
}

/// What a next daemon must know of an instance that no process shows: its
/// counters and whether it gave up (`errored`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub status: Status,
    pub restarts: u32,
    pub last_exit: Option<ExitStatus>,
    pub last_reason: Option<RestartReason>,
}

impl InstanceRecord {
    pub fn key(app: &str, index: u32) -> String {
        format!("instance/{app}/{index}")
    }

    /// `(app, index)` of a record key.
    pub fn parse_key(key: &str) -> Option<(String, u32)> {
        let rest = key.strip_prefix("instance/")?;
        let (app, index) = rest.rsplit_once('/')?;
        Some((app.to_owned(), index.parse().ok()?))
    }
}

/// A child the keeper held when this daemon connected.
#[derive(Debug)]
pub struct AdoptedRun {
    pub pid: i32,
    pub tag: RunTag,
    /// Set when it exited while no daemon was connected.
    pub exit: Option<ExitStatus>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// Everything the keeper handed over on connection.
#[derive(Debug, Default)]
pub struct Inventory {
    pub runs: Vec<AdoptedRun>,
    pub records: BTreeMap<(String, u32), InstanceRecord>,
    /// Fd sets held under a key (listening sockets).
    pub held: BTreeMap<String, Vec<OwnedFd>>,
    /// Records other than instance records (what the held fds are).
    pub other: BTreeMap<String, String>,
    /// Whether a keeper was already running (false: it was just started).
    pub existing: bool,
    pub keeper_pid: i32,
}

/// A started program, as the keeper reports it.
#[derive(Debug)]
pub struct Spawned {
    pub pid: i32,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

enum Outgoing {
    Message(ToKeeper, Vec<OwnedFd>),
    /// Answered once everything queued before it was written.
    Flush(oneshot::Sender<()>),
}

struct Pending {
    route: Route,
    reply: oneshot::Sender<Result<Spawned, String>>,
}

/// The daemon's handle on the keeper; cheap to clone.
#[derive(Clone)]
pub struct KeeperClient {
    /// Spawn requests go straight to the socket (the respawn path); the
    /// rest through the writer task, in order.
    link: Arc<KeeperLink>,
    tx: mpsc::UnboundedSender<Outgoing>,
    pending: Arc<Mutex<HashMap<u64, Pending>>>,
    next_id: Arc<AtomicU64>,
    router: ExitRouter,
    closed: watch::Receiver<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeeperError {
    #[error("cannot reach or start the keeper at {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },
    #[error("the keeper at {path} did not answer: {reason}")]
    Hello { path: PathBuf, reason: String },
}

impl KeeperClient {
    /// Connects to the keeper at `socket` (starting `exe keeper` if none
    /// runs), takes its inventory, and starts the reader and writer tasks.
    pub async fn connect(
        socket: &Path,
        exe: &Path,
        router: ExitRouter,
    ) -> Result<(KeeperClient, Inventory), KeeperError> {
        let connect_err = |source| KeeperError::Connect { path: socket.to_owned(), source };
        let (link, connected) = KeeperLink::connect_or_start(socket, exe).map_err(connect_err)?;
        let hello_err = |reason: String| KeeperError::Hello { path: socket.to_owned(), reason };
        link.send(&ToKeeper::Hello { version: VERSION }, &[]).await.map_err(|e| hello_err(e.to_string()))?;
        let mut buf = Vec::new();
        let mut inventory = Inventory { existing: connected == Connected::Existing, ..Inventory::default() };
        let read = async {
            loop {
                match link.recv(&mut buf).await {
                    Ok(Some((msg, fds))) => {
                        if inventory.take(msg, fds) {
                            return Ok(());
                        }
                    }
                    Ok(None) => return Err("it closed the connection (another daemon, or a version mismatch)".into()),
                    Err(e) => return Err(e.to_string()),
                }
            }
        };
        match tokio::time::timeout(HELLO_TIMEOUT, read).await {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => return Err(hello_err(reason)),
            Err(_) => return Err(hello_err(format!("no inventory within {HELLO_TIMEOUT:?}"))),
        }
        let link = Arc::new(link);
        let (tx, rx) = mpsc::unbounded_channel();
        let (closed_tx, closed) = watch::channel(false);
        let client = KeeperClient {
            link: link.clone(),
            tx,
            pending: Arc::default(),
            next_id: Arc::new(AtomicU64::new(1)),
            router,
            closed,
        };
        tokio::spawn(write_loop(link.clone(), rx));
        tokio::spawn(client.clone().read_loop(link, buf, closed_tx));
        Ok((client, inventory))
    }

    /// Starts a program through the keeper. `route` is registered for its
    /// pid before any exit of it can be delivered.
    pub async fn spawn(
        &self,
        launch: LaunchRequest,
        tag: &RunTag,
        route: Route,
        fds: &[BorrowedFd<'_>],
    ) -> Result<Spawned, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let fds = fds.iter().map(|f| f.try_clone_to_owned()).collect::<io::Result<Vec<_>>>();
        let fds = fds.map_err(|e| format!("cannot pass the listening sockets: {e}"))?;
        let (reply, answer) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, Pending { route, reply });
        let tag = serde_json::to_string(tag).map_err(|e| e.to_string())?;
        let borrowed: Vec<BorrowedFd> = fds.iter().map(|f| f.as_fd()).collect();
        if let Err(e) = self.link.send(&ToKeeper::Spawn { id, launch, tag }, &borrowed).await {
            self.pending.lock().unwrap().remove(&id);
            return Err(format!("cannot reach the keeper: {e}"));
        }
        answer.await.unwrap_or_else(|_| Err("the keeper connection was lost".into()))
    }

    /// Keeps `record` for the next daemon (`None` forgets it).
    pub fn store(&self, key: String, record: Option<&impl Serialize>) {
        let value = record.and_then(|r| serde_json::to_string(r).ok());
        self.send(ToKeeper::Store { key, value }, vec![]);
    }

    /// Keeps `fds` under `key` for the next daemon.
    pub fn hold(&self, key: String, fds: &[BorrowedFd]) {
        let fds = fds.iter().filter_map(|f| f.try_clone_to_owned().ok()).collect();
        self.send(ToKeeper::Hold { key }, fds);
    }

    pub fn release(&self, key: String) {
        self.send(ToKeeper::Release { key }, vec![]);
    }

    /// The keeper is told to exit once its last child is gone.
    pub fn exit(&self) {
        self.send(ToKeeper::Exit, vec![]);
    }

    /// Re-executes the keeper as `exe`; resolves when the old image has
    /// closed the connection (the new one listens on the same socket).
    pub async fn reexec(&self, exe: &Path) {
        self.send(ToKeeper::Reexec { exe: exe.to_owned() }, vec![]);
        self.flush().await;
        let mut closed = self.closed.clone();
        let _ = tokio::time::timeout(HELLO_TIMEOUT, closed.wait_for(|c| *c)).await;
    }

    /// Waits until every message queued so far was written.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Outgoing::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// Resolves when the connection to the keeper is lost.
    pub async fn lost(&self) {
        let mut closed = self.closed.clone();
        let _ = closed.wait_for(|c| *c).await;
    }

    fn send(&self, msg: ToKeeper, fds: Vec<OwnedFd>) {
        let _ = self.tx.send(Outgoing::Message(msg, fds));
    }

    async fn read_loop(self, link: Arc<KeeperLink>, mut buf: Vec<u8>, closed: watch::Sender<bool>) {
        loop {
            match link.recv(&mut buf).await {
                Ok(Some((msg, fds))) => self.on_message(msg, fds),
                Ok(None) => break,
                Err(e) => {
                    tracing::error!("reading from the keeper: {e}");
                    break;
                }
            }
        }
        for (_, p) in self.pending.lock().unwrap().drain() {
            let _ = p.reply.send(Err("the keeper connection was lost".into()));
        }
        let _ = closed.send(true);
    }

    fn on_message(&self, msg: FromKeeper, fds: Vec<OwnedFd>) {
        match msg {
            FromKeeper::Spawned { id, pid } => {
                let Some(p) = self.pending.lock().unwrap().remove(&id) else { return };
                let mut fds = fds.into_iter();
                let (Some(stdout), Some(stderr)) = (fds.next(), fds.next()) else {
                    let _ = p.reply.send(Err("the keeper sent no output pipes".into()));
                    return;
                };
                self.router.register(pid, p.route);
                let _ = p.reply.send(Ok(Spawned { pid, stdout, stderr }));
            }
            FromKeeper::SpawnFailed { id, error } => {
                if let Some(p) = self.pending.lock().unwrap().remove(&id) {
                    let _ = p.reply.send(Err(error));
                }
            }
            FromKeeper::Exited { pid, status } => {
                tracing::trace!(pid, "exited: {status}");
                self.router.deliver(pid, status);
                self.send(ToKeeper::Forget { pid }, vec![]);
            }
            other => tracing::debug!("unexpected message from the keeper: {other:?}"),
        }
    }

    /// Tells the keeper a child adopted with an exit already recorded was
    /// handled.
    pub fn forget(&self, pid: i32) {
        self.send(ToKeeper::Forget { pid }, vec![]);
    }

    pub fn router(&self) -> &ExitRouter {
        &self.router
    }
}

impl Inventory {
    /// Takes one message of the keeper's answer to `Hello`; true at its end.
    fn take(&mut self, msg: FromKeeper, fds: Vec<OwnedFd>) -> bool {
        match msg {
            FromKeeper::Child { pid, tag, exit } => {
                let mut fds = fds.into_iter();
                let (Some(stdout), Some(stderr)) = (fds.next(), fds.next()) else { return false };
                match serde_json::from_str::<RunTag>(&tag) {
                    Ok(tag) => self.runs.push(AdoptedRun { pid, tag, exit, stdout, stderr }),
                    Err(e) => tracing::error!(pid, "the keeper holds a child with an unreadable tag: {e}"),
                }
            }
            FromKeeper::Held { key } => {
                self.held.insert(key, fds);
            }
            FromKeeper::Stored { key, value } => match InstanceRecord::parse_key(&key) {
                Some(id) => {
                    if let Ok(record) = serde_json::from_str(&value) {
                        self.records.insert(id, record);
                    }
                }
                None => {
                    self.other.insert(key, value);
                }
            },
            FromKeeper::Welcome { keeper_pid, .. } => {
                self.keeper_pid = keeper_pid;
                return true;
            }
            other => tracing::debug!("unexpected message before the keeper's welcome: {other:?}"),
        }
        false
    }
}

async fn write_loop(link: Arc<KeeperLink>, mut rx: mpsc::UnboundedReceiver<Outgoing>) {
    while let Some(out) = rx.recv().await {
        match out {
            Outgoing::Message(msg, fds) => {
                let borrowed: Vec<BorrowedFd> = fds.iter().map(|f| f.as_fd()).collect();
                if let Err(e) = link.send(&msg, &borrowed).await {
                    tracing::error!("writing to the keeper: {e}");
                }
            }
            Outgoing::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}
