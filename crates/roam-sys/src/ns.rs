//! Network and mount namespaces, and the mounts the testbed makes in them.
//!
//! Each function is a thin, safe wrapper over one system call. Two flavours
//! exist for the mount calls: one taking `&Path`/`&str` (it allocates a C
//! string) and one taking `&CStr` (no allocation). Code that runs between
//! `fork` and `exec` must only do async-signal-safe work, so it uses the
//! `&CStr` flavour with strings prepared before the fork; [`ChildSetup`]
//! packages that for [`std::process::Command`].

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// Converts a path to a C string; a path with a NUL byte is `InvalidInput`.
pub(crate) fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("path {} contains a NUL byte", path.display()),
        )
    })
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("string {s:?} contains a NUL byte"),
        )
    })
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn setns(fd: BorrowedFd<'_>, nstype: libc::c_int) -> io::Result<()> {
    // SAFETY: setns only reads its two integer arguments; `fd` is a live
    // descriptor for the duration of the call because we hold a borrow of it.
    check(unsafe { libc::setns(fd.as_raw_fd(), nstype) })
}

/// Moves the calling thread into the network namespace `fd` refers to
/// (`/run/netns/NAME` or `/proc/PID/ns/net`). Async-signal-safe.
pub fn setns_net(fd: BorrowedFd<'_>) -> io::Result<()> {
    setns(fd, libc::CLONE_NEWNET)
}

/// Moves the calling process into the mount namespace `fd` refers to
/// (`/proc/PID/ns/mnt`). Fails with `EINVAL` in a multi-threaded process;
/// meant for a child between fork and exec. Async-signal-safe.
pub fn setns_mnt(fd: BorrowedFd<'_>) -> io::Result<()> {
    setns(fd, libc::CLONE_NEWNS)
}

/// Gives the calling process a mount namespace of its own, a copy of the
/// current one. Async-signal-safe.
pub fn unshare_mount() -> io::Result<()> {
    // SAFETY: unshare takes a flag word and touches no memory of ours.
    check(unsafe { libc::unshare(libc::CLONE_NEWNS) })
}

/// Makes `path` and every mount below it private (no propagation to or from
/// other namespaces). Async-signal-safe.
pub fn make_rprivate_c(path: &CStr) -> io::Result<()> {
    // SAFETY: `path` is a valid NUL-terminated string that outlives the call;
    // source, fstype and data may be NULL for a propagation change.
    check(unsafe {
        libc::mount(
            std::ptr::null(),
            path.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    })
}

/// [`make_rprivate_c`] for a `Path` (allocates).
pub fn make_rprivate(path: &Path) -> io::Result<()> {
    make_rprivate_c(&cpath(path)?)
}

/// Mounts a fresh tmpfs on `target` with mount data `options` (such as
/// `"mode=1777"`; may be empty). Async-signal-safe.
pub fn mount_tmpfs_c(target: &CStr, options: &CStr) -> io::Result<()> {
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the
    // call; tmpfs reads `options` as a C string.
    check(unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            options.as_ptr().cast(),
        )
    })
}

/// [`mount_tmpfs_c`] for a `Path` and `&str` (allocates).
pub fn mount_tmpfs(target: &Path, options: &str) -> io::Result<()> {
    mount_tmpfs_c(&cpath(target)?, &cstr(options)?)
}

/// Mounts the binfmt_misc file system on `target` (normally
/// /proc/sys/fs/binfmt_misc).
pub fn mount_binfmt_misc(target: &Path) -> io::Result<()> {
    let target = cpath(target)?;
    // SAFETY: every pointer is a valid NUL-terminated string that outlives
    // the call; binfmt_misc takes no mount data (NULL).
    check(unsafe {
        libc::mount(
            c"binfmt_misc".as_ptr(),
            target.as_ptr(),
            c"binfmt_misc".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        )
    })
}

/// Bind-mounts `src` on `target` (with everything mounted below `src` if
/// `recursive`). Async-signal-safe.
pub fn bind_mount_c(src: &CStr, target: &CStr, recursive: bool) -> io::Result<()> {
    let mut flags = libc::MS_BIND;
    if recursive {
        flags |= libc::MS_REC;
    }
    // SAFETY: both pointers are valid NUL-terminated strings that outlive the
    // call; fstype and data are ignored (NULL) for a bind mount.
    check(unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    })
}

/// [`bind_mount_c`] for `Path`s (allocates).
pub fn bind_mount(src: &Path, target: &Path, recursive: bool) -> io::Result<()> {
    bind_mount_c(&cpath(src)?, &cpath(target)?, recursive)
}

/// Detaches the mount on `target` now; the kernel finishes unmounting it
/// when it is no longer busy. Async-signal-safe.
pub fn umount_detach_c(target: &CStr) -> io::Result<()> {
    // SAFETY: `target` is a valid NUL-terminated string that outlives the call.
    check(unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) })
}

/// [`umount_detach_c`] for a `Path` (allocates).
pub fn umount_detach(target: &Path) -> io::Result<()> {
    umount_detach_c(&cpath(target)?)
}

/// Opens a namespace file (`/run/netns/NAME`, `/proc/PID/ns/mnt`...) for a
/// later `setns`, close-on-exec.
pub fn open_ns(path: &Path) -> io::Result<OwnedFd> {
    Ok(File::open(path)?.into())
}

/// What a child process does between `fork` and `exec`, in this order:
/// join a network namespace, join a mount namespace, or make a new private
/// mount namespace with a fresh tmpfs on `/tmp`, then start a new session
/// (and, for [`ChildSetup::spawn_detached`], fork once more).
///
/// Everything the child needs (namespace descriptors, C strings) is prepared
/// here, before the fork; the child only makes system calls.
#[derive(Debug, Default)]
pub struct ChildSetup {
    /// A network namespace to join (see [`open_ns`]).
    pub net: Option<OwnedFd>,
    /// A mount namespace to join (see [`open_ns`]).
    pub mnt: Option<OwnedFd>,
    /// Unshare the mount namespace, make `/` recursively private, detach
    /// `detach_mounts` and mount a fresh tmpfs on `/tmp` (after joining
    /// `mnt`, if both are given).
    pub private_tmp: bool,
    /// With `private_tmp`: mounts to detach (`MNT_DETACH`) in the new mount
    /// namespace, such as `/run/netns` so that the copy does not pin other
    /// network namespaces. A path that is not a mount point is ignored.
    pub detach_mounts: Vec<CString>,
    /// Call `setsid` (the child leaves our session and process group).
    pub setsid: bool,
    /// A UTS namespace to join (`/proc/PID/ns/uts`, see [`open_ns`]).
    pub uts: Option<OwnedFd>,
    /// Unshare the UTS namespace and set this host name in it (after
    /// joining `uts`, if both are given).
    pub hostname: Option<CString>,
}

impl ChildSetup {
    /// Installs the setup on `cmd` (a `pre_exec` hook). Spawn `cmd` as usual
    /// afterwards; a failing step makes the spawn fail with its error.
    ///
    /// Note that joining a mount namespace resets the child's working
    /// directory to that namespace's root, so `Command::current_dir` is lost
    /// when `mnt` is set.
    pub fn install(self, cmd: &mut Command) {
        let mut hook = self.into_hook(None);
        // SAFETY: the hook only makes async-signal-safe system calls (setns,
        // unshare, mount, setsid) on descriptors and C strings prepared before
        // the fork; it allocates nothing and takes no locks.
        unsafe {
            cmd.pre_exec(move || hook.run());
        }
    }

    /// Spawns `cmd` detached, as a daemon: the setup plus `setsid`, then a
    /// second fork, so that the program runs as a grandchild that no process
    /// of ours has to reap. The intermediate child is reaped here before
    /// returning. Returns the daemon's pid once it has successfully exec'd
    /// (an exec failure is returned as the error).
    pub fn spawn_detached(mut self, mut cmd: Command) -> io::Result<u32> {
        self.setsid = true;
        let (rd, wr) = pipe_cloexec()?;
        let mut hook = self.into_hook(Some(wr));
        // SAFETY: the hook only makes async-signal-safe system calls (setns,
        // unshare, mount, setsid, fork, write, _exit) on descriptors and C
        // strings prepared before the fork; it allocates nothing and takes no
        // locks.
        unsafe {
            cmd.pre_exec(move || hook.run());
        }
        // std reports a failed exec of the grandchild too: the grandchild
        // holds the close-on-exec error pipe until it execs.
        let mut child = cmd.spawn()?;
        let status = child.wait()?;
        if !status.success() {
            return Err(io::Error::other(format!(
                "the intermediate child of a detached spawn ended with {status}"
            )));
        }
        // It exits 0 only after writing all four bytes, so this cannot block.
        let mut buf = [0u8; 4];
        File::from(rd).read_exact(&mut buf)?;
        Ok(u32::from_ne_bytes(buf))
    }

    fn into_hook(self, report_pid: Option<OwnedFd>) -> Hook {
        Hook {
            setup: self,
            report_pid,
        }
    }
}

/// The state a `pre_exec` hook owns.
struct Hook {
    setup: ChildSetup,
    /// For a detached spawn: where the intermediate child writes the pid.
    report_pid: Option<OwnedFd>,
}

impl Hook {
    /// Runs in the child between fork and exec: async-signal-safe only.
    fn run(&mut self) -> io::Result<()> {
        let s = &self.setup;
        if let Some(fd) = &s.net {
            setns_net(fd.as_fd())?;
        }
        if let Some(fd) = &s.mnt {
            setns_mnt(fd.as_fd())?;
        }
        if let Some(fd) = &s.uts {
            setns(fd.as_fd(), libc::CLONE_NEWUTS)?;
        }
        if let Some(name) = &s.hostname {
            // SAFETY: unshare takes a flag word; sethostname reads the
            // prepared string, for its length.
            unsafe {
                check(libc::unshare(libc::CLONE_NEWUTS))?;
                check(libc::sethostname(name.as_ptr(), name.as_bytes().len()))?;
            }
        }
        if s.private_tmp {
            unshare_mount()?;
            make_rprivate_c(c"/")?;
            for m in &s.detach_mounts {
                // Not a mount point (EINVAL) or absent (ENOENT): nothing to do.
                let _ = umount_detach_c(m);
            }
            mount_tmpfs_c(c"/tmp", c"mode=1777")?;
        }
        if s.setsid {
            // SAFETY: setsid takes no arguments; it fails only if we already
            // lead a process group, which a fresh child does not.
            if unsafe { libc::setsid() } == -1 {
                return Err(io::Error::last_os_error());
            }
        }
        if let Some(wr) = &self.report_pid {
            // SAFETY: fork is async-signal-safe; this process is a
            // single-threaded child, so the grandchild is a full copy.
            let pid = unsafe { libc::fork() };
            if pid == -1 {
                return Err(io::Error::last_os_error());
            }
            if pid > 0 {
                // The intermediate child: report the grandchild's pid, go.
                let bytes = (pid as u32).to_ne_bytes();
                // SAFETY: `bytes` is a live 4-byte buffer and `wr` an open
                // descriptor; write and _exit are async-signal-safe. _exit
                // skips every destructor and atexit handler, as a forked
                // child must.
                unsafe {
                    let n = libc::write(wr.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
                    libc::_exit(if n == bytes.len() as isize { 0 } else { 1 });
                }
            }
            // The grandchild goes on to exec; `wr` is close-on-exec.
        }
        Ok(())
    }
}

fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by
    // nobody else.
    Ok(unsafe {
        use std::os::fd::FromRawFd;
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn nul_bytes_are_refused_not_truncated() {
        let e = make_rprivate(Path::new("/a\0b")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = mount_tmpfs(Path::new("/tmp"), "size=1\0").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn detached_spawn_reports_the_real_pid_and_exec_errors() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo $$; exec sleep 30"])
            .stdin(Stdio::null())
            .stderr(Stdio::null());
        let (rd, wr) = pipe_cloexec().unwrap();
        cmd.stdout(Stdio::from(wr));
        let pid = ChildSetup::default().spawn_detached(cmd).unwrap();
        let mut out = String::new();
        let mut rd = File::from(rd);
        let mut buf = [0u8; 64];
        while !out.contains('\n') {
            let n = rd.read(&mut buf).unwrap();
            assert!(n > 0, "no output from the daemon");
            out.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        }
        assert_eq!(out.trim(), pid.to_string());
        // It is not our child, and it is in a session of its own (whose
        // leader, the intermediate child, is gone: no controlling terminal
        // can ever be acquired).
        let stat = |pid: u32| -> Vec<String> {
            let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            s.rsplit_once(')')
                .unwrap()
                .1
                .split_whitespace()
                .map(String::from)
                .collect()
        };
        // After the name: [0] state, [1] ppid, [2] pgrp, [3] session.
        let daemon = stat(pid);
        let ours = stat(std::process::id());
        assert_ne!(daemon[1], std::process::id().to_string());
        assert_ne!(daemon[3], ours[3]);
        assert_ne!(daemon[3], pid.to_string());
        assert_eq!(daemon[2], daemon[3]);
        // SAFETY: kill with a pid and signal number has no memory effects.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };

        let cmd = Command::new("/nonexistent/program");
        let e = ChildSetup::default().spawn_detached(cmd).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    }

    #[test]
    fn private_tmp_is_private() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let name = format!("roam-sys-ns-test-{}", std::process::id());
        let host_file = Path::new("/tmp").join(&name);
        std::fs::write(&host_file, b"host").unwrap();
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(format!(
            "test ! -e /tmp/{name} && echo inside > /tmp/{name}-child && cat /tmp/{name}-child"
        ));
        ChildSetup {
            private_tmp: true,
            ..Default::default()
        }
        .install(&mut cmd);
        let out = cmd.output().unwrap();
        std::fs::remove_file(&host_file).unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "inside");
        assert!(!Path::new("/tmp").join(format!("{name}-child")).exists());
    }

    #[test]
    fn joining_a_mount_namespace() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        // A daemon with a private /tmp holding a marker file...
        let name = format!("roam-sys-ns-join-{}", std::process::id());
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("echo here > /tmp/{name}; exec sleep 30"))
            .stdin(Stdio::null());
        let pid = ChildSetup {
            private_tmp: true,
            ..Default::default()
        }
        .spawn_detached(cmd)
        .unwrap();
        let marker_seen = |pid: u32| {
            let mnt = open_ns(Path::new(&format!("/proc/{pid}/ns/mnt"))).unwrap();
            let mut cmd = Command::new("cat");
            cmd.arg(format!("/tmp/{name}")).current_dir("/");
            ChildSetup {
                mnt: Some(mnt),
                ..Default::default()
            }
            .install(&mut cmd);
            cmd.output().unwrap()
        };
        let mut out = marker_seen(pid);
        for _ in 0..200 {
            if out.status.success() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            out = marker_seen(pid);
        }
        // SAFETY: kill with a pid and signal number has no memory effects.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "here");
        assert!(!Path::new("/tmp").join(&name).exists());
    }
}
