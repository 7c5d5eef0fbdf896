//! The node's FUSE client (see the crate docs).
//!
//! [`mount`] mounts the home's files and serves the kernel's requests by
//! sending each as an `FsOp` through a [`Transport`], with the credentials
//! of the process that made it (the home checks permissions; the mount has
//! no `default_permissions`).
//!
//! # Threads
//!
//! - fuser's session thread reads the kernel's requests and hands each to
//!   the transport; it never waits for the home, so many requests are in
//!   flight at once. Replies go to the kernel from whatever thread the
//!   transport calls back on.
//! - A timer thread answers EIO for requests the home has not answered
//!   within [`MountOptions::request_timeout`] (blocking lock waits
//!   excepted), and undoes what a reply that comes later created (it
//!   forgets nodes and releases handles the kernel never saw).
//! - A notice thread passes the home's invalidations to the kernel. They
//!   can block in the kernel until a request in the same directory is
//!   answered, so they must not run on the thread that delivers replies.
//!
//! # Caching
//!
//! Attributes and names are cached for their TTLs (missing names too, for
//! [`MountOptions::negative_ttl`]); file pages stay cached across opens
//! when the home says the file did not change (`keep_cache`), and are
//! dropped when the kernel sees a new mtime or size. Writes are not cached
//! (no writeback cache): each write is on the home when it returns, and
//! fsync makes it durable there. Files are never opened in direct I/O mode,
//! so private and shared mappings work (dirty shared pages are written to
//! the home by msync, close or the kernel's writeback). Read-only opens of
//! watched files are kept for reuse (opens.rs), and access checks the home
//! allowed are remembered for the file's attribute lifetime (access.rs).
//!
//! # Limits
//!
//! - flock(2) locks are local to the node: fuser does not tell flock
//!   requests from POSIX ones, so they are not forwarded (fcntl locks are).
//! - fuser does not handle interrupts: a process blocked in F_SETLKW on a
//!   remote lock is woken only by the lock or by SIGKILL.
//! - Directory entries carry the home's inode numbers (`d_ino`), `stat`
//!   shows node ids (`st_ino`).
//! - A request that timed out may still be performed by the home later
//!   (a write, a rename): EIO means "unknown", as on any network file
//!   system.
//! - The mount is `nosuid,nodev`: set-user-id programs of the home do not
//!   gain rights on a node.
//! - Cached names and attributes are used without asking the home, so
//!   within the TTLs a user may stat (not open or list) a file below a
//!   directory only another user may search, if that user looked it up
//!   first.
//! - fuser's direct mount(2) ignores the subtype: the mount shows as type
//!   `fuse`, source `roam`.

mod access;
mod calls;
mod convert;
mod fs;
mod opens;

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use fuser::{BackgroundSession, Config, INodeNo, MountOption, Notifier, Session, SessionACL};
use roam_proto::fs::{FsNotice, FsOp, FsReply, MAX_IO};
use roam_proto::types::Cred;

use access::Accesses;
use calls::{Caller, Timer};
use fs::{RoamFs, Ttls};
use opens::Opens;

/// How the client reaches the server.
pub trait Transport: Send + Sync + 'static {
    /// Sends `op` as `cred`; `done` gets the reply, from any thread.
    fn call(&self, cred: Cred, op: FsOp, done: Box<dyn FnOnce(FsReply) + Send>);
}

/// A user's supplementary groups, from uid and gid (the kernel's requests
/// carry only those two). Called for every request: keep it cheap.
pub type GroupsOf = Arc<dyn Fn(u32, u32) -> Vec<u32> + Send + Sync>;

/// How the home's files are mounted.
#[derive(Clone)]
pub struct MountOptions {
    /// How long the kernel may trust a file's attributes.
    pub attr_ttl: Duration,
    /// How long the kernel may trust a name's lookup.
    pub entry_ttl: Duration,
    /// How long the kernel may trust that a name does not exist (zero: ask
    /// the home every time).
    pub negative_ttl: Duration,
    /// How long the kernel may trust attributes, names and missing names
    /// on file systems the home watches: it sends a notice when they
    /// change, so this only bounds how stale a lost notice (a link
    /// outage) can leave them.
    pub watched_ttl: Duration,
    /// A request the home has not answered by then fails with EIO.
    pub request_timeout: Duration,
    /// The supplementary groups sent with each request.
    pub groups_of: GroupsOf,
    /// Let every user use the mount (remote processes run as many users);
    /// off, only the mounting user may.
    pub allow_other: bool,
    /// The mount's readahead window in KiB (0: the kernel's default, 128).
    /// A large window keeps several reads in flight to the home.
    pub readahead_kb: u32,
}

impl MountOptions {
    /// The defaults: TTLs of one second (30 s on watched file systems), a
    /// 30 s request timeout,
    /// `allow_other`, a 4 MiB readahead window.
    pub fn new(groups_of: GroupsOf) -> Self {
        MountOptions {
            attr_ttl: Duration::from_secs(1),
            entry_ttl: Duration::from_secs(1),
            negative_ttl: Duration::from_secs(1),
            watched_ttl: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            groups_of,
            allow_other: true,
            readahead_kb: 4096,
        }
    }
}

/// The home's files, mounted. Dropping it unmounts them (lazily: processes
/// still using them keep them until they let go).
pub struct Mount {
    mountpoint: PathBuf,
    /// The mount's device (`0:N`), to know it is still ours.
    dev: Option<(u32, u32)>,
    notices: Option<mpsc::Sender<FsNotice>>,
    session: Option<BackgroundSession>,
}

/// Mounts the home's files, served through `transport`, on `mountpoint`
/// (needs root, or a fusermount the caller may use).
pub fn mount(
    mountpoint: &Path,
    transport: Arc<dyn Transport>,
    opts: MountOptions,
) -> io::Result<Mount> {
    let mountpoint = mountpoint.canonicalize()?;
    let timer = Timer::start()?;
    let caller = Caller::new(transport, timer.clone(), opts.request_timeout);
    let ttls = Ttls {
        attr: opts.attr_ttl,
        entry: opts.entry_ttl,
        negative: opts.negative_ttl,
        watched: opts.watched_ttl,
    };
    let opens = Arc::new(Opens::default());
    let accesses = Arc::new(Accesses::default());
    let fs = RoamFs::new(
        caller.clone(),
        timer,
        opts.groups_of.clone(),
        ttls,
        opens.clone(),
        accesses.clone(),
    );
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("roam".into()),
        MountOption::Subtype("roam".into()),
        MountOption::CUSTOM(format!("max_read={MAX_IO}")),
    ];
    config.acl = if opts.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    // Mounts, then waits for the kernel's INIT and answers it.
    let session = Session::new(fs, &mountpoint, &config)?;
    let notifier = session.notifier();
    let session = session.spawn()?;
    let dev = mount_dev(&mountpoint);
    if let (Some((major, minor)), true) = (dev, opts.readahead_kb > 0) {
        let knob = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
        if let Err(e) = std::fs::write(&knob, opts.readahead_kb.to_string()) {
            tracing::debug!("cannot set {knob}: {e}");
        }
    }
    let (tx, rx) = mpsc::channel();
    let mut m = Mount {
        mountpoint,
        dev,
        notices: Some(tx),
        session: Some(session),
    };
    if let Err(e) = std::thread::Builder::new()
        .name("roam-rfs-notice".into())
        .spawn(move || pass_notices(&notifier, rx, &opens, &accesses, &caller))
    {
        m.notices = None;
        return Err(e);
    }
    Ok(m)
}

impl Mount {
    /// Where the files are mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Drops what the kernel cached about a file or a name that changed on
    /// the home. Never blocks (the kernel is told from another thread).
    pub fn notice(&self, n: FsNotice) {
        if let Some(tx) = &self.notices {
            let _ = tx.send(n);
        }
    }

    /// A handle that passes notices to this mount from anywhere (they are
    /// dropped once the mount is gone).
    pub fn notices(&self) -> Notices {
        Notices(self.notices.clone())
    }
}

/// See [`Mount::notices`].
#[derive(Clone)]
pub struct Notices(Option<mpsc::Sender<FsNotice>>);

impl Notices {
    /// As [`Mount::notice`].
    pub fn send(&self, n: FsNotice) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(n);
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.notices = None;
        let Some(session) = self.session.take() else {
            return;
        };
        // Detach only if the mount there is still ours.
        let ours = match (self.dev, mount_dev(&self.mountpoint)) {
            (Some(a), Some(b)) => a == b,
            (None, _) => true,
            (Some(_), None) => false,
        };
        if ours {
            if let Err(e) = roam_sys::ns::umount_detach(&self.mountpoint) {
                tracing::warn!("cannot unmount {}: {e}", self.mountpoint.display());
            }
        }
        // The session ends when the kernel lets go of the connection: at
        // once if nothing uses the mount, else when the last user does
        // (processes with files open there keep using them meanwhile).
        if finished(&session, Duration::from_secs(1)) {
            if let Err(e) = session.join() {
                tracing::warn!("the FUSE session ended with: {e}");
            }
        } else {
            // Still in use: serve the remaining users until they let go.
            tracing::info!(
                "{} is still in use: its FUSE session ends when the last user lets go",
                self.mountpoint.display()
            );
            let _ = std::thread::Builder::new()
                .name("roam-rfs-linger".into())
                .spawn(move || {
                    let _ = session.join();
                });
        }
    }
}

// The daemon keeps its mount in shared state.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Mount>();
};

/// Waits up to `limit` for the session thread to end.
fn finished(session: &BackgroundSession, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while !session.guard.is_finished() {
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// Tells the kernel about the notices sent to `rx` until the mount goes
/// (and retires the kept opens of files that changed).
fn pass_notices(
    notifier: &Notifier,
    rx: mpsc::Receiver<FsNotice>,
    opens: &Opens,
    accesses: &Accesses,
    caller: &Caller,
) {
    for n in rx {
        let r = match &n {
            // Offset 0, length 0: the attributes and all cached pages.
            FsNotice::Inode { node } => {
                caller.close_kept(opens.retire(*node));
                accesses.forget(*node);
                notifier.inval_inode(INodeNo(*node), 0, 0)
            }
            FsNotice::Entry { parent, name } => {
                notifier.inval_entry(INodeNo(*parent), OsStr::from_bytes(name))
            }
        };
        if let Err(e) = r {
            tracing::debug!("invalidation {n:?}: {e}");
        }
    }
}

/// The device (`major:minor`) of the roam mount on `path`, the topmost if
/// several, from /proc/self/mountinfo.
fn mount_dev(path: &Path) -> Option<(u32, u32)> {
    find_mount_dev(&roam_sys::procfs::mounts().ok()?, path)
}

fn find_mount_dev(mounts: &[roam_sys::procfs::MountEntry], path: &Path) -> Option<(u32, u32)> {
    mounts
        .iter()
        .rev()
        .find(|m| m.point == path && m.fstype.starts_with(b"fuse") && m.source == b"roam")
        .map(|m| m.dev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_gives_the_topmost_roam_mount() {
        let info = roam_sys::procfs::parse_mountinfo(
            b"22 1 0:21 / /proc rw - proc proc rw\n\
            90 22 0:55 / /var/tmp/a\\040b rw,nosuid,nodev - fuse roam rw,user_id=0\n\
            91 90 0:56 / /var/tmp/a\\040b rw,nosuid,nodev - fuse roam rw,user_id=0\n\
            92 22 0:57 / /var/tmp/c rw - fuse other rw\n",
        );
        let at = |p: &str| find_mount_dev(&info, Path::new(p));
        assert_eq!(at("/var/tmp/a b"), Some((0, 56)));
        assert_eq!(at("/var/tmp/c"), None);
        assert_eq!(at("/proc"), None);
        assert_eq!(at("/x"), None);
    }
}
