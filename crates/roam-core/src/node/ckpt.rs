//! Checkpoint and restore of remote processes on a node (issue 6).
//!
//! The ptrace work runs on one long-lived thread of the daemon, the
//! *tracer*: ptrace requests must come from the thread that attached, and
//! a restored process is that thread's child, which must outlive it
//! (`PR_SET_PDEATHSIG` fires when the parent thread exits). While it
//! traces it holds the node's trace gate, which keeps the reaper's
//! `waitpid(-1)` from taking the stops it waits for.
//!
//! Images travel over the link as a transfer (`Image` frames of at most
//! [`MAX_DATA_CHUNK`] bytes, at most [`IMAGE_WINDOW`] unacknowledged, then
//! `ImageEnd`), through the home, to and from the `roam` command; a
//! migration's go straight to the new node over a peer link when it has a
//! peer listener (see [`super::peer`]). See docs/design/checkpoint.md and
//! docs/design/migration.md.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use roam_ckpt::capture::{capture_held_lazy, capture_held_tracked, Held};
use roam_ckpt::image::PAGE;
use roam_ckpt::postcopy::{bytes_of, Pager};
use roam_ckpt::precopy::Filler;
use roam_ckpt::precopy::{PageStore, Tracker};
use roam_ckpt::restore::{restore_prespawned, Image, RestoreOpts, Restored, User};
use roam_ckpt::stubs::{Prespawned, StubFactory};
use roam_proto::link::{LinkMsg, PeerPath, IMAGE_WINDOW, LAZY_WINDOW, STREAM_WINDOW};
use roam_proto::types::{
    Cred, ErrorCode, Handover, ImageSummary, MigrateMode, RestoreSpec, SessionId, SessionReport,
    WireError, MAX_IMAGE, MAX_UNREAD,
};
use roam_proto::MAX_DATA_CHUNK;
use tokio::sync::{mpsc, oneshot};

use super::{prepare_stdio, start_session, NodeShared};
use crate::config::IdentityMode;
use crate::error_chain;
use crate::wire::FrameTx;

/// How long a transfer waits for its peer's next message before giving
/// up (the caller went away without a word, the link is gone).
const TRANSFER_IDLE: Duration = Duration::from_secs(60);

/// The image architecture this node restores (its own).
const NATIVE_ARCH: &str = "x86_64";

/// Post-copy: the pages sent at once for a fault, from the one it waits
/// for on (within its run): a process that reads on after it finds the
/// next ones there.
const LAZY_FAULT_PAGES: usize = 16;

/// How long a restore waits for the session's last copy here to go (a
/// move back just after a move away).
const LEAVING_WITHIN: Duration = Duration::from_secs(10);

/// Messages of pages the old node pushes before it lets its other tasks
/// run (1 MiB).
const LAZY_BURST: usize = 4;

/// Pre-copy: a process of at most this resident memory moves eagerly
/// unless pre-copy is asked for (a round would cost more than it saves).
const PRECOPY_MIN_RSS: u64 = 16 << 20;
/// Pre-copy stops when a round found at most this much written...
const PRECOPY_DONE: u64 = 1 << 20;
/// ...or when a round found more than this share of the last one's (the
/// rounds stop converging: the process writes about as fast as the link
/// carries)...
const PRECOPY_CONVERGING: f64 = 0.8;
/// ...or after this many rounds.
const PRECOPY_ROUNDS: u32 = 8;

/// A capture's image, serialized: its pieces in order (the section
/// headers between the payloads, which are not copied).
struct CapturedImage {
    pieces: Vec<Vec<u8>>,
    summary: ImageSummary,
    /// A post-copy's pages left out (runs of pages).
    lazy: Vec<(u64, usize)>,
}

impl CapturedImage {
    fn parts(&self) -> Vec<&[u8]> {
        self.pieces.iter().map(Vec::as_slice).collect()
    }
}

enum Job {
    Capture {
        pid: i32,
        own_filters: u32,
        leave_running: bool,
        /// The pre-copy's tracking, if the capture ends one.
        tracker: Option<Box<Tracker>>,
        /// Leave the large private anonymous mappings' pages out (a
        /// post-copy).
        lazy: bool,
        reply: oneshot::Sender<Result<CapturedImage, String>>,
    },
    /// Starts tracking a process's writes for pre-copy.
    Track {
        pid: i32,
        reply: oneshot::Sender<Result<Box<Tracker>, String>>,
    },
    /// Ends the hold of a capture without `leave_running`.
    Release {
        pid: i32,
        kill: bool,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Restore {
        image: Box<Image>,
        opts: RestoreOpts,
        /// The migration whose stub was made ahead ([`Job::Prespawn`]).
        migration: Option<u64>,
        /// Called with the pid before the reaper may see it.
        register: Box<dyn FnOnce(u32) + Send>,
        reply: oneshot::Sender<Result<Restored, String>>,
    },
    /// Makes the stub of migration `req`'s restore, of the process that
    /// is `pid` on the old node, while the old node captures it: the
    /// restore finds it ready ([`roam_ckpt::stubs::StubFactory::prespawn`]).
    Prespawn {
        req: u64,
        pid: i32,
        root: Option<Vec<u8>>,
    },
    /// Makes the restore stubs' zygote for `root` ahead of the first
    /// restore (see [`roam_ckpt::stubs`]).
    Warm { root: Option<Vec<u8>> },
    /// Ends the zygote, which holds the mount of the home's files it
    /// entered: before that mount is dropped (its file server waits for
    /// every user of the mount to go).
    Forget { reply: oneshot::Sender<()> },
}

/// The tracer thread's queue.
pub(super) struct Tracer {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Tracer {
    pub(super) fn start(gate: Arc<tokio::sync::Mutex<()>>) -> Tracer {
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("roam-tracer".into())
            .spawn(move || {
                // SIGCHLD goes to the runtime's thread, which reaps.
                roam_sys::signal::block_all_in_thread();
                let mut t = TracerState::default();
                loop {
                    // Stubs made ahead are swept even when no job comes.
                    let job = if t.ready.is_empty() {
                        match rx.recv() {
                            Ok(job) => Some(job),
                            Err(_) => break,
                        }
                    } else {
                        match rx.recv_timeout(PRESPAWNED_FOR) {
                            Ok(job) => Some(job),
                            Err(RecvTimeoutError::Timeout) => None,
                            Err(RecvTimeoutError::Disconnected) => break,
                        }
                    };
                    t.ready.retain(|_, p| p.age() < PRESPAWNED_FOR);
                    if let Some(job) = job {
                        let _gate = gate.blocking_lock();
                        run_job(job, &mut t);
                    }
                }
            })
            .expect("cannot start the tracer thread");
        Tracer { jobs }
    }

    /// Has the restore stubs' zygote made for `root` (the home's files
    /// mounted and served), in the background.
    pub(super) fn warm(&self, root: Option<Vec<u8>>) {
        let _ = self.jobs.send(Job::Warm { root });
    }

    /// Has the stub of migration `req` made now, of the process that is
    /// `pid` on the old node (see [`Job::Prespawn`]).
    pub(super) fn prespawn(&self, req: u64, pid: u32, root: Option<Vec<u8>>) {
        let Ok(pid) = i32::try_from(pid) else {
            return;
        };
        let _ = self.jobs.send(Job::Prespawn { req, pid, root });
    }

    /// Ends the restore stubs' zygote (see [`Job::Forget`]).
    pub(super) async fn forget_stubs(&self) {
        let _ = self.ask(|reply| Job::Forget { reply }).await;
    }

    async fn ask<T>(&self, job: impl FnOnce(oneshot::Sender<T>) -> Job) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send(job(tx)).ok()?;
        rx.await.ok()
    }
}

/// How long a stub made ahead for a migration waits for its restore (a
/// pre-copy's rounds come first) before it is killed.
const PRESPAWNED_FOR: Duration = Duration::from_secs(30);

/// What the tracer thread keeps.
#[derive(Default)]
struct TracerState {
    /// Processes captured and stopped, by pid.
    held: HashMap<i32, Held>,
    /// Restore stubs, cloned from a zygote this thread traces.
    stubs: Option<StubFactory>,
    /// Stubs made ahead for migrations, by request id.
    ready: HashMap<u64, Prespawned>,
}

fn run_job(job: Job, t: &mut TracerState) {
    let TracerState { held, stubs, ready } = t;
    match job {
        Job::Capture {
            pid,
            own_filters,
            leave_running,
            mut tracker,
            lazy,
            reply,
        } => {
            let t0 = Instant::now();
            let captured = if lazy {
                capture_held_lazy(pid, own_filters)
            } else {
                capture_held_tracked(pid, own_filters, tracker.as_deref_mut())
            };
            let result = captured.map_err(|e| error_chain(&e)).and_then(|(c, h)| {
                if leave_running {
                    h.release(false).map_err(|e| error_chain(&e))?;
                } else {
                    held.insert(pid, h);
                }
                // Frozen from its stop: the checks before it let it run.
                let checked = c
                    .steps
                    .iter()
                    .find(|(step, _)| *step == roam_ckpt::capture::STEP_CHECK)
                    .map_or(Duration::ZERO, |(_, d)| *d);
                let frozen_us = t0.elapsed().saturating_sub(checked).as_micros() as u64;
                tracing::debug!(
                    "pid {pid}: capture steps (ms): {}",
                    roam_ckpt::steps::describe(&c.steps)
                );
                let lazy = c.lazy;
                let pieces = roam_ckpt::image::into_pieces(c.sections).map_err(|e| {
                    if let Some(h) = held.remove(&pid) {
                        let _ = h.release(false);
                    }
                    format!("cannot serialize the image: {e}")
                })?;
                let summary = ImageSummary {
                    len: pieces.iter().map(|p| p.len() as u64).sum(),
                    stored: c.stored_bytes,
                    frozen_us,
                    stopped_after_us: 0,
                    lazy: bytes_of(&lazy),
                };
                Ok(CapturedImage {
                    pieces,
                    summary,
                    lazy,
                })
            });
            let _ = reply.send(result);
        }
        Job::Track { pid, reply } => {
            let result = Tracker::start(pid)
                .map(Box::new)
                .map_err(|e| error_chain(&e));
            let _ = reply.send(result);
        }
        Job::Release { pid, kill, reply } => {
            let result = match held.remove(&pid) {
                Some(h) => h.release(kill).map_err(|e| error_chain(&e)),
                None => Err(format!("process {pid} is not held")),
            };
            let _ = reply.send(result);
        }
        Job::Restore {
            image,
            opts,
            migration,
            register,
            reply,
        } => {
            let pre = migration.and_then(|req| ready.remove(&req));
            let mut result =
                restore_prespawned(&image, &opts, stubs, pre).map_err(|e| error_chain(&e));
            if let Ok(r) = &mut result {
                register(r.pid as u32);
                if let Some(h) = r.held.take() {
                    held.insert(r.pid, h);
                }
            }
            let _ = reply.send(result);
        }
        Job::Prespawn { req, pid, root } => {
            // One stub per pid: an older one's migration failed.
            ready.retain(|_, p| p.wanted() != Some(pid));
            if !stubs.as_ref().is_some_and(|f| f.serves(root.as_deref())) {
                *stubs = StubFactory::new(root.as_deref()).ok();
            }
            // Without one, the restore makes its stub as it would have.
            if let Some(f) = stubs {
                match f.prespawn(Some(pid)) {
                    Ok(p) => {
                        ready.insert(req, p);
                    }
                    Err(e) => tracing::debug!("migration {req}: no stub made ahead: {e:?}"),
                }
            }
        }
        Job::Forget { reply } => {
            // Its clones are in its mount namespace too.
            ready.clear();
            *stubs = None;
            let _ = reply.send(());
        }
        Job::Warm { root } => {
            if stubs.as_ref().is_some_and(|f| f.serves(root.as_deref())) {
                return;
            }
            let t0 = Instant::now();
            match StubFactory::new(root.as_deref()) {
                Ok(f) => {
                    tracing::debug!(
                        "restore stubs' zygote {} made in {:.1} ms",
                        f.zygote(),
                        t0.elapsed().as_secs_f64() * 1e3
                    );
                    *stubs = Some(f);
                }
                Err(e) => tracing::warn!(
                    "cannot make the restore stubs' zygote (restores fork their stubs): {}",
                    error_chain(&e)
                ),
            }
        }
    }
}

fn err(code: ErrorCode, message: impl Into<String>) -> WireError {
    WireError::new(code, message)
}

/// Seccomp filters a remote process has that are the node's own (its
/// identity supervision), installed again at restore.
fn own_filters(shared: &NodeShared) -> u32 {
    u32::from(shared.cfg.identity == IdentityMode::Home)
}

/// `Checkpoint`: captures the session's process and sends its image.
pub(super) async fn checkpoint(
    shared: Arc<NodeShared>,
    req: u64,
    session: SessionId,
    leave_running: bool,
    rx: mpsc::UnboundedReceiver<LinkMsg>,
) {
    let result = checkpoint_inner(&shared, req, session, leave_running, rx).await;
    shared.transfers.lock().unwrap().remove(&req);
    match &result {
        Ok(()) => tracing::info!("session {session}: checkpointed"),
        Err(e) => tracing::info!("session {session}: checkpoint failed: {}", e.message),
    }
    shared.send(&LinkMsg::Checkpointed { req, result });
}

async fn checkpoint_inner(
    shared: &Arc<NodeShared>,
    req: u64,
    session: SessionId,
    leave_running: bool,
    mut rx: mpsc::UnboundedReceiver<LinkMsg>,
) -> Result<(), WireError> {
    let (pid, _) = session_of(shared, session)?;
    let image = capture(shared, pid, leave_running, None, false).await?;
    let sent = Outgoing::new(req)
        .send(shared, &image.parts(), &mut rx)
        .await;
    let saved = match sent {
        Ok(()) => {
            shared.send(&LinkMsg::ImageEnd {
                req,
                result: Ok(image.summary),
            });
            wait_saved(&mut rx).await
        }
        Err(e) => {
            shared.send(&LinkMsg::ImageEnd {
                req,
                result: Err(e.clone()),
            });
            Err(e)
        }
    };
    drop(image);
    if !leave_running {
        // Killed only once the image is safe; otherwise it runs on.
        release(shared, pid, saved.is_ok()).await?;
    }
    saved
}

/// Waits for the caller's `ImageSaved`.
async fn wait_saved(rx: &mut mpsc::UnboundedReceiver<LinkMsg>) -> Result<(), WireError> {
    loop {
        match tokio::time::timeout(TRANSFER_IDLE, rx.recv()).await {
            Ok(Some(LinkMsg::ImageSaved { ok: true, .. })) => return Ok(()),
            Ok(Some(LinkMsg::ImageSaved { ok: false, .. })) => {
                return Err(err(
                    ErrorCode::Unavailable,
                    "the image was not saved: the process runs on",
                ))
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                return Err(err(
                    ErrorCode::Unavailable,
                    "the caller did not say the image was saved: the process runs on",
                ))
            }
        }
    }
}

/// The sending end of transfer `req`, whose offsets run on across what
/// it sends (a migration's pre-copy rounds, unread input, image).
struct Outgoing {
    req: u64,
    offset: u64,
    acked: u64,
    /// The peer link the bytes go over, straight to the new node (else
    /// through the home).
    peer: Option<FrameTx>,
}

impl Outgoing {
    fn new(req: u64) -> Outgoing {
        Outgoing {
            req,
            offset: 0,
            acked: 0,
            peer: None,
        }
    }

    /// Sends a message the home must see (it counts the rounds, decides on
    /// the end), and the new node too, over the peer link if there is one
    /// (the home passes it on otherwise).
    fn tell(&self, shared: &NodeShared, msg: &LinkMsg) {
        if shared.faulted_at(msg) {
            return;
        }
        if let Some(p) = &self.peer {
            p.send("peer", msg);
        }
        shared.send_raw(msg);
    }

    /// Sends `parts`, one after the other, at most [`IMAGE_WINDOW`] ahead
    /// of the receiver's acknowledgements.
    async fn send(
        &mut self,
        shared: &NodeShared,
        parts: &[&[u8]],
        rx: &mut mpsc::UnboundedReceiver<LinkMsg>,
    ) -> Result<(), WireError> {
        let req = self.req;
        for chunk in parts.iter().flat_map(|p| p.chunks(MAX_DATA_CHUNK)) {
            self.wait_window(rx).await?;
            if shared.faulted("Image") {
                return Err(err(
                    ErrorCode::Unavailable,
                    format!("node {}: an injected fault", shared.name),
                ));
            }
            let frame = roam_proto::link::encode_image_frame(req, self.offset, chunk)
                .map_err(|e| err(ErrorCode::Internal, e.to_string()))?;
            let sent = match &self.peer {
                Some(p) => p.send_frame(frame),
                None => shared.link_send_frame(frame),
            };
            if !sent {
                return Err(err(
                    ErrorCode::Unavailable,
                    format!("node {}: the link the image went over broke", shared.name),
                ));
            }
            self.offset += chunk.len() as u64;
        }
        Ok(())
    }

    /// Takes the acknowledgements that came, and fails if the transfer
    /// was called off meanwhile.
    fn poll(&mut self, rx: &mut mpsc::UnboundedReceiver<LinkMsg>) -> Result<(), WireError> {
        loop {
            match rx.try_recv() {
                Ok(LinkMsg::ImageAck { offset: o, .. }) => self.acked = self.acked.max(o),
                Ok(LinkMsg::MigrateEnd { .. }) => {
                    return Err(err(ErrorCode::Unavailable, "the migration was called off"))
                }
                Ok(_) => {}
                Err(mpsc::error::TryRecvError::Empty) => return Ok(()),
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    return Err(err(ErrorCode::Unavailable, "the link went away"))
                }
            }
        }
    }

    /// Waits until everything sent is acknowledged.
    async fn drain(&mut self, rx: &mut mpsc::UnboundedReceiver<LinkMsg>) -> Result<(), WireError> {
        while self.acked < self.offset {
            self.wait_ack(rx).await?;
        }
        Ok(())
    }

    /// Waits until the window has room.
    async fn wait_window(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<LinkMsg>,
    ) -> Result<(), WireError> {
        while self.offset - self.acked > IMAGE_WINDOW {
            self.wait_ack(rx).await?;
        }
        Ok(())
    }

    /// Waits for the next acknowledgement.
    async fn wait_ack(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<LinkMsg>,
    ) -> Result<(), WireError> {
        loop {
            match tokio::time::timeout(TRANSFER_IDLE, rx.recv()).await {
                Ok(Some(LinkMsg::ImageAck { offset: o, .. })) => {
                    self.acked = self.acked.max(o);
                    return Ok(());
                }
                Ok(Some(LinkMsg::ImageSaved { .. })) => {
                    return Err(err(ErrorCode::Unavailable, "the caller gave up the image"))
                }
                Ok(Some(LinkMsg::MigrateEnd { .. })) => {
                    return Err(err(ErrorCode::Unavailable, "the migration was called off"))
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    return Err(err(
                        ErrorCode::Unavailable,
                        "the caller stopped taking the image",
                    ))
                }
            }
        }
    }
}

/// A restore's transfer: its messages, and a migration's pre-copied pages
/// with the transfer offset where they end.
pub(super) type Incoming = (mpsc::UnboundedReceiver<LinkMsg>, Option<(PageStore, u64)>);

/// `Restore`: receives the image, rebuilds its process as the process of
/// `session`, and returns its pid.
pub(super) async fn restore(
    shared: &Arc<NodeShared>,
    req: u64,
    session: SessionId,
    home_pid: u32,
    cred: Cred,
    spec: RestoreSpec,
    (mut rx, precopied): Incoming,
) -> Result<u32, WireError> {
    let here = |m: String| format!("node {}: {m}", shared.name);
    let t0 = Instant::now();
    if spec.ahead {
        return Err(err(
            ErrorCode::BadRequest,
            here("a restore sent ahead of a capture that never completed it".into()),
        ));
    }
    let (store, base) = match precopied {
        Some((s, b)) => (Some(s), b),
        None => (None, 0),
    };
    if spec.arch != NATIVE_ARCH {
        return Err(err(
            ErrorCode::ExecFailed,
            here(format!(
                "the image is of an {} process; this node restores {NATIVE_ARCH} ones",
                spec.arch
            )),
        ));
    }
    // A terminal's unread input is what its line discipline held: a few
    // KiB at most.
    let unread_limit = |h: &Handover| match h.tty {
        Some(_) => roam_sys::pty::MAX_TAKEN_INPUT as u64,
        None => MAX_UNREAD,
    };
    let unread = match &spec.handover {
        Some(h) if h.stdin_unread > unread_limit(h) || h.stdin_unread > h.stdin_delivered => {
            return Err(err(
                ErrorCode::BadRequest,
                here(format!(
                    "a migration with {} bytes of unread input of {}",
                    h.stdin_unread, h.stdin_delivered
                )),
            ))
        }
        Some(h) => h.stdin_unread,
        None => 0,
    };
    let room = roam_sys::procfs::mem_available().unwrap_or(u64::MAX);
    if spec.image_len > MAX_IMAGE || spec.image_len > room {
        return Err(err(
            ErrorCode::NoCapacity,
            here(format!(
                "an image of {} bytes does not fit (at most {} here)",
                spec.image_len,
                room.min(MAX_IMAGE)
            )),
        ));
    }
    // The home restores a session here only if it runs elsewhere: one
    // still here is the copy of a move away that has just been decided
    // (its frozen process being killed), gone in a moment.
    let limit = Instant::now() + LEAVING_WITHIN;
    while shared.sessions.lock().unwrap().contains_key(&session) {
        if Instant::now() > limit {
            return Err(err(ErrorCode::BadRequest, "session already exists"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    shared.fs.note_user(&cred);
    if shared
        .files
        .as_ref()
        .is_some_and(|f| f.lock().unwrap().is_none())
    {
        return Err(err(
            ErrorCode::ExecFailed,
            here("the home's files are not mounted (see its log)".into()),
        ));
    }
    let root = shared.root();
    let bytes = receive(
        shared,
        req,
        base,
        unread + spec.image_len,
        Some(spec.image_len),
        &mut rx,
    )
    .await?;
    let received = t0.elapsed();
    let hold = spec.handover.is_some();
    let handover = spec
        .handover
        .map(|h| (h, bytes[..unread as usize].to_vec()));
    // Checked and decoded where it was received: the pages stay there.
    let mut image = Image::from_received(bytes, unread as usize)
        .map_err(|e| err(ErrorCode::BadRequest, here(format!("bad image: {e}"))))?;
    if let Some(store) = store {
        image
            .attach_precopied(store)
            .map_err(|e| err(ErrorCode::BadRequest, here(format!("bad image: {e}"))))?;
    }
    // A migration's image comes from a node, which captured a process of
    // the session's user: restored with that user's ids and rights.
    let mut cred = cred;
    if handover.is_some() {
        let c = &image.context;
        if c.uids[0] != cred.uid {
            return Err(err(
                ErrorCode::PermissionDenied,
                here(format!(
                    "the image is of uid {}, the session of uid {}",
                    c.uids[0], cred.uid
                )),
            ));
        }
        cred = Cred {
            uid: c.uids[0],
            gid: c.gids[0],
            groups: c.groups.clone(),
        };
        shared.fs.note_user(&cred);
    }
    // A process on a terminal gets one like it: its size and modes as the
    // program left them.
    let tty = handover.as_ref().and_then(|(h, _)| h.tty.clone());
    let (mut ends, child_fds, ctty) = prepare_stdio(tty.as_ref(), spec.null).map_err(|e| {
        err(
            ErrorCode::Internal,
            here(format!("cannot set up stdio: {e}")),
        )
    })?;
    // The pages left out of the image come over the peer link it came
    // over, from the restore's first fault on: its pager starts now.
    // Streamed (not post-copy), the restore is reported once all are in.
    let streamed = !spec.postcopy;
    let mut all_in = None;
    let lazy = if image.lazy.is_empty() {
        None
    } else {
        let back = shared.peer_acks.lock().unwrap().get(&req).cloned();
        let from = shared.expected.lock().unwrap().get(&req).cloned();
        let (Some(back), Some(from), true) = (back, from, handover.is_some()) else {
            return Err(err(
                ErrorCode::BadRequest,
                here("a post-copy's image came other than over a peer link".into()),
            ));
        };
        let (queue, pages) = mpsc::unbounded_channel();
        shared
            .lazy_in
            .lock()
            .unwrap()
            .insert(req, (from.clone(), queue));
        shared.opened.notify_waiters();
        let (uffd_tx, uffd_rx) = std::sync::mpsc::channel();
        let runs = image.lazy.clone();
        let done = streamed.then(|| {
            let (tx, rx) = oneshot::channel();
            all_in = Some(rx);
            tx
        });
        let lazy = LazyIn {
            req,
            base: unread + spec.image_len,
            session,
            from,
            back,
            done,
        };
        tokio::spawn(lazy_in(shared.clone(), lazy, runs, uffd_rx, pages));
        Some(uffd_tx)
    };
    let supervise = (shared.cfg.identity == IdentityMode::Home)
        .then(|| roam_sys::seccomp::notify_filter(&crate::identity::SYSCALLS))
        .transpose()
        .map_err(|e| err(ErrorCode::Internal, here(format!("seccomp filter: {e}"))))?;
    let opts = RestoreOpts {
        stdio: [
            child_fds[0].as_raw_fd(),
            child_fds[1].as_raw_fd(),
            child_fds[2].as_raw_fd(),
        ],
        same_pid: true,
        new_session: true,
        ctty,
        creds: true,
        // Root restores any image; a user only their own, with their rights.
        user: (cred.uid != 0).then(|| User {
            uid: cred.uid,
            gid: cred.gid,
            groups: cred.groups.clone(),
        }),
        supervise,
        pdeathsig: Some(libc::SIGKILL),
        root,
        // A migration's copy runs once the home decides the move (its
        // `PathUp`): until then the old one may still go on.
        hold,
        lazy,
        // A pre-copy's pages are all here: the process runs (or is
        // held, ready) before they are placed, which goes on beside it.
        precopied_later: true,
    };
    let (tx, cmd_rx) = mpsc::unbounded_channel();
    let pids = shared.pids.clone();
    let register_tx = tx.clone();
    let ready = t0.elapsed();
    let mut restored = shared
        .tracer
        .ask(|reply| Job::Restore {
            image: Box::new(image),
            opts,
            migration: Some(req),
            register: Box::new(move |pid| {
                pids.lock().unwrap().insert(pid, register_tx);
            }),
            reply,
        })
        .await
        .ok_or_else(|| err(ErrorCode::Internal, "the tracer thread is gone"))?
        .map_err(|e| err(ErrorCode::ExecFailed, here(e)))?;
    drop(child_fds);
    let rebuilt = t0.elapsed();
    let pid = restored.pid as u32;
    if let Some(all_in) = all_in {
        let why = match all_in.await {
            Ok(Ok(())) => None,
            Ok(Err(why)) => Some(why),
            Err(_) => Some("its pager ended".to_owned()),
        };
        if let Some(why) = why {
            kill_restored(shared, pid, hold).await;
            return Err(err(
                ErrorCode::Unavailable,
                here(format!(
                    "the pages left out of the image did not all come: {why}"
                )),
            ));
        }
    }
    if let Some(listener) = restored.listener {
        let sup = shared.supervision(session, home_pid, spec.home_ppid, &spec.home_host, false);
        if let Err(e) = crate::identity::start_supervisor(pid, listener, &sup) {
            kill_restored(shared, pid, hold).await;
            return Err(err(
                ErrorCode::Internal,
                here(format!("cannot supervise the restored process: {e}")),
            ));
        }
    }
    let report = SessionReport {
        session,
        home_pid,
        node_pid: pid,
        uid: cred.uid,
        command: spec.command.clone(),
    };
    if let Err(e) = start_session(
        shared,
        report,
        &mut ends,
        tty.as_ref(),
        handover,
        tx,
        cmd_rx,
    ) {
        kill_restored(shared, pid, hold).await;
        return Err(e);
    }
    if hold {
        if let Some(h) = shared.sessions.lock().unwrap().get_mut(&session) {
            h.held = true;
        }
    }
    if let Some(filler) = restored.filler.take() {
        tokio::spawn(precopied_in(shared.clone(), session, filler));
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    tracing::debug!(
        "session {session}: rebuild steps (ms): {}",
        roam_ckpt::steps::describe(&restored.steps)
    );
    tracing::info!(
        "session {session}: pid {pid} uid {} restored for home pid {home_pid}{} in {:.1} ms (image in at {:.1}, rebuild from {:.1} to {:.1})",
        cred.uid,
        if hold {
            ", held until the move is decided"
        } else {
            ""
        },
        ms(t0.elapsed()),
        ms(received),
        ms(ready),
        ms(rebuilt),
    );
    Ok(pid)
}

/// Waits for the pre-copied pages of a restored process to be placed
/// ([`RestoreOpts::precopied_later`]); if they cannot be, the process
/// cannot go on (a page it touches never comes): it is ended, its proxy
/// told why.
async fn precopied_in(shared: Arc<NodeShared>, session: SessionId, filler: Filler) {
    let t0 = Instant::now();
    let result = tokio::task::spawn_blocking(move || filler.wait())
        .await
        .unwrap_or_else(|_| Err("the filling task failed".into()));
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    match result {
        Ok(f) => tracing::info!(
            "session {session}: pre-copied pages placed in {ms:.1} ms: {} bytes, {} faults waited for a page",
            f.bytes,
            f.faults
        ),
        Err(why) => {
            tracing::warn!("session {session}: pre-copied pages not placed after {ms:.1} ms: {why}");
            shared.to_session(
                session,
                super::SessionCmd::Lost(format!(
                    "roam: the process was lost: its pre-copied memory could not be placed: {why}\n"
                )),
            );
        }
    }
}

/// A message of the old node to the pages coming in for a migration
/// ([`lazy_in`]), as the peer link hands it on.
pub(super) enum LazyMsg {
    /// Pages at `addr` (of the old process's layout): `frame[at..]`, in
    /// the frame they came in (not copied out of it).
    Pages {
        addr: u64,
        frame: Vec<u8>,
        at: usize,
    },
    /// The old node sent every page (`LazyEnd`).
    End,
}

/// The pages an image left out, coming in: their migration, its session,
/// the node they come from and the peer link back there.
struct LazyIn {
    req: u64,
    /// The transfer's bytes before the pages (its acknowledgements count
    /// on from there).
    base: u64,
    session: SessionId,
    from: String,
    back: FrameTx,
    /// Streamed: told when every page is in, or why not (the process is
    /// not running yet, and the restore fails then); `None` for post-copy.
    done: Option<oneshot::Sender<Result<(), String>>>,
}

/// On the new node, the pages a migration's image left out: serves the
/// restored process's userfaultfd (once the restore made it) with a
/// [`Pager`], which asks the old node for the pages faults wait for;
/// places the pages that come; and, when every page is in, tells the old
/// node (`LazyDone`). Streamed, it tells the restore too, which reports
/// the process restored only then, or fails if the pages stopped coming.
/// With post-copy the process already runs: if the pages stop coming (the
/// old node or the link went), it cannot go on, and is ended, its proxy
/// told why.
async fn lazy_in(
    shared: Arc<NodeShared>,
    lazy: LazyIn,
    runs: Vec<(u64, usize)>,
    uffd: std::sync::mpsc::Receiver<std::os::fd::OwnedFd>,
    mut pages: mpsc::UnboundedReceiver<LazyMsg>,
) {
    let LazyIn {
        req,
        base,
        session,
        from,
        back,
        done: all_in,
    } = lazy;
    let what = if all_in.is_some() {
        "streamed pages"
    } else {
        "post-copy"
    };
    let t0 = Instant::now();
    let total = bytes_of(&runs);
    // The restore sends it, or fails (and drops the sender).
    let uffd = tokio::task::spawn_blocking(move || uffd.recv()).await;
    let result = match uffd {
        Ok(Ok(uffd)) => {
            let ask = back.clone();
            match Pager::start(uffd, &runs, move |addr| {
                ask.send("peer", &LinkMsg::LazyWant { req, addr });
            }) {
                Ok(pager) => {
                    let to = Peer {
                        req,
                        base,
                        from: &from,
                        back: &back,
                    };
                    let r = fill(&shared, session, &to, &pager, &mut pages).await;
                    let faults = pager.faults();
                    drop(pager);
                    r.map(|received| (received, faults))
                }
                Err(e) => Err(format!("cannot start the pager: {e}")),
            }
        }
        _ => Err("the restore failed".into()),
    };
    shared.lazy_in.lock().unwrap().remove(&req);
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let done = match &result {
        Ok((received, faults)) => {
            tracing::info!(
                "session {session}: {what} from {from} over in {ms:.1} ms: {total} bytes expected, {received} received, {faults} faults waited for a page"
            );
            Ok(())
        }
        Err(why) => {
            tracing::warn!("session {session}: {what} from {from} failed after {ms:.1} ms: {why}");
            Err(err(ErrorCode::Unavailable, why.clone()))
        }
    };
    if let Some(all_in) = all_in {
        // Streamed: the restore reports it (the process has not run).
        let _ = all_in.send(done.clone().map_err(|e| e.message));
    } else if let Err(e) = &done {
        // Its memory is in two halves, one of them out of reach: it
        // cannot go on.
        shared.to_session(
            session,
            super::SessionCmd::Lost(format!(
                "roam: the process was lost: part of its memory was still on node {from} when {}\n",
                e.message
            )),
        );
    }
    back.send("peer", &LinkMsg::LazyDone { req, result: done });
}

/// The old node of a post-copy, seen from the new one.
#[derive(Clone, Copy)]
struct Peer<'a> {
    req: u64,
    base: u64,
    from: &'a str,
    back: &'a FrameTx,
}

/// Places the pages of a post-copy as they come, until every page is in;
/// the bytes received.
async fn fill(
    shared: &NodeShared,
    session: SessionId,
    peer: &Peer<'_>,
    pager: &Pager,
    pages: &mut mpsc::UnboundedReceiver<LazyMsg>,
) -> Result<u64, String> {
    let Peer {
        req,
        base,
        from,
        back,
    } = *peer;
    let mut received = 0u64;
    let mut ended = false;
    let mut last_heard = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    // The session exists once the restore is done.
    let mut seen = false;
    loop {
        if pager.left() == 0 {
            return Ok(received);
        }
        if let Some(e) = pager.failed() {
            return Err(format!("the pager stopped: {e}"));
        }
        if ended {
            return Err(format!(
                "node {from} sent every page, yet {} are missing",
                pager.left()
            ));
        }
        tokio::select! {
            msg = pages.recv() => {
                last_heard = Instant::now();
                match msg {
                    Some(LazyMsg::Pages { addr, frame, at }) => {
                        let data = frame.get(at..).unwrap_or_default();
                        if data.len() > MAX_DATA_CHUNK {
                            return Err(format!("node {from} sent {} bytes of pages in one message", data.len()));
                        }
                        pager
                            .deliver(addr, data)
                            .map_err(|e| format!("cannot place the pages at {addr:#x}: {e}"))?;
                        received += data.len() as u64;
                        if shared.faulted("ImageAck") {
                            return Err("an injected fault".into());
                        }
                        back.send("peer", &LinkMsg::ImageAck { req, offset: base + received });
                    }
                    Some(LazyMsg::End) => ended = true,
                    None => return Err(format!("the link from node {from} broke")),
                }
            }
            _ = tick.tick() => {
                let here = shared.sessions.lock().unwrap().contains_key(&session);
                if seen && !here {
                    // It ended (or its copy was dropped): nothing waits.
                    return Ok(received);
                }
                seen |= here;
                if last_heard.elapsed() > TRANSFER_IDLE {
                    return Err(format!("node {from} stopped sending pages"));
                }
            }
        }
    }
}

/// Kills a process a restore made, held or not.
async fn kill_restored(shared: &NodeShared, pid: u32, held: bool) {
    if !held || release_held(shared, pid, true).await.is_err() {
        let _ = roam_sys::signal::kill(pid as i32, libc::SIGKILL);
    }
}

/// Lets a held process run (or kills it, with `kill`).
pub(super) async fn release_held(shared: &NodeShared, pid: u32, kill: bool) -> Result<(), String> {
    shared
        .tracer
        .ask(|reply| Job::Release {
            pid: pid as i32,
            kill,
            reply,
        })
        .await
        .unwrap_or_else(|| Err("the tracer thread is gone".into()))
}

/// Receives `len` bytes of transfer `req` from its offset `base` on,
/// acknowledging as it goes. With `image` (the image's length, its last
/// bytes: a migration's unread input may come first), the sender's
/// `ImageEnd` ends them; without (a pre-copy round), the last byte does.
async fn receive(
    shared: &NodeShared,
    req: u64,
    base: u64,
    len: u64,
    image: Option<u64>,
    rx: &mut mpsc::UnboundedReceiver<LinkMsg>,
) -> Result<Vec<u8>, WireError> {
    let mut bytes: Vec<u8> = Vec::new();
    bytes.try_reserve_exact(len as usize).map_err(|_| {
        err(
            ErrorCode::NoCapacity,
            format!("cannot hold an image of {len} bytes"),
        )
    })?;
    loop {
        if image.is_none() && bytes.len() as u64 == len {
            return Ok(bytes);
        }
        let msg = tokio::time::timeout(TRANSFER_IDLE, rx.recv())
            .await
            .map_err(|_| err(ErrorCode::Unavailable, "the image stopped coming"))?
            .ok_or_else(|| err(ErrorCode::Unavailable, "the image stopped coming"))?;
        match msg {
            LinkMsg::Image { offset, data, .. } => {
                let at = offset.wrapping_sub(base);
                if at != bytes.len() as u64 || at.saturating_add(data.len() as u64) > len {
                    return Err(err(
                        ErrorCode::BadRequest,
                        format!(
                            "image data at {offset} (+{}) where {} of {len} bytes from {base} were expected",
                            data.len(),
                            bytes.len()
                        ),
                    ));
                }
                bytes.extend_from_slice(&data);
                // A round's last bytes are acknowledged once kept.
                if image.is_some() || (bytes.len() as u64) < len {
                    shared.ack(req, base + bytes.len() as u64);
                }
            }
            LinkMsg::ImageEnd { result: Ok(s), .. } => {
                if Some(s.len) != image || bytes.len() as u64 != len {
                    return Err(err(
                        ErrorCode::BadRequest,
                        format!("the image ended at {} bytes of {len}", bytes.len()),
                    ));
                }
                return Ok(bytes);
            }
            LinkMsg::ImageEnd { result: Err(e), .. } => return Err(e),
            _ => {}
        }
    }
}

/// `PreCopy` of a migration to this node: keeps the rounds' pages until
/// the `Restore`, then restores the process with them, and answers
/// `Spawned` (or nothing, if the migration was called off).
pub(super) async fn migrate_in(
    shared: Arc<NodeShared>,
    req: u64,
    first: LinkMsg,
    rx: mpsc::UnboundedReceiver<LinkMsg>,
) {
    let result = migrate_in_inner(&shared, req, first, rx).await;
    shared.end_transfer(req);
    if let Some(result) = result {
        shared.send(&LinkMsg::Spawned { req, result });
    }
}

async fn migrate_in_inner(
    shared: &Arc<NodeShared>,
    req: u64,
    first: LinkMsg,
    mut rx: mpsc::UnboundedReceiver<LinkMsg>,
) -> Option<Result<u32, WireError>> {
    let here = |m: String| format!("node {}: {m}", shared.name);
    let limit = MAX_IMAGE.min(roam_sys::procfs::mem_available().unwrap_or(u64::MAX));
    let mut store = PageStore::default();
    let mut received = 0u64;
    let mut next = Some(first);
    // The image, come over a peer link before the home's `Restore` did
    // (they travel different ways): kept for the restore.
    let mut early: Vec<LinkMsg> = Vec::new();
    // A `Restore` sent ahead, and the old node's `Captured` that completes
    // it (they too travel different ways).
    let mut ahead: Option<(SessionId, u32, Cred, RestoreSpec)> = None;
    let mut captured: Option<(ImageSummary, Handover)> = None;
    let (session, home_pid, cred, spec) = loop {
        let msg = match next.take() {
            Some(m) => m,
            None => match tokio::time::timeout(TRANSFER_IDLE, rx.recv()).await {
                Ok(Some(m)) => m,
                _ => {
                    tracing::warn!("migration {req}: the pre-copy stopped coming; dropped");
                    return None;
                }
            },
        };
        match msg {
            LinkMsg::PreCopy { len, .. } => {
                let kept = async {
                    if received.saturating_add(len) > limit {
                        return Err(err(
                            ErrorCode::NoCapacity,
                            here(format!("pre-copied pages past {limit} bytes do not fit")),
                        ));
                    }
                    let bytes = receive(shared, req, received, len, None, &mut rx).await?;
                    store.add(bytes, limit).map_err(|e| {
                        err(
                            ErrorCode::BadRequest,
                            here(format!("bad pre-copied pages: {e}")),
                        )
                    })
                }
                .await;
                received += len;
                shared.ack(req, received);
                if let Err(e) = kept {
                    return Some(Err(e));
                }
            }
            LinkMsg::Restore {
                session,
                home_pid,
                cred,
                spec,
                ..
            } if spec.ahead => ahead = Some((session, home_pid, cred, *spec)),
            LinkMsg::Restore {
                session,
                home_pid,
                cred,
                spec,
                ..
            } => break (session, home_pid, cred, *spec),
            LinkMsg::Captured { result: Ok(c), .. } => captured = Some(c),
            LinkMsg::Captured { result: Err(e), .. } => {
                tracing::info!("migration {req}: not captured ({}); dropped", e.message);
                return None;
            }
            LinkMsg::ImageEnd { result: Err(e), .. } => {
                tracing::info!("migration {req}: called off ({}); dropped", e.message);
                return None;
            }
            m @ (LinkMsg::Image { .. } | LinkMsg::ImageEnd { .. }) => {
                if early.len() as u64 * MAX_DATA_CHUNK as u64 > IMAGE_WINDOW + MAX_UNREAD {
                    return Some(Err(err(
                        ErrorCode::BadRequest,
                        here("image data past the window before its restore".into()),
                    )));
                }
                early.push(m);
            }
            _ => {}
        }
        if ahead.is_some() && captured.is_some() {
            let (session, home_pid, cred, mut spec) = ahead.take().expect("checked above");
            let (summary, handover) = captured.take().expect("checked above");
            spec.image_len = summary.len;
            spec.handover = Some(handover);
            spec.ahead = false;
            break (session, home_pid, cred, spec);
        }
    };
    let pre = Some((store, received));
    let rx = if early.is_empty() {
        rx
    } else {
        let (tx, queued) = mpsc::unbounded_channel();
        for m in early {
            let _ = tx.send(m);
        }
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if tx.send(m).is_err() {
                    return;
                }
            }
        });
        queued
    };
    Some(restore(shared, req, session, home_pid, cred, spec, (rx, pre)).await)
}

/// `MigrateOut`: freezes and captures the session's process, hands its
/// streams over, sends the unread input and the image, and keeps the
/// process frozen until the home's verdict (`MigrateEnd`): killed if it
/// runs on its new node, let go here otherwise. See
/// docs/design/migration.md.
pub(super) async fn migrate_out(
    shared: Arc<NodeShared>,
    req: u64,
    session: SessionId,
    mode: MigrateMode,
    direct: Option<PeerPath>,
    mut rx: mpsc::UnboundedReceiver<LinkMsg>,
) {
    let to = direct.as_ref().map(|p| p.node.clone());
    let result = migrate_out_inner(&shared, req, session, mode, direct, &mut rx).await;
    if let (Some(to), false) = (to, matches!(result, Ok(true))) {
        super::peer::forget(&shared, &to);
    }
    shared.transfers.lock().unwrap().remove(&req);
    match &result {
        Ok(true) => tracing::info!("session {session}: migrated away"),
        Ok(false) => tracing::info!("session {session}: stays here"),
        Err(e) => tracing::warn!("session {session}: migration: {}", e.message),
    }
    shared.send(&LinkMsg::Checkpointed {
        req,
        result: result.map(drop),
    });
}

/// The session's process and command queue.
fn session_of(
    shared: &NodeShared,
    session: SessionId,
) -> Result<(i32, mpsc::UnboundedSender<super::SessionCmd>), WireError> {
    let sessions = shared.sessions.lock().unwrap();
    let h = sessions
        .get(&session)
        .ok_or_else(|| err(ErrorCode::NotFound, "no such session on this node"))?;
    if h.confined {
        return Err(err(
            ErrorCode::BadRequest,
            "the process runs confined (roam run --confine), a confinement a restore does not rebuild: it is not checkpointed or moved",
        ));
    }
    Ok((h.report.node_pid as i32, h.tx.clone()))
}

/// Captures `pid` on the tracer thread (held, stopped, unless
/// `leave_running`).
async fn capture(
    shared: &NodeShared,
    pid: i32,
    leave_running: bool,
    tracker: Option<Box<Tracker>>,
    lazy: bool,
) -> Result<CapturedImage, WireError> {
    let filters = own_filters(shared);
    shared
        .tracer
        .ask(|reply| Job::Capture {
            pid,
            own_filters: filters,
            leave_running,
            tracker,
            lazy,
            reply,
        })
        .await
        .ok_or_else(|| err(ErrorCode::Internal, "the tracer thread is gone"))?
        .map_err(|e| err(ErrorCode::BadRequest, format!("node {}: {e}", shared.name)))
}

/// True if the process went to its new node, false if it stays here.
async fn migrate_out_inner(
    shared: &Arc<NodeShared>,
    req: u64,
    session: SessionId,
    mode: MigrateMode,
    direct: Option<PeerPath>,
    rx: &mut mpsc::UnboundedReceiver<LinkMsg>,
) -> Result<bool, WireError> {
    let here = |m: String| format!("node {}: {m}", shared.name);
    let mut out = Outgoing::new(req);
    let t0 = Instant::now();
    let captured = async {
        let (pid, cmds) = session_of(shared, session)?;
        // The peer link first: if the new node cannot be reached, the
        // process is not touched.
        if let Some(path) = &direct {
            out.peer = Some(super::peer::open(shared, path).await?);
        } else if mode == MigrateMode::PostCopy {
            return Err(err(
                ErrorCode::BadRequest,
                here("a post-copy needs a peer link to the new node (its peer_listen)".into()),
            ));
        }
        let tracker = if precopy_wanted(mode, pid) {
            Some(precopy(shared, pid, &mut out, rx).await?)
        } else {
            None
        };
        // Over a peer link the large anonymous mappings' pages go after
        // the image, read from the frozen process: streamed into the new
        // process as it is rebuilt, or, with post-copy, after it runs.
        let lazy = mode == MigrateMode::PostCopy || (out.peer.is_some() && tracker.is_none());
        let mut image = capture(shared, pid, false, tracker, lazy)
            .await
            .map_err(|e| ended_or(pid, e))?;
        let s = &mut image.summary;
        s.stopped_after_us = (t0.elapsed().as_micros() as u64).saturating_sub(s.frozen_us);
        let (tx, handed) = oneshot::channel();
        let _ = cmds.send(super::SessionCmd::Handover(tx));
        match handed.await {
            Ok(Ok((h, unread))) => Ok((pid, cmds, image, h, unread)),
            other => {
                let why = match other {
                    Ok(Err(e)) => e,
                    _ => "the session ended".into(),
                };
                release(shared, pid, false).await?;
                Err(err(ErrorCode::BadRequest, here(why)))
            }
        }
    }
    .await;
    let (pid, cmds, mut image, handover, unread) = match captured {
        Ok(c) => c,
        Err(e) => {
            out.tell(
                shared,
                &LinkMsg::Captured {
                    req,
                    result: Err(e.clone()),
                },
            );
            return Err(e);
        }
    };
    let joins = shared.joins.load(std::sync::atomic::Ordering::SeqCst);
    let t_captured = t0.elapsed();
    // To the new node first, over a peer link: its restore starts.
    out.tell(
        shared,
        &LinkMsg::Captured {
            req,
            result: Ok((image.summary, handover)),
        },
    );
    let mut parts = vec![unread.as_slice()];
    parts.extend(image.parts());
    let sent = out.send(shared, &parts, rx).await;
    tracing::info!(
        "migration {req}: {} bytes captured {:.1} ms after the request (frozen for {:.1} ms of it), sent {} in {:.1} ms",
        image.summary.len,
        t_captured.as_secs_f64() * 1e3,
        image.summary.frozen_us as f64 / 1e3,
        if out.peer.is_some() { "directly" } else { "through the home" },
        (t0.elapsed() - t_captured).as_secs_f64() * 1e3
    );
    out.tell(
        shared,
        &LinkMsg::ImageEnd {
            req,
            result: sent.clone().map(|()| image.summary),
        },
    );
    let lazy = std::mem::take(&mut image.lazy);
    drop(image);
    let mut lost = None;
    let commit = match sent {
        Ok(()) if !lazy.is_empty() => {
            let pages = LeftOut {
                runs: &lazy,
                streamed: mode != MigrateMode::PostCopy,
            };
            let (v, e) = lazy_out(shared, pid, pages, &out, &cmds, joins, rx).await;
            lost = e;
            v
        }
        Ok(()) => verdict(shared, &cmds, joins, rx).await,
        Err(_) => Verdict::Stay,
    };
    match commit {
        Verdict::Moved => {
            release(shared, pid, true).await?;
            let _ = cmds.send(super::SessionCmd::MovedAway);
            if let Some(e) = lost {
                return Err(e);
            }
            Ok(true)
        }
        Verdict::Stay => {
            let (tx, done) = oneshot::channel();
            let _ = cmds.send(super::SessionCmd::StayHere(tx));
            if done.await.is_ok() {
                release(shared, pid, false).await?;
                Ok(false)
            } else {
                // Forgotten meanwhile (its proxy died): it was killed.
                let _ = release(shared, pid, true).await;
                Err(err(ErrorCode::NotFound, "the session was ended meanwhile"))
            }
        }
    }
}

/// `e`, or, if process `pid` has ended (gone, or a zombie), that it
/// ended: while its pages went ahead, typically.
fn ended_or(pid: i32, e: WireError) -> WireError {
    match roam_sys::procfs::proc_stat(pid as u32) {
        Ok(st) if !matches!(st.state, 'Z' | 'X') => e,
        _ => err(
            ErrorCode::NotFound,
            "the process ended during the migration",
        ),
    }
}

/// Whether a migration in `mode` pre-copies the memory of `pid`.
fn precopy_wanted(mode: MigrateMode, pid: i32) -> bool {
    match mode {
        MigrateMode::Eager | MigrateMode::PostCopy => false,
        MigrateMode::PreCopy => true,
        MigrateMode::Auto => roam_sys::procfs::proc_stat(pid as u32)
            .is_ok_and(|s| s.rss_kib * 1024 > PRECOPY_MIN_RSS),
    }
}

/// Pre-copy rounds of `pid`'s pages while it runs, each sent as a
/// `PreCopy` and its bytes, until they converge (docs/design/migration.md);
/// returns the tracking, for the capture that ends it.
async fn precopy(
    shared: &NodeShared,
    pid: i32,
    out: &mut Outgoing,
    rx: &mut mpsc::UnboundedReceiver<LinkMsg>,
) -> Result<Box<Tracker>, WireError> {
    let here = |m: String| format!("node {}: {m}", shared.name);
    let mut t = shared
        .tracer
        .ask(|reply| Job::Track { pid, reply })
        .await
        .ok_or_else(|| err(ErrorCode::Internal, "the tracer thread is gone"))?
        .map_err(|e| err(ErrorCode::BadRequest, here(e)))?;
    let mut last: Option<u64> = None;
    loop {
        let (back, round) = tokio::task::spawn_blocking(move || {
            let r = t.round();
            (t, r)
        })
        .await
        .map_err(|_| err(ErrorCode::Internal, here("a pre-copy round failed".into())))?;
        t = back;
        let round =
            round.map_err(|e| ended_or(pid, err(ErrorCode::BadRequest, here(error_chain(&e)))))?;
        out.poll(rx)?;
        out.tell(
            shared,
            &LinkMsg::PreCopy {
                req: out.req,
                round: t.rounds() - 1,
                len: round.pages.len() as u64,
            },
        );
        out.send(shared, &[&round.pages], rx).await?;
        // The next round begins once this one is kept: the rounds go at
        // the link's pace, and the freeze finds the link empty.
        out.drain(rx).await?;
        let w = round.written;
        tracing::debug!(
            "pre-copy of pid {pid}: round {} found {w} bytes written, sent {}",
            t.rounds(),
            round.pages.len()
        );
        if w <= PRECOPY_DONE
            || t.rounds() >= PRECOPY_ROUNDS
            || last.is_some_and(|l| w as f64 > l as f64 * PRECOPY_CONVERGING)
        {
            return Ok(t);
        }
        last = Some(w);
    }
}

enum Verdict {
    Moved,
    Stay,
}

/// The pages a migration's image left out, for [`lazy_out`].
#[derive(Clone, Copy)]
struct LeftOut<'a> {
    /// Runs of pages: first address, count.
    runs: &'a [(u64, usize)],
    /// Sent before the commit, the process frozen until all are in; else
    /// post-copy, after it.
    streamed: bool,
}

/// On the old node, once the image is sent: pushes the pages left out of
/// it to the new node over the peer link (at most [`LAZY_WINDOW`]
/// unacknowledged), and sends at once those a fault there waits for
/// (`LazyWant`), while waiting for the home's verdict as [`verdict`] does.
/// Streamed, the pages go at once, and the new node reports its restore
/// only once it has them all: a failure before is the ordinary
/// transaction's. With post-copy they go after the commit, which it waits
/// for, and it goes on until the new node has every page (`LazyDone`); the
/// frozen copy is killed then. Returns the verdict and, after a commit, why
/// the post-copy failed, if it did: the process is then lost (its memory
/// was in two halves).
async fn lazy_out(
    shared: &NodeShared,
    pid: i32,
    pages: LeftOut<'_>,
    out: &Outgoing,
    cmds: &mpsc::UnboundedSender<super::SessionCmd>,
    joins: u64,
    rx: &mut mpsc::UnboundedReceiver<LinkMsg>,
) -> (Verdict, Option<WireError>) {
    let req = out.req;
    let LeftOut { runs, streamed } = pages;
    let here = |m: String| err(ErrorCode::Unavailable, format!("node {}: {m}", shared.name));
    let Some(peer) = out.peer.clone() else {
        return (Verdict::Stay, None);
    };
    let t0 = Instant::now();
    let per = MAX_DATA_CHUNK / PAGE;
    // The next page to push: its run, and its page in the run.
    let (mut run, mut page) = (0usize, 0usize);
    // The post-copy's bytes count on from the image's, in one offset (the
    // image's last acknowledgements may come now).
    let (mut sent, mut acked, mut asked) = (out.offset, out.acked, 0u64);
    let mut ended = false;
    let mut committed = false;
    let mut placed: Option<Result<(), WireError>> = None;
    let mut broken: Option<WireError> = None;
    let mut last_heard = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    // Each message's pages are read from the frozen process straight into
    // its frame.
    let send_pages = |addr: u64, n: usize| -> Result<u64, WireError> {
        let len = n * PAGE;
        let mut frame = roam_proto::link::lazy_pages_frame_head(req, addr, len)
            .map_err(|e| here(format!("cannot encode the pages at {addr:#x}: {e}")))?;
        roam_sys::ptrace::read_memory_append(pid, &mut frame, len, addr)
            .map_err(|e| here(format!("cannot read the pages at {addr:#x}: {e}")))?;
        if shared.faulted("LazyPages") {
            return Err(here("an injected fault".into()));
        }
        if !peer.send_frame(frame) {
            return Err(here("the peer link to the new node broke".into()));
        }
        Ok(len as u64)
    };
    let window = if streamed { STREAM_WINDOW } else { LAZY_WINDOW };
    loop {
        // The push, as far as the window lets it: streamed, at once (the
        // new node places the pages as it rebuilds the process); with
        // post-copy, once the process runs there: before, it would slow
        // the restore down (which takes what it faults on, as the process
        // does). A burst at a time: the messages to the home (and their
        // writer) must not wait for the window to fill.
        let can_push = |run: usize, sent: u64, acked: u64, broken: &Option<WireError>| {
            (committed || streamed)
                && broken.is_none()
                && run < runs.len()
                && sent.saturating_sub(acked) <= window
        };
        let mut burst = 0;
        while burst < LAZY_BURST && can_push(run, sent, acked, &broken) {
            burst += 1;
            let (addr, n) = runs[run];
            let take = (n - page).min(per);
            match send_pages(addr + (page * PAGE) as u64, take) {
                Ok(len) => sent += len,
                Err(e) => broken = Some(e),
            }
            page += take;
            if page == n {
                run += 1;
                page = 0;
            }
        }
        if (committed || streamed) && broken.is_none() && run == runs.len() && !ended {
            ended = peer.send("peer", &LinkMsg::LazyEnd { req });
            if !ended {
                broken = Some(here("the peer link to the new node broke".into()));
            }
        }
        if streamed && !committed && broken.is_some() && !ended {
            // The new node's restore fails at once, rather than wait for
            // the pages: the home then calls the move off.
            ended = true;
            peer.send("peer", &LinkMsg::LazyEnd { req });
        }
        if committed {
            if let Some(result) = placed.take() {
                let bytes = bytes_of(runs);
                tracing::info!(
                    "migration {req}: {} over in {:.1} ms: {bytes} bytes, {asked} faults served first",
                    if streamed { "streamed pages" } else { "post-copy" },
                    t0.elapsed().as_secs_f64() * 1e3
                );
                return (Verdict::Moved, result.err());
            }
            if let Some(e) = broken.take() {
                return (Verdict::Moved, Some(e));
            }
        }
        tokio::select! {
            msg = rx.recv() => {
                last_heard = Instant::now();
                match msg {
                    Some(LinkMsg::ImageAck { offset, .. }) => acked = acked.max(offset),
                    Some(LinkMsg::LazyWant { addr, .. }) if broken.is_none() => {
                        // Within its run, from the page asked for on.
                        let page_of = addr & !(PAGE as u64 - 1);
                        let found = runs.iter().find(|&&(a, n)| {
                            a <= page_of && page_of < a + (n * PAGE) as u64
                        });
                        match found {
                            Some(&(a, n)) => {
                                let left = n - ((page_of - a) as usize / PAGE);
                                match send_pages(page_of, left.min(LAZY_FAULT_PAGES)) {
                                    Ok(len) => {
                                        sent += len;
                                        asked += 1;
                                        tracing::debug!(
                                            "migration {req}: page {addr:#x} wanted {:.2} ms in{}",
                                            t0.elapsed().as_secs_f64() * 1e3,
                                            if committed { "" } else { ", before the commit" }
                                        );
                                    }
                                    Err(e) => broken = Some(e),
                                }
                            }
                            None => tracing::warn!(
                                "migration {req}: the new node asked for page {addr:#x}, which is not among those left to send"
                            ),
                        }
                    }
                    Some(LinkMsg::LazyDone { result, .. }) => placed = Some(result),
                    Some(LinkMsg::MigrateEnd { commit: true, .. }) => {
                        committed = true;
                        // Its streams are the new node's now.
                        let _ = cmds.send(super::SessionCmd::MovedAway);
                    }
                    Some(LinkMsg::MigrateEnd { commit: false, .. }) => return (Verdict::Stay, None),
                    Some(_) => {}
                    None if committed => {
                        return (Verdict::Moved, Some(here("the migration's queue closed".into())))
                    }
                    None => return (Verdict::Stay, None),
                }
            }
            // Room for more: the next burst, once the other tasks ran.
            () = tokio::task::yield_now(), if can_push(run, sent, acked, &broken) => {}
            _ = tick.tick() => {
                if !committed
                    && (shared.joins.load(std::sync::atomic::Ordering::SeqCst) != joins
                        || cmds.is_closed())
                {
                    return (Verdict::Stay, None);
                }
                if committed && peer.is_closed() {
                    return (Verdict::Moved, Some(here("the peer link to the new node broke during the post-copy".into())));
                }
                if committed && last_heard.elapsed() > TRANSFER_IDLE {
                    return (Verdict::Moved, Some(here("the new node stopped answering during the post-copy".into())));
                }
            }
        }
    }
}

/// Waits for the home's `MigrateEnd`. Without one (the link went), the
/// process stays frozen until the node has joined the home again: if the
/// home then still counts the session as ours it was not forgotten in the
/// join, and it goes on here.
async fn verdict(
    shared: &NodeShared,
    cmds: &mpsc::UnboundedSender<super::SessionCmd>,
    joins: u64,
    rx: &mut mpsc::UnboundedReceiver<LinkMsg>,
) -> Verdict {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(LinkMsg::MigrateEnd { commit, .. }) => {
                    return if commit { Verdict::Moved } else { Verdict::Stay }
                }
                Some(_) => {}
                None => return Verdict::Stay,
            },
            _ = tick.tick() => {
                // A join since, whose forget list went to the sessions
                // first (their queue keeps the order): StayHere finds out.
                if shared.joins.load(std::sync::atomic::Ordering::SeqCst) != joins
                    || cmds.is_closed()
                {
                    return Verdict::Stay;
                }
            }
        }
    }
}

/// Ends the tracer's hold of `pid`: killed, or let go.
async fn release(shared: &NodeShared, pid: i32, kill: bool) -> Result<(), WireError> {
    shared
        .tracer
        .ask(|reply| Job::Release { pid, kill, reply })
        .await
        .ok_or_else(|| err(ErrorCode::Internal, "the tracer thread is gone"))?
        .map_err(|e| err(ErrorCode::Internal, e))
}
