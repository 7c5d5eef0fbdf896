//! The measurements: timed runs of commands, pipelines through a byte
//! counter, and an idle process's memory and wakeups.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::children;

/// Where the commands' stderr goes (a file opened for appending), so a
/// failure can say why.
pub struct ErrLog(File);

impl ErrLog {
    pub fn create(path: &Path) -> anyhow::Result<ErrLog> {
        let f = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(ErrLog(f))
    }

    fn clear(&mut self) -> anyhow::Result<()> {
        Ok(self.0.set_len(0)?)
    }

    fn stderr(&self) -> anyhow::Result<Stdio> {
        Ok(Stdio::from(self.0.try_clone()?))
    }

    fn contents(&mut self) -> String {
        let mut s = String::new();
        let _ = self.0.seek(SeekFrom::Start(0));
        let _ = (&self.0).take(4096).read_to_string(&mut s);
        s.trim().to_string()
    }
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` with no input or output and returns the time from just
/// before it is spawned to just after it has been reaped; `None` if it ran
/// past `limit` and was killed.
pub fn time_run(
    cmd: &mut Command,
    limit: Duration,
    log: &mut ErrLog,
) -> anyhow::Result<Option<Duration>> {
    log.clear()?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.stderr()?);
    let start = Instant::now();
    let (status, overdue) = children::spawn(cmd, limit)
        .and_then(|mut c| children::wait(&mut c))
        .with_context(|| format!("cannot run `{}`", describe(cmd)))?;
    let took = start.elapsed();
    // The command holds a descriptor of the log until told otherwise.
    cmd.stderr(Stdio::null());
    if overdue {
        return Ok(None);
    }
    if !status.success() {
        bail!("`{}` failed ({status}): {}", describe(cmd), log.contents());
    }
    Ok(Some(took))
}

/// Runs `cmd` with no input and returns what it printed (at most 64 KiB);
/// `None` if it ran past `limit` and was killed.
pub fn run_capture(
    cmd: &mut Command,
    limit: Duration,
    log: &mut ErrLog,
) -> anyhow::Result<Option<String>> {
    log.clear()?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log.stderr()?);
    let child = children::spawn(cmd, limit);
    cmd.stderr(Stdio::null());
    let mut child = child.with_context(|| format!("cannot run `{}`", describe(cmd)))?;
    let mut out = Vec::new();
    let read = child
        .stdout
        .take()
        .map(|o| o.take(64 << 10).read_to_end(&mut out));
    let (status, overdue) = children::wait(&mut child)?;
    if overdue {
        return Ok(None);
    }
    if let Some(Err(e)) = read {
        return Err(e).context(format!("reading the output of `{}`", describe(cmd)));
    }
    if !status.success() {
        bail!("`{}` failed ({status}): {}", describe(cmd), log.contents());
    }
    Ok(Some(String::from_utf8_lossy(&out).into_owned()))
}

/// What the end of a pipeline must produce.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// Exactly this many bytes.
    Bytes(u64),
    /// A line giving this number (`wc -c`).
    Count(u64),
}

/// Runs `cmds` as a pipeline whose last stdout this process reads and
/// counts, and returns the time from the first spawn until everything has
/// been read and every command reaped; `None` if a command ran past
/// `limit` and was killed.
pub fn time_pipeline(
    cmds: &mut [Command],
    expect: Expect,
    limit: Duration,
    log: &mut ErrLog,
) -> anyhow::Result<Option<Duration>> {
    let what = cmds.iter().map(describe).collect::<Vec<_>>().join(" | ");
    let mut buf = vec![0u8; 1 << 20];
    log.clear()?;
    let start = Instant::now();
    let mut running: Vec<Child> = Vec::new();
    let mut prev: Option<ChildStdout> = None;
    for cmd in cmds.iter_mut() {
        let input = prev.take().map_or_else(Stdio::null, Stdio::from);
        cmd.stdin(input)
            .stdout(Stdio::piped())
            .stderr(log.stderr()?);
        let child = children::spawn(cmd, limit);
        // The command keeps what it was given (the read end of the pipe
        // from the previous command, a descriptor of the log): drop them,
        // or a writer whose reader died would block instead of failing.
        cmd.stdin(Stdio::null()).stderr(Stdio::null());
        let mut child = child.with_context(|| format!("cannot run `{}`", describe(cmd)))?;
        prev = child.stdout.take();
        running.push(child);
    }
    let mut out = prev.context("an empty pipeline")?;
    let (mut total, mut head) = (0u64, Vec::new());
    loop {
        match out.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if head.len() < 64 {
                    head.extend_from_slice(&buf[..n.min(64)]);
                }
                total += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context(format!("reading the output of `{what}`")),
        }
    }
    drop(out);
    let (mut failed, mut overdue) = (Vec::new(), false);
    for mut c in running {
        let (status, late) = children::wait(&mut c)?;
        overdue |= late;
        if !status.success() {
            failed.push(status.to_string());
        }
    }
    let took = start.elapsed();
    if overdue {
        return Ok(None);
    }
    if !failed.is_empty() {
        bail!(
            "`{what}` failed ({}): {}",
            failed.join(", "),
            log.contents()
        );
    }
    let ok = match expect {
        Expect::Bytes(n) => total == n,
        Expect::Count(n) => String::from_utf8_lossy(&head).trim() == n.to_string(),
    };
    if !ok {
        bail!(
            "`{what}` gave {total} bytes ({:?}...), expected {expect:?}",
            String::from_utf8_lossy(&head[..head.len().min(32)])
        );
    }
    Ok(Some(took))
}

/// What one idle process did over a watch.
#[derive(Debug, Clone, Default)]
pub struct Idle {
    /// Resident memory (bytes), sampled every second.
    pub rss: Vec<f64>,
    /// Context switches of all its threads, per one-second interval.
    pub wakeups: Vec<f64>,
    /// All context switches over the watch, divided by its length.
    pub rate: f64,
    /// Context switches over the watch, by thread name.
    pub by_thread: BTreeMap<String, u64>,
    /// Threads at the end.
    pub threads: usize,
}

/// Context switches (voluntary + involuntary) of each thread of `pid`, by
/// tid, with the thread's name.
fn switches(pid: u32) -> anyhow::Result<BTreeMap<u32, (String, u64)>> {
    let dir = format!("/proc/{pid}/task");
    let mut map = BTreeMap::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("cannot read {dir}"))? {
        let e = e?;
        let Some(tid) = e.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        // A thread may exit between the listing and the read.
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let (mut name, mut n) = (String::new(), 0);
        for line in status.lines() {
            let (k, v) = line.split_once(':').unwrap_or((line, ""));
            match k {
                "Name" => name = v.trim().to_string(),
                "voluntary_ctxt_switches" | "nonvoluntary_ctxt_switches" => {
                    n += v.trim().parse::<u64>().unwrap_or(0)
                }
                _ => {}
            }
        }
        map.insert(tid, (name, n));
    }
    Ok(map)
}

/// VmRSS of `pid`, in bytes.
fn rss(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .with_context(|| format!("no VmRSS in {path}"))?;
    Ok(kib * 1024.0)
}

/// Watches `pids` for `secs` seconds, sampling each once a second.
/// Threads that start during the watch count from zero; one that exits
/// loses at most its last second.
pub fn watch_idle(
    pids: &[u32],
    secs: u64,
    stop: impl Fn() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<Idle>> {
    let mut prev = pids
        .iter()
        .map(|p| switches(*p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut out = vec![Idle::default(); pids.len()];
    let start = Instant::now();
    for tick in 1..=secs {
        let due = start + Duration::from_secs(tick);
        sleep(due.saturating_duration_since(Instant::now()));
        stop()?;
        for (i, pid) in pids.iter().enumerate() {
            let now = switches(*pid)?;
            let mut sum = 0;
            for (tid, (name, n)) in &now {
                let d = n - prev[i].get(tid).map_or(0, |p| p.1.min(*n));
                *out[i].by_thread.entry(name.clone()).or_default() += d;
                sum += d;
            }
            out[i].wakeups.push(sum as f64);
            out[i].rss.push(rss(*pid)?);
            out[i].threads = now.len();
            prev[i] = now;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    for idle in &mut out {
        idle.rate = idle.wakeups.iter().sum::<f64>() / secs;
    }
    Ok(out)
}
