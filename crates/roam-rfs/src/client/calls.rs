//! Calls to the home with a deadline: every request is answered exactly
//! once, by the home's reply or, if that does not come in time, by EIO.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use roam_proto::fs::{FsOp, FsReply};
use roam_proto::types::Cred;

use super::Transport;

type Done = Box<dyn FnOnce(FsReply) + Send>;

/// One call's answer, taken by whichever comes first: the reply or the
/// deadline.
struct Slot {
    what: &'static str,
    done: Mutex<Option<Done>>,
}

impl Slot {
    fn take(&self) -> Option<Done> {
        lock(&self.done).take()
    }
}

/// What the home did for a call that the client may have to undo when its
/// reply comes too late (the kernel never saw it, so it will never forget
/// the node or release the handle).
#[derive(Clone, Copy)]
enum Undo {
    Nothing,
    Entry,
    File,
    Dir,
}

type Key = (Instant, u64);

#[derive(Default)]
struct TimerState {
    queue: BTreeMap<Key, Arc<Slot>>,
    next: u64,
    stopped: bool,
}

/// The deadlines of the calls in flight, kept by one thread that answers
/// the late ones with EIO.
pub(crate) struct Timer {
    state: Mutex<TimerState>,
    wake: Condvar,
}

impl Timer {
    /// Starts the timer's thread; it runs until [`Timer::stop`].
    pub(crate) fn start() -> std::io::Result<Arc<Timer>> {
        let timer = Arc::new(Timer {
            state: Mutex::new(TimerState::default()),
            wake: Condvar::new(),
        });
        let t = timer.clone();
        std::thread::Builder::new()
            .name("roam-rfs-timer".into())
            .spawn(move || t.run())?;
        Ok(timer)
    }

    /// Stops the thread; calls still in flight then wait for their replies.
    pub(crate) fn stop(&self) {
        let mut st = lock(&self.state);
        st.stopped = true;
        st.queue.clear();
        self.wake.notify_all();
    }

    fn add(&self, deadline: Instant, slot: Arc<Slot>) -> Option<Key> {
        let mut st = lock(&self.state);
        if st.stopped {
            return None;
        }
        let key = (deadline, st.next);
        st.next += 1;
        let first = st.queue.first_key_value().is_none_or(|(k, _)| key < *k);
        st.queue.insert(key, slot);
        if first {
            self.wake.notify_all();
        }
        Some(key)
    }

    fn remove(&self, key: Key) {
        lock(&self.state).queue.remove(&key);
    }

    fn run(&self) {
        let mut st = lock(&self.state);
        loop {
            if st.stopped {
                return;
            }
            let now = Instant::now();
            let first = st.queue.first_key_value().map(|(k, _)| k.0);
            match first {
                Some(deadline) if deadline <= now => {
                    let Some((_, slot)) = st.queue.pop_first() else {
                        continue;
                    };
                    drop(st);
                    if let Some(done) = slot.take() {
                        tracing::warn!("the home did not answer a {} in time: EIO", slot.what);
                        done(FsReply::Err(libc::EIO));
                    }
                    st = lock(&self.state);
                }
                Some(deadline) => {
                    st = self
                        .wake
                        .wait_timeout(st, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                None => {
                    st = self.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                }
            }
        }
    }
}

/// Sends requests through the transport, each with its deadline.
#[derive(Clone)]
pub(crate) struct Caller {
    transport: Arc<dyn Transport>,
    timer: Arc<Timer>,
    timeout: Duration,
}

impl Caller {
    pub(crate) fn new(transport: Arc<dyn Transport>, timer: Arc<Timer>, timeout: Duration) -> Self {
        Caller {
            transport,
            timer,
            timeout,
        }
    }

    /// Sends `op` as `cred`; `on_reply` gets the home's reply, or EIO if it
    /// does not come within the timeout. A lock wait (`SetLk` with `wait`)
    /// has no deadline: it may rightly wait as long as the holder keeps the
    /// lock (the transport fails it if the link goes down). Forgets get no
    /// answer at all.
    pub(crate) fn call(
        &self,
        cred: Cred,
        op: FsOp,
        on_reply: impl FnOnce(FsReply) + Send + 'static,
    ) {
        let what = op_name(&op);
        let undo = undo_for(&op);
        let timed = !matches!(op, FsOp::SetLk { wait: true, .. } | FsOp::Forget { .. });
        let slot = Arc::new(Slot {
            what,
            done: Mutex::new(Some(Box::new(on_reply))),
        });
        let key = if timed {
            self.timer.add(Instant::now() + self.timeout, slot.clone())
        } else {
            None
        };
        let timer = self.timer.clone();
        let late = self.clone();
        let late_cred = cred.clone();
        // Each call's round trip, for diagnosis (RUST_LOG=roam_rfs::calls=trace).
        let started = Instant::now();
        self.transport.call(
            cred,
            op,
            Box::new(move |reply| {
                if let Some(key) = key {
                    timer.remove(key);
                }
                tracing::trace!(
                    op = what,
                    us = started.elapsed().as_micros() as u64,
                    "answered"
                );
                match slot.take() {
                    Some(done) => done(reply),
                    None => late.undo(late_cred, undo, reply),
                }
            }),
        );
    }

    /// Closes handles at the home (kept read-only opens that went out of
    /// use); nobody waits for the answers.
    pub(crate) fn close_kept(&self, fhs: Vec<u64>) {
        for fh in fhs {
            let cred = Cred {
                uid: 0,
                gid: 0,
                groups: Vec::new(),
            };
            let op = FsOp::Release {
                fh,
                flock_owner: None,
            };
            self.call(cred, op, |_| {});
        }
    }

    /// Tells the home to forget one lookup of `node` (an entry the kernel
    /// never received).
    pub(crate) fn forget(&self, cred: Cred, node: u64) {
        self.transport.call(
            cred,
            FsOp::Forget {
                nodes: vec![(node, 1)],
            },
            Box::new(|_| {}),
        );
    }

    /// Undoes what a reply that came after its deadline created.
    fn undo(&self, cred: Cred, undo: Undo, reply: FsReply) {
        let ignore: Done = Box::new(|_| {});
        match (undo, reply) {
            (Undo::Entry, FsReply::Entry(attr)) => self.forget(cred, attr.node),
            (Undo::File, FsReply::Opened { fh, .. }) => self.transport.call(
                cred,
                FsOp::Release {
                    fh,
                    flock_owner: None,
                },
                ignore,
            ),
            (Undo::File, FsReply::Created { attr, fh }) => {
                self.transport.call(
                    cred.clone(),
                    FsOp::Release {
                        fh,
                        flock_owner: None,
                    },
                    ignore,
                );
                self.forget(cred, attr.node);
            }
            (Undo::Dir, FsReply::Opened { fh, .. }) => {
                self.transport.call(cred, FsOp::ReleaseDir { fh }, ignore)
            }
            _ => {}
        }
    }
}

fn undo_for(op: &FsOp) -> Undo {
    match op {
        FsOp::Lookup { .. }
        | FsOp::MkNod { .. }
        | FsOp::MkDir { .. }
        | FsOp::Symlink { .. }
        | FsOp::Link { .. } => Undo::Entry,
        FsOp::Open { .. } | FsOp::Create { .. } => Undo::File,
        FsOp::OpenDir { .. } => Undo::Dir,
        _ => Undo::Nothing,
    }
}

/// The request's name, for log lines.
pub(crate) fn op_name(op: &FsOp) -> &'static str {
    match op {
        FsOp::Lookup { .. } => "lookup",
        FsOp::Forget { .. } => "forget",
        FsOp::GetAttr { .. } => "getattr",
        FsOp::SetAttr { .. } => "setattr",
        FsOp::ReadLink { .. } => "readlink",
        FsOp::MkNod { .. } => "mknod",
        FsOp::MkDir { .. } => "mkdir",
        FsOp::Unlink { .. } => "unlink",
        FsOp::RmDir { .. } => "rmdir",
        FsOp::Symlink { .. } => "symlink",
        FsOp::Rename { .. } => "rename",
        FsOp::Link { .. } => "link",
        FsOp::Open { .. } => "open",
        FsOp::Create { .. } => "create",
        FsOp::Read { .. } => "read",
        FsOp::Write { .. } => "write",
        FsOp::Flush { .. } => "flush",
        FsOp::Release { .. } => "release",
        FsOp::Fsync { .. } => "fsync",
        FsOp::OpenDir { .. } => "opendir",
        FsOp::ReadDir { .. } => "readdir",
        FsOp::ReleaseDir { .. } => "releasedir",
        FsOp::FsyncDir { .. } => "fsyncdir",
        FsOp::StatFs { .. } => "statfs",
        FsOp::Access { .. } => "access",
        FsOp::GetLk { .. } => "getlk",
        FsOp::SetLk { .. } => "setlk",
        FsOp::Flock { .. } => "flock",
        FsOp::Fallocate { .. } => "fallocate",
        FsOp::Lseek { .. } => "lseek",
        FsOp::CopyFileRange { .. } => "copy_file_range",
        FsOp::GetXattr { .. } => "getxattr",
        FsOp::ListXattr { .. } => "listxattr",
        FsOp::SetXattr { .. } => "setxattr",
        FsOp::RemoveXattr { .. } => "removexattr",
    }
}

/// Locks `m`, ignoring poisoning (the data stays consistent: every
/// critical section here is a single map or option update).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Answers nothing; keeps the callbacks so they are not dropped.
    #[derive(Default)]
    struct Silent(Mutex<Vec<(FsOp, Done)>>);
    impl Transport for Silent {
        fn call(&self, _cred: Cred, op: FsOp, done: Done) {
            self.0.lock().unwrap().push((op, done));
        }
    }

    fn root() -> Cred {
        Cred {
            uid: 0,
            gid: 0,
            groups: vec![],
        }
    }

    #[test]
    fn a_call_without_answer_fails_with_eio_after_the_timeout() {
        let silent = Arc::new(Silent::default());
        let timer = Timer::start().unwrap();
        let caller = Caller::new(silent.clone(), timer.clone(), Duration::from_millis(100));
        let (tx, rx) = mpsc::channel();
        let t0 = Instant::now();
        caller.call(root(), FsOp::StatFs { node: 1 }, move |r| {
            tx.send(r).unwrap();
        });
        let r = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(r, FsReply::Err(libc::EIO));
        assert!(t0.elapsed() >= Duration::from_millis(100));
        // The late reply is ignored (the slot was taken).
        let (_, done) = silent.0.lock().unwrap().pop().unwrap();
        done(FsReply::Ok);
        timer.stop();
    }

    #[test]
    fn a_reply_in_time_is_delivered_once_and_cancels_the_deadline() {
        let silent = Arc::new(Silent::default());
        let timer = Timer::start().unwrap();
        let caller = Caller::new(silent.clone(), timer.clone(), Duration::from_millis(50));
        let (tx, rx) = mpsc::channel();
        caller.call(root(), FsOp::StatFs { node: 1 }, move |r| {
            tx.send(r).unwrap();
        });
        let (_, done) = silent.0.lock().unwrap().pop().unwrap();
        done(FsReply::Ok);
        assert_eq!(rx.recv().unwrap(), FsReply::Ok);
        assert!(lock(&timer.state).queue.is_empty());
        std::thread::sleep(Duration::from_millis(100));
        assert!(rx.try_recv().is_err());
        timer.stop();
    }

    #[test]
    fn a_late_open_is_released_and_a_late_entry_forgotten() {
        let silent = Arc::new(Silent::default());
        let timer = Timer::start().unwrap();
        let caller = Caller::new(silent.clone(), timer.clone(), Duration::from_millis(10));
        let (tx, rx) = mpsc::channel();
        let tx2 = tx.clone();
        caller.call(root(), FsOp::Open { node: 5, flags: 0 }, move |r| {
            tx.send(r).unwrap();
        });
        caller.call(
            root(),
            FsOp::Lookup {
                parent: 1,
                name: b"x".to_vec().into(),
            },
            move |r| {
                tx2.send(r).unwrap();
            },
        );
        assert_eq!(rx.recv().unwrap(), FsReply::Err(libc::EIO));
        assert_eq!(rx.recv().unwrap(), FsReply::Err(libc::EIO));
        let mut calls: Vec<(FsOp, Done)> = silent.0.lock().unwrap().drain(..).collect();
        let (_, lookup) = calls.pop().unwrap();
        let (_, open) = calls.pop().unwrap();
        open(FsReply::Opened {
            fh: 9,
            keep_cache: false,
            watched: false,
        });
        lookup(FsReply::Entry(roam_proto::fs::Attr {
            node: 7,
            ..Default::default()
        }));
        let undone: Vec<FsOp> = silent.0.lock().unwrap().drain(..).map(|c| c.0).collect();
        assert_eq!(
            undone,
            vec![
                FsOp::Release {
                    fh: 9,
                    flock_owner: None
                },
                FsOp::Forget {
                    nodes: vec![(7, 1)]
                }
            ]
        );
        timer.stop();
    }
}
