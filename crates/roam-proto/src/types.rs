//! Values shared by the link and local protocols.

use serde::{Deserialize, Serialize};

/// Identifies one remote process for its whole life, across daemon restarts.
/// Chosen at random by the home daemon when the process is spawned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionId(pub u64);

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A byte stream of a remote process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Chan {
    Stdin,
    Stdout,
    Stderr,
}

impl Chan {
    pub const ALL: [Chan; 3] = [Chan::Stdin, Chan::Stdout, Chan::Stderr];

    pub fn index(self) -> usize {
        match self {
            Chan::Stdin => 0,
            Chan::Stdout => 1,
            Chan::Stderr => 2,
        }
    }
}

/// A signal number in the asm-generic Linux numbering (the numbering of
/// x86, arm, aarch64, riscv and s390x). Each end converts to and from its
/// native numbering by signal name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WireSignal(pub u8);

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// Called exit with this code.
    Exited(i32),
    /// Killed by this signal.
    Signaled {
        signal: WireSignal,
        core_dumped: bool,
    },
}

/// The credentials a remote process runs with: those of the user who
/// started it, taken by the home daemon from the Unix socket's peer
/// credentials, never from anything the client says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cred {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Cred {
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// A complete checkpoint image, as its sender describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSummary {
    /// The image's length in bytes.
    pub len: u64,
    /// Bytes of memory it stores.
    pub stored: u64,
    /// How long the process was stopped to be captured (microseconds).
    pub frozen_us: u64,
    /// For a migration: how long after the node had the request the
    /// process was stopped (microseconds; the pre-copy rounds, the
    /// checks). The home counts the freeze as the rest of the move, on
    /// its own clock.
    pub stopped_after_us: u64,
    /// Bytes of memory left out of it, streamed after it over the peer
    /// link (before the restore is reported, or after: see
    /// [`RestoreSpec::postcopy`]).
    pub lazy: u64,
}

/// The largest image a node takes for a restore.
pub const MAX_IMAGE: u64 = 1 << 40;

/// What a node needs to restore an image besides the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreSpec {
    /// The image's length in bytes (at most [`MAX_IMAGE`]).
    pub image_len: u64,
    /// The image's architecture (its `META` section's).
    pub arch: String,
    /// The command `roam ps` shows for it.
    pub command: String,
    /// Which of stdin, stdout, stderr are /dev/null at home (as in
    /// [`SpawnSpec::null`]).
    pub null: [bool; 3],
    /// The proxy's parent's pid and the home's host name (as in
    /// [`SpawnSpec`]).
    pub home_ppid: u32,
    pub home_host: String,
    /// For a migration: where the session's streams stand (see
    /// [`Handover`]). The transfer then carries the unread input first,
    /// then the image.
    pub handover: Option<Handover>,
    /// For a migration whose image leaves pages out (its `LAZY` section):
    /// true if the process runs at once and its pages follow (post-copy);
    /// false if every page is in before the restore is reported (the
    /// pages stream straight into the new process while it is held).
    pub postcopy: bool,
    /// Sent ahead, with the migration's `Expect`, before the process is
    /// captured (a migration over a peer link): `image_len` and `handover`
    /// are not known yet; they come in the old node's `Captured`, over the
    /// peer link, and the restore starts then.
    pub ahead: bool,
}

/// Where a migrating session's streams stand when its process is frozen
/// on its old node: the new node's session goes on from there, so no byte
/// of stdin, stdout or stderr is lost or doubled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    /// Stdin bytes written into the process's pipe (the proxy resends what
    /// follows).
    pub stdin_delivered: u64,
    /// Of those, how many the process had not read yet: the new node puts
    /// them back in its pipe (at most [`MAX_UNREAD`]).
    pub stdin_unread: u64,
    /// Where stdout and stderr stand: every byte before was sent.
    pub out_end: [u64; 2],
    /// Whether stdout and stderr had ended.
    pub out_closed: [bool; 2],
    /// For a process on a terminal: which stdio are on it, its window size
    /// and its modes now (the program may have changed them): the new node
    /// opens a terminal like it. Its unread input (`stdin_unread`) is what
    /// the line discipline held, the line being typed included.
    pub tty: Option<TtySpec>,
}

/// The most unread stdin a migration carries (a pipe's contents).
pub const MAX_UNREAD: u64 = 16 << 20;

/// How a migration went, for the command that asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrateReport {
    pub home_pid: u32,
    pub from: String,
    pub to: String,
    /// The process's pid on its new node.
    pub node_pid: u32,
    /// The image's length, and the memory bytes in it.
    pub image_len: u64,
    pub stored: u64,
    /// How long the process was stopped (from the freeze on the old node
    /// to its start on the new one, as the home saw it), and the whole
    /// migration (microseconds).
    pub frozen_us: u64,
    pub total_us: u64,
    /// Pre-copy rounds done, and the bytes of pages they sent.
    pub rounds: u32,
    pub precopied: u64,
    /// Post-copy: the bytes of memory that followed the process, and how
    /// long after its start on the new node the last was in place
    /// (microseconds; `total_us` includes it).
    pub postcopied: u64,
    pub postcopy_us: u64,
}

/// How a migration moves memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum MigrateMode {
    /// Pre-copy for a process with more than a little memory, else eager.
    #[default]
    Auto,
    /// Everything while frozen.
    Eager,
    /// Rounds of pages while the process runs, then a short freeze.
    PreCopy,
    /// The process runs on the new node at once; its memory follows,
    /// fetched on fault and pushed in the background.
    PostCopy,
}

/// Terminal set-up for a remote process whose proxy has a terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtySpec {
    /// Which of stdin, stdout, stderr are the terminal on the home side; the
    /// remote gets its pseudo-terminal on exactly those.
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub rows: u16,
    pub cols: u16,
    /// Terminal modes as RFC 4254 section 8 opcodes and values.
    pub modes: Vec<(u8, u32)>,
}

/// What to run, as the user asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnSpec {
    /// argv, argv[0] first; raw bytes (file names need not be UTF-8).
    pub argv: Vec<serde_bytes::ByteBuf>,
    /// The program to execute (a path or a name looked up in PATH); usually
    /// equal to argv[0].
    pub program: serde_bytes::ByteBuf,
    /// Environment as `NAME=value` entries.
    pub env: Vec<serde_bytes::ByteBuf>,
    pub cwd: serde_bytes::ByteBuf,
    pub umask: u32,
    pub tty: Option<TtySpec>,
    /// Extra environment the home adds (rank and size for `-N` jobs).
    pub rank: Option<(u32, u32)>,
    /// The program's architecture as the home read it from the file
    /// (qemu-user's names: x86_64, aarch64, s390x...); `None` when the
    /// home could not tell (a program only the node has). A node runs a
    /// foreign one through its runner.
    pub arch: Option<String>,
    /// For a `#!` script, what the kernel would execute in place of
    /// argv[0]: the interpreters, outermost last, their arguments and the
    /// script (`[/i2, /i1, arg, script]` for script → /i1 → /i2). A runner
    /// is given this, since it runs only ELF files. Empty for an ELF file.
    pub script: Vec<serde_bytes::ByteBuf>,
    /// Which of stdin, stdout, stderr are /dev/null at home: the node gives
    /// the process its own /dev/null there, with no stream to carry (what
    /// `ssh -n` does for stdin, for all three).
    pub null: [bool; 3],
    /// The proxy's parent's pid at home: what the process's getppid(2)
    /// answers on a node that forwards identity calls.
    pub home_ppid: u32,
    /// The home's host name: the node name uname(2) (and gethostname)
    /// answers on such a node.
    pub home_host: String,
    /// Run the node's staged copy of the program, the file of this hash
    /// in its cache, rather than `program` (which names it for `ps`);
    /// the node answers `NotStaged` when it has none. See
    /// docs/design/staging.md.
    pub staged: Option<StageHash>,
    /// Confine the process from its exec on: a system-call allow-list of
    /// computing, memory, threads, file and network I/O, and no second
    /// exec (see docs/design/staging.md).
    pub confine: bool,
}

/// The SHA-256 of a staged file: its name in a node's cache.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StageHash(pub [u8; 32]);

impl StageHash {
    /// Lower-case hex, the file's name in the cache.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Debug for StageHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl std::fmt::Display for StageHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

/// Why a forwarded signal was not sent (kill(2)'s errors, by meaning
/// rather than number: errno values differ between architectures).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KillRefusal {
    /// ESRCH: no such process or process group.
    NoSuchProcess,
    /// EPERM: the sender may not signal it.
    NotPermitted,
    /// EINVAL: no such signal on the receiving end.
    InvalidSignal,
}

/// Placement mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// At most one remote process per node.
    Parallel,
    /// Several per node, on the least loaded.
    Balance,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Parallel => "parallel",
            Mode::Balance => "balance",
        })
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "parallel" => Ok(Mode::Parallel),
            "balance" => Ok(Mode::Balance),
            other => Err(format!(
                "unknown placement mode '{other}' (expected parallel or balance)"
            )),
        }
    }
}

/// A node's load, carried by each heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeLoad {
    /// CPU use over the last interval, in percent of the node's `cpus`:
    /// 0..=100 for the machine's (`cpu_source = "host"`); above 100 when
    /// the processes of a node measured by its network namespace want more
    /// than its `cpus` (`cpu_source = "netns"`).
    pub cpu_pct: f32,
    /// Memory in use (total - available), 0..=100.
    pub mem_pct: f32,
    /// Remote processes roam runs on the node.
    pub procs: u32,
    /// CPUs the node has (so the home can estimate the load of processes it
    /// placed since the last heartbeat).
    pub cpus: u32,
}

/// A node's membership state as the home sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    /// Joined, heartbeats arriving.
    Up,
    /// Link lost or heartbeats late; not yet declared down.
    Unreachable,
    /// Missed heartbeats past the timeout, or left; its processes are gone.
    Down,
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeState::Up => "up",
            NodeState::Unreachable => "unreachable",
            NodeState::Down => "down",
        })
    }
}

/// What a node can run: its native architecture and its runners.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchInfo {
    /// The node's architecture (qemu-user's names: x86_64, aarch64...).
    pub native: String,
    /// The node stands for a machine of `native` but is another machine
    /// running it through a runner (the testbed's emulated nodes).
    pub emulated: bool,
    /// Other architectures it runs through a runner (such as qemu-user).
    pub runners: Vec<String>,
    /// Runners in its configuration that do not work, with why: found at
    /// join, so the operator learns it before a program needs them.
    pub broken: Vec<String>,
}

impl ArchInfo {
    /// Whether the node runs programs of `arch`.
    pub fn runs(&self, arch: &str) -> bool {
        self.native == arch || self.runners.iter().any(|r| r == arch)
    }

    /// Every architecture it runs, its own first.
    pub fn all(&self) -> Vec<&str> {
        std::iter::once(self.native.as_str())
            .chain(self.runners.iter().map(String::as_str))
            .collect()
    }
}

/// One row of `roam nodes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Join order: lower numbers win placement ties.
    pub number: u32,
    pub name: String,
    pub addr: String,
    pub arch: ArchInfo,
    pub state: NodeState,
    pub load: NodeLoad,
    /// Milliseconds since the last heartbeat.
    pub last_heartbeat_ms: u64,
    /// Milliseconds since the node (re)joined.
    pub joined_ms: u64,
}

/// One row of `roam ps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcInfo {
    /// The proxy's pid on the home node: the process's pid for users.
    pub home_pid: u32,
    pub session: SessionId,
    pub node: String,
    pub node_pid: u32,
    pub uid: u32,
    /// `ps` state letter on the node (R, S, D, T, Z...).
    pub state: char,
    /// User + system CPU time in milliseconds.
    pub cpu_ms: u64,
    /// Resident memory in KiB.
    pub rss_kib: u64,
    pub command: String,
    /// Seconds the process has run.
    pub elapsed_s: u64,
    /// Times it moved to another node (`roam migrate`, `roam drain`, the
    /// balancer) since it started: the home counts; nodes send 0.
    pub moves: u32,
}

/// A session as a node reports it when it (re)joins the home, so that a
/// restarted home learns what runs where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionReport {
    pub session: SessionId,
    pub home_pid: u32,
    pub node_pid: u32,
    pub uid: u32,
    pub command: String,
}

/// The home's automatic balancer, as `roam balance` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BalanceStatus {
    pub enabled: bool,
    /// Its settings (`[balance]` in the home's config; the interval as used,
    /// at least the heartbeat).
    pub interval_ms: u64,
    pub high_pct: u32,
    pub low_pct: u32,
    pub sustain: u32,
    pub cooldown_ms: u64,
    pub min_gap_pct: u32,
    /// Each node's last sample and how long it has been loaded or idle.
    pub nodes: Vec<BalanceNode>,
    /// The balancer's moves, oldest first (the last few), the one under
    /// way included.
    pub moves: Vec<BalanceMove>,
}

/// A node as the balancer sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BalanceNode {
    pub name: String,
    pub cpu_pct: f32,
    /// Samples in a row above `high_pct`, and below `low_pct`.
    pub above: u32,
    pub below: u32,
}

/// One move of the balancer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BalanceMove {
    /// Numbers the moves since the home started (for `roam balance -f`).
    pub seq: u64,
    pub home_pid: u32,
    pub command: String,
    pub from: String,
    pub to: String,
    /// The process's CPU use on its old node, in percent of its CPUs.
    pub cpu_pct: f32,
    /// Milliseconds since it began.
    pub ago_ms: u64,
    pub outcome: MoveOutcome,
}

/// How a balancer move went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MoveOutcome {
    /// Under way.
    Moving,
    /// The process runs on the new node.
    Moved,
    /// It stays where it was (the reason is in the home's log).
    Failed,
    /// It ended, or its node went, meanwhile.
    Gone,
}

impl std::fmt::Display for MoveOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MoveOutcome::Moving => "moving",
            MoveOutcome::Moved => "moved",
            MoveOutcome::Failed => "failed, it stays",
            MoveOutcome::Gone => "gone meanwhile",
        })
    }
}

/// Error categories carried over the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// Malformed or unexpected request.
    BadRequest,
    /// The caller may not act on that process.
    PermissionDenied,
    /// No such process, node or session.
    NotFound,
    /// The program could not be executed (missing, not executable...).
    ExecFailed,
    /// No node can take the process (none up, all full in parallel mode).
    NoCapacity,
    /// The node or link failed.
    Unavailable,
    /// The node has no staged file of the spawn's hash.
    NotStaged,
    /// Anything else.
    Internal,
}

/// An error reported across the wire: a category and a human message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
}

impl WireError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for WireError {}
