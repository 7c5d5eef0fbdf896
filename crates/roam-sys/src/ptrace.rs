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

/// PTRACE_SETREGSET with an iovec over `buf`.
fn setregset(tid: i32, note: libc::c_int, buf: &[u8]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: the iovec describes `buf`'s bytes, which the kernel only
    // reads.
    check(unsafe { libc::ptrace(libc::PTRACE_SETREGSET, tid, note as usize, &raw mut iov) })
        .map(drop)
}

/// Sets the general-purpose registers of a stopped thread.
pub fn set_regs(tid: i32, regs: &libc::user_regs_struct) -> io::Result<()> {
    // SAFETY: the slice covers exactly `regs`, which outlives it.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (regs as *const libc::user_regs_struct).cast::<u8>(),
            std::mem::size_of::<libc::user_regs_struct>(),
        )
    };
    setregset(tid, libc::NT_PRSTATUS, bytes)
}

/// Sets the XSAVE area of a stopped thread (as [`xstate`] read it).
pub fn set_xstate(tid: i32, xstate: &[u8]) -> io::Result<()> {
    setregset(tid, NT_X86_XSTATE, xstate)
}

/// PTRACE_SETOPTIONS (`PTRACE_O_*`).
pub fn set_options(tid: i32, options: i32) -> io::Result<()> {
    // SAFETY: PTRACE_SETOPTIONS takes a tid and flags; no pointers.
    check(unsafe { libc::ptrace(libc::PTRACE_SETOPTIONS, tid, 0usize, options as usize) }).map(drop)
}

/// PTRACE_CONT, delivering `signal` (0: none).
pub fn cont(tid: i32, signal: i32) -> io::Result<()> {
    // SAFETY: PTRACE_CONT takes a tid and a signal number; no pointers.
    check(unsafe { libc::ptrace(libc::PTRACE_CONT, tid, 0usize, signal as usize) }).map(drop)
}

/// PTRACE_SINGLESTEP: runs one instruction (a `syscall` one whole: the
/// thread stops with SIGTRAP once the call has returned).
pub fn single_step(tid: i32) -> io::Result<()> {
    // SAFETY: PTRACE_SINGLESTEP takes a tid and a signal (0: none).
    check(unsafe { libc::ptrace(libc::PTRACE_SINGLESTEP, tid, 0usize, 0usize) }).map(drop)
}

/// PTRACE_GETEVENTMSG: the new thread's tid at a PTRACE_EVENT_CLONE stop.
pub fn event_msg(tid: i32) -> io::Result<u64> {
    let mut msg: libc::c_ulong = 0;
    // SAFETY: the kernel writes one unsigned long to `msg`.
    check(unsafe { libc::ptrace(libc::PTRACE_GETEVENTMSG, tid, 0usize, &raw mut msg) })?;
    Ok(msg)
}

/// PTRACE_TRACEME, in a child about to stop itself for its parent.
pub fn traceme() -> io::Result<()> {
    // SAFETY: PTRACE_TRACEME takes no arguments.
    check(unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0usize, 0usize) }).map(drop)
}

/// Pending signals of a stopped thread with their siginfo (PTRACE_PEEKSIGINFO),
/// the thread's own queue or, with `shared`, the process's.
pub fn pending_siginfo(tid: i32, shared: bool) -> io::Result<Vec<[u8; 128]>> {
    #[repr(C)]
    struct PeekArgs {
        off: u64,
        flags: u32,
        nr: i32,
    }
    const PTRACE_PEEKSIGINFO: libc::c_uint = 0x4209;
    const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;
    let mut out = Vec::new();
    loop {
        let args = PeekArgs {
            off: out.len() as u64,
            flags: if shared { PTRACE_PEEKSIGINFO_SHARED } else { 0 },
            nr: 32,
        };
        let mut buf = [[0u8; 128]; 32];
        // SAFETY: `args` is read by the kernel; `buf` has room for `nr`
        // siginfos of 128 bytes each.
        let n = check(unsafe {
            libc::ptrace(PTRACE_PEEKSIGINFO, tid, &raw const args, buf.as_mut_ptr())
        })? as usize;
        out.extend_from_slice(&buf[..n.min(32)]);
        if n < 32 {
            return Ok(out);
        }
    }
}

/// process_vm_writev(2): writes `buf` at `addr` of process `pid` (the
/// memory must be writable there). Returns the bytes written.
pub fn write_memory(pid: i32, addr: u64, buf: &[u8]) -> io::Result<usize> {
    let local = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` covers `buf`'s bytes, only read; `remote` names
    // memory of the other process, which the kernel checks.
    let n = unsafe { libc::process_vm_writev(pid, &raw const local, 1, &raw const remote, 1, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
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

/// The most iovecs process_vm_readv takes on each side (UIO_MAXIOV).
const MAX_IOV: usize = 1024;

/// Appends to `out`, for each run `(addr, len)` of `runs`, its `head`
/// (`H` bytes, made by the caller) then `len` bytes of process `pid`'s
/// memory at `addr`: read straight into `out`'s spare capacity with one
/// process_vm_readv per [`MAX_IOV`] runs instead of one per run. All or
/// nothing: a short read (an unreadable page) is an error (EFAULT) and
/// leaves `out` as it was.
pub fn read_runs_append<const H: usize>(
    pid: i32,
    out: &mut Vec<u8>,
    runs: &[(u64, usize)],
    head: impl Fn(usize) -> [u8; H],
) -> io::Result<()> {
    let total: usize = runs.iter().map(|&(_, len)| H + len).sum();
    out.reserve(total);
    let spare = out.spare_capacity_mut();
    let mut local: Vec<libc::iovec> = Vec::with_capacity(runs.len().min(MAX_IOV));
    let mut remote: Vec<libc::iovec> = Vec::with_capacity(runs.len().min(MAX_IOV));
    let mut pos = 0usize;
    for (i, chunk) in runs.chunks(MAX_IOV).enumerate() {
        local.clear();
        remote.clear();
        let mut want = 0usize;
        for (j, &(addr, len)) in chunk.iter().enumerate() {
            for (k, b) in head(i * MAX_IOV + j).into_iter().enumerate() {
                spare[pos + k].write(b);
            }
            pos += H;
            local.push(libc::iovec {
                iov_base: spare[pos..].as_mut_ptr().cast(),
                iov_len: len,
            });
            remote.push(libc::iovec {
                iov_base: addr as *mut libc::c_void,
                iov_len: len,
            });
            pos += len;
            want += len;
        }
        // SAFETY: each local iovec covers `len` bytes of spare capacity
        // (reserved above for every head and run, in order, none
        // overlapping); the remote ones name memory of the other process,
        // which the kernel checks and never dereferences here. The counts
        // are at most UIO_MAXIOV.
        let n = unsafe {
            libc::process_vm_readv(
                pid,
                local.as_ptr(),
                local.len() as libc::c_ulong,
                remote.as_ptr(),
                remote.len() as libc::c_ulong,
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != want {
            return Err(io::Error::from_raw_os_error(libc::EFAULT));
        }
    }
    // SAFETY: every byte up to `total` was written: the heads above, the
    // runs by process_vm_readv (all of each chunk, checked).
    unsafe { out.set_len(out.len() + total) };
    Ok(())
}

/// Appends `len` bytes of process `pid`'s memory at `addr` to `out`, read
/// straight into its spare capacity (process_vm_readv: one copy, not
/// zeroed first). All or nothing: a short read (an unreadable page) is an
/// error and leaves `out` as it was.
pub fn read_memory_append(pid: i32, out: &mut Vec<u8>, len: usize, addr: u64) -> io::Result<()> {
    out.reserve(len);
    let spare = out.spare_capacity_mut();
    let local = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: `local` covers `len` bytes of spare capacity (reserved
    // above); `remote` names memory of the other process, which the
    // kernel checks and never dereferences here.
    let n = unsafe { libc::process_vm_readv(pid, &raw const local, 1, &raw const remote, 1, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != len {
        return Err(io::Error::from_raw_os_error(libc::EFAULT));
    }
    // SAFETY: process_vm_readv initialized all `len` bytes.
    unsafe { out.set_len(out.len() + len) };
    Ok(())
}

/// Whether descriptors `a` and `b` of process `pid` are one open file
/// (dup'ed: sharing offset and flags), by kcmp(KCMP_FILE).
pub fn same_open_file(pid: i32, a: i32, b: i32) -> io::Result<bool> {
    const KCMP_FILE: libc::c_long = 0;
    // SAFETY: kcmp takes pids, a type and two descriptor numbers; no
    // pointers.
    let rc = check(unsafe { libc::syscall(libc::SYS_kcmp, pid, pid, KCMP_FILE, a, b) })?;
    Ok(rc == 0)
}

/// Takes a copy of descriptor `fd` of process `pid` (pidfd_getfd): the
/// same open file, now also ours.
pub fn take_fd(pid: i32, fd: i32) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a descriptor.
    let pidfd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })? as i32;
    // SAFETY: `pidfd` is ours; pidfd_getfd returns a new descriptor.
    let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) };
    let e = io::Error::last_os_error();
    // SAFETY: closing the pidfd we opened.
    unsafe { libc::close(pidfd) };
    if got < 0 {
        return Err(e);
    }
    // SAFETY: `got` is a fresh descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(got as i32) })
}

/// The bytes waiting in pipe `fd` (a read end, or any end: the buffer is
/// the pipe's), copied without consuming them (tee).
pub fn peek_pipe(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let (r, w) = crate::spawn::pipe()?;
    let mut avail: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &raw mut avail) }.into())?;
    if avail <= 0 {
        return Ok(Vec::new());
    }
    // SAFETY: F_SETPIPE_SZ on our own pipe; the kernel rounds it up.
    check(unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, avail) }.into())?;
    // SAFETY: tee duplicates up to `avail` bytes between two pipes.
    let n = check(unsafe {
        libc::tee(
            fd.as_raw_fd(),
            w.as_raw_fd(),
            avail as usize,
            libc::SPLICE_F_NONBLOCK,
        )
    } as libc::c_long)? as usize;
    drop(w);
    let mut out = vec![0u8; n];
    let mut done = 0;
    while done < n {
        // SAFETY: reads into the unfilled part of `out`.
        let k = unsafe { libc::read(r.as_raw_fd(), out[done..].as_mut_ptr().cast(), n - done) };
        if k <= 0 {
            return Err(io::Error::last_os_error());
        }
        done += k as usize;
    }
    Ok(out)
}

/// The robust futex list of thread `tid` (get_robust_list): its head's
/// address and length.
pub fn robust_list(tid: i32) -> io::Result<(u64, u64)> {
    let mut head: u64 = 0;
    let mut len: libc::size_t = 0;
    // SAFETY: the kernel writes one pointer to `head` and one size to
    // `len`.
    check(unsafe { libc::syscall(libc::SYS_get_robust_list, tid, &raw mut head, &raw mut len) })?;
    Ok((head, len as u64))
}

/// XCR0: the XSAVE features this CPU and kernel enable (which an XSAVE
/// area's XSTATE_BV must stay within to be restored here).
pub fn xcr0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: xgetbv(0) reads XCR0; every x86-64 CPU Linux runs on with
    // XSAVE (the FP state's format here) has it; no memory is touched.
    unsafe {
        std::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi, options(nomem, nostack));
    }
    u64::from(hi) << 32 | u64::from(lo)
}

/// The resource limits (soft, hard) of process `pid`, RLIMIT_CPU to
/// RLIMIT_RTTIME in the kernel's order (`prlimit`).
/// Where prlimit is refused (some kernels refuse even root another
/// user's limits), /proc/PID/limits is read instead.
pub fn rlimits(pid: i32) -> io::Result<Vec<(u64, u64)>> {
    match rlimits_by_call(pid) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => crate::procfs::limits(pid),
        other => other,
    }
}

fn rlimits_by_call(pid: i32) -> io::Result<Vec<(u64, u64)>> {
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

/// Sets resource limit `resource` of process `pid` (prlimit; needs the
/// right to, CAP_SYS_RESOURCE to raise a hard limit).
pub fn set_rlimit(pid: i32, resource: u32, (soft, hard): (u64, u64)) -> io::Result<()> {
    let new = libc::rlimit64 {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: prlimit64 reads `new` and writes no old limit (null).
    let rc = unsafe { libc::prlimit64(pid, resource as _, &new, std::ptr::null_mut()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
