//! Helpers of the crate's unit tests: pipes and bytes between a test and
//! the child it forked.

use std::io;
use std::os::fd::RawFd;

pub fn pipe() -> (RawFd, RawFd) {
    let mut p = [0; 2];
    // SAFETY: pipe2 fills two descriptors.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    (p[0], p[1])
}

pub fn read_byte(fd: RawFd) -> u8 {
    let mut b = [0u8; 1];
    // SAFETY: reads one byte into a live array.
    let n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), 1) };
    assert_eq!(n, 1, "{}", io::Error::last_os_error());
    b[0]
}

pub fn write_byte(fd: RawFd, b: u8) {
    // SAFETY: writes one byte from a live array.
    assert_eq!(unsafe { libc::write(fd, [b].as_ptr().cast(), 1) }, 1);
}

pub fn exit_code(pid: i32) -> i32 {
    let mut st = 0;
    // SAFETY: reaps our own child into a live int.
    assert_eq!(unsafe { libc::waitpid(pid, &mut st, 0) }, pid);
    if libc::WIFEXITED(st) {
        libc::WEXITSTATUS(st)
    } else {
        -libc::WTERMSIG(st)
    }
}

/// Closes the test's descriptors.
pub fn close_all(fds: &[RawFd]) {
    for &fd in fds {
        // SAFETY: closing descriptors the test owns.
        unsafe { libc::close(fd) };
    }
}

/// The options of a plain restore in a test: `stdin` and `stdout` as the
/// process's 0 and 1.
pub fn plain_opts(stdin: RawFd, stdout: RawFd) -> crate::restore::RestoreOpts {
    crate::restore::RestoreOpts::plain([stdin, stdout, 2])
}
