//! The node role: keeps a link to the home daemon, runs remote processes
//! with their owners' credentials, streams their stdio and reports their
//! state.
//!
//! A node keeps its processes running while the link to the home is away
//! (a home restart, a short link cut) for `orphan_grace_ms`; when the link
//! comes back it tells the home which sessions it still has, and the home
//! tells it which to forget. Past the grace it kills them: nothing runs
//! without a proxy for long.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use roam_net::framed::FrameReader;
use roam_net::tls::{self, Identity};
use roam_proto::link::{LinkHello, LinkHelloReply, LinkMsg};
use roam_proto::types::{
    Chan, Cred, ErrorCode, ExitStatus, Handover, NodeLoad, ProcInfo, SessionId, SessionReport,
    SpawnSpec, WireError, WireSignal, MAX_UNREAD,
};
use roam_sys::spawn::{ExecFile, SharedRoot, SpawnRequest, WaitEvent};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};

use crate::config::{Config, Files, NodeConfig};
use crate::node_files::{LinkTransport, MountTransport};
use crate::runner::Runners;
use crate::stream::{InStream, OutStream};
use crate::wire::{writer_loop, FrameTx};

mod ckpt;
mod load;
mod peer;
mod stage;

/// How long after a process exits its stdout/stderr may stay open (held by
/// a child it left behind) before the node stops waiting for their end.
const EXIT_LINGER: Duration = Duration::from_millis(250);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Commands to a session's task.
#[derive(Debug)]
enum SessionCmd {
    Link(LinkMsg),
    Wait(WaitEvent),
    /// The home no longer has a proxy for it: kill and forget.
    Forget,
    /// The process cannot go on (the reason is logged): kill it, and
    /// report its death to the home as any other.
    End(&'static str),
    /// As `End`, and its proxy is told why on its stderr (this text).
    Lost(String),
    /// Its process is frozen to migrate: stop its streams, drain its
    /// output, take its unread input back, and say where they stand.
    Handover(oneshot::Sender<Result<(Handover, Vec<u8>), String>>),
    /// The migration failed: put the input back and go on (answered once
    /// done, before the process is let go).
    StayHere(oneshot::Sender<()>),
    /// The process runs on another node now: forget the session, without
    /// a word to the home.
    MovedAway,
}

struct SessionHandle {
    tx: mpsc::UnboundedSender<SessionCmd>,
    report: SessionReport,
    started: Instant,
    /// Started confined (`SpawnSpec::confine`): a restore would not
    /// rebuild its confinement, so it is neither checkpointed nor moved.
    confined: bool,
    /// A migration's new copy, restored and held stopped until the home
    /// decides the move (`PathUp`: it runs; `Forget`: it is killed).
    held: bool,
}

/// State shared by the node's tasks.
pub struct NodeShared {
    name: String,
    cfg: NodeConfig,
    heartbeat: Duration,
    timeout: Duration,
    sessions: Mutex<HashMap<SessionId, SessionHandle>>,
    /// Child pid → its session's command queue (filled by the spawner
    /// thread before the reaper can see the pid).
    pids: Arc<Mutex<HashMap<u32, mpsc::UnboundedSender<SessionCmd>>>>,
    link: Mutex<Option<FrameTx>>,
    spawner: std::sync::mpsc::Sender<SpawnerMsg>,
    /// What the node runs, and how (probed once at start).
    runners: Runners,
    /// The remote file system's link transport.
    fs: Arc<LinkTransport>,
    /// The home's files (with `files = "home"`): the mount, None while it
    /// is being remade or if remaking it failed.
    files: Option<Mutex<Option<HomeFiles>>>,
    /// Signals remote processes ask of the home (with `identity = "home"`).
    identity: Arc<crate::identity::Forwarder>,
    /// The thread that checkpoints and restores processes (ptrace).
    tracer: ckpt::Tracer,
    /// Held while the tracer traces, so that the reaper's waitpid does not
    /// take the stops it waits for.
    trace_gate: Arc<tokio::sync::Mutex<()>>,
    /// Image transfers under way, by request id: where their messages go.
    transfers: Mutex<HashMap<u64, mpsc::UnboundedSender<LinkMsg>>>,
    /// Joins to the home so far, counted once each join's forget list went
    /// to the sessions (a migration waiting for its verdict watches it).
    joins: std::sync::atomic::AtomicU64,
    /// The node's certificates, for peer links.
    tls: Identity,
    /// The port of the peer listener, if it listens.
    peer_port: Option<u16>,
    /// Migrations the home announced (`Expect`): by request id, the node
    /// their peer link comes from.
    expected: Mutex<HashMap<u64, String>>,
    /// Peer links of migrations coming in: where their acknowledgements go.
    peer_acks: Mutex<HashMap<u64, FrameTx>>,
    /// Peer links to other nodes, by name, kept for the migrations after.
    peers: Mutex<HashMap<String, FrameTx>>,
    /// Pages left out of images, coming in: by request id, the node they
    /// come from and where they go.
    lazy_in: Mutex<HashMap<u64, (String, mpsc::UnboundedSender<ckpt::LazyMsg>)>>,
    /// Told when a transfer opens or a migration is announced (what peer
    /// links wait for).
    opened: tokio::sync::Notify,
    /// The cache of staged executables.
    stage: stage::StageCache,
    /// A fault to inject (`ROAM_FAULT`, tests only), and the notice that
    /// cuts the link for one.
    fault: Option<crate::fault::Fault>,
    cut: tokio::sync::Notify,
}

/// The home's files, mounted, and the transport the mount calls through.
struct HomeFiles {
    mount: roam_rfs::client::Mount,
    transport: Arc<MountTransport>,
}

/// What the spawner thread is asked.
enum SpawnerMsg {
    Spawn(Box<SpawnJob>),
    /// Drop the home's files' namespace (see [`SharedRoot`]): before the
    /// mount it holds is dropped.
    Forget(oneshot::Sender<()>),
}

struct SpawnJob {
    req: OwnedSpawn,
    tx: mpsc::UnboundedSender<SessionCmd>,
    reply: oneshot::Sender<Result<u32, roam_sys::spawn::SpawnError>>,
}

/// A spawn request with owned buffers, to cross to the spawner thread.
struct OwnedSpawn {
    program: Vec<u8>,
    argv: Vec<Vec<u8>>,
    env: Vec<Vec<u8>>,
    cwd: Vec<u8>,
    umask: u32,
    cred: Cred,
    stdio: [OwnedFd; 3],
    ctty: Option<usize>,
    /// The root the process sees (the home's files), if not the node's.
    root: Option<Vec<u8>>,
    /// Its home identity, answered by a supervisor (`identity = "home"`),
    /// and its confinement.
    supervision: Option<crate::identity::Supervision>,
    /// A staged executable, and whether it stays open across the exec
    /// (see `roam_sys::spawn::ExecFile`).
    exec_file: Option<(std::fs::File, bool)>,
}

impl NodeShared {
    /// Sends `msg` to the home; false if the link is down.
    fn send(&self, msg: &LinkMsg) -> bool {
        !self.faulted_at(msg) && self.send_raw(msg)
    }

    /// A frame already encoded, of kind `kind` (for the fault check).
    fn send_frame(&self, kind: &str, frame: Vec<u8>) {
        if self.fault.is_some() && self.faulted(kind) {
            return;
        }
        if let Some(link) = self.link.lock().unwrap().as_ref() {
            link.send_frame(frame);
        }
    }

    /// [`NodeShared::send`] without the fault check (made by the caller).
    fn send_raw(&self, msg: &LinkMsg) -> bool {
        self.link
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|link| link.send("link", msg))
    }

    /// The pid of the session's process if it is a migration's new copy
    /// held until the move is decided.
    fn held_pid(&self, session: SessionId) -> Option<u32> {
        self.sessions
            .lock()
            .unwrap()
            .get(&session)
            .filter(|h| h.held)
            .map(|h| h.report.node_pid)
    }

    /// [`NodeShared::faulted`] for `msg`.
    fn faulted_at(&self, msg: &LinkMsg) -> bool {
        self.fault.is_some() && self.faulted(&crate::fault::kind_of(msg))
    }

    /// Whether the fault to inject (`ROAM_FAULT`) is the one of this
    /// message of kind `kind`, about to be sent: then it is done (the link
    /// cut, or the daemon killed), and the message is not to be sent.
    fn faulted(&self, kind: &str) -> bool {
        use crate::fault::Action;
        let Some(action) = self.fault.as_ref().and_then(|f| f.before(kind)) else {
            return false;
        };
        tracing::warn!("injected fault: {action:?} before {kind}");
        match action {
            Action::Cut => {
                *self.link.lock().unwrap() = None;
                self.cut.notify_one();
            }
            Action::Die => {
                let _ = roam_sys::signal::kill(std::process::id() as i32, libc::SIGKILL);
            }
        }
        true
    }

    /// Sends an encoded frame to the home; false if the link is down.
    fn link_send_frame(&self, frame: Vec<u8>) -> bool {
        self.link
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|link| link.send_frame(frame))
    }

    fn reports(&self) -> Vec<SessionReport> {
        self.sessions
            .lock()
            .unwrap()
            .values()
            .map(|h| h.report.clone())
            .collect()
    }

    /// The root remote processes see, if not the node's: the home's files.
    fn root(&self) -> Option<Vec<u8>> {
        use std::os::unix::ffi::OsStrExt;
        self.files
            .as_ref()
            .map(|_| self.cfg.files_mount.as_os_str().as_bytes().to_vec())
    }

    /// What the identity supervisor of a session's process needs.
    fn supervision(
        &self,
        session: SessionId,
        home_pid: u32,
        home_ppid: u32,
        home_host: &str,
        confine: bool,
    ) -> crate::identity::Supervision {
        crate::identity::Supervision {
            identity: self.cfg.identity == crate::config::IdentityMode::Home,
            confine,
            who: crate::identity::HomeIdentity {
                session,
                home_pid,
                home_ppid,
                home_host: home_host.to_owned(),
            },
            forwarder: self.identity.clone(),
            rt: tokio::runtime::Handle::current(),
        }
    }

    /// Acknowledges bytes of transfer `req`: to the home (progress), and to
    /// its sender over a peer link, if it came that way.
    fn ack(&self, req: u64, offset: u64) {
        if self.faulted("ImageAck") {
            return;
        }
        let msg = LinkMsg::ImageAck { req, offset };
        if let Some(p) = self.peer_acks.lock().unwrap().get(&req) {
            p.send("peer", &msg);
        }
        self.send_raw(&msg);
    }

    /// A `PreCopy` (from the home or a peer link) or a `Restore` sent
    /// ahead: to the migration to this node that keeps the rounds, or the
    /// first of a new one.
    fn migration_in(self: &Arc<Self>, req: u64, msg: LinkMsg) {
        let open = self.transfers.lock().unwrap().get(&req).cloned();
        match open {
            Some(t) => {
                let _ = t.send(msg);
            }
            None => {
                let rx = self.open_transfer(req);
                tokio::spawn(ckpt::migrate_in(self.clone(), req, msg, rx));
            }
        }
    }

    /// Transfer `req` is over: whatever was kept for it goes.
    fn end_transfer(&self, req: u64) {
        self.transfers.lock().unwrap().remove(&req);
        self.expected.lock().unwrap().remove(&req);
        self.peer_acks.lock().unwrap().remove(&req);
    }

    /// Registers transfer `req`; its messages arrive on the receiver.
    fn open_transfer(&self, req: u64) -> mpsc::UnboundedReceiver<LinkMsg> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.transfers.lock().unwrap().insert(req, tx);
        self.opened.notify_waiters();
        rx
    }

    fn to_session(&self, id: SessionId, cmd: SessionCmd) {
        if let Some(h) = self.sessions.lock().unwrap().get(&id) {
            let _ = h.tx.send(cmd);
        }
    }
}

/// Runs the node role until the process is told to stop.
pub async fn run(cfg: &Config, identity: Identity) -> std::io::Result<()> {
    let node_cfg = cfg
        .node
        .clone()
        .expect("config checked: a node role has a [node] section");
    // Before the reaper starts: probing runs each runner once.
    let runners = Runners::probe(&node_cfg);
    let fs = Arc::new(LinkTransport::default());
    let files = match cfg.node_files() {
        Files::Node => None,
        Files::Home => Some(Mutex::new(Some(mount_home_files(
            &node_cfg.files_mount,
            &fs,
            0,
        )?))),
    };
    let pids: Arc<Mutex<HashMap<u32, mpsc::UnboundedSender<SessionCmd>>>> = Arc::default();
    let spawner = start_spawner(pids.clone());
    let trace_gate = Arc::new(tokio::sync::Mutex::new(()));
    let tracer = ckpt::Tracer::start(trace_gate.clone());
    let peers = match node_cfg.peer_listen {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot listen for peers on {addr}: {e}"))
        })?),
        None => None,
    };
    let peer_port = peers
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map(|a| a.port());
    let fault = crate::fault::Fault::from_env()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let stage = stage::StageCache::new(
        &node_cfg.stage_dir,
        node_cfg.stage_max_mib,
        node_cfg.stage_cache_mib,
    );
    let shared = Arc::new(NodeShared {
        name: cfg.name.clone(),
        cfg: node_cfg,
        heartbeat: Duration::from_millis(cfg.membership.heartbeat_ms),
        timeout: Duration::from_millis(cfg.membership.timeout_ms),
        sessions: Mutex::default(),
        pids,
        link: Mutex::new(None),
        spawner,
        runners,
        fs,
        files,
        identity: crate::identity::Forwarder::new(),
        tracer,
        trace_gate,
        transfers: Mutex::default(),
        joins: Default::default(),
        tls: identity.clone(),
        peer_port,
        expected: Mutex::default(),
        peer_acks: Mutex::default(),
        lazy_in: Mutex::default(),
        peers: Mutex::default(),
        opened: tokio::sync::Notify::new(),
        stage,
        fault,
        cut: tokio::sync::Notify::new(),
    });
    if let Some(l) = peers {
        tokio::spawn(peer::listen(shared.clone(), l));
    }
    // Identity forwarding: its requests go out on the link, when up.
    let weak = Arc::downgrade(&shared);
    shared.identity.set_sender(move |msg| {
        weak.upgrade().is_some_and(|s| {
            s.link
                .lock()
                .unwrap()
                .as_ref()
                .is_some_and(|l| l.send("link", msg))
        })
    });
    tokio::spawn(reaper(shared.clone()));
    link_manager(shared.clone(), identity).await;
    // Leaving: the processes end with the daemon (PR_SET_PDEATHSIG); kill
    // them now so they end before we do.
    let ids: Vec<SessionId> = shared.sessions.lock().unwrap().keys().copied().collect();
    for id in ids {
        shared.to_session(id, SessionCmd::Forget);
    }
    forget_namespaces(&shared).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(())
}

/// Ends what holds the home's files' mount besides the processes: the
/// restore stubs' zygote, the spawned processes' namespace.
async fn forget_namespaces(shared: &NodeShared) {
    shared.tracer.forget_stubs().await;
    let (tx, rx) = oneshot::channel();
    if shared.spawner.send(SpawnerMsg::Forget(tx)).is_ok() {
        let _ = rx.await;
    }
}

/// Starts the process of `r` and registers its pid for the reaper.
///
/// PR_SET_PDEATHSIG fires when the thread that forked exits, so this runs
/// on long-lived threads only: the spawner thread, or the runtime's own.
fn spawn_owned(
    pids: &Mutex<HashMap<u32, mpsc::UnboundedSender<SessionCmd>>>,
    r: &OwnedSpawn,
    tx: &mpsc::UnboundedSender<SessionCmd>,
    shared_root: Option<&SharedRoot>,
) -> Result<u32, roam_sys::spawn::SpawnError> {
    let req = SpawnRequest {
        program: &r.program,
        argv: &r.argv,
        env: &r.env,
        cwd: &r.cwd,
        umask: r.umask,
        uid: r.cred.uid,
        gid: r.cred.gid,
        groups: &r.cred.groups,
        stdin: r.stdio[0].as_fd(),
        stdout: r.stdio[1].as_fd(),
        stderr: r.stdio[2].as_fd(),
        controlling_tty: r.ctty.map(|i| r.stdio[i].as_fd()),
        root: r.root.as_deref(),
        root_ns: shared_root.map(SharedRoot::ns),
        exec_file: r.exec_file.as_ref().map(|(f, inherit)| ExecFile {
            fd: f.as_fd(),
            inherit: *inherit,
        }),
    };
    // Hold the pid table while forking so the reaper cannot see the child
    // before it is registered.
    let mut table = pids.lock().unwrap();
    let result = match &r.supervision {
        Some(sup) => crate::identity::spawn(&req, sup),
        None => roam_sys::spawn::spawn(&req),
    };
    if let Ok(pid) = result {
        table.insert(pid, tx.clone());
    }
    result
}

/// The spawner thread, for terminal sessions: their session keeper is a
/// real fork, and the spawner waits for the program's exec, which we do
/// not want the runtime's thread to do. It blocks every signal, so
/// SIGCHLD goes to the runtime's thread, which handles it.
fn start_spawner(
    pids: Arc<Mutex<HashMap<u32, mpsc::UnboundedSender<SessionCmd>>>>,
) -> std::sync::mpsc::Sender<SpawnerMsg> {
    let (tx, rx) = std::sync::mpsc::channel::<SpawnerMsg>();
    std::thread::Builder::new()
        .name("roam-spawner".into())
        .spawn(move || {
            roam_sys::signal::block_all_in_thread();
            // The home's files' namespace, made at the first start there.
            let mut shared_root: Option<SharedRoot> = None;
            for msg in rx {
                let job = match msg {
                    SpawnerMsg::Spawn(job) => job,
                    SpawnerMsg::Forget(done) => {
                        shared_root = None;
                        let _ = done.send(());
                        continue;
                    }
                };
                if let Some(root) = &job.req.root {
                    if !shared_root.as_ref().is_some_and(|s| s.serves(root)) {
                        shared_root = SharedRoot::new(root)
                            .inspect_err(|e| {
                                tracing::warn!(
                                    "cannot make the home's files' namespace ({e}): each process gets its own"
                                )
                            })
                            .ok();
                    }
                }
                let result = spawn_owned(&pids, &job.req, &job.tx, shared_root.as_ref());
                let _ = job.reply.send(result);
            }
        })
        .expect("cannot start the spawner thread");
    tx
}

/// Mounts the home's files (the remote file system's FUSE client) at
/// `path`, whose parent only root may enter: the mount is for remote
/// processes, which see it as their `/`, not for the node's own users.
fn mount_home_files(
    path: &std::path::Path,
    fs: &Arc<LinkTransport>,
    epoch: u64,
) -> std::io::Result<HomeFiles> {
    use std::os::unix::fs::PermissionsExt;
    // A daemon that died left its mount behind, dead ("transport endpoint
    // is not connected"): take it away first. Nothing mounted there: the
    // kernel says EINVAL, which is fine.
    match roam_sys::ns::umount_detach(path) {
        Ok(()) => tracing::info!(
            "removed a stale mount of the home's files on {}",
            path.display()
        ),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) => {}
        Err(e) => tracing::warn!("cannot unmount {}: {e}", path.display()),
    }
    std::fs::create_dir_all(path)?;
    if let Some(parent) = path.parent() {
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700))?;
    }
    let groups = fs.clone();
    let opts =
        roam_rfs::client::MountOptions::new(Arc::new(move |uid, gid| groups.groups_of(uid, gid)));
    let transport = MountTransport::new(fs.clone(), epoch);
    let mount = roam_rfs::client::mount(path, transport.clone(), opts).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot mount the home's files on {}: {e}", path.display()),
        )
    })?;
    tracing::info!("the home's files are mounted on {}", path.display());
    Ok(HomeFiles { mount, transport })
}

/// Makes sure the mount of the home's files talks to file server `epoch`:
/// a mount made with another server (the home restarted, or declared this
/// node down) is dropped and made again. Its users, processes of sessions
/// the home forgot, get EIO meanwhile.
async fn bind_home_files(shared: &Arc<NodeShared>, epoch: u64) {
    let Some(files) = &shared.files else {
        return;
    };
    let current = files
        .lock()
        .unwrap()
        .as_ref()
        .is_some_and(|f| f.transport.bind(epoch));
    if current {
        return;
    }
    tracing::info!("the home's file server changed: mounting the home's files afresh");
    // The processes started on the old mount have lost their files (their
    // root, working directory and open files named the old server's
    // nodes): they cannot go on.
    let ids: Vec<SessionId> = shared.sessions.lock().unwrap().keys().copied().collect();
    for id in ids {
        shared.to_session(
            id,
            SessionCmd::End("the home's file server restarted, its files are gone"),
        );
    }
    // The restore stubs' zygote and the spawned processes' namespace hold
    // the old mount: its file server would wait for them forever.
    forget_namespaces(shared).await;
    let shared = shared.clone();
    // Unmounting waits for the old session a moment; mounting waits for
    // the kernel: not on the runtime's threads.
    let remount = tokio::task::spawn_blocking(move || {
        let files = shared.files.as_ref().expect("checked above");
        let old = files.lock().unwrap().take();
        drop(old);
        match mount_home_files(&shared.cfg.files_mount, &shared.fs, epoch) {
            Ok(f) => *files.lock().unwrap() = Some(f),
            Err(e) => tracing::error!("{e}: remote processes cannot start here"),
        }
    });
    let _ = remount.await;
}

/// Reaps children on SIGCHLD and hands each event to its session.
async fn reaper(shared: Arc<NodeShared>) {
    let mut sig = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot watch SIGCHLD: {e}");
            return;
        }
    };
    loop {
        let gate = shared.trace_gate.lock().await;
        loop {
            match roam_sys::spawn::wait_any_nohang() {
                Ok(Some(ev)) => {
                    let pid = event_pid(&ev);
                    let final_event =
                        matches!(ev, WaitEvent::Exited { .. } | WaitEvent::Signaled { .. });
                    // The spawner holds the table while a child starts,
                    // and that start may need this thread: an exec
                    // through the home's files waits for FUSE replies,
                    // which come over the link this thread serves. Wait
                    // for the table without blocking the thread.
                    while !deliver(&shared.pids, pid, &ev, final_event) {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("waitpid: {e}");
                    break;
                }
            }
        }
        drop(gate);
        if sig.recv().await.is_none() {
            return;
        }
    }
}

/// Hands `ev` to the session of `pid`, if the pid table is free: false
/// when the spawner holds it (see the reaper).
fn deliver(
    pids: &Mutex<HashMap<u32, mpsc::UnboundedSender<SessionCmd>>>,
    pid: u32,
    ev: &WaitEvent,
    final_event: bool,
) -> bool {
    let mut table = match pids.try_lock() {
        Ok(t) => t,
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return false,
    };
    if let Some(tx) = table.get(&pid) {
        let _ = tx.send(SessionCmd::Wait(*ev));
    }
    if final_event {
        table.remove(&pid);
    }
    true
}

fn event_pid(ev: &WaitEvent) -> u32 {
    match *ev {
        WaitEvent::Exited { pid, .. }
        | WaitEvent::Signaled { pid, .. }
        | WaitEvent::Stopped { pid, .. }
        | WaitEvent::Continued { pid } => pid,
    }
}

/// Keeps the link to the home up, reconnecting after failures; kills the
/// sessions when the home has been away longer than the grace.
async fn link_manager(shared: Arc<NodeShared>, identity: Identity) {
    let grace = Duration::from_millis(shared.cfg.orphan_grace_ms);
    let mut lost_since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        // A stop while connected is handled inside (the node says Leave).
        let attempt = connect_once(&shared, &identity).await;
        if matches!(attempt, Err(LinkError::Leaving)) {
            return;
        }
        match attempt {
            Ok(()) => {
                backoff = Duration::from_millis(100);
                lost_since = Some(Instant::now());
            }
            Err(e) => {
                if lost_since.is_none() {
                    lost_since = Some(Instant::now());
                }
                tracing::warn!("link to home {}: {e}", shared.cfg.home);
            }
        }
        *shared.link.lock().unwrap() = None;
        if let Some(since) = lost_since {
            if since.elapsed() >= grace {
                let ids: Vec<SessionId> = shared.sessions.lock().unwrap().keys().copied().collect();
                if !ids.is_empty() {
                    tracing::warn!(
                        "home away for {:?}: killing {} orphaned processes",
                        since.elapsed(),
                        ids.len()
                    );
                    for id in ids {
                        shared.to_session(id, SessionCmd::Forget);
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = crate::daemon::stopping() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Errors of one link attempt.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Framed(#[from] roam_net::framed::FramedError),
    #[error("home refused us: {0}")]
    Refused(String),
    #[error("home closed the link during the handshake")]
    Closed,
    #[error("home silent for {0:?}: link considered dead")]
    Silent(Duration),
    #[error("leaving the cluster")]
    Leaving,
    #[error("cut by an injected fault ({})", crate::fault::ENV)]
    Cut,
}

async fn connect_once(shared: &Arc<NodeShared>, identity: &Identity) -> Result<(), LinkError> {
    let cfg = &shared.cfg;
    let stream = tls::connect(identity, cfg.home, &cfg.home_name, HANDSHAKE_TIMEOUT).await?;
    let (r, w) = tokio::io::split(stream);
    let mut reader = FrameReader::new(r);
    let mut writer = roam_net::framed::FrameWriter::new(w);
    let hello = LinkHello {
        name: shared.name.clone(),
        arch: shared.runners.arch_info(),
        sessions: shared.reports(),
        warnings: shared.runners.warnings(),
        peer_port: shared.peer_port,
    };
    writer.write_hello("link hello", &hello).await?;
    let reply: LinkHelloReply =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.read_hello("link hello reply"))
            .await
            .map_err(|_| LinkError::Silent(HANDSHAKE_TIMEOUT))??
            .ok_or(LinkError::Closed)?;
    let forget = match reply {
        LinkHelloReply::Welcome {
            home_name,
            forget,
            files_epoch,
            ..
        } => {
            tracing::info!("joined home {home_name} at {}", cfg.home);
            shared.fs.set_epoch(files_epoch);
            bind_home_files(shared, files_epoch).await;
            forget
        }
        LinkHelloReply::Refused { reason } => return Err(LinkError::Refused(reason)),
    };
    for id in forget {
        shared.to_session(id, SessionCmd::Forget);
    }
    shared
        .joins
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let (tx, rx) = FrameTx::new();
    let w = writer.into_inner();
    let writer_task = tokio::spawn(writer_loop(w, rx));
    *shared.link.lock().unwrap() = Some(tx.clone());
    shared.fs.set_link(Some(tx.clone()));
    shared.tracer.warm(shared.root());

    let mut cpu = load::CpuMeter::new(&shared.cfg);
    let cpus = load::cpus(&shared.cfg);
    // The first sample needs a full interval behind it to mean anything.
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + shared.heartbeat,
        shared.heartbeat,
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let result = loop {
        tokio::select! {
            frame = reader.read_frame() => {
                let frame = match frame {
                    Ok(Some(f)) => f,
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e.into()),
                };
                last_heard = Instant::now();
                let msg = match roam_proto::link::decode_link_msg("link", frame) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!("dropping malformed message from home: {e}");
                        continue;
                    }
                };
                handle_link_msg(shared, &tx, msg);
            }
            _ = crate::daemon::stopping() => {
                tx.send("link", &LinkMsg::Leave { reason: "its daemon is stopping".into() });
                // Let the writer send it before the link goes.
                tokio::time::sleep(Duration::from_millis(100)).await;
                break Err(LinkError::Leaving);
            }
            _ = shared.cut.notified() => break Err(LinkError::Cut),
            _ = tick.tick() => {
                if last_heard.elapsed() > shared.timeout {
                    break Err(LinkError::Silent(last_heard.elapsed()));
                }
                let load = NodeLoad {
                    cpu_pct: cpu.sample(),
                    mem_pct: roam_sys::procfs::mem_pct().unwrap_or(0.0),
                    procs: shared.sessions.lock().unwrap().len() as u32,
                    cpus,
                };
                tx.send("link", &LinkMsg::Heartbeat { load });
            }
        }
    };
    *shared.link.lock().unwrap() = None;
    shared.fs.set_link(None);
    writer_task.abort();
    result
}

/// The verdict on a migration's new copy, held until the move is
/// decided: `PathUp` lets it run, `Forget` kills it. False if `msg` is not
/// about a held copy.
fn held_verdict(shared: &Arc<NodeShared>, msg: &LinkMsg) -> bool {
    let (LinkMsg::PathUp { session } | LinkMsg::Forget { session }) = *msg else {
        return false;
    };
    let Some(pid) = shared.held_pid(session) else {
        return false;
    };
    let run = matches!(msg, LinkMsg::PathUp { .. });
    let (shared, msg) = (shared.clone(), msg.clone());
    tokio::spawn(async move {
        if let Err(e) = ckpt::release_held(&shared, pid, !run).await {
            tracing::warn!("session {session}: cannot release pid {pid}: {e}");
            let _ = roam_sys::signal::kill(pid as i32, libc::SIGKILL);
        }
        if let Some(h) = shared.sessions.lock().unwrap().get_mut(&session) {
            h.held = false;
        }
        tracing::info!(
            "session {session}: the move is {}",
            if run {
                "decided: it runs here"
            } else {
                "called off: killed"
            }
        );
        shared.to_session(
            session,
            if run {
                SessionCmd::Link(msg)
            } else {
                SessionCmd::Forget
            },
        );
    });
    true
}

fn handle_link_msg(shared: &Arc<NodeShared>, tx: &FrameTx, msg: LinkMsg) {
    if held_verdict(shared, &msg) {
        return;
    }
    match msg {
        LinkMsg::Ping { seq } => {
            tx.send("link", &LinkMsg::Pong { seq });
        }
        LinkMsg::Pong { .. } | LinkMsg::Heartbeat { .. } => {}
        LinkMsg::Spawn {
            req,
            session,
            home_pid,
            cred,
            spec,
        } => {
            let shared = shared.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let uid = cred.uid;
                let result = spawn_session(&shared, session, home_pid, cred, *spec).await;
                let pid = result.as_ref().ok().copied();
                tx.send("link", &LinkMsg::Spawned { req, result });
                // Logged once the answer is on its way.
                if let Some(pid) = pid {
                    tracing::info!(
                        "session {session}: pid {pid} uid {uid} started for home pid {home_pid}"
                    );
                }
            });
        }
        LinkMsg::ListProcs { req } => {
            tx.send(
                "link",
                &LinkMsg::ProcList {
                    req,
                    procs: list_procs(shared),
                },
            );
        }
        LinkMsg::Leave { reason } => tracing::info!("home says: {reason}"),
        LinkMsg::FsReply { req, reply } => shared.fs.complete(req, *reply),
        LinkMsg::KillReply { req, result } => shared.identity.complete(req, result),
        LinkMsg::FsNotice(n) => {
            if let Some(Some(f)) = shared.files.as_ref().map(|f| f.lock().unwrap()).as_deref() {
                f.mount.notice(n);
            }
        }
        LinkMsg::Data { session, .. }
        | LinkMsg::Ack { session, .. }
        | LinkMsg::Eof { session, .. }
        | LinkMsg::Resume { session, .. }
        | LinkMsg::PathUp { session }
        | LinkMsg::Signal { session, .. }
        | LinkMsg::Resize { session, .. }
        | LinkMsg::Done { session } => shared.to_session(session, SessionCmd::Link(msg)),
        LinkMsg::Forget { session } => shared.to_session(session, SessionCmd::Forget),
        LinkMsg::Checkpoint {
            req,
            session,
            leave_running,
        } => {
            let rx = shared.open_transfer(req);
            tokio::spawn(ckpt::checkpoint(
                shared.clone(),
                req,
                session,
                leave_running,
                rx,
            ));
        }
        // A migration's restore, after its pre-copy: to the task that
        // holds the pages.
        LinkMsg::Restore { req, .. } if shared.transfers.lock().unwrap().contains_key(&req) => {
            if let Some(t) = shared.transfers.lock().unwrap().get(&req) {
                let _ = t.send(msg);
            }
        }
        LinkMsg::PreCopy { req, .. } => shared.migration_in(req, msg),
        LinkMsg::Restore { req, ref spec, .. } if spec.ahead => shared.migration_in(req, msg),
        LinkMsg::Expect { req, from, pid } => {
            shared.expected.lock().unwrap().insert(req, from);
            shared.opened.notify_waiters();
            // Its stub, made while the old node captures the process.
            shared.tracer.prespawn(req, pid, shared.root());
        }
        LinkMsg::Restore {
            req,
            session,
            home_pid,
            cred,
            spec,
        } => {
            let rx = shared.open_transfer(req);
            let shared = shared.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let result =
                    ckpt::restore(&shared, req, session, home_pid, cred, *spec, (rx, None)).await;
                shared.end_transfer(req);
                tx.send("link", &LinkMsg::Spawned { req, result });
            });
        }
        LinkMsg::MigrateOut {
            req,
            session,
            mode,
            direct,
        } => {
            let rx = shared.open_transfer(req);
            tokio::spawn(ckpt::migrate_out(
                shared.clone(),
                req,
                session,
                mode,
                direct,
                rx,
            ));
        }
        LinkMsg::Stage { req, hash, len } => {
            let rx = shared.open_transfer(req);
            let shared = shared.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let result = stage::receive(&shared, req, hash, len, rx).await;
                shared.end_transfer(req);
                tx.send("link", &LinkMsg::Staged { req, result });
            });
        }
        LinkMsg::Image { req, .. }
        | LinkMsg::ImageAck { req, .. }
        | LinkMsg::ImageEnd { req, .. }
        | LinkMsg::MigrateEnd { req, .. }
        | LinkMsg::ImageSaved { req, .. } => {
            if let Some(t) = shared.transfers.lock().unwrap().get(&req) {
                let _ = t.send(msg);
            }
        }
        other => tracing::warn!("unexpected message from home: {other:?}"),
    }
}

fn list_procs(shared: &NodeShared) -> Vec<ProcInfo> {
    let sessions = shared.sessions.lock().unwrap();
    sessions
        .values()
        .map(|h| {
            let st = roam_sys::procfs::proc_stat(h.report.node_pid).ok();
            ProcInfo {
                home_pid: h.report.home_pid,
                session: h.report.session,
                node: shared.name.clone(),
                node_pid: h.report.node_pid,
                uid: h.report.uid,
                state: st.as_ref().map_or('Z', |s| s.state),
                cpu_ms: st.as_ref().map_or(0, |s| s.cpu_ms),
                rss_kib: st.as_ref().map_or(0, |s| s.rss_kib),
                command: h.report.command.clone(),
                elapsed_s: st
                    .as_ref()
                    .map_or(h.started.elapsed().as_secs(), |s| s.elapsed_s),
                moves: 0,
            }
        })
        .collect()
}

/// The descriptors of a session on our side.
struct Ends {
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    pty: Option<OwnedFd>,
}

/// The process's stdio (`tty`: which are on a terminal; `null`: which are
/// /dev/null at home), and the ends the session keeps.
fn prepare_stdio(
    tty: Option<&roam_proto::types::TtySpec>,
    null: [bool; 3],
) -> std::io::Result<(Ends, [OwnedFd; 3], Option<usize>)> {
    let mut child: Vec<OwnedFd> = Vec::with_capacity(3);
    let mut ends = Ends {
        stdin: None,
        stdout: None,
        stderr: None,
        pty: None,
    };
    let mut slave: Option<OwnedFd> = None;
    let mut ctty = None;
    if let Some(t) = tty {
        let (master, s) = roam_sys::pty::open_pty(t.rows, t.cols)?;
        if let Err(e) = roam_sys::pty::apply_modes(s.as_fd(), &t.modes) {
            tracing::debug!("terminal modes not applied: {e}");
        }
        ends.pty = Some(master);
        slave = Some(s);
    }
    let flags = [
        tty.is_some_and(|t| t.stdin),
        tty.is_some_and(|t| t.stdout),
        tty.is_some_and(|t| t.stderr),
    ];
    for (i, on_tty) in flags.into_iter().enumerate() {
        if on_tty {
            let s = slave.as_ref().expect("pty opened when any flag is set");
            child.push(s.try_clone()?);
            ctty.get_or_insert(i);
            continue;
        }
        if null[i] {
            // /dev/null at home: ours does the same, with nothing to carry.
            child.push(roam_sys::spawn::open_dev_null()?);
            continue;
        }
        let (r, w) = roam_sys::spawn::pipe()?;
        if i == 0 {
            roam_sys::spawn::set_pipe_size(w.as_fd(), 1 << 20)?;
            child.push(r);
            ends.stdin = Some(w);
        } else {
            roam_sys::spawn::set_pipe_size(r.as_fd(), 1 << 20)?;
            child.push(w);
            if i == 1 {
                ends.stdout = Some(r);
            } else {
                ends.stderr = Some(r);
            }
        }
    }
    if ctty.is_none() {
        if let Some(s) = slave {
            // A terminal was asked for but no stdio is on it: still make it
            // the controlling terminal through stdin's slot? No: keep pipes.
            drop(s);
        }
    }
    let child: [OwnedFd; 3] = child
        .try_into()
        .map_err(|_| std::io::Error::other("internal: three stdio descriptors"))?;
    Ok((ends, child, ctty))
}

async fn spawn_session(
    shared: &Arc<NodeShared>,
    session: SessionId,
    home_pid: u32,
    cred: Cred,
    spec: SpawnSpec,
) -> Result<u32, WireError> {
    if shared.sessions.lock().unwrap().contains_key(&session) {
        return Err(WireError::new(
            ErrorCode::BadRequest,
            "session already exists",
        ));
    }
    shared.fs.note_user(&cred);
    if let Some(files) = &shared.files {
        if files.lock().unwrap().is_none() {
            return Err(WireError::new(
                ErrorCode::ExecFailed,
                format!(
                    "node {}: the home's files are not mounted (see its log)",
                    shared.name
                ),
            ));
        }
    }
    let argv: Vec<Vec<u8>> = spec.argv.iter().map(|a| a.to_vec()).collect();
    // A staged program is executed through the daemon's descriptor of
    // it, as /proc/self/fd/N: the cache is not in the process's tree.
    let staged = match &spec.staged {
        Some(hash) => {
            let file = shared
                .stage
                .open(hash)
                .map_err(|e| {
                    WireError::new(
                        ErrorCode::Internal,
                        format!("node {}: staged file {hash}: {e}", shared.name),
                    )
                })?
                .ok_or_else(|| {
                    WireError::new(
                        ErrorCode::NotStaged,
                        format!("node {} has no staged file {hash}", shared.name),
                    )
                })?;
            let path = format!("/proc/self/fd/{}", file.as_raw_fd()).into_bytes();
            Some((file, path))
        }
        None => None,
    };
    let (program, script): (&[u8], Vec<Vec<u8>>) = match &staged {
        Some((_, path)) => (path, Vec::new()),
        None => (
            &spec.program,
            spec.script.iter().map(|a| a.to_vec()).collect(),
        ),
    };
    let exec = shared
        .runners
        .plan(spec.arch.as_deref(), program, &argv, &script)
        .map_err(|e| WireError::new(ErrorCode::ExecFailed, format!("node {} {e}", shared.name)))?;
    // Through a runner, which opens the file after the exec: kept open.
    let exec_file = staged.map(|(f, path)| (f, exec.program != path));
    let (mut ends, child_fds, ctty) = prepare_stdio(spec.tty.as_ref(), spec.null).map_err(|e| {
        WireError::new(
            ErrorCode::Internal,
            format!("cannot set up stdio on node {}: {e}", shared.name),
        )
    })?;
    let mut env: Vec<Vec<u8>> = spec.env.iter().map(|e| e.to_vec()).collect();
    if let Some((rank, size)) = spec.rank {
        env.retain(|e| !e.starts_with(b"ROAM_RANK=") && !e.starts_with(b"ROAM_SIZE="));
        env.push(format!("ROAM_RANK={rank}").into_bytes());
        env.push(format!("ROAM_SIZE={size}").into_bytes());
    }
    env.retain(|e| !e.starts_with(b"ROAM_NODE="));
    env.push(format!("ROAM_NODE={}", shared.name).into_bytes());
    let (tx, rx) = mpsc::unbounded_channel();
    let (reply_tx, reply_rx) = oneshot::channel();
    let job = SpawnJob {
        req: OwnedSpawn {
            program: exec.program,
            argv: exec.argv,
            env,
            cwd: spec.cwd.to_vec(),
            umask: spec.umask,
            cred: cred.clone(),
            stdio: child_fds,
            ctty,
            root: shared.root(),
            exec_file,
            supervision: (shared.cfg.identity == crate::config::IdentityMode::Home || spec.confine)
                .then(|| {
                    shared.supervision(
                        session,
                        home_pid,
                        spec.home_ppid,
                        &spec.home_host,
                        spec.confine,
                    )
                }),
        },
        tx: tx.clone(),
        reply: reply_tx,
    };
    let result = if job.req.ctty.is_none() && job.req.root.is_none() {
        // Without a terminal the child is a CLONE_VFORK child that borrows
        // our memory until its exec, a fraction of a millisecond: start it
        // from this (long-lived) thread rather than wake the spawner and
        // be woken back, which costs more than the exec itself. Not with
        // the home's files as its root: its exec reads them through our
        // FUSE client, whose calls need this thread (the link).
        Ok(spawn_owned(&shared.pids, &job.req, &job.tx, None))
    } else {
        shared
            .spawner
            .send(SpawnerMsg::Spawn(Box::new(job)))
            .map_err(|_| WireError::new(ErrorCode::Internal, "spawner thread is gone"))?;
        reply_rx.await
    };
    let pid = match result {
        Ok(Ok(pid)) => pid,
        Ok(Err(e)) => {
            return Err(WireError::new(
                ErrorCode::ExecFailed,
                format!("{e} (on node {})", shared.name),
            ))
        }
        Err(_) => {
            return Err(WireError::new(
                ErrorCode::Internal,
                "spawner thread is gone",
            ))
        }
    };
    let command = spec
        .argv
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let report = SessionReport {
        session,
        home_pid,
        node_pid: pid,
        uid: cred.uid,
        command,
    };
    start_session(shared, report, &mut ends, spec.tty.as_ref(), None, tx, rx)?;
    if let Some(h) = shared.sessions.lock().unwrap().get_mut(&session) {
        h.confined = spec.confine;
    }
    Ok(pid)
}

/// Registers the session of a started process and starts its task.
fn start_session(
    shared: &Arc<NodeShared>,
    report: SessionReport,
    ends: &mut Ends,
    tty: Option<&roam_proto::types::TtySpec>,
    handover: Option<(Handover, Vec<u8>)>,
    tx: mpsc::UnboundedSender<SessionCmd>,
    rx: mpsc::UnboundedReceiver<SessionCmd>,
) -> Result<(), WireError> {
    let (session, pid) = (report.session, report.node_pid);
    shared.sessions.lock().unwrap().insert(
        session,
        SessionHandle {
            tx,
            report,
            started: Instant::now(),
            confined: false,
            held: false,
        },
    );
    let mut task = SessionTask::new(shared.clone(), session, pid, ends, tty)
        .map_err(|e| WireError::new(ErrorCode::Internal, format!("session set-up: {e}")))?;
    if let Some((h, unread)) = handover {
        task.go_on(h, unread);
    }
    tokio::spawn(task.run(rx));
    Ok(())
}

/// One remote process's supervision on the node.
struct SessionTask {
    shared: Arc<NodeShared>,
    id: SessionId,
    pid: u32,
    stdin: Option<AsyncFd<File>>,
    /// Sources of stdout (0) and stderr (1).
    outs: [Option<AsyncFd<File>>; 2],
    pty: Option<OwnedFd>,
    out: [OutStream; 2],
    inn: InStream,
    exit: Option<ExitStatus>,
    exited_at: Option<Instant>,
    exit_sent: bool,
    stopped: Option<WireSignal>,
    buf: Vec<u8>,
    /// While its process is frozen for a migration: the input taken back
    /// from its pipe. The streams stand still meanwhile.
    frozen: Option<Vec<u8>>,
    /// The inode of the process's stdin pipe, if it is one.
    stdin_pipe: Option<u64>,
    /// Which of stdin, stdout and stderr are on the terminal (`pty`).
    on_tty: [bool; 3],
}

impl SessionTask {
    fn new(
        shared: Arc<NodeShared>,
        id: SessionId,
        pid: u32,
        ends: &mut Ends,
        tty: Option<&roam_proto::types::TtySpec>,
    ) -> std::io::Result<SessionTask> {
        let wrap = |fd: OwnedFd| -> std::io::Result<AsyncFd<File>> {
            roam_sys::spawn::set_nonblocking(fd.as_fd())?;
            roam_sys::aio::async_file(fd)
        };
        let stdin_pipe = ends
            .stdin
            .as_ref()
            .and_then(|fd| roam_sys::files::fstat(fd.as_fd()).ok())
            .map(|st| st.st_ino);
        let mut stdin = ends.stdin.take().map(wrap).transpose()?;
        let mut stdout = ends.stdout.take().map(wrap).transpose()?;
        let mut stderr = ends.stderr.take().map(wrap).transpose()?;
        let pty = ends.pty.take();
        if let (Some(master), Some(t)) = (pty.as_ref(), tty) {
            if t.stdin {
                stdin = Some(wrap(master.try_clone()?)?);
            }
            if t.stdout {
                stdout = Some(wrap(master.try_clone()?)?);
            } else if t.stderr {
                stderr = Some(wrap(master.try_clone()?)?);
            }
        }
        let mut out: [OutStream; 2] = Default::default();
        // A stream with no source of its own (/dev/null at home, or stderr
        // merged into the terminal) ends at once, empty; the proxy needs no
        // message to know (the exit gives each stream's end).
        if stdout.is_none() {
            out[0].close_unsent();
        }
        if stderr.is_none() {
            out[1].close_unsent();
        }
        Ok(SessionTask {
            shared,
            id,
            pid,
            stdin,
            outs: [stdout, stderr],
            pty,
            out,
            inn: InStream::default(),
            exit: None,
            exited_at: None,
            exit_sent: false,
            stopped: None,
            buf: vec![0u8; roam_proto::MAX_DATA_CHUNK],
            frozen: None,
            stdin_pipe,
            on_tty: tty.map_or([false; 3], |t| [t.stdin, t.stdout, t.stderr]),
        })
    }

    fn send(&self, msg: LinkMsg) {
        self.shared.send(&msg);
    }

    /// Sends whatever can be sent now: data, ends of streams, the exit.
    fn pump(&mut self) {
        for (i, chan) in [(0, Chan::Stdout), (1, Chan::Stderr)] {
            // Framed from the stream's buffer: no copy into a message first.
            while let Some((offset, parts)) = self.out[i].next_parts() {
                match roam_proto::link::encode_data_frame(self.id, chan, offset, parts) {
                    Ok(frame) => self.shared.send_frame("Data", frame),
                    Err(e) => tracing::error!("session {}: cannot frame its output: {e}", self.id),
                }
            }
            if let Some(offset) = self.out[i].eof_to_send() {
                self.send(LinkMsg::Eof {
                    session: self.id,
                    chan,
                    offset,
                });
            }
        }
        if let Some(status) = self.exit {
            if !self.exit_sent && self.out[0].at_eof() && self.out[1].at_eof() {
                self.exit_sent = true;
                self.send(LinkMsg::Exited {
                    session: self.id,
                    status,
                    stdout_end: self.out[0].end(),
                    stderr_end: self.out[1].end(),
                });
            }
        }
        if let Some(offset) = self.inn.ack_due() {
            self.send(LinkMsg::Ack {
                session: self.id,
                chan: Chan::Stdin,
                offset,
            });
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<SessionCmd>) {
        loop {
            self.pump();
            let moving = self.frozen.is_some();
            let can_read = [
                !moving && self.outs[0].is_some() && self.out[0].room() > 0,
                !moving && self.outs[1].is_some() && self.out[1].room() > 0,
            ];
            let want_write = !moving && self.stdin.is_some() && self.inn.pending() > 0;
            let linger = self
                .exited_at
                .map(|t| tokio::time::Instant::from_std(t + EXIT_LINGER));
            let outs = &self.outs;
            tokio::select! {
                cmd = rx.recv() => {
                    match cmd {
                        Some(cmd) => {
                            if self.handle(cmd) {
                                break;
                            }
                        }
                        None => break,
                    }
                }
                r = readable(outs[0].as_ref()), if can_read[0] => {
                    let room = self.out[0].room().min(self.buf.len());
                    let got = read_ready(r, &mut self.buf[..room]);
                    self.took(0, got);
                }
                r = readable(outs[1].as_ref()), if can_read[1] => {
                    let room = self.out[1].room().min(self.buf.len());
                    let got = read_ready(r, &mut self.buf[..room]);
                    self.took(1, got);
                }
                r = writable(self.stdin.as_ref()), if want_write => {
                    let broken = match r {
                        Ok(mut guard) => write_ready(&mut guard, &mut self.inn),
                        Err(_) => true,
                    };
                    if broken {
                        self.stdin_broken();
                    } else if self.inn.finished() && self.pty.is_none() {
                        self.stdin = None;
                    }
                }
                _ = sleep_until(linger), if linger.is_some() && (self.outs[0].is_some() || self.outs[1].is_some()) => {
                    // Output held open by a child left behind: stop waiting.
                    for i in 0..2 {
                        if self.outs[i].take().is_some() {
                            self.out[i].set_eof();
                        }
                    }
                }
            }
        }
        let idle = {
            let mut sessions = self.shared.sessions.lock().unwrap();
            sessions.remove(&self.id);
            sessions.is_empty()
        };
        tracing::info!("session {}: finished", self.id);
        if idle {
            // The stream buffers of a burst of sessions go back to the
            // system: an idle compute node stays small.
            drop(self);
            roam_sys::mem::trim();
        }
    }

    /// Applies the result of a read of stdout (0) or stderr (1).
    fn took(&mut self, i: usize, got: Option<usize>) {
        match got {
            Some(0) => {}
            Some(n) => self.out[i].push(&self.buf[..n]),
            None => {
                self.outs[i] = None;
                self.out[i].set_eof();
            }
        }
    }

    /// Writes pending stdin bytes until done or the pipe is full (then the
    /// select loop waits for the pipe to be writable).
    fn write_stdin(&mut self) {
        let Some(fd) = self.stdin.as_ref().filter(|_| self.frozen.is_none()) else {
            return;
        };
        loop {
            let front = self.inn.front();
            if front.is_empty() {
                break;
            }
            match fd.get_ref().write(front) {
                Ok(n) => self.inn.consumed(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.stdin_broken();
                    return;
                }
            }
        }
        if self.inn.finished() && self.pty.is_none() {
            self.stdin = None;
        }
    }

    /// The process closed its stdin (EPIPE): discard what is pending and
    /// whatever comes, counting it delivered so the proxy is not held up.
    fn stdin_broken(&mut self) {
        let n = self.inn.pending();
        self.inn.consumed(n);
        self.stdin = None;
    }

    /// Handles one command; true when the session is over.
    fn handle(&mut self, cmd: SessionCmd) -> bool {
        match cmd {
            SessionCmd::Wait(ev) => match ev {
                WaitEvent::Exited { code, .. } => self.set_exit(ExitStatus::Exited(code)),
                WaitEvent::Signaled {
                    signal,
                    core_dumped,
                    ..
                } => self.set_exit(ExitStatus::Signaled {
                    signal: roam_sys::signal::to_wire(signal).unwrap_or(WireSignal(9)),
                    core_dumped,
                }),
                WaitEvent::Stopped { signal, .. } => {
                    let s = roam_sys::signal::to_wire(signal).unwrap_or(WireSignal(19));
                    self.stopped = Some(s);
                    self.send(LinkMsg::Stopped {
                        session: self.id,
                        signal: s,
                    });
                }
                WaitEvent::Continued { .. } => {
                    self.stopped = None;
                    self.send(LinkMsg::Continued { session: self.id });
                }
            },
            SessionCmd::Forget => {
                self.kill_all();
                return true;
            }
            SessionCmd::End(reason) => {
                if self.exit.is_none() {
                    tracing::warn!("session {}: ending pid {}: {reason}", self.id, self.pid);
                }
                self.kill_all();
            }
            SessionCmd::Lost(why) => {
                if self.exit.is_none() {
                    tracing::warn!(
                        "session {}: ending pid {}: {}",
                        self.id,
                        self.pid,
                        why.trim_end()
                    );
                    // On the terminal if stderr is there, else on stderr.
                    let to = usize::from(!self.on_tty[2]);
                    if !self.out[to].at_eof() {
                        self.out[to].push(why.as_bytes());
                    }
                }
                self.kill_all();
            }
            SessionCmd::Link(msg) => return self.handle_link(msg),
            SessionCmd::Handover(reply) => {
                let _ = reply.send(self.hand_over());
            }
            SessionCmd::StayHere(reply) => {
                self.stay_here();
                let _ = reply.send(());
            }
            SessionCmd::MovedAway => {
                tracing::info!("session {}: moved to another node", self.id);
                return true;
            }
        }
        false
    }

    /// See [`SessionCmd::Handover`]. The process is frozen: whatever is in
    /// its pipes now is all there will be.
    fn hand_over(&mut self) -> Result<(Handover, Vec<u8>), String> {
        if self.exit.is_some() {
            return Err("the process has ended".into());
        }
        if self.frozen.is_some() {
            return Err("the process is migrating already".into());
        }
        for i in 0..2 {
            while let Some(fd) = self.outs[i].as_ref() {
                match fd.get_ref().read(&mut self.buf) {
                    Ok(0) => {
                        self.outs[i] = None;
                        self.out[i].set_eof();
                    }
                    Ok(n) => self.out[i].push(&self.buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        self.outs[i] = None;
                        self.out[i].set_eof();
                    }
                }
            }
        }
        // Read before the input is taken back: nothing to undo if it fails.
        let tty = self
            .pty
            .as_ref()
            .map(|master| self.tty_state(master.as_fd()))
            .transpose()
            .map_err(|e| format!("cannot read its terminal's state: {e}"))?;
        let unread = match self.tty_input() {
            // What the line discipline holds, the line being typed too.
            Some(master) => roam_sys::pty::take_input(master.as_fd())
                .map_err(|e| format!("cannot take back the terminal's unread input: {e}"))?,
            None => self
                .stdin_link()
                .map(|link| roam_sys::spawn::take_back_pipe(&link))
                .transpose()
                .map_err(|e| format!("cannot take back the unread input: {e}"))?
                .unwrap_or_default(),
        };
        self.frozen = Some(unread.clone());
        if unread.len() as u64 > MAX_UNREAD {
            self.stay_here();
            return Err(format!(
                "{} bytes of input wait in its pipe (at most {MAX_UNREAD} move)",
                unread.len()
            ));
        }
        self.pump();
        let h = Handover {
            stdin_delivered: self.inn.delivered(),
            stdin_unread: unread.len() as u64,
            out_end: [self.out[0].end(), self.out[1].end()],
            out_closed: [self.out[0].at_eof(), self.out[1].at_eof()],
            tty,
        };
        Ok((h, unread))
    }

    /// The terminal, if the process's stdin is on it.
    fn tty_input(&self) -> Option<&OwnedFd> {
        self.pty.as_ref().filter(|_| self.on_tty[0])
    }

    /// Puts `unread` back into the terminal's line discipline, if the
    /// process's stdin is on one (see [`roam_sys::pty::put_input`]); false
    /// if it is not.
    fn refill_terminal(&self, unread: &[u8]) -> bool {
        let Some(master) = self.tty_input() else {
            return false;
        };
        if let Err(e) = roam_sys::pty::put_input(master.as_fd(), unread) {
            tracing::warn!(
                "session {}: {} bytes of terminal input lost: {e}",
                self.id,
                unread.len()
            );
        }
        true
    }

    /// The terminal as the program has it now, for its next node.
    fn tty_state(
        &self,
        master: std::os::fd::BorrowedFd<'_>,
    ) -> std::io::Result<roam_proto::types::TtySpec> {
        let (rows, cols) = roam_sys::pty::get_winsize(master).unwrap_or((24, 80));
        let modes = roam_sys::pty::encode_modes(roam_sys::pty::peer(master)?.as_fd())?;
        let [stdin, stdout, stderr] = self.on_tty;
        Ok(roam_proto::types::TtySpec {
            stdin,
            stdout,
            stderr,
            rows,
            cols,
            modes,
        })
    }

    /// A /proc link to the process's stdin pipe: our end while we hold it,
    /// else the process's descriptor on it (we closed ours at its end of
    /// file; what it has not read yet is still in there).
    fn stdin_link(&self) -> Option<std::path::PathBuf> {
        use std::os::fd::AsRawFd;
        if let Some(fd) = self.stdin.as_ref() {
            return Some(format!("/proc/self/fd/{}", fd.get_ref().as_raw_fd()).into());
        }
        let pipe = format!("pipe:[{}]", self.stdin_pipe?);
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| std::fs::read_link(p).is_ok_and(|t| t.as_os_str() == pipe.as_str()))
    }

    /// See [`SessionCmd::StayHere`].
    fn stay_here(&mut self) {
        let Some(unread) = self.frozen.take() else {
            return;
        };
        if unread.is_empty() {
            self.write_stdin();
            return;
        }
        if self.refill_terminal(&unread) {
            self.write_stdin();
            return;
        }
        // Our end, or (closed at the end of input) the pipe opened again.
        let reopened = match self.stdin.as_ref() {
            Some(_) => None,
            None => self.stdin_link().and_then(|link| {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                    .open(link)
                    .ok()
            }),
        };
        let writer = reopened
            .as_ref()
            .or_else(|| self.stdin.as_ref().map(|fd| fd.get_ref()));
        if let Some(mut fd) = writer {
            let mut left = &unread[..];
            while !left.is_empty() {
                match fd.write(left) {
                    Ok(n) => left = &left[n..],
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        // The pipe held these bytes a moment ago.
                        tracing::warn!(
                            "session {}: {} bytes of input lost putting them back: {e}",
                            self.id,
                            left.len()
                        );
                        break;
                    }
                }
            }
        }
        self.write_stdin();
    }

    /// Sets the streams where the old node left them (see [`Handover`]).
    fn go_on(&mut self, h: Handover, unread: Vec<u8>) {
        // On a terminal, the input goes back into its line discipline as
        // it was, not through it again (no second echo).
        let unread = if self.refill_terminal(&unread) {
            Vec::new()
        } else {
            unread
        };
        self.inn = InStream::resumed(h.stdin_delivered, unread);
        for i in 0..2 {
            self.out[i] = OutStream::starting_at(h.out_end[i]);
            if h.out_closed[i] {
                self.outs[i] = None;
                self.out[i].close_unsent();
            }
        }
        self.write_stdin();
    }

    fn set_exit(&mut self, status: ExitStatus) {
        self.exit = Some(status);
        self.exited_at = Some(Instant::now());
        self.stdin = None;
        tracing::info!("session {}: pid {} ended: {status:?}", self.id, self.pid);
    }

    fn kill_all(&mut self) {
        if self.exit.is_none() {
            let pid = self.pid as i32;
            let _ = roam_sys::signal::kill(-pid, libc::SIGKILL);
            let _ = roam_sys::signal::kill(pid, libc::SIGKILL);
            tracing::info!("session {}: killed pid {}", self.id, self.pid);
        }
    }

    /// The program leads a process group whose parent (roamd) is in
    /// another session: an orphaned group, for which the kernel discards
    /// TSTP, TTIN and TTOU left to their default action. Do what the
    /// default action would: stop it. (Caught, they are delivered as is.)
    fn effective_signal(&self, native: i32) -> i32 {
        let stop_kind = matches!(native, libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU);
        if stop_kind && roam_sys::procfs::signal_is_default(self.pid, native) == Some(true) {
            libc::SIGSTOP
        } else {
            native
        }
    }

    fn handle_link(&mut self, msg: LinkMsg) -> bool {
        match msg {
            LinkMsg::Data {
                chan: Chan::Stdin,
                offset,
                data,
                ..
            } => {
                if self.stdin.is_some() {
                    self.inn.accept(offset, data);
                    self.write_stdin();
                } else {
                    // Nobody reads any more: count it delivered.
                    self.inn.accept(offset, data);
                    let n = self.inn.pending();
                    self.inn.consumed(n);
                }
            }
            LinkMsg::Eof {
                chan: Chan::Stdin,
                offset,
                ..
            } => {
                self.inn.set_eof(offset);
                self.write_stdin();
            }
            LinkMsg::Ack { chan, offset, .. } => match chan {
                Chan::Stdout => self.out[0].ack(offset),
                Chan::Stderr => self.out[1].ack(offset),
                Chan::Stdin => {}
            },
            LinkMsg::PathUp { .. } => {
                self.inn.reset_ack();
                self.send(LinkMsg::Resume {
                    session: self.id,
                    delivered: [self.inn.delivered(), 0, 0],
                });
            }
            LinkMsg::Resume { delivered, .. } => {
                self.out[0].rewind(delivered[1]);
                self.out[1].rewind(delivered[2]);
                self.exit_sent = false;
                if let Some(s) = self.stopped {
                    self.send(LinkMsg::Stopped {
                        session: self.id,
                        signal: s,
                    });
                }
            }
            LinkMsg::Signal { signal, group, .. } => {
                if self.exit.is_none() {
                    if let Some(native) = roam_sys::signal::to_native(signal) {
                        let native = self.effective_signal(native);
                        let pid = self.pid as i32;
                        let target = if group { -pid } else { pid };
                        if let Err(e) = roam_sys::signal::kill(target, native) {
                            if group {
                                let _ = roam_sys::signal::kill(pid, native);
                            } else {
                                tracing::debug!("kill {target} {native}: {e}");
                            }
                        }
                    }
                }
            }
            LinkMsg::Resize { rows, cols, .. } => {
                if let Some(m) = self.pty.as_ref() {
                    let _ = roam_sys::pty::set_winsize(m.as_fd(), rows, cols);
                }
            }
            LinkMsg::Done { .. } => return true,
            other => tracing::debug!("session {}: ignoring {other:?}", self.id),
        }
        false
    }
}

/// Reads from a descriptor reported readable: `Some(n)` bytes (0 when the
/// readiness was stale), `None` at end of file or on an error (EIO on a pty
/// master once the terminal's last user is gone).
fn read_ready(
    ready: std::io::Result<tokio::io::unix::AsyncFdReadyGuard<'_, File>>,
    buf: &mut [u8],
) -> Option<usize> {
    let mut guard = ready.ok()?;
    match guard.try_io(|f| f.get_ref().read(buf)) {
        Err(_would_block) => Some(0),
        Ok(Ok(0)) => None,
        Ok(Ok(n)) => Some(n),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => Some(0),
        Ok(Err(_)) => None,
    }
}

async fn readable(
    fd: Option<&AsyncFd<File>>,
) -> std::io::Result<tokio::io::unix::AsyncFdReadyGuard<'_, File>> {
    match fd {
        Some(fd) => fd.readable().await,
        None => std::future::pending().await,
    }
}

async fn writable(
    fd: Option<&AsyncFd<File>>,
) -> std::io::Result<tokio::io::unix::AsyncFdReadyGuard<'_, File>> {
    match fd {
        Some(fd) => fd.writable().await,
        None => std::future::pending().await,
    }
}

/// Writes pending stdin bytes to a descriptor reported writable; the
/// readiness is cleared only by a write that would block. True if the
/// descriptor is broken (the process closed its stdin).
fn write_ready(
    guard: &mut tokio::io::unix::AsyncFdReadyGuard<'_, File>,
    inn: &mut InStream,
) -> bool {
    loop {
        if inn.front().is_empty() {
            return false;
        }
        match guard.try_io(|f| f.get_ref().write(inn.front())) {
            Err(_would_block) => return false,
            Ok(Ok(n)) => inn.consumed(n),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Ok(Err(_)) => return true,
        }
    }
}

async fn sleep_until(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
