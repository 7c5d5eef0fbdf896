//! The testbed: a real multi-node roam cluster on one machine.
//!
//! A testbed with id `K` (1..=200, the first free one, taken atomically by
//! creating `/run/roam-testbed/K`) is:
//!
//! - a state directory `/run/roam-testbed/K/` holding `creds/` (cluster CA,
//!   `home` and `nN` certificates), `home.toml` and `nN.toml` (roamd
//!   configurations), `home.log` and `nN.log` (each daemon's stderr and
//!   stdout, appended), `home.sock` and `nN.sock` (each daemon's CLI socket)
//!   and `testbed.json` (everything [`down_id`] needs);
//! - a bridge `roamtbK` in the host's network namespace with address
//!   `10.77.K.1/24`: the home node is the host itself;
//! - for node `nI` (I = 1..=N): a network namespace `roamtbK-nI` whose
//!   `eth0` (address `10.77.K.(10+I)/24`, default route via the bridge) is
//!   the peer of the host-side veth `rtbK-I` on the bridge;
//! - one `roamd` per node: the home's in the host's namespaces, listening on
//!   `10.77.K.1:7170`; each node's in its network namespace and in a mount
//!   namespace of its own, where `/` is recursively private and `/tmp` is a
//!   fresh tmpfs (so what a node writes in `/tmp` neither the home nor other
//!   nodes see, and what the home has in `/tmp` no node sees).
//!
//! Daemons are detached (new session, stdin `/dev/null`, output appended to
//! their log) and are grandchildren of the process that started them, so
//! they outlive it (`roam testbed up`) and it never has zombies to reap.
//! Each is identified by pid *and* start time, so a recycled pid is never
//! signalled, and carries `ROAM_TESTBED=K` and `ROAM_TESTBED_NODE=NAME` in
//! its environment. A roamd under `/tmp` is copied into the state directory
//! first (nodes exec it after their fresh `/tmp` hides the original).
//!
//! Teardown SIGTERMs the daemons, SIGKILLs whatever remains of them (their
//! sessions, processes carrying the environment marker or started with a
//! config from the state directory) and every process left in the nodes'
//! network namespaces, then deletes veths, namespaces, bridge and, last, the
//! state directory (while it exists, the id stays taken).
//!
//! A [`Testbed`] tears everything down when dropped, unless [`Testbed::keep`]
//! hands it over to a later [`down_id`] (`roam testbed down`).

mod client;
pub mod foreign;
mod ip;
mod procs;

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use roam_core::config::{
    BalanceConfig, Config, ConfigError, CpuSource, Files, HomeConfig, IdentityMode,
    MembershipConfig, NodeConfig, Role, RunnerConfig, TlsConfig,
};
use roam_elf::Arch;
use roam_proto::types::{Mode, NodeInfo, NodeState};
use roam_sys::ns::{open_ns, ChildSetup};
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use client::query_nodes;
use procs::DaemonRec;

/// Where testbeds keep their state, one directory per testbed id.
pub const STATE_ROOT: &str = "/run/roam-testbed";
/// The largest testbed id (ids are the third byte of `10.77.K.0/24`).
pub const MAX_ID: u32 = 200;
/// The largest number of nodes in one testbed.
pub const MAX_NODES: u32 = 200;
/// The port the home daemon listens on.
pub const HOME_PORT: u16 = 7170;
/// The name of the home node.
pub const HOME: &str = "home";
/// Set in every daemon's environment to the testbed's id (teardown finds
/// daemons and what they started by it).
pub const TESTBED_ENV: &str = "ROAM_TESTBED";
/// Set in every daemon's environment to its node name.
pub const TESTBED_NODE_ENV: &str = "ROAM_TESTBED_NODE";
/// How long [`Testbed::up`] waits for every node to be up when
/// [`TestbedOpts::wait_ready`] is set.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`Testbed::stop_daemon`] waits after SIGTERM before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How to build a testbed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestbedOpts {
    /// Number of compute nodes (`n1`..`nN`); 0 gives a home alone.
    pub nodes: u32,
    /// The `roamd` program to run (started as `roamd --config FILE`).
    pub roamd: PathBuf,
    /// Membership heartbeat interval, for every daemon's config.
    pub heartbeat_ms: u64,
    /// Membership timeout, for every daemon's config.
    pub timeout_ms: u64,
    /// How long a node keeps its processes while the home is away.
    pub orphan_grace_ms: u64,
    /// Whether [`Testbed::up`] waits (up to [`READY_TIMEOUT`]) until the home
    /// reports every node up.
    pub wait_ready: bool,
    /// Emulated nodes: node `n(i+1)` declares `arch[i]` and runs it, and
    /// only it, through qemu-user (`qemu-ARCH-static`); the nodes after
    /// them are native.
    pub arch: Vec<Arch>,
    /// Architectures every native node also runs through qemu-user.
    pub runners: Vec<Arch>,
    /// Remote processes see the home's files (`files = "home"`), through
    /// the remote file system, instead of the node's own tree.
    pub home_files: bool,
    /// Whose identity remote processes see (`identity` in the nodes'
    /// configs): the home's by default.
    pub identity: IdentityMode,
    /// The home's balancer settings (`[balance]`): off by default.
    pub balance: BalanceConfig,
}

impl TestbedOpts {
    /// `nodes` nodes running `roamd`, heartbeat 1 s, timeout 4 s, orphan
    /// grace 60 s, waiting until ready.
    pub fn new(nodes: u32, roamd: PathBuf) -> Self {
        Self {
            nodes,
            roamd,
            heartbeat_ms: 1000,
            timeout_ms: 4000,
            orphan_grace_ms: 60_000,
            wait_ready: true,
            arch: Vec::new(),
            runners: Vec::new(),
            home_files: false,
            identity: IdentityMode::Home,
            balance: BalanceConfig::default(),
        }
    }
}

/// The runner the testbed configures for `arch`: qemu-user's static build,
/// found on PATH (its bare name if not, which the node then reports as a
/// broken runner when it joins), with `-L` the cross libc when Debian's is
/// installed, so dynamically linked programs find their loader.
pub fn qemu_runner(arch: Arch) -> RunnerConfig {
    let name = arch
        .qemu_static_binary()
        .unwrap_or_else(|| format!("qemu-{arch}-static"));
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(&name))
        .find(|p| p.is_file());
    let path = found.unwrap_or_else(|| PathBuf::from(name));
    let arch_name = arch.to_string();
    match foreign::targets()
        .iter()
        .find(|t| t.arch == arch_name && Path::new(t.sysroot).is_dir())
    {
        Some(t) => RunnerConfig::Full {
            path,
            args: vec!["-L".into(), t.sysroot.into()],
        },
        None => RunnerConfig::Path(path),
    }
}

/// Errors building, driving or tearing down a testbed.
#[derive(Debug, Error)]
pub enum TestbedError {
    #[error("invalid testbed options: {0}")]
    BadOpts(String),
    #[error("no free testbed id: {STATE_ROOT}/1 to {STATE_ROOT}/{MAX_ID} all exist (`roam testbed down` removes stale ones)")]
    NoFreeId,
    #[error("cannot {what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot run `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("cannot create the testbed's cluster credentials in {}", dir.display())]
    Creds {
        dir: PathBuf,
        #[source]
        source: roam_net::creds::CredsError,
    },
    #[error("generated an invalid config for {name}")]
    Config {
        name: String,
        #[source]
        source: Box<ConfigError>,
    },
    #[error("cannot start the {name} daemon ({})", roamd.display())]
    StartDaemon {
        name: String,
        roamd: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("testbed {id} has no node named '{name}'")]
    UnknownNode { id: u32, name: String },
    #[error("the {name} daemon of testbed {id} is not running")]
    NotRunning { id: u32, name: String },
    #[error("the {name} daemon of testbed {id} is already running (pid {pid})")]
    AlreadyRunning { id: u32, name: String, pid: u32 },
    #[error("the {name} daemon (pid {pid}) did not exit after SIGKILL")]
    Unkillable { name: String, pid: u32 },
    #[error("no testbed {id}")]
    NoSuchTestbed { id: u32 },
    #[error("invalid testbed state file {}", path.display())]
    BadState {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot talk to roamd at {}", socket.display())]
    LocalIo {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("bad message from roamd at {}", socket.display())]
    LocalProto {
        socket: PathBuf,
        #[source]
        source: roam_proto::ProtoError,
    },
    #[error("roamd at {} {problem}", socket.display())]
    LocalAnswer { socket: PathBuf, problem: String },
    #[error("the {name} daemon exited ({when}); end of {}:\n{tail}", log.display())]
    DaemonDied {
        name: String,
        when: String,
        log: PathBuf,
        tail: String,
    },
    #[error("cannot wait for {count} nodes up: only {running} node daemons run")]
    TooFewDaemons { count: usize, running: usize },
    #[error("timed out after {waited:?} waiting for {count} nodes up ({last}); end of {}:\n{tail}", log.display())]
    NotReady {
        count: usize,
        waited: Duration,
        last: String,
        log: PathBuf,
        tail: String,
    },
    #[error("teardown of testbed {id} left things behind: {}", problems.join("; "))]
    Teardown { id: u32, problems: Vec<String> },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> TestbedError + 'a {
    move |source| TestbedError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// One compute node, as recorded in `testbed.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NodeRec {
    name: String,
    netns: String,
    /// The host side of its veth pair.
    veth: String,
    addr: Ipv4Addr,
    daemon: Option<DaemonRec>,
}

/// What `testbed.json` holds: everything needed to drive or tear down the
/// testbed from another process.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    id: u32,
    dir: PathBuf,
    bridge: String,
    bridge_addr: Ipv4Addr,
    roamd: PathBuf,
    home: Option<DaemonRec>,
    nodes: Vec<NodeRec>,
}

fn state_dir(id: u32) -> PathBuf {
    Path::new(STATE_ROOT).join(id.to_string())
}
fn bridge_name(id: u32) -> String {
    format!("roamtb{id}")
}
fn bridge_addr(id: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, id as u8, 1)
}
fn netns_prefix(id: u32) -> String {
    format!("roamtb{id}-n")
}
fn veth_prefix(id: u32) -> String {
    format!("rtb{id}-")
}

impl State {
    fn new(id: u32, roamd: PathBuf) -> Self {
        State {
            id,
            dir: state_dir(id),
            bridge: bridge_name(id),
            bridge_addr: bridge_addr(id),
            roamd,
            home: None,
            nodes: Vec::new(),
        }
    }

    fn json_path(dir: &Path) -> PathBuf {
        dir.join("testbed.json")
    }

    fn load(id: u32) -> Result<State, TestbedError> {
        let path = Self::json_path(&state_dir(id));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(TestbedError::NoSuchTestbed { id })
            }
            Err(source) => {
                return Err(TestbedError::Io {
                    what: "read",
                    path,
                    source,
                })
            }
        };
        serde_json::from_str(&text).map_err(|source| TestbedError::BadState { path, source })
    }

    /// Writes `testbed.json` atomically.
    fn save(&self) -> Result<(), TestbedError> {
        let path = Self::json_path(&self.dir);
        let tmp = self.dir.join(".testbed.json.tmp");
        let text = serde_json::to_string_pretty(self).expect("a testbed state always serialises");
        std::fs::write(&tmp, text).map_err(io_err("write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err("write", &path))
    }

    fn node(&self, name: &str) -> Option<&NodeRec> {
        self.nodes.iter().find(|n| n.name == name)
    }

    fn is_member(&self, name: &str) -> bool {
        name == HOME || self.node(name).is_some()
    }

    fn daemon(&self, name: &str) -> Option<DaemonRec> {
        if name == HOME {
            self.home
        } else {
            self.node(name)?.daemon
        }
    }

    fn set_daemon(&mut self, name: &str, rec: Option<DaemonRec>) {
        if name == HOME {
            self.home = rec;
        } else if let Some(n) = self.nodes.iter_mut().find(|n| n.name == name) {
            n.daemon = rec;
        }
    }

    fn daemons(&self) -> Vec<(String, DaemonRec)> {
        let mut v: Vec<(String, DaemonRec)> =
            self.home.iter().map(|d| (HOME.to_string(), *d)).collect();
        v.extend(
            self.nodes
                .iter()
                .filter_map(|n| Some((n.name.clone(), n.daemon?))),
        );
        v
    }

    fn config_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.toml"))
    }
    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }
    fn socket_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.sock"))
    }
    fn stage_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("staged")
    }
    fn creds_dir(&self) -> PathBuf {
        self.dir.join("creds")
    }
    fn home_listen(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.bridge_addr, HOME_PORT))
    }

    fn config(&self, name: &str, opts: &TestbedOpts) -> Config {
        let creds = self.creds_dir();
        let is_home = name == HOME;
        Config {
            name: name.to_string(),
            role: if is_home { Role::Home } else { Role::Node },
            socket: self.socket_path(name),
            tls: TlsConfig {
                ca: creds.join("ca.pem"),
                cert: creds.join(format!("{name}.pem")),
                key: creds.join(format!("{name}.key")),
            },
            home: is_home.then(|| HomeConfig {
                listen: self.home_listen(),
                mode: Mode::Balance,
                export: PathBuf::from("/"),
            }),
            node: (!is_home).then(|| {
                // n1, n2... take the emulated architectures first.
                let index = name.trim_start_matches('n').parse::<usize>().unwrap_or(0);
                let emulated = index.checked_sub(1).and_then(|i| opts.arch.get(i)).copied();
                let runners = match emulated {
                    Some(a) => vec![a],
                    None => opts.runners.clone(),
                };
                NodeConfig {
                    home: self.home_listen(),
                    home_name: HOME.to_string(),
                    orphan_grace_ms: opts.orphan_grace_ms,
                    arch: emulated.map(|a| a.to_string()),
                    files: Some(if opts.home_files {
                        Files::Home
                    } else {
                        Files::Node
                    }),
                    files_mount: PathBuf::from("/run/roam/files"),
                    identity: opts.identity,
                    // Every node shares this machine's /proc/stat: each
                    // measures its own namespace's processes, and stands
                    // for a one-CPU machine.
                    cpu_source: CpuSource::Netns,
                    cpus: Some(1),
                    // Migrations go node to node, over the bridge.
                    peer_listen: Some(std::net::SocketAddr::from((
                        [0, 0, 0, 0],
                        roam_proto::DEFAULT_PEER_PORT,
                    ))),
                    runners: runners
                        .into_iter()
                        .map(|a| (a.to_string(), qemu_runner(a)))
                        .collect(),
                    stage_dir: self.stage_dir(name),
                    stage_max_mib: 256,
                    stage_cache_mib: 1024,
                }
            }),
            membership: MembershipConfig {
                heartbeat_ms: opts.heartbeat_ms,
                timeout_ms: opts.timeout_ms,
            },
            balance: opts.balance.clone(),
        }
    }
}

/// The last `lines` lines of a log file (or why it cannot be read).
fn log_tail(path: &Path, lines: usize) -> String {
    const MAX: u64 = 16 * 1024;
    let read = || -> io::Result<String> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(MAX)))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let tail = all[all.len().saturating_sub(lines)..].join("\n");
            if tail.is_empty() {
                "(empty)".to_string()
            } else {
                tail
            }
        }
        Err(e) => format!("(cannot read: {e})"),
    }
}

/// Takes the first free testbed id by creating its state directory.
fn allocate_id() -> Result<u32, TestbedError> {
    let root = Path::new(STATE_ROOT);
    std::fs::create_dir_all(root).map_err(io_err("create", root))?;
    for id in 1..=MAX_ID {
        let dir = state_dir(id);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(id),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(source) => {
                return Err(TestbedError::Io {
                    what: "create",
                    path: dir,
                    source,
                })
            }
        }
    }
    Err(TestbedError::NoFreeId)
}

/// A running testbed. Dropping it tears it down (best effort; never
/// panics), unless it was [`keep`](Testbed::keep)t or [`open`](Testbed::open)ed.
#[derive(Debug)]
pub struct Testbed {
    state: State,
    opts: TestbedOpts,
    /// Whether dropping this handle tears the testbed down.
    owned: bool,
}

impl Testbed {
    /// Builds a testbed: takes an id, makes credentials, the bridge, one
    /// network namespace per node and every config file, starts every
    /// daemon and (with `wait_ready`) waits until the home reports every node
    /// up. On any failure, tears down what it built and returns the error.
    pub fn up(opts: TestbedOpts) -> Result<Testbed, TestbedError> {
        if opts.nodes > MAX_NODES {
            return Err(TestbedError::BadOpts(format!(
                "{} nodes asked, at most {MAX_NODES} allowed",
                opts.nodes
            )));
        }
        if opts.arch.len() > opts.nodes as usize {
            return Err(TestbedError::BadOpts(format!(
                "{} emulated architectures for {} nodes: one per node at most",
                opts.arch.len(),
                opts.nodes
            )));
        }
        if opts.heartbeat_ms == 0 || opts.timeout_ms <= opts.heartbeat_ms {
            return Err(TestbedError::BadOpts(format!(
                "timeout_ms ({}) must be greater than heartbeat_ms ({}), which must not be 0",
                opts.timeout_ms, opts.heartbeat_ms
            )));
        }
        let roamd = std::fs::canonicalize(&opts.roamd).map_err(|source| TestbedError::Io {
            what: "find the roamd program",
            path: opts.roamd.clone(),
            source,
        })?;
        let id = allocate_id()?;
        let mut tb = Testbed {
            state: State::new(id, roamd),
            opts,
            owned: true,
        };
        // From here on, an early return drops `tb`, which tears it down.
        // A crashed earlier testbed with this id may have left things behind.
        remove_network(id, &[], &mut Vec::new());
        tb.state.save()?;
        if tb.state.roamd.starts_with("/tmp") {
            // Nodes get a fresh /tmp before they exec roamd: use a copy.
            let copy = tb.state.dir.join("roamd");
            if std::fs::hard_link(&tb.state.roamd, &copy).is_err() {
                std::fs::copy(&tb.state.roamd, &copy).map_err(io_err("copy roamd to", &copy))?;
            }
            tb.state.roamd = copy;
            tb.state.save()?;
        }
        tb.build()?;
        tb.start_all()?;
        if tb.opts.wait_ready {
            tb.wait_nodes_up(tb.opts.nodes as usize, READY_TIMEOUT)?;
        }
        Ok(tb)
    }

    fn build(&mut self) -> Result<(), TestbedError> {
        let id = self.state.id;
        let creds = self.state.creds_dir();
        let creds_err = |source| TestbedError::Creds {
            dir: creds.clone(),
            source,
        };
        roam_net::creds::init_cluster(&creds).map_err(creds_err)?;
        roam_net::creds::issue_node(&creds, HOME).map_err(creds_err)?;

        let bridge = self.state.bridge.clone();
        let prefix = format!("{}/24", self.state.bridge_addr);
        ip::ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip::ip(&["addr", "add", &prefix, "dev", &bridge])?;
        ip::ip(&["link", "set", &bridge, "up"])?;

        for i in 1..=self.opts.nodes {
            let node = NodeRec {
                name: format!("n{i}"),
                netns: format!("{}{i}", netns_prefix(id)),
                veth: format!("{}{i}", veth_prefix(id)),
                addr: Ipv4Addr::new(10, 77, id as u8, (10 + i) as u8),
                daemon: None,
            };
            roam_net::creds::issue_node(&creds, &node.name).map_err(creds_err)?;
            let (ns, veth) = (node.netns.clone(), node.veth.clone());
            let addr = format!("{}/24", node.addr);
            let gateway = self.state.bridge_addr.to_string();
            self.state.nodes.push(node);
            ip::ip(&["netns", "add", &ns])?;
            self.state.save()?;
            ip::ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip::ip(&["link", "set", &veth, "master", &bridge])?;
            ip::ip(&["link", "set", &veth, "up"])?;
            ip::ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip::ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip::ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip::ip(&["-n", &ns, "route", "add", "default", "via", &gateway])?;
        }

        for name in std::iter::once(HOME.to_string()).chain(self.node_names()) {
            let cfg = self.state.config(&name, &self.opts);
            let path = self.state.config_path(&name);
            // Check it the way roamd will read it.
            Config::parse(&path, &cfg.to_toml()).map_err(|source| TestbedError::Config {
                name: name.clone(),
                source: Box::new(source),
            })?;
            std::fs::write(&path, cfg.to_toml()).map_err(io_err("write", &path))?;
        }
        Ok(())
    }

    fn start_all(&mut self) -> Result<(), TestbedError> {
        self.start_daemon(HOME)?;
        for name in self.node_names() {
            self.start_daemon(&name)?;
        }
        Ok(())
    }

    /// A handle on testbed `id` built by another process (from its
    /// `testbed.json`). Dropping this handle leaves the testbed running;
    /// [`down`](Testbed::down) tears it down.
    pub fn open(id: u32) -> Result<Testbed, TestbedError> {
        let state = State::load(id)?;
        let opts = TestbedOpts::new(state.nodes.len() as u32, state.roamd.clone());
        Ok(Testbed {
            state,
            opts,
            owned: false,
        })
    }

    /// Leaves the testbed running when this handle goes away (for
    /// `roam testbed up`); returns its id for a later [`down_id`].
    pub fn keep(mut self) -> u32 {
        self.owned = false;
        self.state.id
    }

    /// The testbed's id `K`.
    pub fn id(&self) -> u32 {
        self.state.id
    }

    /// The state directory, `/run/roam-testbed/K`.
    pub fn dir(&self) -> &Path {
        &self.state.dir
    }

    /// The home daemon's CLI socket (for `ROAM_SOCKET`).
    pub fn socket(&self) -> PathBuf {
        self.state.socket_path(HOME)
    }

    /// The CLI socket of daemon `name` ("home" or "nN").
    pub fn socket_of(&self, name: &str) -> Option<PathBuf> {
        self.state
            .is_member(name)
            .then(|| self.state.socket_path(name))
    }

    /// Node `name`'s cache of executables shipped to it.
    pub fn stage_dir(&self, name: &str) -> PathBuf {
        self.state.stage_dir(name)
    }

    /// The log file of daemon `name` ("home" or "nN").
    pub fn log_path(&self, name: &str) -> Option<PathBuf> {
        self.state
            .is_member(name)
            .then(|| self.state.log_path(name))
    }

    /// The config file of daemon `name` ("home" or "nN").
    pub fn config_path(&self, name: &str) -> Option<PathBuf> {
        self.state
            .is_member(name)
            .then(|| self.state.config_path(name))
    }

    /// The compute nodes' names, `["n1", ...]`.
    pub fn node_names(&self) -> Vec<String> {
        self.state.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// The address of node `name` (the bridge's for "home").
    pub fn node_addr(&self, name: &str) -> Option<Ipv4Addr> {
        if name == HOME {
            return Some(self.state.bridge_addr);
        }
        Some(self.state.node(name)?.addr)
    }

    /// The network namespace of node `name` (`None` for "home": the host's).
    pub fn netns(&self, name: &str) -> Option<String> {
        Some(self.state.node(name)?.netns.clone())
    }

    /// The bridge's name, `roamtbK`.
    pub fn bridge(&self) -> &str {
        &self.state.bridge
    }

    /// The pid of daemon `name` ("home" or "nN") if it is running.
    pub fn daemon_pid(&self, name: &str) -> Option<u32> {
        let rec = self.state.daemon(name)?;
        procs::alive(&rec).then_some(rec.pid)
    }

    fn check_member(&self, name: &str) -> Result<(), TestbedError> {
        if self.state.is_member(name) {
            Ok(())
        } else {
            Err(TestbedError::UnknownNode {
                id: self.state.id,
                name: name.to_string(),
            })
        }
    }

    fn running(&self, name: &str) -> Result<DaemonRec, TestbedError> {
        self.check_member(name)?;
        self.state
            .daemon(name)
            .filter(procs::alive)
            .ok_or_else(|| TestbedError::NotRunning {
                id: self.state.id,
                name: name.to_string(),
            })
    }

    /// Kills daemon `name` ("home" or "nN") with SIGKILL and waits until it
    /// is gone (fault tests). What it started keeps running.
    pub fn kill_daemon(&mut self, name: &str) -> Result<(), TestbedError> {
        let rec = self.running(name)?;
        procs::signal(&rec, Signal::SIGKILL);
        if !procs::wait_gone(&[rec], STOP_TIMEOUT) {
            return Err(TestbedError::Unkillable {
                name: name.to_string(),
                pid: rec.pid,
            });
        }
        self.state.set_daemon(name, None);
        self.state.save()
    }

    /// Stops daemon `name` with SIGTERM and waits until it exits; after
    /// [`STOP_TIMEOUT`], kills it with SIGKILL.
    pub fn stop_daemon(&mut self, name: &str) -> Result<(), TestbedError> {
        let rec = self.running(name)?;
        procs::signal(&rec, Signal::SIGTERM);
        if !procs::wait_gone(&[rec], STOP_TIMEOUT) {
            procs::signal(&rec, Signal::SIGKILL);
            if !procs::wait_gone(&[rec], STOP_TIMEOUT) {
                return Err(TestbedError::Unkillable {
                    name: name.to_string(),
                    pid: rec.pid,
                });
            }
        }
        self.state.set_daemon(name, None);
        self.state.save()
    }

    /// Starts (or restarts) daemon `name` with its config: the home in the
    /// host's namespaces; a node in its network namespace and a new private
    /// mount namespace with a fresh `/tmp`.
    pub fn start_daemon(&mut self, name: &str) -> Result<(), TestbedError> {
        self.start_daemon_with_env(name, &[])
    }

    /// [`Testbed::start_daemon`], with `env` added to the daemon's
    /// environment (for example `ROAM_FAULT`, fault-injection tests).
    pub fn start_daemon_with_env(
        &mut self,
        name: &str,
        env: &[(&str, &str)],
    ) -> Result<(), TestbedError> {
        self.check_member(name)?;
        if let Some(rec) = self.state.daemon(name).filter(procs::alive) {
            return Err(TestbedError::AlreadyRunning {
                id: self.state.id,
                name: name.to_string(),
                pid: rec.pid,
            });
        }
        let roamd = self.state.roamd.clone();
        let config = self.state.config_path(name);
        let log_path = self.state.log_path(name);
        let start_err = |source| TestbedError::StartDaemon {
            name: name.to_string(),
            roamd: roamd.clone(),
            source,
        };

        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err("open", &log_path))?;
        let _ = writeln!(
            log,
            "=== roam-testbed: starting {name}: {} --config {}",
            roamd.display(),
            config.display()
        );

        let node = self.state.node(name).cloned();
        let net_path = node
            .as_ref()
            .map(|n| Path::new(ip::NETNS_DIR).join(&n.netns));
        let mut attempts = 0;
        let pid = loop {
            let mut cmd = Command::new(&roamd);
            cmd.arg("--config")
                .arg(&config)
                .current_dir("/")
                .stdin(Stdio::null())
                .stdout(Stdio::from(
                    log.try_clone().map_err(io_err("open", &log_path))?,
                ))
                .stderr(Stdio::from(
                    log.try_clone().map_err(io_err("open", &log_path))?,
                ))
                .env(TESTBED_ENV, self.state.id.to_string())
                .env(TESTBED_NODE_ENV, name)
                .envs(env.iter().copied());
            let mut setup = ChildSetup::default();
            if let Some(path) = &net_path {
                setup.net = Some(open_ns(path).map_err(io_err("open", path))?);
                setup.private_tmp = true;
                // A host name of its own, as a machine has (the node's name).
                setup.hostname = Some(CString::new(name).map_err(|_| {
                    TestbedError::BadOpts(format!("node name {name:?} has a NUL byte"))
                })?);
                // Our copy of /run/netns would pin every testbed's namespaces.
                setup.detach_mounts =
                    vec![CString::new(ip::NETNS_DIR.as_bytes()).expect("no NUL in a constant")];
            }
            match setup.spawn_detached(cmd) {
                Ok(pid) => break pid,
                // Another thread's fork may briefly hold a just-written
                // program open for writing.
                Err(e) if e.kind() == io::ErrorKind::ExecutableFileBusy && attempts < 50 => {
                    attempts += 1;
                    sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(start_err(e)),
            }
        };
        self.state.set_daemon(name, Some(procs::record(pid)));
        self.state.save()
    }

    /// Takes node `name`'s link down (its host-side veth): link-cut tests.
    pub fn cut_link(&self, name: &str) -> Result<(), TestbedError> {
        let node = self.node_rec(name)?;
        ip::ip(&["link", "set", &node.veth, "down"]).map(drop)
    }

    /// Brings node `name`'s link back up.
    pub fn heal_link(&self, name: &str) -> Result<(), TestbedError> {
        let node = self.node_rec(name)?;
        ip::ip(&["link", "set", &node.veth, "up"]).map(drop)
    }

    fn node_rec(&self, name: &str) -> Result<&NodeRec, TestbedError> {
        self.state
            .node(name)
            .ok_or_else(|| TestbedError::UnknownNode {
                id: self.state.id,
                name: name.to_string(),
            })
    }

    /// A command that runs `program` inside node `name`'s namespaces: its
    /// network namespace and the mount and UTS namespaces of its running
    /// roamd (so it sees that node's `/tmp` and host name). For "home", a plain command. The node's
    /// daemon must be running.
    ///
    /// Joining the mount namespace resets the working directory to `/`, so
    /// `current_dir` on the returned command has no effect for a node; use
    /// absolute paths (or `sh -c 'cd DIR && ...'`).
    pub fn command_in(&self, name: &str, program: &str) -> Result<Command, TestbedError> {
        let mut cmd = Command::new(program);
        if name == HOME {
            return Ok(cmd);
        }
        let node = self.node_rec(name)?;
        let rec = self.running(name)?;
        let net_path = Path::new(ip::NETNS_DIR).join(&node.netns);
        let net = open_ns(&net_path).map_err(io_err("open", &net_path))?;
        let mnt_path = PathBuf::from(format!("/proc/{}/ns/mnt", rec.pid));
        let mnt = open_ns(&mnt_path).map_err(io_err("open", &mnt_path))?;
        let uts_path = PathBuf::from(format!("/proc/{}/ns/uts", rec.pid));
        let uts = open_ns(&uts_path).map_err(io_err("open", &uts_path))?;
        // The pid might have been reused between the check and the open.
        if !procs::alive(&rec) {
            return Err(TestbedError::NotRunning {
                id: self.state.id,
                name: name.to_string(),
            });
        }
        ChildSetup {
            net: Some(net),
            mnt: Some(mnt),
            uts: Some(uts),
            ..Default::default()
        }
        .install(&mut cmd);
        Ok(cmd)
    }

    /// Asks the home for its node list once.
    pub fn nodes(&self) -> Result<Vec<NodeInfo>, TestbedError> {
        query_nodes(&self.socket())
    }

    /// Polls the home's socket until at least `count` nodes are up, and
    /// returns the node list. Fails early if a daemon exits, and on timeout;
    /// both errors include the end of the relevant log.
    pub fn wait_nodes_up(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<NodeInfo>, TestbedError> {
        let start = Instant::now();
        loop {
            // Checked first: a node daemon just stopped may still be listed
            // up by the home, which has not yet seen its link close.
            self.check_can_get_ready(count)?;
            let last = match self.nodes() {
                Ok(nodes) => {
                    let up = nodes.iter().filter(|n| n.state == NodeState::Up).count();
                    if up >= count {
                        return Ok(nodes);
                    }
                    let states: Vec<String> = nodes
                        .iter()
                        .map(|n| format!("{} {}", n.name, n.state))
                        .collect();
                    format!("{up} up: [{}]", states.join(", "))
                }
                Err(e) => error_chain(&e),
            };
            let waited = start.elapsed();
            if waited >= timeout {
                let log = self.state.log_path(HOME);
                return Err(TestbedError::NotReady {
                    count,
                    waited,
                    last,
                    tail: log_tail(&log, 40),
                    log,
                });
            }
            sleep(Duration::from_millis(100));
        }
    }

    /// Fails if `count` nodes can never be up: the home is not running, or
    /// fewer than `count` node daemons are.
    fn check_can_get_ready(&self, count: usize) -> Result<(), TestbedError> {
        let died = |name: &str, what: &str| {
            let log = self.state.log_path(name);
            TestbedError::DaemonDied {
                name: name.to_string(),
                when: format!("while waiting for {count} nodes up{what}"),
                tail: log_tail(&log, 40),
                log,
            }
        };
        match self.state.home {
            None => {
                return Err(TestbedError::NotRunning {
                    id: self.state.id,
                    name: HOME.to_string(),
                })
            }
            Some(rec) if !procs::alive(&rec) => return Err(died(HOME, "")),
            Some(_) => {}
        }
        let running = self
            .state
            .nodes
            .iter()
            .filter(|n| n.daemon.as_ref().is_some_and(procs::alive))
            .count();
        if running < count {
            // Blame a node whose daemon exited, if there is one.
            if let Some(n) = self
                .state
                .nodes
                .iter()
                .find(|n| n.daemon.as_ref().is_some_and(|d| !procs::alive(d)))
            {
                return Err(died(
                    &n.name,
                    &format!(", leaving {running} node daemons running"),
                ));
            }
            return Err(TestbedError::TooFewDaemons { count, running });
        }
        Ok(())
    }

    /// Tears the testbed down: daemons and every process in its network
    /// namespaces, the namespaces, links, bridge and state directory.
    pub fn down(mut self) -> Result<(), TestbedError> {
        self.owned = false;
        teardown(self.state.id, Some(&self.state))
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if self.owned {
            self.owned = false;
            let _ = teardown(self.state.id, Some(&self.state));
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Deletes testbed `id`'s veths, network namespaces (killing every process
/// left in them) and bridge: those named in `nodes`, and any other that
/// matches the testbed's naming. Problems are appended to `problems`.
fn remove_network(id: u32, nodes: &[NodeRec], problems: &mut Vec<String>) {
    let mut netns: Vec<String> = nodes.iter().map(|n| n.netns.clone()).collect();
    let prefix = netns_prefix(id);
    for ns in ip::netns_names() {
        if ns.strip_prefix(&prefix).is_some_and(is_number) && !netns.contains(&ns) {
            netns.push(ns);
        }
    }
    let mut veths: Vec<String> = nodes.iter().map(|n| n.veth.clone()).collect();
    let vprefix = veth_prefix(id);
    let bridge = bridge_name(id);
    let links = ip::link_names().unwrap_or_else(|e| {
        problems.push(error_chain(&e));
        Vec::new()
    });
    for l in &links {
        if l.strip_prefix(&vprefix).is_some_and(is_number) && !veths.contains(l) {
            veths.push(l.clone());
        }
    }

    // Whatever still runs in the namespaces: SIGKILL, until none is left.
    let mut victims = Vec::new();
    for _ in 0..5 {
        let mut found = false;
        for ns in netns.iter().filter(|ns| ip::netns_exists(ns)) {
            match ip::netns_pids(ns) {
                Ok(pids) => {
                    for p in pids {
                        found = true;
                        procs::signal_pid(p, Signal::SIGKILL);
                        victims.push(p);
                    }
                }
                Err(e) => problems.push(error_chain(&e)),
            }
        }
        if !found {
            break;
        }
        procs::wait_pids_gone(&victims, Duration::from_secs(2));
    }

    for v in &veths {
        if let Err(e) = ip::ip_del(&["link", "del", v]) {
            problems.push(error_chain(&e));
        }
    }
    for ns in &netns {
        if let Err(e) = ip::ip_del(&["netns", "del", ns]) {
            problems.push(error_chain(&e));
        }
    }
    if let Err(e) = ip::ip_del(&["link", "del", &bridge]) {
        problems.push(error_chain(&e));
    }
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Tears down testbed `id`, guided by `state` when there is one.
fn teardown(id: u32, state: Option<&State>) -> Result<(), TestbedError> {
    let mut problems = Vec::new();
    let dir = state_dir(id);

    // 1. The daemons: SIGTERM, a moment to exit cleanly, then SIGKILL for
    //    them and anything left in their sessions, carrying the testbed's
    //    environment marker or configured from `dir`.
    let daemons: Vec<(String, DaemonRec)> = state.map(State::daemons).unwrap_or_default();
    let recs: Vec<DaemonRec> = daemons.iter().map(|d| d.1).collect();
    // Sessions are listed while their daemon lives: then the session id
    // cannot belong to anyone else.
    let mut members: Vec<DaemonRec> = Vec::new();
    for rec in recs.iter().filter(|r| procs::alive(r)) {
        members.extend(procs::session_members(rec.session));
    }
    for rec in &recs {
        procs::signal(rec, Signal::SIGTERM);
    }
    procs::wait_gone(&recs, Duration::from_secs(2));
    let mut victims = Vec::new();
    for rec in recs.iter().chain(&members) {
        if procs::signal(rec, Signal::SIGKILL) {
            victims.push(rec.pid);
        }
    }
    let marker = format!("{TESTBED_ENV}={id}");
    for _ in 0..3 {
        let more = procs::testbed_processes(&dir, &marker);
        if more.is_empty() {
            break;
        }
        for p in more {
            procs::signal_pid(p, Signal::SIGKILL);
            victims.push(p);
        }
        procs::wait_pids_gone(&victims, Duration::from_secs(2));
    }
    if !procs::wait_pids_gone(&victims, Duration::from_secs(5)) {
        problems.push(format!("processes still running: {victims:?}"));
    }

    // 2. Network: namespaces (and what runs in them), veths, bridge.
    let nodes = state.map(|s| s.nodes.as_slice()).unwrap_or_default();
    remove_network(id, nodes, &mut problems);

    // 3. The state directory, last: while it exists, the id stays taken.
    if problems.is_empty() {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != io::ErrorKind::NotFound {
                problems.push(format!("cannot remove {}: {e}", dir.display()));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(TestbedError::Teardown { id, problems })
    }
}

/// Tears down testbed `id`: from its `testbed.json` if readable, and by the
/// testbed's naming otherwise. Kills its daemons and every process left in
/// its network namespaces, deletes the namespaces, veths, bridge and state
/// directory. Idempotent: a testbed that does not exist is no error.
pub fn down_id(id: u32) -> Result<(), TestbedError> {
    if id == 0 || id > MAX_ID {
        return Err(TestbedError::NoSuchTestbed { id });
    }
    let state = State::load(id).ok();
    teardown(id, state.as_ref())
}

/// Tears down every testbed: each state directory under [`STATE_ROOT`], and
/// any leftover bridge or namespace named like a testbed's. Returns the ids
/// torn down; the first error, if any, after trying them all.
pub fn down_all() -> Result<Vec<u32>, TestbedError> {
    let links = ip::link_names().unwrap_or_default();
    let ids = leftover_ids(list(), &links, &ip::netns_names());
    let mut first_err = None;
    for id in &ids {
        if let Err(e) = down_id(*id) {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(ids),
    }
}

/// Testbed ids from state directories, bridges (`roamtbK`), veths
/// (`rtbK-I`) and network namespaces (`roamtbK-nI`), sorted, without
/// duplicates.
fn leftover_ids(mut ids: Vec<u32>, links: &[String], netns: &[String]) -> Vec<u32> {
    let num = |s: &str| is_number(s).then(|| s.parse::<u32>().ok()).flatten();
    for l in links {
        if let Some(id) = l.strip_prefix("roamtb").and_then(num) {
            ids.push(id);
        } else if let Some((id, i)) = l.strip_prefix("rtb").and_then(|r| r.split_once('-')) {
            ids.extend(num(i).and(num(id)));
        }
    }
    for n in netns {
        if let Some((id, i)) = n.strip_prefix("roamtb").and_then(|r| r.split_once("-n")) {
            ids.extend(num(i).and(num(id)));
        }
    }
    ids.retain(|id| (1..=MAX_ID).contains(id));
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The ids of the testbeds whose state directory exists, in order.
pub fn list() -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir(STATE_ROOT) else {
        return Vec::new();
    };
    let mut ids: Vec<u32> = rd
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name();
            let s = std::str::from_utf8(name.as_bytes()).ok()?;
            is_number(s).then(|| s.parse().ok())?
        })
        .filter(|id| (1..=MAX_ID).contains(id))
        .collect();
    ids.sort_unstable();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_are_valid_and_point_into_the_state_dir() {
        let st = State::new(7, PathBuf::from("/usr/bin/roamd"));
        let mut opts = TestbedOpts::new(2, PathBuf::from("/usr/bin/roamd"));
        opts.heartbeat_ms = 200;
        opts.timeout_ms = 900;
        opts.orphan_grace_ms = 5000;
        let home = st.config(HOME, &opts);
        let parsed = Config::parse(Path::new("home.toml"), &home.to_toml()).unwrap();
        assert_eq!(parsed.role, Role::Home);
        assert_eq!(parsed.home.unwrap().listen.to_string(), "10.77.7.1:7170");
        assert_eq!(
            parsed.socket,
            PathBuf::from("/run/roam-testbed/7/home.sock")
        );
        assert_eq!(
            parsed.tls.cert,
            PathBuf::from("/run/roam-testbed/7/creds/home.pem")
        );
        assert_eq!(parsed.membership.heartbeat_ms, 200);
        let n2 = st.config("n2", &opts);
        let parsed = Config::parse(Path::new("n2.toml"), &n2.to_toml()).unwrap();
        assert_eq!(parsed.role, Role::Node);
        let node = parsed.node.unwrap();
        assert_eq!(node.home.to_string(), "10.77.7.1:7170");
        assert_eq!(node.home_name, "home");
        assert_eq!(node.orphan_grace_ms, 5000);
        assert_eq!(parsed.membership.timeout_ms, 900);
        assert_eq!(
            parsed.tls.key,
            PathBuf::from("/run/roam-testbed/7/creds/n2.key")
        );
        assert_eq!(parsed.socket, PathBuf::from("/run/roam-testbed/7/n2.sock"));
    }

    #[test]
    fn bad_options_are_refused_before_anything_is_built() {
        let mut o = TestbedOpts::new(MAX_NODES + 1, PathBuf::from("/bin/true"));
        assert!(matches!(
            Testbed::up(o.clone()),
            Err(TestbedError::BadOpts(_))
        ));
        o.nodes = 1;
        o.timeout_ms = o.heartbeat_ms;
        assert!(matches!(
            Testbed::up(o.clone()),
            Err(TestbedError::BadOpts(_))
        ));
        o.timeout_ms = 4000;
        o.roamd = PathBuf::from("/nonexistent/roamd");
        let e = Testbed::up(o).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/roamd"), "{e}");
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut st = State::new(3, PathBuf::from("/x/roamd"));
        st.nodes.push(NodeRec {
            name: "n1".into(),
            netns: "roamtb3-n1".into(),
            veth: "rtb3-1".into(),
            addr: Ipv4Addr::new(10, 77, 3, 11),
            daemon: Some(DaemonRec {
                pid: 42,
                start_time: 7,
                session: 41,
            }),
        });
        let text = serde_json::to_string(&st).unwrap();
        let back: State = serde_json::from_str(&text).unwrap();
        assert_eq!(back.daemons(), st.daemons());
        assert_eq!(back.node("n1").unwrap().addr, Ipv4Addr::new(10, 77, 3, 11));
        assert!(back.is_member("home") && back.is_member("n1") && !back.is_member("n2"));
    }

    #[test]
    fn leftovers_are_found_by_name() {
        let links: Vec<String> = [
            "lo",
            "eth0",
            "roamtb4",
            "rtb9-2",
            "rtbx-1",
            "roamtb",
            "roamtb300",
            "rtb5-n",
        ]
        .map(String::from)
        .to_vec();
        let netns: Vec<String> = ["roamtb12-n3", "roamtb13-x", "other", "roamtb7-n"]
            .map(String::from)
            .to_vec();
        assert_eq!(leftover_ids(vec![4, 2], &links, &netns), [2, 4, 9, 12]);
    }

    #[test]
    fn log_tail_takes_the_last_lines() {
        let p = std::env::temp_dir().join(format!("roam-testbed-tail-{}", std::process::id()));
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, text).unwrap();
        assert_eq!(log_tail(&p, 2), "line 98\nline 99");
        std::fs::remove_file(&p).unwrap();
        assert!(log_tail(&p, 2).contains("cannot read"));
    }
}
