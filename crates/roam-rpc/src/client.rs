//! The client engine: starts remote executables on the cluster's nodes
//! through roam, hands calls to them, and keeps the sessions the GridRPC
//! API reports on.
//!
//! A worker is a remote executable run with `roam run --ship --confine
//! --node NODE PATH`: a roam remote process like any other (`roam ps`
//! lists it, it reads the home's files, `roam kill` reaches it), whose
//! `roam run` proxy is a child of the client. The executable is shipped
//! to the node (kept there in a cache by content hash) and runs confined
//! there, unless its configuration says otherwise. It connects back to
//! the client's listener over TCP and authenticates with a key made for
//! it (see [`crate::proto`]).
//!
//! A handle bound to a server (`Client::handle_on`) owns one worker,
//! started at once and kept across calls, so a module's state lives from
//! call to call. A default handle (`Client::handle`) takes the least busy
//! worker of its executable's pool, starting new ones where the cluster's
//! placement mode puts them (among the nodes that run one of the
//! executable's builds) until the pool has `workers_per_node` per node;
//! with `retries`, a call whose worker dies runs again on another.

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::data::{self, Body, Data, DataError, Dir, Order};
use crate::idl::{self, Function, Idl};
use crate::proto::{self, Hello, ProtoError};
use crate::worker::{ENV_CONNECT, ENV_ID, ENV_KEY};

/// GridRPC's error codes (GFD-R.52), as the C API returns them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Code {
    NoError = 0,
    NotInitialized = 1,
    ConfigFileNotFound = 2,
    ConfigFileError = 3,
    ServerNotFound = 4,
    FunctionNotFound = 5,
    InvalidFunctionHandle = 6,
    InvalidSessionId = 7,
    RpcRefused = 8,
    CommunicationFailed = 9,
    SessionFailed = 10,
    NotCompleted = 11,
    NoneCompleted = 12,
    OtherErrorCode = 13,
    UnknownErrorCode = 14,
    AlreadyInitialized = 15,
}

impl Code {
    pub fn describe(self) -> &'static str {
        match self {
            Code::NoError => "no error",
            Code::NotInitialized => "GridRPC is not initialized",
            Code::ConfigFileNotFound => "configuration file not found",
            Code::ConfigFileError => "error in the configuration file",
            Code::ServerNotFound => "server not found",
            Code::FunctionNotFound => "function not found",
            Code::InvalidFunctionHandle => "invalid function handle",
            Code::InvalidSessionId => "invalid session id",
            Code::RpcRefused => "RPC refused by the server",
            Code::CommunicationFailed => "communication with the server failed",
            Code::SessionFailed => "the call failed",
            Code::NotCompleted => "the call has not completed",
            Code::NoneCompleted => "no call has completed",
            Code::OtherErrorCode => "other error",
            Code::UnknownErrorCode => "unknown error code",
            Code::AlreadyInitialized => "GridRPC is already initialized",
        }
    }
}

/// An error with its GridRPC code and what happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct RpcError {
    pub code: Code,
    pub msg: String,
}

impl RpcError {
    pub fn new(code: Code, msg: impl Into<String>) -> RpcError {
        RpcError {
            code,
            msg: msg.into(),
        }
    }
}

// ----------------------------------------------------------- configuration

/// A remote executable the client may start.
#[derive(Debug, Clone)]
pub struct Executable {
    /// Its name in messages (the first build).
    pub path: PathBuf,
    /// Its builds, for different architectures; a node gets the build of
    /// its own architecture, else one it runs through a runner.
    pub builds: Vec<PathBuf>,
    pub idl: Idl,
    /// Nodes it may run on; empty: any that runs its architecture.
    pub nodes: Vec<String>,
    /// Whether the build is shipped to the node (`roam run --ship`), or
    /// run from where the node sees it.
    pub ship: bool,
    /// Whether its workers run confined (`roam run --confine`: the node
    /// installs the allow-list of [`crate::confine`] before their exec).
    pub confine: bool,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The `roam` command.
    pub roam: PathBuf,
    /// roamd's socket (else `ROAM_SOCKET`, else the default).
    pub socket: Option<PathBuf>,
    pub executables: Vec<Executable>,
    /// A call running longer fails (and its worker is stopped).
    pub timeout: Option<Duration>,
    /// Times a default handle's call runs again after its worker died.
    pub retries: u32,
    /// How long a worker may take to start and connect.
    pub start_timeout: Duration,
    pub workers_per_node: usize,
    pub max_frame: usize,
    /// The workers' working directory (as roam runs them: the home's
    /// path); None: the client's.
    pub workdir: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    roam: Option<PathBuf>,
    socket: Option<PathBuf>,
    timeout_ms: Option<u64>,
    retries: Option<u32>,
    start_timeout_ms: Option<u64>,
    workers_per_node: Option<usize>,
    max_frame_mib: Option<usize>,
    workdir: Option<PathBuf>,
    #[serde(default)]
    executable: Vec<ExecutableFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecutableFile {
    path: Option<PathBuf>,
    #[serde(default)]
    builds: Vec<PathBuf>,
    idl: PathBuf,
    #[serde(default)]
    nodes: Vec<String>,
    /// Default true.
    ship: Option<bool>,
    /// Default: as `ship`.
    confine: Option<bool>,
}

impl Config {
    /// Defaults, with no executables.
    pub fn new() -> Config {
        Config {
            roam: std::env::var_os("ROAM_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("roam")),
            socket: None,
            executables: Vec::new(),
            timeout: None,
            retries: 0,
            start_timeout: Duration::from_secs(30),
            workers_per_node: 1,
            max_frame: proto::DEFAULT_MAX_FRAME,
            workdir: None,
        }
    }

    /// Adds an executable with the interface in `idl_text`.
    pub fn executable(
        &mut self,
        path: impl Into<PathBuf>,
        idl_text: &str,
    ) -> Result<&mut Config, RpcError> {
        let path = path.into();
        let idl = idl::parse(idl_text).map_err(|e| {
            RpcError::new(
                Code::ConfigFileError,
                format!("interface of {}: {e}", path.display()),
            )
        })?;
        self.executables.push(Executable {
            builds: vec![path.clone()],
            path,
            idl,
            nodes: Vec::new(),
            ship: true,
            confine: true,
        });
        Ok(self)
    }

    /// Reads a TOML configuration file (see docs/design/rpc.md); IDL paths
    /// are relative to the file's directory.
    pub fn load(path: &Path) -> Result<Config, RpcError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                Code::ConfigFileNotFound
            } else {
                Code::ConfigFileError
            };
            RpcError::new(code, format!("{}: {e}", path.display()))
        })?;
        let bad =
            |m: String| RpcError::new(Code::ConfigFileError, format!("{}: {m}", path.display()));
        let f: ConfigFile = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut c = Config::new();
        if let Some(r) = f.roam {
            c.roam = r;
        }
        c.socket = f.socket;
        c.workdir = f.workdir;
        c.timeout = f.timeout_ms.filter(|&t| t > 0).map(Duration::from_millis);
        c.retries = f.retries.unwrap_or(0);
        if let Some(t) = f.start_timeout_ms {
            c.start_timeout = Duration::from_millis(t);
        }
        c.workers_per_node = f.workers_per_node.unwrap_or(1).max(1);
        if let Some(m) = f.max_frame_mib {
            c.max_frame = m.clamp(1, 4095) << 20;
        }
        for e in f.executable {
            let idl_path = dir.join(&e.idl);
            let text = std::fs::read_to_string(&idl_path)
                .map_err(|err| bad(format!("{}: {err}", idl_path.display())))?;
            let idl =
                idl::parse(&text).map_err(|err| bad(format!("{}: {err}", idl_path.display())))?;
            let builds: Vec<PathBuf> = e
                .path
                .iter()
                .chain(&e.builds)
                .map(|p| dir.join(p))
                .collect();
            let Some(path) = builds.first().cloned() else {
                return Err(bad(format!(
                    "an executable of {} has no path or builds",
                    idl_path.display()
                )));
            };
            c.executables.push(Executable {
                path,
                builds,
                idl,
                nodes: e.nodes,
                ship: e.ship.unwrap_or(true),
                confine: e.confine.or(e.ship).unwrap_or(true),
            });
        }
        Ok(c)
    }
}

impl Default for Config {
    fn default() -> Config {
        Config::new()
    }
}

// ------------------------------------------------------------------ engine

/// A GridRPC client: one per program, usually.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: Config,
    port: u16,
    st: Mutex<State>,
    cv: Condvar,
    closing: AtomicBool,
    /// Nodes up, and when roamd said so (see `Client::pool_cap`).
    up_nodes: Mutex<Option<(Instant, usize)>>,
}

#[derive(Default)]
struct State {
    next_worker: u32,
    next_session: i32,
    pending: HashMap<u32, Pending>,
    workers: HashMap<u32, Arc<Worker>>,
    sessions: HashMap<i32, Session>,
    /// Default handles' workers, by executable.
    pools: HashMap<usize, Vec<u32>>,
    /// The last session that failed, for grpc_get_failed_sessionid.
    failed: Option<i32>,
}

struct Pending {
    key: [u8; 32],
    conn: Option<Result<(TcpStream, Hello, Order), String>>,
}

struct Worker {
    id: u32,
    node: String,
    /// The byte order of arrays on its connection.
    order: Order,
    writer: Mutex<TcpStream>,
    child: Mutex<Child>,
    outstanding: AtomicUsize,
    dead: AtomicBool,
}

/// A completion hook: gets the OUT and INOUT values before the session
/// is marked done (the C API copies them to the caller's memory).
pub type Hook = Box<dyn FnOnce(&mut Vec<Data>) + Send>;

struct Session {
    func: Arc<Function>,
    exe: usize,
    worker: u32,
    pooled: bool,
    counts: Vec<usize>,
    args: Arc<Vec<Data>>,
    retries_left: u32,
    deadline: Option<Instant>,
    hook: Option<Hook>,
    done: Option<Result<Vec<Data>, RpcError>>,
    wakers: Vec<Waker>,
}

/// A session that finished: its id and its outcome.
pub type Finished = (i32, Result<Vec<Data>, RpcError>);

/// A function handle.
pub struct Handle {
    client: Client,
    func: Arc<Function>,
    exe: usize,
    /// The server of a bound handle, and its current worker.
    bound: Option<(String, Mutex<Option<u32>>)>,
}

impl Client {
    /// Starts the client: its listener for workers.
    pub fn new(cfg: Config) -> Result<Client, RpcError> {
        let listener = TcpListener::bind("0.0.0.0:0").map_err(|e| {
            RpcError::new(
                Code::OtherErrorCode,
                format!("cannot listen for workers: {e}"),
            )
        })?;
        let port = listener
            .local_addr()
            .map_err(|e| RpcError::new(Code::OtherErrorCode, e.to_string()))?
            .port();
        let inner = Arc::new(Inner {
            cfg,
            port,
            st: Mutex::new(State {
                next_worker: 1,
                next_session: 1,
                ..State::default()
            }),
            cv: Condvar::new(),
            closing: AtomicBool::new(false),
            up_nodes: Mutex::new(None),
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("roam-rpc-accept".into())
            .spawn(move || accept_loop(listener, weak))
            .map_err(|e| RpcError::new(Code::OtherErrorCode, e.to_string()))?;
        Ok(Client { inner })
    }

    pub fn config(&self) -> &Config {
        &self.inner.cfg
    }

    fn find(&self, func: &str) -> Result<(usize, Arc<Function>), RpcError> {
        for (i, e) in self.inner.cfg.executables.iter().enumerate() {
            if let Some(f) = e.idl.function(func) {
                return Ok((i, Arc::new(f.clone())));
            }
        }
        Err(RpcError::new(
            Code::FunctionNotFound,
            format!("no executable in the configuration has a function {func}"),
        ))
    }

    /// A default handle: its calls go to the least busy worker of the
    /// executable that has `func`.
    pub fn handle(&self, func: &str) -> Result<Handle, RpcError> {
        let (exe, func) = self.find(func)?;
        Ok(Handle {
            client: self.clone(),
            func,
            exe,
            bound: None,
        })
    }

    /// A handle bound to node `server`: it starts its worker there now and
    /// keeps it across calls.
    pub fn handle_on(&self, server: &str, func: &str) -> Result<Handle, RpcError> {
        let (exe, func) = self.find(func)?;
        let id = self.start_worker(exe, Some(server))?;
        Ok(Handle {
            client: self.clone(),
            func,
            exe,
            bound: Some((server.to_owned(), Mutex::new(Some(id)))),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a worker of executable `exe` on `node` (or the next node
    /// that runs it) and waits until it has connected and authenticated.
    fn start_worker(&self, exe: usize, node: Option<&str>) -> Result<u32, RpcError> {
        let cfg = &self.inner.cfg;
        let e = &cfg.executables[exe];
        let nodes = self.nodes()?;
        let builds: Vec<(&PathBuf, Option<String>)> = e
            .builds
            .iter()
            .map(|b| {
                let arch = roam_core::locate::locate(b.as_os_str(), None)
                    .ok()
                    .flatten()
                    .map(|l| l.arch.to_string());
                (b, arch)
            })
            .collect();
        // The build for node `n`: of its own architecture, else one it
        // runs (through a runner), else one whose architecture is not
        // known here (a script, a file only the nodes have).
        let pick = |n: &roam_proto::types::NodeInfo| -> Option<&PathBuf> {
            let with = |ok: &dyn Fn(&str) -> bool| {
                builds
                    .iter()
                    .find(|(_, a)| a.as_deref().is_some_and(ok))
                    .map(|(b, _)| *b)
            };
            with(&|a| a == n.arch.native)
                .or_else(|| with(&|a| n.arch.runs(a)))
                .or_else(|| builds.iter().find(|(_, a)| a.is_none()).map(|(b, _)| *b))
        };
        let fits = |n: &roam_proto::types::NodeInfo| {
            n.state == roam_proto::types::NodeState::Up
                && pick(n).is_some()
                && (e.nodes.is_empty() || e.nodes.contains(&n.name))
        };
        let target = match node {
            Some(name) => {
                let n = nodes.iter().find(|n| n.name == name).ok_or_else(|| {
                    RpcError::new(
                        Code::ServerNotFound,
                        format!("no node {name} in the cluster"),
                    )
                })?;
                if !fits(n) {
                    return Err(RpcError::new(
                        Code::ServerNotFound,
                        format!(
                            "node {name} cannot run {} (down, or not its architecture)",
                            e.path.display()
                        ),
                    ));
                }
                n
            }
            None => {
                let ok: Vec<String> = nodes
                    .iter()
                    .filter(|n| fits(n))
                    .map(|n| n.name.clone())
                    .collect();
                if ok.is_empty() {
                    return Err(RpcError::new(
                        Code::ServerNotFound,
                        format!("no node that is up runs {}", e.path.display()),
                    ));
                }
                // Where the cluster's placement mode puts it, among them.
                let name = self.place(ok)?;
                nodes
                    .iter()
                    .find(|n| n.name == name)
                    .ok_or_else(|| RpcError::new(Code::ServerNotFound, format!("no node {name}")))?
            }
        };
        let build = pick(target).expect("fits").clone();
        let target = target.name.clone();
        let addrs = callback_addresses(&nodes, self.inner.port);
        let key: [u8; 32] = rand::random();
        let id = {
            let mut st = self.lock();
            let id = st.next_worker;
            st.next_worker += 1;
            st.pending.insert(id, Pending { key, conn: None });
            id
        };
        let mut cmd = Command::new(&cfg.roam);
        cmd.arg("run").arg("--node").arg(&target);
        if e.ship {
            cmd.arg("--ship");
        }
        if e.confine {
            cmd.arg("--confine");
        }
        cmd.arg("--")
            .arg(&build)
            .env(ENV_CONNECT, addrs)
            .env(ENV_KEY, proto::key_hex(&key))
            .env(ENV_ID, id.to_string())
            .env_remove(crate::confine::ENV_CONFINE)
            .stdin(Stdio::null());
        if let Some(s) = &cfg.socket {
            cmd.env("ROAM_SOCKET", s);
        }
        if let Some(d) = &cfg.workdir {
            cmd.current_dir(d);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(err) => {
                self.lock().pending.remove(&id);
                return Err(RpcError::new(
                    Code::RpcRefused,
                    format!("cannot run {}: {err}", cfg.roam.display()),
                ));
            }
        };
        let deadline = Instant::now() + cfg.start_timeout;
        let mut st = self.lock();
        let conn = loop {
            if let Some(c) = st.pending.get_mut(&id).and_then(|p| p.conn.take()) {
                break c;
            }
            if let Ok(Some(status)) = child.try_wait() {
                break Err(format!(
                    "{} ended before it connected ({status}); see its messages above",
                    e.path.display()
                ));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!(
                    "{} did not connect within {:?}",
                    e.path.display(),
                    cfg.start_timeout
                ));
            }
            st = self
                .inner
                .cv
                .wait_timeout(st, Duration::from_millis(20))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        };
        st.pending.remove(&id);
        drop(st);
        let (stream, hello, order) = match conn {
            Ok(c) => c,
            Err(msg) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RpcError::new(
                    Code::RpcRefused,
                    format!("worker on {target}: {msg}"),
                ));
            }
        };
        // The worker must serve the interface we call with.
        let theirs = idl::parse(&hello.interface).map_err(|err| {
            RpcError::new(
                Code::RpcRefused,
                format!("worker's interface does not parse: {err}"),
            )
        });
        let mismatch = theirs.map(|t| {
            e.idl
                .functions
                .iter()
                .find_map(|f| match t.function(&f.name) {
                    Some(g) if g.signature() == f.signature() => None,
                    Some(g) => Some(format!(
                        "{} says {}, the configuration {}",
                        e.path.display(),
                        g.signature(),
                        f.signature()
                    )),
                    None => Some(format!("{} has no function {}", e.path.display(), f.name)),
                })
        });
        let problem = match mismatch {
            Ok(None) => None,
            Ok(Some(m)) => Some(RpcError::new(Code::RpcRefused, m)),
            Err(err) => Some(err),
        };
        if let Some(err) = problem {
            let _ = child.kill();
            let _ = child.wait();
            return Err(err);
        }
        let reader = stream
            .try_clone()
            .map_err(|err| RpcError::new(Code::CommunicationFailed, err.to_string()))?;
        let w = Arc::new(Worker {
            id,
            node: target,
            order,
            writer: Mutex::new(stream),
            child: Mutex::new(child),
            outstanding: AtomicUsize::new(0),
            dead: AtomicBool::new(false),
        });
        self.lock().workers.insert(id, w.clone());
        let client = self.clone();
        let max = cfg.max_frame;
        std::thread::Builder::new()
            .name(format!("roam-rpc-w{id}"))
            .spawn(move || client.read_replies(w, reader, max))
            .map_err(|err| RpcError::new(Code::OtherErrorCode, err.to_string()))?;
        Ok(id)
    }

    /// Where a program on any of the cluster's nodes reaches port `port`
    /// of this machine: this machine's address on the route toward each
    /// node, then 127.0.0.1, comma-separated (what workers get in
    /// `ROAM_RPC_CONNECT`).
    pub fn callback_addresses(&self, port: u16) -> Result<String, RpcError> {
        Ok(callback_addresses(&self.nodes()?, port))
    }

    fn nodes(&self) -> Result<Vec<roam_proto::types::NodeInfo>, RpcError> {
        match self.ask(roam_proto::local::LocalMsg::Nodes) {
            Ok(roam_proto::local::LocalMsg::NodeList(n)) => Ok(n),
            Ok(other) => Err(RpcError::new(
                Code::CommunicationFailed,
                format!("unexpected answer from roamd: {other:?}"),
            )),
            Err(e) => Err(e),
        }
    }

    /// One request to roamd. A refusal is `ServerNotFound` (no node can
    /// take a worker), anything else `CommunicationFailed`.
    fn ask(
        &self,
        msg: roam_proto::local::LocalMsg,
    ) -> Result<roam_proto::local::LocalMsg, RpcError> {
        let path = self
            .inner
            .cfg
            .socket
            .clone()
            .unwrap_or_else(roam_core::client::socket_path);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| RpcError::new(Code::OtherErrorCode, e.to_string()))?;
        rt.block_on(async {
            let mut c = roam_core::client::Client::connect(&path, "roam-rpc").await?;
            c.request(&msg).await
        })
        .map_err(|e| match e {
            roam_core::client::ClientError::Remote(w) => {
                RpcError::new(Code::ServerNotFound, w.message)
            }
            e => RpcError::new(Code::CommunicationFailed, e.to_string()),
        })
    }

    /// The node roamd's placement gives a new process among `among`.
    fn place(&self, among: Vec<String>) -> Result<String, RpcError> {
        match self.ask(roam_proto::local::LocalMsg::Place { among }) {
            Ok(roam_proto::local::LocalMsg::Placed { node }) => Ok(node),
            Ok(other) => Err(RpcError::new(
                Code::CommunicationFailed,
                format!("unexpected answer from roamd: {other:?}"),
            )),
            Err(e) => Err(e),
        }
    }

    /// Reads one worker's replies until it goes away.
    fn read_replies(&self, w: Arc<Worker>, stream: TcpStream, max: usize) {
        let mut r = BufReader::with_capacity(256 * 1024, stream);
        let why = loop {
            match proto::read_frame_head(&mut r, max) {
                Ok(Some((proto::REPLY, len))) => {
                    let mut body = Body::new(&mut r, len, "reply");
                    if let Err(e) = self.on_reply(&w, &mut body) {
                        break format!("bad reply: {e}");
                    }
                }
                Ok(Some((kind, _))) => break format!("unexpected message {kind}"),
                Ok(None) => break "it closed the connection".to_string(),
                Err(e) => break e.to_string(),
            }
        };
        self.worker_lost(&w, &why);
    }

    /// Takes one reply off the stream. Values are decoded straight into
    /// their arrays, without the lock held.
    fn on_reply<R: std::io::Read>(&self, w: &Worker, body: &mut Body<R>) -> Result<(), DataError> {
        let id = u64::from_be_bytes(body.take()?);
        let [status] = body.take::<1>()?;
        let wanted = i32::try_from(id).ok().and_then(|id| {
            let mut st = self.lock();
            let s = st.sessions.get_mut(&id)?;
            if s.worker != w.id || s.done.is_some() {
                return None;
            }
            // The reply's arrays go into the call's OUT and INOUT ones
            // (no allocation, no fresh pages), which are the caller's no
            // more: the call is not sent again once its reply comes.
            let spare = match (status, Arc::get_mut(&mut s.args)) {
                (proto::OK, Some(args)) => args
                    .iter_mut()
                    .zip(&s.func.params)
                    .map(|(a, p)| {
                        if p.mode.returned() {
                            std::mem::replace(a, Data::Char(Vec::new()))
                        } else {
                            Data::Char(Vec::new())
                        }
                    })
                    .collect(),
                _ => Vec::new(),
            };
            Some((id, s.func.clone(), s.counts.clone(), spare))
        });
        let Some((id, func, counts, spare)) = wanted else {
            // A cancelled or timed-out call's late answer.
            return body.skip_rest();
        };
        let result = match status {
            proto::OK => data::decode_reply(&func, &counts, body, w.order, spare),
            _ => body.rest(64 * 1024).map(|m| Vec::from([Data::Str(m)])),
        };
        let corrupt = result.as_ref().err().cloned();
        let result = match (status, result) {
            (_, Err(e)) => Err(RpcError::new(
                Code::CommunicationFailed,
                format!("corrupt reply from {}: {e}", w.node),
            )),
            (proto::OK, Ok(v)) => Ok(v),
            (status, Ok(mut m)) => {
                let Some(Data::Str(m)) = m.pop() else {
                    unreachable!("a message")
                };
                let m = String::from_utf8_lossy(&m).into_owned();
                Err(match status {
                    proto::NO_FUNCTION => RpcError::new(Code::FunctionNotFound, m),
                    _ => RpcError::new(
                        Code::SessionFailed,
                        format!("{} on {}: {m}", func.name, w.node),
                    ),
                })
            }
        };
        let mut st = self.lock();
        if st.sessions.get(&id).is_some_and(|s| s.done.is_none()) {
            w.outstanding.fetch_sub(1, Ordering::SeqCst);
            self.complete(&mut st, id, result);
        }
        drop(st);
        match corrupt {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Marks session `id` done with `result` (running its hook first).
    fn complete(&self, st: &mut State, id: i32, mut result: Result<Vec<Data>, RpcError>) {
        let Some(s) = st.sessions.get_mut(&id) else {
            return;
        };
        if let (Ok(v), Some(hook)) = (&mut result, s.hook.take()) {
            hook(v);
        }
        if result.is_err() {
            st.failed = Some(id);
        }
        let s = st.sessions.get_mut(&id).expect("looked up above");
        s.done = Some(result);
        for wk in s.wakers.drain(..) {
            wk.wake();
        }
        self.inner.cv.notify_all();
    }

    /// A worker is gone: its calls fail, or run again elsewhere.
    fn worker_lost(&self, w: &Worker, why: &str) {
        w.dead.store(true, Ordering::SeqCst);
        // Its proxy ends with the remote process: give it a moment to
        // report how (a crash, an exit status), then make sure.
        let status = {
            let mut c = w.child.lock().unwrap_or_else(|p| p.into_inner());
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                match c.try_wait() {
                    Ok(Some(s)) => break Some(s),
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    _ => {
                        let _ = c.kill();
                        break c.wait().ok();
                    }
                }
            }
        };
        let why = match status {
            Some(s) if !self.inner.closing.load(Ordering::SeqCst) => {
                format!("{why}; the worker ended: {s}")
            }
            _ => why.to_string(),
        };
        let mut st = self.lock();
        st.workers.remove(&w.id);
        for pool in st.pools.values_mut() {
            pool.retain(|&i| i != w.id);
        }
        let ids: Vec<i32> = st
            .sessions
            .iter()
            .filter(|(_, s)| s.worker == w.id && s.done.is_none())
            .map(|(&i, _)| i)
            .collect();
        let mut again = Vec::new();
        for id in ids {
            let s = st.sessions.get_mut(&id).expect("listed above");
            if s.pooled && s.retries_left > 0 {
                s.retries_left -= 1;
                again.push(id);
            } else {
                let msg = format!("worker on {} lost: {why}", w.node);
                self.complete(
                    &mut st,
                    id,
                    Err(RpcError::new(Code::CommunicationFailed, msg)),
                );
            }
        }
        drop(st);
        if !again.is_empty() {
            tracing::info!(
                "worker on {} lost ({why}): running {} call(s) again",
                w.node,
                again.len()
            );
            let client = self.clone();
            std::thread::spawn(move || {
                for id in again {
                    if let Err(e) = client.redispatch(id) {
                        let mut st = client.lock();
                        client.complete(&mut st, id, Err(e));
                    }
                }
            });
        }
    }

    /// Sends a pooled session's call to another worker.
    fn redispatch(&self, id: i32) -> Result<(), RpcError> {
        let (exe, args) = {
            let st = self.lock();
            let s = st
                .sessions
                .get(&id)
                .ok_or_else(|| RpcError::new(Code::InvalidSessionId, "session gone"))?;
            (s.exe, s.args.clone())
        };
        let w = self.pooled_worker(exe)?;
        self.send(id, &w, &args)
    }

    /// The least busy worker of `exe`'s pool, or a new one.
    fn pooled_worker(&self, exe: usize) -> Result<Arc<Worker>, RpcError> {
        let (best, size) = {
            let st = self.lock();
            let pool: Vec<Arc<Worker>> = st
                .pools
                .get(&exe)
                .into_iter()
                .flatten()
                .filter_map(|i| st.workers.get(i).cloned())
                .filter(|w| !w.dead.load(Ordering::SeqCst))
                .collect();
            let best = pool
                .iter()
                .min_by_key(|w| w.outstanding.load(Ordering::SeqCst))
                .cloned();
            (best, pool.len())
        };
        if let Some(w) = &best {
            // An idle worker, or a pool at its size: no new worker.
            if w.outstanding.load(Ordering::SeqCst) == 0 || size >= self.pool_cap(exe)? {
                return Ok(w.clone());
            }
        }
        let id = match (self.start_worker(exe, None), best) {
            (Ok(id), _) => id,
            // No node takes another (parallel mode: one process per
            // node): the least busy worker takes the call.
            (Err(e), Some(w)) if e.code == Code::ServerNotFound => return Ok(w),
            (Err(e), _) => return Err(e),
        };
        let mut st = self.lock();
        st.pools.entry(exe).or_default().push(id);
        st.workers
            .get(&id)
            .cloned()
            .ok_or_else(|| RpcError::new(Code::CommunicationFailed, "the new worker died at once"))
    }

    /// How many workers a default handle's pool of `exe` may have: one per
    /// node it may run on, times `workers_per_node`. The count of nodes
    /// that are up is asked of roamd at most once a second.
    fn pool_cap(&self, exe: usize) -> Result<usize, RpcError> {
        let e = &self.inner.cfg.executables[exe];
        let n = if e.nodes.is_empty() {
            let mut cached = self
                .inner
                .up_nodes
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match *cached {
                Some((at, n)) if at.elapsed() < Duration::from_secs(1) => n,
                _ => {
                    let n = self
                        .nodes()?
                        .iter()
                        .filter(|n| n.state == roam_proto::types::NodeState::Up)
                        .count();
                    *cached = Some((Instant::now(), n));
                    n
                }
            }
        } else {
            e.nodes.len()
        };
        Ok(n.max(1) * self.inner.cfg.workers_per_node)
    }

    fn send(&self, id: i32, w: &Worker, args: &[Data]) -> Result<(), RpcError> {
        let func = {
            let mut st = self.lock();
            let s = st
                .sessions
                .get_mut(&id)
                .ok_or_else(|| RpcError::new(Code::InvalidSessionId, "session gone"))?;
            s.worker = w.id;
            w.outstanding.fetch_add(1, Ordering::SeqCst);
            s.func.clone()
        };
        // Arrays go straight from the caller's values when the worker's
        // byte order allows.
        let pieces = data::encode(&func, args, Dir::Call, w.order)
            .map_err(|e| RpcError::new(Code::OtherErrorCode, e.to_string()))?;
        let head = proto::call_head(id as u64, &func.name);
        let mut parts: Vec<&[u8]> = vec![&head];
        parts.extend(pieces.iter().map(|p| p.bytes()));
        let mut wr = w.writer.lock().unwrap_or_else(|p| p.into_inner());
        let sent = proto::write_frame_parts(&mut *wr, proto::CALL, &parts);
        if let Err(e) = sent.and_then(|_| wr.flush()) {
            drop(wr);
            // The reader sees the end too and fails or retries the call.
            let _ = w
                .writer
                .lock()
                .map(|s| s.shutdown(std::net::Shutdown::Both));
            tracing::debug!("send to worker on {}: {e}", w.node);
        }
        Ok(())
    }

    /// Starts a call of `h` with `args` (one per parameter; OUT ones may be
    /// empty) and returns its session id.
    pub fn call_async(
        &self,
        h: &Handle,
        args: Vec<Data>,
        hook: Option<Hook>,
    ) -> Result<i32, RpcError> {
        // Checked before anything starts (in this machine's order, which
        // borrows the arrays: nothing is copied).
        data::encode(&h.func, &args, Dir::Call, Order::native())
            .map_err(|e| RpcError::new(Code::OtherErrorCode, e.to_string()))?;
        let counts = data::counts(&h.func, &args)
            .map_err(|e| RpcError::new(Code::OtherErrorCode, e.to_string()))?;
        let w = match &h.bound {
            Some((server, cur)) => {
                let mut cur = cur.lock().unwrap_or_else(|p| p.into_inner());
                let alive = cur.and_then(|i| self.lock().workers.get(&i).cloned());
                match alive.filter(|w| !w.dead.load(Ordering::SeqCst)) {
                    Some(w) => w,
                    None => {
                        let id = self.start_worker(h.exe, Some(server))?;
                        *cur = Some(id);
                        self.lock().workers.get(&id).cloned().ok_or_else(|| {
                            RpcError::new(Code::CommunicationFailed, "the new worker died at once")
                        })?
                    }
                }
            }
            None => self.pooled_worker(h.exe)?,
        };
        let args = Arc::new(args);
        let id = {
            let mut st = self.lock();
            let id = st.next_session;
            st.next_session = st.next_session.checked_add(1).unwrap_or(1);
            st.sessions.insert(
                id,
                Session {
                    func: h.func.clone(),
                    exe: h.exe,
                    worker: w.id,
                    pooled: h.bound.is_none(),
                    counts,
                    args: args.clone(),
                    retries_left: self.inner.cfg.retries,
                    deadline: self.inner.cfg.timeout.map(|t| Instant::now() + t),
                    hook,
                    done: None,
                    wakers: Vec::new(),
                },
            );
            id
        };
        self.send(id, &w, &args)?;
        Ok(id)
    }

    /// Whether session `id` is done (it stays until waited for).
    pub fn probe(&self, id: i32) -> Result<bool, RpcError> {
        let st = self.lock();
        st.sessions
            .get(&id)
            .map(|s| s.done.is_some())
            .ok_or_else(|| RpcError::new(Code::InvalidSessionId, format!("no session {id}")))
    }

    /// The sessions not yet waited for.
    pub fn sessions(&self) -> Vec<i32> {
        let mut v: Vec<i32> = self.lock().sessions.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Fails sessions past their deadline; stops their workers.
    fn expire(&self, st: &mut State) {
        let now = Instant::now();
        let late: Vec<(i32, u32)> = st
            .sessions
            .iter()
            .filter(|(_, s)| s.done.is_none() && s.deadline.is_some_and(|d| d <= now))
            .map(|(&i, s)| (i, s.worker))
            .collect();
        for (id, worker) in late {
            let msg = format!(
                "timed out after {:?}",
                self.inner.cfg.timeout.unwrap_or_default()
            );
            self.complete(st, id, Err(RpcError::new(Code::SessionFailed, msg)));
            if let Some(w) = st.workers.get(&worker) {
                w.outstanding.fetch_sub(1, Ordering::SeqCst);
                stop_worker(w);
            }
        }
    }

    /// Waits until `pick` finds a session among the done ones; `pick`
    /// returns Err to give up.
    fn wait_for<T>(
        &self,
        mut pick: impl FnMut(&mut State) -> Option<Result<T, RpcError>>,
    ) -> Result<T, RpcError> {
        let mut st = self.lock();
        loop {
            self.expire(&mut st);
            if let Some(r) = pick(&mut st) {
                return r;
            }
            st = self
                .inner
                .cv
                .wait_timeout(st, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits for session `id` and takes its result.
    pub fn wait(&self, id: i32) -> Result<Vec<Data>, RpcError> {
        self.wait_for(|st| match st.sessions.get(&id) {
            None => Some(Err(RpcError::new(
                Code::InvalidSessionId,
                format!("no session {id}"),
            ))),
            Some(s) if s.done.is_some() => {
                let s = st.sessions.remove(&id).expect("present");
                Some(s.done.expect("checked"))
            }
            Some(_) => None,
        })
    }

    /// Waits for any of `ids` and returns its id and result.
    pub fn wait_or(&self, ids: &[i32]) -> Result<Finished, RpcError> {
        if let Some(bad) = ids.iter().find(|i| !self.lock().sessions.contains_key(i)) {
            return Err(RpcError::new(
                Code::InvalidSessionId,
                format!("no session {bad}"),
            ));
        }
        self.wait_for(|st| {
            let id = *ids
                .iter()
                .find(|i| st.sessions.get(i).is_some_and(|s| s.done.is_some()))?;
            let s = st.sessions.remove(&id).expect("present");
            Some(Ok((id, s.done.expect("checked"))))
        })
    }

    /// Waits for any session at all; `None` when there is none.
    pub fn wait_any(&self) -> Result<Option<Finished>, RpcError> {
        let ids = self.sessions();
        if ids.is_empty() {
            return Ok(None);
        }
        self.wait_or(&ids).map(Some)
    }

    /// Cancels session `id`: it fails, and its worker is stopped (a
    /// running function cannot be interrupted any other way); the handle
    /// starts a new worker at its next call.
    pub fn cancel(&self, id: i32) -> Result<(), RpcError> {
        let mut st = self.lock();
        let s = st
            .sessions
            .get(&id)
            .ok_or_else(|| RpcError::new(Code::InvalidSessionId, format!("no session {id}")))?;
        if s.done.is_some() {
            return Ok(());
        }
        let worker = s.worker;
        self.complete(
            &mut st,
            id,
            Err(RpcError::new(Code::SessionFailed, "cancelled")),
        );
        if let Some(w) = st.workers.get(&worker) {
            w.outstanding.fetch_sub(1, Ordering::SeqCst);
            stop_worker(w);
        }
        Ok(())
    }

    /// The last session that failed.
    pub fn failed_session(&self) -> Option<i32> {
        self.lock().failed
    }

    /// Says goodbye to every worker and waits for them to end.
    pub fn shutdown(&self) {
        self.inner.closing.store(true, Ordering::SeqCst);
        let workers: Vec<Arc<Worker>> = self.lock().workers.values().cloned().collect();
        for w in &workers {
            let mut wr = w.writer.lock().unwrap_or_else(|p| p.into_inner());
            let _ = proto::write_frame(&mut *wr, proto::BYE, &[]);
            let _ = wr.flush();
        }
        for w in &workers {
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut c = w.child.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }
    }

    /// Nodes the workers run on now, by worker id (for tests and tools).
    pub fn worker_nodes(&self) -> Vec<String> {
        let st = self.lock();
        let mut v: Vec<(u32, String)> = st
            .workers
            .values()
            .map(|w| (w.id, w.node.clone()))
            .collect();
        v.sort();
        v.into_iter().map(|(_, n)| n).collect()
    }
}

/// Kills a worker's proxy (so roam kills the remote process); its reader
/// then sees the end.
fn stop_worker(w: &Worker) {
    w.dead.store(true, Ordering::SeqCst);
    let _ = w.child.lock().map(|mut c| c.kill());
    let _ = w
        .writer
        .lock()
        .map(|s| s.shutdown(std::net::Shutdown::Both));
}

impl Handle {
    pub fn function(&self) -> &Function {
        &self.func
    }

    /// Calls and waits: the OUT and INOUT values, in order.
    pub fn call(&self, args: Vec<Data>) -> Result<Vec<Data>, RpcError> {
        let id = self.client.call_async(self, args, None)?;
        self.client.wait(id)
    }

    /// Starts a call; wait with [`Client::wait`] (or the wait family), or
    /// await [`Handle::call_future`].
    pub fn call_async(&self, args: Vec<Data>) -> Result<i32, RpcError> {
        self.client.call_async(self, args, None)
    }

    /// A call as a future, for async programs.
    pub fn call_future(&self, args: Vec<Data>) -> Result<Call, RpcError> {
        let id = self.client.call_async(self, args, None)?;
        Ok(Call {
            client: self.client.clone(),
            id,
        })
    }

    /// The node of a bound handle.
    pub fn server(&self) -> Option<&str> {
        self.bound.as_ref().map(|(s, _)| s.as_str())
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // A bound handle's worker ends with it.
        if let Some((_, cur)) = &self.bound {
            let id = *cur.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(w) = id.and_then(|i| self.client.lock().workers.get(&i).cloned()) {
                let mut wr = w.writer.lock().unwrap_or_else(|p| p.into_inner());
                let _ = proto::write_frame(&mut *wr, proto::BYE, &[]);
                let _ = wr.flush();
            }
        }
    }
}

/// A call in flight, as a future.
pub struct Call {
    client: Client,
    id: i32,
}

impl Call {
    pub fn id(&self) -> i32 {
        self.id
    }
}

impl std::future::Future for Call {
    type Output = Result<Vec<Data>, RpcError>;
    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let mut st = self.client.lock();
        self.client.expire(&mut st);
        match st.sessions.get_mut(&self.id) {
            None => Poll::Ready(Err(RpcError::new(Code::InvalidSessionId, "session gone"))),
            Some(s) if s.done.is_some() => {
                let s = st.sessions.remove(&self.id).expect("present");
                Poll::Ready(s.done.expect("checked"))
            }
            Some(s) => {
                s.wakers.push(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if Arc::strong_count(&self.inner) == 1 {
            self.shutdown();
        }
    }
}

/// Accepts workers' connections and authenticates them.
fn accept_loop(listener: TcpListener, inner: std::sync::Weak<Inner>) {
    for conn in listener.incoming() {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let Ok(stream) = conn else { continue };
        std::thread::spawn(move || {
            if let Err(e) = handshake(&inner, stream) {
                tracing::warn!("a worker's connection was refused: {e}");
            }
        });
    }
}

fn handshake(inner: &Inner, stream: TcpStream) -> Result<(), ProtoError> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let _ = stream.set_nodelay(true);
    let mut s = stream;
    let body = proto::expect_frame(&mut s, proto::HELLO, proto::HANDSHAKE_MAX)?;
    let hello = Hello::decode(&body)?;
    let key = {
        let st = inner.st.lock().unwrap_or_else(|p| p.into_inner());
        match st.pending.get(&hello.id) {
            Some(p) if p.conn.is_none() => p.key,
            _ => return Err(ProtoError::Auth("no worker of this id is expected")),
        }
    };
    let order = Order::agree(Order::native(), hello.order);
    let (auth, ours) = proto::client_auth(&key, &hello, order);
    proto::write_frame(&mut s, proto::AUTH, &auth)?;
    let ok = proto::expect_frame(&mut s, proto::AUTH_OK, proto::HANDSHAKE_MAX)?;
    proto::client_check(&key, &ours, &hello, &ok)?;
    s.set_read_timeout(None)?;
    let mut st = inner.st.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = st.pending.get_mut(&hello.id) {
        p.conn = Some(Ok((s, hello, order)));
        inner.cv.notify_all();
    }
    Ok(())
}

fn callback_addresses(nodes: &[roam_proto::types::NodeInfo], port: u16) -> String {
    let mut addrs: Vec<String> = Vec::new();
    for n in nodes {
        if let Some(ip) = local_ip_toward(&n.addr) {
            let a = SocketAddr::new(ip, port).to_string();
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
    }
    addrs.push(SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port).to_string());
    addrs.join(",")
}

/// The address of this machine on the route toward `addr` ("host:port").
fn local_ip_toward(addr: &str) -> Option<IpAddr> {
    let sa: SocketAddr = addr.parse().ok().or_else(|| {
        let ip: IpAddr = addr.parse().ok()?;
        Some(SocketAddr::new(ip, 9))
    })?;
    let sock = UdpSocket::bind(if sa.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).ok()?;
    sock.connect(sa).ok()?;
    Some(sock.local_addr().ok()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_files_are_read_and_checked() {
        let dir = std::env::temp_dir().join(format!("roam-rpc-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("m.idl"), "Define f(IN int n, OUT double x[n])").unwrap();
        let cfg = dir.join("client.toml");
        std::fs::write(
            &cfg,
            "timeout_ms = 500\nretries = 2\n[[executable]]\npath = \"w\"\nidl = \"m.idl\"\nnodes = [\"n1\"]\n",
        )
        .unwrap();
        let c = Config::load(&cfg).unwrap();
        assert_eq!(c.timeout, Some(Duration::from_millis(500)));
        assert_eq!(c.retries, 2);
        assert_eq!(c.executables[0].path, dir.join("w"));
        assert_eq!(c.executables[0].nodes, vec!["n1".to_string()]);
        assert!(c.executables[0].idl.function("f").is_some());

        std::fs::write(&cfg, "[[executable]]\npath = \"w\"\nidl = \"bad.idl\"\n").unwrap();
        std::fs::write(dir.join("bad.idl"), "Define f(IN int n, OUT double x[m])").unwrap();
        let e = Config::load(&cfg).unwrap_err();
        assert_eq!(e.code, Code::ConfigFileError);
        assert!(e.msg.contains("line 1, column 33"), "{e}");

        std::fs::write(
            &cfg,
            "[[executable]]\nbuilds = [\"x86/w\", \"s390x/w\"]\nidl = \"m.idl\"\nship = false\n",
        )
        .unwrap();
        let c = Config::load(&cfg).unwrap();
        let e = &c.executables[0];
        assert_eq!(e.builds, vec![dir.join("x86/w"), dir.join("s390x/w")]);
        assert_eq!(e.path, dir.join("x86/w"));
        // Confined by default only when shipped.
        assert!(!e.ship && !e.confine);
        std::fs::write(&cfg, "[[executable]]\npath = \"w\"\nidl = \"m.idl\"\n").unwrap();
        let e = &Config::load(&cfg).unwrap().executables[0];
        assert!(e.ship && e.confine);
        std::fs::write(
            &cfg,
            "[[executable]]\npath = \"w\"\nidl = \"m.idl\"\nconfine = false\n",
        )
        .unwrap();
        let e = &Config::load(&cfg).unwrap().executables[0];
        assert!(e.ship && !e.confine);
        std::fs::write(&cfg, "[[executable]]\nidl = \"m.idl\"\n").unwrap();
        let e = Config::load(&cfg).unwrap_err();
        assert!(e.msg.contains("no path or builds"), "{e}");

        std::fs::write(&cfg, "tiemout_ms = 5\n").unwrap();
        assert_eq!(Config::load(&cfg).unwrap_err().code, Code::ConfigFileError);
        let e = Config::load(&dir.join("none.toml")).unwrap_err();
        assert_eq!(e.code, Code::ConfigFileNotFound);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_route_toward_loopback_is_loopback() {
        assert_eq!(
            local_ip_toward("127.0.0.1:7070"),
            Some(IpAddr::from([127, 0, 0, 1]))
        );
        assert_eq!(local_ip_toward("not an address"), None);
    }

    #[test]
    fn error_codes_have_the_standard_numbers() {
        assert_eq!(Code::NoError as i32, 0);
        assert_eq!(Code::SessionFailed as i32, 10);
        assert_eq!(Code::AlreadyInitialized as i32, 15);
    }
}
