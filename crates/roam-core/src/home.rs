//! The home role: membership of the nodes, placement, the cluster's process
//! table, the local socket the CLI and the proxies talk to, and the relay of
//! every session's streams between its proxy and its node.
//!
//! The home keeps no state on disk. When it restarts, nodes rejoin and report
//! the sessions they run, proxies reattach to theirs, and the table is whole
//! again; a session whose proxy does not come back within the grace is
//! killed on its node.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use roam_net::framed::{FrameReader, FrameWriter};
use roam_net::tls::{self, Identity};
use roam_proto::frame::encode_hello_version;
use roam_proto::link::{LinkHello, LinkHelloReply, LinkMsg};
use roam_proto::local::{LocalHello, LocalHelloReply, LocalMsg};
use roam_proto::types::{
    ArchInfo, Cred, ErrorCode, Mode, NodeInfo, NodeLoad, NodeState, ProcInfo, SessionId, SpawnSpec,
    WireError,
};
use roam_proto::{ProtoError, PROTOCOL_VERSION};
use tokio::net::{TcpListener, UnixListener, UnixStream};

use crate::config::Config;
use crate::placement::{self, Candidate};
use crate::wire::{writer_loop, FrameTx};

mod balance;
mod ckpt;
mod migrate;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const SPAWN_TIMEOUT: Duration = Duration::from_secs(15);
const PS_TIMEOUT: Duration = Duration::from_secs(2);
const RESERVATION_TTL: Duration = Duration::from_secs(30);

struct NodeEntry {
    number: u32,
    addr: SocketAddr,
    /// Its peer listener (its link's address, the port it said), where
    /// migrations to it go directly.
    peer: Option<SocketAddr>,
    arch: ArchInfo,
    state: NodeState,
    load: NodeLoad,
    last_heartbeat: Instant,
    joined: Instant,
    link: Option<FrameTx>,
    /// Placement leaves it out (`roam drain`), until it rejoins.
    draining: bool,
    /// Processes placed on the node since its last heartbeat: their load is
    /// not in `load` yet.
    placed_since_heartbeat: u32,
    /// Distinguishes successive links of the same node.
    link_gen: u64,
    /// Ends the link's connection: a node declared down while its
    /// connection lingers (a cut shorter than TCP's patience) must
    /// reconnect and be told what it lost, not carry on unseen.
    link_end: Arc<tokio::sync::Notify>,
}

struct HomeSession {
    node: String,
    home_pid: u32,
    node_pid: u32,
    uid: u32,
    command: String,
    proxy: Option<FrameTx>,
    /// Spawn request id while the node has not answered yet.
    spawning: Option<u64>,
    /// For a session learned from a node after a home restart: when to give
    /// up waiting for its proxy.
    adopt_deadline: Option<Instant>,
    /// The process has exited (the proxy is draining its output).
    exited: bool,
    /// The migration it is in (its request id).
    migrating: Option<u64>,
    /// Signals and resizes from its proxy held while it migrates.
    held: Vec<LinkMsg>,
    /// Times it moved to another node.
    moves: u32,
}

/// A proxy that reattached before its node rejoined.
struct WaitingProxy {
    tx: FrameTx,
    uid: u32,
    pid: u32,
    deadline: Instant,
}

struct Reservation {
    uid: u32,
    nodes: Vec<String>,
    used: Vec<bool>,
    expires: Instant,
}

#[derive(Default)]
struct State {
    nodes: HashMap<String, NodeEntry>,
    next_number: u32,
    sessions: HashMap<SessionId, HomeSession>,
    /// Sessions whose node was declared down: forgotten if it comes back.
    lost: HashSet<SessionId>,
    waiting: HashMap<SessionId, WaitingProxy>,
    reservations: HashMap<u64, Reservation>,
    /// Request ids (transfers, migrations, lists) go on from a random
    /// start: the nodes may still hold a transfer of the home before a
    /// restart, whose ids a new home must not take.
    next_req: u64,
    ps_pending: HashMap<u64, tokio::sync::mpsc::UnboundedSender<Vec<ProcInfo>>>,
    next_link_gen: u64,
    /// Each node's file server. It outlives a link (a node that comes back
    /// keeps its open files and node ids) and goes when the node is
    /// declared down.
    files: HashMap<String, NodeFiles>,
    /// Image transfers under way (checkpoints and restores), by request.
    transfers: HashMap<u64, ckpt::Transfer>,
    /// Migrations under way, by request.
    migrations: HashMap<u64, migrate::Migration>,
    /// Migrations called off while their new node may be restoring the
    /// process: the node and session of each, by request.
    called_off: HashMap<u64, (String, SessionId)>,
}

impl State {
    /// A session id not in use.
    fn new_session_id(&self) -> SessionId {
        loop {
            let id = SessionId(rand::random());
            if !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }

    /// Each node's state, by name, as words.
    fn node_states(&self) -> HashMap<String, String> {
        self.nodes
            .iter()
            .map(|(n, e)| {
                let state = if e.draining && e.state == NodeState::Up {
                    "draining".to_string()
                } else {
                    e.state.to_string()
                };
                (n.clone(), state)
            })
            .collect()
    }
}

/// A node's file server and its epoch (see `LinkHelloReply::Welcome`).
struct NodeFiles {
    server: Arc<roam_rfs::server::Server>,
    epoch: u64,
}

/// The home daemon.
pub struct Home {
    name: String,
    heartbeat: Duration,
    timeout: Duration,
    mode: Mutex<Mode>,
    state: Mutex<State>,
    /// The tree the remote file system exports (a file server per node
    /// link serves it).
    export: std::path::PathBuf,
    /// File-system calls performed at once (each on a blocking thread).
    fs_slots: Arc<tokio::sync::Semaphore>,
    /// The file systems the watch reports changes of.
    watched: roam_rfs::server::WatchedDevs,
    /// The watch on the export (none if fanotify is not available).
    watch: std::sync::OnceLock<roam_rfs::watch::Watch>,
    /// The next file server's epoch: random at start, so a restarted home
    /// never repeats one.
    next_epoch: std::sync::atomic::AtomicU64,
    /// The automatic balancer (`roam balance`). Locked after `state` when
    /// both are.
    balance: Mutex<balance::BalanceState>,
}

/// File-system calls the home performs at once, over all nodes.
const FS_CONCURRENCY: usize = 32;

impl Home {
    fn candidates(st: &State) -> Vec<Candidate> {
        let mut counts: HashMap<&str, u32> = HashMap::new();
        for s in st.sessions.values() {
            *counts.entry(s.node.as_str()).or_default() += 1;
        }
        for r in st.reservations.values() {
            for (n, used) in r.nodes.iter().zip(&r.used) {
                if !used {
                    *counts.entry(n.as_str()).or_default() += 1;
                }
            }
        }
        let mut v: Vec<Candidate> = st
            .nodes
            .iter()
            .map(|(name, n)| Candidate {
                name: name.clone(),
                number: n.number,
                up: n.state == NodeState::Up && n.link.is_some() && !n.draining,
                load: NodeLoad {
                    cpu_pct: placement::estimated_cpu(&n.load, n.placed_since_heartbeat),
                    ..n.load
                },
                procs: counts.get(name.as_str()).copied().unwrap_or(0),
                archs: n.arch.all().into_iter().map(str::to_owned).collect(),
            })
            .collect();
        v.sort_by_key(|c| c.number);
        v
    }

    fn node_infos(&self) -> Vec<NodeInfo> {
        let st = self.state.lock().unwrap();
        let mut v: Vec<NodeInfo> = st
            .nodes
            .iter()
            .map(|(name, n)| {
                let procs = st.sessions.values().filter(|s| &s.node == name).count() as u32;
                NodeInfo {
                    number: n.number,
                    name: name.clone(),
                    addr: n.addr.ip().to_string(),
                    arch: n.arch.clone(),
                    state: n.state,
                    load: NodeLoad { procs, ..n.load },
                    last_heartbeat_ms: n.last_heartbeat.elapsed().as_millis() as u64,
                    joined_ms: n.joined.elapsed().as_millis() as u64,
                }
            })
            .collect();
        v.sort_by_key(|n| n.number);
        v
    }
}

/// Runs the home role until the process is told to stop.
pub async fn run(cfg: &Config, identity: Identity) -> std::io::Result<()> {
    crate::fault::init_home()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let home_cfg = cfg
        .home
        .clone()
        .expect("config checked: a home role has a [home] section");
    let home = Arc::new(Home {
        name: cfg.name.clone(),
        heartbeat: Duration::from_millis(cfg.membership.heartbeat_ms),
        timeout: Duration::from_millis(cfg.membership.timeout_ms),
        mode: Mutex::new(home_cfg.mode),
        state: Mutex::new(State {
            next_req: rand::random::<u64>() >> 1,
            ..State::default()
        }),
        export: home_cfg.export.clone(),
        fs_slots: Arc::new(tokio::sync::Semaphore::new(FS_CONCURRENCY)),
        watched: roam_rfs::server::WatchedDevs::default(),
        watch: std::sync::OnceLock::new(),
        next_epoch: std::sync::atomic::AtomicU64::new(rand::random::<u64>() >> 1 | 1),
        balance: Mutex::new(balance::BalanceState::new(
            cfg.balance.clone(),
            Duration::from_millis(cfg.membership.heartbeat_ms),
        )),
    });
    start_watch(&home);
    let tcp = TcpListener::bind(home_cfg.listen).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {}: {e}", home_cfg.listen),
        )
    })?;
    let unix = bind_unix(&cfg.socket)?;
    tracing::info!(
        "home {} listening on {} and {}",
        cfg.name,
        home_cfg.listen,
        cfg.socket.display()
    );
    tokio::spawn(monitor(home.clone()));
    tokio::spawn(balance::run(home.clone()));
    tokio::spawn(accept_local(home.clone(), unix));
    let identity = Arc::new(identity);
    loop {
        let (sock, addr) = match tcp.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let home = home.clone();
        let identity = identity.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_node(home, &identity, sock, addr).await {
                tracing::warn!("node link from {addr}: {e}");
            }
        });
    }
}

/// Binds the local socket: any user may connect; the peer credentials say
/// who they are.
pub fn bind_unix(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let l = UnixListener::bind(path).map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot bind {}: {e}", path.display()))
    })?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(l)
}

/// Errors of a node link, for the log.
#[derive(Debug, thiserror::Error)]
enum NodeLinkError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Framed(#[from] roam_net::framed::FramedError),
    #[error("no hello within {0:?}")]
    HelloTimeout(Duration),
    #[error("refused: {0}")]
    Refused(String),
}

async fn serve_node(
    home: Arc<Home>,
    identity: &Identity,
    sock: tokio::net::TcpStream,
    addr: SocketAddr,
) -> Result<(), NodeLinkError> {
    let (stream, peer_name) = tls::accept(identity, sock, HANDSHAKE_TIMEOUT).await?;
    let (r, w) = tokio::io::split(stream);
    let mut reader = FrameReader::new(r);
    let mut writer = FrameWriter::new(w);
    let hello: Result<Option<LinkHello>, _> =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.read_hello("link hello"))
            .await
            .map_err(|_| NodeLinkError::HelloTimeout(HANDSHAKE_TIMEOUT))?;
    let hello = match hello {
        Ok(Some(h)) => h,
        Ok(None) => return Ok(()),
        Err(roam_net::framed::FramedError::Proto(ProtoError::VersionMismatch { ours, theirs })) => {
            let reason = format!(
                "protocol version mismatch: home {} speaks version {ours}, node {peer_name} speaks version {theirs}",
                home.name
            );
            let reply = LinkHelloReply::Refused {
                reason: reason.clone(),
            };
            if let Ok(frame) = encode_hello_version("link hello reply", PROTOCOL_VERSION, &reply) {
                let _ = writer.write_raw(&frame).await;
            }
            return Err(NodeLinkError::Refused(reason));
        }
        Err(e) => return Err(e.into()),
    };
    if hello.name != peer_name {
        let reason = format!(
            "node says it is '{}' but its certificate is for '{peer_name}'",
            hello.name
        );
        let _ = writer
            .write_hello(
                "link hello reply",
                &LinkHelloReply::Refused {
                    reason: reason.clone(),
                },
            )
            .await;
        return Err(NodeLinkError::Refused(reason));
    }
    let name = hello.name.clone();
    let (tx, rx) = FrameTx::new();
    let (number, forget, gen, path_up, link_end) = register_node(&home, &hello, addr, tx.clone());
    let (files, files_epoch) = match node_files(&home, &name) {
        Some((server, epoch)) => (Some(server), epoch),
        None => (None, 0),
    };
    for w in &hello.warnings {
        tracing::warn!("node {name}: {w}");
    }
    writer
        .write_hello(
            "link hello reply",
            &LinkHelloReply::Welcome {
                home_name: home.name.clone(),
                number,
                heartbeat_ms: home.heartbeat.as_millis() as u64,
                timeout_ms: home.timeout.as_millis() as u64,
                forget,
                files_epoch,
            },
        )
        .await?;
    tracing::info!(
        "node {name} (#{number}, {}) joined from {addr} with {} sessions",
        hello.arch.native,
        hello.sessions.len()
    );
    let writer_task = tokio::spawn(writer_loop(writer.into_inner(), rx));
    for (session, proxy) in path_up {
        tx.send("link", &LinkMsg::PathUp { session });
        proxy.send("local", &LocalMsg::Stream(LinkMsg::PathUp { session }));
    }
    let result = loop {
        let frame = tokio::select! {
            f = reader.read_frame() => f,
            _ = link_end.notified() => break Ok(()),
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e.into()),
        };
        if let Some(session) = roam_proto::link::data_session(&frame) {
            relay_data(&home, &name, &tx, session, &frame);
            continue;
        }
        match roam_proto::decode_body::<LinkMsg>("link", &frame) {
            Ok(LinkMsg::Fs { req, cred, op }) => {
                serve_fs(&home, &name, files.as_ref(), tx.clone(), req, cred, *op)
            }
            Ok(msg) => handle_node_msg(&home, &name, &tx, msg),
            Err(e) => tracing::warn!("node {name}: dropping malformed message: {e}"),
        }
    };
    writer_task.abort();
    let mut st = home.state.lock().unwrap();
    if let Some(n) = st.nodes.get_mut(&name) {
        if n.link_gen == gen {
            n.link = None;
            if n.state == NodeState::Up {
                n.state = NodeState::Unreachable;
            }
            tracing::warn!("node {name}: link closed");
            migrate::node_gone(&mut st, &name);
        }
    }
    result
}

type PathUps = Vec<(SessionId, FrameTx)>;

/// Records a node that (re)joined; returns its number, the sessions it must
/// forget, the link generation, the sessions whose path is up again and
/// the notice that ends the link (`declare_down`).
fn register_node(
    home: &Home,
    hello: &LinkHello,
    addr: SocketAddr,
    tx: FrameTx,
) -> (u32, Vec<SessionId>, u64, PathUps, Arc<tokio::sync::Notify>) {
    let mut st = home.state.lock().unwrap();
    st.next_link_gen += 1;
    let gen = st.next_link_gen;
    let number = match st.nodes.get(&hello.name) {
        Some(n) => n.number,
        None => {
            st.next_number += 1;
            st.next_number
        }
    };
    let now = Instant::now();
    let link_end = Arc::new(tokio::sync::Notify::new());
    st.nodes.insert(
        hello.name.clone(),
        NodeEntry {
            number,
            addr,
            peer: hello.peer_port.map(|port| SocketAddr::new(addr.ip(), port)),
            arch: hello.arch.clone(),
            state: NodeState::Up,
            load: NodeLoad::default(),
            last_heartbeat: now,
            joined: now,
            link: Some(tx),
            draining: false,
            placed_since_heartbeat: 0,
            link_gen: gen,
            link_end: link_end.clone(),
        },
    );
    let mut forget = Vec::new();
    let mut path_up = Vec::new();
    let grace = home.timeout * 3;
    for r in &hello.sessions {
        if st.lost.remove(&r.session) {
            forget.push(r.session);
            continue;
        }
        if let Some(s) = st.sessions.get_mut(&r.session) {
            if s.node != hello.name {
                forget.push(r.session);
            } else if let Some(p) = &s.proxy {
                path_up.push((r.session, p.clone()));
            }
            continue;
        }
        // Unknown: the home restarted. Adopt it; a proxy may be waiting.
        let waiting = st.waiting.remove(&r.session);
        let proxy = match waiting {
            Some(w) if w.uid == r.uid && w.pid == r.home_pid => {
                w.tx.send(
                    "local",
                    &LocalMsg::Reattached {
                        node: hello.name.clone(),
                        node_pid: r.node_pid,
                    },
                );
                path_up.push((r.session, w.tx.clone()));
                Some(w.tx)
            }
            Some(w) => {
                w.tx.send(
                    "local",
                    &LocalMsg::Error(WireError::new(
                        ErrorCode::PermissionDenied,
                        "that session is not yours",
                    )),
                );
                None
            }
            None => None,
        };
        let adopt_deadline = proxy.is_none().then(|| now + grace);
        st.sessions.insert(
            r.session,
            HomeSession {
                node: hello.name.clone(),
                home_pid: r.home_pid,
                node_pid: r.node_pid,
                uid: r.uid,
                command: r.command.clone(),
                proxy,
                spawning: None,
                adopt_deadline,
                exited: false,
                migrating: None,
                held: Vec::new(),
                moves: 0,
            },
        );
    }
    (number, forget, gen, path_up, link_end)
}

/// Any message from a node is a sign of life.
fn heard_from(st: &mut State, node: &str, tx: &FrameTx) {
    if let Some(n) = st.nodes.get_mut(node) {
        n.last_heartbeat = Instant::now();
        if n.state != NodeState::Up && n.link.as_ref().is_some_and(|l| l.same(tx)) {
            n.state = NodeState::Up;
        }
    }
}

/// A node's stream data (`LinkMsg::Data` of `session`, its frame body
/// `body`), relayed to the session's proxy as it came: not decoded and
/// encoded again, the bulk of a stream's bytes is copied once here.
fn relay_data(home: &Home, node: &str, tx: &FrameTx, session: SessionId, body: &[u8]) {
    let mut st = home.state.lock().unwrap();
    heard_from(&mut st, node, tx);
    let Some(proxy) = proxy_of(&st, node, session) else {
        return;
    };
    match roam_proto::local::stream_frame(body) {
        Ok(frame) => {
            proxy.send_frame(frame);
        }
        Err(e) => tracing::warn!("node {node}: session {session}: cannot relay its data: {e}"),
    }
}

fn handle_node_msg(home: &Arc<Home>, node: &str, tx: &FrameTx, msg: LinkMsg) {
    let mut st = home.state.lock().unwrap();
    heard_from(&mut st, node, tx);
    if migrate::owns(&st, &msg) {
        migrate::from_node(&mut st, node, msg);
        return;
    }
    match msg {
        LinkMsg::Heartbeat { load } => {
            if let Some(n) = st.nodes.get_mut(node) {
                n.load = load;
                n.placed_since_heartbeat = 0;
            }
            tx.send("link", &LinkMsg::Pong { seq: 0 });
        }
        LinkMsg::Ping { seq } => {
            tx.send("link", &LinkMsg::Pong { seq });
        }
        LinkMsg::Pong { .. } => {}
        LinkMsg::Spawned { req, result } => {
            if migrate::spawned_after_call_off(&mut st, node, req, &result) {
                return;
            }
            ckpt::restored(&mut st, req);
            let found = st
                .sessions
                .iter()
                .find(|(_, s)| s.spawning == Some(req) && s.node == node)
                .map(|(id, _)| *id);
            let Some(id) = found else {
                // The proxy went away meanwhile: kill what was started.
                return;
            };
            match result {
                Ok(pid) => {
                    let s = st.sessions.get_mut(&id).expect("found above");
                    s.spawning = None;
                    s.node_pid = pid;
                    if let Some(p) = &s.proxy {
                        p.send(
                            "local",
                            &LocalMsg::Spawned {
                                session: id,
                                node: node.to_owned(),
                                node_pid: pid,
                            },
                        );
                    }
                }
                Err(e) => {
                    let s = st.sessions.remove(&id).expect("found above");
                    if let Some(p) = &s.proxy {
                        let answer = if e.code == ErrorCode::NotStaged {
                            LocalMsg::NotStaged {
                                node: node.to_owned(),
                            }
                        } else {
                            LocalMsg::Error(e)
                        };
                        p.send("local", &answer);
                    }
                }
            }
        }
        LinkMsg::ProcList { req, procs } => {
            if let Some(c) = st.ps_pending.get(&req) {
                let _ = c.send(procs);
            }
        }
        LinkMsg::Exited { session, .. } => {
            if let Some(s) = st.sessions.get_mut(&session) {
                s.exited = true;
            }
            relay_to_proxy(&st, node, session, msg);
        }
        LinkMsg::Data { session, .. }
        | LinkMsg::Eof { session, .. }
        | LinkMsg::Ack { session, .. }
        | LinkMsg::Resume { session, .. }
        | LinkMsg::Stopped { session, .. }
        | LinkMsg::Continued { session } => relay_to_proxy(&st, node, session, msg),
        LinkMsg::Leave { reason } => declare_down(&mut st, node, &format!("it left: {reason}")),
        LinkMsg::Image { .. }
        | LinkMsg::ImageAck { .. }
        | LinkMsg::ImageEnd { .. }
        | LinkMsg::Checkpointed { .. }
        | LinkMsg::Staged { .. } => ckpt::from_node(&mut st, node, msg),
        LinkMsg::Kill {
            req,
            session,
            from_uid,
            pid,
            group,
            signal,
            value,
        } => forwarded_kill(
            &st,
            node,
            tx,
            ForwardedKill {
                req,
                session,
                from_uid,
                pid,
                group,
                signal,
                value,
            },
        ),
        other => tracing::warn!("node {node}: unexpected {other:?}"),
    }
}

fn relay_to_proxy(st: &State, node: &str, session: SessionId, msg: LinkMsg) {
    if let Some(p) = proxy_of(st, node, session) {
        p.send("local", &LocalMsg::Stream(msg));
    }
}

/// The proxy of `session`, if it runs on `node` (a node speaks only for
/// its own sessions).
fn proxy_of<'a>(st: &'a State, node: &str, session: SessionId) -> Option<&'a FrameTx> {
    st.sessions
        .get(&session)
        .filter(|s| s.node == node)
        .and_then(|s| s.proxy.as_ref())
}

/// Marks a node down and ends the proxies of its processes with `reason`.
fn declare_down(st: &mut State, name: &str, reason: &str) {
    tracing::warn!("node {name} is down ({reason})");
    if let Some(n) = st.nodes.get_mut(name) {
        n.state = NodeState::Down;
        n.link = None;
        n.link_end.notify_one();
    }
    // What the node held (open files, locks) goes: lock waits end, the
    // descriptors close with the last reference.
    if let Some(f) = st.files.remove(name) {
        f.server.shutdown();
    }
    ckpt::node_down(st, name, reason);
    migrate::node_gone(st, name);
    let ids: Vec<SessionId> = st
        .sessions
        .iter()
        .filter(|(_, s)| s.node == name)
        .map(|(id, _)| *id)
        .collect();
    for id in ids {
        let s = st.sessions.remove(&id).expect("listed above");
        if let Some(p) = &s.proxy {
            p.send(
                "local",
                &LocalMsg::NodeLost {
                    node: name.to_owned(),
                    reason: reason.to_owned(),
                },
            );
        }
        st.lost.insert(id);
    }
}

/// Declares silent nodes down, ends their proxies, gives up on sessions
/// nobody reattached to, expires reservations.
async fn monitor(home: Arc<Home>) {
    let period = (home.heartbeat / 2).max(Duration::from_millis(50));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let mut st = home.state.lock().unwrap();
        let mut down = Vec::new();
        for (name, n) in st.nodes.iter_mut() {
            if n.state == NodeState::Down {
                continue;
            }
            let silent = n.last_heartbeat.elapsed();
            if silent > home.timeout {
                down.push((name.clone(), silent));
            } else if silent > home.heartbeat * 2 && n.state == NodeState::Up {
                n.state = NodeState::Unreachable;
            }
        }
        for (name, silent) in down {
            let reason = format!("no heartbeat for {:.1}s", silent.as_secs_f32());
            declare_down(&mut st, &name, &reason);
        }
        // Adopted sessions whose proxy never came back.
        let stale: Vec<SessionId> = st
            .sessions
            .iter()
            .filter(|(_, s)| s.proxy.is_none() && s.adopt_deadline.is_some_and(|d| now >= d))
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            let s = st.sessions.remove(&id).expect("listed above");
            tracing::warn!(
                "session {id} ({}, home pid {}) on {}: no proxy came back; killing it",
                s.command,
                s.home_pid,
                s.node
            );
            if let Some(l) = st.nodes.get(&s.node).and_then(|n| n.link.as_ref()) {
                l.send("link", &LinkMsg::Forget { session: id });
            }
        }
        // Proxies waiting for a node that did not come back.
        let gone: Vec<SessionId> = st
            .waiting
            .iter()
            .filter(|(_, w)| now >= w.deadline)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            let w = st.waiting.remove(&id).expect("listed above");
            w.tx.send(
                "local",
                &LocalMsg::NodeLost {
                    node: "?".into(),
                    reason: "the home daemon restarted and no node reported this process".into(),
                },
            );
        }
        st.reservations.retain(|_, r| r.expires > now);
    }
}

async fn accept_local(home: Arc<Home>, listener: UnixListener) {
    loop {
        match listener.accept().await {
            Ok((sock, _)) => {
                let home = home.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_local(home, sock).await {
                        tracing::debug!("local client: {e}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("local accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The session a local connection is bound to after a spawn or reattach.
struct Bound {
    session: SessionId,
}

async fn serve_local(
    home: Arc<Home>,
    sock: UnixStream,
) -> Result<(), roam_net::framed::FramedError> {
    let peer =
        roam_sys::cred::peer_cred(sock.as_fd()).map_err(roam_net::framed::FramedError::Io)?;
    let cred = Cred {
        uid: peer.uid,
        gid: peer.gid,
        groups: peer.groups.clone(),
    };
    let (r, w) = sock.into_split();
    let mut reader = FrameReader::new(r);
    let mut writer = FrameWriter::new(w);
    let hello = match reader.read_hello::<LocalHello>("local hello").await {
        Ok(Some(h)) => h,
        Ok(None) => return Ok(()),
        Err(roam_net::framed::FramedError::Proto(ProtoError::VersionMismatch { ours, theirs })) => {
            let reason = format!(
                "protocol version mismatch: roamd speaks version {ours}, this client speaks version {theirs}"
            );
            tracing::warn!("local client pid {}: {reason}", peer.pid);
            let _ = writer
                .write_hello("local hello reply", &LocalHelloReply::Refused { reason })
                .await;
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    tracing::debug!(
        "local client '{}' pid {} uid {}",
        hello.client,
        peer.pid,
        peer.uid
    );
    writer
        .write_hello(
            "local hello reply",
            &LocalHelloReply::Welcome {
                node_name: home.name.clone(),
                is_home: true,
            },
        )
        .await?;
    let (tx, rx) = FrameTx::new();
    let writer_task = tokio::spawn(writer_loop(writer.into_inner(), rx));
    let mut bound: Option<Bound> = None;
    let mut transfer: Option<ckpt::Current> = None;
    let result = loop {
        let frame = match reader.read_frame().await {
            Ok(Some(f)) => f,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        let msg: LocalMsg = match roam_proto::decode_body("local", &frame) {
            Ok(m) => m,
            Err(e) => {
                tx.send(
                    "local",
                    &LocalMsg::Error(WireError::new(ErrorCode::BadRequest, e.to_string())),
                );
                continue;
            }
        };
        if let LocalMsg::Transfer(m) = msg {
            ckpt::from_caller(&home, transfer, &tx, m);
            continue;
        }
        if let Some(b) = &bound {
            if let LocalMsg::Stream(m) = msg {
                forward_from_proxy(&home, b, &tx, m);
                continue;
            }
            if home.state.lock().unwrap().sessions.contains_key(&b.session) {
                tx.send(
                    "local",
                    &LocalMsg::Error(WireError::new(
                        ErrorCode::BadRequest,
                        format!("unexpected request on a session connection: {msg:?}"),
                    )),
                );
                continue;
            }
            // Its spawn failed (a staged program the node lacked): the
            // connection may ask again.
            bound = None;
        }
        match msg {
            LocalMsg::Spawn {
                spec,
                node,
                mode,
                reservation,
            } => match start_spawn(&home, &cred, peer.pid, *spec, node, mode, reservation, &tx) {
                Ok(b) => bound = Some(b),
                Err(e) => {
                    tx.send("local", &LocalMsg::Error(e));
                }
            },
            LocalMsg::Checkpoint {
                home_pid,
                leave_running,
            } if transfer.is_none() => {
                match ckpt::start_checkpoint(&home, &cred, home_pid, leave_running, &tx) {
                    Ok(c) => transfer = Some(c),
                    Err(e) => {
                        tx.send("local", &LocalMsg::Error(e));
                    }
                }
            }
            LocalMsg::Restore { spec, node } if transfer.is_none() => {
                match ckpt::start_restore(&home, &cred, peer.pid, *spec, &node, &tx) {
                    Ok((b, c)) => {
                        bound = Some(b);
                        transfer = Some(c);
                    }
                    Err(e) => {
                        tx.send("local", &LocalMsg::Error(e));
                    }
                }
            }
            LocalMsg::Stage { node, hash, len } if !ckpt::active(&home, transfer) => {
                match ckpt::start_stage(&home, &node, hash, len, &tx) {
                    Ok(c) => transfer = Some(c),
                    Err(e) => {
                        tx.send("local", &LocalMsg::Error(e));
                    }
                }
            }
            LocalMsg::Migrate {
                home_pid,
                node,
                mode,
            } => {
                let started =
                    migrate::start(&home, &cred, home_pid, node.as_deref(), Some(&tx), mode);
                if let Err(e) = started {
                    tx.send("local", &LocalMsg::Migrated(Err(e)));
                }
            }
            LocalMsg::Reattach { session } => {
                match reattach(&home, &cred, peer.pid, session, &tx) {
                    Ok(b) => bound = Some(b),
                    Err(e) => {
                        tx.send("local", &LocalMsg::Error(e));
                    }
                }
            }
            other => {
                let answer = answer_request(&home, &cred, other).await;
                tx.send("local", &answer);
            }
        }
    };
    ckpt::caller_gone(&home, transfer);
    migrate::caller_gone(&mut home.state.lock().unwrap(), &tx);
    if let Some(b) = bound {
        proxy_gone(&home, &b, &tx);
    }
    drop(tx);
    let _ = writer_task.await;
    result
}

/// A proxy's connection closed. If its session is still running, the proxy
/// died (killed, even by SIGKILL): kill the process on its node.
fn proxy_gone(home: &Home, b: &Bound, tx: &FrameTx) {
    let mut st = home.state.lock().unwrap();
    let ours = st
        .sessions
        .get(&b.session)
        .is_some_and(|s| s.proxy.as_ref().is_some_and(|p| p.same(tx)));
    if ours {
        let s = st.sessions.remove(&b.session).expect("checked");
        if let Some(l) = st.nodes.get(&s.node).and_then(|n| n.link.as_ref()) {
            l.send("link", &LinkMsg::Forget { session: b.session });
        }
        if !s.exited {
            tracing::info!(
                "proxy {} of session {} left: process killed on {}",
                s.home_pid,
                b.session,
                s.node
            );
        }
    }
    st.waiting.retain(|_, w| !w.tx.same(tx));
}

fn forward_from_proxy(home: &Home, b: &Bound, tx: &FrameTx, msg: LinkMsg) {
    // Only stream messages of the connection's own session pass.
    let session = match &msg {
        LinkMsg::Data { session, .. }
        | LinkMsg::Ack { session, .. }
        | LinkMsg::Eof { session, .. }
        | LinkMsg::Resume { session, .. }
        | LinkMsg::Signal { session, .. }
        | LinkMsg::Resize { session, .. }
        | LinkMsg::Done { session } => *session,
        _ => return,
    };
    if session != b.session {
        return;
    }
    let mut st = home.state.lock().unwrap();
    let Some(s) = st.sessions.get(&session) else {
        return;
    };
    if !s.proxy.as_ref().is_some_and(|p| p.same(tx)) {
        return;
    }
    if s.migrating.is_some() && matches!(msg, LinkMsg::Signal { .. } | LinkMsg::Resize { .. }) {
        // For wherever the process goes on (see home::migrate).
        st.sessions
            .get_mut(&session)
            .expect("found above")
            .held
            .push(msg);
        return;
    }
    if let Some(l) = st.nodes.get(&s.node).and_then(|n| n.link.as_ref()) {
        l.send("link", &msg);
    }
    if matches!(msg, LinkMsg::Done { .. }) {
        st.sessions.remove(&session);
    }
}

/// Performs a node's file-system call as the user it names, on a blocking
/// thread (at most [`FS_CONCURRENCY`] at once), and answers on the link.
/// The node is an authenticated member, trusted with the user's identity
/// as it is trusted to run the user's processes.
fn serve_fs(
    home: &Arc<Home>,
    node: &str,
    files: Option<&Arc<roam_rfs::server::Server>>,
    tx: FrameTx,
    req: u64,
    cred: Cred,
    op: roam_proto::fs::FsOp,
) {
    use roam_proto::fs::FsReply;
    let Some(server) = files.cloned() else {
        tx.send(
            "link",
            &LinkMsg::FsReply {
                req,
                reply: Box::new(FsReply::Err(libc::ENOSYS)),
            },
        );
        return;
    };
    // From now on the home's changes matter to a node.
    if let Some(w) = home.watch.get() {
        w.set_listening(true);
    }
    // Calls that cannot wait for a disk are answered here, without handing
    // them to a blocking thread and back (about 20 µs of a round trip).
    let op = match server.try_now(&cred, op) {
        Ok(reply) => {
            tx.send(
                "link",
                &LinkMsg::FsReply {
                    req,
                    reply: Box::new(reply),
                },
            );
            return;
        }
        Err(op) => op,
    };
    let slots = home.fs_slots.clone();
    // A lock wait may last long: it takes no slot, so waiting locks never
    // hold up everyone's other calls.
    let waits = matches!(op, roam_proto::fs::FsOp::SetLk { wait: true, .. });
    // What the call changes, for the other nodes' caches.
    let changes = server.changes_of(&op);
    let (home, node) = (home.clone(), node.to_owned());
    tokio::spawn(async move {
        let _slot = if waits {
            None
        } else {
            match slots.acquire_owned().await {
                Ok(s) => Some(s),
                Err(_) => return,
            }
        };
        let reply = tokio::task::spawn_blocking(move || server.handle(&cred, op))
            .await
            .unwrap_or(FsReply::Err(libc::EIO));
        if !changes.is_empty() && !matches!(reply, FsReply::Err(_)) {
            tell_nodes(&home, &changes, Some(&node));
        }
        tx.send(
            "link",
            &LinkMsg::FsReply {
                req,
                reply: Box::new(reply),
            },
        );
    });
}

/// The node's file server (made on its first link) and its epoch; None
/// if the export cannot be served.
fn node_files(home: &Home, node: &str) -> Option<(Arc<roam_rfs::server::Server>, u64)> {
    use std::sync::atomic::Ordering;
    let mut st = home.state.lock().unwrap();
    if let Some(f) = st.files.get(node) {
        return Some((f.server.clone(), f.epoch));
    }
    let mut cfg = roam_rfs::server::ServerConfig::new(home.export.clone());
    cfg.watched = home.watched.clone();
    match roam_rfs::server::Server::new(cfg) {
        Ok(server) => {
            let server = Arc::new(server);
            let epoch = home.next_epoch.fetch_add(1, Ordering::Relaxed);
            st.files.insert(
                node.to_owned(),
                NodeFiles {
                    server: server.clone(),
                    epoch,
                },
            );
            Some((server, epoch))
        }
        Err(e) => {
            tracing::warn!("node {node}: cannot export {}: {e}", home.export.display());
            None
        }
    }
}

/// Tells every node (but `except`, which made the changes and knows) whose
/// kernel may have cached what changed.
fn tell_nodes(home: &Home, changes: &[roam_rfs::server::Change], except: Option<&str>) {
    let st = home.state.lock().unwrap();
    for (name, f) in &st.files {
        if Some(name.as_str()) == except {
            continue;
        }
        let Some(tx) = st.nodes.get(name).and_then(|n| n.link.as_ref()) else {
            continue;
        };
        for c in changes {
            if let Some(n) = f.server.notice(c) {
                tx.send("link", &LinkMsg::FsNotice(n));
            }
        }
    }
}

/// Watches the export for changes made on the home; without fanotify the
/// nodes cache the home's files for a second only.
fn start_watch(home: &Arc<Home>) {
    let weak = Arc::downgrade(home);
    let watch = roam_rfs::watch::Watch::start(&home.export, home.watched.clone(), move |c| {
        if let Some(home) = weak.upgrade() {
            tell_nodes(&home, &c, None);
        }
    });
    match watch {
        Ok(w) => {
            let n = home.watched.read().map_or(0, |d| d.len());
            tracing::info!(
                "watching {} file systems under {} for changes",
                n,
                home.export.display()
            );
            // No node has asked for the home's files yet (see serve_fs).
            w.set_listening(false);
            let _ = home.watch.set(w);
        }
        Err(e) => tracing::warn!(
            "cannot watch {} for changes ({e}): nodes see changes made on the home \
             within a second, not at once",
            home.export.display()
        ),
    }
}

#[expect(clippy::too_many_arguments)]
fn start_spawn(
    home: &Arc<Home>,
    cred: &Cred,
    pid: u32,
    spec: SpawnSpec,
    node: Option<String>,
    mode: Option<Mode>,
    reservation: Option<(u64, u32)>,
    tx: &FrameTx,
) -> Result<Bound, WireError> {
    if spec.argv.is_empty() || spec.program.is_empty() {
        return Err(WireError::new(ErrorCode::BadRequest, "nothing to run"));
    }
    let mode = mode.unwrap_or(*home.mode.lock().unwrap());
    let mut st = home.state.lock().unwrap();
    if st.sessions.values().any(|s| s.home_pid == pid) {
        return Err(WireError::new(
            ErrorCode::BadRequest,
            format!("process {pid} already proxies a remote process"),
        ));
    }
    let all = Home::candidates(&st);
    let arch = spec.arch.as_deref();
    let cands = if node.is_some() {
        all
    } else {
        placement::for_arch(&all, arch).map_err(place_err)?
    };
    let chosen = if let Some((token, index)) = reservation {
        let r = st
            .reservations
            .get_mut(&token)
            .filter(|r| r.uid == cred.uid)
            .ok_or_else(|| WireError::new(ErrorCode::NotFound, "no such reservation (expired?)"))?;
        let i = index as usize;
        if i >= r.nodes.len() || r.used[i] {
            return Err(WireError::new(
                ErrorCode::BadRequest,
                "reservation slot used or out of range",
            ));
        }
        r.used[i] = true;
        let name = r.nodes[i].clone();
        if r.used.iter().all(|u| *u) {
            st.reservations.remove(&token);
        }
        name
    } else if let Some(name) = node {
        let states = st.node_states();
        placement::check_named(&cands, &name, mode, arch, |n| {
            states.get(n).cloned().unwrap_or_else(|| "unknown".into())
        })
        .map_err(place_err)?
        .name
        .clone()
    } else {
        placement::choose(&cands, mode)
            .map_err(place_err)?
            .name
            .clone()
    };
    let link = st
        .nodes
        .get(&chosen)
        .and_then(|n| n.link.clone())
        .ok_or_else(|| {
            WireError::new(
                ErrorCode::Unavailable,
                format!("node {chosen} is not reachable"),
            )
        })?;
    if let Some(n) = st.nodes.get_mut(&chosen) {
        n.placed_since_heartbeat += 1;
    }
    st.next_req += 1;
    let req = st.next_req;
    let session = st.new_session_id();
    let command = spec
        .argv
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    st.sessions.insert(
        session,
        HomeSession {
            node: chosen.clone(),
            home_pid: pid,
            node_pid: 0,
            uid: cred.uid,
            command,
            proxy: Some(tx.clone()),
            spawning: Some(req),
            adopt_deadline: None,
            exited: false,
            migrating: None,
            held: Vec::new(),
            moves: 0,
        },
    );
    link.send(
        "link",
        &LinkMsg::Spawn {
            req,
            session,
            home_pid: pid,
            cred: cred.clone(),
            spec: Box::new(spec),
        },
    );
    drop(st);
    // A node that never answers: fail the spawn instead of hanging.
    let weak = Arc::downgrade(home);
    let proxy = tx.clone();
    let node_name = chosen.clone();
    tokio::spawn(async move {
        tokio::time::sleep(SPAWN_TIMEOUT).await;
        let Some(home) = weak.upgrade() else { return };
        let mut st = home.state.lock().unwrap();
        let pending = st
            .sessions
            .get(&session)
            .is_some_and(|s| s.spawning.is_some());
        if pending {
            st.sessions.remove(&session);
            proxy.send(
                "local",
                &LocalMsg::Error(WireError::new(
                    ErrorCode::Unavailable,
                    format!("node {node_name} did not answer the spawn request"),
                )),
            );
        }
    });
    Ok(Bound { session })
}

fn place_err(e: placement::PlaceError) -> WireError {
    let code = match e {
        placement::PlaceError::UnknownNode { .. } => ErrorCode::NotFound,
        placement::PlaceError::NodeNotUp { .. } => ErrorCode::Unavailable,
        // As a local exec of a binary for another machine: cannot execute.
        placement::PlaceError::NoArch { .. } | placement::PlaceError::WrongArch { .. } => {
            ErrorCode::ExecFailed
        }
        _ => ErrorCode::NoCapacity,
    };
    WireError::new(code, e.to_string())
}

fn reattach(
    home: &Home,
    cred: &Cred,
    pid: u32,
    session: SessionId,
    tx: &FrameTx,
) -> Result<Bound, WireError> {
    let mut st = home.state.lock().unwrap();
    if let Some(s) = st.sessions.get_mut(&session) {
        if s.uid != cred.uid || s.home_pid != pid {
            return Err(WireError::new(
                ErrorCode::PermissionDenied,
                "that session belongs to another process",
            ));
        }
        s.proxy = Some(tx.clone());
        s.adopt_deadline = None;
        let node = s.node.clone();
        let node_pid = s.node_pid;
        tx.send(
            "local",
            &LocalMsg::Reattached {
                node: node.clone(),
                node_pid,
            },
        );
        if let Some(l) = st.nodes.get(&node).and_then(|n| n.link.as_ref()) {
            l.send("link", &LinkMsg::PathUp { session });
            tx.send("local", &LocalMsg::Stream(LinkMsg::PathUp { session }));
        }
        return Ok(Bound { session });
    }
    if st.lost.contains(&session) {
        return Err(WireError::new(
            ErrorCode::Unavailable,
            "its node went down; the process is lost",
        ));
    }
    // The node may not have rejoined yet: wait for it.
    st.waiting.insert(
        session,
        WaitingProxy {
            tx: tx.clone(),
            uid: cred.uid,
            pid,
            deadline: Instant::now() + home.timeout * 3,
        },
    );
    Ok(Bound { session })
}

async fn answer_request(home: &Arc<Home>, cred: &Cred, msg: LocalMsg) -> LocalMsg {
    match msg {
        LocalMsg::Nodes => LocalMsg::NodeList(home.node_infos()),
        LocalMsg::Ps => LocalMsg::ProcList(ps(home, cred).await),
        LocalMsg::Kill { home_pid, signal } => match kill(home, cred, home_pid, signal) {
            Ok(()) => LocalMsg::Ok,
            Err(e) => LocalMsg::Error(e),
        },
        LocalMsg::GetMode => LocalMsg::ModeIs(*home.mode.lock().unwrap()),
        LocalMsg::SetMode { mode } => {
            if !cred.is_root() {
                return LocalMsg::Error(WireError::new(
                    ErrorCode::PermissionDenied,
                    "only root may change the cluster's placement mode (use --mode for one run)",
                ));
            }
            *home.mode.lock().unwrap() = mode;
            tracing::info!("placement mode set to {mode}");
            LocalMsg::ModeIs(mode)
        }
        LocalMsg::Reserve { count, arch } => reserve(home, cred, count, arch.as_deref()),
        LocalMsg::Place { among } => place(home, &among),
        LocalMsg::GetBalance => {
            LocalMsg::BalanceIs(Box::new(home.balance.lock().unwrap().status(cred)))
        }
        LocalMsg::SetBalance { on } => match balance::set(home, cred, on) {
            Ok(s) => LocalMsg::BalanceIs(Box::new(s)),
            Err(e) => LocalMsg::Error(e),
        },
        LocalMsg::SetDraining { node, on } => {
            if !cred.is_root() {
                return LocalMsg::Error(WireError::new(
                    ErrorCode::PermissionDenied,
                    "only root may drain a node",
                ));
            }
            let mut st = home.state.lock().unwrap();
            match st.nodes.get_mut(&node) {
                Some(n) => {
                    n.draining = on;
                    tracing::info!(
                        "node {node}: {}",
                        if on {
                            "draining: nothing more is placed on it"
                        } else {
                            "placed on again"
                        }
                    );
                    LocalMsg::Ok
                }
                None => LocalMsg::Error(WireError::new(
                    ErrorCode::NotFound,
                    format!("no node {node}"),
                )),
            }
        }
        other => LocalMsg::Error(WireError::new(
            ErrorCode::BadRequest,
            format!("not a request: {other:?}"),
        )),
    }
}

/// `LocalMsg::Place`: where the cluster's mode would put one process,
/// among `among` (every node if empty).
fn place(home: &Home, among: &[String]) -> LocalMsg {
    let mode = *home.mode.lock().unwrap();
    let st = home.state.lock().unwrap();
    let cands: Vec<_> = Home::candidates(&st)
        .into_iter()
        .filter(|c| among.is_empty() || among.contains(&c.name))
        .collect();
    match placement::choose(&cands, mode) {
        Ok(c) => LocalMsg::Placed {
            node: c.name.clone(),
        },
        Err(e) => LocalMsg::Error(place_err(e)),
    }
}

fn reserve(home: &Home, cred: &Cred, count: u32, arch: Option<&str>) -> LocalMsg {
    if count == 0 || count > 4096 {
        return LocalMsg::Error(WireError::new(
            ErrorCode::BadRequest,
            format!("cannot reserve {count} nodes"),
        ));
    }
    let mut st = home.state.lock().unwrap();
    let cands = match placement::for_arch(&Home::candidates(&st), arch) {
        Ok(c) => c,
        Err(e) => return LocalMsg::Error(place_err(e)),
    };
    let nodes: Vec<String> = match placement::choose_many(&cands, count as usize) {
        Ok(v) => v.into_iter().map(|c| c.name.clone()).collect(),
        Err(e) => return LocalMsg::Error(place_err(e)),
    };
    let token = rand::random();
    st.reservations.insert(
        token,
        Reservation {
            uid: cred.uid,
            used: vec![false; nodes.len()],
            nodes: nodes.clone(),
            expires: Instant::now() + RESERVATION_TTL,
        },
    );
    LocalMsg::Reserved { token, nodes }
}

fn kill(
    home: &Home,
    cred: &Cred,
    home_pid: u32,
    signal: roam_proto::types::WireSignal,
) -> Result<(), WireError> {
    let st = home.state.lock().unwrap();
    let (id, s) = st
        .sessions
        .iter()
        .find(|(_, s)| s.home_pid == home_pid)
        .ok_or_else(|| {
            WireError::new(
                ErrorCode::NotFound,
                format!("no remote process with home pid {home_pid}"),
            )
        })?;
    if !cred.is_root() && cred.uid != s.uid {
        return Err(WireError::new(
            ErrorCode::PermissionDenied,
            format!("process {home_pid} belongs to another user"),
        ));
    }
    let link = st
        .nodes
        .get(&s.node)
        .and_then(|n| n.link.as_ref())
        .ok_or_else(|| {
            WireError::new(
                ErrorCode::Unavailable,
                format!("node {} is not reachable", s.node),
            )
        })?;
    link.send(
        "link",
        &LinkMsg::Signal {
            session: *id,
            signal,
            group: false,
        },
    );
    Ok(())
}

async fn ps(home: &Arc<Home>, cred: &Cred) -> Vec<ProcInfo> {
    let (ctx, mut crx) = tokio::sync::mpsc::unbounded_channel();
    let (req, links) = {
        let mut st = home.state.lock().unwrap();
        st.next_req += 1;
        let req = st.next_req;
        st.ps_pending.insert(req, ctx);
        let links: Vec<FrameTx> = st.nodes.values().filter_map(|n| n.link.clone()).collect();
        (req, links)
    };
    let mut expected = 0;
    for l in &links {
        if l.send("link", &LinkMsg::ListProcs { req }) {
            expected += 1;
        }
    }
    let mut all = Vec::new();
    let deadline = tokio::time::Instant::now() + PS_TIMEOUT;
    while expected > 0 {
        match tokio::time::timeout_at(deadline, crx.recv()).await {
            Ok(Some(v)) => {
                all.extend(v);
                expected -= 1;
            }
            _ => break,
        }
    }
    let st = &mut home.state.lock().unwrap();
    st.ps_pending.remove(&req);
    // Only sessions the home knows (and still has) are listed.
    all.retain_mut(|p| {
        let Some(s) = st.sessions.get(&p.session).filter(|s| s.node == p.node) else {
            return false;
        };
        p.moves = s.moves;
        cred.is_root() || p.uid == cred.uid
    });
    all.sort_by_key(|p| p.home_pid);
    all
}

// ---- Identity forwarding: signals remote processes send to home pids ----
// (see crate::identity and docs/design/identity.md)

/// The fields of a [`LinkMsg::Kill`].
struct ForwardedKill {
    req: u64,
    session: SessionId,
    from_uid: u32,
    pid: u32,
    group: bool,
    signal: roam_proto::types::WireSignal,
    value: Option<u64>,
}

/// A node asks, for a process of `k.session`, to signal home pid `k.pid`:
/// another remote process (its node is told, as for `roam kill`) or a
/// process of the home (signalled with the sender's rights). The node
/// speaks for the users of the processes it runs, and for no one else.
fn forwarded_kill(st: &State, node: &str, tx: &FrameTx, k: ForwardedKill) {
    use roam_proto::types::KillRefusal;
    let reply = |result: Result<(), KillRefusal>| {
        tx.send("link", &LinkMsg::KillReply { req: k.req, result });
    };
    let Some(sender) = st.sessions.get(&k.session).filter(|s| s.node == node) else {
        tracing::warn!(
            "node {node}: signal request for session {} it does not run",
            k.session
        );
        reply(Err(KillRefusal::NotPermitted));
        return;
    };
    if sender.uid != 0 && k.from_uid != sender.uid {
        tracing::warn!(
            "node {node}: signal request of session {} as uid {}, not its user {}",
            k.session,
            k.from_uid,
            sender.uid
        );
        reply(Err(KillRefusal::NotPermitted));
        return;
    }
    let what = format!(
        "node {node}: home pid {} (uid {}) signals {}{} with {}",
        sender.home_pid,
        k.from_uid,
        if k.group { "group " } else { "" },
        k.pid,
        roam_sys::signal::name(k.signal)
    );
    if let Some((id, target)) = st.sessions.iter().find(|(_, s)| s.home_pid == k.pid) {
        let result = if k.from_uid != 0 && k.from_uid != target.uid {
            Err(KillRefusal::NotPermitted)
        } else if k.signal.0 == 0 {
            Ok(())
        } else {
            match st.nodes.get(&target.node).and_then(|n| n.link.as_ref()) {
                Some(l) => {
                    l.send(
                        "link",
                        &LinkMsg::Signal {
                            session: *id,
                            signal: k.signal,
                            group: k.group,
                        },
                    );
                    Ok(())
                }
                None => Err(KillRefusal::NoSuchProcess),
            }
        };
        tracing::info!("{what} (remote, on {}): {result:?}", target.node);
        reply(result);
        return;
    }
    let tx = tx.clone();
    let sender_pid = sender.home_pid;
    tokio::task::spawn_blocking(move || {
        let result = crate::identity::kill_at_home(
            k.from_uid, k.pid, k.group, k.signal, k.value, sender_pid,
        );
        tracing::info!("{what} (here): {result:?}");
        tx.send("link", &LinkMsg::KillReply { req: k.req, result });
    });
}
