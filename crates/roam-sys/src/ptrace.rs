//! ptrace(2) and process_vm_readv(2), for stopping a process from outside
//! and reading its state: the first layer of checkpoint/restore (issue 6).
//!
//! A tracee belongs to the thread that seized it: every call here for a
//! tid must come from the thread that called [`seize`] on it (DESIGN.md's
//! first trap). Callers in async code give each traced process an OS
//! thread of its own.
//!
//! x86-64 only for now (the register layouts).

use std::io;

/// `NT_X86_XSTATE`: the XSAVE area (FP, SSE, AVX... state) of a thread.
const NT_X86_XSTATE: libc::c_int = 0x202;
/// Room for the XSAVE area: 4 KiB holds every feature of current x86 CPUs
/// but AMX (whose tile data needs 8 KiB more).
const XSTATE_MAX: usize = 16 * 1024;

fn check(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// PTRACE_SEIZE: traces `tid` without stopping it (no signal is sent).
pub fn seize(tid: i32) -> io::Result<()> {
    // SAFETY: PTRACE_SEIZE takes a tid and option flags; no pointers.
    check(unsafe { libc::ptrace(libc::PTRACE_SEIZE, tid, 0usize, 0usize) }).map(drop)
}

/// PTRACE_INTERRUPT: asks a seized `tid` to stop (a group-stop-like
/// PTRACE_EVENT_STOP, reported by [`wait_stop`]); a system call in progress
/// is interrupted (and restartable).
pub fn interrupt(tid: i32) -> io::Result<()> {
    // SAFETY: PTRACE_INTERRUPT takes a tid; no pointers.
    check(unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0usize, 0usize) }).map(drop)
}

/// PTRACE_DETACH: lets `tid` run on, untraced (it must be stopped).
pub fn detach(tid: i32) -> io::Result<()> {
    // SAFETY: PTRACE_DETACH takes a tid and a signal (0: none).
    check(unsafe { libc::ptrace(libc::PTRACE_DETACH, tid, 0usize, 0usize) }).map(drop)
}

/// What [`wait_stop`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Stopped for the tracer: the signal (SIGTRAP for a PTRACE_EVENT_STOP)
    /// and the event (`status >> 16`; PTRACE_EVENT_STOP = 128 for an
    /// interrupt).
    Stopped { signal: i32, event: i32 },
    /// The thread exited with this status.
    Exited(i32),
    /// The thread was killed by this signal.
    Killed(i32),
}

/// waitpid(tid, __WALL): the next change of a traced thread.
pub fn wait_stop(tid: i32) -> io::Result<Stop> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a live int the kernel writes.
        let rc = unsafe { libc::waitpid(tid, &mut status, libc::__WALL) };
        if rc >= 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(if libc::WIFSTOPPED(status) {
        Stop::Stopped {
            signal: libc::WSTOPSIG(status),
            event: (status >> 16) & 0xff,
        }
    } else if libc::WIFSIGNALED(status) {
        Stop::Killed(libc::WTERMSIG(status))
    } else {
        Stop::Exited(libc::WEXITSTATUS(status))
    })
}

/// PTRACE_GETREGSET with an iovec over `buf`: the bytes the kernel filled.
fn getregset(tid: i32, note: libc::c_int, buf: &mut [u8]) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: the iovec describes `buf`'s writable bytes; the kernel writes
    // at most iov_len bytes and updates iov_len.
    check(unsafe { libc::ptrace(libc::PTRACE_GETREGSET, tid, note as usize, &raw mut iov) })?;
    Ok(iov.iov_len)
}

/// The general-purpose registers of a stopped thread (fs/gs base
/// included), `NT_PRSTATUS`.
pub fn regs(tid: i32) -> io::Result<libc::user_regs_struct> {
    // SAFETY: user_regs_struct is plain integers; all-zero is valid.
    let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    // SAFETY: the slice covers exactly `regs`, which outlives it.
    let bytes = unsafe {
        std::slice::from_raw_parts_mut(
            (&raw mut regs).cast::<u8>(),
            std::mem::size_of::<libc::user_regs_struct>(),
        )
    };
    let n = getregset(tid, libc::NT_PRSTATUS, bytes)?;
    if n != std::mem::size_of::<libc::user_regs_struct>() {
        return Err(io::Error::other(format!(
            "NT_PRSTATUS of {tid}: {n} bytes, expected {}",
            std::mem::size_of::<libc::user_regs_struct>()
        )));
    }
    Ok(regs)
}

/// The XSAVE area of a stopped thread (`NT_X86_XSTATE`): x87, SSE, AVX and
/// the rest, with its XSTATE_BV header at offset 512.
pub fn xstate(tid: i32) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; XSTATE_MAX];
    let n = getregset(tid, NT_X86_XSTATE, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// A thread's rseq registration (all zero when it has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rseq {
    pub address: u64,
    pub len: u32,
    pub flags: u32,
    pub signature: u32,
}

/// PTRACE_GET_RSEQ_CONFIGURATION of a stopped thread.
pub fn rseq(tid: i32) -> io::Result<Rseq> {
    // SAFETY: ptrace_rseq_configuration is plain integers; all-zero is
    // valid.
    let mut c: libc::ptrace_rseq_configuration = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes at most `addr` (the size) bytes to `c`.
    check(unsafe {
        libc::ptrace(
            libc::PTRACE_GET_RSEQ_CONFIGURATION,
            tid,
            std::mem::size_of::<libc::ptrace_rseq_configuration>(),
            &raw mut c,
        )
    })?;
    Ok(Rseq {
        address: c.rseq_abi_pointer,
        len: c.rseq_abi_size,
        flags: c.flags,
        signature: c.signature,
    })
}

/// process_vm_readv(2): reads `buf.len()` bytes at `addr` of process `pid`
/// (no tracing needed, only the right to ptrace it). Returns the bytes
/// read, fewer at the end of a mapping.
pub fn read_memory(pid: i32, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` covers `buf`'s writable bytes; `remote` names memory
    // of the other process, which the kernel checks and never dereferences
    // here.
    let n = unsafe { libc::process_vm_readv(pid, &raw const local, 1, &raw const remote, 1, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// The resource limits (soft, hard) of process `pid`, RLIMIT_CPU to
/// RLIMIT_RTTIME in the kernel's order (`prlimit`).
pub fn rlimits(pid: i32) -> io::Result<Vec<(u64, u64)>> {
    (0..=libc::RLIMIT_RTTIME)
        .map(|r| {
            let mut old = libc::rlimit64 {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: prlimit64 reads no new limit (null) and writes `old`.
            let rc = unsafe { libc::prlimit64(pid, r as _, std::ptr::null(), &mut old) };
            if rc < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok((old.rlim_cur, old.rlim_max))
            }
        })
        .collect()
}

/// The threads of `pid` (`/proc/PID/task`), sorted.
pub fn threads(pid: i32) -> io::Result<Vec<i32>> {
    let mut tids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    Ok(tids)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the child keeps in memory for the parent to find.
    static MAGIC: [u8; 16] = *b"roam-ptrace-test";

    /// A child that spins until killed, in a fresh process (fork: same
    /// layout, so MAGIC is at the same address there).
    fn spinning_child() -> i32 {
        // SAFETY: the child only loops on a volatile read and never
        // returns into the test harness; it is killed by the parent.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
        if pid == 0 {
            loop {
                // SAFETY: MAGIC is a live static.
                let b = unsafe { std::ptr::read_volatile(MAGIC.as_ptr()) };
                std::hint::black_box(b);
            }
        }
        pid
    }

    fn kill(pid: i32) {
        // SAFETY: kill and waitpid on our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), libc::__WALL);
        }
    }

    #[test]
    fn a_seized_process_stops_shows_its_state_and_runs_on() {
        let pid = spinning_child();
        let result = std::panic::catch_unwind(|| {
            assert_eq!(threads(pid).unwrap(), vec![pid]);
            seize(pid).unwrap();
            interrupt(pid).unwrap();
            match wait_stop(pid).unwrap() {
                Stop::Stopped { signal, event } => {
                    assert_eq!(signal, libc::SIGTRAP);
                    assert_eq!(event, 128, "PTRACE_EVENT_STOP");
                }
                other => panic!("{other:?}"),
            }
            let r = regs(pid).unwrap();
            assert_ne!(r.rip, 0);
            assert_ne!(r.rsp, 0);
            assert_ne!(r.fs_base, 0, "glibc's thread pointer");
            let x = xstate(pid).unwrap();
            assert!(x.len() >= 576, "legacy area + header: {}", x.len());
            let r = rseq(pid).unwrap();
            assert!(r.address == 0 || r.len >= 32, "{r:?}");
            let mut buf = [0u8; 16];
            assert_eq!(
                read_memory(pid, MAGIC.as_ptr() as u64, &mut buf).unwrap(),
                16
            );
            assert_eq!(&buf, &MAGIC);
            // Unmapped memory is an error, not garbage.
            assert!(read_memory(pid, 8, &mut buf).is_err());
            let mine = rlimits(std::process::id() as i32).unwrap();
            assert_eq!(rlimits(pid).unwrap(), mine, "a fork keeps the limits");
            assert_eq!(mine.len(), libc::RLIMIT_RTTIME as usize + 1);
            detach(pid).unwrap();
            // Running again: stopping it once more works.
            seize(pid).unwrap();
            interrupt(pid).unwrap();
            assert!(matches!(wait_stop(pid).unwrap(), Stop::Stopped { .. }));
            detach(pid).unwrap();
        });
        kill(pid);
        if let Err(e) = result {
            std::panic::resume_unwind(e);
        }
    }

    #[test]
    fn tracing_a_process_that_is_gone_is_an_error() {
        let pid = spinning_child();
        kill(pid);
        assert!(seize(pid).is_err());
        assert!(regs(pid).is_err());
        assert!(threads(pid).is_err());
    }
}
