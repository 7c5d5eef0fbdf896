//! What roam reads from `/proc`: CPU and memory use (the machine's, or the
//! CPU time of the processes of a network namespace), the state and usage
//! of a process, and the machine's name.

use std::io;

/// Cumulative CPU time of all cores, in clock ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuSample {
    /// Ticks spent neither idle nor waiting for I/O.
    pub busy: u64,
    pub total: u64,
}

/// The first line of /proc/stat.
pub fn cpu_sample() -> io::Result<CpuSample> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    parse_cpu_line(stat.lines().next().unwrap_or(""))
        .ok_or_else(|| invalid("/proc/stat has no cpu line"))
}

fn parse_cpu_line(line: &str) -> Option<CpuSample> {
    let mut it = line.split_ascii_whitespace();
    if it.next()? != "cpu" {
        return None;
    }
    // user nice system idle iowait irq softirq steal [guest guest_nice]:
    // guest time is already counted in user and nice.
    let v: Vec<u64> = it.take(8).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    if v.len() < 4 {
        return None;
    }
    let total: u64 = v.iter().sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some(CpuSample {
        busy: total - idle,
        total,
    })
}

/// CPU use between two samples, 0..=100 (0 if no time passed).
pub fn cpu_pct(prev: CpuSample, now: CpuSample) -> f32 {
    let total = now.total.saturating_sub(prev.total);
    if total == 0 {
        return 0.0;
    }
    let busy = now.busy.saturating_sub(prev.busy).min(total);
    (busy as f64 * 100.0 / total as f64) as f32
}

/// Memory in use, (MemTotal - MemAvailable) / MemTotal * 100.
pub fn mem_pct() -> io::Result<f32> {
    let info = std::fs::read_to_string("/proc/meminfo")?;
    parse_meminfo(&info).ok_or_else(|| invalid("/proc/meminfo lacks MemTotal or MemAvailable"))
}

/// Memory available for new allocations (MemAvailable), in bytes.
pub fn mem_available() -> io::Result<u64> {
    let info = std::fs::read_to_string("/proc/meminfo")?;
    meminfo_field(&info, "MemAvailable:")
        .map(|kib| kib * 1024)
        .ok_or_else(|| invalid("/proc/meminfo lacks MemAvailable"))
}

/// A /proc/meminfo field, in KiB.
fn meminfo_field(info: &str, name: &str) -> Option<u64> {
    let line = info.lines().find(|l| l.starts_with(name))?;
    line[name.len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

fn parse_meminfo(info: &str) -> Option<f32> {
    let total = meminfo_field(info, "MemTotal:")?;
    let avail = meminfo_field(info, "MemAvailable:")?;
    if total == 0 {
        return None;
    }
    Some((total.saturating_sub(avail) as f64 * 100.0 / total as f64) as f32)
}

/// State and usage of one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// `ps` state letter (R, S, D, T, t, Z...).
    pub state: char,
    /// User + system CPU time.
    pub cpu_ms: u64,
    pub rss_kib: u64,
    /// Seconds since the process started.
    pub elapsed_s: u64,
    pub comm: String,
    pub ppid: u32,
    pub pgrp: u32,
}

/// /proc/PID/stat.
pub fn proc_stat(pid: u32) -> io::Result<ProcStat> {
    let stat = std::fs::read(format!("/proc/{pid}/stat"))?;
    let uptime = std::fs::read_to_string("/proc/uptime")?;
    let uptime_s: f64 = uptime
        .split_ascii_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| invalid("cannot parse /proc/uptime"))?;
    parse_stat(&stat, clock_ticks(), page_size(), uptime_s)
        .ok_or_else(|| invalid(format!("cannot parse /proc/{pid}/stat")))
}

fn parse_stat(stat: &[u8], tck: u64, page: u64, uptime_s: f64) -> Option<ProcStat> {
    // comm may contain anything, ')' included: it ends at the LAST ')'.
    let open = stat.iter().position(|&b| b == b'(')?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    if close < open {
        return None;
    }
    let comm = String::from_utf8_lossy(&stat[open + 1..close]).into_owned();
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    // rest[0] is field 3 (state): field N is rest[N - 3].
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    let num = |n: usize| -> Option<u64> { f.get(n - 3)?.parse().ok() };
    let state = f.first()?.chars().next()?;
    let ticks = num(14)? + num(15)?;
    let start_ticks = num(22)?;
    let tck = tck.max(1);
    let elapsed = (uptime_s - start_ticks as f64 / tck as f64).max(0.0);
    Some(ProcStat {
        state,
        cpu_ms: ticks * 1000 / tck,
        rss_kib: num(24)? * page / 1024,
        elapsed_s: elapsed as u64,
        comm,
        ppid: num(4)? as u32,
        pgrp: num(5)? as u32,
    })
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 {
        v as u64
    } else {
        100
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 {
        v as u64
    } else {
        4096
    }
}

/// The host name (empty if it cannot be read).
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Where a process sits in the process tree: /proc/PID/stat's ppid, pgrp
/// and session (cheaper than [`proc_stat`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcLinks {
    pub ppid: u32,
    pub pgrp: u32,
    pub session: u32,
}

pub fn proc_links(pid: u32) -> io::Result<ProcLinks> {
    let stat = std::fs::read(format!("/proc/{pid}/stat"))?;
    parse_links(&stat).ok_or_else(|| invalid(format!("cannot parse /proc/{pid}/stat")))
}

fn parse_links(stat: &[u8]) -> Option<ProcLinks> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    // Fields 3 (state), 4 (ppid), 5 (pgrp), 6 (session).
    let mut f = rest.split_ascii_whitespace().skip(1);
    let mut next = || -> Option<u32> { f.next()?.parse().ok() };
    Some(ProcLinks {
        ppid: next()?,
        pgrp: next()?,
        session: next()?,
    })
}

/// The real, effective, saved and file-system user ids of a process (or
/// thread), from /proc/PID/status.
pub fn proc_uids(pid: u32) -> io::Result<[u32; 4]> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_uids(&status).ok_or_else(|| invalid(format!("cannot parse /proc/{pid}/status")))
}

fn parse_uids(status: &str) -> Option<[u32; 4]> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    let mut ids = [0u32; 4];
    let mut f = line[4..].split_ascii_whitespace();
    for id in &mut ids {
        *id = f.next()?.parse().ok()?;
    }
    Some(ids)
}

/// Whether thread `tid` belongs to process `tgid` (one `stat` call).
pub fn is_thread_of(tgid: u32, tid: u32) -> bool {
    tgid == tid || std::fs::metadata(format!("/proc/{tgid}/task/{tid}")).is_ok()
}

/// Every process id in /proc.
pub fn all_pids() -> io::Result<Vec<u32>> {
    Ok(std::fs::read_dir("/proc")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

/// The network namespace of process `pid` (`None`: the caller), as the
/// inode number of `/proc/PID/ns/net` (equal for processes that share it).
pub fn net_ns(pid: Option<u32>) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let path = match pid {
        Some(p) => format!("/proc/{p}/ns/net"),
        None => "/proc/self/ns/net".to_owned(),
    };
    Ok(std::fs::metadata(path)?.ino())
}

/// The CPU time so far of one process, as `/proc/PID/stat` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcCpu {
    pub pid: u32,
    /// When it started, in clock ticks since boot: with the pid, tells a
    /// process from a later one that reused its pid.
    pub start_ticks: u64,
    /// User + system time of all its threads, in milliseconds.
    pub cpu_ms: u64,
}

/// Every process in network namespace `ns` (see [`net_ns`]) and its CPU
/// time so far. Processes that exit while they are read are left out.
pub fn netns_cpu(ns: u64) -> io::Result<Vec<ProcCpu>> {
    let tck = clock_ticks();
    let mut out = Vec::new();
    for pid in all_pids()? {
        if net_ns(Some(pid)).ok() != Some(ns) {
            continue;
        }
        let Ok(stat) = std::fs::read(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((start_ticks, ticks)) = parse_stat_cpu(&stat) {
            out.push(ProcCpu {
                pid,
                start_ticks,
                cpu_ms: ticks * 1000 / tck,
            });
        }
    }
    Ok(out)
}

/// Start time and user + system ticks (fields 22, 14 and 15) of a
/// `/proc/PID/stat` line.
fn parse_stat_cpu(stat: &[u8]) -> Option<(u64, u64)> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    let num = |n: usize| -> Option<u64> { f.get(n - 3)?.parse().ok() };
    Some((num(22)?, num(14)? + num(15)?))
}

#[cfg(test)]
mod netns_cpu_tests {
    use super::*;

    #[test]
    fn parses_start_and_cpu_ticks() {
        // Fields 3..22 after a comm holding ") (".
        let line = b"42 (a) (b) R 1 42 42 0 -1 0 0 0 0 0 70 30 0 0 20 0 1 0 5000 100 10";
        assert_eq!(parse_stat_cpu(line), Some((5000, 100)));
        assert_eq!(parse_stat_cpu(b"42 (x) R 1"), None);
    }

    #[test]
    fn this_process_is_in_its_own_namespace_with_its_cpu_time() {
        let ns = net_ns(None).unwrap();
        assert_eq!(net_ns(Some(std::process::id())).unwrap(), ns);
        // Spend some CPU time.
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let all = netns_cpu(ns).unwrap();
        let me = all.iter().find(|p| p.pid == std::process::id()).unwrap();
        assert!(me.cpu_ms >= 30, "{me:?} ({x})");
        assert!(me.start_ticks > 0);
    }
}

/// Whether a process with this pid exists (kill(pid, 0) succeeds or fails
/// with EPERM). Zombies count as alive until reaped.
/// Whether `pid` leaves signal `native_sig` to its default action (neither
/// caught nor ignored), from the SigCgt and SigIgn masks of
/// `/proc/PID/status`. `None` if the process cannot be read.
pub fn signal_is_default(pid: u32, native_sig: i32) -> Option<bool> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    mask_default(&status, native_sig)
}

fn mask_default(status: &str, sig: i32) -> Option<bool> {
    if !(1..=64).contains(&sig) {
        return None;
    }
    let bit = 1u64 << (sig - 1);
    let mask = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        u64::from_str_radix(line[key.len()..].trim(), 16).ok()
    };
    let caught = mask("SigCgt:")?;
    let ignored = mask("SigIgn:")?;
    Some((caught | ignored) & bit == 0)
}

pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission.
    if unsafe { libc::kill(pid, 0) } == 0 {
        return true;
    }
    io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The file system's device, `major:minor`.
    pub dev: (u32, u32),
    /// Where it is mounted (escapes undone).
    pub point: std::path::PathBuf,
    /// The file system type (`ext4`, `fuse`, `fuse.sshfs`...).
    pub fstype: Vec<u8>,
    /// The mount source (`/dev/vda`, `roam`...).
    pub source: Vec<u8>,
}

/// This process's mounts, in mount order (a later one may hide an earlier
/// one on the same point).
pub fn mounts() -> io::Result<Vec<MountEntry>> {
    Ok(parse_mountinfo(&std::fs::read("/proc/self/mountinfo")?))
}

/// Parses mountinfo(5) text; malformed lines are skipped.
pub fn parse_mountinfo(info: &[u8]) -> Vec<MountEntry> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    for line in info.split(|&b| b == b'\n') {
        let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == b"-") else {
            continue;
        };
        let (Some(dev), Some(point), Some(fstype), Some(source)) = (
            fields.get(2),
            fields.get(4),
            fields.get(sep + 1),
            fields.get(sep + 2),
        ) else {
            continue;
        };
        let Some((major, minor)) = std::str::from_utf8(dev)
            .ok()
            .and_then(|d| d.split_once(':'))
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        else {
            continue;
        };
        out.push(MountEntry {
            dev: (major, minor),
            point: std::ffi::OsStr::from_bytes(&unescape(point)).into(),
            fstype: fstype.to_vec(),
            source: source.to_vec(),
        });
    }
    out
}

/// Undoes mountinfo's octal escapes (`\040` for a space and so on).
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if let (b'\\', Some(oct)) = (field[i], field.get(i + 1..i + 4)) {
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                if let Ok(b) = u8::try_from(v) {
                    out.push(b);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

/// One mapping of /proc/PID/maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    /// MAP_SHARED (`s`), else private (`p`).
    pub shared: bool,
    pub offset: u64,
    /// `major:minor` of the file's device, 0:0 for anonymous memory.
    pub dev: (u32, u32),
    pub inode: u64,
    /// The file, or `[heap]`, `[stack]`, `[vdso]`...; empty for anonymous
    /// memory. A deleted file ends in ` (deleted)`.
    pub path: Vec<u8>,
}

/// The mappings of process `pid`, in address order.
pub fn maps(pid: i32) -> io::Result<Vec<Vma>> {
    let text = std::fs::read(format!("/proc/{pid}/maps"))?;
    text.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| parse_vma(l).ok_or_else(|| invalid(format!("cannot parse /proc/{pid}/maps"))))
        .collect()
}

fn parse_vma(line: &[u8]) -> Option<Vma> {
    // start-end perms offset dev inode [path]; the path may hold spaces.
    let mut rest = line;
    let mut next = || {
        let cut = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        let (f, r) = rest.split_at(cut);
        rest = r.strip_prefix(b" ").unwrap_or(r);
        std::str::from_utf8(f).ok()
    };
    let (range, perms, offset, dev, inode) = (next()?, next()?, next()?, next()?, next()?);
    let (start, end) = range.split_once('-')?;
    let (major, minor) = dev.split_once(':')?;
    let p = perms.as_bytes();
    if p.len() != 4 {
        return None;
    }
    let path = rest
        .iter()
        .position(|&b| b != b' ')
        .map_or(&[][..], |i| &rest[i..]);
    Some(Vma {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        read: p[0] == b'r',
        write: p[1] == b'w',
        exec: p[2] == b'x',
        shared: p[3] == b's',
        offset: u64::from_str_radix(offset, 16).ok()?,
        dev: (
            u32::from_str_radix(major, 16).ok()?,
            u32::from_str_radix(minor, 16).ok()?,
        ),
        inode: inode.parse().ok()?,
        path: path.to_vec(),
    })
}

/// A /proc/PID/pagemap entry: the page is in memory.
pub const PAGE_PRESENT: u64 = 1 << 63;
/// A /proc/PID/pagemap entry: the page is in swap.
pub const PAGE_SWAPPED: u64 = 1 << 62;

/// The /proc/PID/pagemap entries of `pages` pages from `start` (page
/// aligned): [`PAGE_PRESENT`], [`PAGE_SWAPPED`] and the other bits.
pub fn pagemap(pid: i32, start: u64, pages: usize) -> io::Result<Vec<u64>> {
    let f = std::fs::File::open(format!("/proc/{pid}/pagemap"))?;
    pagemap_of(&f, start, pages)
}

/// [`pagemap`] through an open /proc/PID/pagemap (one open for many
/// ranges).
pub fn pagemap_of(f: &std::fs::File, start: u64, pages: usize) -> io::Result<Vec<u64>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; pages * 8];
    let mut done = 0;
    while done < buf.len() {
        let n = f.read_at(&mut buf[done..], start / 4096 * 8 + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(buf[..done]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// The resource limits (soft, hard) of /proc/`pid`/limits, in the
/// kernel's order (RLIMIT_CPU first); "unlimited" is `u64::MAX`.
pub fn limits(pid: i32) -> io::Result<Vec<(u64, u64)>> {
    parse_limits(&std::fs::read_to_string(format!("/proc/{pid}/limits"))?)
}

fn parse_limits(text: &str) -> io::Result<Vec<(u64, u64)>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed limits");
    let mut lines = text.lines();
    let head = lines.next().ok_or_else(bad)?;
    // Names have spaces: the values are found at the header's columns.
    let soft_at = head.find("Soft Limit").ok_or_else(bad)?;
    let hard_at = head.find("Hard Limit").ok_or_else(bad)?;
    let value = |v: Option<&str>| -> io::Result<u64> {
        match v.ok_or_else(bad)?.split_whitespace().next() {
            Some("unlimited") => Ok(u64::MAX),
            Some(n) => n.parse().map_err(|_| bad()),
            None => Err(bad()),
        }
    };
    let out: Vec<(u64, u64)> = lines
        .map(|l| Ok((value(l.get(soft_at..))?, value(l.get(hard_at..))?)))
        .collect::<io::Result<_>>()?;
    if out.len() != libc::RLIMIT_RTTIME as usize + 1 {
        return Err(bad());
    }
    Ok(out)
}

#[cfg(test)]
mod signal_mask_tests {
    use super::*;

    #[test]
    fn reads_dispositions_from_status() {
        // SIGTSTP (20) caught, SIGTTIN (21) ignored, SIGTTOU (22) default.
        let status = "Name:\tx\nSigIgn:\t0000000000100000\nSigCgt:\t0000000000080000\n";
        assert_eq!(mask_default(status, 20), Some(false));
        assert_eq!(mask_default(status, 21), Some(false));
        assert_eq!(mask_default(status, 22), Some(true));
        assert_eq!(mask_default(status, 0), None);
        assert_eq!(mask_default("Name:\tx\n", 20), None);
    }

    #[test]
    fn our_own_status_reads() {
        assert!(signal_is_default(std::process::id(), libc::SIGTTOU).is_some());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_uids_and_threads() {
        let links = parse_links(b"12 (a) b) c) S 1 12 10 0 -1").unwrap();
        assert_eq!(
            links,
            ProcLinks {
                ppid: 1,
                pgrp: 12,
                session: 10
            }
        );
        assert!(parse_links(b"12 (a) S x").is_none());
        assert_eq!(
            parse_uids("Name:\tx\nUid:\t1000\t0\t2\t3\nGid:\t0\t0\t0\t0\n"),
            Some([1000, 0, 2, 3])
        );
        let me = std::process::id();
        let mine = proc_links(me).unwrap();
        // SAFETY: trivial getters.
        unsafe {
            assert_eq!(mine.ppid, libc::getppid() as u32);
            assert_eq!(mine.session, libc::getsid(0) as u32);
        }
        // SAFETY: trivial getter.
        let uid = unsafe { libc::getuid() };
        assert_eq!(proc_uids(me).unwrap()[0], uid);
        let tid = std::thread::spawn(|| {
            // SAFETY: trivial getter.
            let tid = unsafe { libc::gettid() } as u32;
            (is_thread_of(std::process::id(), tid), tid)
        })
        .join()
        .unwrap();
        assert!(tid.0);
        assert!(!is_thread_of(me, u32::MAX - 1));
        assert!(all_pids().unwrap().contains(&me));
    }

    #[test]
    fn cpu_line_parsing() {
        let s = parse_cpu_line("cpu  100 10 50 800 40 0 5 0 0 0").unwrap();
        assert_eq!(s.total, 1005);
        assert_eq!(s.busy, 165);
        assert_eq!(parse_cpu_line("cpu0 1 2 3 4"), None);
        assert_eq!(parse_cpu_line("intr 1 2"), None);
    }

    #[test]
    fn cpu_pct_math() {
        let a = CpuSample {
            busy: 100,
            total: 1000,
        };
        let b = CpuSample {
            busy: 150,
            total: 1200,
        };
        assert!((cpu_pct(a, b) - 25.0).abs() < 0.01);
        assert_eq!(cpu_pct(a, a), 0.0);
        assert_eq!(cpu_pct(b, a), 0.0);
        let c = CpuSample {
            busy: 10_000,
            total: 1100,
        };
        assert_eq!(cpu_pct(a, c), 100.0);
    }

    #[test]
    fn cpu_sample_from_proc() {
        let a = cpu_sample().unwrap();
        assert!(a.total > 0 && a.busy <= a.total);
        let b = cpu_sample().unwrap();
        assert!(b.total >= a.total);
        let p = cpu_pct(a, b);
        assert!((0.0..=100.0).contains(&p));
    }

    #[test]
    fn meminfo() {
        let p = parse_meminfo("MemTotal: 1000 kB\nMemFree: 10 kB\nMemAvailable: 250 kB\n").unwrap();
        assert!((p - 75.0).abs() < 0.01);
        assert_eq!(parse_meminfo("MemTotal: 1000 kB\n"), None);
        let m = mem_pct().unwrap();
        assert!(m > 0.0 && m <= 100.0, "{m}");
    }

    #[test]
    fn stat_parsing_with_nasty_comm() {
        let mut line = b"42 (a) b (c)) S 7 42 42 0 -1 4194304 1 0 0 0 ".to_vec();
        // utime=150 stime=50 (fields 14, 15), then 16..=21, starttime=1000 (22), vsize (23), rss=10 (24)
        line.extend_from_slice(b"150 50 0 0 20 0 1 0 1000 12345 10 18446744073709551615 1 1 0");
        let s = parse_stat(&line, 100, 4096, 25.0).unwrap();
        assert_eq!(s.comm, "a) b (c)");
        assert_eq!(s.state, 'S');
        assert_eq!(s.ppid, 7);
        assert_eq!(s.pgrp, 42);
        assert_eq!(s.cpu_ms, 2000);
        assert_eq!(s.rss_kib, 40);
        assert_eq!(s.elapsed_s, 15);
        assert_eq!(parse_stat(b"42 (x", 100, 4096, 1.0), None);
    }

    #[test]
    fn proc_stat_of_self() {
        // The main thread of the test harness sleeps: look at this thread.
        // SAFETY: gettid cannot fail.
        let tid = unsafe { libc::gettid() } as u32;
        let s = proc_stat(tid).unwrap();
        assert_eq!(s.state, 'R');
        let comm = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
        assert_eq!(s.comm, comm.trim_end_matches('\n'));
        assert_eq!(s.ppid, std::os::unix::process::parent_id());
        assert!(s.rss_kib > 0);
        assert!(proc_stat(u32::MAX).is_err());
    }

    #[test]
    fn names() {
        let h = hostname();
        assert!(!h.is_empty());
        assert_eq!(
            h,
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap()
                .trim()
        );
    }

    #[test]
    fn alive() {
        assert!(pid_alive(std::process::id()));
        assert!(pid_alive(1));
        assert!(!pid_alive(0));
        assert!(!pid_alive(u32::MAX));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!pid_alive(pid));
    }

    #[test]
    fn mountinfo_lines_and_escapes() {
        let info = b"22 1 0:21 / /proc rw - proc proc rw\n\
            90 22 0:55 / /var/tmp/a\\040b rw,nosuid - fuse roam rw,user_id=0\n\
            garbage\n- - -\n\
            93 22 x:y / /bad rw - ext4 /dev/x rw\n";
        let m = super::parse_mountinfo(info);
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!(m[0].point, std::path::Path::new("/proc"));
        assert_eq!(m[1].dev, (0, 55));
        assert_eq!(m[1].point, std::path::Path::new("/var/tmp/a b"));
        assert_eq!(m[1].fstype, b"fuse");
        assert_eq!(m[1].source, b"roam");
        assert_eq!(super::unescape(br"/tab\011x\134y"), b"/tab\tx\\y");
        assert_eq!(super::unescape(br"/end\04"), br"/end\04");
        assert_eq!(super::unescape(br"\999"), br"\999");
        assert_eq!(super::unescape(br"a\040"), b"a ");
        assert!(super::mounts()
            .unwrap()
            .iter()
            .any(|m| m.point == std::path::Path::new("/")));
    }

    #[test]
    fn maps_lines_and_our_own() {
        let v = super::parse_vma(
            b"7f00a000-7f00c000 rw-p 00001000 08:01 1234    /usr/lib/a b.so (deleted)",
        )
        .unwrap();
        assert_eq!(
            (v.start, v.end, v.offset, v.inode),
            (0x7f00a000, 0x7f00c000, 0x1000, 1234)
        );
        assert!(v.read && v.write && !v.exec && !v.shared);
        assert_eq!(v.dev, (8, 1));
        assert_eq!(v.path, b"/usr/lib/a b.so (deleted)");
        let anon = super::parse_vma(b"7f00a000-7f00c000 rw-s 00000000 00:00 0 ").unwrap();
        assert!(anon.shared && anon.path.is_empty());
        assert!(super::parse_vma(b"garbage").is_none());
        assert!(super::parse_vma(b"1-2 rwxpq 0 0:0 0").is_none());
        let me = std::process::id() as i32;
        let m = super::maps(me).unwrap();
        assert!(m.iter().any(|v| v.path == b"[stack]"));
        // This test's own stack is present in memory.
        let x = 5u64;
        let addr = std::ptr::addr_of!(x) as u64 & !4095;
        let pm = super::pagemap(me, addr, 1).unwrap();
        assert_eq!(pm.len(), 1);
        assert_ne!(pm[0] & super::PAGE_PRESENT, 0);
    }

    #[test]
    fn limits_are_read_at_the_header_columns() {
        let own = limits(std::process::id() as i32).unwrap();
        let mut r = libc::rlimit64 {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit64 writes the one struct given.
        unsafe { libc::getrlimit64(libc::RLIMIT_NOFILE, &mut r) };
        assert_eq!(own[libc::RLIMIT_NOFILE as usize], (r.rlim_cur, r.rlim_max));
        assert!(parse_limits("Limit  Soft Limit  Hard Limit\nMax x  1  2\n").is_err());
    }
}
