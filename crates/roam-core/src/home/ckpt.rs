//! The home's part in checkpoint and restore of remote processes: it
//! checks the caller's rights, names the node, and relays the image
//! transfer between the `roam` command and the node (see
//! `crate::node::ckpt` and docs/design/checkpoint.md). Staging a file on
//! a node (docs/design/staging.md) is relayed the same way.

use std::sync::Arc;

use roam_proto::link::LinkMsg;
use roam_proto::local::LocalMsg;
use roam_proto::types::{Cred, ErrorCode, Mode, RestoreSpec, StageHash, WireError};

use super::{placement, Bound, Home, HomeSession, State};
use crate::wire::FrameTx;

/// An image transfer between a local connection and a node.
pub(super) struct Transfer {
    cli: FrameTx,
    node: String,
    /// A restore or a staging (the caller sends the image), or a
    /// checkpoint.
    restore: bool,
}

/// The transfer a local connection is in, to fill in the `req` of its
/// messages and to end it when the connection closes.
#[derive(Clone, Copy)]
pub(super) struct Current {
    req: u64,
}

fn no_process(home_pid: u32) -> WireError {
    WireError::new(
        ErrorCode::NotFound,
        format!("no remote process with home pid {home_pid}"),
    )
}

/// `LocalMsg::Checkpoint`: asks the process's node for its image.
pub(super) fn start_checkpoint(
    home: &Home,
    cred: &Cred,
    home_pid: u32,
    leave_running: bool,
    tx: &FrameTx,
) -> Result<Current, WireError> {
    let mut st = home.state.lock().unwrap();
    let (session, s) = st
        .sessions
        .iter()
        .find(|(_, s)| s.home_pid == home_pid && s.spawning.is_none())
        .ok_or_else(|| no_process(home_pid))?;
    if !cred.is_root() && cred.uid != s.uid {
        return Err(WireError::new(
            ErrorCode::PermissionDenied,
            format!("process {home_pid} belongs to another user"),
        ));
    }
    if s.exited {
        return Err(no_process(home_pid));
    }
    let (session, node) = (*session, s.node.clone());
    let link = node_link(&st, &node)?;
    let req = new_transfer(&mut st, tx, &node, false);
    link.send(
        "link",
        &LinkMsg::Checkpoint {
            req,
            session,
            leave_running,
        },
    );
    tracing::info!("checkpoint of home pid {home_pid} (session {session}) on {node}");
    Ok(Current { req })
}

/// A new transfer between the caller `tx` and `node`: its request id.
fn new_transfer(st: &mut State, tx: &FrameTx, node: &str, restore: bool) -> u64 {
    st.next_req += 1;
    let req = st.next_req;
    st.transfers.insert(
        req,
        Transfer {
            cli: tx.clone(),
            node: node.to_owned(),
            restore,
        },
    );
    req
}

pub(super) fn node_link(st: &State, node: &str) -> Result<FrameTx, WireError> {
    st.nodes
        .get(node)
        .and_then(|n| n.link.clone())
        .ok_or_else(|| {
            WireError::new(
                ErrorCode::Unavailable,
                format!("node {node} is not reachable"),
            )
        })
}

/// `LocalMsg::Restore`: starts a session on `node` whose process the image
/// the caller sends next becomes.
pub(super) fn start_restore(
    home: &Arc<Home>,
    cred: &Cred,
    pid: u32,
    spec: RestoreSpec,
    node: &str,
    tx: &FrameTx,
) -> Result<(Bound, Current), WireError> {
    let mode: Mode = *home.mode.lock().unwrap();
    let mut st = home.state.lock().unwrap();
    if st.sessions.values().any(|s| s.home_pid == pid) {
        return Err(WireError::new(
            ErrorCode::BadRequest,
            format!("process {pid} already proxies a remote process"),
        ));
    }
    let cands = Home::candidates(&st);
    let states = st.node_states();
    let c = placement::check_named(&cands, node, mode, None, |n| {
        states.get(n).cloned().unwrap_or_else(|| "unknown".into())
    })
    .map_err(super::place_err)?;
    // A process goes on only on a machine of its own architecture (not
    // through a runner: its memory is that machine's code).
    let native = st
        .nodes
        .get(node)
        .map(|n| (n.arch.native.clone(), n.arch.emulated));
    match native {
        Some((arch, false)) if arch == spec.arch => {}
        Some((arch, emulated)) => {
            return Err(WireError::new(
                ErrorCode::ExecFailed,
                format!(
                    "node {} is {} {arch} machine; the image is of an {} process, which is restored on a machine of its architecture only",
                    c.name,
                    if emulated { "an emulated" } else { "an" },
                    spec.arch
                ),
            ))
        }
        None => return Err(WireError::new(ErrorCode::NotFound, format!("no node {node}"))),
    }
    let link = node_link(&st, node)?;
    let req = new_transfer(&mut st, tx, node, true);
    let session = st.new_session_id();
    st.sessions.insert(
        session,
        HomeSession {
            node: node.to_owned(),
            home_pid: pid,
            node_pid: 0,
            uid: cred.uid,
            command: spec.command.clone(),
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
        &LinkMsg::Restore {
            req,
            session,
            home_pid: pid,
            cred: cred.clone(),
            spec: Box::new(spec),
        },
    );
    tracing::info!("restore for pid {pid} (session {session}) on {node}");
    Ok((Bound { session }, Current { req }))
}

/// Whether the connection's transfer `cur` is still under way.
pub(super) fn active(home: &Home, cur: Option<Current>) -> bool {
    cur.is_some_and(|c| home.state.lock().unwrap().transfers.contains_key(&c.req))
}

/// `LocalMsg::Stage`: asks `node` to take the file the caller sends next
/// into its cache. Any user may: the cache is content-addressed, and
/// bounded by the node.
pub(super) fn start_stage(
    home: &Home,
    node: &str,
    hash: StageHash,
    len: u64,
    tx: &FrameTx,
) -> Result<Current, WireError> {
    let mut st = home.state.lock().unwrap();
    if !st.nodes.contains_key(node) {
        return Err(WireError::new(
            ErrorCode::NotFound,
            format!("no node {node}"),
        ));
    }
    let link = node_link(&st, node)?;
    let req = new_transfer(&mut st, tx, node, true);
    link.send("link", &LinkMsg::Stage { req, hash, len });
    Ok(Current { req })
}

/// A transfer message from the caller: to its node, as its transfer's.
pub(super) fn from_caller(home: &Home, cur: Option<Current>, tx: &FrameTx, msg: LinkMsg) {
    let Some(Current { req }) = cur else {
        tx.send(
            "local",
            &LocalMsg::Error(WireError::new(
                ErrorCode::BadRequest,
                "no image transfer on this connection",
            )),
        );
        return;
    };
    let msg = match msg {
        LinkMsg::Image { offset, data, .. } => LinkMsg::Image { req, offset, data },
        LinkMsg::ImageAck { offset, .. } => LinkMsg::ImageAck { req, offset },
        LinkMsg::ImageEnd { result, .. } => LinkMsg::ImageEnd { req, result },
        LinkMsg::ImageSaved { ok, .. } => LinkMsg::ImageSaved { req, ok },
        _ => return,
    };
    let st = home.state.lock().unwrap();
    let Some(t) = st.transfers.get(&req) else {
        return;
    };
    if let Some(l) = st.nodes.get(&t.node).and_then(|n| n.link.as_ref()) {
        l.send("link", &msg);
    }
}

/// A transfer message from `node`: to the caller whose transfer it is.
pub(super) fn from_node(st: &mut State, node: &str, msg: LinkMsg) {
    let req = match &msg {
        LinkMsg::Image { req, .. }
        | LinkMsg::ImageAck { req, .. }
        | LinkMsg::ImageEnd { req, .. }
        | LinkMsg::Checkpointed { req, .. }
        | LinkMsg::Staged { req, .. } => *req,
        _ => return,
    };
    let Some(t) = st.transfers.get(&req).filter(|t| t.node == node) else {
        return;
    };
    match msg {
        LinkMsg::Staged { result, .. } => {
            t.cli.send(
                "local",
                &match result {
                    Ok(()) => LocalMsg::Ok,
                    Err(e) => LocalMsg::Error(e),
                },
            );
            st.transfers.remove(&req);
        }
        LinkMsg::Checkpointed { .. } => {
            t.cli.send("local", &LocalMsg::Transfer(msg));
            st.transfers.remove(&req);
        }
        _ => {
            t.cli.send("local", &LocalMsg::Transfer(msg));
        }
    }
}

/// The caller's connection closed: its transfer ends (a checkpoint's
/// process runs on; a restore's node drops the image).
pub(super) fn caller_gone(home: &Home, cur: Option<Current>) {
    let Some(Current { req }) = cur else { return };
    let mut st = home.state.lock().unwrap();
    let Some(t) = st.transfers.remove(&req) else {
        return;
    };
    let msg = if t.restore {
        LinkMsg::ImageEnd {
            req,
            result: Err(WireError::new(
                ErrorCode::Unavailable,
                "the caller went away",
            )),
        }
    } else {
        LinkMsg::ImageSaved { req, ok: false }
    };
    if let Some(l) = st.nodes.get(&t.node).and_then(|n| n.link.as_ref()) {
        l.send("link", &msg);
    }
}

/// A restore's process started (or failed): its transfer is over.
pub(super) fn restored(st: &mut State, req: u64) {
    st.transfers.retain(|&r, t| !(r == req && t.restore));
}

/// `node` is down: its transfers' callers are told.
pub(super) fn node_down(st: &mut State, node: &str, reason: &str) {
    st.transfers.retain(|_, t| {
        if t.node != node {
            return true;
        }
        t.cli.send(
            "local",
            &LocalMsg::NodeLost {
                node: node.to_owned(),
                reason: reason.to_owned(),
            },
        );
        false
    });
}
