//! Identity forwarding: a remote process sees its home identity.
//!
//! On a node with `identity = "home"`, each remote process is started under
//! a seccomp user-notification filter ([`roam_sys::spawn::spawn_supervised`])
//! for the calls in [`SYSCALLS`], and a supervisor thread of the node daemon
//! answers them:
//!
//! - `getpid` in the process itself: its home pid (the proxy's pid);
//! - `getppid` in the process itself: its home parent (the proxy's
//!   parent); in a direct child of the process: the process's home pid
//!   (so `$PPID` of a child is `$$` of its parent);
//! - `uname` (and so gethostname) anywhere in the process's tree: the
//!   node's answer with the home's host name as the node name;
//! - `kill`, `tgkill`, `tkill`, `rt_sigqueueinfo`, `rt_tgsigqueueinfo`
//!   to the process's own home pid: delivered here, to the process; to a
//!   pid in its tree on the node (a child it started): left to the
//!   kernel; to any other pid: that pid is a home pid, and the signal is
//!   asked of the home ([`LinkMsg::Kill`]), which sends it to the local
//!   process or forwards it to the node of the remote process with that
//!   home pid, with the sender's rights;
//! - everything else intercepted: run by the kernel as it is.
//!
//! The decisions ([`decide`]) are pure, over a [`Procs`] view of the
//! node's processes, and unit-tested with a fake. docs/design/identity.md
//! says which calls are forwarded and why the others are not.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use roam_proto::link::LinkMsg;
use roam_proto::types::{KillRefusal, SessionId, WireSignal};
use roam_sys::seccomp::{nr, Listener, MemFile, Notification, Reply, UTSNAME_LEN};
use roam_sys::signal::{QueuedInfo, SIGINFO_LEN, SI_QUEUE, SI_TKILL};
use roam_sys::spawn::{SpawnError, SpawnRequest};

/// The calls a supervised process hands to its supervisor.
pub const SYSCALLS: [i64; 8] = [
    nr::GETPID,
    nr::GETPPID,
    nr::UNAME,
    nr::KILL,
    nr::TKILL,
    nr::TGKILL,
    nr::RT_SIGQUEUEINFO,
    nr::RT_TGSIGQUEUEINFO,
];

/// How long a signal asked of the home may take before the call fails
/// (ESRCH: the target cannot be reached).
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// The highest signal number kill(2) takes.
const MAX_SIGNAL: i32 = 64;

/// Who a remote process is at home: from its spawn request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HomeIdentity {
    pub session: SessionId,
    /// The proxy's pid.
    pub home_pid: u32,
    /// The proxy's parent's pid.
    pub home_ppid: u32,
    /// The home's host name.
    pub home_host: String,
}

/// What the decisions need to know about the node's processes.
pub trait Procs {
    /// Whether `tid` is a thread of process `tgid`.
    fn is_thread_of(&self, tgid: u32, tid: u32) -> bool;
    /// The parent of `pid`, if it exists.
    fn parent(&self, pid: u32) -> Option<u32>;
    /// Whether `pid` is `root` or one of its descendants (its session, or
    /// its line of parents).
    fn in_tree(&self, pid: u32, root: u32) -> bool;
    /// Whether process group `pgrp` exists and has a member in `root`'s
    /// tree.
    fn group_in_tree(&self, pgrp: u32, root: u32) -> bool;
}

/// Whom a signal the process sends itself (through its home pid) goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Local {
    /// The process.
    Process,
    /// Its process group.
    Group,
    /// One of its threads (node thread id).
    Thread(u32),
}

/// What to do with one intercepted call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Answer at once.
    Reply(Reply),
    /// uname: the home's answer, written at this address.
    Uname { addr: u64 },
    /// A signal to the process itself, sent here with the caller's rights;
    /// `info` is the address of the caller's siginfo (sigqueue calls).
    Local {
        to: Local,
        sig: i32,
        info: Option<u64>,
    },
    /// A signal to another home pid (a process group if `group`), asked of
    /// the home.
    Forward {
        pid: u32,
        group: bool,
        sig: i32,
        info: Option<u64>,
    },
}

/// The supervised process: its home identity and its pid here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ids {
    pub node_pid: u32,
    pub home_pid: u32,
    pub home_ppid: u32,
}

/// Decides what to do with notification `n` of the process `ids`.
pub fn decide(ids: &Ids, n: &Notification, procs: &dyn Procs) -> Action {
    const CONTINUE: Action = Action::Reply(Reply::Continue);
    let m = ids.node_pid;
    let caller_is_main = || n.pid == m || procs.is_thread_of(m, n.pid);
    // pid_t and int arguments: the low 32 bits, signed.
    let arg = |i: usize| n.args[i] as u32 as i32;
    let home = ids.home_pid as i32;
    match n.nr {
        nr::GETPID => {
            if caller_is_main() {
                Action::Reply(Reply::Value(i64::from(ids.home_pid)))
            } else {
                CONTINUE
            }
        }
        nr::GETPPID => {
            if caller_is_main() {
                Action::Reply(Reply::Value(i64::from(ids.home_ppid)))
            } else if procs.parent(n.pid) == Some(m) {
                Action::Reply(Reply::Value(i64::from(ids.home_pid)))
            } else {
                CONTINUE
            }
        }
        nr::UNAME => Action::Uname { addr: n.args[0] },
        nr::KILL => kill_action(ids, arg(0), arg(1), None, procs),
        nr::RT_SIGQUEUEINFO => {
            // A process only (the kernel treats pid <= 0 as its own).
            if arg(0) <= 0 {
                CONTINUE
            } else {
                kill_action(ids, arg(0), arg(1), Some(n.args[2]), procs)
            }
        }
        nr::TKILL => {
            let (tid, sig) = (arg(0), arg(1));
            if tid == home && valid_signal(sig) {
                Action::Local {
                    to: Local::Thread(m),
                    sig,
                    info: None,
                }
            } else {
                CONTINUE
            }
        }
        nr::TGKILL | nr::RT_TGSIGQUEUEINFO => {
            let (tgid, tid, sig) = (arg(0), arg(1), arg(2));
            let info = (n.nr == nr::RT_TGSIGQUEUEINFO).then_some(n.args[3]);
            if !valid_signal(sig) || tgid <= 0 || tid <= 0 {
                CONTINUE
            } else if tgid == home {
                // glibc's raise() is tgkill(getpid(), gettid(), sig): the
                // home pid with the node thread id.
                let tid = if tid == home { m } else { tid as u32 };
                Action::Local {
                    to: Local::Thread(tid),
                    sig,
                    info,
                }
            } else if procs.in_tree(tgid as u32, m) {
                CONTINUE
            } else if tid == tgid {
                // Another process's main thread: that process.
                Action::Forward {
                    pid: tgid as u32,
                    group: false,
                    sig,
                    info,
                }
            } else {
                // A thread id of another process means nothing here.
                Action::Reply(Reply::Error(libc::ESRCH))
            }
        }
        _ => CONTINUE,
    }
}

fn valid_signal(sig: i32) -> bool {
    (0..=MAX_SIGNAL).contains(&sig)
}

/// kill(pid, sig) and rt_sigqueueinfo(pid, sig, info).
fn kill_action(ids: &Ids, pid: i32, sig: i32, info: Option<u64>, procs: &dyn Procs) -> Action {
    const CONTINUE: Action = Action::Reply(Reply::Continue);
    let m = ids.node_pid;
    let home = ids.home_pid as i32;
    if !valid_signal(sig) {
        // The kernel's EINVAL.
        return CONTINUE;
    }
    match pid {
        p if p == home => Action::Local {
            to: Local::Process,
            sig,
            info,
        },
        // Its own process group here: the process leads one on the node.
        0 => CONTINUE,
        // Every process the user may signal, at home: refused.
        -1 => Action::Reply(Reply::Error(libc::EPERM)),
        p if p > 0 => {
            if procs.in_tree(p as u32, m) {
                CONTINUE
            } else {
                Action::Forward {
                    pid: p as u32,
                    group: false,
                    sig,
                    info,
                }
            }
        }
        p => {
            let pgrp = p.unsigned_abs();
            if pgrp == ids.home_pid {
                Action::Local {
                    to: Local::Group,
                    sig,
                    info: None,
                }
            } else if procs.group_in_tree(pgrp, m) {
                CONTINUE
            } else {
                Action::Forward {
                    pid: pgrp,
                    group: true,
                    sig,
                    info: None,
                }
            }
        }
    }
}

/// Whether a process with user ids `from` ([real, effective, saved, fs])
/// may signal one with `to`, as kill(2) decides without CAP_KILL: root,
/// or the sender's real or effective uid is the target's real or saved
/// uid.
pub fn uids_may_signal(from: [u32; 4], to: [u32; 4]) -> bool {
    from[1] == 0 || [from[0], from[1]].iter().any(|&u| u == to[0] || u == to[2])
}

/// The node's processes, from /proc.
struct NodeProcs;

/// How far up a line of parents [`NodeProcs::in_tree`] looks.
const MAX_DEPTH: usize = 64;

impl Procs for NodeProcs {
    fn is_thread_of(&self, tgid: u32, tid: u32) -> bool {
        roam_sys::procfs::is_thread_of(tgid, tid)
    }

    fn parent(&self, pid: u32) -> Option<u32> {
        roam_sys::procfs::proc_links(pid).ok().map(|l| l.ppid)
    }

    fn in_tree(&self, pid: u32, root: u32) -> bool {
        let mut p = pid;
        for _ in 0..MAX_DEPTH {
            if p == root {
                return true;
            }
            let Ok(l) = roam_sys::procfs::proc_links(p) else {
                return false;
            };
            // The process leads its session (spawn makes it), which its
            // descendants stay in unless they start their own.
            if l.session == root {
                return true;
            }
            if l.ppid <= 1 {
                return false;
            }
            p = l.ppid;
        }
        false
    }

    fn group_in_tree(&self, pgrp: u32, root: u32) -> bool {
        if pgrp == root {
            return true;
        }
        let member = |p: u32| {
            roam_sys::procfs::proc_links(p).is_ok_and(|l| l.pgrp == pgrp) && self.in_tree(p, root)
        };
        // Usually the leader is still there; else look for any member.
        member(pgrp)
            || roam_sys::procfs::all_pids()
                .unwrap_or_default()
                .into_iter()
                .any(member)
    }
}

/// Signals asked of the home, waiting for its answers. One per node.
pub struct Forwarder {
    send: Mutex<Option<Sender>>,
    pending: Mutex<HashMap<u64, (Arc<Listener>, u64)>>,
    next: AtomicU64,
    timeout: Duration,
}

type Sender = Box<dyn Fn(&LinkMsg) -> bool + Send + Sync>;

impl Forwarder {
    pub fn new() -> Arc<Forwarder> {
        Self::with_timeout(KILL_TIMEOUT)
    }

    fn with_timeout(timeout: Duration) -> Arc<Forwarder> {
        Arc::new(Forwarder {
            send: Mutex::new(None),
            pending: Mutex::default(),
            next: AtomicU64::new(1),
            timeout,
        })
    }

    /// How to send to the home: `send` queues a message on the link if it
    /// is up (true) or says it is down (false).
    pub fn set_sender(&self, send: impl Fn(&LinkMsg) -> bool + Send + Sync + 'static) {
        *self.send.lock().unwrap() = Some(Box::new(send));
    }

    /// Asks the home for the signal (`make` builds the message for a
    /// request id); the notification `id` is answered when the home
    /// answers, or with ESRCH if it cannot be asked or does not answer in
    /// time. Must run inside the node's tokio runtime or with a handle to
    /// it (for the timeout).
    fn forward(
        self: &Arc<Self>,
        rt: &tokio::runtime::Handle,
        listener: &Arc<Listener>,
        id: u64,
        make: impl FnOnce(u64) -> LinkMsg,
    ) {
        let req = self.next.fetch_add(1, Ordering::Relaxed);
        self.pending
            .lock()
            .unwrap()
            .insert(req, (listener.clone(), id));
        let sent = match self.send.lock().unwrap().as_ref() {
            Some(send) => send(&make(req)),
            None => false,
        };
        if !sent {
            self.complete(req, Err(KillRefusal::NoSuchProcess));
            return;
        }
        let me = Arc::downgrade(self);
        let timeout = self.timeout;
        rt.spawn(async move {
            tokio::time::sleep(timeout).await;
            if let Some(f) = me.upgrade() {
                if f.pending.lock().unwrap().contains_key(&req) {
                    tracing::warn!("signal request {req}: no answer from the home");
                    f.complete(req, Err(KillRefusal::NoSuchProcess));
                }
            }
        });
    }

    /// The home's answer to request `req`.
    pub fn complete(&self, req: u64, result: Result<(), KillRefusal>) {
        let Some((listener, id)) = self.pending.lock().unwrap().remove(&req) else {
            return;
        };
        let reply = match result {
            Ok(()) => Reply::Value(0),
            Err(r) => Reply::Error(refusal_errno(r)),
        };
        // ENOENT: the caller was killed meanwhile.
        let _ = listener.reply(id, reply);
    }
}

fn refusal_errno(r: KillRefusal) -> i32 {
    match r {
        KillRefusal::NoSuchProcess => libc::ESRCH,
        KillRefusal::NotPermitted => libc::EPERM,
        KillRefusal::InvalidSignal => libc::EINVAL,
    }
}

fn errno_refusal(e: &io::Error) -> KillRefusal {
    match e.raw_os_error() {
        Some(libc::EPERM) => KillRefusal::NotPermitted,
        Some(libc::EINVAL) => KillRefusal::InvalidSignal,
        _ => KillRefusal::NoSuchProcess,
    }
}

/// What a node needs to supervise one process.
#[derive(Clone)]
pub struct Supervision {
    pub who: HomeIdentity,
    pub forwarder: Arc<Forwarder>,
    pub rt: tokio::runtime::Handle,
    /// Forward the identity calls ([`SYSCALLS`]); without, the process
    /// sees the node's identity.
    pub identity: bool,
    /// Confine the process (`SpawnSpec::confine`): the calls of
    /// [`roam_sys::confine`] only, and no exec after its own.
    pub confine: bool,
}

/// Starts `req`'s program under supervision ([`SYSCALLS`] if
/// `sup.identity`, the exec calls if `sup.confine`) and its supervisor
/// thread; returns its pid. If the thread cannot start, the program
/// (which would wait for it forever) is killed.
pub fn spawn(req: &SpawnRequest<'_>, sup: &Supervision) -> Result<u32, SpawnError> {
    let mut calls: Vec<i64> = Vec::new();
    if sup.identity {
        calls.extend(SYSCALLS);
    }
    if sup.confine {
        calls.extend(roam_sys::confine::EXEC_CALLS);
    }
    // The supervisor starts first: it answers the child's exec, which a
    // confinement hands it, while we wait for that exec.
    let (pid_tx, pid_rx) = std::sync::mpsc::channel::<u32>();
    let sup = sup.clone();
    let pid = roam_sys::spawn::spawn_supervised_with(req, &calls, sup.confine, move |sock| {
        std::thread::Builder::new()
            .name("roam-id".into())
            .stack_size(SUPERVISOR_STACK)
            .spawn(move || supervise_from_exec(sock, pid_rx, sup))
            .map(drop)
    })?;
    // The supervisor, waiting for it, ends if the spawn failed.
    let _ = pid_tx.send(pid);
    Ok(pid)
}

/// A supervisor thread started before its process: takes the listener
/// the child sends, lets its exec through if it is confined, and then
/// supervises the program (whose pid `pid` gives once it runs).
fn supervise_from_exec(sock: OwnedFd, pid: std::sync::mpsc::Receiver<u32>, sup: Supervision) {
    roam_sys::signal::block_all_in_thread();
    // Nothing: the child failed before it sent the listener.
    let Ok(Some(listener)) = roam_sys::spawn::recv_fd(std::os::fd::AsFd::as_fd(&sock), true) else {
        return;
    };
    drop(sock);
    let listener = Listener::new(listener);
    if sup.confine {
        // The first call it hands us is the child's one exec: no program
        // runs under the filter before it, so nothing can race it, and
        // "continue" is fit for it. Every later exec is refused.
        loop {
            match listener.recv() {
                Ok(n) => {
                    let exec = roam_sys::confine::EXEC_CALLS.contains(&n.nr);
                    let reply = if exec {
                        Reply::Continue
                    } else {
                        Reply::Error(libc::EPERM)
                    };
                    let _ = listener.reply(n.id, reply);
                    if exec {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    if listener.wait(0).map_or(true, |r| r.hangup) {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    }
    let Ok(pid) = pid.recv() else {
        return;
    };
    match Supervisor::new(pid, listener, &sup) {
        Ok(s) => s.run(),
        Err(e) => {
            tracing::warn!("cannot supervise pid {pid}: {e}");
            let _ = roam_sys::signal::kill(pid as i32, libc::SIGKILL);
        }
    }
}

/// Stack of a supervisor thread: it parses small /proc files and keeps a
/// 390-byte uname answer.
const SUPERVISOR_STACK: usize = 256 * 1024;

pub(crate) fn start_supervisor(
    node_pid: u32,
    listener: OwnedFd,
    sup: &Supervision,
) -> io::Result<()> {
    let s = Supervisor::new(node_pid, Listener::new(listener), sup)?;
    std::thread::Builder::new()
        .name(format!("roam-id-{node_pid}"))
        .stack_size(SUPERVISOR_STACK)
        .spawn(move || s.run())?;
    Ok(())
}

/// One process's supervisor, on a thread of its own: it blocks in the
/// listener's receive call, which is what the synchronous wake-up speeds
/// up (a per-node thread polling every listener would not get it).
struct Supervisor {
    ids: Ids,
    session: SessionId,
    uname: [u8; UTSNAME_LEN],
    listener: Arc<Listener>,
    forwarder: Arc<Forwarder>,
    rt: tokio::runtime::Handle,
    /// Confined: every exec it is handed is refused.
    confined: bool,
}

impl Supervisor {
    fn new(node_pid: u32, listener: Listener, sup: &Supervision) -> io::Result<Supervisor> {
        if let Err(e) = listener.set_sync_wakeup() {
            tracing::debug!("seccomp listener without synchronous wake-up: {e}");
        }
        Ok(Supervisor {
            ids: Ids {
                node_pid,
                home_pid: sup.who.home_pid,
                home_ppid: sup.who.home_ppid,
            },
            session: sup.who.session,
            uname: roam_sys::seccomp::uname_with_nodename(sup.who.home_host.as_bytes())?,
            listener: Arc::new(listener),
            forwarder: sup.forwarder.clone(),
            rt: sup.rt.clone(),
            confined: sup.confine,
        })
    }

    fn run(self) {
        roam_sys::signal::block_all_in_thread();
        loop {
            match self.listener.recv() {
                Ok(n) if self.confined && roam_sys::confine::EXEC_CALLS.contains(&n.nr) => {
                    let _ = self.listener.reply(n.id, Reply::Error(libc::EPERM));
                }
                Ok(n) => self.handle(&n),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    // A caller went away before we took its call, or no
                    // process uses the filter any more: then we are done.
                    if self.listener.wait(0).map_or(true, |r| r.hangup) {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(
                        "supervisor of pid {}: cannot receive: {e}",
                        self.ids.node_pid
                    );
                    break;
                }
            }
        }
        tracing::debug!("supervisor of pid {} done", self.ids.node_pid);
    }

    fn handle(&self, n: &Notification) {
        let reply = match decide(&self.ids, n, &NodeProcs) {
            Action::Reply(r) => r,
            Action::Uname { addr } => self.uname(n, addr),
            Action::Local { to, sig, info } => self.local(n, to, sig, info),
            Action::Forward {
                pid,
                group,
                sig,
                info,
            } => match self.forward(n, pid, group, sig, info) {
                Some(r) => r,
                // Answered when the home answers.
                None => return,
            },
        };
        // ENOENT: the caller was killed meanwhile.
        let _ = self.listener.reply(n.id, reply);
    }

    fn uname(&self, n: &Notification, addr: u64) -> Reply {
        // Opened first, then checked: the file is the caller's memory even
        // if its pid were reused after the check.
        let Ok(mem) = MemFile::open(n.pid) else {
            // Let the kernel answer (the node's name) rather than fail.
            return Reply::Continue;
        };
        if !self.listener.id_valid(n.id) {
            return Reply::Error(libc::ESRCH);
        }
        match mem.write_all_at(addr, &self.uname) {
            Ok(()) => Reply::Value(0),
            Err(_) => Reply::Error(libc::EFAULT),
        }
    }

    /// The caller's siginfo at `addr` (checked valid afterwards).
    fn read_siginfo(&self, n: &Notification, addr: u64) -> Result<QueuedInfo, i32> {
        let mut raw = [0u8; SIGINFO_LEN];
        match roam_sys::seccomp::read_memory(n.pid, addr, &mut raw) {
            Ok(SIGINFO_LEN) => Ok(QueuedInfo::parse(&raw)),
            _ => Err(libc::EFAULT),
        }
    }

    /// A signal the process sends itself through its home pid.
    fn local(&self, n: &Notification, to: Local, sig: i32, info: Option<u64>) -> Reply {
        let m = self.ids.node_pid;
        let from_main = n.pid == m || roam_sys::procfs::is_thread_of(m, n.pid);
        if !from_main {
            let uids = (
                roam_sys::procfs::proc_uids(n.pid),
                roam_sys::procfs::proc_uids(m),
            );
            match uids {
                (Ok(f), Ok(t)) if uids_may_signal(f, t) => {}
                (Ok(_), Ok(_)) => return Reply::Error(libc::EPERM),
                _ => return Reply::Error(libc::ESRCH),
            }
        }
        let info = match info {
            None => None,
            Some(addr) => match self.read_siginfo(n, addr) {
                Ok(mut i) => {
                    if i.code >= 0 || i.code == SI_TKILL {
                        if !from_main {
                            // The kernel allows these only to oneself.
                            return Reply::Error(libc::EPERM);
                        }
                        // We cannot send them for it: the nearest kind.
                        i.code = SI_QUEUE;
                    }
                    Some(i)
                }
                Err(e) => return Reply::Error(e),
            },
        };
        // What we read named the caller only if its call still waits.
        if !self.listener.id_valid(n.id) {
            return Reply::Error(libc::ESRCH);
        }
        let m = m as i32;
        let sent = match (to, info) {
            (Local::Process, None) => roam_sys::signal::kill(m, sig),
            (Local::Process, Some(i)) => roam_sys::signal::queue_signal(m, None, sig, &i),
            (Local::Group, _) => roam_sys::signal::kill(-m, sig),
            (Local::Thread(t), None) => roam_sys::signal::tgkill(m, t as i32, sig),
            (Local::Thread(t), Some(i)) => {
                roam_sys::signal::queue_signal(m, Some(t as i32), sig, &i)
            }
        };
        match sent {
            Ok(()) => Reply::Value(0),
            Err(e) => Reply::Error(e.raw_os_error().unwrap_or(libc::ESRCH)),
        }
    }

    /// A signal to another home pid: asked of the home. None when the
    /// answer comes later.
    fn forward(
        &self,
        n: &Notification,
        pid: u32,
        group: bool,
        sig: i32,
        info: Option<u64>,
    ) -> Option<Reply> {
        let signal = if sig == 0 {
            WireSignal(0)
        } else {
            match roam_sys::signal::to_wire(sig) {
                Some(s) => s,
                None => return Some(Reply::Error(libc::EINVAL)),
            }
        };
        let value = match info {
            None => None,
            Some(addr) => match self.read_siginfo(n, addr) {
                // The kernel allows these only to oneself.
                Ok(i) if i.code >= 0 || i.code == SI_TKILL => {
                    return Some(Reply::Error(libc::EPERM))
                }
                Ok(i) => Some(i.value),
                Err(e) => return Some(Reply::Error(e)),
            },
        };
        let Ok(uids) = roam_sys::procfs::proc_uids(n.pid) else {
            return Some(Reply::Error(libc::ESRCH));
        };
        if !self.listener.id_valid(n.id) {
            return Some(Reply::Error(libc::ESRCH));
        }
        let session = self.session;
        // The effective uid: what kill(2) checks first.
        let from_uid = uids[1];
        self.forwarder
            .forward(&self.rt, &self.listener, n.id, |req| LinkMsg::Kill {
                req,
                session,
                from_uid,
                pid,
                group,
                signal,
                value,
            });
        None
    }
}

/// The home's side of [`LinkMsg::Kill`] for a target that is not a remote
/// process: a process (or group) of the home, signalled with the rights
/// of `from_uid`. `sender_home_pid` becomes the si_pid of a queued signal.
/// Blocking (a short-lived thread): call it off the runtime's threads.
pub fn kill_at_home(
    from_uid: u32,
    pid: u32,
    group: bool,
    signal: WireSignal,
    value: Option<u64>,
    sender_home_pid: u32,
) -> Result<(), KillRefusal> {
    let native = if signal.0 == 0 {
        0
    } else {
        roam_sys::signal::to_native(signal).ok_or(KillRefusal::InvalidSignal)?
    };
    let pid = i32::try_from(pid)
        .ok()
        .filter(|&p| p > 0)
        .ok_or(KillRefusal::NoSuchProcess)?;
    // A group of one: `kill -- -1` is refused on the node already.
    if group && pid == 1 {
        return Err(KillRefusal::NotPermitted);
    }
    let target = if group { -pid } else { pid };
    let info = value.filter(|_| !group).map(|value| QueuedInfo {
        code: SI_QUEUE,
        pid: sender_home_pid as i32,
        uid: from_uid,
        value,
    });
    roam_sys::signal::kill_as(from_uid, target, native, info).map_err(|e| errno_refusal(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A node with a few processes: pid → (parent, group, session).
    struct Fake {
        procs: HashMap<u32, (u32, u32, u32)>,
        threads: Vec<(u32, u32)>,
    }

    impl Procs for Fake {
        fn is_thread_of(&self, tgid: u32, tid: u32) -> bool {
            tgid == tid || self.threads.contains(&(tgid, tid))
        }
        fn parent(&self, pid: u32) -> Option<u32> {
            self.procs.get(&pid).map(|p| p.0)
        }
        fn in_tree(&self, pid: u32, root: u32) -> bool {
            let mut p = pid;
            while let Some(&(parent, _, session)) = self.procs.get(&p) {
                if p == root || session == root {
                    return true;
                }
                p = parent;
            }
            false
        }
        fn group_in_tree(&self, pgrp: u32, root: u32) -> bool {
            self.procs
                .iter()
                .any(|(&p, &(_, g, _))| g == pgrp && self.in_tree(p, root))
        }
    }

    /// The supervised process is node pid 500 (home pid 4000, home parent
    /// 3999), with a thread 501, a child 510 (group 510, a job), a
    /// grandchild 520 that started its own session; 700 is a stranger on
    /// the node (or a home pid that happens to exist here).
    fn world() -> (Ids, Fake) {
        let ids = Ids {
            node_pid: 500,
            home_pid: 4000,
            home_ppid: 3999,
        };
        let procs = HashMap::from([
            (500, (1, 500, 500)),
            (510, (500, 510, 500)),
            (520, (510, 520, 520)),
            (700, (1, 700, 700)),
        ]);
        (
            ids,
            Fake {
                procs,
                threads: vec![(500, 501)],
            },
        )
    }

    fn call(pid: u32, nr: i64, args: &[i64]) -> Notification {
        let mut a = [0u64; 6];
        for (d, s) in a.iter_mut().zip(args) {
            *d = *s as u64;
        }
        Notification {
            id: 1,
            pid,
            nr,
            arch: 0,
            args: a,
        }
    }

    const CONT: Action = Action::Reply(Reply::Continue);

    fn value(v: i64) -> Action {
        Action::Reply(Reply::Value(v))
    }

    #[test]
    fn pids() {
        let (ids, f) = world();
        let d = |pid, nr| decide(&ids, &call(pid, nr, &[]), &f);
        assert_eq!(d(500, nr::GETPID), value(4000));
        assert_eq!(d(501, nr::GETPID), value(4000), "a thread of the process");
        assert_eq!(d(510, nr::GETPID), CONT, "a child keeps its node pid");
        assert_eq!(d(500, nr::GETPPID), value(3999));
        assert_eq!(d(501, nr::GETPPID), value(3999));
        assert_eq!(d(510, nr::GETPPID), value(4000), "$PPID is the parent's $$");
        assert_eq!(d(520, nr::GETPPID), CONT);
        assert_eq!(
            decide(&ids, &call(520, nr::UNAME, &[0x1000]), &f),
            Action::Uname { addr: 0x1000 }
        );
    }

    #[test]
    fn kills() {
        let (ids, f) = world();
        let kill = |pid: i64, sig: i64| decide(&ids, &call(510, nr::KILL, &[pid, sig]), &f);
        let local = |to, sig| Action::Local {
            to,
            sig,
            info: None,
        };
        let fwd = |pid, group, sig| Action::Forward {
            pid,
            group,
            sig,
            info: None,
        };
        assert_eq!(kill(4000, 10), local(Local::Process, 10), "its home pid");
        assert_eq!(kill(4000, 0), local(Local::Process, 0));
        assert_eq!(kill(-4000, 15), local(Local::Group, 15), "kill -- -$$");
        assert_eq!(kill(510, 15), CONT, "a child, by its node pid");
        assert_eq!(kill(520, 15), CONT, "in another session, still its tree");
        assert_eq!(kill(500, 15), CONT, "its node pid");
        assert_eq!(
            kill(700, 10),
            fwd(700, false, 10),
            "any other pid is a home pid"
        );
        assert_eq!(kill(31337, 10), fwd(31337, false, 10));
        assert_eq!(kill(0, 2), CONT, "its own group here");
        assert_eq!(kill(-1, 9), Action::Reply(Reply::Error(libc::EPERM)));
        assert_eq!(kill(-510, 2), CONT, "a job's group here");
        assert_eq!(kill(-700, 2), fwd(700, true, 2), "a group at home");
        assert_eq!(kill(4000, 65), CONT, "bad signal: the kernel's EINVAL");
        assert_eq!(kill(4000, -3), CONT);
        // The pid is an int: the upper half of the register is ignored.
        assert_eq!(
            decide(&ids, &call(510, nr::KILL, &[(1 << 32) | 4000, 10]), &f),
            local(Local::Process, 10)
        );
    }

    #[test]
    fn thread_and_queued_kills() {
        let (ids, f) = world();
        let d = |nr, args: &[i64]| decide(&ids, &call(500, nr, args), &f);
        // raise(): tgkill(getpid(), gettid(), sig).
        assert_eq!(
            d(nr::TGKILL, &[4000, 501, 6]),
            Action::Local {
                to: Local::Thread(501),
                sig: 6,
                info: None
            }
        );
        assert_eq!(
            d(nr::TGKILL, &[4000, 4000, 6]),
            Action::Local {
                to: Local::Thread(500),
                sig: 6,
                info: None
            }
        );
        assert_eq!(d(nr::TGKILL, &[510, 510, 6]), CONT);
        assert_eq!(
            d(nr::TGKILL, &[700, 700, 6]),
            Action::Forward {
                pid: 700,
                group: false,
                sig: 6,
                info: None
            }
        );
        assert_eq!(
            d(nr::TGKILL, &[700, 701, 6]),
            Action::Reply(Reply::Error(libc::ESRCH))
        );
        assert_eq!(d(nr::TGKILL, &[-1, 1, 6]), CONT);
        assert_eq!(
            d(nr::TKILL, &[4000, 10]),
            Action::Local {
                to: Local::Thread(500),
                sig: 10,
                info: None
            }
        );
        assert_eq!(d(nr::TKILL, &[501, 10]), CONT);
        assert_eq!(
            d(nr::RT_SIGQUEUEINFO, &[4000, 10, 0x2000]),
            Action::Local {
                to: Local::Process,
                sig: 10,
                info: Some(0x2000)
            }
        );
        assert_eq!(
            d(nr::RT_SIGQUEUEINFO, &[700, 10, 0x2000]),
            Action::Forward {
                pid: 700,
                group: false,
                sig: 10,
                info: Some(0x2000)
            }
        );
        assert_eq!(d(nr::RT_SIGQUEUEINFO, &[-4000, 10, 0x2000]), CONT);
        assert_eq!(
            d(nr::RT_TGSIGQUEUEINFO, &[4000, 501, 10, 0x3000]),
            Action::Local {
                to: Local::Thread(501),
                sig: 10,
                info: Some(0x3000)
            }
        );
        assert_eq!(d(libc::SYS_getuid, &[]), CONT);
    }

    #[test]
    fn permission_rule() {
        // [real, effective, saved, fs]
        let user = [1000, 1000, 1000, 1000];
        let other = [1001, 1001, 1001, 1001];
        assert!(uids_may_signal(user, user));
        assert!(!uids_may_signal(user, other));
        assert!(uids_may_signal([0, 0, 0, 0], other));
        // Real uid matching the target's saved uid.
        assert!(uids_may_signal(user, [1001, 1001, 1000, 1001]));
        // Effective root only.
        assert!(uids_may_signal([1000, 0, 0, 0], other));
        // The target's effective uid does not count.
        assert!(!uids_may_signal(user, [1001, 1000, 1001, 1001]));
    }

    #[test]
    fn refusals_and_errnos() {
        for r in [
            KillRefusal::NoSuchProcess,
            KillRefusal::NotPermitted,
            KillRefusal::InvalidSignal,
        ] {
            assert_eq!(
                errno_refusal(&io::Error::from_raw_os_error(refusal_errno(r))),
                r
            );
        }
        assert_eq!(
            kill_at_home(0, 0, false, WireSignal(10), None, 1),
            Err(KillRefusal::NoSuchProcess)
        );
        assert_eq!(
            kill_at_home(0, 5, false, WireSignal(33), None, 1),
            Err(KillRefusal::InvalidSignal)
        );
        assert_eq!(
            kill_at_home(1000, 1, true, WireSignal(9), None, 1),
            Err(KillRefusal::NotPermitted)
        );
    }

    #[test]
    fn kill_at_home_with_the_senders_rights() {
        // Only root can act as another user.
        if roam_sys::cred::current_cred().0 != 0 {
            return;
        }
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert_eq!(
            kill_at_home(65534, pid, false, WireSignal(0), None, 1),
            Err(KillRefusal::NotPermitted)
        );
        assert_eq!(kill_at_home(0, pid, false, WireSignal(0), None, 1), Ok(()));
        assert_eq!(kill_at_home(0, pid, false, WireSignal(9), None, 1), Ok(()));
        child.wait().unwrap();
    }

    #[test]
    fn forwarder_answers_and_times_out() {
        let f = Forwarder::with_timeout(Duration::from_millis(50));
        let sent: Arc<Mutex<Vec<LinkMsg>>> = Arc::default();
        let log = sent.clone();
        f.set_sender(move |m| {
            log.lock().unwrap().push(m.clone());
            true
        });
        // A listener nobody uses: answers to it fail (ENOENT), which the
        // forwarder ignores; what matters is the bookkeeping.
        let (a, _b) = roam_sys::spawn::socketpair_seqpacket().unwrap();
        let listener = Arc::new(Listener::new(a));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        f.forward(rt.handle(), &listener, 7, |req| LinkMsg::KillReply {
            req,
            result: Ok(()),
        });
        assert_eq!(sent.lock().unwrap().len(), 1);
        assert_eq!(f.pending.lock().unwrap().len(), 1);
        f.complete(1, Ok(()));
        assert!(f.pending.lock().unwrap().is_empty());
        // Unanswered: given up after the timeout.
        f.forward(rt.handle(), &listener, 8, |req| LinkMsg::KillReply {
            req,
            result: Ok(()),
        });
        assert_eq!(f.pending.lock().unwrap().len(), 1);
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(200)).await });
        assert!(f.pending.lock().unwrap().is_empty());
        // No link: refused at once.
        f.set_sender(|_| false);
        f.forward(rt.handle(), &listener, 9, |req| LinkMsg::KillReply {
            req,
            result: Ok(()),
        });
        assert!(f.pending.lock().unwrap().is_empty());
    }
}
