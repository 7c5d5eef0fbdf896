//! Messages between a local client (the `roam` CLI, or a proxy) and the local
//! `roamd`, over its Unix socket.
//!
//! The client sends a [`LocalHello`] in a hello frame and gets a
//! [`LocalHelloReply`]; then it sends requests and reads answers, one at a
//! time. A `Spawn` or `Reattach` turns the connection into the session's
//! stream: from then on both sides send [`LocalMsg::Stream`] frames carrying
//! the same stream messages as the link protocol.
//!
//! The daemon knows who the client is from the socket's peer credentials;
//! nothing in these messages can claim another identity.

use serde::{Deserialize, Serialize};

use crate::link::LinkMsg;
use crate::types::{
    BalanceStatus, MigrateMode, MigrateReport, Mode, NodeInfo, ProcInfo, RestoreSpec, SessionId,
    SpawnSpec, StageHash, WireError, WireSignal,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalHello {
    /// What the client is, for the daemon's log ("roam ps", "proxy"...).
    pub client: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LocalHelloReply {
    Welcome { node_name: String, is_home: bool },
    Refused { reason: String },
}

/// The index of [`LocalMsg::Stream`] among `LocalMsg`'s variants (checked
/// by a test against the derived encoding).
const STREAM_VARIANT: u32 = 30;

/// The frame [`crate::encode_frame`] makes of `LocalMsg::Stream(msg)`,
/// made from the body of `msg`'s link frame as it came: the home relays a
/// node's stream data to its proxy without decoding and encoding it again.
pub fn stream_frame(link_body: &[u8]) -> Result<Vec<u8>, crate::ProtoError> {
    let mut out = Vec::with_capacity(4 + 5 + link_body.len());
    out.extend_from_slice(&[0u8; 4]);
    let mut out =
        postcard::to_extend(&STREAM_VARIANT, out).map_err(|source| crate::ProtoError::Encode {
            what: "local",
            source,
        })?;
    out.extend_from_slice(link_body);
    crate::frame::finish_frame(out)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LocalMsg {
    // ---- requests ----
    /// List the cluster's nodes.
    Nodes,
    /// List remote processes (the caller's own; every user's for root).
    Ps,
    /// Signal a remote process by its home pid.
    Kill {
        home_pid: u32,
        signal: WireSignal,
    },
    /// Read or change the cluster's default placement mode (change: root).
    GetMode,
    SetMode {
        mode: Mode,
    },
    /// Read the balancer's state, or turn it on or off (root).
    GetBalance,
    SetBalance {
        on: bool,
    },
    /// Which node the cluster's placement would give a new process, among
    /// `among` (all nodes if empty); answered with `Placed`. Nothing is
    /// reserved: the caller then spawns there (the GridRPC client's
    /// default handles, which pick a build per node).
    Place {
        among: Vec<String>,
    },
    /// Reserve `count` distinct nodes for a `-N` job (parallel semantics).
    Reserve {
        count: u32,
        /// The program's architecture: only nodes that run it.
        arch: Option<String>,
    },
    /// Start a remote process; the caller's pid becomes its home pid.
    Spawn {
        spec: Box<SpawnSpec>,
        node: Option<String>,
        mode: Option<Mode>,
        /// A reservation token and the index of the node in it.
        reservation: Option<(u64, u32)>,
    },
    /// A proxy reconnecting after a home daemon restart.
    Reattach {
        session: SessionId,
    },
    /// Checkpoint the remote process with this home pid: its image comes
    /// back as `Transfer(Image...)`, `Transfer(ImageEnd)`; the caller
    /// answers `Transfer(ImageAck)`s and then `Transfer(ImageSaved)`; the
    /// end is `Transfer(Checkpointed)`. See docs/design/checkpoint.md.
    Checkpoint {
        home_pid: u32,
        leave_running: bool,
    },
    /// Restore an image on `node`; the caller's pid becomes the home pid.
    /// The caller then sends the image (`Transfer(Image...)`,
    /// `Transfer(ImageEnd)`), gets `Transfer(ImageAck)`s, and `Spawned`
    /// as after a `Spawn`, then the session's stream.
    Restore {
        spec: Box<RestoreSpec>,
        node: String,
    },
    /// Move the remote process with this home pid to `node` (None: where
    /// the placement puts it, not its current node). Answered with
    /// `MigrateProgress`es, then `Migrated`.
    Migrate {
        home_pid: u32,
        node: Option<String>,
        mode: MigrateMode,
    },
    /// Stop placing processes on `node` (`on`), or place on it again.
    /// Root only. `roam drain` then migrates its processes away.
    SetDraining {
        node: String,
        on: bool,
    },
    /// Put a file in `node`'s cache of staged executables (see
    /// docs/design/staging.md). The caller then sends its bytes as an
    /// image (`Transfer(Image...)`, `Transfer(ImageEnd)`), gets
    /// `Transfer(ImageAck)`s, and at the end `Ok` or `Error`.
    Stage {
        node: String,
        hash: StageHash,
        len: u64,
    },
    /// A message of the connection's image transfer (its `req` is the
    /// home's to fill in).
    Transfer(LinkMsg),

    // ---- answers ----
    Error(WireError),
    NodeList(Vec<NodeInfo>),
    ProcList(Vec<ProcInfo>),
    ModeIs(Mode),
    BalanceIs(Box<BalanceStatus>),
    Reserved {
        token: u64,
        nodes: Vec<String>,
    },
    Placed {
        node: String,
    },
    Spawned {
        session: SessionId,
        node: String,
        node_pid: u32,
    },
    Reattached {
        node: String,
        node_pid: u32,
    },
    /// The answer to a `Spawn` of a staged program (`SpawnSpec::staged`)
    /// that `node`, where the placement put it, does not have: `Stage` it
    /// there and ask again, naming that node.
    NotStaged {
        node: String,
    },
    Ok,
    /// A migration under way: `sent` of `total` bytes are on the new node.
    MigrateProgress {
        sent: u64,
        total: u64,
    },
    Migrated(Result<MigrateReport, WireError>),

    // ---- session stream (after Spawned/Reattached) ----
    /// A stream message for this connection's session.
    Stream(LinkMsg),
    /// The node running the process is gone; the process is lost.
    NodeLost {
        node: String,
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Chan, SessionId};

    #[test]
    fn a_stream_frame_from_a_link_body_is_the_messages_frame() {
        for msg in [
            LinkMsg::Data {
                session: SessionId(7),
                chan: Chan::Stdout,
                offset: 1 << 33,
                data: (0..70_000u32).map(|i| i as u8).collect(),
            },
            LinkMsg::Eof {
                session: SessionId(u64::MAX),
                chan: Chan::Stderr,
                offset: 0,
            },
        ] {
            let link = crate::encode_frame("link", &msg).unwrap();
            let want = crate::encode_frame("local", &LocalMsg::Stream(msg)).unwrap();
            assert_eq!(stream_frame(&link[4..]).unwrap(), want);
        }
    }
}
