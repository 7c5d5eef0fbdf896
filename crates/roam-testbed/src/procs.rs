//! Looking at and signalling processes through `/proc`, careful about pid
//! reuse: a daemon is identified by its pid *and* its start time.

use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// A started daemon, as recorded in `testbed.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DaemonRec {
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22);
    /// tells our daemon from a later process that got the same pid.
    pub start_time: u64,
    /// The daemon's session. Its leader (the short-lived intermediate child
    /// of the detached spawn) is gone, so every process in it descends from
    /// the daemon.
    pub session: u32,
}

/// The fields of `/proc/PID/stat` we use.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stat {
    pub state: char,
    pub session: u32,
    pub start_time: u64,
}

/// Parses `/proc/PID/stat`; `None` if there is no such process.
pub(crate) fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<Stat> {
    // The name (field 2) is in parentheses and may contain anything, so
    // split after the last ')'. Field 3 (state) is then index 0.
    let rest = text.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: f.first()?.chars().next()?,
        session: f.get(3)?.parse().ok()?,
        start_time: f.get(19)?.parse().ok()?,
    })
}

/// Records a just-started daemon. If it already died, the record says so
/// (start time 0 never matches a live process).
pub(crate) fn record(pid: u32) -> DaemonRec {
    match stat(pid) {
        Some(s) => DaemonRec {
            pid,
            start_time: s.start_time,
            session: s.session,
        },
        None => DaemonRec {
            pid,
            start_time: 0,
            session: 0,
        },
    }
}

/// Whether the recorded daemon still runs (a zombie counts as gone).
pub(crate) fn alive(rec: &DaemonRec) -> bool {
    match stat(rec.pid) {
        Some(s) => s.start_time == rec.start_time && !matches!(s.state, 'Z' | 'X'),
        None => false,
    }
}

/// Sends `sig` to the recorded daemon if it is still the same process.
/// Returns whether a signal was sent.
pub(crate) fn signal(rec: &DaemonRec, sig: Signal) -> bool {
    alive(rec) && kill(Pid::from_raw(rec.pid as i32), sig).is_ok()
}

/// Sends `sig` to a pid without checks (for pids just listed).
pub(crate) fn signal_pid(pid: u32, sig: Signal) {
    if pid != std::process::id() && pid > 1 {
        let _ = kill(Pid::from_raw(pid as i32), sig);
    }
}

/// Waits until none of `recs` runs, at most `timeout`. Returns whether all
/// are gone.
pub(crate) fn wait_gone(recs: &[DaemonRec], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !recs.iter().any(alive) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(10));
    }
}

/// Waits until none of `pids` runs (zombies count as gone), at most `timeout`.
pub(crate) fn wait_pids_gone(pids: &[u32], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !pids
            .iter()
            .any(|p| stat(*p).is_some_and(|s| !matches!(s.state, 'Z' | 'X')))
        {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(10));
    }
}

fn all_pids() -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Live processes in session `sid` (as records, so that a later signal
/// cannot hit a recycled pid), provided that session's leader is gone
/// (otherwise the id may have been reused by an unrelated session).
pub(crate) fn session_members(sid: u32) -> Vec<DaemonRec> {
    if sid <= 1 || stat(sid).is_some() {
        return Vec::new();
    }
    all_pids()
        .into_iter()
        .filter_map(|pid| {
            let s = stat(pid)?;
            (s.session == sid && !matches!(s.state, 'Z' | 'X')).then_some(DaemonRec {
                pid,
                start_time: s.start_time,
                session: s.session,
            })
        })
        .collect()
}

/// Live processes of testbed `id` whose state file may be lost: started as
/// `... --config FILE` with FILE inside `dir`, or carrying `env_marker`
/// (such as `ROAM_TESTBED=3`) in their environment, which the testbed sets
/// for its daemons and their children inherit.
pub(crate) fn testbed_processes(dir: &Path, env_marker: &str) -> Vec<u32> {
    let me = std::process::id();
    all_pids()
        .into_iter()
        .filter(|p| *p != me)
        .filter(|p| {
            let configured_here = std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|raw| {
                let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
                args.windows(2).any(|w| {
                    w[0] == b"--config"
                        && Path::new(std::str::from_utf8(w[1]).unwrap_or("")).starts_with(dir)
                })
            });
            configured_here
                || std::fs::read(format!("/proc/{p}/environ"))
                    .is_ok_and(|raw| raw.split(|b| *b == 0).any(|v| v == env_marker.as_bytes()))
        })
        .filter(|p| stat(*p).is_some_and(|s| !matches!(s.state, 'Z' | 'X')))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_names() {
        let line = "1234 (a) b (c)) S 1 1230 1230 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.state, 'S');
        assert_eq!(s.session, 1230);
        assert_eq!(s.start_time, 98765);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn our_own_record_is_alive() {
        let me = record(std::process::id());
        assert!(alive(&me));
        let stale = DaemonRec {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!alive(&stale));
        // A signal is never sent to a process that is not the recorded one.
        assert!(!signal(&stale, Signal::SIGKILL));
    }
}
