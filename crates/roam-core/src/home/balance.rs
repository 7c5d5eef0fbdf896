//! The home's automatic balancer: a task that, while it is on, samples the
//! nodes' loads (their heartbeats) and their processes' CPU time (the
//! process lists `roam ps` asks for) every interval, asks the policy
//! ([`crate::balance`]) whether a process should move, and moves it the
//! way `roam migrate` does ([`super::migrate::start`], with no caller).
//! `roam balance on|off` turns it on and off (root); `roam balance` shows
//! what it sees and its last moves. See docs/design/migration.md, "The
//! balancer".

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use roam_proto::types::{
    BalanceMove, BalanceStatus, Cred, ErrorCode, MigrateMode, Mode, MoveOutcome, NodeState,
    SessionId, WireError,
};

use super::{migrate, Home};
use crate::balance::{Balancer, Move, NodeView, ProcRates, ProcSample, ProcView};
use crate::config::BalanceConfig;

/// Moves `roam balance` remembers.
const HISTORY: usize = 32;

/// The balancer's state, behind `Home::balance`.
pub(super) struct BalanceState {
    enabled: bool,
    /// The sampling period: the configured interval, at least the heartbeat.
    interval: Duration,
    policy: Balancer,
    rates: ProcRates,
    moves: VecDeque<Record>,
    next_seq: u64,
}

/// One move, for `roam balance`.
struct Record {
    seq: u64,
    session: SessionId,
    uid: u32,
    home_pid: u32,
    command: String,
    from: String,
    to: String,
    cpu_pct: f32,
    at: Instant,
    outcome: MoveOutcome,
}

impl BalanceState {
    pub(super) fn new(cfg: BalanceConfig, heartbeat: Duration) -> BalanceState {
        BalanceState {
            enabled: cfg.enabled,
            interval: Duration::from_millis(cfg.interval_ms).max(heartbeat),
            policy: Balancer::new(cfg),
            rates: ProcRates::default(),
            moves: VecDeque::new(),
            next_seq: 1,
        }
    }

    /// What `roam balance` shows to `cred` (another user's moves are left
    /// out, as `roam ps` leaves out their processes).
    pub(super) fn status(&self, cred: &Cred) -> BalanceStatus {
        let c = self.policy.config();
        BalanceStatus {
            enabled: self.enabled,
            interval_ms: self.interval.as_millis() as u64,
            high_pct: c.high_pct,
            low_pct: c.low_pct,
            sustain: c.sustain,
            cooldown_ms: c.cooldown_ms,
            min_gap_pct: c.min_gap_pct,
            nodes: if self.enabled {
                self.policy.status()
            } else {
                Vec::new()
            },
            moves: self
                .moves
                .iter()
                .filter(|r| cred.is_root() || r.uid == cred.uid)
                .map(|r| BalanceMove {
                    seq: r.seq,
                    home_pid: r.home_pid,
                    command: r.command.clone(),
                    from: r.from.clone(),
                    to: r.to.clone(),
                    cpu_pct: r.cpu_pct,
                    ago_ms: r.at.elapsed().as_millis() as u64,
                    outcome: r.outcome.clone(),
                })
                .collect(),
        }
    }
}

/// `roam balance on|off`: root only. Turning it on starts the counts
/// afresh.
pub(super) fn set(home: &Home, cred: &Cred, on: bool) -> Result<BalanceStatus, WireError> {
    if !cred.is_root() {
        return Err(WireError::new(
            ErrorCode::PermissionDenied,
            "only root may turn the balancer on or off",
        ));
    }
    let mut b = home.balance.lock().unwrap();
    if on && !b.enabled {
        let cfg = b.policy.config().clone();
        let in_flight = b.policy.in_flight();
        b.policy = Balancer::new(cfg);
        if let Some(s) = in_flight {
            // A move still under way when it was turned off: the new
            // policy waits for it too.
            b.policy.resume(s);
        }
    }
    if b.enabled != on {
        tracing::info!("balancer {}", if on { "on" } else { "off" });
    }
    b.enabled = on;
    Ok(b.status(cred))
}

fn root() -> Cred {
    Cred {
        uid: 0,
        gid: 0,
        groups: Vec::new(),
    }
}

/// The balancer's task: one sample each interval while it is on; the
/// outcome of its move under way is checked even when it is off.
pub(super) async fn run(home: Arc<Home>) {
    let period = home.balance.lock().unwrap().interval;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        check_in_flight(&home);
        if !home.balance.lock().unwrap().enabled {
            continue;
        }
        // The nodes' process lists, with each process's CPU time so far.
        let procs = super::ps(&home, &root()).await;
        let now = Instant::now();
        let mode: Mode = *home.mode.lock().unwrap();
        let (nodes, views) = {
            let st = home.state.lock().unwrap();
            let nodes: Vec<NodeView> = st
                .nodes
                .iter()
                .map(|(name, n)| NodeView {
                    name: name.clone(),
                    cpu_pct: n.load.cpu_pct,
                    cpus: n.load.cpus.max(1),
                    up: n.state == NodeState::Up && n.link.is_some(),
                    draining: n.draining,
                    arch: n.arch.native.clone(),
                    emulated: n.arch.emulated,
                    takes_more: mode == Mode::Balance
                        || !st.sessions.values().any(|s| &s.node == name),
                })
                .collect();
            let samples: Vec<ProcSample> = procs
                .iter()
                .map(|p| ProcSample {
                    session: p.session,
                    node: p.node.clone(),
                    node_pid: p.node_pid,
                    cpu_ms: p.cpu_ms,
                })
                .collect();
            let cpus = |n: &str| st.nodes.get(n).map_or(1, |e| e.load.cpus.max(1));
            let rates = home
                .balance
                .lock()
                .unwrap()
                .rates
                .update(now, &samples, cpus);
            let views: Vec<ProcView> = procs
                .iter()
                .map(|p| ProcView {
                    session: p.session,
                    home_pid: p.home_pid,
                    node: p.node.clone(),
                    cpu_pct: rates.get(&p.session).copied(),
                    movable: st.sessions.get(&p.session).is_some_and(|s| {
                        s.migrating.is_none() && s.spawning.is_none() && !s.exited
                    }),
                })
                .collect();
            (nodes, views)
        };
        let chosen = {
            let mut b = home.balance.lock().unwrap();
            if !b.enabled {
                continue;
            }
            b.policy.sample(now, &nodes, &views)
        };
        if let Some(m) = chosen {
            start_move(&home, &nodes, m);
        }
    }
}

/// Starts the policy's move, logs it, and records it.
fn start_move(home: &Home, nodes: &[NodeView], m: Move) {
    let cpu_of = |n: &str| {
        nodes
            .iter()
            .find(|v| v.name == n)
            .map_or(0.0, |v| v.cpu_pct)
    };
    let (uid, command) = {
        let st = home.state.lock().unwrap();
        st.sessions
            .get(&m.session)
            .map_or((0, String::new()), |s| (s.uid, s.command.clone()))
    };
    tracing::info!(
        "balancer: moving home pid {} ({command}, {:.0}% of {}) from {} (CPU {:.0}%) to {} (CPU {:.0}%)",
        m.home_pid,
        m.cpu_pct,
        m.from,
        m.from,
        cpu_of(&m.from),
        m.to,
        cpu_of(&m.to)
    );
    let outcome = match migrate::start(
        home,
        &root(),
        m.home_pid,
        Some(&m.to),
        None,
        MigrateMode::Auto,
    ) {
        Ok(_) => MoveOutcome::Moving,
        Err(e) => {
            tracing::warn!(
                "balancer: home pid {} stays on {}: {}",
                m.home_pid,
                m.from,
                e.message
            );
            MoveOutcome::Failed
        }
    };
    let mut b = home.balance.lock().unwrap();
    if outcome != MoveOutcome::Moving {
        b.policy.done(Instant::now(), m.session, &m.from, &m.to);
    }
    let seq = b.next_seq;
    b.next_seq += 1;
    if b.moves.len() == HISTORY {
        b.moves.pop_front();
    }
    b.moves.push_back(Record {
        seq,
        session: m.session,
        uid,
        home_pid: m.home_pid,
        command,
        from: m.from,
        to: m.to,
        cpu_pct: m.cpu_pct,
        at: Instant::now(),
        outcome,
    });
}

/// Whether the balancer's move under way is over, and how it went.
fn check_in_flight(home: &Home) {
    let Some(session) = home.balance.lock().unwrap().policy.in_flight() else {
        return;
    };
    let (outcome, node) = {
        let st = home.state.lock().unwrap();
        match st.sessions.get(&session) {
            None => (MoveOutcome::Gone, None),
            Some(s) if s.migrating.is_some() => return,
            Some(s) => (MoveOutcome::Moved, Some(s.node.clone())),
        }
    };
    let mut b = home.balance.lock().unwrap();
    let Some(r) = b
        .moves
        .iter_mut()
        .rev()
        .find(|r| r.session == session && r.outcome == MoveOutcome::Moving)
    else {
        b.policy.done(Instant::now(), session, "", "");
        return;
    };
    r.outcome = match (outcome, node) {
        (MoveOutcome::Moved, Some(n)) if n == r.to => MoveOutcome::Moved,
        (MoveOutcome::Moved, _) => MoveOutcome::Failed,
        (o, _) => o,
    };
    match r.outcome {
        MoveOutcome::Moved => {
            tracing::info!("balancer: home pid {} runs on {} now", r.home_pid, r.to)
        }
        MoveOutcome::Failed => tracing::warn!(
            "balancer: moving home pid {} to {} failed; it stays on {}",
            r.home_pid,
            r.to,
            r.from
        ),
        _ => tracing::info!(
            "balancer: home pid {} ended while it moved from {} to {}",
            r.home_pid,
            r.from,
            r.to
        ),
    }
    let (from, to) = (r.from.clone(), r.to.clone());
    b.policy.done(Instant::now(), session, &from, &to);
}
