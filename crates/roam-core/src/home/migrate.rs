//! The home's part in live migration: it checks the caller's rights and
//! the destination, asks the old node to freeze and capture the process
//! (`MigrateOut`), starts the restore on the new node when the capture's
//! size is known, relays the transfer between the two nodes, and decides:
//! the process runs on the new node (commit: the old node kills its frozen
//! copy, the session's streams resume from the new node), or anything
//! failed (the old node lets its copy go on). The proxy is not disturbed
//! either way. See docs/design/migration.md.

use std::time::Instant;

use roam_proto::link::{LinkMsg, PeerPath};
use roam_proto::local::LocalMsg;
use roam_proto::types::{
    Cred, ErrorCode, Handover, ImageSummary, MigrateMode, MigrateReport, Mode, RestoreSpec,
    SessionId, WireError,
};

use super::{placement, Home, State};
use crate::wire::FrameTx;

/// Bytes between two progress reports to the caller.
const PROGRESS_STEP: u64 = 16 << 20;

/// A migration under way, by the request id both nodes use for it.
pub(super) struct Migration {
    session: SessionId,
    home_pid: u32,
    uid: u32,
    command: String,
    from: String,
    to: String,
    /// The command that asked for it, told of progress and the outcome
    /// (none for the balancer).
    caller: Option<FrameTx>,
    started: Instant,
    /// When the capture was reported, how long it took, its image.
    captured: Option<(Instant, ImageSummary, Handover)>,
    /// When the old node's `ImageEnd` went by (the transfer's end).
    sent: Option<Instant>,
    /// Decided: the old node was told (`MigrateEnd`).
    decided: bool,
    /// The old node's link went: no `Checkpointed` will come.
    old_gone: bool,
    reported: u64,
    /// Pre-copy rounds relayed, and their bytes.
    rounds: u32,
    precopied: u64,
    /// The pages go node to node (a peer link), not through the home.
    direct: bool,
    /// A post-copy: after the commit, the report waits for the old node's
    /// end (`Checkpointed`: every page is on the new node).
    postcopy: bool,
    committed: Option<(Instant, MigrateReport)>,
}

impl Migration {
    /// The bytes of pages the image of `s` left out: those that came while
    /// the process was frozen (streamed), and those that follow it
    /// (post-copy).
    fn left_out(&self, s: &ImageSummary) -> (u64, u64) {
        if self.postcopy {
            (0, s.lazy)
        } else {
            (s.lazy, 0)
        }
    }
}

fn no_process(home_pid: u32) -> WireError {
    WireError::new(
        ErrorCode::NotFound,
        format!("no remote process with home pid {home_pid}"),
    )
}

/// `LocalMsg::Migrate` (and the balancer, with no caller): starts moving
/// the process of `home_pid` to `node` (placement's choice if None).
/// Memory moves as `how` says. Returns the new node's name.
pub(super) fn start(
    home: &Home,
    cred: &Cred,
    home_pid: u32,
    node: Option<&str>,
    caller: Option<&FrameTx>,
    how: MigrateMode,
) -> Result<String, WireError> {
    let mode: Mode = *home.mode.lock().unwrap();
    let mut st = home.state.lock().unwrap();
    let (session, s) = st
        .sessions
        .iter()
        .find(|(_, s)| s.home_pid == home_pid && s.spawning.is_none() && !s.exited)
        .ok_or_else(|| no_process(home_pid))?;
    if !cred.is_root() && cred.uid != s.uid {
        return Err(WireError::new(
            ErrorCode::PermissionDenied,
            format!("process {home_pid} belongs to another user"),
        ));
    }
    if s.migrating.is_some() {
        return Err(WireError::new(
            ErrorCode::BadRequest,
            format!("process {home_pid} is migrating already"),
        ));
    }
    let session = *session;
    if st
        .migrations
        .values()
        .any(|m| m.session == session && m.committed.is_some())
    {
        return Err(WireError::new(
            ErrorCode::BadRequest,
            format!("process {home_pid} is still fetching its memory from its last move"),
        ));
    }
    let (from, uid, command, node_pid) = (s.node.clone(), s.uid, s.command.clone(), s.node_pid);
    // Its memory is its machine's code: a node of the same architecture,
    // not emulated, on both ends.
    let arch = |n: &str| {
        st.nodes
            .get(n)
            .map(|e| (e.arch.native.clone(), e.arch.emulated))
    };
    let (from_arch, from_emulated) = arch(&from)
        .ok_or_else(|| WireError::new(ErrorCode::Unavailable, format!("node {from} is gone")))?;
    if from_emulated {
        return Err(WireError::new(
            ErrorCode::ExecFailed,
            format!("node {from} is an emulated machine: its processes do not migrate"),
        ));
    }
    let mut cands = Home::candidates(&st);
    let to = match node {
        Some(n) => {
            if n == from {
                return Err(WireError::new(
                    ErrorCode::BadRequest,
                    format!("process {home_pid} is on {n} already"),
                ));
            }
            let states = st.node_states();
            placement::check_named(&cands, n, mode, None, |n| {
                states.get(n).cloned().unwrap_or_else(|| "unknown".into())
            })
            .map_err(super::place_err)?;
            match arch(n) {
                Some((a, false)) if a == from_arch => {}
                Some((a, emulated)) => {
                    return Err(WireError::new(
                        ErrorCode::ExecFailed,
                        format!(
                            "node {n} is {} {a} machine; process {home_pid} runs on an {from_arch} one, and moves to one of its architecture only",
                            if emulated { "an emulated" } else { "an" },
                        ),
                    ))
                }
                None => return Err(WireError::new(ErrorCode::NotFound, format!("no node {n}"))),
            }
            n.to_owned()
        }
        None => {
            cands.retain(|c| c.name != from && arch(&c.name) == Some((from_arch.clone(), false)));
            placement::choose(&cands, Mode::Balance)
                .map_err(|e| {
                    WireError::new(
                        ErrorCode::NoCapacity,
                        format!("no node to move process {home_pid} to: {e}"),
                    )
                })?
                .name
                .clone()
        }
    };
    let src = super::ckpt::node_link(&st, &from)?;
    let dst = super::ckpt::node_link(&st, &to)?;
    let direct = st.nodes.get(&to).and_then(|n| n.peer).map(|addr| PeerPath {
        node: to.clone(),
        addr,
    });
    if how == MigrateMode::PostCopy && direct.is_none() {
        return Err(WireError::new(
            ErrorCode::BadRequest,
            format!("a post-copy needs a peer link to node {to}, which has none (peer_listen in its config)"),
        ));
    }
    st.next_req += 1;
    let req = st.next_req;
    st.sessions
        .get_mut(&session)
        .expect("found above")
        .migrating = Some(req);
    st.migrations.insert(
        req,
        Migration {
            session,
            home_pid,
            uid,
            command,
            from: from.clone(),
            to: to.clone(),
            caller: caller.cloned(),
            started: Instant::now(),
            captured: None,
            sent: None,
            decided: false,
            old_gone: false,
            reported: 0,
            rounds: 0,
            precopied: 0,
            direct: direct.is_some(),
            postcopy: how == MigrateMode::PostCopy,
            committed: None,
        },
    );
    if direct.is_some() {
        // Before the old node is asked: it may connect at once. The
        // restore goes ahead too: the old node's `Captured` completes it
        // over the peer link, without a hop through here.
        dst.send(
            "link",
            &LinkMsg::Expect {
                req,
                from: from.clone(),
                pid: node_pid,
            },
        );
        let restore = restore_msg(&st, req, None);
        crate::fault::home_before("Restore");
        dst.send("link", &restore);
    }
    let path = match &direct {
        Some(p) => format!("directly to {}", p.addr),
        None => "through the home".to_owned(),
    };
    crate::fault::home_before("MigrateOut");
    src.send(
        "link",
        &LinkMsg::MigrateOut {
            req,
            session,
            mode: how,
            direct,
        },
    );
    tracing::info!("migrating home pid {home_pid} (session {session}) from {from} to {to}, {path}");
    Ok(to)
}

/// The `Restore` of migration `req` for its new node: with the image's
/// length and the streams' handover once the capture is known, or ahead
/// of it (over a peer link, the old node's `Captured` completes it).
fn restore_msg(st: &State, req: u64, captured: Option<(u64, Handover)>) -> LinkMsg {
    let m = &st.migrations[&req];
    let ahead = captured.is_none();
    let (image_len, handover) = captured.map_or((0, None), |(len, h)| (len, Some(h)));
    LinkMsg::Restore {
        req,
        session: m.session,
        home_pid: m.home_pid,
        cred: Cred {
            uid: m.uid,
            gid: 0,
            groups: Vec::new(),
        },
        spec: Box::new(RestoreSpec {
            image_len,
            arch: st
                .nodes
                .get(&m.from)
                .map_or_else(String::new, |n| n.arch.native.clone()),
            command: m.command.clone(),
            null: [false; 3],
            home_ppid: roam_sys::procfs::proc_links(m.home_pid).map_or(1, |l| l.ppid),
            home_host: roam_sys::procfs::hostname(),
            handover,
            postcopy: m.postcopy,
            ahead,
        }),
    }
}

/// The request id of a message a migration may be made of.
fn req_of(msg: &LinkMsg) -> Option<u64> {
    match msg {
        LinkMsg::Captured { req, .. }
        | LinkMsg::PreCopy { req, .. }
        | LinkMsg::Image { req, .. }
        | LinkMsg::ImageAck { req, .. }
        | LinkMsg::ImageEnd { req, .. }
        | LinkMsg::Spawned { req, .. }
        | LinkMsg::Checkpointed { req, .. } => Some(*req),
        _ => None,
    }
}

/// Whether `msg` is a message of a migration under way.
pub(super) fn owns(st: &State, msg: &LinkMsg) -> bool {
    req_of(msg).is_some_and(|req| st.migrations.contains_key(&req))
}

/// A message of a migration from `node` (see [`owns`]).
pub(super) fn from_node(st: &mut State, node: &str, msg: LinkMsg) {
    let Some(req) = req_of(&msg) else {
        return;
    };
    let Some(m) = st.migrations.get_mut(&req) else {
        return;
    };
    let from_old = m.from == node;
    let from_new = m.to == node;
    let link = |st: &State, n: &str| st.nodes.get(n).and_then(|e| e.link.clone());
    match msg {
        LinkMsg::Captured { result, .. } if from_old => match result {
            Ok((summary, handover)) => {
                m.captured = Some((Instant::now(), summary, handover.clone()));
                if m.direct {
                    // The new node has its `Restore`, sent ahead, and the
                    // capture's summary over the peer link.
                    return;
                }
                let to = m.to.clone();
                let restore = restore_msg(st, req, Some((summary.len, handover)));
                match link(st, &to) {
                    Some(l) => {
                        crate::fault::home_before("Restore");
                        l.send("link", &restore);
                    }
                    None => fail(st, req, format!("node {to} went away")),
                }
            }
            // The old node answers `Checkpointed` next: the end.
            Err(e) => tell(st, req, Err(e)),
        },
        LinkMsg::PreCopy { len, .. } if from_old => {
            m.rounds += 1;
            m.precopied += len;
            let to = m.to.clone();
            if !m.direct {
                if let Some(l) = link(st, &to) {
                    l.send("link", &msg);
                }
            }
        }
        LinkMsg::Image { .. } | LinkMsg::ImageEnd { .. } if from_old => {
            // Direct, the peer link carries them; but an end that failed
            // may be why it broke: the new node hears it from here too.
            let relay = !m.direct || matches!(msg, LinkMsg::ImageEnd { result: Err(_), .. });
            if matches!(msg, LinkMsg::ImageEnd { .. }) {
                m.sent = Some(Instant::now());
            }
            let to = m.to.clone();
            if relay {
                if let Some(l) = link(st, &to) {
                    l.send("link", &msg);
                }
            }
        }
        LinkMsg::ImageAck { offset, .. } if from_new => {
            // Streamed, the pages left out of the image come before the
            // restore is reported, on the same count.
            let total = m.precopied
                + m.captured
                    .as_ref()
                    .map_or(0, |(_, s, h)| s.len + h.stdin_unread + m.left_out(s).0);
            if offset >= m.reported + PROGRESS_STEP || offset == total {
                m.reported = offset;
                if let Some(c) = &m.caller {
                    c.send(
                        "local",
                        &LocalMsg::MigrateProgress {
                            sent: offset,
                            total,
                        },
                    );
                }
            }
            let from = m.from.clone();
            if !m.direct {
                if let Some(l) = link(st, &from) {
                    l.send("link", &msg);
                }
            }
        }
        LinkMsg::Spawned { result, .. } if from_new => match result {
            Ok(pid) => commit(st, req, pid),
            Err(e) => {
                let to = m.to.clone();
                fail(st, req, format!("restore on {to}: {}", e.message));
            }
        },
        LinkMsg::Checkpointed { result, .. } if from_old => {
            if !m.decided {
                // The old node gave up before a verdict (it could not send
                // the image): its process goes on there.
                let why = result
                    .err()
                    .map_or_else(|| "the old node ended it".into(), |e| e.message);
                let (session, from, to) = (m.session, m.from.clone(), m.to.clone());
                let restoring = m.direct || m.captured.is_some();
                end_session_move(st, session, &from);
                if let Some(l) = link(st, &to) {
                    if restoring {
                        call_off_restore(st, req, &to, session);
                    }
                    l.send("link", &LinkMsg::Forget { session });
                    // Pre-copied pages it may hold for the move.
                    l.send(
                        "link",
                        &LinkMsg::ImageEnd {
                            req,
                            result: Err(WireError::new(ErrorCode::Unavailable, why.clone())),
                        },
                    );
                }
                tell(st, req, Err(WireError::new(ErrorCode::Unavailable, why)));
                st.migrations.remove(&req);
            } else {
                if let Err(e) = &result {
                    tracing::warn!(
                        "migration of home pid {} from {}: {}",
                        m.home_pid,
                        m.from,
                        e.message
                    );
                }
                if let Some((at, mut report)) = m.committed.take() {
                    let after = at.elapsed().as_micros() as u64;
                    report.postcopy_us = after;
                    report.total_us += after;
                    tracing::info!(
                        "home pid {}: post-copy from {} over, {} bytes in {:.1} ms after its start on {}",
                        report.home_pid,
                        report.from,
                        report.postcopied,
                        after as f64 / 1e3,
                        report.to
                    );
                    let told = result.map(|()| report).map_err(|e| {
                        WireError::new(
                            ErrorCode::Unavailable,
                            format!("the post-copy failed ({}): the process is lost", e.message),
                        )
                    });
                    tell(st, req, told);
                }
                st.migrations.remove(&req);
            }
        }
        other => tracing::warn!("node {node}: unexpected {other:?} in migration {req}"),
    }
}

/// Tells the caller of migration `req` how it went, once.
fn tell(st: &mut State, req: u64, result: Result<MigrateReport, WireError>) {
    if let Some(m) = st.migrations.get_mut(&req) {
        if let Some(c) = m.caller.take() {
            c.send("local", &LocalMsg::Migrated(result));
        }
    }
}

/// The session's migration is over: it goes on on `node`, and the
/// signals held meanwhile go there.
fn end_session_move(st: &mut State, session: SessionId, node: &str) {
    let Some(s) = st.sessions.get_mut(&session) else {
        return;
    };
    s.migrating = None;
    let held = std::mem::take(&mut s.held);
    if let Some(l) = st.nodes.get(node).and_then(|n| n.link.as_ref()) {
        for msg in held {
            l.send("link", &msg);
        }
    }
}

/// The new node runs the process as `pid`: the old copy goes, the
/// session's streams go on from the new node.
fn commit(st: &mut State, req: u64, pid: u32) {
    let Some(m) = st.migrations.get_mut(&req) else {
        return;
    };
    m.decided = true;
    let (session, from, to) = (m.session, m.from.clone(), m.to.clone());
    if let Some(l) = st.nodes.get(&from).and_then(|n| n.link.as_ref()) {
        crate::fault::home_before("MigrateEnd");
        l.send("link", &LinkMsg::MigrateEnd { req, commit: true });
    }
    let m = st.migrations.get(&req).expect("found above");
    let now = Instant::now();
    let total_us = now.duration_since(m.started).as_micros() as u64;
    // Frozen from the stop to now, on this clock: the move but the time
    // the old node took to stop the process (the request's way to the
    // old node counts as frozen, as the commit's way to the new one
    // does not). The home's own hearing of `Captured` is no mark: over a
    // peer link the restore does not wait for it.
    let (frozen_us, image_len, stored, postcopied) =
        m.captured.as_ref().map_or((0, 0, 0, 0), |(_, s, _)| {
            let (during, after) = m.left_out(s);
            (
                total_us.saturating_sub(s.stopped_after_us),
                s.len + during,
                s.stored + during,
                after,
            )
        });
    let report_ = MigrateReport {
        home_pid: m.home_pid,
        from: from.clone(),
        to: to.clone(),
        node_pid: pid,
        image_len,
        stored,
        frozen_us,
        total_us,
        rounds: m.rounds,
        precopied: m.precopied,
        postcopied,
        postcopy_us: 0,
    };
    let dest = st.nodes.get(&to).and_then(|n| n.link.clone());
    let Some(s) = st.sessions.get_mut(&session) else {
        // Its proxy went away meanwhile: the new copy goes too.
        if let Some(l) = dest {
            l.send("link", &LinkMsg::Forget { session });
        }
        return;
    };
    s.node = to.clone();
    s.node_pid = pid;
    s.moves += 1;
    if let Some(p) = &s.proxy {
        p.send(
            "local",
            &LocalMsg::Reattached {
                node: to.clone(),
                node_pid: pid,
            },
        );
        p.send("local", &LocalMsg::Stream(LinkMsg::PathUp { session }));
    }
    if let Some(l) = &dest {
        crate::fault::home_before("PathUp");
        l.send("link", &LinkMsg::PathUp { session });
    }
    end_session_move(st, session, &to);
    let m = st.migrations.get(&req).expect("found above");
    let ms =
        |a: Instant, b: Option<Instant>| b.map_or(0.0, |b| b.duration_since(a).as_secs_f64() * 1e3);
    let (capture, transfer, restore) = match &m.captured {
        Some((t, s, _)) => (
            s.frozen_us as f64 / 1e3,
            ms(*t, m.sent),
            m.sent
                .map_or(0.0, |t| now.duration_since(t).as_secs_f64() * 1e3),
        ),
        None => (0.0, 0.0, 0.0),
    };
    tracing::info!(
        "home pid {} moved from {from} to {to} (pid {pid}): {} bytes pre-copied in {} rounds, {} bytes frozen, frozen {:.1} ms, {:.1} ms in all (capture {capture:.1} ms, transfer {transfer:.1} ms, restore {restore:.1} ms)",
        report_.home_pid,
        report_.precopied,
        report_.rounds,
        report_.image_len,
        report_.frozen_us as f64 / 1e3,
        report_.total_us as f64 / 1e3
    );
    let m = st.migrations.get_mut(&req).expect("found above");
    if m.postcopy && !m.old_gone {
        // Told once the memory is all there.
        m.committed = Some((now, report_));
    } else {
        tell(st, req, Ok(report_));
    }
    forget_if_over(st, req);
}

/// Drops a decided migration whose old node will not answer any more.
fn forget_if_over(st: &mut State, req: u64) {
    if st
        .migrations
        .get(&req)
        .is_some_and(|m| m.decided && m.old_gone)
    {
        st.migrations.remove(&req);
    }
}

/// Migration `req` failed before its commit: the old node lets its copy
/// go on; the new node drops what it received.
fn fail(st: &mut State, req: u64, why: String) {
    let Some(m) = st.migrations.get_mut(&req) else {
        return;
    };
    if m.decided {
        return;
    }
    m.decided = true;
    let (from, to) = (m.from.clone(), m.to.clone());
    let restoring = m.direct || m.captured.is_some();
    let (session, home_pid) = (m.session, m.home_pid);
    if let Some(l) = st.nodes.get(&from).and_then(|n| n.link.as_ref()) {
        l.send("link", &LinkMsg::MigrateEnd { req, commit: false });
    }
    if let Some(l) = st.nodes.get(&to).and_then(|n| n.link.clone()) {
        l.send(
            "link",
            &LinkMsg::ImageEnd {
                req,
                result: Err(WireError::new(ErrorCode::Unavailable, why.clone())),
            },
        );
        if restoring {
            call_off_restore(st, req, &to, session);
        }
    }
    tracing::warn!(
        "migration of home pid {home_pid} from {from} to {to} failed: {why}; it goes on on {from}"
    );
    end_session_move(st, session, &from);
    tell(
        st,
        req,
        Err(WireError::new(
            ErrorCode::Unavailable,
            format!("{why}; the process goes on on {from}"),
        )),
    );
    forget_if_over(st, req);
}

/// Migrations called off that their new node may still be restoring
/// (its `Restore` went, and the whole image may have come before the news)
/// that are remembered, at most: the oldest go first.
const MAX_CALLED_OFF: usize = 256;

/// Migration `req` was called off while node `to` may be restoring its
/// process: a copy it reports made (`Spawned`) is killed.
fn call_off_restore(st: &mut State, req: u64, to: &str, session: SessionId) {
    if st.called_off.len() >= MAX_CALLED_OFF {
        if let Some(oldest) = st.called_off.keys().min().copied() {
            st.called_off.remove(&oldest);
        }
    }
    st.called_off.insert(req, (to.to_owned(), session));
}

/// `Spawned` `req` from `node`: if it is of a migration called off, the
/// copy made there (held, never run) is killed, and true is returned.
pub(super) fn spawned_after_call_off(
    st: &mut State,
    node: &str,
    req: u64,
    result: &Result<u32, WireError>,
) -> bool {
    if st.called_off.get(&req).is_none_or(|(n, _)| n != node) {
        return false;
    }
    let (_, session) = st.called_off.remove(&req).expect("checked above");
    if result.is_ok() {
        tracing::info!("migration {req}, called off, made a copy on {node}: it is killed");
        if let Some(l) = st.nodes.get(node).and_then(|n| n.link.as_ref()) {
            l.send("link", &LinkMsg::Forget { session });
        }
    }
    true
}

/// `node`'s link closed or it is down: its migrations fail. One whose old
/// node is gone ends there (its process is lost with its node if the node
/// is declared down; if it comes back, the process goes on there).
pub(super) fn node_gone(st: &mut State, node: &str) {
    // Its restores went with it.
    st.called_off.retain(|_, (to, _)| to != node);
    let reqs: Vec<u64> = st
        .migrations
        .iter()
        .filter(|(_, m)| m.from == node || m.to == node)
        .map(|(r, _)| *r)
        .collect();
    for req in reqs {
        let m = st.migrations.get_mut(&req).expect("listed above");
        if m.from == node {
            m.old_gone = true;
        }
        let captured = m.captured.is_some();
        if m.decided {
            if m.from == node && m.committed.is_some() {
                m.committed = None;
                tell(
                    st,
                    req,
                    Err(WireError::new(
                        ErrorCode::Unavailable,
                        format!("node {node} went away during the post-copy, with part of the process's memory: the process is lost"),
                    )),
                );
            }
            forget_if_over(st, req);
        } else if m.to == node {
            fail(st, req, format!("node {node} went away"));
        } else if !captured {
            fail(st, req, format!("node {node} went away during the capture"));
        } else {
            // The old node went while sending: the new one cannot have the
            // whole image unless it was all relayed, in which case it may
            // still commit; otherwise its restore fails for want of data.
            let to = m.to.clone();
            if let Some(l) = st.nodes.get(&to).and_then(|n| n.link.as_ref()) {
                l.send(
                    "link",
                    &LinkMsg::ImageEnd {
                        req,
                        result: Err(WireError::new(
                            ErrorCode::Unavailable,
                            format!("node {node} went away"),
                        )),
                    },
                );
            }
        }
    }
}

/// The caller of a migration went away: it goes on without telling.
pub(super) fn caller_gone(st: &mut State, tx: &FrameTx) {
    for m in st.migrations.values_mut() {
        if m.caller.as_ref().is_some_and(|c| c.same(tx)) {
            m.caller = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_called_off_is_remembered_for_its_node_only_and_the_oldest_go_first() {
        let mut st = State::default();
        let ok: Result<u32, WireError> = Ok(7);
        call_off_restore(&mut st, 5, "n2", SessionId(9));
        // Another node's `Spawned` of that request is not the one.
        assert!(!spawned_after_call_off(&mut st, "n3", 5, &ok));
        assert!(!spawned_after_call_off(&mut st, "n2", 6, &ok));
        // The node's is, once.
        assert!(spawned_after_call_off(&mut st, "n2", 5, &ok));
        assert!(!spawned_after_call_off(&mut st, "n2", 5, &ok));
        // A failed restore made nothing, and is done with too.
        call_off_restore(&mut st, 8, "n2", SessionId(9));
        let failed = Err(WireError::new(ErrorCode::Unavailable, "no"));
        assert!(spawned_after_call_off(&mut st, "n2", 8, &failed));
        assert!(st.called_off.is_empty());
        // Bounded: the oldest request goes.
        for req in 100..100 + MAX_CALLED_OFF as u64 + 1 {
            call_off_restore(&mut st, req, "n2", SessionId(req));
        }
        assert_eq!(st.called_off.len(), MAX_CALLED_OFF);
        assert!(!st.called_off.contains_key(&100));
        assert!(st.called_off.contains_key(&101));
        // A node gone takes its restores with it.
        node_gone(&mut st, "n2");
        assert!(st.called_off.is_empty());
    }
}
