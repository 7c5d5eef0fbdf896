//! roamd's configuration file (TOML).
//!
//! ```toml
//! name = "home"                      # this daemon's node name (must match its certificate)
//! role = "home"                      # home | node | both
//! socket = "/run/roam/roamd.sock"    # the local Unix socket the CLI talks to
//!
//! [tls]
//! ca = "/etc/roam/ca.pem"            # the cluster CA certificate
//! cert = "/etc/roam/home.pem"        # this daemon's certificate, signed by the CA
//! key = "/etc/roam/home.key"         # its private key (mode 0600)
//!
//! [home]                             # for role home or both
//! listen = "0.0.0.0:7170"
//! mode = "balance"                   # default placement: balance | parallel
//! export = "/"                       # the tree nodes with files = "home" see
//!
//! [node]                             # for role node or both
//! home = "10.77.1.1:7170"            # where the home daemon listens
//! home_name = "home"                 # the name in the home's certificate
//! orphan_grace_ms = 60000            # keep processes this long while the home is away
//! files = "home"                     # "node": remote processes see the node's own files
//! files_mount = "/run/roam/files"    # where the node mounts them
//! identity = "home"                  # remote processes see their home pid, parent, host name
//! # arch = "aarch64"                 # declare another architecture: an emulated node
//! cpu_source = "host"                # the load heartbeats report: "host" (/proc/stat) or
//!                                    # "netns" (CPU time of the processes in the daemon's
//!                                    # network namespace: nodes that share a machine)
//! # cpus = 4                         # CPUs the node stands for (default: the machine's)
//! # peer_listen = "0.0.0.0:7171"     # where other nodes send migrations directly (unset:
//!                                    # migrations to this node go through the home)
//! stage_dir = "/var/cache/roam/staged"  # the cache of executables shipped to this node
//! stage_max_mib = 1024               # the largest file it takes
//! stage_cache_mib = 4096             # the cache's size; the least recently used go first
//!
//! [node.runners]                     # other architectures this node runs, and how
//! aarch64 = "/usr/bin/qemu-aarch64-static"
//! s390x = { path = "/usr/bin/qemu-s390x-static", args = ["-L", "/usr/s390x-linux-gnu"] }
//!
//! [membership]
//! heartbeat_ms = 1000
//! timeout_ms = 4000
//!
//! [balance]                          # the home's automatic balancer (docs/design/migration.md)
//! enabled = false                    # at start; `roam balance on|off` changes it
//! interval_ms = 2000                 # one sample each (at least the heartbeat)
//! high_pct = 80                      # a node above this CPU % is loaded
//! low_pct = 40                       # a node below it may take work
//! sustain = 3                        # for this many samples in a row
//! cooldown_ms = 60000                # a moved process stays put this long
//! min_gap_pct = 30                   # the destination, with the process, stays this far
//!                                    # below the source
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use roam_elf::Arch;
use roam_proto::types::Mode;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Errors reading a configuration file.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("invalid config file {path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

/// What a daemon does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The home node: keeps the process table, places processes, serves the CLI.
    Home,
    /// A compute node: runs remote processes.
    Node,
    /// Both (a home that also takes remote processes).
    Both,
}

impl Config {
    /// Whose files a node's remote processes see: `[node] files`, or by
    /// default the home's, but the node's own for a `both` daemon (the
    /// home's tree *is* its tree: going through the remote file system
    /// would only add a round trip to itself).
    pub fn node_files(&self) -> Files {
        match self.node.as_ref().and_then(|n| n.files) {
            Some(f) => f,
            None if self.role == Role::Both => Files::Node,
            None => Files::Home,
        }
    }
}

impl Role {
    pub fn is_home(self) -> bool {
        matches!(self, Role::Home | Role::Both)
    }
    pub fn is_node(self) -> bool {
        matches!(self, Role::Node | Role::Both)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeConfig {
    pub listen: SocketAddr,
    #[serde(default = "default_mode", with = "mode_serde")]
    pub mode: Mode,
    /// The tree remote processes see as `/` on nodes with
    /// `files = "home"` (the remote file system).
    #[serde(default = "default_export")]
    pub export: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub home: SocketAddr,
    pub home_name: String,
    #[serde(default = "default_orphan_grace")]
    pub orphan_grace_ms: u64,
    /// The architecture the node declares, when not the machine's own. Such
    /// an *emulated node* runs programs of that architecture through its
    /// runner (which must be configured) and not the machine's own
    /// programs: it stands for a machine of that kind (the testbed's
    /// `--arch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Runners by architecture name: programs of that architecture run as
    /// `RUNNER [ARGS] PROGRAM ARGV...` (qemu-user's `-0 ARGV0` is added for
    /// runners named `qemu-*`, so the program sees its own argv[0]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub runners: BTreeMap<String, RunnerConfig>,
    /// Whose files remote processes see: the home's (through the remote
    /// file system, mounted at `files_mount`) or the node's own. Unset:
    /// the home's, except in a `both` daemon, whose node half runs on the
    /// home and sees its files as they are (see [`Config::node_files`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Files>,
    /// Where the node mounts the home's files.
    #[serde(default = "default_files_mount")]
    pub files_mount: PathBuf,
    /// Whose identity remote processes see (docs/design/identity.md).
    #[serde(default)]
    pub identity: IdentityMode,
    /// What the CPU use in the node's heartbeats measures.
    #[serde(default)]
    pub cpu_source: CpuSource,
    /// The CPUs the node stands for (unset: the machine's): the capacity
    /// its CPU use is a percentage of, with `cpu_source = "netns"`, and the
    /// count placement and the balancer reckon with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// Where the node takes migrations straight from other nodes (TLS with
    /// the cluster's certificates, as every link). Its port is told to the
    /// home, which gives other nodes the address the node's link comes
    /// from with that port. Unset: migrations to this node go through the
    /// home.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_listen: Option<SocketAddr>,
    /// The cache of executables shipped to this node (`roam run --ship`,
    /// docs/design/staging.md), by content hash. Only root may enter it.
    #[serde(default = "default_stage_dir")]
    pub stage_dir: PathBuf,
    /// The largest file the node takes into the cache, in MiB.
    #[serde(default = "default_stage_max_mib")]
    pub stage_max_mib: u64,
    /// The cache's size, in MiB: past it, the least recently used files
    /// go (never one a process is starting from).
    #[serde(default = "default_stage_cache_mib")]
    pub stage_cache_mib: u64,
}

/// What a node's CPU use, in its heartbeats, measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CpuSource {
    /// The machine's, from /proc/stat: right for a node that has its
    /// machine to itself.
    #[default]
    Host,
    /// The CPU time of the processes in the node daemon's network
    /// namespace (its own, its remote processes', anything else started
    /// in it), as a percentage of `cpus`: right for nodes that share a
    /// machine (the testbed, containers), where /proc/stat is everyone's.
    /// It exceeds 100 when they want more than `cpus` CPUs.
    Netns,
}

/// The home's automatic balancer (`[balance]`): it moves processes from
/// loaded nodes to idle ones (docs/design/migration.md, "The balancer").
/// Percentages are of a node's CPUs, as its heartbeats report them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalanceConfig {
    /// On at start (`roam balance on|off` changes it while the home runs).
    #[serde(default)]
    pub enabled: bool,
    /// Time between two samples of the nodes' loads (at least the
    /// heartbeat: a shorter one is raised to it).
    #[serde(default = "default_balance_interval")]
    pub interval_ms: u64,
    /// A node whose CPU use is above this is loaded...
    #[serde(default = "default_high")]
    pub high_pct: u32,
    /// ...and one below this may take work.
    #[serde(default = "default_low")]
    pub low_pct: u32,
    /// Both must hold for this many samples in a row before a move.
    #[serde(default = "default_sustain")]
    pub sustain: u32,
    /// A process the balancer moved (or tried to) is not moved again for
    /// this long.
    #[serde(default = "default_cooldown")]
    pub cooldown_ms: u64,
    /// The destination's CPU use with the process added must stay this
    /// far below the source's (the gain a move must bring, and the margin
    /// against measurement noise).
    #[serde(default = "default_min_gap")]
    pub min_gap_pct: u32,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            interval_ms: default_balance_interval(),
            high_pct: default_high(),
            low_pct: default_low(),
            sustain: default_sustain(),
            cooldown_ms: default_cooldown(),
            min_gap_pct: default_min_gap(),
        }
    }
}

impl BalanceConfig {
    fn check(&self) -> Result<(), String> {
        if self.low_pct >= self.high_pct {
            return Err(format!(
                "balance.low_pct ({}) must be below balance.high_pct ({})",
                self.low_pct, self.high_pct
            ));
        }
        if self.sustain == 0 || self.interval_ms == 0 {
            return Err("balance.sustain and balance.interval_ms must not be 0".into());
        }
        Ok(())
    }
}

/// Whose identity a node's remote processes see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum IdentityMode {
    /// Their home's: getpid, getppid and uname answered as at home, and
    /// signals to home pids sent there (a seccomp supervisor; the
    /// processes run with no_new_privs, so set-user-ID programs do not
    /// gain privileges in them).
    #[default]
    Home,
    /// The node's own: no supervision.
    Node,
}

/// Whose file tree a node's remote processes see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Files {
    /// The node's own tree (for nodes without FUSE, or whose programs need
    /// nothing of the home's).
    Node,
    /// The home's exported tree, through the remote file system.
    #[default]
    Home,
}

/// How to run programs of one foreign architecture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RunnerConfig {
    /// Just the runner's path.
    Path(PathBuf),
    Full {
        path: PathBuf,
        /// Arguments before the program (such as qemu's `-L PREFIX`).
        #[serde(default)]
        args: Vec<String>,
    },
}

impl RunnerConfig {
    pub fn path(&self) -> &Path {
        match self {
            RunnerConfig::Path(p) | RunnerConfig::Full { path: p, .. } => p,
        }
    }

    pub fn args(&self) -> &[String] {
        match self {
            RunnerConfig::Path(_) => &[],
            RunnerConfig::Full { args, .. } => args,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembershipConfig {
    #[serde(default = "default_heartbeat")]
    pub heartbeat_ms: u64,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            heartbeat_ms: default_heartbeat(),
            timeout_ms: default_timeout(),
        }
    }
}

/// A whole configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub name: String,
    pub role: Role,
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    pub tls: TlsConfig,
    #[serde(default)]
    pub home: Option<HomeConfig>,
    #[serde(default)]
    pub node: Option<NodeConfig>,
    #[serde(default)]
    pub membership: MembershipConfig,
    /// The home's balancer (ignored by a node).
    #[serde(default)]
    pub balance: BalanceConfig,
}

/// The socket the CLI uses when `ROAM_SOCKET` is not set.
pub const DEFAULT_SOCKET: &str = "/run/roam/roamd.sock";

fn default_socket() -> PathBuf {
    PathBuf::from(DEFAULT_SOCKET)
}
fn default_mode() -> Mode {
    Mode::Balance
}
fn default_export() -> PathBuf {
    PathBuf::from("/")
}
fn default_files_mount() -> PathBuf {
    PathBuf::from("/run/roam/files")
}
fn default_stage_dir() -> PathBuf {
    PathBuf::from("/var/cache/roam/staged")
}
fn default_stage_max_mib() -> u64 {
    1024
}
fn default_stage_cache_mib() -> u64 {
    4096
}
fn default_orphan_grace() -> u64 {
    60_000
}
fn default_heartbeat() -> u64 {
    1000
}
fn default_timeout() -> u64 {
    4000
}
fn default_balance_interval() -> u64 {
    2000
}
fn default_high() -> u32 {
    80
}
fn default_low() -> u32 {
    40
}
fn default_sustain() -> u32 {
    3
}
fn default_cooldown() -> u64 {
    60_000
}
fn default_min_gap() -> u32 {
    30
}

mod mode_serde {
    use roam_proto::types::Mode;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(m: &Mode, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&m.to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl NodeConfig {
    fn check(&self) -> Result<(), String> {
        let parse = |name: &str, what: &str| -> Result<Arch, String> {
            name.parse::<Arch>().map_err(|e| format!("{what}: {e}"))
        };
        for name in self.runners.keys() {
            parse(name, "node.runners")?;
        }
        if let Some(a) = &self.arch {
            let declared = parse(a, "node.arch")?;
            if declared != Arch::native()
                && !self
                    .runners
                    .keys()
                    .any(|r| r.parse::<Arch>().ok() == Some(declared))
            {
                return Err(format!(
                    "node.arch is {declared}, not this machine's {}: an emulated node needs a runner for {declared} in [node.runners]",
                    Arch::native()
                ));
            }
        }
        Ok(())
    }

    /// The architecture the node declares: `arch`, else the machine's.
    pub fn declared_arch(&self) -> Arch {
        self.arch
            .as_deref()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(Arch::native)
    }

    /// Whether the node stands for a machine of another architecture.
    pub fn emulated(&self) -> bool {
        self.declared_arch() != Arch::native()
    }

    /// The runner configured for `arch`, if any (names compared as
    /// architectures, so `arm64` and `aarch64` are one).
    pub fn runner(&self, arch: Arch) -> Option<&RunnerConfig> {
        self.runners
            .iter()
            .find(|(name, _)| name.parse::<Arch>().ok() == Some(arch))
            .map(|(_, r)| r)
    }
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and checks configuration text (`path` is for messages).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        cfg.check().map_err(|problem| ConfigError::Invalid {
            path: path.to_owned(),
            problem,
        })?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), String> {
        if self.name.is_empty()
            || self.name.len() > 63
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "node name '{}' must be 1 to 63 letters, digits, '-' or '_'",
                self.name
            ));
        }
        if self.role.is_home() && self.home.is_none() {
            return Err(format!("role {:?} needs a [home] section", self.role).to_lowercase());
        }
        if self.role == Role::Node && self.node.is_none() {
            return Err("role node needs a [node] section".into());
        }
        if let Some(n) = &self.node {
            n.check()?;
            if n.cpus == Some(0) {
                return Err("node.cpus must not be 0".into());
            }
        }
        self.balance.check()?;
        let m = &self.membership;
        if m.heartbeat_ms == 0 || m.timeout_ms <= m.heartbeat_ms {
            return Err(format!(
                "membership.timeout_ms ({}) must be greater than membership.heartbeat_ms ({}), which must not be 0",
                m.timeout_ms, m.heartbeat_ms
            ));
        }
        Ok(())
    }

    /// Serialises the configuration as TOML (the testbed writes its files so).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a Config always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: &str = r#"
name = "home"
role = "home"
[tls]
ca = "/c/ca.pem"
cert = "/c/home.pem"
key = "/c/home.key"
[home]
listen = "0.0.0.0:7170"
"#;

    #[test]
    fn parses_home_with_defaults() {
        let c = Config::parse(Path::new("x"), HOME).unwrap();
        assert_eq!(c.role, Role::Home);
        assert_eq!(c.membership.heartbeat_ms, 1000);
        assert_eq!(c.home.as_ref().unwrap().mode, Mode::Balance);
        assert_eq!(c.socket, PathBuf::from(DEFAULT_SOCKET));
        let again = Config::parse(Path::new("x"), &c.to_toml()).unwrap();
        assert_eq!(again, c);
    }

    const NODE: &str = r#"
name = "n1"
role = "node"
[tls]
ca = "/c/ca.pem"
cert = "/c/n1.pem"
key = "/c/n1.key"
[node]
home = "10.0.0.1:7170"
home_name = "home"
"#;

    #[test]
    fn nodes_see_the_homes_files_unless_told_or_on_the_home() {
        let c = Config::parse(Path::new("x"), NODE).unwrap();
        assert_eq!(c.node_files(), Files::Home);
        let own = NODE.replace("[node]\n", "[node]\nfiles = \"node\"\n");
        assert_eq!(
            Config::parse(Path::new("x"), &own).unwrap().node_files(),
            Files::Node
        );
        // A `both` daemon's node half is on the home: its own files.
        let both = format!(
            "{}\n[node]\nhome = \"127.0.0.1:7170\"\nhome_name = \"home\"\n",
            HOME.replace("role = \"home\"", "role = \"both\"")
        );
        let c = Config::parse(Path::new("x"), &both).unwrap();
        assert_eq!(c.node_files(), Files::Node);
        let told = both.replace("[node]\n", "[node]\nfiles = \"home\"\n");
        assert_eq!(
            Config::parse(Path::new("x"), &told).unwrap().node_files(),
            Files::Home
        );
        assert!(Config::parse(
            Path::new("x"),
            &NODE.replace("[node]\n", "[node]\nfiles = \"x\"\n")
        )
        .is_err());
    }

    #[test]
    fn parses_runners_and_emulated_nodes() {
        let with = format!(
            "{NODE}[node.runners]\narm64 = \"/usr/bin/qemu-aarch64-static\"\ns390x = {{ path = \"/usr/bin/qemu-s390x-static\", args = [\"-L\", \"/usr/s390x-linux-gnu\"] }}\n"
        );
        let c = Config::parse(Path::new("x"), &with).unwrap();
        let n = c.node.as_ref().unwrap();
        assert!(!n.emulated());
        assert_eq!(n.identity, IdentityMode::Home);
        let node_ids = NODE.replace("[node]\n", "[node]\nidentity = \"node\"\n");
        let c2 = Config::parse(Path::new("x"), &node_ids).unwrap();
        assert_eq!(c2.node.unwrap().identity, IdentityMode::Node);
        let bad = NODE.replace("[node]\n", "[node]\nidentity = \"elsewhere\"\n");
        assert!(Config::parse(Path::new("x"), &bad).is_err());
        let r = n.runner(Arch::Aarch64).unwrap();
        assert_eq!(r.path(), Path::new("/usr/bin/qemu-aarch64-static"));
        assert!(r.args().is_empty());
        assert_eq!(
            n.runner(Arch::S390x).unwrap().args(),
            ["-L", "/usr/s390x-linux-gnu"]
        );
        assert!(n.runner(Arch::Arm).is_none());
        assert_eq!(Config::parse(Path::new("x"), &c.to_toml()).unwrap(), c);

        let foreign = if Arch::native() == Arch::S390x {
            "aarch64"
        } else {
            "s390x"
        };
        let emulated = with.replace("[node]\n", &format!("[node]\narch = \"{foreign}\"\n"));
        let n = Config::parse(Path::new("x"), &emulated)
            .unwrap()
            .node
            .unwrap();
        assert!(n.emulated());
        assert_eq!(n.declared_arch().to_string(), foreign);
    }

    #[test]
    fn parses_load_sources_and_the_balancer() {
        let c = Config::parse(Path::new("x"), NODE).unwrap();
        let n = c.node.as_ref().unwrap();
        assert_eq!((n.cpu_source, n.cpus), (CpuSource::Host, None));
        assert_eq!(c.balance, BalanceConfig::default());
        assert!(!c.balance.enabled);
        let netns = NODE.replace("[node]\n", "[node]\ncpu_source = \"netns\"\ncpus = 1\n");
        let c = Config::parse(Path::new("x"), &netns).unwrap();
        let n = c.node.as_ref().unwrap();
        assert_eq!((n.cpu_source, n.cpus), (CpuSource::Netns, Some(1)));
        assert_eq!(Config::parse(Path::new("x"), &c.to_toml()).unwrap(), c);
        for bad in ["cpu_source = \"cgroup\"\n", "cpus = 0\n"] {
            let t = NODE.replace("[node]\n", &format!("[node]\n{bad}"));
            assert!(Config::parse(Path::new("x"), &t).is_err(), "{bad}");
        }
        let on = format!("{HOME}\n[balance]\nenabled = true\nhigh_pct = 70\nsustain = 2\n");
        let c = Config::parse(Path::new("x"), &on).unwrap();
        assert!(c.balance.enabled);
        assert_eq!((c.balance.high_pct, c.balance.low_pct), (70, 40));
        assert_eq!(c.balance.sustain, 2);
        assert_eq!(Config::parse(Path::new("x"), &c.to_toml()).unwrap(), c);
        for bad in ["low_pct = 90\n", "sustain = 0\n", "bogus = 1\n"] {
            let t = format!("{HOME}\n[balance]\n{bad}");
            assert!(Config::parse(Path::new("x"), &t).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_bad_node_arch_settings() {
        let e = Config::parse(
            Path::new("x"),
            &format!("{NODE}[node.runners]\nvax = \"/x\"\n"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("node.runners"), "{e}");
        let no_runner = NODE.replace("[node]\n", "[node]\narch = \"s390x\"\n");
        if Arch::native() != Arch::S390x {
            let e = Config::parse(Path::new("x"), &no_runner).unwrap_err();
            assert!(e.to_string().contains("needs a runner"), "{e}");
        }
    }

    #[test]
    fn rejects_bad_configs() {
        let bad_name = HOME.replace("name = \"home\"", "name = \"a b\"");
        assert!(Config::parse(Path::new("x"), &bad_name)
            .unwrap_err()
            .to_string()
            .contains("invalid config"));
        let node_without_section = HOME.replace("role = \"home\"", "role = \"node\"");
        let e = Config::parse(Path::new("x"), &node_without_section).unwrap_err();
        assert!(matches!(e, ConfigError::Invalid { .. }), "{e}");
        let unknown = format!("{HOME}\n[bogus]\nx=1\n");
        assert!(matches!(
            Config::parse(Path::new("x"), &unknown),
            Err(ConfigError::Parse { .. })
        ));
        let timeout = format!("{HOME}\n[membership]\nheartbeat_ms = 1000\ntimeout_ms = 500\n");
        assert!(Config::parse(Path::new("x"), &timeout).is_err());
    }
}
