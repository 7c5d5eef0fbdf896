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
//!
//! [node]                             # for role node or both
//! home = "10.77.1.1:7170"            # where the home daemon listens
//! home_name = "home"                 # the name in the home's certificate
//! orphan_grace_ms = 60000            # keep processes this long while the home is away
//!
//! [membership]
//! heartbeat_ms = 1000
//! timeout_ms = 4000
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub home: SocketAddr,
    pub home_name: String,
    #[serde(default = "default_orphan_grace")]
    pub orphan_grace_ms: u64,
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
}

/// The socket the CLI uses when `ROAM_SOCKET` is not set.
pub const DEFAULT_SOCKET: &str = "/run/roam/roamd.sock";

fn default_socket() -> PathBuf {
    PathBuf::from(DEFAULT_SOCKET)
}
fn default_mode() -> Mode {
    Mode::Balance
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
