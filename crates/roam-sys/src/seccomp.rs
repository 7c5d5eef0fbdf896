//! Seccomp user notification: a filter that hands chosen system calls of a
//! process to a supervisor, which answers them in its place.
//!
//! - [`notify_filter`] builds the BPF program: for the machine's own
//!   system-call convention (the `arch` field of `seccomp_data`), the listed
//!   calls return `SECCOMP_RET_USER_NOTIF`; every other call, and every call
//!   made through another convention (32-bit x86 programs on x86-64, for
//!   example), is allowed.
//! - [`install_notify_filter`] installs it in the calling process with
//!   `SECCOMP_FILTER_FLAG_NEW_LISTENER` and returns the listener.
//!   [`crate::spawn::spawn_supervised`] does the same in a new process
//!   just before its `execve`.
//! - [`Listener`] receives notifications and answers them (a value, an
//!   error, or "continue": let the kernel run the call as it is).
//! - [`read_memory`], [`MemFile`]: the target's memory, for arguments
//!   passed by pointer and results written through one.
//!
//! Installing a filter needs no_new_privs or CAP_SYS_ADMIN. roam sets
//! no_new_privs (PR_SET_NO_NEW_PRIVS) in the process before installing,
//! always: a supervised process and its descendants then never gain
//! privileges through execve (set-user-ID and set-group-ID bits and file
//! capabilities are ignored, so `sudo`, `su` or a `ping` that relies on
//! file capabilities do not work in them).
//!
//! The filter uses SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV: once the
//! supervisor has received a notification, only a fatal signal interrupts
//! the waiting call. A supervisor that sends the caller a signal before
//! answering (a process signalling itself) so gets the signal delivered as
//! the call returns, not the call restarted by it.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;

/// AUDIT_ARCH_* of the machine's own system-call convention, as the
/// kernel puts it in `seccomp_data.arch`.
#[cfg(target_arch = "x86_64")]
pub const NATIVE_AUDIT_ARCH: Option<u32> = Some(0xC000_003E);
#[cfg(target_arch = "aarch64")]
pub const NATIVE_AUDIT_ARCH: Option<u32> = Some(0xC000_00B7);
#[cfg(target_arch = "s390x")]
pub const NATIVE_AUDIT_ARCH: Option<u32> = Some(0x8000_0016);
/// Other architectures: not supported yet (their AUDIT_ARCH values are
/// not wired in), so [`notify_filter`] and [`allow_filter`] refuse.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "s390x")))]
pub const NATIVE_AUDIT_ARCH: Option<u32> = None;

/// SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (linux/seccomp.h, since 6.6): the
/// flag of SECCOMP_IOCTL_NOTIF_SET_FLAGS that makes the kernel wake the
/// supervisor and the caller on the current CPU.
const USER_NOTIF_FD_SYNC_WAKE_UP: u64 = 1;

/// At most this many calls per filter: every jump of the program must
/// stay within the 255 instructions a BPF conditional jump can skip.
pub const MAX_SYSCALLS: usize = 200;

/// Offsets in `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
/// The low 32 bits of the second argument (`args[1]`, at 24).
#[cfg(target_endian = "little")]
const OFF_ARG1_LOW: u32 = 24;
#[cfg(target_endian = "big")]
const OFF_ARG1_LOW: u32 = 28;

const _: () = assert!(std::mem::size_of::<libc::seccomp_data>() == 64);
const _: () = assert!(std::mem::size_of::<libc::seccomp_notif>() == 80);
const _: () = assert!(std::mem::size_of::<libc::seccomp_notif_resp>() == 24);
const _: () = assert!(std::mem::size_of::<libc::sock_filter>() == 8);
const _: () = assert!(std::mem::size_of::<libc::utsname>() >= UTSNAME_LEN);

/// Why a filter cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("system-call supervision is not supported on this architecture")]
    UnsupportedArch,
    #[error("cannot supervise {0} system calls (at most {MAX_SYSCALLS})")]
    TooMany(usize),
    #[error("invalid system-call number {0}")]
    BadNumber(i64),
}

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// The BPF program: `syscalls` (numbers of the machine's own convention,
/// `libc::SYS_*`) notify the listener, everything else is allowed.
pub fn notify_filter(syscalls: &[i64]) -> Result<Vec<libc::sock_filter>, FilterError> {
    list_filter(
        syscalls,
        libc::SECCOMP_RET_USER_NOTIF,
        libc::SECCOMP_RET_ALLOW,
    )
}

/// The BPF program of a confinement: `allowed` calls (numbers of the
/// machine's own convention) pass; every other call, and every call of
/// another convention, fails with `errno`.
pub fn allow_filter(allowed: &[i64], errno: u16) -> Result<Vec<libc::sock_filter>, FilterError> {
    list_filter(
        allowed,
        libc::SECCOMP_RET_ALLOW,
        libc::SECCOMP_RET_ERRNO | u32::from(errno),
    )
}

/// [`allow_filter`], and ioctl(2) with the requests `ioctls` only (their
/// low 32 bits).
pub fn allow_filter_with_ioctls(
    allowed: &[i64],
    ioctls: &[u32],
    errno: u16,
) -> Result<Vec<libc::sock_filter>, FilterError> {
    if ioctls.len() > MAX_SYSCALLS {
        return Err(FilterError::TooMany(ioctls.len()));
    }
    let allow = libc::SECCOMP_RET_ALLOW;
    let deny = libc::SECCOMP_RET_ERRNO | u32::from(errno);
    let mut prog = list_filter(allowed, allow, deny)?;
    if ioctls.is_empty() {
        return Ok(prog);
    }
    // After the load of the call's number (the third instruction): ioctl
    // jumps to a block after the program's two returns, which checks its
    // request.
    let jeq = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
    let tail = (prog.len() - 3) as u8;
    prog.insert(3, jump(jeq, libc::SYS_ioctl as u32, tail, 0));
    // The arch test skips one instruction more.
    prog[1].jf += 1;
    let ld = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET | libc::BPF_K;
    prog.push(stmt(ld, OFF_ARG1_LOW));
    let n = ioctls.len() as u8;
    for (i, &req) in ioctls.iter().enumerate() {
        prog.push(jump(jeq, req, n - i as u8, 0));
    }
    prog.push(stmt(ret, deny));
    prog.push(stmt(ret, allow));
    Ok(prog)
}

/// A program that answers `listed` for the calls in `list` and
/// `otherwise` for the rest, calls of another convention included.
fn list_filter(
    list: &[i64],
    listed: u32,
    otherwise: u32,
) -> Result<Vec<libc::sock_filter>, FilterError> {
    let arch = NATIVE_AUDIT_ARCH.ok_or(FilterError::UnsupportedArch)?;
    if list.len() > MAX_SYSCALLS {
        return Err(FilterError::TooMany(list.len()));
    }
    let mut nrs = Vec::with_capacity(list.len());
    for &nr in list {
        let n = u32::try_from(nr).map_err(|_| FilterError::BadNumber(nr))?;
        if !nrs.contains(&n) {
            nrs.push(n);
        }
    }
    let n = nrs.len() as u8;
    let ld = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let jeq = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
    let ret = libc::BPF_RET | libc::BPF_K;
    let mut prog = Vec::with_capacity(nrs.len() + 5);
    prog.push(stmt(ld, OFF_ARCH));
    // Another convention: to `otherwise`, past the load and the n tests.
    prog.push(jump(jeq, arch, 0, n + 1));
    prog.push(stmt(ld, OFF_NR));
    for (i, &nr) in nrs.iter().enumerate() {
        // Match: to `listed`, past the remaining tests and `otherwise`.
        prog.push(jump(jeq, nr, n - i as u8, 0));
    }
    prog.push(stmt(ret, otherwise));
    prog.push(stmt(ret, listed));
    Ok(prog)
}

/// Confines every thread of the calling process with `prog` (from
/// [`allow_filter`]), after setting no_new_privs, for the rest of its
/// life and its children's.
pub fn confine(prog: &[libc::sock_filter]) -> io::Result<()> {
    // SAFETY: `prog` is a valid slice for the call.
    match unsafe { install_with(prog, libc::SECCOMP_FILTER_FLAG_TSYNC) } {
        0 => Ok(()),
        r if r > 0 => Err(io::Error::other(format!(
            "thread {r} could not take the filter"
        ))),
        r => Err(io::Error::from_raw_os_error(-r)),
    }
}

/// What [`run_filter`] decides for one call: runs the program the way the
/// kernel would on `seccomp_data`, for tests of the program itself.
pub fn run_filter(prog: &[libc::sock_filter], arch: u32, nr: i32) -> Option<u32> {
    run_filter_call(prog, arch, nr, 0)
}

/// [`run_filter`] for a call whose second argument's low 32 bits are
/// `arg1`.
pub fn run_filter_call(prog: &[libc::sock_filter], arch: u32, nr: i32, arg1: u32) -> Option<u32> {
    let mut acc: u32 = 0;
    let mut pc = 0usize;
    let ld = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    let jeq = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    let ret = (libc::BPF_RET | libc::BPF_K) as u16;
    loop {
        let ins = prog.get(pc)?;
        match ins.code {
            c if c == ld => {
                acc = match ins.k {
                    OFF_NR => nr as u32,
                    OFF_ARCH => arch,
                    OFF_ARG1_LOW => arg1,
                    _ => return None,
                };
                pc += 1;
            }
            c if c == jeq => {
                let skip = if acc == ins.k { ins.jt } else { ins.jf };
                pc += 1 + usize::from(skip);
            }
            c if c == ret => return Some(ins.k),
            _ => return None,
        }
    }
}

/// Flags roam installs its filters with.
const FILTER_FLAGS: libc::c_ulong =
    libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;

/// Sets no_new_privs and installs `prog`; the listener fd (close-on-exec)
/// or -errno. Allocates nothing: fit for a child between fork and exec.
///
/// # Safety
/// `prog` must stay valid for the call (it is only read). The filter
/// applies to the calling thread and everything it later starts, for
/// good: call it where that is meant (a child about to exec, a test's
/// forked child).
pub(crate) unsafe fn install_raw(prog: &[libc::sock_filter]) -> RawFd {
    // SAFETY: as ours.
    unsafe { install_with(prog, FILTER_FLAGS) }
}

/// [`install_raw`] with the filter flags `flags`: the listener's fd if
/// they ask for one, else 0; or -errno.
unsafe fn install_with(prog: &[libc::sock_filter], flags: libc::c_ulong) -> RawFd {
    let fprog = libc::sock_fprog {
        len: prog.len() as libc::c_ushort,
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: prctl takes integers; seccomp reads `fprog` and the program
    // it points to, both alive for the call.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
            return -*libc::__errno_location();
        }
        let fd = libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &raw const fprog,
        );
        if fd < 0 {
            -*libc::__errno_location()
        } else {
            fd as RawFd
        }
    }
}

/// Installs `prog` (from [`allow_filter`]) in the calling thread, after
/// setting no_new_privs, with no listener: for a child between fork and
/// exec, like [`install_raw`]. Returns 0, or -errno.
///
/// # Safety
/// As [`install_raw`].
pub(crate) unsafe fn install_raw_plain(prog: &[libc::sock_filter]) -> RawFd {
    // SAFETY: as ours.
    unsafe { install_with(prog, 0) }
}

/// Installs `prog` (from [`notify_filter`]) in the calling process, after
/// setting no_new_privs, and returns its listener. For tests and for
/// processes that supervise their own children; the filter stays for the
/// rest of the process's life and is inherited by its children.
pub fn install_notify_filter(prog: &[libc::sock_filter]) -> io::Result<Listener> {
    // SAFETY: `prog` is a valid slice for the call.
    let fd = unsafe { install_raw(prog) };
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: seccomp returned a new descriptor that nothing else owns.
    Ok(Listener::new(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// One intercepted call, as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notification {
    /// The cookie answers and validity checks name.
    pub id: u64,
    /// The calling thread's id, in the supervisor's pid namespace.
    pub pid: u32,
    /// The system call's number and convention (AUDIT_ARCH_*).
    pub nr: i64,
    pub arch: u32,
    pub args: [u64; 6],
}

/// The answer to a notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The call returns this value.
    Value(i64),
    /// The call fails with this errno.
    Error(i32),
    /// The kernel runs the call as it was made.
    Continue,
}

/// A filter's listener: the supervisor's end.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
}

/// What [`Listener::wait`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Readiness {
    /// A notification waits to be received.
    pub pending: bool,
    /// No process uses the filter any more: nothing will come.
    pub hangup: bool,
}

impl Listener {
    /// Takes a listener fd (from [`crate::spawn::spawn_supervised`]).
    pub fn new(fd: OwnedFd) -> Listener {
        Listener { fd }
    }

    /// Asks the kernel to wake the supervisor, and the caller when
    /// answered, on the current CPU (SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP):
    /// a notification's round trip then costs about a third. Kernels
    /// before 6.6 refuse (EINVAL): the listener still works, more slowly.
    pub fn set_sync_wakeup(&self) -> io::Result<()> {
        let flags: u64 = USER_NOTIF_FD_SYNC_WAKE_UP;
        // SAFETY: the ioctl reads its integer argument only.
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS as _,
                flags,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout_ms` (-1: forever) for a notification or the
    /// end of the filter's users.
    pub fn wait(&self, timeout_ms: i32) -> io::Result<Readiness> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll writes into the one pollfd we pass.
        let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Readiness {
            pending: pfd.revents & libc::POLLIN != 0,
            hangup: pfd.revents & libc::POLLHUP != 0,
        })
    }

    /// Receives the next notification, waiting for one. ENOENT: the
    /// caller went away (killed) before we took it, or no process uses
    /// the filter any more; EINTR: a signal.
    pub fn recv(&self) -> io::Result<Notification> {
        // SAFETY: seccomp_notif is plain data; the kernel wants it zeroed.
        let mut n: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: the ioctl writes one seccomp_notif into `n`.
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV as _,
                &raw mut n,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Notification {
            id: n.id,
            pid: n.pid,
            nr: i64::from(n.data.nr),
            arch: n.data.arch,
            args: n.data.args,
        })
    }

    /// Answers notification `id`. ENOENT: it is no longer waiting (the
    /// caller was killed, or a signal interrupted the call before we
    /// received it).
    pub fn reply(&self, id: u64, reply: Reply) -> io::Result<()> {
        let (val, error, flags) = match reply {
            Reply::Value(v) => (v, 0, 0),
            Reply::Error(e) => (0, -e.abs(), 0),
            Reply::Continue => (0, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32),
        };
        let mut resp = libc::seccomp_notif_resp {
            id,
            val,
            error,
            flags,
        };
        // SAFETY: the ioctl reads one seccomp_notif_resp from `resp`.
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND as _,
                &raw mut resp,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Whether notification `id` still waits for its answer. After
    /// reading anything about the caller by its pid (its memory, its
    /// `/proc` files), this says the pid still named the caller: it
    /// cannot have been reused while the call waits.
    pub fn id_valid(&self, id: u64) -> bool {
        let mut id = id;
        // SAFETY: the ioctl reads one u64.
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_ID_VALID as _,
                &raw mut id,
            )
        };
        rc == 0
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Reads `buf.len()` bytes at `addr` of process `pid` (process_vm_readv).
/// Returns how many were read (fewer at the end of a mapping). Check the
/// notification with [`Listener::id_valid`] afterwards before trusting them.
pub fn read_memory(pid: u32, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as usize as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: the local iovec covers `buf`, which we own mutably; the
    // remote one is only an address in the other process, which the
    // kernel checks.
    let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Writes `data` at `addr` of process `pid` (process_vm_writev); how many
/// bytes were written. Prefer [`MemFile`] for answers, which cannot reach
/// another process through a reused pid.
pub fn write_memory(pid: u32, addr: u64, data: &[u8]) -> io::Result<usize> {
    let local = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as usize as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: the local iovec covers `data`, which the kernel only reads;
    // the remote address is checked by the kernel.
    let n = unsafe { libc::process_vm_writev(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// A process's memory through `/proc/PID/mem`. Once open, the file stays
/// bound to that process's memory even if the pid is reused: open it,
/// check the notification with [`Listener::id_valid`], then write.
pub struct MemFile(File);

impl MemFile {
    pub fn open(pid: u32) -> io::Result<MemFile> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))
            .map(MemFile)
    }

    /// Writes all of `data` at `addr`.
    pub fn write_all_at(&self, addr: u64, data: &[u8]) -> io::Result<()> {
        self.0.write_all_at(data, addr)
    }

    /// Reads exactly `buf.len()` bytes at `addr`.
    pub fn read_exact_at(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read_exact_at(buf, addr)
    }
}

/// Size of the kernel's `struct new_utsname` (what uname(2) writes): six
/// fields of 65 bytes.
pub const UTSNAME_LEN: usize = 6 * UTS_FIELD;
const UTS_FIELD: usize = 65;

/// This machine's uname(2) result as the kernel writes it, with the node
/// name (the second field) replaced by `nodename` (cut to 64 bytes).
pub fn uname_with_nodename(nodename: &[u8]) -> io::Result<[u8; UTSNAME_LEN]> {
    // SAFETY: utsname is plain data; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uname writes into the struct we pass.
    if unsafe { libc::uname(&mut u) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = [0u8; UTSNAME_LEN];
    let fields = [
        &u.sysname[..],
        &u.nodename[..],
        &u.release[..],
        &u.version[..],
        &u.machine[..],
        &u.domainname[..],
    ];
    for (i, f) in fields.iter().enumerate() {
        let dst = &mut out[i * UTS_FIELD..(i + 1) * UTS_FIELD];
        for (d, s) in dst.iter_mut().zip(f.iter()) {
            *d = *s as u8;
        }
    }
    let node = &mut out[UTS_FIELD..2 * UTS_FIELD];
    node.fill(0);
    let len = nodename.len().min(UTS_FIELD - 1);
    node[..len].copy_from_slice(&nodename[..len]);
    Ok(out)
}

/// The system calls roam's identity supervisor intercepts, by name, with
/// this machine's numbers.
pub mod nr {
    pub const GETPID: i64 = libc::SYS_getpid;
    pub const GETPPID: i64 = libc::SYS_getppid;
    pub const UNAME: i64 = libc::SYS_uname;
    pub const KILL: i64 = libc::SYS_kill;
    pub const TKILL: i64 = libc::SYS_tkill;
    pub const TGKILL: i64 = libc::SYS_tgkill;
    pub const RT_SIGQUEUEINFO: i64 = libc::SYS_rt_sigqueueinfo;
    pub const RT_TGSIGQUEUEINFO: i64 = libc::SYS_rt_tgsigqueueinfo;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_program() {
        let arch = NATIVE_AUDIT_ARCH.unwrap();
        let prog = notify_filter(&[nr::GETPID, nr::UNAME, nr::GETPID]).unwrap();
        // Duplicates are dropped: load, check, load, 2 tests, 2 returns.
        assert_eq!(prog.len(), 7);
        let notif = Some(libc::SECCOMP_RET_USER_NOTIF);
        let allow = Some(libc::SECCOMP_RET_ALLOW);
        assert_eq!(run_filter(&prog, arch, nr::GETPID as i32), notif);
        assert_eq!(run_filter(&prog, arch, nr::UNAME as i32), notif);
        assert_eq!(run_filter(&prog, arch, nr::KILL as i32), allow);
        assert_eq!(run_filter(&prog, arch, libc::SYS_execve as i32), allow);
        // Another convention (32-bit x86's getpid is 20): allowed.
        assert_eq!(run_filter(&prog, 0x4000_0003, nr::GETPID as i32), allow);
        // No calls: everything allowed.
        let empty = notify_filter(&[]).unwrap();
        assert_eq!(run_filter(&empty, arch, nr::GETPID as i32), allow);
        // The longest list still fits the jumps.
        let many: Vec<i64> = (0..MAX_SYSCALLS as i64).collect();
        let prog = notify_filter(&many).unwrap();
        for n in [0, 17, MAX_SYSCALLS as i32 - 1] {
            assert_eq!(run_filter(&prog, arch, n), notif);
        }
        assert_eq!(run_filter(&prog, arch, MAX_SYSCALLS as i32), allow);
        assert!(matches!(
            notify_filter(&(0..=MAX_SYSCALLS as i64).collect::<Vec<_>>()),
            Err(FilterError::TooMany(_))
        ));
        assert!(matches!(
            notify_filter(&[-1]),
            Err(FilterError::BadNumber(-1))
        ));
    }

    #[test]
    fn allow_filter_program() {
        let arch = NATIVE_AUDIT_ARCH.unwrap();
        let prog = allow_filter(
            &[nr::GETPID, libc::SYS_read, nr::GETPID],
            libc::EPERM as u16,
        )
        .unwrap();
        assert_eq!(prog.len(), 7);
        let allow = Some(libc::SECCOMP_RET_ALLOW);
        let eperm = Some(libc::SECCOMP_RET_ERRNO | libc::EPERM as u32);
        assert_eq!(run_filter(&prog, arch, nr::GETPID as i32), allow);
        assert_eq!(run_filter(&prog, arch, libc::SYS_read as i32), allow);
        assert_eq!(run_filter(&prog, arch, libc::SYS_execve as i32), eperm);
        // Another convention is refused whatever the number.
        assert_eq!(run_filter(&prog, 0x4000_0003, nr::GETPID as i32), eperm);
        let many: Vec<i64> = (0..MAX_SYSCALLS as i64).collect();
        let prog = allow_filter(&many, 1).unwrap();
        assert_eq!(run_filter(&prog, arch, MAX_SYSCALLS as i32 - 1), allow);
        assert_eq!(
            run_filter(&prog, arch, MAX_SYSCALLS as i32),
            Some(libc::SECCOMP_RET_ERRNO | 1)
        );
    }

    #[test]
    fn uname_nodename_replaced() {
        let u = uname_with_nodename(b"elsewhere").unwrap();
        assert_eq!(&u[65..75], b"elsewhere\0");
        assert!(u[75..130].iter().all(|&b| b == 0));
        let sys = nix::sys::utsname::uname().unwrap();
        let s = sys.sysname().as_encoded_bytes();
        assert_eq!(&u[..s.len()], s);
        let long = [b'x'; 100];
        let u = uname_with_nodename(&long).unwrap();
        assert_eq!(&u[65..129], &long[..64]);
        assert_eq!(u[129], 0);
    }

    /// Runs `child` in a forked process that installs a filter for
    /// `calls`, while this thread answers with `answer`; returns the
    /// child's exit code.
    fn with_supervised_child(
        calls: &[i64],
        answer: impl Fn(&Listener, Notification),
        child: impl FnOnce() -> i32,
    ) -> i32 {
        let prog = notify_filter(calls).unwrap();
        let (r, w) = crate::spawn::socketpair_seqpacket().unwrap();
        // SAFETY: the child only installs the filter, sends the fd, runs
        // `child` (plain system calls) and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            drop(r);
            let code = match install_notify_filter(&prog) {
                Ok(l) => {
                    crate::spawn::send_fd(w.as_fd(), l.as_fd()).unwrap();
                    drop(l);
                    child()
                }
                Err(_) => 99,
            };
            // SAFETY: leaving the forked child without running the test
            // harness's exit code.
            unsafe { libc::_exit(code) }
        }
        drop(w);
        let listener = Listener::new(crate::spawn::recv_fd(r.as_fd(), true).unwrap().unwrap());
        let _ = listener.set_sync_wakeup();
        loop {
            let ready = listener.wait(5000).unwrap();
            if ready.pending {
                match listener.recv() {
                    Ok(n) => answer(&listener, n),
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                    Err(e) => panic!("recv: {e}"),
                }
            } else if ready.hangup {
                break;
            } else {
                let mut st = 0;
                // SAFETY: checking on our own child.
                if unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) } == pid {
                    return libc::WEXITSTATUS(st);
                }
            }
        }
        let mut st = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        libc::WEXITSTATUS(st)
    }

    #[test]
    fn notification_round_trip() {
        // SAFETY: getpid cannot fail.
        let me = unsafe { libc::getpid() };
        let code = with_supervised_child(
            &[nr::GETPID, nr::UNAME, nr::GETPPID],
            |l, n| {
                let reply = match n.nr {
                    nr::GETPID => Reply::Value(4242),
                    nr::GETPPID => Reply::Error(libc::EPERM),
                    nr::UNAME => {
                        let mem = MemFile::open(n.pid).unwrap();
                        assert!(l.id_valid(n.id));
                        let u = uname_with_nodename(b"home-host").unwrap();
                        mem.write_all_at(n.args[0], &u).unwrap();
                        Reply::Value(0)
                    }
                    _ => Reply::Continue,
                };
                l.reply(n.id, reply).unwrap();
            },
            || {
                // SAFETY: plain system calls in the forked child.
                unsafe {
                    if libc::syscall(libc::SYS_getpid) != 4242 {
                        return 1;
                    }
                    if libc::syscall(libc::SYS_getppid) != -1
                        || *libc::__errno_location() != libc::EPERM
                    {
                        return 2;
                    }
                    let mut u: libc::utsname = std::mem::zeroed();
                    if libc::uname(&mut u) != 0 {
                        return 3;
                    }
                    let name = std::ffi::CStr::from_ptr(u.nodename.as_ptr());
                    if name.to_bytes() != b"home-host" {
                        return 4;
                    }
                    // gethostname is uname underneath.
                    let mut h = [0u8; 65];
                    libc::gethostname(h.as_mut_ptr().cast(), h.len());
                    if &h[..10] != b"home-host\0" {
                        return 5;
                    }
                    // Not intercepted: the real answer.
                    if libc::syscall(libc::SYS_gettid) <= 0 {
                        return 6;
                    }
                }
                0
            },
        );
        assert_eq!(code, 0);
        let _ = me;
    }

    #[test]
    fn continue_and_memory_read() {
        let code = with_supervised_child(
            &[nr::GETPID, nr::KILL],
            |l, n| {
                if n.nr == nr::KILL {
                    // kill(pid, sig): the child passes its own pid, read
                    // back through its memory of a known variable.
                    let mut buf = [0u8; 8];
                    let got = read_memory(n.pid, n.args[1], &mut buf);
                    let ok = got.is_ok() && l.id_valid(n.id);
                    let reply = if ok && u64::from_ne_bytes(buf) == 0x1122_3344_5566_7788 {
                        Reply::Value(0)
                    } else {
                        Reply::Error(libc::EFAULT)
                    };
                    l.reply(n.id, reply).unwrap();
                } else {
                    l.reply(n.id, Reply::Continue).unwrap();
                }
            },
            || {
                let secret: u64 = 0x1122_3344_5566_7788;
                // SAFETY: plain system calls in the forked child; the
                // "signal" argument is an address the supervisor reads.
                unsafe {
                    let real = libc::syscall(libc::SYS_getpid);
                    if real <= 0 {
                        return 1;
                    }
                    let addr = std::hint::black_box(&raw const secret) as usize;
                    if libc::syscall(libc::SYS_kill, 0, addr) != 0 {
                        return 2;
                    }
                }
                0
            },
        );
        assert_eq!(code, 0);
    }

    /// Measures a supervised call's round trip (printed; `cargo test --
    /// --nocapture` shows it). Not a pass/fail on speed.
    #[test]
    fn round_trip_cost() {
        const N: u32 = 20_000;
        let code = with_supervised_child(
            &[nr::GETPID],
            |l, n| l.reply(n.id, Reply::Value(7)).unwrap(),
            || {
                let t = std::time::Instant::now();
                for _ in 0..N {
                    // SAFETY: getpid has no memory effects.
                    if unsafe { libc::syscall(libc::SYS_getpid) } != 7 {
                        return 1;
                    }
                }
                let per = t.elapsed() / N;
                println!("supervised getpid: {per:?} per call");
                0
            },
        );
        assert_eq!(code, 0);
    }
}
