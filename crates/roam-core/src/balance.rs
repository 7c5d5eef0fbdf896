//! The balancer's policy: which process, if any, to move from a loaded node
//! to an idle one, given samples of the nodes' CPU use and of each
//! process's. The home's task (`home::balance`) samples, asks, and moves
//! the process the way `roam migrate` does; this module decides, without
//! I/O, so that every rule is unit-tested.
//!
//! The rules (docs/design/migration.md, "The balancer"):
//! - **Hysteresis.** A node is a source once its CPU use was above
//!   `high_pct` for `sustain` samples in a row, a destination once it was
//!   below `low_pct` for as many; between the two it is neither. The
//!   counts of both nodes start again after each move.
//! - **One move at a time**, and none while one is under way.
//! - **Cool-down.** A process the balancer moved (or tried to) is left
//!   alone for `cooldown_ms`.
//! - **A real gain, hence no ping-pong.** The destination with the process
//!   must stay `min_gap_pct` below the source's use before the move: with
//!   `S` and `D` the two nodes' loads and `p` the process's (in the
//!   destination's CPUs), `D + p + min_gap_pct <= S`. So `D + p < S`, and
//!   the sum of the squares of the loads falls with every move: moves
//!   cannot go round in circles while the loads stay as they are, and a
//!   process is never moved straight back. The gap is also the margin for
//!   measurement: a process alone on its node (`S` about `p` plus the
//!   daemon's own bit) never qualifies, however idle the other node.
//! - **Which process.** On the most loaded source, the movable process
//!   with the most CPU use that fits a destination (`p` at least
//!   [`MIN_PROC_PCT`]); movable: not migrating already,
//!   not cooling down. Destinations: up, not draining, the source's own
//!   architecture and not emulated (a process's memory is its machine's
//!   code), the least loaded first; in parallel mode only nodes with no
//!   remote process.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use roam_proto::types::{BalanceNode, SessionId};

use crate::config::BalanceConfig;

/// A process using less of its node's CPUs than this (percent) is not
/// worth a move.
pub const MIN_PROC_PCT: f32 = 5.0;

/// A node, at one sample.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub name: String,
    /// CPU use, percent of its `cpus` (its last heartbeat's).
    pub cpu_pct: f32,
    pub cpus: u32,
    /// Up and linked (a destination also must not be draining).
    pub up: bool,
    pub draining: bool,
    /// Its native architecture, and whether it stands for another one.
    pub arch: String,
    pub emulated: bool,
    /// Whether it may take one more remote process (parallel mode: none
    /// yet).
    pub takes_more: bool,
}

/// A remote process, at one sample.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcView {
    pub session: SessionId,
    pub home_pid: u32,
    pub node: String,
    /// Its CPU use since the last sample, percent of its node's CPUs
    /// (None: not sampled twice yet).
    pub cpu_pct: Option<f32>,
    /// Not migrating, running.
    pub movable: bool,
}

/// A move the balancer chose.
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    pub session: SessionId,
    pub home_pid: u32,
    pub from: String,
    pub to: String,
    /// The process's CPU use on `from`.
    pub cpu_pct: f32,
}

/// The balancer's memory between samples.
#[derive(Debug)]
pub struct Balancer {
    cfg: BalanceConfig,
    /// Per node: samples in a row above `high_pct`, below `low_pct`, and
    /// the last sample.
    nodes: HashMap<String, Counts>,
    /// When each process was last moved (or tried).
    moved: HashMap<SessionId, Instant>,
    in_flight: Option<SessionId>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    above: u32,
    below: u32,
    cpu_pct: f32,
}

impl Balancer {
    pub fn new(cfg: BalanceConfig) -> Balancer {
        Balancer {
            cfg,
            nodes: HashMap::new(),
            moved: HashMap::new(),
            in_flight: None,
        }
    }

    pub fn config(&self) -> &BalanceConfig {
        &self.cfg
    }

    /// The process of the move under way, if any.
    pub fn in_flight(&self) -> Option<SessionId> {
        self.in_flight
    }

    /// Waits for a move of `session` under way (one an earlier policy
    /// started) before it chooses another.
    pub fn resume(&mut self, session: SessionId) {
        self.in_flight = Some(session);
    }

    /// Takes one sample: counts each node's loaded and idle samples, then
    /// chooses a move, if one is due (and records it: the caller starts
    /// it, then calls [`Balancer::done`]).
    pub fn sample(&mut self, now: Instant, nodes: &[NodeView], procs: &[ProcView]) -> Option<Move> {
        self.count(nodes);
        let cooldown = Duration::from_millis(self.cfg.cooldown_ms);
        self.moved.retain(|_, t| now.duration_since(*t) < cooldown);
        if self.in_flight.is_some() {
            return None;
        }
        let m = self.choose(nodes, procs)?;
        self.in_flight = Some(m.session);
        self.moved.insert(m.session, now);
        self.restart(&m.from);
        self.restart(&m.to);
        Some(m)
    }

    /// The move of `session` is over (however it went): the next may come,
    /// once both nodes' loads have been sampled `sustain` times again.
    pub fn done(&mut self, now: Instant, session: SessionId, from: &str, to: &str) {
        if self.in_flight == Some(session) {
            self.in_flight = None;
        }
        self.moved.insert(session, now);
        self.restart(from);
        self.restart(to);
    }

    /// Each node's counts, for `roam balance`, by name.
    pub fn status(&self) -> Vec<BalanceNode> {
        let mut v: Vec<BalanceNode> = self
            .nodes
            .iter()
            .map(|(name, c)| BalanceNode {
                name: name.clone(),
                cpu_pct: c.cpu_pct,
                above: c.above,
                below: c.below,
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn restart(&mut self, node: &str) {
        if let Some(c) = self.nodes.get_mut(node) {
            c.above = 0;
            c.below = 0;
        }
    }

    fn count(&mut self, nodes: &[NodeView]) {
        self.nodes
            .retain(|name, _| nodes.iter().any(|n| &n.name == name && n.up));
        let (high, low) = (self.cfg.high_pct as f32, self.cfg.low_pct as f32);
        for n in nodes.iter().filter(|n| n.up) {
            let c = self.nodes.entry(n.name.clone()).or_default();
            c.cpu_pct = n.cpu_pct;
            c.above = if n.cpu_pct > high { c.above + 1 } else { 0 };
            c.below = if n.cpu_pct < low { c.below + 1 } else { 0 };
        }
    }

    fn choose(&self, nodes: &[NodeView], procs: &[ProcView]) -> Option<Move> {
        let sustain = self.cfg.sustain;
        let counts = |n: &NodeView| self.nodes.get(&n.name).copied().unwrap_or_default();
        let by_cpu = |a: &&NodeView, b: &&NodeView| a.cpu_pct.total_cmp(&b.cpu_pct);
        let mut sources: Vec<&NodeView> = nodes
            .iter()
            .filter(|n| n.up && !n.draining && !n.emulated && counts(n).above >= sustain)
            .collect();
        sources.sort_by(|a, b| by_cpu(b, a).then_with(|| a.name.cmp(&b.name)));
        let mut dests: Vec<&NodeView> = nodes
            .iter()
            .filter(|n| {
                n.up && !n.draining && !n.emulated && n.takes_more && counts(n).below >= sustain
            })
            .collect();
        dests.sort_by(|a, b| by_cpu(a, b).then_with(|| a.name.cmp(&b.name)));
        for src in sources {
            let mut mine: Vec<(&ProcView, f32)> = procs
                .iter()
                .filter(|p| p.node == src.name && p.movable && !self.moved.contains_key(&p.session))
                .filter_map(|p| Some((p, p.cpu_pct?)))
                .filter(|(_, cpu)| *cpu >= MIN_PROC_PCT)
                .collect();
            mine.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.home_pid.cmp(&b.0.home_pid)));
            for (p, cpu) in mine {
                let fits = |d: &&&NodeView| {
                    let there = cpu * src.cpus.max(1) as f32 / d.cpus.max(1) as f32;
                    d.name != src.name
                        && d.arch == src.arch
                        && d.cpu_pct + there + self.cfg.min_gap_pct as f32 <= src.cpu_pct
                };
                if let Some(d) = dests.iter().find(fits) {
                    return Some(Move {
                        session: p.session,
                        home_pid: p.home_pid,
                        from: src.name.clone(),
                        to: d.name.clone(),
                        cpu_pct: cpu,
                    });
                }
            }
        }
        None
    }
}

/// Each process's CPU use between two samples of the nodes' process lists.
#[derive(Debug, Default)]
pub struct ProcRates {
    /// session → (node, node pid, CPU ms so far, when).
    last: HashMap<SessionId, (String, u32, u64, Instant)>,
}

/// One process in a process list.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcSample {
    pub session: SessionId,
    pub node: String,
    pub node_pid: u32,
    /// User + system time so far.
    pub cpu_ms: u64,
}

impl ProcRates {
    /// Records a sample taken at `now`; returns each process's CPU use
    /// since its previous one, in percent of its node's CPUs (`cpus`), for
    /// the processes seen twice on the same node as the same pid (a moved
    /// process starts again: its time on the old node is not its new
    /// node's). Processes not in the list are forgotten.
    pub fn update(
        &mut self,
        now: Instant,
        procs: &[ProcSample],
        cpus: impl Fn(&str) -> u32,
    ) -> HashMap<SessionId, f32> {
        let mut rates = HashMap::new();
        let mut next = HashMap::new();
        for p in procs {
            if let Some((node, pid, ms, at)) = self.last.get(&p.session) {
                let wall = now.duration_since(*at).as_millis() as u64;
                if *node == p.node && *pid == p.node_pid && wall > 0 {
                    let spent = p.cpu_ms.saturating_sub(*ms) as f64;
                    let pct = spent * 100.0 / (wall as f64 * cpus(&p.node).max(1) as f64);
                    rates.insert(p.session, pct as f32);
                }
            }
            next.insert(p.session, (p.node.clone(), p.node_pid, p.cpu_ms, now));
        }
        self.last = next;
        rates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BalanceConfig {
        BalanceConfig {
            enabled: true,
            interval_ms: 1000,
            high_pct: 80,
            low_pct: 40,
            sustain: 3,
            cooldown_ms: 60_000,
            min_gap_pct: 30,
        }
    }

    fn node(name: &str, cpu: f32) -> NodeView {
        NodeView {
            name: name.into(),
            cpu_pct: cpu,
            cpus: 1,
            up: true,
            draining: false,
            arch: "x86_64".into(),
            emulated: false,
            takes_more: true,
        }
    }

    fn proc_(id: u64, node: &str, cpu: f32) -> ProcView {
        ProcView {
            session: SessionId(id),
            home_pid: 1000 + id as u32,
            node: node.into(),
            cpu_pct: Some(cpu),
            movable: true,
        }
    }

    /// Samples `k` times a second apart from `t`; returns the moves.
    fn run(
        b: &mut Balancer,
        t: &mut Instant,
        k: u32,
        nodes: &[NodeView],
        procs: &[ProcView],
    ) -> Vec<Move> {
        let mut v = Vec::new();
        for _ in 0..k {
            *t += Duration::from_secs(1);
            v.extend(b.sample(*t, nodes, procs));
        }
        v
    }

    #[test]
    fn moves_the_busiest_process_only_after_sustained_imbalance() {
        let mut b = Balancer::new(cfg());
        let mut t = Instant::now();
        let nodes = [node("n1", 190.0), node("n2", 3.0)];
        let procs = [
            proc_(1, "n1", 20.0),
            proc_(2, "n1", 90.0),
            proc_(3, "n1", 80.0),
        ];
        // Two samples are not enough.
        assert!(run(&mut b, &mut t, 2, &nodes, &procs).is_empty());
        let st = b.status();
        assert_eq!(
            (st[0].name.as_str(), st[0].above, st[0].below),
            ("n1", 2, 0)
        );
        assert_eq!((st[1].above, st[1].below), (0, 2));
        // The third is: the busiest process goes.
        let m = run(&mut b, &mut t, 1, &nodes, &procs);
        assert_eq!(
            m,
            [Move {
                session: SessionId(2),
                home_pid: 1002,
                from: "n1".into(),
                to: "n2".into(),
                cpu_pct: 90.0,
            }]
        );
        assert_eq!(b.in_flight(), Some(SessionId(2)));
    }

    #[test]
    fn a_blip_restarts_the_count() {
        let mut b = Balancer::new(cfg());
        let mut t = Instant::now();
        let loaded = [node("n1", 150.0), node("n2", 0.0)];
        let procs = [proc_(1, "n1", 75.0)];
        assert!(run(&mut b, &mut t, 2, &loaded, &procs).is_empty());
        // n1 dips to 70 % (between the thresholds) once...
        let dip = [node("n1", 70.0), node("n2", 0.0)];
        assert!(run(&mut b, &mut t, 1, &dip, &procs).is_empty());
        // ...so it needs three loaded samples again.
        assert!(run(&mut b, &mut t, 2, &loaded, &procs).is_empty());
        assert_eq!(run(&mut b, &mut t, 1, &loaded, &procs).len(), 1);
        // The same for the destination: a busy blip there.
        let mut b = Balancer::new(cfg());
        assert!(run(&mut b, &mut t, 2, &loaded, &procs).is_empty());
        let busy = [node("n1", 150.0), node("n2", 50.0)];
        assert!(run(&mut b, &mut t, 1, &busy, &procs).is_empty());
        assert!(run(&mut b, &mut t, 2, &loaded, &procs).is_empty());
        assert_eq!(run(&mut b, &mut t, 1, &loaded, &procs).len(), 1);
    }

    #[test]
    fn thresholds_and_gap_must_all_hold() {
        let procs = [proc_(1, "n1", 40.0)];
        for (n1, n2) in [
            (80.0, 0.0),   // not above high (strictly)
            (100.0, 40.0), // not below low (strictly)
            (85.0, 39.0),  // 39 + 40 + 50 > 85
        ] {
            let mut cfg = cfg();
            if n1 == 85.0 {
                cfg.min_gap_pct = 50;
            }
            let mut b = Balancer::new(cfg);
            let mut t = Instant::now();
            let nodes = [node("n1", n1), node("n2", n2)];
            assert!(
                run(&mut b, &mut t, 10, &nodes, &procs).is_empty(),
                "{n1} {n2}"
            );
        }
    }

    #[test]
    fn one_move_at_a_time_then_counts_start_again() {
        let mut b = Balancer::new(cfg());
        let mut t = Instant::now();
        let nodes = [node("n1", 300.0), node("n2", 0.0), node("n3", 0.0)];
        let procs = [
            proc_(1, "n1", 100.0),
            proc_(2, "n1", 100.0),
            proc_(3, "n1", 100.0),
        ];
        let m = run(&mut b, &mut t, 3, &nodes, &procs);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].session, SessionId(1), "ties: the lowest home pid");
        assert_eq!(m[0].to, "n2", "ties: by name");
        // n3 is idle and n1 still loaded, but a move is under way.
        assert!(run(&mut b, &mut t, 5, &nodes, &procs).is_empty());
        b.done(t, m[0].session, "n1", "n2");
        // The counts of n1 start again: three samples before the next.
        let after = [node("n1", 200.0), node("n2", 100.0), node("n3", 0.0)];
        let procs = [
            proc_(1, "n2", 100.0),
            proc_(2, "n1", 100.0),
            proc_(3, "n1", 100.0),
        ];
        assert!(run(&mut b, &mut t, 2, &after, &procs).is_empty());
        let m = run(&mut b, &mut t, 1, &after, &procs);
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].session, m[0].to.as_str()), (SessionId(2), "n3"));
    }

    #[test]
    fn no_ping_pong() {
        // One busy process alone on n1: moving it only moves the load.
        let mut b = Balancer::new(cfg());
        let mut t = Instant::now();
        let nodes = [node("n1", 95.0), node("n2", 0.0)];
        assert!(run(&mut b, &mut t, 10, &nodes, &[proc_(1, "n1", 95.0)]).is_empty());
        // Even when its own use is measured lower than its node's (other
        // windows, the daemon's own time): within the gap.
        let nodes = [node("n1", 100.0), node("n2", 3.0)];
        assert!(run(&mut b, &mut t, 10, &nodes, &[proc_(1, "n1", 85.0)]).is_empty());

        // A hog (not roam's) and a roam process on n1: the roam process
        // moves; afterwards n1 (the hog) and n2 are both busy, and nothing
        // moves back however long it lasts, cool-down over or not.
        let mut c = cfg();
        c.cooldown_ms = 2000;
        let mut b = Balancer::new(c);
        let before = [node("n1", 200.0), node("n2", 0.0)];
        let m = run(&mut b, &mut t, 3, &before, &[proc_(1, "n1", 100.0)]);
        assert_eq!(m.len(), 1);
        b.done(t, SessionId(1), "n1", "n2");
        let after = [node("n1", 100.0), node("n2", 100.0)];
        assert!(run(&mut b, &mut t, 30, &after, &[proc_(1, "n2", 100.0)]).is_empty());
        // Even if the hog stops and n1 is idle, n2 with one process alone
        // gives nothing to gain.
        let idle = [node("n1", 0.0), node("n2", 100.0)];
        assert!(run(&mut b, &mut t, 30, &idle, &[proc_(1, "n2", 100.0)]).is_empty());
        // Two processes on n2, n1 idle: one goes back, and that is a gain.
        let two = [node("n1", 0.0), node("n2", 200.0)];
        let procs = [proc_(1, "n2", 100.0), proc_(2, "n2", 100.0)];
        let m = run(&mut b, &mut t, 3, &two, &procs);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].to, "n1");
    }

    #[test]
    fn a_moved_process_cools_down() {
        let mut b = Balancer::new(cfg());
        let mut t = Instant::now();
        let nodes = [node("n1", 250.0), node("n2", 0.0)];
        let procs = [proc_(1, "n1", 100.0), proc_(2, "n1", 60.0)];
        let m = run(&mut b, &mut t, 3, &nodes, &procs);
        assert_eq!(m[0].session, SessionId(1));
        // It failed: the process is still on n1, the loads unchanged. The
        // next move takes the other process, not the one that just failed.
        b.done(t, SessionId(1), "n1", "n2");
        let m = run(&mut b, &mut t, 3, &nodes, &procs);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].session, SessionId(2));
        b.done(t, SessionId(2), "n1", "n2");
        // Both cooling down: nothing for 60 s...
        assert!(run(&mut b, &mut t, 55, &nodes, &procs).is_empty());
        // ...then the first may go again.
        let m = run(&mut b, &mut t, 10, &nodes, &procs);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].session, SessionId(1));
    }

    #[test]
    fn only_movable_processes_to_fitting_nodes() {
        let mut t = Instant::now();
        let mut moving = proc_(1, "n1", 100.0);
        moving.movable = false;
        let unknown = ProcView {
            cpu_pct: None,
            ..proc_(2, "n1", 0.0)
        };
        let idle = proc_(3, "n1", 2.0);
        let nodes = [node("n1", 200.0), node("n2", 0.0)];
        let mut b = Balancer::new(cfg());
        assert!(run(&mut b, &mut t, 10, &nodes, &[moving, unknown, idle]).is_empty());

        let procs = [proc_(4, "n1", 100.0)];
        let other_arch = NodeView {
            arch: "aarch64".into(),
            ..node("n2", 0.0)
        };
        let emulated = NodeView {
            emulated: true,
            ..node("n3", 0.0)
        };
        let draining = NodeView {
            draining: true,
            ..node("n4", 0.0)
        };
        let full = NodeView {
            takes_more: false,
            ..node("n5", 0.0)
        };
        let down = NodeView {
            up: false,
            ..node("n6", 0.0)
        };
        let nodes = [
            node("n1", 200.0),
            other_arch,
            emulated,
            draining,
            full,
            down,
        ];
        let mut b = Balancer::new(cfg());
        assert!(run(&mut b, &mut t, 10, &nodes, &procs).is_empty());
        // A draining or emulated source gives nothing either.
        for src in [
            NodeView {
                draining: true,
                ..node("n1", 200.0)
            },
            NodeView {
                emulated: true,
                ..node("n1", 200.0)
            },
        ] {
            let mut b = Balancer::new(cfg());
            let nodes = [src, node("n2", 0.0)];
            assert!(run(&mut b, &mut t, 10, &nodes, &procs).is_empty());
        }
        // A process too big for the best destination is passed over for a
        // smaller one that fits.
        let mut b = Balancer::new(cfg());
        let nodes = [node("n1", 150.0), node("n2", 30.0)];
        let procs = [proc_(5, "n1", 130.0), proc_(6, "n1", 20.0)];
        let m = run(&mut b, &mut t, 3, &nodes, &procs);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].session, SessionId(6));
    }

    #[test]
    fn capacities_scale_a_process_to_its_destination() {
        // 60 % of a one-CPU node is 15 % of a four-CPU one.
        let mut t = Instant::now();
        let big = NodeView {
            cpus: 4,
            ..node("n2", 30.0)
        };
        let nodes = [node("n1", 100.0), big];
        let mut b = Balancer::new(cfg());
        let m = run(&mut b, &mut t, 3, &nodes, &[proc_(1, "n1", 60.0)]);
        assert_eq!(m.len(), 1);
        // The other way round it would not help: 60 % of four CPUs is 240 %
        // of one.
        let small = node("n2", 30.0);
        let big_src = NodeView {
            cpus: 4,
            ..node("n1", 100.0)
        };
        let mut b = Balancer::new(cfg());
        let m = run(
            &mut b,
            &mut t,
            10,
            &[big_src, small],
            &[proc_(1, "n1", 60.0)],
        );
        assert!(m.is_empty());
    }

    #[test]
    fn a_node_that_goes_loses_its_counts() {
        let mut b = Balancer::new(cfg());
        let mut t = Instant::now();
        let procs = [proc_(1, "n1", 100.0)];
        let both = [node("n1", 200.0), node("n2", 0.0)];
        assert!(run(&mut b, &mut t, 2, &both, &procs).is_empty());
        let gone = [
            node("n1", 200.0),
            NodeView {
                up: false,
                ..node("n2", 0.0)
            },
        ];
        assert!(run(&mut b, &mut t, 1, &gone, &procs).is_empty());
        assert_eq!(b.status().len(), 1);
        assert!(run(&mut b, &mut t, 2, &both, &procs).is_empty());
        assert_eq!(run(&mut b, &mut t, 1, &both, &procs).len(), 1);
    }

    #[test]
    fn process_rates_from_cpu_time() {
        let mut r = ProcRates::default();
        let t = Instant::now();
        let s = |id: u64, node: &str, pid: u32, ms: u64| ProcSample {
            session: SessionId(id),
            node: node.into(),
            node_pid: pid,
            cpu_ms: ms,
        };
        let cpus = |n: &str| if n == "big" { 4 } else { 1 };
        assert!(r
            .update(t, &[s(1, "n1", 10, 500), s(2, "big", 20, 0)], cpus)
            .is_empty());
        let t2 = t + Duration::from_secs(2);
        let rates = r.update(
            t2,
            &[
                s(1, "n1", 10, 1500),
                s(2, "big", 20, 4000),
                s(3, "n1", 30, 9),
            ],
            cpus,
        );
        assert_eq!(rates[&SessionId(1)], 50.0);
        assert_eq!(rates[&SessionId(2)], 50.0);
        assert!(!rates.contains_key(&SessionId(3)), "seen once");
        // Moved: a new node and pid, its time starts again.
        let t3 = t2 + Duration::from_secs(1);
        let rates = r.update(t3, &[s(1, "n2", 77, 100), s(3, "n1", 30, 509)], cpus);
        assert!(!rates.contains_key(&SessionId(1)));
        assert_eq!(rates[&SessionId(3)], 50.0);
        assert!(!r.last.contains_key(&SessionId(2)), "gone, forgotten");
    }
}
