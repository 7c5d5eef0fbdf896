//! Placement: which node gets a new remote process.
//!
//! Two modes, as in the first paper:
//! - *parallel*: at most one remote process per node (MPI-style jobs);
//! - *balance*: several per node, choosing the node with the lowest CPU use,
//!   then the lowest memory use, then the fewest remote processes, then the
//!   lowest node number.
//!
//! Loads come from heartbeats and so lag behind. Two remedies: a process
//! placed since a node's last heartbeat counts as one busy CPU of that node
//! ([`estimated_cpu`]), so a burst of starts spreads out instead of piling
//! onto the node that looked idlest; and two loads in the same band
//! ([`CPU_BAND`] points of CPU, [`MEM_BAND`] points of memory) count as
//! equal so that measurement noise does not decide, and the process count
//! (which the home updates at once) breaks the tie.

use roam_proto::types::{Mode, NodeLoad};
use thiserror::Error;

/// CPU percentages within one band of this many points are equal.
pub const CPU_BAND: f32 = 10.0;
/// Memory percentages within one band of this many points are equal.
pub const MEM_BAND: f32 = 5.0;

/// A node as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub name: String,
    pub number: u32,
    pub up: bool,
    pub load: NodeLoad,
    /// Remote processes on the node, including ones being started.
    pub procs: u32,
    /// The architectures it runs, its own first.
    pub archs: Vec<String>,
}

impl Candidate {
    fn runs(&self, arch: Option<&str>) -> bool {
        arch.is_none_or(|a| self.archs.iter().any(|x| x == a))
    }

    fn describe(&self) -> String {
        format!("{} ({})", self.name, self.archs.join(", "))
    }
}

#[derive(Debug, Error, PartialEq)]
pub enum PlaceError {
    #[error("no node is up")]
    NoNodes,
    #[error("no node named '{name}' (nodes: {known})")]
    UnknownNode { name: String, known: String },
    #[error("node '{name}' is {state}")]
    NodeNotUp { name: String, state: String },
    #[error("all {up} nodes that are up are busy: parallel mode runs at most one remote process per node")]
    Full { up: usize },
    #[error("no node runs {arch} programs (nodes: {nodes})")]
    NoArch { arch: String, nodes: String },
    #[error("node '{name}' does not run {arch} programs (it runs {runs})")]
    WrongArch {
        name: String,
        arch: String,
        runs: String,
    },
    #[error("{wanted} nodes wanted but only {free} are free (parallel mode: one process per node; {up} up)")]
    NotEnough {
        wanted: usize,
        free: usize,
        up: usize,
    },
}

/// A node's CPU use as placement sees it: the last heartbeat's, plus one
/// busy CPU for each process placed on it since.
pub fn estimated_cpu(load: &NodeLoad, placed_since_heartbeat: u32) -> f32 {
    let per_proc = 100.0 / load.cpus.max(1) as f32;
    (load.cpu_pct + per_proc * placed_since_heartbeat as f32).min(100.0)
}

fn key(c: &Candidate) -> (i64, i64, u32, u32) {
    (
        (c.load.cpu_pct / CPU_BAND).floor() as i64,
        (c.load.mem_pct / MEM_BAND).floor() as i64,
        c.procs,
        c.number,
    )
}

/// The candidates that run programs of `arch` (all of them for `None`); an
/// error naming the architecture and every node if none does.
pub fn for_arch(cands: &[Candidate], arch: Option<&str>) -> Result<Vec<Candidate>, PlaceError> {
    let fit: Vec<Candidate> = cands.iter().filter(|c| c.runs(arch)).cloned().collect();
    match arch {
        Some(a) if fit.is_empty() => Err(PlaceError::NoArch {
            arch: a.to_owned(),
            nodes: if cands.is_empty() {
                "none".into()
            } else {
                // By name: the same message whatever order nodes joined in.
                let mut all: Vec<&Candidate> = cands.iter().collect();
                all.sort_by(|a, b| a.name.cmp(&b.name));
                all.iter()
                    .map(|c| c.describe())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        }),
        _ => Ok(fit),
    }
}

/// Chooses a node for one process.
pub fn choose(cands: &[Candidate], mode: Mode) -> Result<&Candidate, PlaceError> {
    let up: Vec<&Candidate> = cands.iter().filter(|c| c.up).collect();
    if up.is_empty() {
        return Err(PlaceError::NoNodes);
    }
    let eligible = up
        .iter()
        .copied()
        .filter(|c| mode == Mode::Balance || c.procs == 0);
    eligible
        .min_by_key(|c| key(c))
        .ok_or(PlaceError::Full { up: up.len() })
}

/// Chooses `count` distinct free nodes at once (a `-N` job).
pub fn choose_many(cands: &[Candidate], count: usize) -> Result<Vec<&Candidate>, PlaceError> {
    let up = cands.iter().filter(|c| c.up).count();
    if up == 0 {
        return Err(PlaceError::NoNodes);
    }
    let mut free: Vec<&Candidate> = cands.iter().filter(|c| c.up && c.procs == 0).collect();
    if free.len() < count {
        return Err(PlaceError::NotEnough {
            wanted: count,
            free: free.len(),
            up,
        });
    }
    free.sort_by_key(|c| key(c));
    free.truncate(count);
    Ok(free)
}

/// Checks a node the user named, for a program of `arch`.
pub fn check_named<'a>(
    cands: &'a [Candidate],
    name: &str,
    mode: Mode,
    arch: Option<&str>,
    state_of: impl Fn(&str) -> String,
) -> Result<&'a Candidate, PlaceError> {
    let Some(c) = cands.iter().find(|c| c.name == name) else {
        let known: Vec<&str> = cands.iter().map(|c| c.name.as_str()).collect();
        return Err(PlaceError::UnknownNode {
            name: name.to_owned(),
            known: if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            },
        });
    };
    if !c.up {
        return Err(PlaceError::NodeNotUp {
            name: name.to_owned(),
            state: state_of(name),
        });
    }
    if let Some(a) = arch.filter(|_| !c.runs(arch)) {
        return Err(PlaceError::WrongArch {
            name: name.to_owned(),
            arch: a.to_owned(),
            runs: c.archs.join(", "),
        });
    }
    if mode == Mode::Parallel && c.procs > 0 {
        return Err(PlaceError::Full { up: 1 });
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, number: u32, cpu: f32, mem: f32, procs: u32) -> Candidate {
        Candidate {
            name: name.into(),
            number,
            up: true,
            load: NodeLoad {
                cpu_pct: cpu,
                mem_pct: mem,
                procs,
                cpus: 4,
            },
            procs,
            archs: vec!["x86_64".into()],
        }
    }

    #[test]
    fn only_nodes_that_run_the_architecture() {
        let mut a = c("a", 1, 0.0, 0.0, 0);
        let mut b = c("b", 2, 50.0, 0.0, 0);
        b.archs = vec!["x86_64".into(), "aarch64".into()];
        a.archs = vec!["s390x".into()];
        let cands = vec![a, b];
        let fit = for_arch(&cands, Some("aarch64")).unwrap();
        assert_eq!(fit.len(), 1);
        assert_eq!(choose(&fit, Mode::Balance).unwrap().name, "b");
        assert_eq!(for_arch(&cands, None).unwrap().len(), 2);
        let e = for_arch(&cands, Some("riscv64")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no node runs riscv64 programs (nodes: a (s390x), b (x86_64, aarch64))"
        );
        let e =
            check_named(&cands, "a", Mode::Balance, Some("aarch64"), |_| "up".into()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "node 'a' does not run aarch64 programs (it runs s390x)"
        );
        assert!(check_named(&cands, "a", Mode::Balance, Some("s390x"), |_| "up".into()).is_ok());
    }

    #[test]
    fn balance_orders_by_cpu_mem_procs_number() {
        let nodes = vec![
            c("a", 1, 55.0, 10.0, 0),
            c("b", 2, 12.0, 30.0, 3),
            c("c", 3, 14.0, 20.0, 5),
        ];
        // b and c share the 10-20% CPU band; c has lower memory.
        assert_eq!(choose(&nodes, Mode::Balance).unwrap().name, "c");
        let nodes = vec![c("a", 1, 1.0, 10.0, 2), c("b", 2, 3.0, 11.0, 1)];
        // Same bands: fewer processes wins.
        assert_eq!(choose(&nodes, Mode::Balance).unwrap().name, "b");
        let nodes = vec![c("b", 2, 1.0, 10.0, 1), c("a", 1, 3.0, 11.0, 1)];
        // All equal: lowest number.
        assert_eq!(choose(&nodes, Mode::Balance).unwrap().name, "a");
    }

    #[test]
    fn parallel_one_per_node() {
        let mut nodes = vec![c("a", 1, 0.0, 0.0, 1), c("b", 2, 90.0, 0.0, 0)];
        assert_eq!(choose(&nodes, Mode::Parallel).unwrap().name, "b");
        nodes[1].procs = 1;
        assert_eq!(
            choose(&nodes, Mode::Parallel).unwrap_err(),
            PlaceError::Full { up: 2 }
        );
        assert!(choose(&nodes, Mode::Balance).is_ok());
    }

    #[test]
    fn down_nodes_never_chosen() {
        let mut nodes = vec![c("a", 1, 0.0, 0.0, 0)];
        nodes[0].up = false;
        assert_eq!(
            choose(&nodes, Mode::Balance).unwrap_err(),
            PlaceError::NoNodes
        );
    }

    #[test]
    fn many_distinct() {
        let nodes = vec![
            c("a", 1, 0.0, 0.0, 1),
            c("b", 2, 0.0, 0.0, 0),
            c("c", 3, 0.0, 0.0, 0),
        ];
        let got: Vec<_> = choose_many(&nodes, 2)
            .unwrap()
            .iter()
            .map(|c| c.name.clone())
            .collect();
        assert_eq!(got, ["b", "c"]);
        assert!(matches!(
            choose_many(&nodes, 3),
            Err(PlaceError::NotEnough {
                wanted: 3,
                free: 2,
                up: 3
            })
        ));
    }

    #[test]
    fn recent_placements_count_as_load() {
        let l = NodeLoad {
            cpu_pct: 5.0,
            mem_pct: 0.0,
            procs: 0,
            cpus: 4,
        };
        assert_eq!(estimated_cpu(&l, 0), 5.0);
        assert_eq!(estimated_cpu(&l, 2), 55.0);
        assert_eq!(estimated_cpu(&l, 9), 100.0);
        let zero_cpus = NodeLoad { cpus: 0, ..l };
        assert_eq!(estimated_cpu(&zero_cpus, 1), 100.0);
    }

    #[test]
    fn named_node_checks() {
        let nodes = vec![c("a", 1, 0.0, 0.0, 1)];
        let e = check_named(&nodes, "zz", Mode::Balance, None, |_| "down".into()).unwrap_err();
        assert!(e.to_string().contains("no node named 'zz' (nodes: a)"));
        assert!(check_named(&nodes, "a", Mode::Parallel, None, |_| "up".into()).is_err());
        assert!(check_named(&nodes, "a", Mode::Balance, None, |_| "up".into()).is_ok());
    }
}
