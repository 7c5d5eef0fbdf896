//! Restore stubs made ready ahead of time.
//!
//! A restore's stub is a fork of the restoring daemon, a large process:
//! the fork copies its page tables, the stub enters a mount namespace of
//! its own and then unmaps everything it got. Here that took about 3.5 ms
//! of every restore, before the image's first mapping, and a migration
//! pays it while the process is frozen.
//!
//! A [`StubFactory`] pays it once. Its *zygote* is such a stub, readied
//! (`restore::prepare_stub`: its memory gone but the vDSO and the
//! injection and scratch pages, every signal blocked, no rseq area, no
//! descriptor but a pidfd of the daemon) and kept stopped under the
//! thread that made it. Each restore's stub is cloned from it: clone3
//! with CLONE_PARENT, so it is the daemon's child as a forked stub is,
//! traced by the same thread (the zygote's clones are), with the pid
//! asked for if that is free; it is a copy of a process of four pages,
//! in the zygote's mount namespace. It takes its stdio from the daemon
//! with pidfd_getfd, and leads a new session if asked.
//!
//! So the stubs of one factory share a mount namespace (the remote view
//! of the home's files, [`roam_sys::spawn::SpawnRequest::root`]), where
//! forked stubs had one each: as the processes of one machine share
//! theirs. A factory serves one root as it was mounted when it was made;
//! once the root is mounted afresh (a new device), a new factory is made.
//!
//! A factory is tied to the thread that made it (the zygote's tracer):
//! it is not `Send`.

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, RawFd};

use roam_sys::ptrace::{self, Stop};
use roam_sys::remote::{self, Remote, Site};

use crate::restore::{batch, kill_stub, prepare_stub, sys, RestoreError, SCRATCH};

/// The zygote's pidfd of the daemon, out of the way of stdio.
const PIDFD_AT: u64 = 100;

/// The zygote's injection page goes below this if there is room: far
/// from where programs' stacks and libraries are (at the top of the
/// address space) and their heaps (at the bottom), so that an image
/// seldom needs the page moved.
const SITE_BELOW: u64 = 0x7e00_0000_0000;

/// The end of the user address space (x86-64, 4-level paging).
const USER_TOP: u64 = 0x7fff_ffff_f000;

/// `struct clone_args` up to `set_tid_size` (CLONE_ARGS_SIZE_VER1).
const CLONE_ARGS_SIZE: u64 = 80;

/// Why a factory made no stub.
#[derive(Debug)]
pub enum SpawnError {
    /// The factory is broken (its zygote gone, or a call its stubs need
    /// refused here): stubs are to be made otherwise.
    Factory(RestoreError),
    /// The new stub died while it was made (killed).
    Stub(RestoreError),
}

/// Makes readied restore stubs (see the module's documentation).
pub struct StubFactory {
    zygote: Remote,
    site: u64,
    root: Option<Vec<u8>>,
    /// The device mounted at `root` when the zygote entered it.
    device: Option<u64>,
    /// Ptrace ties the zygote to this thread.
    _tracer: PhantomData<*const ()>,
}

impl StubFactory {
    /// A factory of stubs whose `/` is `root` (as [`remote::spawn_stub`]
    /// makes it), or the caller's.
    pub fn new(root: Option<&[u8]>) -> Result<StubFactory, RestoreError> {
        let device = root
            .map(roam_sys::spawn::root_device)
            .transpose()
            .map_err(sys("find the root's file system"))?;
        let null = std::fs::File::open("/dev/null").map_err(sys("open /dev/null"))?;
        let fd = null.as_raw_fd();
        let pid = remote::spawn_stub([fd; 3], None, false, None, root)
            .map_err(sys("start the stubs' zygote"))?;
        match ready_zygote(pid) {
            Ok((zygote, site)) => Ok(StubFactory {
                zygote,
                site,
                root: root.map(<[u8]>::to_vec),
                device,
                _tracer: PhantomData,
            }),
            Err(e) => {
                kill_stub(pid);
                Err(e)
            }
        }
    }

    /// Whether this factory's stubs have `root` as their `/`, mounted as
    /// it is now.
    pub fn serves(&self, root: Option<&[u8]>) -> bool {
        if self.root.as_deref() != root {
            return false;
        }
        match root {
            None => true,
            Some(r) => roam_sys::spawn::root_device(r).ok() == self.device,
        }
    }

    /// The zygote's pid.
    pub fn zygote(&self) -> i32 {
        self.zygote.tid()
    }

    /// Where its stubs' injection page is.
    pub fn site(&self) -> u64 {
        self.site
    }

    /// A new stub, stopped, traced by the calling thread (the factory's):
    /// `stdio` (descriptors of the caller's) as its 0, 1 and 2, pid `pid`
    /// if given and free, leading a new session if `new_session`.
    pub fn spawn(
        &mut self,
        stdio: [RawFd; 3],
        pid: Option<i32>,
        new_session: bool,
    ) -> Result<i32, SpawnError> {
        let pre = self.prespawn(pid)?;
        self.finish(pre, stdio, new_session)
    }

    /// The first half of [`StubFactory::spawn`], made before the restore
    /// is asked for (a migration's, while its process is captured): a
    /// stub with pid `pid` if given and free, without its stdio yet. It
    /// dies with its [`Prespawned`] unless [`StubFactory::finish`] takes
    /// it.
    pub fn prespawn(&mut self, pid: Option<i32>) -> Result<Prespawned, SpawnError> {
        let child = self.clone_stub(pid)?;
        Ok(Prespawned {
            pid: child,
            wanted: pid,
            zygote: self.zygote(),
            made: std::time::Instant::now(),
        })
    }

    /// Whether `pre` came from this factory, for a restore of pid `want`.
    pub fn fits(&self, pre: &Prespawned, want: Option<i32>) -> bool {
        pre.zygote == self.zygote() && pre.wanted == want
    }

    /// The second half of [`StubFactory::spawn`]: `pre` (from this
    /// factory) given its stdio and a new session if asked.
    pub fn finish(
        &mut self,
        pre: Prespawned,
        stdio: [RawFd; 3],
        new_session: bool,
    ) -> Result<i32, SpawnError> {
        let child = pre.take();
        match self.give_stdio(child, stdio, new_session) {
            Ok(()) => Ok(child),
            Err(e) => {
                kill_stub(child);
                Err(e)
            }
        }
    }

    /// A clone of the zygote, in its first stop.
    fn clone_stub(&mut self, pid: Option<i32>) -> Result<i32, SpawnError> {
        let args_at = self.site + SCRATCH;
        let mut child = None;
        for want in [pid, None] {
            // flags, pidfd, child_tid, parent_tid, exit_signal, stack,
            // stack_size, tls, set_tid, set_tid_size; then the one tid.
            let mut args = [0u64; 11];
            args[0] = libc::CLONE_PARENT as u64;
            if let Some(p) = want {
                args[8] = args_at + CLONE_ARGS_SIZE;
                args[9] = 1;
                args[10] = p as u64;
            }
            let bytes: Vec<u8> = args.iter().flat_map(|w| w.to_le_bytes()).collect();
            ptrace::write_memory(self.zygote(), args_at, &bytes)
                .map_err(sys("write the zygote's clone arguments"))
                .map_err(SpawnError::Factory)?;
            match self
                .zygote
                .call(libc::SYS_clone3, &[args_at, CLONE_ARGS_SIZE])
            {
                Ok(c) => {
                    child = Some(c as i32);
                    break;
                }
                // That pid is taken (or not ours to ask for): any other.
                Err(_) if want.is_some() => continue,
                Err(e) => return Err(SpawnError::Factory(sys("clone the zygote")(e))),
            }
        }
        let child = child.ok_or_else(|| {
            SpawnError::Factory(RestoreError::Sys {
                what: "clone the zygote".into(),
                source: io::Error::other("no clone made"),
            })
        })?;
        // A clone of a tracee is traced from its start, in a stop for the
        // SIGSTOP the kernel queued it.
        match ptrace::wait_stop(child) {
            Ok(Stop::Stopped {
                signal: libc::SIGSTOP,
                ..
            }) => Ok(child),
            other => {
                kill_stub(child);
                let e = RestoreError::Sys {
                    what: "start a stub from the zygote".into(),
                    source: io::Error::other(format!("it did not stop as expected: {other:?}")),
                };
                Err(match other {
                    Ok(Stop::Killed(_) | Stop::Exited(_)) => SpawnError::Stub(e),
                    _ => SpawnError::Factory(e),
                })
            }
        }
    }

    /// The new stub's descriptors 0, 1 and 2 (the caller's `stdio`), its
    /// pidfd of the daemon closed, and a new session if asked.
    fn give_stdio(
        &self,
        child: i32,
        stdio: [RawFd; 3],
        new_session: bool,
    ) -> Result<(), SpawnError> {
        let mut r = Remote::new(child, Site::Trap(self.site))
            .map_err(sys("take the stub"))
            .map_err(SpawnError::Stub)?;
        let calls: Vec<(libc::c_long, [u64; 6])> = stdio_calls(stdio, new_session)
            .into_iter()
            .map(|c| (c.nr, c.args))
            .collect();
        // The stub's own failure (it died); otherwise what it was refused
        // would be refused to every stub.
        let got = batch(&mut r, self.site, &calls)
            .map_err(sys("give the stub its stdio"))
            .map_err(SpawnError::Stub)?;
        if let Some(source) = remote::first_failed(&got) {
            return Err(SpawnError::Factory(RestoreError::Sys {
                what: "give the stub its stdio (in the stub)".into(),
                source,
            }));
        }
        if got[..3] != [0, 1, 2] {
            return Err(SpawnError::Factory(RestoreError::Sys {
                what: "give the stub its stdio".into(),
                source: io::Error::other(format!("they came as {:?}", &got[..3])),
            }));
        }
        Ok(())
    }
}

/// A call that readies a stub's stdio ([`stdio_calls`]).
pub(crate) struct StdioCall {
    pub what: &'static str,
    pub nr: libc::c_long,
    pub args: [u64; 6],
    /// The result it must have, if one.
    pub expect: Option<u64>,
}

/// The calls that give a stub cloned from the zygote `stdio` (descriptors
/// of the daemon's, taken through the zygote's pidfd of it) as its 0, 1
/// and 2, close that pidfd, and lead a new session if `new_session`.
fn stdio_calls(stdio: [RawFd; 3], new_session: bool) -> Vec<StdioCall> {
    let mut calls: Vec<StdioCall> = (0..3)
        .map(|i| StdioCall {
            what: "take a stdio descriptor",
            nr: libc::SYS_pidfd_getfd,
            args: [PIDFD_AT, stdio[i] as u64, 0, 0, 0, 0],
            expect: Some(i as u64),
        })
        .collect();
    calls.push(StdioCall {
        what: "close the pidfd of the daemon",
        nr: libc::SYS_close,
        args: [PIDFD_AT, 0, 0, 0, 0, 0],
        expect: Some(0),
    });
    // pidfd_getfd's descriptors are close-on-exec; stdio is not.
    for fd in 0..3 {
        calls.push(StdioCall {
            what: "keep a stdio descriptor across exec",
            nr: libc::SYS_fcntl,
            args: [fd, libc::F_SETFD as u64, 0, 0, 0, 0],
            expect: Some(0),
        });
    }
    if new_session {
        calls.push(StdioCall {
            what: "lead a new session",
            nr: libc::SYS_setsid,
            args: [0; 6],
            expect: None,
        });
    }
    calls
}

/// A stub cloned ahead of its restore ([`StubFactory::prespawn`]); killed
/// when dropped unless a restore took it.
#[derive(Debug)]
pub struct Prespawned {
    /// 0 once taken.
    pid: i32,
    /// The pid asked for.
    wanted: Option<i32>,
    /// The zygote it was cloned from.
    zygote: i32,
    made: std::time::Instant,
}

impl Prespawned {
    /// How long ago it was made.
    pub fn age(&self) -> std::time::Duration {
        self.made.elapsed()
    }

    /// Its pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The pid it was asked for.
    pub fn wanted(&self) -> Option<i32> {
        self.wanted
    }

    /// The second half of [`StubFactory::spawn`], left to the restore:
    /// the stub's pid, and the calls that give it `stdio` and a new
    /// session if asked (each with the result it must have, if one), to
    /// be made there before any other.
    pub(crate) fn defer_stdio(self, stdio: [RawFd; 3], new_session: bool) -> (i32, Vec<StdioCall>) {
        (self.take(), stdio_calls(stdio, new_session))
    }

    fn take(mut self) -> i32 {
        std::mem::take(&mut self.pid)
    }
}

impl Drop for Prespawned {
    fn drop(&mut self) {
        if self.pid > 0 {
            kill_stub(self.pid);
        }
    }
}

impl Drop for StubFactory {
    fn drop(&mut self) {
        kill_stub(self.zygote());
    }
}

/// Readies the zygote `pid`, a stub just spawned: as any stub
/// ([`prepare_stub`]), its injection page kept from the top of the
/// address space, and its descriptors: none but a pidfd of this process
/// at [`PIDFD_AT`].
fn ready_zygote(pid: i32) -> Result<(Remote, u64), RestoreError> {
    let (mut zygote, site, _) = prepare_stub(pid, &[(SITE_BELOW, USER_TOP)])?;
    let me = u64::from(std::process::id());
    let calls = [
        (libc::SYS_close_range, [0, u64::from(u32::MAX), 0, 0, 0, 0]),
        (libc::SYS_pidfd_open, [me, 0, 0, 0, 0, 0]),
        (
            libc::SYS_dup3,
            [0, PIDFD_AT, libc::O_CLOEXEC as u64, 0, 0, 0],
        ),
        (libc::SYS_close, [0, 0, 0, 0, 0, 0]),
    ];
    let got = batch(&mut zygote, site, &calls).map_err(sys("ready the zygote"))?;
    if got != [0, 0, PIDFD_AT, 0] {
        return Err(RestoreError::Sys {
            what: "give the zygote a pidfd of the daemon".into(),
            source: io::Error::other(format!("the calls returned {got:?}")),
        });
    }
    Ok((zygote, site))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdio_calls_take_0_1_2_then_close_the_pidfd() {
        let calls = stdio_calls([7, 8, 9], true);
        let taken: Vec<_> = calls
            .iter()
            .filter(|c| c.nr == libc::SYS_pidfd_getfd)
            .map(|c| (c.args[1], c.expect))
            .collect();
        assert_eq!(taken, [(7, Some(0)), (8, Some(1)), (9, Some(2))]);
        assert_eq!(calls.last().unwrap().nr, libc::SYS_setsid);
        let closed: Vec<_> = calls.iter().filter(|c| c.nr == libc::SYS_close).collect();
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].args[0], PIDFD_AT);
        assert!(stdio_calls([0, 1, 2], false)
            .iter()
            .all(|c| c.nr != libc::SYS_setsid));
    }
}
