//! Credentials: peer credentials of Unix sockets, user names, the umask.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// The credentials of the process at the other end of a Unix socket, as
/// the kernel recorded them when the connection was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (empty if the kernel cannot report them).
    pub groups: Vec<u32>,
}

/// SO_PEERCRED + SO_PEERGROUPS of a connected Unix socket.
pub fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<PeerCred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a valid, writable ucred and `len` holds its size.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PeerCred {
        pid: cred.pid as u32,
        uid: cred.uid,
        gid: cred.gid,
        groups: peer_groups(fd)?,
    })
}

/// SO_PEERGROUPS; an empty list on kernels without it (fewer rights, never more).
fn peer_groups(fd: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: the buffer is `len` bytes of writable memory owned by `groups`.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc == 0 {
            groups.truncate(len as usize / std::mem::size_of::<libc::gid_t>());
            return Ok(groups);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            // `len` now holds the size needed.
            Some(libc::ERANGE) => {
                let need = len as usize / std::mem::size_of::<libc::gid_t>();
                groups.resize(need.max(groups.len() * 2), 0);
            }
            Some(libc::ENOPROTOOPT) => return Ok(Vec::new()),
            _ => return Err(err),
        }
    }
}

/// The calling process's umask, read from /proc/self/status "Umask:" (no
/// umask() race). Falls back to 0o022 if /proc cannot tell.
pub fn current_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| parse_umask(&s))
        .unwrap_or(0o022)
}

fn parse_umask(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Umask:"))?;
    u32::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
}

/// User name for a uid (getpwuid_r), None if unknown.
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        // SAFETY: passwd is plain old data; all-zero is a valid value.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer refers to live, writable memory of the
        // stated size; getpwuid_r stores strings only inside `buf`.
        let rc =
            unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
        if rc == libc::ERANGE && buf.len() < (1 << 20) {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        // SAFETY: on success pw_name points to a NUL-terminated string in
        // `buf`, which is still alive.
        let name = unsafe { CStr::from_ptr(pwd.pw_name) };
        return Some(name.to_string_lossy().into_owned());
    }
}

/// The current process's effective uid, effective gid and supplementary
/// groups: what SO_PEERCRED/SO_PEERGROUPS report to a peer.
pub fn current_cred() -> (u32, u32, Vec<u32>) {
    // SAFETY: geteuid and getegid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let groups = nix::unistd::getgroups()
        .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_default();
    (uid, gid, groups)
}

/// Whether the caller's effective uid is root.
pub fn is_root() -> bool {
    current_cred().0 == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn peer_cred_of_socketpair_is_us() {
        let (a, _b) = UnixStream::pair().unwrap();
        let c = peer_cred(a.as_fd()).unwrap();
        let (uid, gid, mut groups) = current_cred();
        assert_eq!(c.pid, std::process::id());
        assert_eq!(c.uid, uid);
        assert_eq!(c.gid, gid);
        let mut got = c.groups.clone();
        got.sort_unstable();
        groups.sort_unstable();
        assert_eq!(got, groups);
    }

    #[test]
    fn peer_cred_on_non_socket_fails() {
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(peer_cred(f.as_fd()).is_err());
    }

    #[test]
    fn umask_parsing() {
        assert_eq!(
            parse_umask("Name:\tx\nUmask:\t0027\nState:\tR\n"),
            Some(0o027)
        );
        assert_eq!(parse_umask("Name:\tx\n"), None);
    }

    #[test]
    fn current_umask_matches_umask_in_forked_child() {
        // umask is process-wide: change it only in a child.
        // SAFETY: the child only calls umask, reads a file and _exits; glibc
        // keeps malloc usable after fork.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: umask and _exit are async-signal-safe.
            unsafe {
                libc::umask(0o063);
                let ok = current_umask() == 0o063;
                libc::_exit(if ok { 0 } else { 1 });
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child with a valid status pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status));
        assert_eq!(libc::WEXITSTATUS(status), 0);
    }

    #[test]
    fn user_names() {
        assert_eq!(user_name(0).as_deref(), Some("root"));
        assert_eq!(user_name(3_999_999_999), None);
    }

    #[test]
    fn current_cred_matches_libc() {
        let (uid, gid, _) = current_cred();
        // SAFETY: trivial getters.
        unsafe {
            assert_eq!(uid, libc::geteuid());
            assert_eq!(gid, libc::getegid());
        }
    }
}
