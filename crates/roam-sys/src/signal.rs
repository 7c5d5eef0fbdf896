//! Signals: wire ⇄ native numbers, sending, dying by one, stopping.
//!
//! The wire numbering is asm-generic Linux (x86, arm, aarch64, riscv,
//! s390x); conversion goes through the signal's name, so an architecture
//! with other numbers (mips, sparc, alpha) still maps correctly. Wire
//! 34..=64 are SIGRTMIN+0 .. SIGRTMIN+30, where SIGRTMIN is libc's (glibc
//! keeps 32 and 33 for itself), so wire 32 and 33 have no native signal.

use roam_proto::types::WireSignal;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// SIGSTKFLT, on the architectures that have it (-1: none).
#[cfg(not(any(
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "sparc",
    target_arch = "sparc64"
)))]
const NATIVE_STKFLT: i32 = libc::SIGSTKFLT;
#[cfg(any(
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "sparc",
    target_arch = "sparc64"
))]
const NATIVE_STKFLT: i32 = -1;

/// Wire number, name, native number, for the classic signals.
const CLASSIC: [(u8, &str, i32); 31] = [
    (1, "HUP", libc::SIGHUP),
    (2, "INT", libc::SIGINT),
    (3, "QUIT", libc::SIGQUIT),
    (4, "ILL", libc::SIGILL),
    (5, "TRAP", libc::SIGTRAP),
    (6, "ABRT", libc::SIGABRT),
    (7, "BUS", libc::SIGBUS),
    (8, "FPE", libc::SIGFPE),
    (9, "KILL", libc::SIGKILL),
    (10, "USR1", libc::SIGUSR1),
    (11, "SEGV", libc::SIGSEGV),
    (12, "USR2", libc::SIGUSR2),
    (13, "PIPE", libc::SIGPIPE),
    (14, "ALRM", libc::SIGALRM),
    (15, "TERM", libc::SIGTERM),
    (16, "STKFLT", NATIVE_STKFLT),
    (17, "CHLD", libc::SIGCHLD),
    (18, "CONT", libc::SIGCONT),
    (19, "STOP", libc::SIGSTOP),
    (20, "TSTP", libc::SIGTSTP),
    (21, "TTIN", libc::SIGTTIN),
    (22, "TTOU", libc::SIGTTOU),
    (23, "URG", libc::SIGURG),
    (24, "XCPU", libc::SIGXCPU),
    (25, "XFSZ", libc::SIGXFSZ),
    (26, "VTALRM", libc::SIGVTALRM),
    (27, "PROF", libc::SIGPROF),
    (28, "WINCH", libc::SIGWINCH),
    (29, "IO", libc::SIGIO),
    (30, "PWR", libc::SIGPWR),
    (31, "SYS", libc::SIGSYS),
];

/// Other names some tools use.
const ALIASES: [(&str, u8); 4] = [("IOT", 6), ("POLL", 29), ("CLD", 17), ("UNUSED", 31)];

/// First and last wire numbers of the real-time signals.
const WIRE_RTMIN: u8 = 34;
const WIRE_RTMAX: u8 = 64;

/// The native number of a wire signal, None if this system has no such signal.
pub fn to_native(s: WireSignal) -> Option<i32> {
    match s.0 {
        1..=31 => Some(CLASSIC[usize::from(s.0) - 1].2).filter(|&n| n > 0),
        WIRE_RTMIN..=WIRE_RTMAX => {
            let n = libc::SIGRTMIN() + i32::from(s.0 - WIRE_RTMIN);
            (n <= libc::SIGRTMAX()).then_some(n)
        }
        _ => None,
    }
}

/// The wire number of a native signal, None if it has none.
pub fn to_wire(native: i32) -> Option<WireSignal> {
    if native <= 0 {
        return None;
    }
    if let Some(&(w, _, _)) = CLASSIC.iter().find(|c| c.2 == native) {
        return Some(WireSignal(w));
    }
    let (lo, hi) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    if (lo..=hi).contains(&native) {
        let w = i32::from(WIRE_RTMIN) + (native - lo);
        if w <= i32::from(WIRE_RTMAX) {
            return Some(WireSignal(w as u8));
        }
    }
    None
}

/// The signal's name without "SIG": "TERM", "RTMIN", "RTMIN+3"; the number
/// itself for a wire number that names no signal.
pub fn name(s: WireSignal) -> String {
    match s.0 {
        1..=31 => CLASSIC[usize::from(s.0) - 1].1.to_owned(),
        WIRE_RTMIN => "RTMIN".to_owned(),
        35..=WIRE_RTMAX => format!("RTMIN+{}", s.0 - WIRE_RTMIN),
        n => n.to_string(),
    }
}

/// Parses "TERM", "SIGTERM", "term", "RTMIN+2", "RTMAX-1" or a number into
/// the wire signal. A number is this system's native number (what a user
/// types for `kill -N` here); 0 is not a signal.
pub fn parse(s: &str) -> Option<WireSignal> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return to_wire(n);
    }
    let up = s.to_ascii_uppercase();
    let bare = up.strip_prefix("SIG").unwrap_or(&up);
    if let Some(&(w, _, _)) = CLASSIC.iter().find(|c| c.1 == bare) {
        return Some(WireSignal(w));
    }
    if let Some(&(_, w)) = ALIASES.iter().find(|a| a.0 == bare) {
        return Some(WireSignal(w));
    }
    let rt_offset = |rest: &str, sign: char| -> Option<u8> {
        if rest.is_empty() {
            return Some(0);
        }
        let digits = rest.strip_prefix(sign)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    };
    let native = if let Some(rest) = bare.strip_prefix("RTMIN") {
        libc::SIGRTMIN().checked_add(i32::from(rt_offset(rest, '+')?))?
    } else if let Some(rest) = bare.strip_prefix("RTMAX") {
        libc::SIGRTMAX().checked_sub(i32::from(rt_offset(rest, '-')?))?
    } else {
        return None;
    };
    if !(libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&native) {
        return None;
    }
    to_wire(native)
}

/// Sends a native signal; `pid` may be negative (a process group) or 0
/// (our own group). `native_sig` 0 only checks the target exists.
pub fn kill(pid: i32, native_sig: i32) -> io::Result<()> {
    // SAFETY: kill has no memory effects.
    if unsafe { libc::kill(pid, native_sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// tgkill: a native signal to thread `tid` of process `tgid`.
pub fn tgkill(tgid: i32, tid: i32, native_sig: i32) -> io::Result<()> {
    // SAFETY: tgkill has no memory effects.
    if unsafe { libc::syscall(libc::SYS_tgkill, tgid, tid, native_sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Size of the kernel's siginfo_t.
pub const SIGINFO_LEN: usize = 128;

/// si_code of a signal sent by sigqueue(3), and by tkill/tgkill.
pub const SI_QUEUE: i32 = -1;
pub const SI_TKILL: i32 = -6;

/// The fields of a siginfo_t that sigqueue(3) fills, on the architectures
/// whose layout is the generic one (x86-64, aarch64, riscv64: si_signo,
/// si_errno, si_code, then after padding si_pid, si_uid, si_value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueuedInfo {
    pub code: i32,
    pub pid: i32,
    pub uid: u32,
    /// si_value (the int or the pointer, as 8 bytes).
    pub value: u64,
}

impl QueuedInfo {
    /// Reads the fields from a raw siginfo_t.
    pub fn parse(raw: &[u8; SIGINFO_LEN]) -> QueuedInfo {
        let i32_at = |o: usize| i32::from_ne_bytes([raw[o], raw[o + 1], raw[o + 2], raw[o + 3]]);
        let mut v = [0u8; 8];
        v.copy_from_slice(&raw[24..32]);
        QueuedInfo {
            code: i32_at(8),
            pid: i32_at(16),
            uid: i32_at(20) as u32,
            value: u64::from_ne_bytes(v),
        }
    }

    /// A raw siginfo_t for `native_sig` with these fields.
    pub fn raw(&self, native_sig: i32) -> [u8; SIGINFO_LEN] {
        let mut raw = [0u8; SIGINFO_LEN];
        raw[0..4].copy_from_slice(&native_sig.to_ne_bytes());
        raw[8..12].copy_from_slice(&self.code.to_ne_bytes());
        raw[16..20].copy_from_slice(&self.pid.to_ne_bytes());
        raw[20..24].copy_from_slice(&self.uid.to_ne_bytes());
        raw[24..32].copy_from_slice(&self.value.to_ne_bytes());
        raw
    }
}

/// rt_sigqueueinfo (`tid` None) or rt_tgsigqueueinfo: a native signal
/// with the siginfo `info` to process `pid` or its thread `tid`. The
/// kernel refuses (EPERM) an si_code of 0 or more, or SI_TKILL, unless the
/// caller signals itself.
pub fn queue_signal(
    pid: i32,
    tid: Option<i32>,
    native_sig: i32,
    info: &QueuedInfo,
) -> io::Result<()> {
    let mut raw = info.raw(native_sig);
    // SAFETY: the kernel reads one siginfo_t from `raw`, which is
    // SIGINFO_LEN bytes.
    let rc = unsafe {
        match tid {
            None => libc::syscall(libc::SYS_rt_sigqueueinfo, pid, native_sig, raw.as_mut_ptr()),
            Some(t) => libc::syscall(
                libc::SYS_rt_tgsigqueueinfo,
                pid,
                t,
                native_sig,
                raw.as_mut_ptr(),
            ),
        }
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(any(target_arch = "x86", target_arch = "arm")))]
const SYS_SETRESUID: libc::c_long = libc::SYS_setresuid;
#[cfg(any(target_arch = "x86", target_arch = "arm"))]
const SYS_SETRESUID: libc::c_long = libc::SYS_setresuid32;

/// Sends a native signal with the rights of user `uid`, as kill(2) would
/// for a process of that user: to `pid`, or to a process group if `pid`
/// is negative, and with `info` through rt_sigqueueinfo when given (then
/// `pid` must be positive). The kernel makes every permission check
/// (same user, or root), for each member of a group.
///
/// Runs on a thread of its own that switches its real and effective user
/// ids (raw setresuid changes the calling thread only), so nothing else of
/// the process ever runs with them. For root (`uid` 0) it sends directly.
pub fn kill_as(uid: u32, pid: i32, native_sig: i32, info: Option<QueuedInfo>) -> io::Result<()> {
    let send = move || match info {
        Some(i) => queue_signal(pid, None, native_sig, &i),
        None => kill(pid, native_sig),
    };
    if uid == 0 {
        return send();
    }
    std::thread::scope(|s| {
        s.spawn(move || {
            // Saved uid stays 0: the thread could switch back, but ends
            // instead. Effective capabilities go with the effective uid.
            // SAFETY: raw setresuid changes this thread's credentials only.
            if unsafe { libc::syscall(SYS_SETRESUID, uid, uid, 0u32) } != 0 {
                return Err(io::Error::last_os_error());
            }
            send()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("signal thread panicked")))
    })
}

/// The signals a proxy catches and forwards: every catchable signal except
/// SIGCHLD, SIGTTIN, SIGTTOU, SIGPIPE and the synchronous fault signals
/// SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS; plus the real-time
/// signals libc leaves free (SIGRTMIN..=SIGRTMAX).
pub fn forwardable() -> Vec<i32> {
    let mut v = vec![
        libc::SIGHUP,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGABRT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGALRM,
        libc::SIGTERM,
        NATIVE_STKFLT,
        libc::SIGCONT,
        libc::SIGTSTP,
        libc::SIGURG,
        libc::SIGXCPU,
        libc::SIGXFSZ,
        libc::SIGVTALRM,
        libc::SIGPROF,
        libc::SIGWINCH,
        libc::SIGIO,
        libc::SIGPWR,
    ];
    v.extend(libc::SIGRTMIN()..=libc::SIGRTMAX());
    v.retain(|&s| s > 0);
    v
}

/// Ends the calling process by `native_sig` the way the kernel would, so
/// that our parent's wait status says "killed by `native_sig`": no core
/// file of ours (RLIMIT_CORE=0 and not dumpable), default disposition,
/// unblocked in this thread, then raised at this thread. If we are still
/// alive after that (a signal whose default is to ignore, or to stop and we
/// were continued), exits with status 128 + `native_sig` (via `_exit`: no
/// atexit handlers, as with a real signal death).
pub fn die_by_signal(native_sig: i32) -> ! {
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on our own process with valid arguments;
    // failures are harmless (we only lose the core-file guarantee, or the
    // raise, which the _exit below covers).
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        // With a pipe core_pattern RLIMIT_CORE is not enforced; not being
        // dumpable is.
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(native_sig, &sa, std::ptr::null_mut());
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, native_sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        // Aim at this thread: it is the one with the signal unblocked, so
        // the signal is delivered before tgkill returns.
        libc::syscall(libc::SYS_tgkill, libc::getpid(), libc::gettid(), native_sig);
        libc::_exit(128 + native_sig)
    }
}

/// Write end of the pipe [`catch_into_pipe`] made (-1: none yet).
static SIGNAL_PIPE_W: AtomicI32 = AtomicI32::new(-1);

extern "C" fn to_pipe(sig: libc::c_int) {
    let fd = SIGNAL_PIPE_W.load(Ordering::Relaxed);
    if fd < 0 {
        return;
    }
    let byte = sig as u8;
    // SAFETY: write and the errno location are async-signal-safe; errno is
    // saved and restored so the interrupted code does not see ours. A full
    // pipe (64 KiB of signals not yet read) drops the signal.
    unsafe {
        let errno = *libc::__errno_location();
        libc::write(fd, (&raw const byte).cast(), 1);
        *libc::__errno_location() = errno;
    }
}

/// Catches each of `signals` into a pipe and returns its read end (non-
/// blocking, close-on-exec): every signal delivered becomes one byte, its
/// native number, in the order of delivery. Handlers are installed with
/// SA_RESTART. Costs one `sigaction` per signal, which is what a short-lived
/// proxy wants (no thread, no task per signal). Once per process.
pub fn catch_into_pipe(signals: &[i32]) -> io::Result<OwnedFd> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills `fds` with two new descriptors, owned below.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both were just created and are owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    if SIGNAL_PIPE_W
        .compare_exchange(-1, w.as_raw_fd(), Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "signals are already caught into a pipe",
        ));
    }
    // The handler writes to it for the rest of the process's life.
    let _ = w.into_raw_fd();
    for &sig in signals {
        // SAFETY: a zeroed sigaction with our handler, an empty mask and
        // SA_RESTART is valid; `to_pipe` is async-signal-safe.
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = to_pipe as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(r)
}

/// Blocks every signal in the calling thread (so the process's signals go
/// to its other threads).
pub fn block_all_in_thread() {
    // SAFETY: sigset_t is plain data filled by sigfillset; the mask pointer
    // is valid and the old mask is not wanted.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
    }
}

/// Stops the calling process (SIGSTOP to the whole process); returns when
/// it is continued.
pub fn stop_self() {
    // SAFETY: SIGSTOP to ourselves; no memory effects.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGSTOP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siginfo_fields_round_trip() {
        let q = QueuedInfo {
            code: SI_QUEUE,
            pid: 1234,
            uid: 1000,
            value: 0xdead_beef_0000_0042,
        };
        let raw = q.raw(libc::SIGUSR1);
        assert_eq!(QueuedInfo::parse(&raw), q);
        // What glibc's sigqueue(3) builds, read back by the kernel: the
        // layout is the one the kernel uses (checked by delivering it).
        // SAFETY: blocking SIGUSR2 in this thread, then taking it back
        // with sigtimedwait.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR2);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            let me = libc::getpid();
            let tid = libc::gettid();
            let q = QueuedInfo {
                code: SI_QUEUE,
                pid: me,
                uid: libc::getuid(),
                value: 77,
            };
            queue_signal(me, Some(tid), libc::SIGUSR2, &q).unwrap();
            let mut got: libc::siginfo_t = std::mem::zeroed();
            let ts = libc::timespec {
                tv_sec: 5,
                tv_nsec: 0,
            };
            assert_eq!(libc::sigtimedwait(&set, &mut got, &ts), libc::SIGUSR2);
            assert_eq!(got.si_code, SI_QUEUE);
            assert_eq!(got.si_pid(), me);
            assert_eq!(got.si_value().sival_ptr as usize, 77);
        }
    }

    #[test]
    fn kill_as_checks_the_users_rights() {
        // SAFETY: trivial getter.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // Another user may not; root and signal 0 as root may.
        let e = kill_as(65534, pid, 0, None).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        let e = kill_as(65534, -pid, libc::SIGTERM, None).unwrap_err();
        assert!(matches!(e.raw_os_error(), Some(libc::EPERM | libc::ESRCH)));
        kill_as(0, pid, 0, None).unwrap();
        // The calling thread is still root.
        // SAFETY: trivial getters.
        assert_eq!(unsafe { (libc::getuid(), libc::geteuid()) }, (0, 0));
        kill_as(0, pid, libc::SIGKILL, None).unwrap();
        let st = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&st),
            Some(libc::SIGKILL)
        );
        let e = kill_as(65534, i32::MAX, 0, None).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
    }

    #[test]
    fn signals_arrive_in_the_pipe() {
        let r = catch_into_pipe(&[libc::SIGUSR2, libc::SIGWINCH]).unwrap();
        assert!(
            catch_into_pipe(&[libc::SIGUSR2]).is_err(),
            "once per process"
        );
        // SAFETY: signals to ourselves, caught by the handler above.
        unsafe {
            libc::raise(libc::SIGWINCH);
            libc::raise(libc::SIGUSR2);
        }
        let mut buf = [0u8; 8];
        // SAFETY: reading into a valid buffer from our own descriptor.
        let n = unsafe { libc::read(r.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        assert_eq!(n, 2);
        assert_eq!(&buf[..2], &[libc::SIGWINCH as u8, libc::SIGUSR2 as u8]);
    }

    #[test]
    fn wire_native_round_trip() {
        for w in 1..=64u8 {
            let ws = WireSignal(w);
            match to_native(ws) {
                Some(n) => {
                    assert_eq!(to_wire(n), Some(ws), "wire {w} native {n}");
                    assert_eq!(parse(&name(ws)), Some(ws), "name {}", name(ws));
                    assert_eq!(parse(&format!("SIG{}", name(ws))), Some(ws));
                }
                None => assert!(w == 32 || w == 33, "wire {w} unmapped"),
            }
        }
        assert_eq!(to_native(WireSignal(0)), None);
        assert_eq!(to_native(WireSignal(65)), None);
        assert_eq!(to_native(WireSignal(32)), None);
        assert_eq!(to_wire(0), None);
        assert_eq!(to_wire(200), None);
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        for n in (1..=31).chain(libc::SIGRTMIN()..=64) {
            assert_eq!(to_wire(n), Some(WireSignal(n as u8)), "native {n}");
        }
    }

    #[test]
    fn names_and_parsing() {
        assert_eq!(to_native(WireSignal(15)), Some(libc::SIGTERM));
        assert_eq!(to_native(WireSignal(34)), Some(libc::SIGRTMIN()));
        assert_eq!(to_native(WireSignal(64)), Some(libc::SIGRTMAX()));
        assert_eq!(name(WireSignal(15)), "TERM");
        assert_eq!(name(WireSignal(34)), "RTMIN");
        assert_eq!(name(WireSignal(37)), "RTMIN+3");
        assert_eq!(name(WireSignal(99)), "99");
        assert_eq!(parse("SIGUSR1"), Some(WireSignal(10)));
        assert_eq!(parse("term"), Some(WireSignal(15)));
        assert_eq!(parse(" TERM "), Some(WireSignal(15)));
        assert_eq!(parse("sigkill"), Some(WireSignal(9)));
        assert_eq!(parse("15"), to_wire(libc::SIGTERM));
        assert_eq!(parse("9"), Some(WireSignal(9)));
        assert_eq!(parse("RTMIN+2"), Some(WireSignal(36)));
        assert_eq!(parse("SIGRTMIN"), Some(WireSignal(34)));
        assert_eq!(parse("RTMAX"), Some(WireSignal(64)));
        assert_eq!(parse("RTMAX-1"), Some(WireSignal(63)));
        assert_eq!(parse("IOT"), Some(WireSignal(6)));
        assert_eq!(parse("RTMIN+31"), None);
        assert_eq!(parse("RTMIN-1"), None);
        assert_eq!(parse("RTMIN+"), None);
        assert_eq!(parse("RTMAX+1"), None);
        assert_eq!(parse("0"), None);
        assert_eq!(parse("-15"), None);
        assert_eq!(parse("FOO"), None);
        assert_eq!(parse(""), None);
        assert_eq!(parse("SIG"), None);
    }

    #[test]
    fn forwardable_set() {
        let f = forwardable();
        for s in [
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGWINCH,
            libc::SIGCONT,
            libc::SIGTSTP,
            libc::SIGRTMIN(),
            libc::SIGRTMAX(),
        ] {
            assert!(f.contains(&s), "{s} missing");
        }
        for s in [
            libc::SIGKILL,
            libc::SIGSTOP,
            libc::SIGCHLD,
            libc::SIGTTIN,
            libc::SIGTTOU,
            libc::SIGPIPE,
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGFPE,
            libc::SIGILL,
            libc::SIGTRAP,
            libc::SIGSYS,
        ] {
            assert!(!f.contains(&s), "{s} present");
        }
        let mut sorted = f.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), f.len());
        assert!(f.iter().all(|&s| to_wire(s).is_some()));
    }

    #[test]
    fn kill_checks() {
        kill(std::process::id() as i32, 0).unwrap();
        let e = kill(i32::MAX, 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
    }

    /// Forks a child that runs `f` and returns its raw wait status.
    fn in_child(f: fn()) -> i32 {
        // SAFETY: the child only runs `f`, which makes async-signal-safe
        // calls, and then _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            f();
            // SAFETY: _exit is always safe.
            unsafe { libc::_exit(99) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child with a valid status pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        status
    }

    #[test]
    fn die_by_term() {
        let st = in_child(|| {
            // A handler and a blocked mask must not save us.
            // SAFETY: ignoring and blocking a signal in the child.
            unsafe {
                libc::signal(libc::SIGTERM, libc::SIG_IGN);
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGTERM);
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            }
            die_by_signal(libc::SIGTERM)
        });
        assert!(libc::WIFSIGNALED(st), "status {st:#x}");
        assert_eq!(libc::WTERMSIG(st), libc::SIGTERM);
    }

    #[test]
    fn die_by_segv_without_core() {
        let st = in_child(|| die_by_signal(libc::SIGSEGV));
        assert!(libc::WIFSIGNALED(st), "status {st:#x}");
        assert_eq!(libc::WTERMSIG(st), libc::SIGSEGV);
        assert!(!libc::WCOREDUMP(st));
    }

    #[test]
    fn die_by_ignored_signal_exits() {
        let st = in_child(|| die_by_signal(libc::SIGCHLD));
        assert!(libc::WIFEXITED(st), "status {st:#x}");
        assert_eq!(libc::WEXITSTATUS(st), 128 + libc::SIGCHLD);
    }

    #[test]
    fn stop_and_continue() {
        // SAFETY: the child stops itself, then _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            stop_self();
            // SAFETY: _exit is always safe.
            unsafe { libc::_exit(7) };
        }
        let mut st = 0;
        // SAFETY: waiting for our own child with a valid status pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut st, libc::WUNTRACED) }, pid);
        assert!(libc::WIFSTOPPED(st), "status {st:#x}");
        assert_eq!(libc::WSTOPSIG(st), libc::SIGSTOP);
        kill(pid, libc::SIGCONT).unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { libc::waitpid(pid, &mut st, 0) }, pid);
        assert!(libc::WIFEXITED(st), "status {st:#x}");
        assert_eq!(libc::WEXITSTATUS(st), 7);
    }
}
