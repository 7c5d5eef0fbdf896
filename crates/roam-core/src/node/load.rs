//! The load a node reports in its heartbeats: its CPU use over the last
//! interval, from the source its config names (`[node] cpu_source`), and
//! the CPUs it stands for (`[node] cpus`).
//!
//! - `host`: the machine's, from /proc/stat (0..=100 of all its cores).
//! - `netns`: the CPU time the processes of the daemon's network namespace
//!   spent (the daemon, its remote processes, anything else started in the
//!   namespace), as a percentage of `cpus`. Nodes that share a machine (the
//!   testbed, containers) all see the same /proc/stat; their namespaces
//!   tell them apart. Each process's time is counted since the last sample
//!   (by pid and start time, so a pid reused in between counts afresh); a
//!   process that exits between two samples takes its last interval with
//!   it, which a heartbeat or two absorbs.

use std::collections::HashMap;
use std::time::Instant;

use roam_sys::procfs::{self, CpuSample, ProcCpu};

use crate::config::{CpuSource, NodeConfig};

/// CPU use between heartbeats, from one source.
pub(super) enum CpuMeter {
    Host(CpuSample),
    Netns { ns: u64, cpus: u32, last: NsSample },
}

/// The processes of a namespace at one moment.
pub(super) struct NsSample {
    at: Instant,
    /// pid → (start time, CPU ms so far).
    procs: HashMap<u32, (u64, u64)>,
}

impl NsSample {
    fn take(ns: u64) -> NsSample {
        NsSample::of(Instant::now(), &procfs::netns_cpu(ns).unwrap_or_default())
    }

    fn of(at: Instant, procs: &[ProcCpu]) -> NsSample {
        NsSample {
            at,
            procs: procs
                .iter()
                .map(|p| (p.pid, (p.start_ticks, p.cpu_ms)))
                .collect(),
        }
    }

    /// The CPU milliseconds spent between `self` and `later`.
    fn spent_until(&self, later: &NsSample) -> u64 {
        later
            .procs
            .iter()
            .map(|(pid, (start, ms))| match self.procs.get(pid) {
                Some((s, before)) if s == start => ms.saturating_sub(*before),
                // Started since (or a reused pid): all its time is new.
                _ => *ms,
            })
            .sum()
    }
}

/// CPU use, 0..=100 per CPU of `cpus`, from `ms` CPU milliseconds spent
/// over `wall_ms`.
fn pct(ms: u64, wall_ms: u64, cpus: u32) -> f32 {
    if wall_ms == 0 {
        return 0.0;
    }
    (ms as f64 * 100.0 / (wall_ms as f64 * cpus.max(1) as f64)) as f32
}

/// The CPUs a node stands for: its config's, else the machine's.
pub(super) fn cpus(cfg: &NodeConfig) -> u32 {
    cfg.cpus
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32))
}

impl CpuMeter {
    /// Starts measuring (the first [`CpuMeter::sample`] covers the time
    /// from now).
    pub(super) fn new(cfg: &NodeConfig) -> CpuMeter {
        match cfg.cpu_source {
            CpuSource::Host => CpuMeter::Host(procfs::cpu_sample().unwrap_or_default()),
            CpuSource::Netns => match procfs::net_ns(None) {
                Ok(ns) => CpuMeter::Netns {
                    ns,
                    cpus: cpus(cfg),
                    last: NsSample::take(ns),
                },
                Err(e) => {
                    tracing::warn!(
                        "cpu_source netns: cannot read this daemon's network namespace ({e}); reporting the machine's CPU use"
                    );
                    CpuMeter::Host(procfs::cpu_sample().unwrap_or_default())
                }
            },
        }
    }

    /// CPU use since the last sample.
    pub(super) fn sample(&mut self) -> f32 {
        match self {
            CpuMeter::Host(prev) => {
                let now = procfs::cpu_sample().unwrap_or_default();
                let p = procfs::cpu_pct(*prev, now);
                *prev = now;
                p
            }
            CpuMeter::Netns { ns, cpus, last } => {
                let now = NsSample::take(*ns);
                let wall = now.at.duration_since(last.at).as_millis() as u64;
                let p = pct(last.spent_until(&now), wall, *cpus);
                *last = now;
                p
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn p(pid: u32, start_ticks: u64, cpu_ms: u64) -> ProcCpu {
        ProcCpu {
            pid,
            start_ticks,
            cpu_ms,
        }
    }

    #[test]
    fn counts_each_processs_time_since_the_last_sample() {
        let t = Instant::now();
        let a = NsSample::of(t, &[p(1, 10, 500), p(2, 20, 100), p(3, 30, 40)]);
        // 1 ran 300 ms more, 2 exited, 3's pid now belongs to a newer
        // process (50 ms so far), 4 is new (70 ms).
        let b = NsSample::of(
            t + Duration::from_secs(1),
            &[p(1, 10, 800), p(3, 99, 50), p(4, 40, 70)],
        );
        assert_eq!(a.spent_until(&b), 300 + 50 + 70);
        assert_eq!(b.spent_until(&b), 0);
    }

    #[test]
    fn percentages_are_of_the_nodes_cpus_and_may_exceed_100() {
        assert_eq!(pct(1000, 1000, 1), 100.0);
        assert_eq!(pct(1000, 1000, 4), 25.0);
        assert_eq!(pct(2000, 1000, 1), 200.0);
        assert_eq!(pct(1000, 0, 1), 0.0);
        assert_eq!(pct(500, 1000, 0), 50.0);
    }

    #[test]
    fn a_busy_thread_shows_in_its_namespace() {
        let cfg = NodeConfig {
            home: "127.0.0.1:1".parse().unwrap(),
            home_name: "h".into(),
            orphan_grace_ms: 1,
            arch: None,
            runners: Default::default(),
            files: None,
            files_mount: "/x".into(),
            identity: Default::default(),
            cpu_source: CpuSource::Netns,
            cpus: Some(1),
            peer_listen: None,
            stage_dir: "/x".into(),
            stage_max_mib: 1,
            stage_cache_mib: 1,
        };
        let mut m = CpuMeter::new(&cfg);
        assert!(matches!(m, CpuMeter::Netns { .. }));
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let busy = m.sample();
        // One thread busy the whole time is about one CPU (less if the
        // machine is shared; other processes of the namespace add).
        assert!(busy > 30.0, "{busy} ({x})");
    }
}
