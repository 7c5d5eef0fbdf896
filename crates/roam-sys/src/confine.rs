//! The system calls of a confined program: the paper's minimal worker
//! layer. Such a program may compute, use memory and threads, and do file
//! and network I/O; any other call fails with EPERM ("Operation not
//! permitted"). Refused, among others: running programs (execve,
//! execveat), ptrace, signals to other processes, mount, changes of
//! owner, mode, credentials or limits, ioctl, and the calls of any other
//! system-call convention.
//!
//! Two users: a roam-rpc worker that confines itself after its handshake
//! ([`crate::seccomp::confine`]), and a node that starts a program
//! confined from its exec on ([`crate::spawn::spawn_supervised`]), which
//! also lets the loader and a runner such as qemu-user start.

/// Calls every architecture names the same way.
const COMMON: &[i64] = &[
    // Files and descriptors.
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_lseek,
    libc::SYS_close,
    libc::SYS_close_range,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_fcntl,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_openat,
    libc::SYS_getdents64,
    libc::SYS_mkdirat,
    libc::SYS_unlinkat,
    libc::SYS_renameat2,
    libc::SYS_readlinkat,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_ftruncate,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_flock,
    libc::SYS_getcwd,
    libc::SYS_pipe2,
    libc::SYS_eventfd2,
    libc::SYS_ppoll,
    libc::SYS_pselect6,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    // Network.
    libc::SYS_socket,
    libc::SYS_connect,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept4,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
    libc::SYS_shutdown,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendmmsg,
    libc::SYS_recvmmsg,
    // Memory.
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_brk,
    // Threads (a process started this way can only run this program:
    // execve is refused).
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_futex,
    libc::SYS_set_robust_list,
    libc::SYS_get_robust_list,
    libc::SYS_set_tid_address,
    libc::SYS_rseq,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_membarrier,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_wait4,
    // Signals within the process (raise, abort, thread cancellation).
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_tgkill,
    // Time, identity, randomness.
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettimeofday,
    libc::SYS_getrandom,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_getppid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_prlimit64,
    libc::SYS_uname,
];

/// The older calls of architectures that still have them.
#[cfg(target_arch = "x86_64")]
const LEGACY: &[i64] = &[
    libc::SYS_open,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_access,
    libc::SYS_poll,
    libc::SYS_select,
    libc::SYS_epoll_wait,
    libc::SYS_pipe,
    libc::SYS_dup2,
    libc::SYS_mkdir,
    libc::SYS_unlink,
    libc::SYS_rename,
    libc::SYS_readlink,
    libc::SYS_arch_prctl,
];
#[cfg(target_arch = "s390x")]
const LEGACY: &[i64] = &[
    libc::SYS_open,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_access,
    libc::SYS_poll,
    libc::SYS_epoll_wait,
    libc::SYS_pipe,
    libc::SYS_dup2,
    libc::SYS_mkdir,
    libc::SYS_unlink,
    libc::SYS_rename,
    libc::SYS_readlink,
];
#[cfg(not(any(target_arch = "x86_64", target_arch = "s390x")))]
const LEGACY: &[i64] = &[];

/// Every call a confined program may make (this machine's numbers),
/// ioctl aside.
pub fn worker_calls() -> Vec<i64> {
    COMMON.iter().chain(LEGACY).copied().collect()
}

/// The ioctl requests a confined program may make: descriptor flags
/// (non-blocking sockets, close-on-exec), bytes ready, and whether a
/// descriptor is a terminal and its size (what libc's stdio asks).
pub const WORKER_IOCTLS: [u32; 6] = [
    libc::FIONBIO as u32,
    libc::FIOCLEX as u32,
    libc::FIONCLEX as u32,
    libc::FIONREAD as u32,
    libc::TCGETS as u32,
    libc::TIOCGWINSZ as u32,
];

/// The filter of a confinement: [`worker_calls`], `more`, and the
/// ioctls of [`WORKER_IOCTLS`] pass; anything else fails with EPERM.
pub fn worker_filter(more: &[i64]) -> Result<Vec<libc::sock_filter>, crate::seccomp::FilterError> {
    let calls: Vec<i64> = worker_calls()
        .into_iter()
        .chain(more.iter().copied())
        .collect();
    crate::seccomp::allow_filter_with_ioctls(&calls, &WORKER_IOCTLS, libc::EPERM as u16)
}

/// The calls that start a program: a node confining a program from its
/// exec on supervises them, allows the first (its own) and refuses the
/// rest.
pub const EXEC_CALLS: [i64; 2] = [libc::SYS_execve, libc::SYS_execveat];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_lets_through_its_calls_and_ioctls_only() {
        use crate::seccomp::{run_filter_call, NATIVE_AUDIT_ARCH};
        let Some(arch) = NATIVE_AUDIT_ARCH else {
            return;
        };
        let prog = worker_filter(&[libc::SYS_getpid]).unwrap();
        let allow = libc::SECCOMP_RET_ALLOW;
        let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
        let run = |nr: i64, arg: u32| run_filter_call(&prog, arch, nr as i32, arg);
        assert_eq!(run(libc::SYS_read, 0), Some(allow));
        assert_eq!(run(libc::SYS_getpid, 0), Some(allow));
        assert_eq!(run(libc::SYS_execve, 0), Some(eperm));
        assert_eq!(run(libc::SYS_ioctl, libc::FIONBIO as u32), Some(allow));
        assert_eq!(run(libc::SYS_ioctl, libc::TCGETS as u32), Some(allow));
        assert_eq!(run(libc::SYS_ioctl, libc::TIOCSTI as u32), Some(eperm));
        assert_eq!(run(libc::SYS_ioctl, 0), Some(eperm));
        // Another convention: refused, ioctl or not.
        assert_eq!(
            run_filter_call(
                &prog,
                0x4000_0003,
                libc::SYS_ioctl as i32,
                libc::FIONBIO as u32
            ),
            Some(eperm)
        );
        assert_eq!(run_filter_call(&prog, 0x4000_0003, 0, 0), Some(eperm));
    }

    #[test]
    fn the_list_fits_one_filter_and_leaves_out_what_it_must() {
        let a = worker_calls();
        assert!(a.len() + EXEC_CALLS.len() + 8 <= crate::seccomp::MAX_SYSCALLS);
        for refused in [
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_ptrace,
            libc::SYS_kill,
            libc::SYS_mount,
            libc::SYS_setuid,
            libc::SYS_fchownat,
            libc::SYS_ioctl,
        ] {
            assert!(!a.contains(&refused), "{refused} is allowed");
        }
    }
}
