//! System calls issued by a stopped tracee on its tracer's behalf: the
//! injection of checkpoint/restore (DESIGN.md's traps: restartable calls,
//! the stub's own mappings).
//!
//! A [`Remote`] borrows a thread stopped under ptrace (by the calling
//! thread, which is its tracer), points it at a `syscall` instruction with
//! the call's number and arguments in its registers, lets it run that one
//! instruction and takes the result. Two ways to stop it again:
//! - [`Site::Trap`]: the instruction is followed by `int3` (a page of the
//!   tracer's making, as in a restore's stub): one stop per call, a
//!   SIGTRAP that is never delivered;
//! - [`Site::Syscall`]: any `0f 05` in the tracee (its vDSO has some),
//!   single-stepped (PTRACE_SINGLESTEP): one stop per call too, a SIGTRAP
//!   once the call has returned, nothing written into the tracee.
//!
//! x86-64 only (the system-call convention).

use std::io::{self, Read};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use crate::ptrace::{self, Stop};

/// -ERESTARTSYS ... -ERESTART_RESTARTBLOCK: a call interrupted by a stop,
/// which the kernel restarts when the thread resumes.
const ERESTARTSYS: i64 = 512;
const ERESTARTNOINTR: i64 = 513;
const ERESTARTNOHAND: i64 = 514;
const ERESTART_RESTARTBLOCK: i64 = 516;

/// Where the tracee runs the injected `syscall`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// `syscall; int3` at this address.
    Trap(u64),
    /// A `0f 05` at this address, single-stepped.
    Syscall(u64),
}

/// How a thread interrupted in a system call carries on (see
/// [`interrupted`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupted {
    /// Not in a restartable call.
    No,
    /// Restarted by issuing the same call again.
    Again,
    /// Restarted through the kernel's restart block
    /// (-ERESTART_RESTARTBLOCK: nanosleep, clock_nanosleep, poll...).
    RestartBlock,
}

/// Whether the registers of a stopped thread show a system call that the
/// kernel would restart on resuming.
pub fn interrupted(r: &libc::user_regs_struct) -> Interrupted {
    if (r.orig_rax as i64) < 0 {
        return Interrupted::No;
    }
    match -(r.rax as i64) {
        ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => Interrupted::Again,
        ERESTART_RESTARTBLOCK => Interrupted::RestartBlock,
        _ => Interrupted::No,
    }
}

/// The registers with the restart the kernel would make already made:
/// the call issued again (or `restart_syscall` for a restart block) from
/// its `syscall` instruction, and no call left pending (`orig_rax` = -1),
/// so the registers can be set at any stop.
pub fn restarted(r: &libc::user_regs_struct) -> libc::user_regs_struct {
    let mut out = *r;
    match interrupted(r) {
        Interrupted::No => {}
        Interrupted::Again => {
            out.rax = r.orig_rax;
            out.rip -= 2;
        }
        Interrupted::RestartBlock => {
            out.rax = libc::SYS_restart_syscall as u64;
            out.rip -= 2;
        }
    }
    out.orig_rax = u64::MAX;
    out
}

/// A stopped thread that runs system calls for its tracer.
pub struct Remote {
    tid: i32,
    saved: libc::user_regs_struct,
    site: Site,
    /// A call ran: the thread's registers are no longer its own.
    moved: bool,
    /// Stepped over a `syscall` of the process's own (Site::Syscall): the
    /// restart of a call it was interrupted in is made explicitly, in the
    /// registers it gets back ([`restarted`]), rather than left to the
    /// kernel's signal stop.
    explicit_restart: bool,
}

impl Remote {
    /// Takes `tid` (stopped, traced by the calling thread), keeping its
    /// registers to give back in [`Remote::finish`].
    pub fn new(tid: i32, site: Site) -> io::Result<Remote> {
        Ok(Remote {
            tid,
            saved: ptrace::regs(tid)?,
            site,
            moved: false,
            explicit_restart: false,
        })
    }

    pub fn tid(&self) -> i32 {
        self.tid
    }

    /// The thread's registers as they were when taken.
    pub fn saved(&self) -> &libc::user_regs_struct {
        &self.saved
    }

    /// Where calls run.
    pub fn site(&self) -> Site {
        self.site
    }

    /// Runs later calls at another site.
    pub fn set_site(&mut self, site: Site) {
        self.site = site;
    }

    /// Runs system call `nr` with up to six arguments; the result, or the
    /// call's errno as an error.
    pub fn call(&mut self, nr: libc::c_long, args: &[u64]) -> io::Result<u64> {
        let rax = self.issue(nr, args)?;
        match failed(rax) {
            Some(e) => Err(e),
            None => Ok(rax),
        }
    }

    /// Issues the call and returns the raw `rax`.
    fn issue(&mut self, nr: libc::c_long, args: &[u64]) -> io::Result<u64> {
        assert!(args.len() <= 6, "six arguments at most");
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        let mut r = self.saved;
        r.rax = nr as u64;
        r.orig_rax = u64::MAX;
        (r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9) = (a[0], a[1], a[2], a[3], a[4], a[5]);
        self.moved = true;
        match self.site {
            Site::Trap(at) => {
                r.rip = at;
                ptrace::set_regs(self.tid, &r)?;
                ptrace::cont(self.tid, 0)?;
                self.wait_for(|signal| signal == libc::SIGTRAP)?;
                self.explicit_restart = false;
            }
            Site::Syscall(at) => {
                r.rip = at;
                ptrace::set_regs(self.tid, &r)?;
                ptrace::single_step(self.tid)?;
                self.wait_for(|signal| signal == libc::SIGTRAP)?;
                self.explicit_restart = true;
            }
        }
        Ok(ptrace::regs(self.tid)?.rax)
    }

    /// Issues `calls` one after the other in a single stop, through code
    /// written at `code_at` (in a writable, executable page of the
    /// thread's) that loads each call's registers, makes it, and stores
    /// its `rax` at `results_at` + 8 × its index, then traps: one ptrace
    /// round trip for them all instead of one each. Every call is made
    /// whatever the ones before returned; the raw `rax` of each is
    /// returned. Needs a [`Site::Trap`] site (the page is the site's).
    pub fn batch(
        &mut self,
        code_at: u64,
        results_at: u64,
        calls: &[(libc::c_long, [u64; 6])],
    ) -> io::Result<Vec<u64>> {
        if !matches!(self.site, Site::Trap(_)) {
            return Err(io::Error::other("batched calls need a trap site"));
        }
        let code = batch_code(results_at, calls);
        ptrace::write_memory(self.tid, code_at, &code)?;
        let mut r = self.saved;
        r.rip = code_at;
        r.orig_rax = u64::MAX;
        self.moved = true;
        ptrace::set_regs(self.tid, &r)?;
        ptrace::cont(self.tid, 0)?;
        self.wait_for(|signal| signal == libc::SIGTRAP)?;
        self.explicit_restart = false;
        let mut raw = vec![0u8; 8 * calls.len()];
        ptrace::read_memory(self.tid, results_at, &mut raw)?;
        Ok(raw
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect())
    }

    /// Waits for the stop `want` accepts; other signals are dropped (the
    /// thread is not running its own code meanwhile).
    fn wait_for(&self, want: impl Fn(i32) -> bool) -> io::Result<()> {
        loop {
            match ptrace::wait_stop(self.tid)? {
                Stop::Stopped { signal, event: 0 } if want(signal) => return Ok(()),
                Stop::Stopped { .. } => {
                    if matches!(self.site, Site::Syscall(_)) {
                        ptrace::single_step(self.tid)?;
                    } else {
                        ptrace::cont(self.tid, 0)?;
                    }
                }
                Stop::Exited(code) => {
                    return Err(io::Error::other(format!(
                        "thread {} exited ({code}) during an injected call",
                        self.tid
                    )))
                }
                Stop::Killed(sig) => {
                    return Err(io::Error::other(format!(
                        "thread {} was killed by signal {sig} during an injected call",
                        self.tid
                    )))
                }
            }
        }
    }

    /// Issues a last call (typically the munmap of the page holding the
    /// site) and, stopped after it, gives the thread `regs`: it resumes
    /// there, the site no longer needed. `regs` must leave no call to
    /// restart (`orig_rax` -1, as [`restarted`] makes them): the stop is a
    /// signal stop, after which the kernel would restart one.
    pub fn last_call(
        &mut self,
        nr: libc::c_long,
        args: &[u64],
        regs: &libc::user_regs_struct,
    ) -> io::Result<u64> {
        let at = match self.site {
            Site::Trap(at) | Site::Syscall(at) => at,
        };
        self.site = Site::Syscall(at);
        let rax = self.call(nr, args);
        ptrace::set_regs(self.tid, regs)?;
        self.moved = false;
        rax
    }

    /// Gives the thread its own registers back, ready to resume or detach;
    /// a call it was interrupted in is restarted as the kernel would.
    pub fn finish(self) -> io::Result<()> {
        if !self.moved {
            return Ok(());
        }
        if self.explicit_restart {
            // Made here, in registers that hold at any stop.
            ptrace::set_regs(self.tid, &restarted(&self.saved))
        } else {
            // A signal stop: the kernel restarts the call on resuming.
            ptrace::set_regs(self.tid, &self.saved)
        }
    }
}

/// The error a raw system-call result (`rax`) stands for, if it is one
/// (-4095..-1).
pub fn failed(rax: u64) -> Option<io::Error> {
    let v = rax as i64;
    (-4095..0)
        .contains(&v)
        .then(|| io::Error::from_raw_os_error(-v as i32))
}

/// The first error among a batch's raw results ([`Remote::batch`]).
pub fn first_failed(results: &[u64]) -> Option<io::Error> {
    results.iter().find_map(|&rax| failed(rax))
}

/// Bytes of x86-64 code per call of a batch (see [`batch_code`]).
pub const BATCH_CALL_BYTES: usize = 7 * 10 + 2 + 10;

/// The code of a batch: per call `mov` of the number and six arguments
/// into rax, rdi, rsi, rdx, r10, r8, r9 (10 bytes each), `syscall`, and
/// `mov [results_at + 8i], rax`; `int3` after the last.
fn batch_code(results_at: u64, calls: &[(libc::c_long, [u64; 6])]) -> Vec<u8> {
    // REX prefix and opcode of `mov r64, imm64` for each register.
    const REGS: [[u8; 2]; 7] = [
        [0x48, 0xB8], // rax
        [0x48, 0xBF], // rdi
        [0x48, 0xBE], // rsi
        [0x48, 0xBA], // rdx
        [0x49, 0xBA], // r10
        [0x49, 0xB8], // r8
        [0x49, 0xB9], // r9
    ];
    let mut code = Vec::with_capacity(calls.len() * BATCH_CALL_BYTES + 1);
    for (i, (nr, args)) in calls.iter().enumerate() {
        let values = [
            *nr as u64, args[0], args[1], args[2], args[3], args[4], args[5],
        ];
        for (reg, v) in REGS.iter().zip(values) {
            code.extend_from_slice(reg);
            code.extend_from_slice(&v.to_le_bytes());
        }
        code.extend_from_slice(&[0x0f, 0x05]);
        // mov moffs64, rax
        code.extend_from_slice(&[0x48, 0xA3]);
        code.extend_from_slice(&(results_at + 8 * i as u64).to_le_bytes());
    }
    code.push(0xCC);
    code
}

/// Starts a stub for a restore: a child process with `stdio` as its
/// descriptors 0, 1 and 2 and no other, traced by the calling thread
/// (PTRACE_O_EXITKILL: it dies with its tracer) and stopped. With `pid`,
/// the child gets that pid if it is free (clone3 with set_tid: needs
/// CAP_SYS_ADMIN), otherwise any. With `new_session`, it leads a new
/// session. With `ctty` (which of `stdio` is a terminal's slave), it is
/// that terminal's foreground job, set up as a spawned remote process on a
/// terminal is (see [`crate::spawn::SpawnRequest::controlling_tty`]): a
/// keeper leads the session, with the terminal as its controlling
/// terminal, and the stub, the keeper's sibling, leads the foreground
/// process group, which the keeper's anchor joins so that Ctrl-Z stops it.
/// With `root`, it lives in a mount namespace of its own whose
/// `/` is `root`, as a spawned remote process does (see
/// [`crate::spawn::SpawnRequest::root`]). Returns the stub's pid, stopped
/// in a signal stop right after a `syscall` instruction (its `rip - 2`).
pub fn spawn_stub(
    stdio: [RawFd; 3],
    pid: Option<i32>,
    new_session: bool,
    ctty: Option<usize>,
    root: Option<&[u8]>,
) -> io::Result<i32> {
    let root = root
        .map(crate::spawn::prepare_root)
        .transpose()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // The child dup2s onto 0..=2: sources moved out of the way first.
    let mut moved = [0; 3];
    for (m, &fd) in moved.iter_mut().zip(&stdio) {
        // SAFETY: F_DUPFD_CLOEXEC duplicates a descriptor the caller owns.
        *m = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
        if *m < 0 {
            let e = io::Error::last_os_error();
            close_all(&moved);
            return Err(e);
        }
    }
    if let Some(tty) = ctty {
        let stub = terminal_stub(moved, tty, pid, root.as_ref());
        close_all(&moved);
        return stub;
    }
    // struct clone_args up to set_tid_size (CLONE_ARGS_SIZE_VER1): flags,
    // pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls,
    // set_tid, set_tid_size.
    let wanted = [pid.unwrap_or(0) as libc::pid_t];
    let mut args = [0u64; 10];
    args[4] = libc::SIGCHLD as u64;
    let mut child = -1;
    if pid.is_some() {
        args[8] = wanted.as_ptr() as u64;
        args[9] = 1;
        // SAFETY: clone3 without CLONE_VM is a fork; it reads `args` (and
        // the one-entry `wanted` it points to). The child runs only
        // `stub_child`, which makes raw system calls and never returns.
        child = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                args.as_mut_ptr(),
                std::mem::size_of_val(&args),
            )
        } as libc::pid_t;
    }
    if child < 0 {
        args[8] = 0;
        args[9] = 0;
        // SAFETY: as above, without a pid asked for.
        child = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                args.as_mut_ptr(),
                std::mem::size_of_val(&args),
            )
        } as libc::pid_t;
    }
    if child == 0 {
        // SAFETY: in the new child, which only makes raw calls and never
        // returns.
        unsafe { stub_child(moved, new_session, root.as_ref()) }
    }
    let e = io::Error::last_os_error();
    close_all(&moved);
    if child < 0 {
        return Err(e);
    }
    stopped_stub(child, root.is_some())
}

/// Waits for a new stub's stop and sets its ptrace options.
fn stopped_stub(child: i32, rooted: bool) -> io::Result<i32> {
    match ptrace::wait_stop(child)? {
        Stop::Stopped {
            signal: libc::SIGSTOP,
            ..
        } => {}
        Stop::Exited(STUB_NO_ROOT) if rooted => {
            return Err(io::Error::other(format!(
                "the restore stub {child} could not enter its root"
            )))
        }
        other => {
            return Err(io::Error::other(format!(
                "the restore stub {child} did not stop as expected: {other:?}"
            )))
        }
    }
    let opts = libc::PTRACE_O_EXITKILL | libc::PTRACE_O_TRACECLONE;
    ptrace::set_options(child, opts)?;
    Ok(child)
}

/// [`spawn_stub`] with a controlling terminal: stdio already moved out of
/// the way (`moved`); the caller closes them.
fn terminal_stub(
    moved: [RawFd; 3],
    tty: usize,
    pid: Option<i32>,
    root: Option<&crate::spawn::Root>,
) -> io::Result<i32> {
    if tty > 2 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the controlling terminal must be one of stdio",
        ));
    }
    // The keeper's report (the stub's pid), and the pipes of
    // `spawn::keeper`: all above stdio's moved copies' targets, so the
    // keeper's dup2s onto 3..=7 clobber none of them.
    let mut fds = [-1 as RawFd; 6];
    for pair in fds.chunks_mut(2) {
        let mut p = [0 as RawFd; 2];
        // SAFETY: pipe2 writes two descriptors into `p`; F_DUPFD_CLOEXEC
        // duplicates them above 10 and the originals are closed.
        unsafe {
            if libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) < 0 {
                let e = io::Error::last_os_error();
                close_all(&fds);
                return Err(e);
            }
            for (slot, fd) in pair.iter_mut().zip(p) {
                *slot = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
                libc::close(fd);
            }
        }
        if pair.iter().any(|&fd| fd < 0) {
            let e = io::Error::last_os_error();
            close_all(&fds);
            return Err(e);
        }
    }
    let [report_r, report_w, led_r, led_w, joined_r, joined_w] = fds;
    let want = pid.unwrap_or(0) as libc::pid_t;
    // SAFETY: a fork (clone3 without CLONE_VM); the child runs only
    // `terminal_keeper`, which makes raw system calls and never returns.
    let keeper = unsafe { crate::spawn::clone_process(false, 0) };
    if keeper == 0 {
        // SAFETY: in the new child, as above.
        unsafe {
            terminal_keeper(
                moved,
                tty as RawFd,
                want,
                [report_w, led_r, led_w, joined_r, joined_w],
                root,
            )
        }
    }
    let e = io::Error::last_os_error();
    close_all(&fds[1..]);
    // SAFETY: wraps the read end we own.
    let report = unsafe { OwnedFd::from_raw_fd(report_r) };
    if keeper < 0 {
        return Err(e);
    }
    let mut msg = [0u8; 8];
    let got = std::fs::File::from(report).read(&mut msg)?;
    let stub = (got == msg.len())
        .then(|| crate::spawn::reported_pid(msg))
        .flatten();
    let Some(stub) = stub else {
        return Err(io::Error::other(format!(
            "the restore stub's terminal keeper {keeper} failed ({})",
            ptrace::wait_stop(keeper)
                .map(|s| format!("{s:?}"))
                .unwrap_or_else(|e| e.to_string())
        )));
    };
    stopped_stub(stub, root.is_some())
}

/// The keeper's exit code when the terminal or the job cannot be set up.
const STUB_NO_TTY: i32 = 125;

/// The keeper of [`terminal_stub`]: stdio and the five pipe ends in place
/// (0..=2, then 3..=7), nothing else open, every signal blocked; leads a
/// new session with `tty` as its controlling terminal; starts the stub as
/// its sibling (with pid `want` if it can), then keeps the session
/// ([`crate::spawn::keeper`]). The stub makes its group the foreground
/// job, closes the rest, and stops traced.
///
/// # Safety
/// Only in the child of a fork of a multi-threaded process: raw system
/// calls only (async-signal-safe), never returns.
unsafe fn terminal_keeper(
    stdio: [RawFd; 3],
    tty: RawFd,
    want: libc::pid_t,
    pipes: [RawFd; 5],
    root: Option<&crate::spawn::Root>,
) -> ! {
    // SAFETY: system calls on this (child) process's own descriptors and
    // state.
    unsafe {
        enter_with_stdio(stdio, root);
        for (i, &fd) in pipes.iter().enumerate() {
            libc::dup2(fd, 3 + i as RawFd);
        }
        libc::syscall(libc::SYS_close_range, 8u32, u32::MAX, 0u32);
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
        if libc::setsid() < 0 || libc::ioctl(tty, libc::TIOCSCTTY, 0) < 0 {
            libc::_exit(STUB_NO_TTY);
        }
        let mut stub = crate::spawn::clone_process(true, want);
        if stub < 0 && want > 0 {
            stub = crate::spawn::clone_process(true, 0);
        }
        if stub < 0 {
            libc::_exit(STUB_NO_TTY);
        }
        if stub > 0 {
            crate::spawn::keeper(3, [4, 5, 6, 7], stub);
        }
        libc::close(3);
        if crate::spawn::join_foreground(tty, [4, 5, 6, 7]).is_err() {
            libc::_exit(STUB_NO_TTY);
        }
        stop_traced()
    }
}

/// A stub's first steps: into `root` (or exit with [`STUB_NO_ROOT`]), then
/// `stdio` onto 0, 1 and 2.
///
/// # Safety
/// As [`stub_child`].
unsafe fn enter_with_stdio(stdio: [RawFd; 3], root: Option<&crate::spawn::Root>) {
    // SAFETY: system calls on this (child) process's own descriptors;
    // `enter_root` makes only system calls on prepared strings.
    unsafe {
        if let Some((dir, binds)) = root {
            if crate::spawn::enter_root(dir, binds).is_err() {
                libc::_exit(STUB_NO_ROOT);
            }
        }
        for (i, &fd) in stdio.iter().enumerate() {
            libc::dup2(fd, i as RawFd);
        }
    }
}

/// A stub's last step: traced by its parent, stopped (or exit 127).
///
/// # Safety
/// As [`stub_child`].
unsafe fn stop_traced() -> ! {
    // SAFETY: raw system calls on this process itself.
    unsafe {
        if libc::ptrace(libc::PTRACE_TRACEME, 0, 0usize, 0usize) == 0 {
            libc::syscall(
                libc::SYS_kill,
                libc::syscall(libc::SYS_getpid),
                libc::SIGSTOP,
            );
        }
        libc::_exit(127)
    }
}

fn close_all(fds: &[RawFd]) {
    for &fd in fds.iter().filter(|&&fd| fd >= 0) {
        // SAFETY: closes a descriptor this module duplicated.
        unsafe { libc::close(fd) };
    }
}

/// The stub's exit code when it cannot enter its root.
const STUB_NO_ROOT: i32 = 126;

/// The stub's side: stdio in place, nothing else open, traced, stopped.
///
/// # Safety
/// Only in the child of a fork of a multi-threaded process: raw system
/// calls only (async-signal-safe), never returns.
unsafe fn stub_child(stdio: [RawFd; 3], new_session: bool, root: Option<&crate::spawn::Root>) -> ! {
    // SAFETY: system calls on this (child) process's own descriptors and
    // state.
    unsafe {
        enter_with_stdio(stdio, root);
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        if new_session {
            libc::setsid();
        }
        stop_traced()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_loads_calls_a_syscall_and_stores_each_then_traps() {
        let code = batch_code(0x1000, &[(39, [1, 2, 3, 4, 5, 6]), (60, [0; 6])]);
        assert_eq!(code.len(), 2 * BATCH_CALL_BYTES + 1);
        assert_eq!(&code[..10], &[0x48, 0xB8, 39, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&code[10..12], &[0x48, 0xBF]);
        assert_eq!(code[12], 1);
        assert_eq!(&code[70..72], &[0x0f, 0x05]);
        assert_eq!(&code[72..74], &[0x48, 0xA3]);
        assert_eq!(&code[74..82], &0x1000u64.to_le_bytes());
        assert_eq!(&code[82 + 74..82 + 82], &0x1008u64.to_le_bytes());
        assert_eq!(code.last(), Some(&0xCC));
    }

    fn regs_with(rax: i64, orig: i64) -> libc::user_regs_struct {
        // SAFETY: plain integers; all-zero is valid.
        let mut r: libc::user_regs_struct = unsafe { std::mem::zeroed() };
        r.rax = rax as u64;
        r.orig_rax = orig as u64;
        r.rip = 0x1000;
        r
    }

    #[test]
    fn raw_results_from_minus_4095_to_minus_1_are_errors() {
        assert_eq!(failed((-2i64) as u64).unwrap().raw_os_error(), Some(2));
        assert!(failed((-4095i64) as u64).is_some());
        assert!(
            failed((-4096i64) as u64).is_none(),
            "an address, not an error"
        );
        assert!(failed(0).is_none() && failed(0x7fff_0000).is_none());
        let e = first_failed(&[3, (-9i64) as u64, (-1i64) as u64]).unwrap();
        assert_eq!(e.raw_os_error(), Some(9));
        assert!(first_failed(&[0, 1]).is_none());
    }

    #[test]
    fn interrupted_calls_are_restarted_as_the_kernel_would() {
        let r = restarted(&regs_with(-512, 0));
        assert_eq!((r.rax, r.rip, r.orig_rax), (0, 0xffe, u64::MAX));
        let r = restarted(&regs_with(-514, 7));
        assert_eq!((r.rax, r.rip), (7, 0xffe));
        let r = restarted(&regs_with(-516, 35));
        assert_eq!((r.rax, r.rip), (libc::SYS_restart_syscall as u64, 0xffe));
        // A finished call, or no call at all, is left alone.
        let r = restarted(&regs_with(-4, 0));
        assert_eq!((r.rax as i64, r.rip), (-4, 0x1000));
        let r = restarted(&regs_with(-512, -1));
        assert_eq!((r.rax as i64, r.rip), (-512, 0x1000));
        assert_eq!(interrupted(&regs_with(-515, 1)), Interrupted::No);
    }
}
