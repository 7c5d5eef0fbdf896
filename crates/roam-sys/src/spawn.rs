//! Starting a process with a user's credentials, and reaping processes.

use roam_proto::types::ExitStatus;
use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// What to run and how: see [`spawn`].
#[derive(Debug)]
pub struct SpawnRequest<'a> {
    /// A path, or a bare name searched in the PATH of `env` (like execvpe);
    /// if `env` has no PATH, "/usr/local/bin:/usr/bin:/bin".
    pub program: &'a [u8],
    /// argv, argv[0] first. If empty, `program` is used as argv[0].
    pub argv: &'a [Vec<u8>],
    /// Environment entries, "NAME=value".
    pub env: &'a [Vec<u8>],
    /// Working directory; empty means "stay where the caller is".
    pub cwd: &'a [u8],
    pub umask: u32,
    pub uid: u32,
    pub gid: u32,
    pub groups: &'a [u32],
    pub stdin: BorrowedFd<'a>,
    pub stdout: BorrowedFd<'a>,
    pub stderr: BorrowedFd<'a>,
    /// If set, this fd (a pty slave, which is also one of the stdio fds)
    /// becomes the controlling terminal (TIOCSCTTY after setsid).
    pub controlling_tty: Option<BorrowedFd<'a>>,
    /// If set, the process runs in a mount namespace of its own whose `/`
    /// is this directory (a mount point: the remote file system's view of
    /// the home's tree), with this machine's `/proc`, `/sys` and `/dev`
    /// bound over the ones there. Needs root.
    pub root: Option<&'a [u8]>,
    /// With `root`: the mount namespace of a [`SharedRoot`] of it, which
    /// the process enters instead of having one made for it.
    pub root_ns: Option<BorrowedFd<'a>>,
    /// An open file the child keeps under its number N, for `program` (or
    /// a runner's argument) to name as `/proc/self/fd/N`: an executable
    /// that is not in the tree of `root` (a node's staged copy).
    pub exec_file: Option<ExecFile<'a>>,
}

/// See [`SpawnRequest::exec_file`].
#[derive(Debug, Clone, Copy)]
pub struct ExecFile<'a> {
    pub fd: BorrowedFd<'a>,
    /// Left open across the exec, for a runner that opens the file by its
    /// `/proc/self/fd` name after the exec (qemu-user). Otherwise it
    /// closes at the exec, which needs it only to find the file.
    pub inherit: bool,
}

/// Why a process could not be started. The messages carry the OS error
/// text, so the OS error is not repeated as a `source()`; [`SpawnError::io_error`]
/// gives it to code that wants to look at it.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("invalid {what}: contains a NUL byte")]
    Nul { what: &'static str },
    #[error("cannot create pipe: {0}")]
    Pipe(io::Error),
    #[error("fork failed: {0}")]
    Fork(io::Error),
    #[error("cannot execute '{program}': {error}")]
    Exec { program: String, error: io::Error },
    #[error("cannot change to directory '{path}': {error}")]
    Chdir { path: String, error: io::Error },
    #[error("cannot switch to uid {uid} gid {gid}: {error}")]
    Credentials {
        uid: u32,
        gid: u32,
        error: io::Error,
    },
    #[error("cannot set up the child ({stage}): {error}")]
    Setup {
        stage: &'static str,
        error: io::Error,
    },
}

impl SpawnError {
    /// The operating-system error behind this one, if any.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            SpawnError::Nul { .. } => None,
            SpawnError::Pipe(e) | SpawnError::Fork(e) => Some(e),
            SpawnError::Exec { error, .. }
            | SpawnError::Chdir { error, .. }
            | SpawnError::Credentials { error, .. }
            | SpawnError::Setup { error, .. } => Some(error),
        }
    }
}

/// Where the child failed; sent through the status pipe with the errno.
#[derive(Clone, Copy)]
#[repr(u32)]
enum Stage {
    Setsid = 1,
    Ctty,
    Stdio,
    Credentials,
    Chdir,
    DeathSignal,
    CloseFds,
    Exec,
    /// Not a failure: the program's pid (a terminal session's keeper
    /// reports it, as the program is not the child `fork` returned).
    Pid,
    /// Setting up the program's process group under the keeper.
    JobGroup,
    /// Entering the mount namespace and root of `SpawnRequest::root`.
    Root,
    /// Installing the system-call filter of [`spawn_supervised`] and
    /// sending its listener.
    Supervise,
}

impl Stage {
    fn from_u32(v: u32) -> Option<Stage> {
        use Stage::*;
        [
            Setsid,
            Ctty,
            Stdio,
            Credentials,
            Chdir,
            DeathSignal,
            CloseFds,
            Exec,
            Pid,
            JobGroup,
            Root,
            Supervise,
        ]
        .into_iter()
        .find(|s| *s as u32 == v)
    }
}

/// sizeof(kernel sigset_t), the last argument of rt_sigaction.
#[cfg(any(target_arch = "mips", target_arch = "mips64"))]
const KERNEL_SIGSET_SIZE: usize = 16;
#[cfg(not(any(target_arch = "mips", target_arch = "mips64")))]
const KERNEL_SIGSET_SIZE: usize = 8;

#[cfg(not(any(target_arch = "x86", target_arch = "arm")))]
use libc::{
    SYS_setgroups as SYS_SETGROUPS, SYS_setresgid as SYS_SETRESGID, SYS_setresuid as SYS_SETRESUID,
};
/// The credential calls with 32-bit ids (on 32-bit x86 and arm the plain
/// numbers take 16-bit ids).
#[cfg(any(target_arch = "x86", target_arch = "arm"))]
use libc::{
    SYS_setgroups32 as SYS_SETGROUPS, SYS_setresgid32 as SYS_SETRESGID,
    SYS_setresuid32 as SYS_SETRESUID,
};

const DEFAULT_PATH: &[u8] = b"/usr/local/bin:/usr/bin:/bin";

/// Everything the child needs, built before fork: between fork and exec
/// the child makes only async-signal-safe calls and allocates nothing.
struct Prepared {
    candidates: Vec<CString>,
    /// Kept alive for `argv_ptrs`.
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _env: Vec<CString>,
    env_ptrs: Vec<*const libc::c_char>,
    cwd: Option<CString>,
    groups: Vec<libc::gid_t>,
    switch_cred: bool,
    uid: u32,
    gid: u32,
    umask: libc::mode_t,
    stdio: [RawFd; 3],
    ctty: Option<RawFd>,
    /// With a controlling terminal: (read, write) ends of the pipes the
    /// program tells the keeper it leads its group by, and the anchor tells
    /// the program it has joined that group by.
    job_pipes: Option<[RawFd; 4]>,
    /// Where to stop closing fds if close_range is missing.
    max_fd: RawFd,
    /// The new root, and the node-local trees bound into it: (source,
    /// target) pairs.
    root: Option<(CString, Vec<(CString, CString)>)>,
    /// [`SpawnRequest::root_ns`].
    root_ns: Option<RawFd>,
    parent: libc::pid_t,
    /// For [`spawn_supervised`]: the filter to install just before exec,
    /// and the socket to send its listener on.
    supervise: Option<(Vec<libc::sock_filter>, RawFd)>,
    /// For [`spawn_supervised`] with a confinement: its allow-list filter,
    /// installed just before the supervision's.
    confine: Option<Vec<libc::sock_filter>>,
    /// [`SpawnRequest::exec_file`]: the descriptor, and whether it stays
    /// open across the exec.
    exec_fd: Option<(RawFd, bool)>,
}

/// A root for [`enter_root`]: the view's path, and the node's trees to
/// bind into it (source, target).
pub(crate) type Root = (CString, Vec<(CString, CString)>);

/// The root `r` with the node's `/proc`, `/sys` and `/dev` bound into it.
pub(crate) fn prepare_root(r: &[u8]) -> Result<Root, SpawnError> {
    let mut binds = Vec::new();
    for dir in ["proc", "sys", "dev"] {
        let mut target = r.to_vec();
        if !target.ends_with(b"/") {
            target.push(b'/');
        }
        target.extend_from_slice(dir.as_bytes());
        binds.push((
            cstring(format!("/{dir}").as_bytes(), "directory")?,
            cstring(&target, "root")?,
        ));
    }
    Ok((cstring(r, "root")?, binds))
}

/// A mount namespace whose `/` is a root ([`SpawnRequest::root`]), made
/// once and entered by each process spawned with it
/// ([`SpawnRequest::root_ns`]), instead of one made for each process
/// (copying the node's mounts, binding its `/proc`, `/sys` and `/dev`,
/// pivoting: about half a millisecond of every start, and as much again
/// when the process ends and its namespace is torn down). The processes of
/// one node share it, as the processes of one machine share theirs.
///
/// It holds the root's mount: drop it before that mount is dropped (its
/// file server waits for every user of the mount to go).
#[derive(Debug)]
pub struct SharedRoot {
    root: Vec<u8>,
    device: u64,
    ns: OwnedFd,
}

impl SharedRoot {
    /// Makes the namespace: a child enters the root as a spawned process
    /// would, its namespace is kept, and the child ends.
    pub fn new(root: &[u8]) -> io::Result<SharedRoot> {
        let device = root_device(root)?;
        let (dir, binds) =
            prepare_root(root).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let (ready_r, ready_w) = pipe()?;
        let (hold_r, hold_w) = pipe()?;
        let theirs = [ready_r.as_raw_fd(), hold_w.as_raw_fd()];
        // SAFETY: a fork (clone3 without CLONE_VM); the child makes raw
        // calls only and exits.
        let child = unsafe { clone_process(false, 0) };
        if child == 0 {
            // SAFETY: in the child: raw calls on its own descriptors and
            // namespaces, then _exit.
            unsafe {
                // Our ends only: the hold ends when the parent's write end
                // is closed.
                for fd in theirs {
                    libc::close(fd);
                }
                let rc: i32 = match enter_root(&dir, &binds) {
                    Ok(()) => 0,
                    Err(e) => e,
                };
                libc::write(ready_w.as_raw_fd(), (&rc as *const i32).cast(), 4);
                let mut b = 0u8;
                libc::read(hold_r.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
                libc::_exit(0)
            }
        }
        if child < 0 {
            return Err(io::Error::last_os_error());
        }
        drop((ready_w, hold_r));
        let mut rc = [0u8; 4];
        let got = std::fs::File::from(ready_r).read_exact(&mut rc);
        let ns = match got {
            Ok(()) if i32::from_ne_bytes(rc) == 0 => {
                std::fs::File::open(format!("/proc/{child}/ns/mnt")).map(OwnedFd::from)
            }
            Ok(()) => Err(io::Error::from_raw_os_error(i32::from_ne_bytes(rc))),
            Err(e) => Err(e),
        };
        // The child ends once the write end is gone; the node's reaper may
        // take it first (ECHILD here).
        drop(hold_w);
        let _ = waitpid(child, 0);
        Ok(SharedRoot {
            root: root.to_vec(),
            device,
            ns: ns?,
        })
    }

    /// Whether this is the namespace of `root` as it is mounted now.
    pub fn serves(&self, root: &[u8]) -> bool {
        self.root == root && root_device(root).ok() == Some(self.device)
    }

    /// The namespace, for [`SpawnRequest::root_ns`].
    pub fn ns(&self) -> BorrowedFd<'_> {
        self.ns.as_fd()
    }
}

/// The device number of the file system mounted at `root` (a remount
/// makes a new one), from what the kernel has cached: a network file
/// system is not asked (statx with AT_STATX_DONT_SYNC).
pub fn root_device(root: &[u8]) -> io::Result<u64> {
    let path = CString::new(root).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: an all-zero `statx` is a valid value of this plain C struct.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid C string and `st` a writable statx, both
    // outliving the call.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_STATX_DONT_SYNC,
            libc::STATX_TYPE,
            &mut st,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(libc::makedev(st.stx_dev_major, st.stx_dev_minor))
}

fn cstring(bytes: &[u8], what: &'static str) -> Result<CString, SpawnError> {
    CString::new(bytes).map_err(|_| SpawnError::Nul { what })
}

fn null_terminated(v: &[CString]) -> Vec<*const libc::c_char> {
    v.iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// The paths execvpe would try for `program`, in order.
fn exec_candidates(program: &[u8], env: &[Vec<u8>]) -> Vec<Vec<u8>> {
    if program.contains(&b'/') {
        return vec![program.to_vec()];
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix(b"PATH="))
        .unwrap_or(DEFAULT_PATH);
    path.split(|&b| b == b':')
        .map(|dir| {
            if dir.is_empty() {
                // An empty PATH element is the current directory.
                program.to_vec()
            } else {
                let mut p = dir.to_vec();
                if !p.ends_with(b"/") {
                    p.push(b'/');
                }
                p.extend_from_slice(program);
                p
            }
        })
        .collect()
}

fn prepare(req: &SpawnRequest<'_>) -> Result<Prepared, SpawnError> {
    let display = String::from_utf8_lossy(req.program).into_owned();
    if req.program.is_empty() {
        return Err(SpawnError::Exec {
            program: display,
            error: io::Error::from_raw_os_error(libc::ENOENT),
        });
    }
    let candidates = exec_candidates(req.program, req.env)
        .into_iter()
        .map(|c| cstring(&c, "program"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut argv = req
        .argv
        .iter()
        .map(|a| cstring(a, "argument"))
        .collect::<Result<Vec<_>, _>>()?;
    if argv.is_empty() {
        argv.push(cstring(req.program, "program")?);
    }
    let env = req
        .env
        .iter()
        .map(|e| cstring(e, "environment entry"))
        .collect::<Result<Vec<_>, _>>()?;
    let cwd = if req.cwd.is_empty() {
        None
    } else {
        Some(cstring(req.cwd, "directory")?)
    };

    let (euid, egid, mut cur_groups) = crate::cred::current_cred();
    let mut groups: Vec<libc::gid_t> = req.groups.to_vec();
    cur_groups.sort_unstable();
    cur_groups.dedup();
    let mut want = groups.clone();
    want.sort_unstable();
    want.dedup();
    // Root always switches (dropping privileges must never be skipped);
    // others only when something differs (and then need the capability).
    let switch_cred = euid == 0 || req.uid != euid || req.gid != egid || want != cur_groups;
    groups.dedup();

    let mut nofile = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the valid rlimit we pass.
    let max_fd = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut nofile) } == 0 {
        nofile.rlim_cur.min(65536) as RawFd
    } else {
        1024
    };

    let root = req.root.map(prepare_root).transpose()?;

    Ok(Prepared {
        root,
        root_ns: req
            .root_ns
            .filter(|_| req.root.is_some())
            .map(|f| f.as_raw_fd()),
        candidates,
        argv_ptrs: null_terminated(&argv),
        _argv: argv,
        env_ptrs: null_terminated(&env),
        _env: env,
        cwd,
        groups,
        switch_cred,
        uid: req.uid,
        gid: req.gid,
        umask: (req.umask & 0o777) as libc::mode_t,
        stdio: [
            req.stdin.as_raw_fd(),
            req.stdout.as_raw_fd(),
            req.stderr.as_raw_fd(),
        ],
        ctty: req.controlling_tty.map(|fd| fd.as_raw_fd()),
        job_pipes: None,
        max_fd,
        // SAFETY: getpid cannot fail.
        parent: unsafe { libc::getpid() },
        supervise: None,
        confine: None,
        exec_fd: req.exec_file.map(|f| (f.fd.as_raw_fd(), f.inherit)),
    })
}

/// fork + exec.
///
/// In the child, in this order: setsid; TIOCSCTTY if `controlling_tty`,
/// and then the child stays as the session's keeper while the program,
/// made its sibling (CLONE_PARENT, so still our child), goes on in a
/// process group of its own that it makes the terminal's foreground group
/// (see [`keeper`]: so that Ctrl-Z stops it);
/// stdio onto 0, 1, 2; setgroups, setgid, setuid (always when we are root,
/// otherwise only if the target differs from our credentials); chdir;
/// umask; PR_SET_PDEATHSIG(SIGKILL), and exit if our parent already died;
/// empty signal mask and every disposition SIG_DFL; every fd above 2
/// closed; execve (PATH search when `program` has no '/'). A failure at
/// any step comes back as the error of `spawn`, and the failed child is
/// reaped. Signals are blocked in the calling thread around fork, so no
/// handler of ours runs in the child.
///
/// Returns the child's pid; reap it with [`wait_pid`] or [`wait_any_nohang`].
///
/// PR_SET_PDEATHSIG fires when the *thread* that forked exits, not the
/// process: call `spawn` from a thread that lives as long as the child
/// should (not from a short-lived blocking-pool thread).
///
/// A concurrent `waitpid(-1)` elsewhere in the process ([`wait_any_nohang`])
/// may reap a child that failed before exec; it then reports an exit with
/// status 127 for a pid `spawn` never returned.
pub fn spawn(req: &SpawnRequest<'_>) -> Result<u32, SpawnError> {
    spawn_inner(req, None)
}

/// [`spawn`], with the program's system calls `syscalls` (this machine's
/// numbers, `libc::SYS_*`) handed to a supervisor: the child installs a
/// seccomp user-notification filter for them (see [`crate::seccomp`])
/// after everything else, just before execve, and sends its listener
/// back. Returns the pid and the listener.
///
/// The filter catches the calls of the program and of everything it
/// starts, from its first instruction: answer them (with
/// [`crate::seccomp::Listener`]) from another thread, or the program
/// waits. execve is never worth listing: the child would wait for an
/// answer before `spawn_supervised` could return the listener.
///
/// The child sets no_new_privs first (needed to install a filter without
/// CAP_SYS_ADMIN once it runs as the user): the program and its
/// descendants never gain privileges through set-user-ID programs or
/// file capabilities.
///
/// With `confine` (a list of calls, this machine's numbers), the child
/// also installs an allow-list filter just before the supervision's: the
/// program's calls outside `confine` and `syscalls` fail with EPERM, and
/// the calls of both lists go to the supervisor. List execve and execveat
/// in `syscalls` then, and let the supervisor allow the first (the
/// child's own, which starts the program) and refuse the others.
pub fn spawn_supervised(
    req: &SpawnRequest<'_>,
    syscalls: &[i64],
) -> Result<(u32, OwnedFd), SpawnError> {
    let mut sock = None;
    let pid = spawn_supervised_with(req, syscalls, false, |s| {
        sock = Some(s);
        Ok(())
    })?;
    // Exec'd: the listener is waiting in the socket.
    match sock.and_then(|s| recv_fd(s.as_fd(), false).ok().flatten()) {
        Some(l) => Ok((pid, l)),
        None => {
            // Cannot happen (the child reports failures before exec), but
            // never leave a program running unsupervised.
            let _ = crate::signal::kill(pid as i32, libc::SIGKILL);
            let _ = waitpid(pid as libc::pid_t, 0);
            Err(SpawnError::Setup {
                stage: "system-call supervision",
                error: io::Error::from(io::ErrorKind::UnexpectedEof),
            })
        }
    }
}

/// [`spawn_supervised`] for a supervisor that answers calls of the child
/// before its exec returns: `handoff` gets our end of the socket the
/// child sends its filter's listener on, before the child exists, and
/// must take the listener from it ([`recv_fd`], waiting) on a thread of
/// its own. (The exec calls of a confinement are such calls: the child
/// waits for their answer, and we for its exec.)
///
/// With `confine`, the child also installs the allow-list filter of
/// [`crate::confine::worker_filter`] after the supervision's: the
/// program's calls outside it and `syscalls` fail with EPERM, and
/// the calls of both lists go to the supervisor. List execve and execveat
/// in `syscalls` then, and let the supervisor allow the first (the
/// child's own, which starts the program) and refuse the others: the
/// child of a confinement makes one exec only (it looks the program up
/// in PATH with access(2) first).
pub fn spawn_supervised_with(
    req: &SpawnRequest<'_>,
    syscalls: &[i64],
    confine: bool,
    handoff: impl FnOnce(OwnedFd) -> io::Result<()>,
) -> Result<u32, SpawnError> {
    let unsupported = |e: crate::seccomp::FilterError| SpawnError::Setup {
        stage: "system-call supervision",
        error: io::Error::new(io::ErrorKind::Unsupported, e.to_string()),
    };
    let notify = crate::seccomp::notify_filter(syscalls).map_err(unsupported)?;
    let confine = confine
        .then(|| crate::confine::worker_filter(syscalls))
        .transpose()
        .map_err(unsupported)?;
    spawn_inner(
        req,
        Some(Supervise {
            notify,
            confine,
            handoff: Box::new(handoff),
        }),
    )
}

/// What a supervised spawn installs, and where its listener goes.
struct Supervise<'a> {
    notify: Vec<libc::sock_filter>,
    confine: Option<Vec<libc::sock_filter>>,
    handoff: Box<dyn FnOnce(OwnedFd) -> io::Result<()> + 'a>,
}

fn spawn_inner(
    req: &SpawnRequest<'_>,
    supervise: Option<Supervise<'_>>,
) -> Result<u32, SpawnError> {
    let mut prep = prepare(req)?;
    // The listener comes back over a socket (a pipe cannot carry fds).
    let theirs = match supervise {
        None => None,
        Some(sup) => {
            let (ours, theirs) = socketpair_seqpacket().map_err(SpawnError::Pipe)?;
            let theirs = above_stdio(theirs)?;
            prep.supervise = Some((sup.notify, theirs.as_raw_fd()));
            prep.confine = sup.confine;
            (sup.handoff)(ours).map_err(|error| SpawnError::Setup {
                stage: "the system-call supervisor",
                error,
            })?;
            Some(theirs)
        }
    };
    let (status_r, status_w) = pipe().map_err(SpawnError::Pipe)?;
    // The child dup2s onto 0..=2: keep the status pipe out of the way.
    let status_w = above_stdio(status_w)?;
    // Kept open until the children have theirs.
    let mut job_pipes: Vec<OwnedFd> = Vec::new();
    if prep.ctty.is_some() {
        for _ in 0..2 {
            let (r, w) = pipe().map_err(SpawnError::Pipe)?;
            job_pipes.push(above_stdio(r)?);
            job_pipes.push(above_stdio(w)?);
        }
        prep.job_pipes = Some([
            job_pipes[0].as_raw_fd(),
            job_pipes[1].as_raw_fd(),
            job_pipes[2].as_raw_fd(),
            job_pipes[3].as_raw_fd(),
        ]);
    }

    // SAFETY: sigset_t is plain data, filled in by sigfillset; the masks
    // are valid pointers. Blocking all signals around fork keeps our
    // handlers from running in the child before it resets them.
    let old_mask = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        old
    };
    let pid = if prep.ctty.is_none() {
        vfork_child(&prep, status_w.as_raw_fd())
    } else {
        // The session keeper lives on after the program's exec: a real
        // fork, not a child that borrows our memory.
        // SAFETY: the child runs only `child_after_fork`, which makes
        // async-signal-safe calls on data prepared before fork and never
        // returns.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: we are the child of fork; `prep` and the status fd are valid.
            unsafe { child_after_fork(&prep, status_w.as_raw_fd()) }
        }
        pid
    };
    let fork_err = io::Error::last_os_error();
    // SAFETY: restoring the mask saved above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut());
    }
    drop(status_w);
    drop(job_pipes);
    drop(theirs);
    if pid < 0 {
        return Err(SpawnError::Fork(fork_err));
    }

    let mut file = std::fs::File::from(status_r);
    // With a terminal, `pid` is the session's keeper, which reports the
    // program's pid first.
    let mut program = pid;
    let (got, report) = loop {
        let mut report = [0u8; 8];
        let mut got = 0;
        while got < report.len() {
            match file.read(&mut report[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let stage = u32::from_ne_bytes([report[0], report[1], report[2], report[3]]);
        if got == report.len() && stage == Stage::Pid as u32 {
            program = i32::from_ne_bytes([report[4], report[5], report[6], report[7]]);
            continue;
        }
        break (got, report);
    };
    if got == 0 {
        // Exec'd.
        return Ok(program as u32);
    }
    // The child failed before exec: reap it so no zombie is left (and the
    // keeper, which ends with it).
    let _ = waitpid(program, 0);
    if program != pid {
        let _ = waitpid(pid, 0);
    }
    if got < report.len() {
        return Err(SpawnError::Setup {
            stage: "status report",
            error: io::Error::from(io::ErrorKind::UnexpectedEof),
        });
    }
    let stage = u32::from_ne_bytes([report[0], report[1], report[2], report[3]]);
    let errno = i32::from_ne_bytes([report[4], report[5], report[6], report[7]]);
    let error = io::Error::from_raw_os_error(errno);
    Err(match Stage::from_u32(stage) {
        Some(Stage::Exec) => SpawnError::Exec {
            program: String::from_utf8_lossy(req.program).into_owned(),
            error,
        },
        Some(Stage::Chdir) => SpawnError::Chdir {
            path: String::from_utf8_lossy(req.cwd).into_owned(),
            error,
        },
        Some(Stage::Credentials) => SpawnError::Credentials {
            uid: req.uid,
            gid: req.gid,
            error,
        },
        Some(s) => SpawnError::Setup {
            stage: match s {
                Stage::Setsid => "setsid",
                Stage::Ctty => "controlling terminal",
                Stage::Stdio => "standard streams",
                Stage::DeathSignal => "parent death signal",
                Stage::JobGroup => "process group",
                Stage::Root => "the home's file tree as its root",
                Stage::Supervise => "system-call supervision",
                _ => "closing descriptors",
            },
            error,
        },
        None => SpawnError::Setup {
            stage: "unknown",
            error,
        },
    })
}

/// Stack of a vfork child: it runs [`child_after_fork`] only, whose frames
/// are small.
const VFORK_STACK: usize = 64 * 1024;

struct VforkArgs<'a> {
    prep: &'a Prepared,
    status_fd: RawFd,
}

extern "C" fn vfork_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `VforkArgs` that `vfork_child` passed, alive
    // until we exec or exit (the parent is suspended until then).
    unsafe {
        let a = &*(arg as *const VforkArgs<'_>);
        child_after_fork(a.prep, a.status_fd)
    }
}

/// Starts the child with CLONE_VM|CLONE_VFORK, as posix_spawn does: no
/// copy of our page tables (a fork of a daemon with tens of megabytes
/// mapped costs a tenth of a millisecond more), and this thread sleeps
/// until the child has exec'd or exited. The child runs on its own stack
/// and shares our memory, which [`child_after_fork`] only reads; every
/// call it makes is a raw or async-signal-safe system call (glibc's
/// setuid family would try to signal our threads). Returns the pid, or -1
/// with errno set.
fn vfork_child(prep: &Prepared, status_fd: RawFd) -> libc::pid_t {
    let mut stack = vec![0u8; VFORK_STACK];
    let args = VforkArgs { prep, status_fd };
    // 16-byte aligned top of the stack (stacks grow down on every
    // architecture Linux runs this code on).
    let top = ((stack.as_mut_ptr() as usize + VFORK_STACK) & !15) as *mut libc::c_void;
    // SAFETY: `vfork_entry` never returns into glibc's clone frame (it
    // execs or _exits); `stack` and `args` outlive the child's use of them
    // because CLONE_VFORK suspends us until the child execs or exits.
    unsafe {
        libc::clone(
            vfork_entry,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&raw const args) as *mut libc::c_void,
        )
    }
}

/// Reports `(stage, errno)` to the parent and exits.
///
/// # Safety
/// Only in the child of fork.
unsafe fn child_fail(status_fd: RawFd, stage: Stage, errno: i32) -> ! {
    // SAFETY: report and _exit are async-signal-safe.
    unsafe {
        report(status_fd, stage, errno);
        libc::_exit(127)
    }
}

/// Sends `(stage, value)` to the parent.
///
/// # Safety
/// Only in a child of fork.
/// The pid in a keeper's report (see [`keeper`]); None if `msg` is not one.
pub(crate) fn reported_pid(msg: [u8; 8]) -> Option<libc::pid_t> {
    let stage = u32::from_ne_bytes(msg[..4].try_into().expect("4 bytes"));
    let pid = i32::from_ne_bytes(msg[4..].try_into().expect("4 bytes"));
    (stage == Stage::Pid as u32 && pid > 0).then_some(pid)
}

unsafe fn report(status_fd: RawFd, stage: Stage, value: i32) {
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&(stage as u32).to_ne_bytes());
    msg[4..].copy_from_slice(&value.to_ne_bytes());
    // SAFETY: writing a local buffer to a pipe is async-signal-safe. 8
    // bytes < PIPE_BUF, so the write is atomic.
    unsafe {
        libc::write(status_fd, msg.as_ptr().cast(), msg.len());
    }
}

/// clone3 without a new stack (a fork): the new process's pid in the
/// caller, 0 in it, -1 on failure. With `parent`, CLONE_PARENT: the new
/// process is our sibling (our parent's child), in our session. With
/// `want` (not 0), the new process gets that pid or the call fails (needs
/// CAP_SYS_ADMIN).
///
/// # Safety
/// Only in a single-threaded child of fork, which then makes only
/// async-signal-safe calls (no atfork handlers run).
pub(crate) unsafe fn clone_process(parent: bool, want: libc::pid_t) -> libc::pid_t {
    // struct clone_args up to `set_tid_size` (CLONE_ARGS_SIZE_VER1):
    // flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size,
    // tls, set_tid, set_tid_size. With CLONE_PARENT the exit signal must
    // be 0 (it is our own, SIGCHLD).
    let wanted = [want];
    let mut args = [0u64; 10];
    if parent {
        args[0] = libc::CLONE_PARENT as u64;
    } else {
        args[4] = libc::SIGCHLD as u64;
    }
    if want > 0 {
        args[8] = wanted.as_ptr() as u64;
        args[9] = 1;
    }
    // SAFETY: clone3 reads `args`, which is valid for its size.
    unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args.as_mut_ptr(),
            std::mem::size_of_val(&args),
        ) as libc::pid_t
    }
}

/// A terminal session's keeper, in the session leader `spawn` forked: the
/// program (`program`, our sibling) leads the terminal's foreground process
/// group, and an anchor, our child, joins that group. The group then has a
/// member whose parent is in the session but not in the group: it is not
/// orphaned, so the terminal's stop signals (Ctrl-Z) stop the program, as
/// under a shell (the kernel ignores SIGTSTP, SIGTTIN and SIGTTOU in an
/// orphaned group). The keeper stays the session leader until the anchor
/// ends, which is when the program ends.
///
/// # Safety
/// Only in the child of fork, as [`child_after_fork`].
pub(crate) unsafe fn keeper(status_fd: RawFd, pipes: [RawFd; 4], program: libc::pid_t) -> ! {
    let [led_r, led_w, joined_r, joined_w] = pipes;
    // SAFETY: async-signal-safe calls on our own descriptors and children.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        report(status_fd, Stage::Pid, program);
        libc::close(status_fd);
        libc::close(led_w);
        libc::close(joined_r);
        let mut b = 0u8;
        // The program leads its group (or ended: end of file).
        if libc::read(led_r, (&raw mut b).cast(), 1) != 1 {
            libc::_exit(0);
        }
        let anchor = clone_process(false, 0);
        if anchor == 0 {
            // Opened while the program waits for us: it cannot have ended
            // and had its pid reused.
            let pidfd = libc::syscall(libc::SYS_pidfd_open, program, 0) as libc::c_int;
            if pidfd < 0 || libc::setpgid(0, program) < 0 {
                libc::_exit(0);
            }
            libc::write(joined_w, (&raw const b).cast(), 1);
            libc::syscall(libc::SYS_close_range, 0u32, (pidfd - 1) as u32, 0u32);
            libc::syscall(libc::SYS_close_range, (pidfd + 1) as u32, u32::MAX, 0u32);
            // Stay until the program ends. Every signal stays blocked
            // (since spawn), so the terminal's signals to the group pass
            // us by.
            let mut pfd = libc::pollfd {
                fd: pidfd,
                events: libc::POLLIN,
                revents: 0,
            };
            while libc::poll(&mut pfd, 1, -1) < 0 && errno() == libc::EINTR {}
            libc::_exit(0);
        }
        libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
        if anchor > 0 {
            let mut st = 0;
            while libc::waitpid(anchor, &mut st, 0) < 0 && errno() == libc::EINTR {}
        }
        libc::_exit(0)
    }
}

/// The program's side of [`keeper`]: leads a process group of its own,
/// makes it the foreground group of terminal `tty`, and waits until the
/// keeper's anchor has joined it. Err(errno) if it cannot.
///
/// # Safety
/// Only in the child of fork, as [`child_after_fork`], with SIGTTOU
/// blocked (tcsetpgrp from a background group raises it).
pub(crate) unsafe fn join_foreground(tty: RawFd, pipes: [RawFd; 4]) -> Result<(), i32> {
    let [led_r, led_w, joined_r, joined_w] = pipes;
    // SAFETY: async-signal-safe calls on our own descriptors.
    unsafe {
        libc::close(led_r);
        libc::close(joined_w);
        let me = libc::getpid();
        if libc::setpgid(0, 0) < 0 || libc::ioctl(tty, libc::TIOCSPGRP, &me) < 0 {
            return Err(errno());
        }
        let b = 1u8;
        libc::write(led_w, (&raw const b).cast(), 1);
        libc::close(led_w);
        // Until the anchor is in our group (end of file if it or the
        // keeper died: go on, only Ctrl-Z is lost).
        let mut got = 0u8;
        while libc::read(joined_r, (&raw mut got).cast(), 1) < 0 && errno() == libc::EINTR {}
        libc::close(joined_r);
    }
    Ok(())
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// The child's side of [`spawn`].
///
/// # Safety
/// Only in the child of fork or of [`vfork_child`] (which shares our
/// memory: nothing here writes to memory but the child's own stack and
/// errno). Makes only async-signal-safe calls and does
/// not allocate.
/// Closes every descriptor from 3 up but those in `keep` (sorted here, in
/// place: no allocation after fork). Async-signal-safe. Returns -1 with
/// errno set if close_range fails for another reason than its absence
/// (then descriptors up to `max_fd` are closed one by one).
fn close_all_but(keep: &mut [RawFd], max_fd: RawFd) -> i32 {
    // Insertion sort: a few entries.
    for i in 1..keep.len() {
        let mut j = i;
        while j > 0 && keep[j - 1] > keep[j] {
            keep.swap(j - 1, j);
            j -= 1;
        }
    }
    let mut first: RawFd = 3;
    for &k in keep.iter().chain(std::iter::once(&RawFd::MAX)) {
        if k < first {
            continue;
        }
        if k > first {
            let last = if k == RawFd::MAX { k } else { k - 1 };
            // SAFETY: close_range takes two numbers and flags; closing
            // descriptors of this (forked) child is its own business.
            let rc =
                unsafe { libc::syscall(libc::SYS_close_range, first as u32, last as u32, 0u32) };
            if rc < 0 {
                if errno() != libc::ENOSYS {
                    return -1;
                }
                for fd in first..=last.min(max_fd) {
                    // SAFETY: as above.
                    unsafe { libc::close(fd) };
                }
            }
        }
        if k == RawFd::MAX {
            break;
        }
        first = k + 1;
    }
    0
}

unsafe fn child_after_fork(p: &Prepared, status_fd: RawFd) -> ! {
    // SAFETY: every call below is an async-signal-safe system call wrapper
    // operating on fds we own in this child and on memory prepared before
    // fork that stays alive (the parent's copy of it is ours after fork).
    unsafe {
        // First of all, drop every descriptor the child does not need: the
        // daemon's among them, /dev/fuse of the node's view of the home's
        // files included. Holding that one, a child caught in a call on
        // that file system (entering its root, chdir) when the daemon dies
        // would wait for an answer only it could give, unkillably, and the
        // mount would never fail its callers.
        let mut keep = [-1 as RawFd; 12];
        keep[0] = status_fd;
        keep[1..4].copy_from_slice(&p.stdio);
        keep[4] = p.ctty.unwrap_or(-1);
        if let Some(j) = p.job_pipes {
            keep[5..9].copy_from_slice(&j);
        }
        keep[9] = p.supervise.as_ref().map_or(-1, |s| s.1);
        keep[10] = p.exec_fd.map_or(-1, |e| e.0);
        // Close-on-exec: gone at the exec.
        keep[11] = p.root_ns.unwrap_or(-1);
        if close_all_but(&mut keep, p.max_fd) < 0 {
            child_fail(status_fd, Stage::CloseFds, errno());
        }
        if libc::setsid() < 0 {
            child_fail(status_fd, Stage::Setsid, errno());
        }
        if let Some(tty) = p.ctty {
            if libc::ioctl(tty, libc::TIOCSCTTY, 0) < 0 {
                child_fail(status_fd, Stage::Ctty, errno());
            }
            if let Some(pipes) = p.job_pipes {
                // We stay the session's keeper; the program is our sibling.
                let program = clone_process(true, 0);
                if program < 0 {
                    child_fail(status_fd, Stage::JobGroup, errno());
                }
                if program > 0 {
                    keeper(status_fd, pipes, program);
                }
                if let Err(e) = join_foreground(tty, pipes) {
                    child_fail(status_fd, Stage::JobGroup, e);
                }
            }
        }

        if let Some(ns) = p.root_ns {
            // Its root and working directory become the namespace's root
            // (the view: the kernel follows the mounts on top of it).
            if libc::setns(ns, libc::CLONE_NEWNS) < 0 {
                child_fail(status_fd, Stage::Root, errno());
            }
        } else if let Some((root, binds)) = &p.root {
            if let Err(e) = enter_root(root, binds) {
                child_fail(status_fd, Stage::Root, e);
            }
        }

        // Move sources that sit on another target out of the way, so no
        // dup2 clobbers a source still needed.
        let mut src = p.stdio;
        for (i, fd) in src.iter_mut().enumerate() {
            if *fd < 3 && *fd != i as RawFd {
                let moved = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 3);
                if moved < 0 {
                    child_fail(status_fd, Stage::Stdio, errno());
                }
                *fd = moved;
            }
        }
        for (i, &fd) in src.iter().enumerate() {
            let target = i as RawFd;
            let rc = if fd == target {
                // dup2 onto itself would keep FD_CLOEXEC.
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, target)
            };
            if rc < 0 {
                child_fail(status_fd, Stage::Stdio, errno());
            }
        }

        // Raw system calls: glibc's wrappers change every thread of the
        // process, which in a CLONE_VM child means signalling the
        // daemon's threads.
        if p.switch_cred
            && (libc::syscall(SYS_SETGROUPS, p.groups.len(), p.groups.as_ptr()) < 0
                || libc::syscall(SYS_SETRESGID, p.gid, p.gid, p.gid) < 0
                || libc::syscall(SYS_SETRESUID, p.uid, p.uid, p.uid) < 0)
        {
            child_fail(status_fd, Stage::Credentials, errno());
        }
        if let Some(cwd) = &p.cwd {
            if libc::chdir(cwd.as_ptr()) < 0 {
                child_fail(status_fd, Stage::Chdir, errno());
            }
        }
        libc::umask(p.umask);

        // After the credential change, which clears the death signal.
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) < 0 {
            child_fail(status_fd, Stage::DeathSignal, errno());
        }
        if libc::getppid() != p.parent {
            libc::_exit(127);
        }

        // The raw system call: libc's sigaction refuses the signals it
        // reserves (32, 33), which may be inherited ignored. An all-zero
        // kernel sigaction is SIG_DFL, no flags, empty mask on every layout.
        let dfl = [0u64; 8];
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    dfl.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    KERNEL_SIGSET_SIZE,
                );
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());

        // Close everything above 2 except the status pipe and the
        // supervisor's socket (both CLOEXEC), and the file to execute.
        let mut kept = [
            status_fd,
            p.supervise.as_ref().map_or(-1, |s| s.1),
            p.exec_fd.map_or(-1, |e| e.0),
        ];
        kept.sort_unstable();
        let mut ranges = [(0, -1); 4];
        let mut next = 3;
        for (i, &fd) in kept.iter().enumerate() {
            if fd >= next {
                ranges[i] = (next, fd - 1);
                next = fd + 1;
            }
        }
        ranges[3] = (next, RawFd::MAX);
        if let Some((fd, true)) = p.exec_fd {
            if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                child_fail(status_fd, Stage::CloseFds, errno());
            }
        }
        for (first, last) in ranges {
            if first > last {
                continue;
            }
            let rc = libc::syscall(libc::SYS_close_range, first as u32, last as u32, 0u32);
            if rc < 0 {
                if errno() != libc::ENOSYS {
                    child_fail(status_fd, Stage::CloseFds, errno());
                }
                for fd in first..last.min(p.max_fd) {
                    libc::close(fd);
                }
            }
        }

        let confined_pick = if p.confine.is_some() {
            match p
                .candidates
                .iter()
                .position(|c| libc::access(c.as_ptr(), libc::X_OK) == 0)
            {
                Some(i) => Some(i),
                None => child_fail(status_fd, Stage::Exec, errno()),
            }
        } else {
            None
        };

        // Last, so that none of the calls above reach the supervisor (who
        // does not have the listener before we exec).
        if let Some((prog, sock)) = &p.supervise {
            let listener = crate::seccomp::install_raw(prog);
            if listener < 0 {
                child_fail(status_fd, Stage::Supervise, -listener);
            }
            if send_fd_raw(*sock, listener) < 0 {
                child_fail(status_fd, Stage::Supervise, errno());
            }
            libc::close(listener);
            libc::close(*sock);
        }
        // And the confinement after it, which would refuse seccomp(2). It
        // lets through the exec calls, for the supervisor to decide, and
        // what the failure report below needs (write, exit).
        if let Some(prog) = &p.confine {
            let rc = crate::seccomp::install_raw_plain(prog);
            if rc < 0 {
                child_fail(status_fd, Stage::Supervise, -rc);
            }
        }

        // execvpe's search: skip missing entries, remember EACCES. A
        // confined child execs once (its supervisor allows only one): the
        // first candidate it may execute, found beforehand (above).
        let mut saw_eacces = false;
        let mut last_err = libc::ENOENT;
        let candidates = match confined_pick {
            Some(i) => &p.candidates[i..=i],
            None => &p.candidates[..],
        };
        for cand in candidates {
            libc::execve(cand.as_ptr(), p.argv_ptrs.as_ptr(), p.env_ptrs.as_ptr());
            last_err = errno();
            match last_err {
                libc::EACCES => saw_eacces = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                _ => break,
            }
        }
        if saw_eacces && matches!(last_err, libc::ENOENT | libc::ENOTDIR) {
            last_err = libc::EACCES;
        }
        child_fail(status_fd, Stage::Exec, last_err)
    }
}

/// In the child: a new mount namespace whose `/` is `root`, with `binds`
/// (node-local trees) mounted into it first. Returns the errno of the
/// step that failed.
///
/// # Safety
/// Only in a child of fork or [`vfork_child`]; makes only system calls on
/// the strings given.
pub(crate) unsafe fn enter_root(root: &CString, binds: &[(CString, CString)]) -> Result<(), i32> {
    // SAFETY: plain system calls on valid NUL-terminated strings that
    // outlive them; they change only this child's namespaces and root.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) < 0 {
            return Err(errno());
        }
        // Nothing we mount from here on propagates back to the node.
        if libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) < 0
        {
            return Err(errno());
        }
        for (source, target) in binds {
            if libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ) < 0
            {
                return Err(errno());
            }
        }
        // pivot_root(".", "."): the old root ends up on top of the new
        // one, and is then detached.
        if libc::chdir(root.as_ptr()) < 0
            || libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) < 0
            || libc::umount2(c".".as_ptr(), libc::MNT_DETACH) < 0
            || libc::chdir(c"/".as_ptr()) < 0
        {
            return Err(errno());
        }
    }
    Ok(())
}

/// Something a child did, as waitpid reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitEvent {
    Exited {
        pid: u32,
        code: i32,
    },
    /// Killed by a (native) signal.
    Signaled {
        pid: u32,
        signal: i32,
        core_dumped: bool,
    },
    Stopped {
        pid: u32,
        signal: i32,
    },
    Continued {
        pid: u32,
    },
}

impl WaitEvent {
    pub fn pid(&self) -> u32 {
        match *self {
            WaitEvent::Exited { pid, .. }
            | WaitEvent::Signaled { pid, .. }
            | WaitEvent::Stopped { pid, .. }
            | WaitEvent::Continued { pid } => pid,
        }
    }

    /// How the process ended, in wire terms; None if it has not ended. A
    /// signal without a wire number is reported as exit 128 + signal.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        match *self {
            WaitEvent::Exited { code, .. } => Some(ExitStatus::Exited(code)),
            WaitEvent::Signaled {
                signal,
                core_dumped,
                ..
            } => Some(match crate::signal::to_wire(signal) {
                Some(signal) => ExitStatus::Signaled {
                    signal,
                    core_dumped,
                },
                None => ExitStatus::Exited(128 + signal),
            }),
            _ => None,
        }
    }
}

fn decode(pid: libc::pid_t, status: i32) -> WaitEvent {
    let pid = pid as u32;
    if libc::WIFEXITED(status) {
        WaitEvent::Exited {
            pid,
            code: libc::WEXITSTATUS(status),
        }
    } else if libc::WIFSIGNALED(status) {
        WaitEvent::Signaled {
            pid,
            signal: libc::WTERMSIG(status),
            core_dumped: libc::WCOREDUMP(status),
        }
    } else if libc::WIFSTOPPED(status) {
        WaitEvent::Stopped {
            pid,
            signal: libc::WSTOPSIG(status),
        }
    } else {
        WaitEvent::Continued { pid }
    }
}

fn waitpid(pid: libc::pid_t, flags: i32) -> io::Result<Option<WaitEvent>> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into a valid local.
        let rc = unsafe { libc::waitpid(pid, &mut status, flags) };
        if rc > 0 {
            return Ok(Some(decode(rc, status)));
        }
        if rc == 0 {
            return Ok(None);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// waitpid(-1, WNOHANG|WUNTRACED|WCONTINUED); Ok(None) when nothing to
/// report or no children (ECHILD).
pub fn wait_any_nohang() -> io::Result<Option<WaitEvent>> {
    match waitpid(-1, libc::WNOHANG | libc::WUNTRACED | libc::WCONTINUED) {
        Err(e) if e.raw_os_error() == Some(libc::ECHILD) => Ok(None),
        r => r,
    }
}

/// waitpid(pid, WUNTRACED|WCONTINUED, plus WNOHANG if `nohang`): the next
/// event of that child; Ok(None) only with `nohang` when it has none yet.
/// Not a child of ours (or already reaped) is an error (ECHILD).
pub fn wait_pid(pid: u32, nohang: bool) -> io::Result<Option<WaitEvent>> {
    let pid = libc::pid_t::try_from(pid)
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ECHILD))?;
    let mut flags = libc::WUNTRACED | libc::WCONTINUED;
    if nohang {
        flags |= libc::WNOHANG;
    }
    waitpid(pid, flags)
}

/// `fd`, or a duplicate of it above 2 (the child dup2s onto 0..=2).
fn above_stdio(fd: OwnedFd) -> Result<OwnedFd, SpawnError> {
    if fd.as_raw_fd() < 3 {
        // try_clone duplicates with F_DUPFD_CLOEXEC starting at 3.
        fd.try_clone().map_err(SpawnError::Pipe)
    } else {
        Ok(fd)
    }
}

/// A connected pair of Unix sequenced-packet sockets (close-on-exec), to
/// pass a descriptor between two processes.
pub fn socketpair_seqpacket() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: socketpair writes two fds into the array.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair succeeded: both fds are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Room for one SCM_RIGHTS message with one descriptor (CMSG_SPACE(4) is
/// 16 or 24 bytes), 8-byte aligned.
type CmsgBuf = [u64; 4];

/// Sends `fd` over the Unix socket `sock` (SCM_RIGHTS), with a one-byte
/// message. Allocates nothing: fit for a child between fork and exec.
/// Returns sendmsg's result (-1 with errno set on failure).
///
/// # Safety
/// `sock` and `fd` must be open descriptors.
unsafe fn send_fd_raw(sock: RawFd, fd: RawFd) -> isize {
    let mut byte = 0u8;
    let mut iov = libc::iovec {
        iov_base: (&raw mut byte).cast(),
        iov_len: 1,
    };
    let mut buf: CmsgBuf = [0; 4];
    // SAFETY: msghdr is plain data; every pointer set below points into
    // locals that outlive the sendmsg call, and CMSG_FIRSTHDR returns a
    // header inside `buf` (whose size CMSG_SPACE(4) does not exceed).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = buf.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(4) as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(4) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL)
    }
}

/// Sends `fd` over the Unix socket `sock` (SCM_RIGHTS).
pub fn send_fd(sock: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: both descriptors are borrowed, so open for the call.
    if unsafe { send_fd_raw(sock.as_raw_fd(), fd.as_raw_fd()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Receives a descriptor sent with [`send_fd`], waiting for the message
/// if `wait`: Ok(None) if no message is there (or the message carried
/// none, or the sender closed its end). The descriptor is close-on-exec.
pub fn recv_fd(sock: BorrowedFd<'_>, wait: bool) -> io::Result<Option<OwnedFd>> {
    let mut byte = 0u8;
    let mut iov = libc::iovec {
        iov_base: (&raw mut byte).cast(),
        iov_len: 1,
    };
    let mut buf: CmsgBuf = [0; 4];
    // SAFETY: as in send_fd_raw: the pointers point into locals alive for
    // the call; the kernel writes at most msg_controllen bytes of control
    // data into `buf`.
    let (n, msg) = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = buf.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of::<CmsgBuf>() as _;
        let dontwait = if wait { 0 } else { libc::MSG_DONTWAIT };
        let n = loop {
            let n = libc::recvmsg(
                sock.as_raw_fd(),
                &mut msg,
                dontwait | libc::MSG_CMSG_CLOEXEC,
            );
            if n >= 0 || *libc::__errno_location() != libc::EINTR {
                break n;
            }
        };
        (n, msg)
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            return Ok(None);
        }
        return Err(e);
    }
    // SAFETY: CMSG_FIRSTHDR reads the header recvmsg filled in `msg`,
    // whose control pointer still points to `buf`; a header is only used
    // if the kernel wrote one of the expected kind, whose data is one fd
    // that is now ours.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
            || ((*cmsg).cmsg_len as usize) < libc::CMSG_LEN(4) as usize
        {
            return Ok(None);
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
        Ok(Some(OwnedFd::from_raw_fd(fd)))
    }
}

/// pipe2(O_CLOEXEC): (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded: both fds are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Reads back what is waiting in a pipe (at most its capacity), given a
/// /proc/PID/fd/N link to either of its ends: the pipe is opened again for
/// reading through it, without blocking. Whoever reads the pipe must not be
/// reading meanwhile (a frozen process).
pub fn take_back_pipe(link: &std::path::Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut r = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(link)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(out),
            Err(e) => return Err(e),
        }
    }
}

/// F_SETPIPE_SZ; EPERM (over /proc/sys/fs/pipe-max-size without
/// privilege) is ignored.
pub fn set_pipe_size(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    let bytes = bytes.min(i32::MAX as usize) as libc::c_int;
    // SAFETY: fcntl on a borrowed fd with an integer argument.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, bytes) } < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EPERM) {
            return Err(err);
        }
    }
    Ok(())
}

fn fcntl_set(fd: BorrowedFd<'_>, get: i32, set: i32, bit: i32) -> io::Result<()> {
    // SAFETY: fcntl on a borrowed fd with integer arguments.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), get);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        if flags & bit == 0 && libc::fcntl(fd.as_raw_fd(), set, flags | bit) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether `fd` is the null device (/dev/null's character device 1:3,
/// wherever it is mounted).
pub fn is_dev_null(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: fstat fills the zeroed stat buffer for a descriptor we borrow.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd.as_raw_fd(), &mut st) == 0
            && st.st_mode & libc::S_IFMT == libc::S_IFCHR
            && st.st_rdev == libc::makedev(1, 3)
    }
}

/// Opens this machine's /dev/null for reading and writing (close-on-exec).
pub fn open_dev_null() -> io::Result<OwnedFd> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    Ok(OwnedFd::from(f))
}

/// Sets O_NONBLOCK.
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    fcntl_set(fd, libc::F_GETFL, libc::F_SETFL, libc::O_NONBLOCK)
}

/// Sets FD_CLOEXEC.
pub fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    fcntl_set(fd, libc::F_GETFD, libc::F_SETFD, libc::FD_CLOEXEC)
}

/// prctl(PR_SET_CHILD_SUBREAPER, 1): orphaned descendants become our
/// children, for us to reap.
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_child_keeps_only_the_descriptors_it_needs() {
        // Twelve descriptors; the child keeps four of them (unsorted, with
        // a duplicate and a -1), closes the rest, and says which it has.
        let null = std::fs::File::open("/dev/null").unwrap();
        let fds: Vec<OwnedFd> = (0..12).map(|_| null.try_clone().unwrap().into()).collect();
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let mut keep = [raw[7], -1, raw[2], raw[11], raw[2], raw[5]];
        // SAFETY: the child makes only async-signal-safe calls, then _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let rc = close_all_but(&mut keep, 1 << 16);
            let mut bits = 0i32;
            for (i, &fd) in raw.iter().enumerate() {
                // SAFETY: F_GETFD only asks.
                if unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0 {
                    bits |= 1 << i;
                }
            }
            let ok = rc == 0 && bits == (1 << 2 | 1 << 5 | 1 << 7 | 1 << 11);
            // SAFETY: ends the forked child.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for our child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }

    #[test]
    fn unread_bytes_come_back_from_a_pipe() {
        let (r, w) = pipe().unwrap();
        let mut wf = std::fs::File::from(w.try_clone().unwrap());
        wf.write_all(b"not read yet").unwrap();
        let link = std::path::PathBuf::from(format!("/proc/self/fd/{}", w.as_raw_fd()));
        assert_eq!(take_back_pipe(&link).unwrap(), b"not read yet");
        // Empty now, and still usable: what is written again is read.
        assert_eq!(take_back_pipe(&link).unwrap(), b"");
        wf.write_all(b"again").unwrap();
        let mut got = [0u8; 5];
        let mut rf = std::fs::File::from(r);
        std::io::Read::read_exact(&mut rf, &mut got).unwrap();
        assert_eq!(&got, b"again");
        wf.write_all(&[7u8; 100]).unwrap();
        // Through the read end too.
        let link = std::path::PathBuf::from(format!("/proc/self/fd/{}", rf.as_raw_fd()));
        assert_eq!(take_back_pipe(&link).unwrap(), vec![7u8; 100]);
    }
    use std::os::fd::AsFd;
    use std::os::unix::fs::PermissionsExt;

    fn v(args: &[&str]) -> Vec<Vec<u8>> {
        args.iter().map(|a| a.as_bytes().to_vec()).collect()
    }

    struct Run {
        program: String,
        argv: Vec<Vec<u8>>,
        env: Vec<Vec<u8>>,
        cwd: String,
        umask: u32,
        uid: u32,
        gid: u32,
        groups: Vec<u32>,
    }

    fn run(program: &str, argv: &[&str]) -> Run {
        let (uid, gid, groups) = crate::cred::current_cred();
        Run {
            program: program.to_owned(),
            argv: v(argv),
            env: v(&["PATH=/usr/bin:/bin"]),
            cwd: "/".to_owned(),
            umask: 0o022,
            uid,
            gid,
            groups,
        }
    }

    /// Spawns with stdout and stderr on a pipe; returns (result, output, exit event).
    fn go(r: &Run) -> (Result<u32, SpawnError>, String, Option<WaitEvent>) {
        let (out_r, out_w) = pipe().unwrap();
        let null = std::fs::File::open("/dev/null").unwrap();
        let req = SpawnRequest {
            program: r.program.as_bytes(),
            argv: &r.argv,
            env: &r.env,
            cwd: r.cwd.as_bytes(),
            umask: r.umask,
            uid: r.uid,
            gid: r.gid,
            groups: &r.groups,
            stdin: null.as_fd(),
            stdout: out_w.as_fd(),
            stderr: out_w.as_fd(),
            controlling_tty: None,
            root: None,
            root_ns: None,
            exec_file: None,
        };
        let res = spawn(&req);
        drop(out_w);
        let mut out = String::new();
        std::fs::File::from(out_r).read_to_string(&mut out).unwrap();
        let ev = res.as_ref().ok().map(|&pid| wait_exit(pid));
        (res, out, ev)
    }

    fn wait_exit(pid: u32) -> WaitEvent {
        loop {
            let ev = wait_pid(pid, false).unwrap().unwrap();
            assert_eq!(ev.pid(), pid);
            if matches!(ev, WaitEvent::Exited { .. } | WaitEvent::Signaled { .. }) {
                return ev;
            }
        }
    }

    fn exited(pid: &Result<u32, SpawnError>, code: i32) -> Option<WaitEvent> {
        Some(WaitEvent::Exited {
            pid: *pid.as_ref().unwrap(),
            code,
        })
    }

    #[test]
    fn exit_code() {
        let (res, _, ev) = go(&run("/bin/sh", &["sh", "-c", "exit 3"]));
        assert_eq!(ev, exited(&res, 3));
        assert_eq!(
            ev.unwrap().exit_status(),
            Some(roam_proto::types::ExitStatus::Exited(3))
        );
    }

    #[test]
    fn killed_by_signal() {
        let (res, _, ev) = go(&run("/bin/sh", &["sh", "-c", "kill -TERM $$"]));
        let pid = res.unwrap();
        assert_eq!(
            ev,
            Some(WaitEvent::Signaled {
                pid,
                signal: libc::SIGTERM,
                core_dumped: false
            })
        );
    }

    #[test]
    fn argv_env_and_path_search() {
        let mut r = run(
            "sh",
            &[
                "my-sh",
                "-c",
                "echo \"$0 $FOO\"; echo \"$1\"",
                "my-sh",
                "x y",
            ],
        );
        r.env = v(&["PATH=/nonexistent::/bin", "FOO=bar"]);
        let (res, out, ev) = go(&r);
        assert_eq!(out, "my-sh bar\nx y\n");
        assert_eq!(ev, exited(&res, 0));
        // No PATH at all: the default one.
        r.env = v(&["FOO=baz"]);
        let (res, out, ev) = go(&r);
        assert_eq!(out, "my-sh baz\nx y\n");
        assert_eq!(ev, exited(&res, 0));
        // Exactly the given environment.
        let mut r = run("/usr/bin/env", &["env"]);
        r.env = v(&["A=1", "B=2"]);
        assert_eq!(go(&r).1, "A=1\nB=2\n");
    }

    #[test]
    fn missing_program() {
        let (res, _, _) = go(&run("roam-no-such-program", &["x"]));
        let msg = res.unwrap_err().to_string();
        assert!(msg.contains("'roam-no-such-program'"), "{msg}");
        assert!(msg.contains("No such file or directory"), "{msg}");
        let (res, _, _) = go(&run("/nonexistent/prog", &["x"]));
        let err = res.unwrap_err();
        assert!(matches!(err, SpawnError::Exec { .. }), "{err}");
        assert_eq!(err.io_error().unwrap().raw_os_error(), Some(libc::ENOENT));
        assert!(go(&run("", &[])).0.is_err());
    }

    #[test]
    fn not_executable() {
        let path = std::env::temp_dir().join(format!("roam-sys-noexec-{}", std::process::id()));
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(b"#!/bin/sh\nexit 0\n").unwrap();
        f.set_permissions(std::fs::Permissions::from_mode(0o644))
            .unwrap();
        drop(f);
        let p = path.to_str().unwrap();
        let (res, _, _) = go(&run(p, &["x"]));
        std::fs::remove_file(&path).unwrap();
        let err = res.unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(p) && msg.contains("Permission denied"),
            "{msg}"
        );
        assert_eq!(
            err.io_error().unwrap().kind(),
            io::ErrorKind::PermissionDenied
        );
    }

    #[test]
    fn bad_cwd() {
        let mut r = run("/bin/true", &["true"]);
        r.cwd = "/roam/no/such/dir".to_owned();
        let err = go(&r).0.unwrap_err();
        assert!(matches!(err, SpawnError::Chdir { .. }));
        let msg = err.to_string();
        assert!(
            msg.starts_with("cannot change to directory '/roam/no/such/dir': No such file"),
            "{msg}"
        );
    }

    #[test]
    fn nul_byte_rejected() {
        let r = run("/bin/true", &["tr\0ue"]);
        assert!(matches!(go(&r).0, Err(SpawnError::Nul { .. })));
    }

    #[test]
    fn cwd_and_umask() {
        let mut r = run("/bin/sh", &["sh", "-c", "pwd; umask"]);
        r.cwd = "/tmp".to_owned();
        r.umask = 0o027;
        let (res, out, ev) = go(&r);
        assert_eq!(out, "/tmp\n0027\n");
        assert_eq!(ev, exited(&res, 0));
    }

    #[test]
    fn switches_user() {
        // SAFETY: trivial getter.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let mut r = run("/bin/sh", &["sh", "-c", "id -u; id -g; id -G"]);
        r.uid = 65534;
        r.gid = 65534;
        r.groups = vec![65534, 100];
        let (res, out, ev) = go(&r);
        assert_eq!(out, "65534\n65534\n65534 100\n");
        assert_eq!(ev, exited(&res, 0));
        // No groups at all.
        r.groups = vec![];
        assert_eq!(go(&r).1, "65534\n65534\n65534\n");
    }

    #[test]
    fn fresh_signal_state_and_no_leaked_fds() {
        // An fd without CLOEXEC must still not reach the child.
        let f = std::fs::File::open("/dev/null").unwrap();
        let leaked = OwnedFd::from(f);
        // SAFETY: clearing FD_CLOEXEC on our own fd.
        unsafe { libc::fcntl(leaked.as_raw_fd(), libc::F_SETFD, 0) };
        // A blocked signal in this thread must not be inherited.
        // SAFETY: blocking SIGUSR2 in this test thread only.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR2);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        let r = run(
            "/bin/sh",
            &[
                "sh",
                "-c",
                "grep -E '^Sig(Blk|Ign)' /proc/self/status; ls /proc/$$/fd",
            ],
        );
        let (res, out, ev) = go(&r);
        assert_eq!(ev, exited(&res, 0));
        assert!(out.contains("SigBlk:\t0000000000000000\n"), "{out}");
        assert!(out.contains("SigIgn:\t0000000000000000\n"), "{out}");
        let fds: Vec<&str> = out.lines().skip(2).collect();
        assert!(
            !fds.contains(&leaked.as_raw_fd().to_string().as_str()),
            "{out}"
        );
        assert!(fds.contains(&"0") && fds.contains(&"2"), "{out}");
    }

    #[test]
    fn stdio_shuffle() {
        // stdout and stderr swapped onto each other's pipes.
        let (a_r, a_w) = pipe().unwrap();
        let (b_r, b_w) = pipe().unwrap();
        let null = std::fs::File::open("/dev/null").unwrap();
        let argv = v(&["sh", "-c", "echo out; echo err >&2"]);
        let (uid, gid, groups) = crate::cred::current_cred();
        let req = SpawnRequest {
            program: b"/bin/sh",
            argv: &argv,
            env: &[],
            cwd: b"",
            umask: 0o022,
            uid,
            gid,
            groups: &groups,
            stdin: null.as_fd(),
            stdout: b_w.as_fd(),
            stderr: a_w.as_fd(),
            controlling_tty: None,
            root: None,
            root_ns: None,
            exec_file: None,
        };
        let pid = spawn(&req).unwrap();
        drop((a_w, b_w));
        let mut a = String::new();
        let mut b = String::new();
        std::fs::File::from(a_r).read_to_string(&mut a).unwrap();
        std::fs::File::from(b_r).read_to_string(&mut b).unwrap();
        assert_eq!((a.as_str(), b.as_str()), ("err\n", "out\n"));
        assert_eq!(wait_exit(pid), WaitEvent::Exited { pid, code: 0 });
    }

    /// The terminal's stop key stops the program, as under a shell: its
    /// process group is the terminal's foreground group and not orphaned.
    #[test]
    fn terminal_stop_key_stops_the_program() {
        let (master, slave) = crate::pty::open_pty(24, 80).unwrap();
        let argv = v(&["sleep", "10"]);
        let (uid, gid, groups) = crate::cred::current_cred();
        let req = SpawnRequest {
            program: b"/bin/sleep",
            argv: &argv,
            env: &[],
            cwd: b"/",
            umask: 0o022,
            uid,
            gid,
            groups: &groups,
            stdin: slave.as_fd(),
            stdout: slave.as_fd(),
            stderr: slave.as_fd(),
            controlling_tty: Some(slave.as_fd()),
            root: None,
            root_ns: None,
            exec_file: None,
        };
        let pid = spawn(&req).unwrap();
        drop(slave);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let f: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        // Fields 5 (pgrp) and 8 (tpgid).
        assert_eq!(f[2], pid.to_string(), "{stat}");
        assert_eq!(f[5], pid.to_string(), "{stat}");
        let mut m = std::fs::File::from(master);
        std::io::Write::write_all(&mut m, b"\x1a").unwrap();
        // In an orphaned group the kernel would discard SIGTSTP.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let ev = loop {
            if let Some(ev) = wait_pid(pid, true).unwrap() {
                break Some(ev);
            }
            if std::time::Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert_eq!(
            ev,
            Some(WaitEvent::Stopped {
                pid,
                signal: libc::SIGTSTP
            })
        );
        crate::signal::kill(pid as i32, libc::SIGCONT).unwrap();
        assert_eq!(
            wait_pid(pid, false).unwrap(),
            Some(WaitEvent::Continued { pid })
        );
        std::io::Write::write_all(&mut m, b"\x03").unwrap();
        assert_eq!(
            wait_exit(pid),
            WaitEvent::Signaled {
                pid,
                signal: libc::SIGINT,
                core_dumped: false
            }
        );
    }

    #[test]
    fn controlling_terminal() {
        let (master, slave) = crate::pty::open_pty(24, 80).unwrap();
        let argv = v(&["sh", "-c", "exec 3</dev/tty && echo tty-ok; stty size"]);
        let (uid, gid, groups) = crate::cred::current_cred();
        let req = SpawnRequest {
            program: b"/bin/sh",
            argv: &argv,
            env: &[],
            cwd: b"/",
            umask: 0o022,
            uid,
            gid,
            groups: &groups,
            stdin: slave.as_fd(),
            stdout: slave.as_fd(),
            stderr: slave.as_fd(),
            controlling_tty: Some(slave.as_fd()),
            root: None,
            root_ns: None,
            exec_file: None,
        };
        let pid = spawn(&req).unwrap();
        drop(slave);
        let ev = wait_exit(pid);
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        let mut m = std::fs::File::from(master);
        // Once the slave is closed everywhere, read fails with EIO.
        while let Ok(n @ 1..) = m.read(&mut buf) {
            out.extend_from_slice(&buf[..n]);
        }
        let out = String::from_utf8_lossy(&out);
        assert!(out.contains("tty-ok"), "{out:?}");
        assert!(out.contains("24 80"), "{out:?}");
        assert_eq!(ev, WaitEvent::Exited { pid, code: 0 });
    }

    #[test]
    fn wait_pid_nohang_and_stop_continue() {
        let r = run("/bin/sleep", &["sleep", "30"]);
        let null = std::fs::File::open("/dev/null").unwrap();
        let res = spawn(&SpawnRequest {
            program: r.program.as_bytes(),
            argv: &r.argv,
            env: &r.env,
            cwd: r.cwd.as_bytes(),
            umask: r.umask,
            uid: r.uid,
            gid: r.gid,
            groups: &r.groups,
            stdin: null.as_fd(),
            stdout: null.as_fd(),
            stderr: null.as_fd(),
            controlling_tty: None,
            root: None,
            root_ns: None,
            exec_file: None,
        });
        let pid = res.unwrap();
        assert_eq!(wait_pid(pid, true).unwrap(), None);
        crate::signal::kill(pid as i32, libc::SIGSTOP).unwrap();
        assert_eq!(
            wait_pid(pid, false).unwrap(),
            Some(WaitEvent::Stopped {
                pid,
                signal: libc::SIGSTOP
            })
        );
        crate::signal::kill(pid as i32, libc::SIGCONT).unwrap();
        assert_eq!(
            wait_pid(pid, false).unwrap(),
            Some(WaitEvent::Continued { pid })
        );
        crate::signal::kill(pid as i32, libc::SIGKILL).unwrap();
        assert_eq!(
            wait_exit(pid),
            WaitEvent::Signaled {
                pid,
                signal: libc::SIGKILL,
                core_dumped: false
            }
        );
        assert!(wait_pid(pid, true).is_err());
        assert!(wait_pid(0, true).is_err());
    }

    /// wait_any_nohang reaps any child, so it runs in a process of its own:
    /// this test re-runs the test binary on `wait_any_child_helper`.
    #[test]
    fn wait_any_in_subprocess() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "spawn::tests::wait_any_child_helper",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("ROAM_SYS_WAIT_ANY_HELPER", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("wait-any-ok"), "{text}");
    }

    #[test]
    fn wait_any_child_helper() {
        if std::env::var_os("ROAM_SYS_WAIT_ANY_HELPER").is_none() {
            return;
        }
        assert_eq!(wait_any_nohang().unwrap(), None);
        let res = {
            let r = run("/bin/sh", &["sh", "-c", "exit 5"]);
            let null = std::fs::File::open("/dev/null").unwrap();
            let req = SpawnRequest {
                program: r.program.as_bytes(),
                argv: &r.argv,
                env: &r.env,
                cwd: r.cwd.as_bytes(),
                umask: r.umask,
                uid: r.uid,
                gid: r.gid,
                groups: &r.groups,
                stdin: null.as_fd(),
                stdout: null.as_fd(),
                stderr: null.as_fd(),
                controlling_tty: None,
                root: None,
                root_ns: None,
                exec_file: None,
            };
            spawn(&req)
        };
        let pid = res.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match wait_any_nohang().unwrap() {
                Some(ev) => {
                    assert_eq!(ev, WaitEvent::Exited { pid, code: 5 });
                    break;
                }
                None => {
                    assert!(std::time::Instant::now() < deadline);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
        }
        assert_eq!(wait_any_nohang().unwrap(), None);
        // A failed spawn leaves no zombie behind.
        assert!(go(&run("/roam/none", &["x"])).0.is_err());
        assert_eq!(wait_any_nohang().unwrap(), None);
        println!("wait-any-ok");
    }

    #[test]
    fn fd_helpers() {
        let (r, w) = pipe().unwrap();
        // SAFETY: reading flags of our own fds.
        let fl = |fd: &OwnedFd, cmd| unsafe { libc::fcntl(fd.as_raw_fd(), cmd) };
        assert_ne!(fl(&r, libc::F_GETFD) & libc::FD_CLOEXEC, 0);
        assert_eq!(fl(&r, libc::F_GETFL) & libc::O_NONBLOCK, 0);
        set_nonblocking(r.as_fd()).unwrap();
        assert_ne!(fl(&r, libc::F_GETFL) & libc::O_NONBLOCK, 0);
        let mut buf = [0u8; 1];
        let e = std::fs::File::from(r.try_clone().unwrap())
            .read(&mut buf)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        set_pipe_size(w.as_fd(), 1 << 20).unwrap();
        assert_eq!(fl(&w, libc::F_GETPIPE_SZ), 1 << 20);
        let dup = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        // SAFETY: clearing FD_CLOEXEC on our own fd.
        unsafe { libc::fcntl(dup.as_raw_fd(), libc::F_SETFD, 0) };
        set_cloexec(dup.as_fd()).unwrap();
        assert_ne!(fl(&dup, libc::F_GETFD) & libc::FD_CLOEXEC, 0);
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(set_pipe_size(file.as_fd(), 4096).is_err());
    }

    #[test]
    fn subreaper() {
        // In a forked child, so the test process does not adopt orphans.
        // SAFETY: the child makes two prctl calls and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let ok = set_child_subreaper().is_ok();
            let mut v: libc::c_int = 0;
            // SAFETY: PR_GET_CHILD_SUBREAPER writes an int into `v`; _exit
            // is always safe.
            unsafe {
                libc::prctl(libc::PR_GET_CHILD_SUBREAPER, &mut v as *mut libc::c_int);
                libc::_exit(if ok && v == 1 { 0 } else { 1 });
            }
        }
        assert_eq!(
            wait_exit(pid as u32),
            WaitEvent::Exited {
                pid: pid as u32,
                code: 0
            }
        );
    }

    /// A supervised program: its getpid and uname are answered by a
    /// supervisor thread of ours; other calls run as usual.
    #[test]
    fn supervised_program() {
        use crate::seccomp::{nr, Listener, MemFile, Reply};
        let (out_r, out_w) = pipe().unwrap();
        let null = std::fs::File::open("/dev/null").unwrap();
        let argv = v(&[
            "sh",
            "-c",
            "echo $$; uname -n; sh -c 'echo $$' | grep -vx 4242",
        ]);
        let (uid, gid, groups) = crate::cred::current_cred();
        let req = SpawnRequest {
            program: b"/bin/sh",
            argv: &argv,
            env: &v(&["PATH=/usr/bin:/bin"]),
            cwd: b"/",
            umask: 0o022,
            uid,
            gid,
            groups: &groups,
            stdin: null.as_fd(),
            stdout: out_w.as_fd(),
            stderr: out_w.as_fd(),
            controlling_tty: None,
            root: None,
            root_ns: None,
            exec_file: None,
        };
        let (pid, listener) = spawn_supervised(&req, &[nr::GETPID, nr::UNAME]).unwrap();
        drop(out_w);
        let listener = Listener::new(listener);
        listener.set_sync_wakeup().unwrap();
        let supervisor = std::thread::spawn(move || {
            let mut calls = 0;
            loop {
                let n = match listener.recv() {
                    Ok(n) => n,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                        if listener.wait(0).unwrap().hangup {
                            return calls;
                        }
                        continue;
                    }
                    Err(e) => panic!("recv: {e}"),
                };
                calls += 1;
                let reply = match n.nr {
                    // Only the program itself: its children keep their
                    // own pids.
                    nr::GETPID if n.pid == pid => Reply::Value(4242),
                    nr::UNAME => {
                        let mem = MemFile::open(n.pid).unwrap();
                        let u = crate::seccomp::uname_with_nodename(b"far-away").unwrap();
                        if listener.id_valid(n.id) {
                            mem.write_all_at(n.args[0], &u).unwrap();
                        }
                        Reply::Value(0)
                    }
                    _ => Reply::Continue,
                };
                let _ = listener.reply(n.id, reply);
            }
        });
        let mut out = String::new();
        std::fs::File::from(out_r).read_to_string(&mut out).unwrap();
        assert_eq!(wait_exit(pid), WaitEvent::Exited { pid, code: 0 }, "{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(&lines[..2], ["4242", "far-away"], "{out}");
        assert_eq!(lines.len(), 3, "{out}");
        assert!(supervisor.join().unwrap() >= 2);
    }

    #[test]
    fn supervised_spawn_failures() {
        let null = std::fs::File::open("/dev/null").unwrap();
        let argv = v(&["x"]);
        let (uid, gid, groups) = crate::cred::current_cred();
        let req = SpawnRequest {
            program: b"/roam/no/such/program",
            argv: &argv,
            env: &[],
            cwd: b"/",
            umask: 0o022,
            uid,
            gid,
            groups: &groups,
            stdin: null.as_fd(),
            stdout: null.as_fd(),
            stderr: null.as_fd(),
            controlling_tty: None,
            root: None,
            root_ns: None,
            exec_file: None,
        };
        let err = spawn_supervised(&req, &[crate::seccomp::nr::GETPID]).unwrap_err();
        assert!(matches!(err, SpawnError::Exec { .. }), "{err}");
        let err = spawn_supervised(&req, &[-5]).unwrap_err();
        assert!(err.to_string().contains("system-call supervision"), "{err}");
    }

    #[test]
    fn candidates() {
        assert_eq!(exec_candidates(b"./x", &[]), vec![b"./x".to_vec()]);
        assert_eq!(
            exec_candidates(b"ls", &v(&["PATH=/a:/b/:", "PATH=/c"])),
            vec![b"/a/ls".to_vec(), b"/b/ls".to_vec(), b"ls".to_vec()]
        );
        assert_eq!(exec_candidates(b"ls", &[]).len(), 3);
    }
}
