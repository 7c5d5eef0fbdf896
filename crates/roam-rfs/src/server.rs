//! The home's file server (see the crate docs).
//!
//! [`Server::handle`] performs one request on the calling thread, switched
//! to the credentials of the user whose process made it
//! ([`roam_sys::fsid`]: fsuid, fsgid, groups, and no capabilities unless the
//! user is root), so every permission check is the kernel's own.
//!
//! # Nodes and handles
//!
//! A node id names an `O_PATH` descriptor of the inode it was looked up
//! as, so renames and unlinks on either side leave it valid (it follows
//! the inode, not a path). The same inode always gets the same id while it
//! is known. Every call uses that descriptor with one-component names
//! (`openat(parent, name, O_NOFOLLOW)`...): the server never resolves a
//! client's path, never follows a symbolic link itself (the client's kernel
//! resolves links with `ReadLink`), and names `.`, `..` or with a `/` are
//! refused, so nothing outside the exported tree can be reached. Opening a
//! node for I/O reopens its descriptor through `/proc/self/fd`, as the
//! user, so the kernel checks the access mode.
//!
//! So that a node's kernel caching many inodes does not exhaust the home's
//! descriptors, at most [`Limits::max_open_nodes`] node descriptors stay
//! open: the least recently used files' are closed and opened again from a
//! kernel file handle (`open_by_handle_at`) when needed; directories and
//! files with open handles keep theirs. A file deleted on the home while
//! its descriptor was closed then answers ESTALE, as over NFS.
//!
//! Search rights on the path: a node descriptor skips the path walk a
//! local open would make, so before acting on a node the server checks
//! that the user may search each directory from the node's parent up to
//! the exported root (walking `..`). The parent of a file is the directory
//! it was last looked up, created or renamed in through this server.
//!
//! # Locks
//!
//! POSIX record locks are held on the home as open file description locks
//! (`F_OFD_SETLK`) on a descriptor per (node, lock owner), so they conflict
//! with each other and with the home's own processes' locks as POSIX locks
//! of different processes do, and one owner's locks through several open
//! files of the same node are one set. `Flush` (a close by that owner)
//! drops them. flock(2) locks are taken on the handle's own descriptor
//! (the client's open file). A waiting lock request polls (backing off to
//! 20 ms) on its worker thread until granted, until
//! [`Limits::lock_wait`] passes (then EAGAIN), until its owner closes
//! the file (the process died), or until [`Server::shutdown`] (then
//! EINTR); other requests go on meanwhile on other threads.
//!
//! # keep_cache
//!
//! `Opened::keep_cache` is true when the file's size, mtime and ctime are
//! those seen at the previous open of the node, so the node's kernel can
//! keep the pages it cached (executables and libraries).
//!
//! # One server per node
//!
//! Handles and locks live until the client releases them. A node that goes
//! away never does, so a home keeps one `Server` per node link and, when
//! the link ends, calls [`Server::shutdown`] and drops it: closing its
//! descriptors releases that node's locks. (Node ids and handles are per
//! mount in FUSE anyway.)

mod changes;
#[cfg(test)]
mod tests;

pub use changes::{Change, InodeKey};

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use roam_proto::fs::{
    Attr, DirEntry, Fh, FsOp, FsReply, Lock, NodeId, StatFs, Time, TimeSet, MAX_DIR_ENTRIES,
    MAX_IO, MAX_NAME, MAX_PATH, ROOT,
};
use roam_proto::types::Cred;
use roam_sys::fsid;
use serde_bytes::ByteBuf;

use roam_sys::files as sys;
use roam_sys::files::SysResult;

/// What the server exports.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The exported directory (`/` by default).
    pub root: PathBuf,
    /// The file systems (st_dev) whose changes the home reports to nodes
    /// (see `watch`): their files' attributes say `watched`.
    pub watched: WatchedDevs,
}

/// The devices of the file systems the home watches for changes.
pub type WatchedDevs = Arc<RwLock<HashSet<u64>>>;

impl ServerConfig {
    /// Exports `root`, no file system watched.
    pub fn new(root: impl Into<PathBuf>) -> ServerConfig {
        ServerConfig {
            root: root.into(),
            watched: WatchedDevs::default(),
        }
    }
}

impl Default for ServerConfig {
    /// Exports `/`.
    fn default() -> ServerConfig {
        ServerConfig::new("/")
    }
}

/// How much one server holds at most, and how long a lock request waits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The most open handles (files and directories) at once; more opens
    /// fail with EMFILE. Also the most POSIX lock descriptors (ENOLCK).
    pub max_handles: usize,
    /// The most known nodes at once; more lookups fail with ENFILE.
    pub max_nodes: usize,
    /// How long a waiting lock request (SetLk with `wait`, blocking flock)
    /// waits before answering EAGAIN; None: until granted.
    pub lock_wait: Option<Duration>,
    /// The most node descriptors held open at once (at most half the open
    /// files limit, which [`Server::new`] raises to the hard limit, is used
    /// whatever this says). Beyond it the least
    /// recently used files' descriptors are closed; they are opened again
    /// from a file handle when needed (directories stay open).
    pub max_open_nodes: usize,
    /// How long a successful check that a user may search the directories
    /// above a node is remembered (zero: not at all).
    pub search_cache: Duration,
}

impl Default for Limits {
    /// 65536 handles, 2^20 nodes, lock waits until granted, node
    /// descriptors up to half the open files limit, search checks
    /// remembered for a second.
    fn default() -> Limits {
        Limits {
            max_handles: 65536,
            max_nodes: 1 << 20,
            lock_wait: None,
            max_open_nodes: usize::MAX,
            search_cache: Duration::from_secs(1),
        }
    }
}

/// What a node's file looked like when last opened (for `keep_cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    size: i64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Version {
    fn of(st: &libc::stat) -> Version {
        Version {
            size: st.st_size,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        }
    }
}

/// An inode the client knows.
struct Node {
    /// O_PATH descriptor of the inode; None while closed to save
    /// descriptors (only files with a `handle`, see [`Server::trim`]).
    fd: Option<Arc<OwnedFd>>,
    /// How to open it again: a file handle, and a descriptor on the mount
    /// it is valid on. None for directories (their descriptors stay open)
    /// and on file systems without handles.
    handle: Option<(sys::FileHandle, Arc<OwnedFd>)>,
    /// Open handles of the node (its descriptor stays open meanwhile).
    opened: u32,
    /// When it was last used (the table's clock), to close the least
    /// recently used descriptors first.
    used: u64,
    /// (st_dev, st_ino).
    key: (u64, u64),
    /// S_IFMT bits.
    kind: u32,
    /// Lookups not yet forgotten.
    lookups: u64,
    /// The directory it was last seen in (None for the root).
    parent: Option<Arc<OwnedFd>>,
    /// The file as of the last open.
    seen: Option<Version>,
}

/// What an operation needs of a node, copied out of the table.
#[derive(Clone)]
struct NodeRef {
    fd: Arc<OwnedFd>,
    kind: u32,
    parent: Option<Arc<OwnedFd>>,
}

impl NodeRef {
    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn is_dir(&self) -> bool {
        self.kind == libc::S_IFDIR
    }
}

#[derive(Default)]
struct Nodes {
    by_id: HashMap<NodeId, Node>,
    by_key: HashMap<(u64, u64), NodeId>,
    next: NodeId,
    /// A descriptor on each mount that nodes' handles come from, by mount id
    /// (held open, so the id is not reused).
    mounts: HashMap<i32, Arc<OwnedFd>>,
    /// Nodes whose descriptor is open.
    open_fds: usize,
    /// Counts uses, for `Node::used`.
    clock: u64,
}

/// Where a directory handle's descriptor stands.
#[derive(Default)]
struct DirCursor {
    /// The descriptor's offset, if known (after a whole getdents batch was
    /// handed out).
    pos: Option<u64>,
}

/// An open file or directory.
struct Handle {
    node: NodeId,
    fd: OwnedFd,
    /// Some for a directory.
    dir: Option<Mutex<DirCursor>>,
}

#[derive(Default)]
struct Handles {
    map: HashMap<Fh, Arc<Handle>>,
    next: Fh,
}

/// POSIX lock descriptors: node → owner → descriptor.
#[derive(Default)]
struct Locks {
    map: HashMap<NodeId, HashMap<u64, Arc<OwnedFd>>>,
    count: usize,
}

/// The file server.
pub struct Server {
    limits: Limits,
    /// How many node descriptors stay open (see [`Limits::max_open_nodes`]).
    fd_budget: usize,
    /// `/proc/self/fd`, through which node descriptors are reopened.
    proc_fds: OwnedFd,
    /// The root's (st_dev, st_ino).
    root_key: (u64, u64),
    nodes: Mutex<Nodes>,
    handles: Mutex<Handles>,
    locks: Mutex<Locks>,
    /// Recent successful search checks (see [`Server::check_search`]).
    search_ok: Mutex<HashMap<SearchKey, Instant>>,
    shutting_down: AtomicBool,
    /// See [`ServerConfig::watched`].
    watched: WatchedDevs,
}

/// A directory's (st_dev, st_ino), and a caller's uid, gid and groups.
type SearchKey = ((u64, u64), u32, u32, Vec<u32>);

/// The most remembered search checks (the memory is emptied beyond).
const SEARCH_CACHE_MAX: usize = 16384;

/// Locks a table, also if a thread panicked while holding it (the tables
/// stay consistent: every update is a single insert or remove).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The asm-generic open(2) flag values the protocol carries.
mod generic {
    pub const O_ACCMODE: i32 = 0o3;
    pub const O_EXCL: i32 = 0o200;
    pub const O_TRUNC: i32 = 0o1000;
    pub const O_APPEND: i32 = 0o2000;
    pub const O_DSYNC: i32 = 0o10000;
    pub const O_NOATIME: i32 = 0o1000000;
    pub const O_SYNC_ONLY: i32 = 0o4000000;
}

/// The native open flags for a request's asm-generic `flags`: the access
/// mode and the flags that mean something for a file the server holds
/// open for a client (O_TRUNC, O_APPEND, O_DSYNC, O_SYNC, O_NOATIME, and
/// O_EXCL when creating). Others (O_NONBLOCK, O_DIRECT, O_PATH, O_TMPFILE,
/// O_NOFOLLOW...) are the client kernel's business or the server's.
fn open_flags(flags: i32, create: bool) -> SysResult<libc::c_int> {
    let mut out = match flags & generic::O_ACCMODE {
        0 => libc::O_RDONLY,
        1 => libc::O_WRONLY,
        2 => libc::O_RDWR,
        _ => return Err(libc::EINVAL),
    };
    let map = [
        (generic::O_TRUNC, libc::O_TRUNC),
        (generic::O_APPEND, libc::O_APPEND),
        (generic::O_DSYNC, libc::O_DSYNC),
        (generic::O_SYNC_ONLY, libc::O_SYNC & !libc::O_DSYNC),
        (generic::O_NOATIME, libc::O_NOATIME),
    ];
    for (g, n) in map {
        if flags & g != 0 {
            out |= n;
        }
    }
    if create && flags & generic::O_EXCL != 0 {
        out |= libc::O_EXCL;
    }
    Ok(out)
}

/// A name from a request as a C string: one path component.
fn component(name: &[u8]) -> SysResult<CString> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(libc::EINVAL);
    }
    if name.len() > MAX_NAME {
        return Err(libc::ENAMETOOLONG);
    }
    CString::new(name).map_err(|_| libc::EINVAL)
}

/// An extended attribute's name as a C string (the kernel's rules: not
/// empty, at most 255 bytes).
fn xattr_name(name: &[u8]) -> SysResult<CString> {
    if name.is_empty() || name.len() > 255 {
        return Err(libc::ERANGE);
    }
    CString::new(name).map_err(|_| libc::EINVAL)
}

/// The largest extended attribute value or list (XATTR_SIZE_MAX,
/// XATTR_LIST_MAX).
const XATTR_MAX: usize = 65536;

/// The most bytes one CopyFileRange copies (the reply counts in u32; the
/// client asks again for the rest).
const MAX_COPY: u64 = 1 << 30;

/// The deepest directory the search check walks up from.
const MAX_DEPTH: usize = MAX_PATH / 2;

/// CAP_DAC_READ_SEARCH, which open_by_handle_at needs.
const CAP_DAC_READ_SEARCH: u32 = 2;

fn time(secs: i64, nsecs: i64) -> Time {
    Time {
        secs,
        nanos: nsecs.clamp(0, 999_999_999) as u32,
    }
}

/// A node's attributes from its stat.
fn attr(node: NodeId, st: &libc::stat, watched: bool) -> Attr {
    Attr {
        node,
        size: st.st_size.max(0) as u64,
        blocks: st.st_blocks.max(0) as u64,
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
        mode: st.st_mode,
        nlink: u32::try_from(st.st_nlink).unwrap_or(u32::MAX),
        uid: st.st_uid,
        gid: st.st_gid,
        // Linux's dev_t keeps the 32-bit encoding FUSE uses in its low
        // half for majors below 4096 and minors below 2^20.
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize.clamp(0, i64::from(u32::MAX)) as u32,
        watched,
    }
}

fn key(st: &libc::stat) -> (u64, u64) {
    (st.st_dev, st.st_ino)
}

fn timespec(t: Option<TimeSet>) -> SysResult<libc::timespec> {
    Ok(match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(TimeSet::Now) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(TimeSet::At(t)) => {
            if t.nanos >= 1_000_000_000 {
                return Err(libc::EINVAL);
            }
            libc::timespec {
                tv_sec: t.secs,
                tv_nsec: i64::from(t.nanos),
            }
        }
    })
}

/// A protocol lock as a `struct flock` (whence SEEK_SET).
fn to_flock(l: &Lock) -> SysResult<libc::flock> {
    let typ = match l.typ {
        0 => libc::F_RDLCK,
        1 => libc::F_WRLCK,
        2 => libc::F_UNLCK,
        _ => return Err(libc::EINVAL),
    };
    if l.end < l.start {
        return Err(libc::EINVAL);
    }
    let start = sys::off(l.start)?;
    let len = if l.end == u64::MAX {
        0
    } else {
        sys::off(l.end - l.start + 1)?
    };
    let mut fl = sys::empty_flock();
    fl.l_type = typ as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start;
    fl.l_len = len;
    Ok(fl)
}

/// A `struct flock` (from F_OFD_GETLK) as a protocol lock.
fn from_flock(fl: &libc::flock) -> Lock {
    let typ = match i32::from(fl.l_type) {
        libc::F_RDLCK => 0,
        libc::F_WRLCK => 1,
        _ => 2,
    };
    let start = fl.l_start.max(0) as u64;
    let end = if fl.l_len == 0 {
        u64::MAX
    } else {
        start.saturating_add(fl.l_len.max(1) as u64 - 1)
    };
    Lock {
        start,
        end,
        typ,
        pid: u32::try_from(fl.l_pid).unwrap_or(0),
    }
}

/// Parses getdents64 records: (d_ino, d_off, d_type, name) each.
fn dirents(buf: &[u8]) -> impl Iterator<Item = (u64, u64, u8, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        // struct linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name.
        let head = buf.get(at..at + 19)?;
        let ino = u64::from_ne_bytes(head[0..8].try_into().ok()?);
        let off = u64::from_ne_bytes(head[8..16].try_into().ok()?);
        let reclen = usize::from(u16::from_ne_bytes(head[16..18].try_into().ok()?));
        let typ = head[18];
        let rec = buf.get(at..at + reclen).filter(|_| reclen >= 19)?;
        let name = &rec[19..];
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        at += reclen;
        Some((ino, off, typ, name))
    })
}

impl Server {
    /// A server with the default [`Limits`]: see [`Server::with_limits`].
    pub fn new(cfg: ServerConfig) -> std::io::Result<Server> {
        Server::with_limits(cfg, Limits::default())
    }

    /// Opens the exported root and `/proc/self/fd`, and raises the limit
    /// of open files (each known node holds a descriptor).
    pub fn with_limits(cfg: ServerConfig, limits: Limits) -> std::io::Result<Server> {
        let root_c = CString::new(cfg.root.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let io = std::io::Error::from_raw_os_error;
        let root = sys::open_path(&root_c, libc::O_PATH | libc::O_DIRECTORY).map_err(io)?;
        let proc_fds =
            sys::open_path(c"/proc/self/fd", libc::O_PATH | libc::O_DIRECTORY).map_err(io)?;
        let st = sys::fstat(root.as_fd()).map_err(io)?;
        let nofile = usize::try_from(sys::raise_nofile()).unwrap_or(usize::MAX);
        let fd_budget = (nofile / 2).min(limits.max_open_nodes).max(1);
        let mut nodes = Nodes {
            next: ROOT + 1,
            open_fds: 1,
            ..Nodes::default()
        };
        nodes.by_key.insert(key(&st), ROOT);
        nodes.by_id.insert(
            ROOT,
            Node {
                fd: Some(Arc::new(root)),
                handle: None,
                opened: 0,
                used: 0,
                key: key(&st),
                kind: libc::S_IFDIR,
                lookups: u64::MAX,
                parent: None,
                seen: None,
            },
        );
        Ok(Server {
            limits,
            fd_budget,
            proc_fds,
            root_key: key(&st),
            nodes: Mutex::new(nodes),
            handles: Mutex::new(Handles {
                next: 1,
                ..Handles::default()
            }),
            locks: Mutex::default(),
            search_ok: Mutex::default(),
            shutting_down: AtomicBool::new(false),
            watched: cfg.watched,
        })
    }

    /// Ends every lock wait in progress (they answer EINTR) and makes new
    /// ones fail at once: for a server whose node went away.
    pub fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// How many nodes and handles the server holds (for tests and
    /// diagnostics).
    pub fn counts(&self) -> (usize, usize) {
        (lock(&self.nodes).by_id.len(), lock(&self.handles).map.len())
    }

    /// Performs `op` at once on the calling thread if it cannot wait for a
    /// disk, or gives it back (to be performed with [`Server::handle`] on a
    /// thread that may block). At once: closes, forgets, flushes,
    /// attributes of known nodes, lookups the kernel answers from its
    /// caches (`RESOLVE_CACHED`) and reads of cached pages
    /// (`RWF_NOWAIT`); attributes and reads only on watched file systems
    /// (local ones: a network file system may ask its server). The home
    /// answers those without handing them to another thread.
    pub fn try_now(&self, cred: &Cred, op: FsOp) -> Result<FsReply, FsOp> {
        match op {
            FsOp::Forget { .. }
            | FsOp::Flush { .. }
            | FsOp::Release { .. }
            | FsOp::ReleaseDir { .. } => Ok(self.handle(cred, op)),
            // fstat of a file on a network file system may ask its server:
            // at once only on the watched (local) ones.
            FsOp::GetAttr { node, fh } if self.on_watched(node, fh) => Ok(self.handle(cred, op)),
            FsOp::Lookup { parent, ref name } => {
                let r = fsid::as_user(cred.uid, cred.gid, &cred.groups, || {
                    self.lookup_with(cred, parent, name, true)
                });
                match r {
                    Ok(Err(libc::EAGAIN)) | Err(_) => Err(op),
                    Ok(r) => Ok(r.unwrap_or_else(FsReply::Err)),
                }
            }
            // A network file system may ask its server even with RWF_NOWAIT.
            FsOp::Read { fh, offset, size } if size <= MAX_IO && self.on_watched(0, Some(fh)) => {
                self.read_cached(fh, offset, size).ok_or(op)
            }
            op => Err(op),
        }
    }

    /// Whether a node (or the handle's node) is on a watched file system.
    fn on_watched(&self, node: NodeId, fh: Option<Fh>) -> bool {
        let node = match fh {
            Some(fh) => match lock(&self.handles).map.get(&fh) {
                Some(h) => h.node,
                None => return false,
            },
            None => node,
        };
        let Some((dev, _)) = lock(&self.nodes).by_id.get(&node).map(|n| n.key) else {
            return false;
        };
        self.is_watched(dev)
    }

    /// A read answered from the page cache alone, if it can be.
    fn read_cached(&self, fh: Fh, offset: u64, size: u32) -> Option<FsReply> {
        let h = match self.file_handle(fh) {
            Ok(h) => h,
            Err(e) => return Some(FsReply::Err(e)),
        };
        let mut buf = vec![0u8; size as usize];
        let n = sys::pread_nowait(h.fd.as_fd(), &mut buf, offset).ok()?;
        if n < buf.len() {
            // The end of the file, or pages not in the cache.
            let st = sys::fstat(h.fd.as_fd()).ok()?;
            if offset.saturating_add(n as u64) < st.st_size.max(0) as u64 {
                return None;
            }
            buf.truncate(n);
        }
        Some(FsReply::Data(buf.into()))
    }

    /// Performs `op` as `cred` on the calling thread.
    pub fn handle(&self, cred: &Cred, op: FsOp) -> FsReply {
        // These only drop the server's own state: no file is touched, and
        // they must work whatever the credentials.
        let result = match op {
            FsOp::Forget { nodes } => {
                self.forget(&nodes);
                Ok(FsReply::Ok)
            }
            FsOp::Flush { fh, owner } => self.flush(fh, owner),
            FsOp::Release { fh, flock_owner } => {
                if let Some(owner) = flock_owner {
                    if let Ok(h) = self.any_handle(fh) {
                        self.drop_locks(h.node, owner);
                    }
                }
                self.release(fh)
            }
            FsOp::ReleaseDir { fh } => self.release(fh),
            op => match fsid::as_user(cred.uid, cred.gid, &cred.groups, || self.dispatch(cred, op))
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(uid = cred.uid, error = %e, "cannot act as the user");
                    Err(e.raw_os_error().unwrap_or(libc::EPERM))
                }
            },
        };
        result.unwrap_or_else(FsReply::Err)
    }

    fn dispatch(&self, who: &Cred, op: FsOp) -> SysResult<FsReply> {
        match op {
            FsOp::Lookup { parent, name } => self.lookup(who, parent, &name),
            FsOp::GetAttr { node, fh } => self.getattr(who, node, fh),
            FsOp::SetAttr {
                node,
                fh,
                mode,
                uid,
                gid,
                size,
                atime,
                mtime,
            } => {
                let n = self.node_checked(who, node)?;
                self.setattr(&n, node, fh, mode, uid, gid, size, [atime, mtime])
            }
            FsOp::ReadLink { node } => {
                let n = self.node_checked(who, node)?;
                if n.kind != libc::S_IFLNK {
                    return Err(libc::EINVAL);
                }
                Ok(FsReply::Data(sys::readlink(n.fd())?.into()))
            }
            FsOp::MkNod {
                parent,
                name,
                mode,
                rdev,
                umask,
            } => {
                let kind = mode & libc::S_IFMT;
                let kind = if kind == 0 { libc::S_IFREG } else { kind };
                if ![
                    libc::S_IFREG,
                    libc::S_IFIFO,
                    libc::S_IFSOCK,
                    libc::S_IFCHR,
                    libc::S_IFBLK,
                ]
                .contains(&kind)
                {
                    return Err(libc::EINVAL);
                }
                let (dir, name) = self.dir_and_name(who, parent, &name)?;
                fsid::with_umask(umask, || {
                    sys::mknodat(dir.fd(), &name, kind | (mode & 0o7777), u64::from(rdev))
                })
                .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))??;
                self.new_entry(&dir, &name)
            }
            FsOp::MkDir {
                parent,
                name,
                mode,
                umask,
            } => {
                let (dir, name) = self.dir_and_name(who, parent, &name)?;
                fsid::with_umask(umask, || sys::mkdirat(dir.fd(), &name, mode & 0o7777))
                    .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))??;
                self.new_entry(&dir, &name)
            }
            FsOp::Unlink { parent, name } => {
                let (dir, name) = self.dir_and_name(who, parent, &name)?;
                sys::unlinkat(dir.fd(), &name, 0).map(|()| FsReply::Ok)
            }
            FsOp::RmDir { parent, name } => {
                let (dir, name) = self.dir_and_name(who, parent, &name)?;
                sys::unlinkat(dir.fd(), &name, libc::AT_REMOVEDIR).map(|()| FsReply::Ok)
            }
            FsOp::Symlink {
                parent,
                name,
                target,
            } => {
                if target.is_empty() {
                    return Err(libc::ENOENT);
                }
                if target.len() >= MAX_PATH {
                    return Err(libc::ENAMETOOLONG);
                }
                let target = CString::new(target.into_vec()).map_err(|_| libc::EINVAL)?;
                let (dir, name) = self.dir_and_name(who, parent, &name)?;
                sys::symlinkat(&target, dir.fd(), &name)?;
                self.new_entry(&dir, &name)
            }
            FsOp::Rename {
                parent,
                name,
                new_parent,
                new_name,
                flags,
            } => self.rename(who, parent, &name, new_parent, &new_name, flags),
            FsOp::Link {
                node,
                new_parent,
                new_name,
            } => {
                let n = self.node_checked(who, node)?;
                if n.is_dir() {
                    return Err(libc::EPERM);
                }
                let (dir, name) = self.dir_and_name(who, new_parent, &new_name)?;
                sys::link_fd(self.proc_fds.as_fd(), n.fd(), dir.fd(), &name)?;
                self.new_entry(&dir, &name)
            }
            FsOp::Open { node, flags } => self.open(who, node, flags),
            FsOp::Create {
                parent,
                name,
                mode,
                umask,
                flags,
            } => self.create(who, parent, &name, mode, umask, flags),
            FsOp::Read { fh, offset, size } => {
                if size > MAX_IO {
                    return Err(libc::EINVAL);
                }
                let h = self.file_handle(fh)?;
                let mut buf = vec![0u8; size as usize];
                let n = sys::pread_full(h.fd.as_fd(), &mut buf, offset)?;
                buf.truncate(n);
                Ok(FsReply::Data(buf.into()))
            }
            FsOp::Write { fh, offset, data } => {
                if data.len() > MAX_IO as usize {
                    return Err(libc::EINVAL);
                }
                let h = self.file_handle(fh)?;
                let n = sys::pwrite_all(h.fd.as_fd(), &data, offset)?;
                Ok(FsReply::Written(n as u32))
            }
            FsOp::Fsync { fh, datasync } | FsOp::FsyncDir { fh, datasync } => {
                let h = self.any_handle(fh)?;
                sys::fsync(h.fd.as_fd(), datasync).map(|()| FsReply::Ok)
            }
            FsOp::OpenDir { node } => self.opendir(who, node),
            FsOp::ReadDir { fh, offset } => self.readdir(fh, offset),
            FsOp::StatFs { node } => {
                let n = self.node(node)?;
                let s = sys::fstatfs(n.fd())?;
                Ok(FsReply::StatFs(StatFs {
                    blocks: s.f_blocks,
                    bfree: s.f_bfree,
                    bavail: s.f_bavail,
                    files: s.f_files,
                    ffree: s.f_ffree,
                    bsize: u32::try_from(s.f_bsize).unwrap_or(4096),
                    namelen: u32::try_from(s.f_namelen).unwrap_or(255),
                    frsize: u32::try_from(s.f_frsize).unwrap_or(4096),
                }))
            }
            FsOp::Access { node, mask } => {
                if mask & !(libc::R_OK | libc::W_OK | libc::X_OK) != 0 {
                    return Err(libc::EINVAL);
                }
                let n = self.node_checked(who, node)?;
                sys::access_fd(n.fd(), mask).map(|()| FsReply::Ok)
            }
            FsOp::GetLk { fh, owner, lock } => {
                let mut fl = to_flock(&lock)?;
                if i32::from(fl.l_type) == libc::F_UNLCK {
                    return Err(libc::EINVAL);
                }
                let h = self.file_handle(fh)?;
                let fd = self.lock_fd(&h, owner)?;
                sys::ofd_lock(fd.as_fd(), libc::F_OFD_GETLK, &mut fl)?;
                Ok(FsReply::Lock(from_flock(&fl)))
            }
            FsOp::SetLk {
                fh,
                owner,
                lock,
                wait,
            } => self.setlk(fh, owner, &lock, wait),
            FsOp::Flock { fh, owner: _, op } => self.flock(fh, op),
            FsOp::Fallocate {
                fh,
                offset,
                length,
                mode,
            } => {
                let h = self.file_handle(fh)?;
                sys::fallocate(h.fd.as_fd(), mode, offset, length).map(|()| FsReply::Ok)
            }
            FsOp::Lseek { fh, offset, whence } => {
                if whence != libc::SEEK_DATA && whence != libc::SEEK_HOLE {
                    return Err(libc::EINVAL);
                }
                let h = self.file_handle(fh)?;
                let offset = sys::off(offset)?;
                sys::lseek(h.fd.as_fd(), offset, whence).map(FsReply::Offset)
            }
            FsOp::CopyFileRange {
                fh_in,
                offset_in,
                fh_out,
                offset_out,
                length,
            } => {
                let hin = self.file_handle(fh_in)?;
                let hout = self.file_handle(fh_out)?;
                let len = length.min(MAX_COPY) as usize;
                let n = sys::copy_file_range(
                    hin.fd.as_fd(),
                    offset_in,
                    hout.fd.as_fd(),
                    offset_out,
                    len,
                )?;
                Ok(FsReply::Written(n as u32))
            }
            FsOp::GetXattr { node, name, size } => {
                let name = xattr_name(&name)?;
                let n = self.node_checked(who, node)?;
                let path = sys::proc_path(n.fd());
                if size == 0 {
                    let len = sys::getxattr(&path, &name, &mut [])?;
                    return Ok(FsReply::Size(len as u32));
                }
                let mut buf = vec![0u8; (size as usize).min(XATTR_MAX)];
                let len = sys::getxattr(&path, &name, &mut buf)?;
                buf.truncate(len);
                Ok(FsReply::Data(buf.into()))
            }
            FsOp::ListXattr { node, size } => {
                let n = self.node_checked(who, node)?;
                let path = sys::proc_path(n.fd());
                if size == 0 {
                    let len = sys::listxattr(&path, &mut [])?;
                    return Ok(FsReply::Size(len as u32));
                }
                let mut buf = vec![0u8; (size as usize).min(XATTR_MAX)];
                let len = sys::listxattr(&path, &mut buf)?;
                buf.truncate(len);
                Ok(FsReply::Data(buf.into()))
            }
            FsOp::SetXattr {
                node,
                name,
                value,
                flags,
            } => {
                let name = xattr_name(&name)?;
                if value.len() > XATTR_MAX {
                    return Err(libc::E2BIG);
                }
                if flags & !(libc::XATTR_CREATE | libc::XATTR_REPLACE) != 0 {
                    return Err(libc::EINVAL);
                }
                let n = self.node_checked(who, node)?;
                let path = sys::proc_path(n.fd());
                sys::setxattr(&path, &name, &value, flags).map(|()| FsReply::Ok)
            }
            FsOp::RemoveXattr { node, name } => {
                let name = xattr_name(&name)?;
                let n = self.node_checked(who, node)?;
                let path = sys::proc_path(n.fd());
                sys::removexattr(&path, &name).map(|()| FsReply::Ok)
            }
            // Handled without switching credentials (see `handle`).
            FsOp::Forget { .. }
            | FsOp::Flush { .. }
            | FsOp::Release { .. }
            | FsOp::ReleaseDir { .. } => Err(libc::EINVAL),
        }
    }

    // ---- nodes ----

    /// A known node, or ESTALE. Opens its descriptor again from its file
    /// handle if it was closed.
    fn node(&self, id: NodeId) -> SysResult<NodeRef> {
        let (handle, mount) = {
            let mut nodes = lock(&self.nodes);
            nodes.clock += 1;
            let now = nodes.clock;
            let n = nodes.by_id.get_mut(&id).ok_or(libc::ESTALE)?;
            n.used = now;
            if let Some(fd) = &n.fd {
                return Ok(NodeRef {
                    fd: fd.clone(),
                    kind: n.kind,
                    parent: n.parent.clone(),
                });
            }
            n.handle.clone().ok_or(libc::ESTALE)?
        };
        // Finding an inode by handle takes CAP_DAC_READ_SEARCH; it gives
        // the user nothing (an O_PATH descriptor of a node it already
        // names, whose uses are checked as the user).
        // A file deleted a moment ago may answer ENOMEM while the kernel
        // evicts its inode (seen on ext4): asked again it answers ESTALE.
        let mut tries = 0;
        let fd = loop {
            let r = fsid::with_capability(CAP_DAC_READ_SEARCH, || {
                sys::open_by_handle(mount.as_fd(), &handle, libc::O_PATH)
            })
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
            match r {
                Err(libc::ENOMEM) if tries < 3 => {
                    tries += 1;
                    std::thread::yield_now();
                }
                Err(libc::ENOENT | libc::ENOMEM) => return Err(libc::ESTALE),
                r => break r?,
            }
        };
        let st = sys::fstat(fd.as_fd())?;
        let mut nodes = lock(&self.nodes);
        let n = nodes.by_id.get_mut(&id).ok_or(libc::ESTALE)?;
        if key(&st) != n.key {
            return Err(libc::ESTALE);
        }
        let (fd, opened) = match &n.fd {
            // Another request opened it meanwhile.
            Some(fd) => (fd.clone(), false),
            None => {
                let fd = Arc::new(fd);
                n.fd = Some(fd.clone());
                (fd, true)
            }
        };
        let r = NodeRef {
            fd,
            kind: n.kind,
            parent: n.parent.clone(),
        };
        if opened {
            nodes.open_fds += 1;
        }
        let closed = self.trim(&mut nodes);
        drop(nodes);
        drop(closed);
        Ok(r)
    }

    /// Closes the least recently used node descriptors while more than
    /// the budget are open: files with a file handle and no open handle
    /// (an eighth of the budget at a time, so the scan is rare). Returns
    /// them, to be closed after the table's lock is released.
    fn trim(&self, nodes: &mut Nodes) -> Vec<Arc<OwnedFd>> {
        if nodes.open_fds <= self.fd_budget {
            return Vec::new();
        }
        let mut candidates: Vec<(u64, NodeId)> = nodes
            .by_id
            .iter()
            .filter(|(_, n)| {
                n.fd.is_some() && n.handle.is_some() && n.opened == 0 && n.kind != libc::S_IFDIR
            })
            .map(|(&id, n)| (n.used, id))
            .collect();
        let want = (nodes.open_fds - self.fd_budget)
            .max(self.fd_budget / 8)
            .min(candidates.len());
        if want == 0 {
            return Vec::new();
        }
        candidates.select_nth_unstable(want - 1);
        let mut closed = Vec::with_capacity(want);
        for &(_, id) in &candidates[..want] {
            if let Some(fd) = nodes.by_id.get_mut(&id).and_then(|n| n.fd.take()) {
                closed.push(fd);
            }
        }
        nodes.open_fds -= closed.len();
        closed
    }

    /// A known node, after checking that the caller may search the
    /// directories above it (see [`Server::check_search`]).
    fn node_checked(&self, who: &Cred, id: NodeId) -> SysResult<NodeRef> {
        let n = self.node(id)?;
        if let Some(parent) = &n.parent {
            self.check_search(who, parent.as_fd())?;
        }
        Ok(n)
    }

    /// A directory node (ENOTDIR otherwise) whose path the caller may
    /// search, and a request's name as one component.
    fn dir_and_name(&self, who: &Cred, id: NodeId, name: &[u8]) -> SysResult<(NodeRef, CString)> {
        let name = component(name)?;
        let dir = self.node(id)?;
        if !dir.is_dir() {
            return Err(libc::ENOTDIR);
        }
        self.check_search(who, dir.fd())?;
        Ok((dir, name))
    }

    /// Checks that the caller may search `dir` and every directory above
    /// it up to the exported root, as the path walk of a local call would:
    /// a node's descriptor skips that walk. Each step up is
    /// `openat(dir, "..")`, which itself needs search rights on `dir`.
    /// A directory no longer below the root (moved out of the exported
    /// tree on the home) is refused with EACCES. Root needs no check.
    ///
    /// A success is remembered for [`Limits::search_cache`] (per directory
    /// and credentials), so a right taken away on the home is seen within
    /// that time, as the node's kernel sees changed attributes within its
    /// cache time.
    fn check_search(&self, who: &Cred, dir: BorrowedFd<'_>) -> SysResult<()> {
        if who.uid == 0 {
            return Ok(());
        }
        let mut st = sys::fstat(dir)?;
        let cache_key = (key(&st), who.uid, who.gid, who.groups.clone());
        let ttl = self.limits.search_cache;
        if !ttl.is_zero() {
            let cache = lock(&self.search_ok);
            if cache.get(&cache_key).is_some_and(|at| at.elapsed() < ttl) {
                return Ok(());
            }
        }
        self.walk_up(dir, &mut st)?;
        if !ttl.is_zero() {
            let mut cache = lock(&self.search_ok);
            if cache.len() >= SEARCH_CACHE_MAX {
                cache.clear();
            }
            cache.insert(cache_key, Instant::now());
        }
        Ok(())
    }

    /// The walk of [`Server::check_search`] from `dir`, whose stat is `st`.
    fn walk_up(&self, dir: BorrowedFd<'_>, st: &mut libc::stat) -> SysResult<()> {
        let mut up: Option<OwnedFd> = None;
        for _ in 0..MAX_DEPTH {
            let cur = up.as_ref().map_or(dir, |f| f.as_fd());
            if key(st) == self.root_key {
                return sys::access_fd(cur, libc::X_OK);
            }
            let next = sys::openat(cur, c"..", libc::O_PATH | libc::O_DIRECTORY, 0)?;
            let next_st = sys::fstat(next.as_fd())?;
            if key(&next_st) == key(st) {
                // The top of the file system: the root was not above.
                return Err(libc::EACCES);
            }
            up = Some(next);
            *st = next_st;
        }
        Err(libc::ELOOP)
    }

    /// Records a lookup of the inode behind `fd` (found in `parent`): a
    /// known inode gets its id back with one more lookup, a new one a new id.
    fn remember(
        &self,
        fd: OwnedFd,
        st: &libc::stat,
        parent: Option<&Arc<OwnedFd>>,
    ) -> SysResult<NodeId> {
        let k = key(st);
        let kind = st.st_mode & libc::S_IFMT;
        let mut nodes = lock(&self.nodes);
        nodes.clock += 1;
        let now = nodes.clock;
        if let Some(&id) = nodes.by_key.get(&k) {
            if let Some(n) = nodes.by_id.get_mut(&id) {
                n.lookups = n.lookups.saturating_add(1);
                n.used = now;
                if id != ROOT {
                    if let Some(p) = parent {
                        n.parent = Some(p.clone());
                    }
                }
                // A closed descriptor is replaced by the one just opened.
                let reopened = n.fd.is_none();
                if reopened {
                    n.fd = Some(Arc::new(fd));
                    nodes.open_fds += 1;
                }
                let closed = self.trim(&mut nodes);
                drop(nodes);
                drop(closed);
                return Ok(id);
            }
        }
        if nodes.by_id.len() >= self.limits.max_nodes {
            return Err(libc::ENFILE);
        }
        drop(nodes);
        // A file's handle, to close its descriptor when too many are open.
        let handle = if kind == libc::S_IFDIR {
            None
        } else {
            sys::name_to_handle(fd.as_fd())
                .ok()
                .and_then(|(h, mount_id)| Some((h, self.mount_ref(mount_id, parent?)?)))
        };
        let fd = Arc::new(fd);
        let mut nodes = lock(&self.nodes);
        if let Some(&id) = nodes.by_key.get(&k) {
            // Another request remembered it meanwhile.
            if let Some(n) = nodes.by_id.get_mut(&id) {
                n.lookups = n.lookups.saturating_add(1);
                return Ok(id);
            }
        }
        let id = nodes.next;
        nodes.next += 1;
        nodes.by_key.insert(k, id);
        nodes.by_id.insert(
            id,
            Node {
                fd: Some(fd),
                handle,
                opened: 0,
                used: now,
                key: k,
                kind,
                lookups: 1,
                parent: parent.cloned(),
                seen: None,
            },
        );
        nodes.open_fds += 1;
        let closed = self.trim(&mut nodes);
        drop(nodes);
        drop(closed);
        Ok(id)
    }

    /// A descriptor that open_by_handle_at accepts for mount `mount_id`
    /// (not O_PATH): the mount's known one, or else `dir` opened for
    /// reading if it is on that mount. None if neither (a file mounted on
    /// its own, whose descriptor then stays open).
    fn mount_ref(&self, mount_id: i32, dir: &Arc<OwnedFd>) -> Option<Arc<OwnedFd>> {
        if let Some(m) = lock(&self.nodes).mounts.get(&mount_id) {
            return Some(m.clone());
        }
        let (_, dir_mount) = sys::name_to_handle(dir.as_fd()).ok()?;
        if dir_mount != mount_id {
            return None;
        }
        // Reading the directory needs no right of the user's: the
        // descriptor only anchors open_by_handle_at and is never read.
        let m = fsid::with_capability(CAP_DAC_READ_SEARCH, || {
            sys::openat(
                self.proc_fds.as_fd(),
                &sys::fd_name(dir.as_fd()),
                libc::O_RDONLY | libc::O_DIRECTORY,
                0,
            )
        })
        .ok()?
        .ok()?;
        let m = Arc::new(m);
        Some(
            lock(&self.nodes)
                .mounts
                .entry(mount_id)
                .or_insert(m)
                .clone(),
        )
    }

    /// Looks `name` up in `dir` (not following a symbolic link) and
    /// remembers it.
    fn entry_at(&self, dir: &NodeRef, name: &CStr) -> SysResult<(NodeId, libc::stat)> {
        self.entry_with(dir, name, false)
    }

    /// As [`Server::entry_at`]; `cached`: only from the kernel's caches
    /// (EAGAIN if it would read the disk).
    fn entry_with(
        &self,
        dir: &NodeRef,
        name: &CStr,
        cached: bool,
    ) -> SysResult<(NodeId, libc::stat)> {
        let flags = libc::O_PATH | libc::O_NOFOLLOW;
        let fd = if cached {
            sys::openat_cached(dir.fd(), name, flags)?
        } else {
            sys::openat(dir.fd(), name, flags, 0)?
        };
        let st = sys::fstat(fd.as_fd())?;
        let id = self.remember(fd, &st, Some(&dir.fd))?;
        Ok((id, st))
    }

    /// Whether the home watches the file system of device `dev`.
    fn is_watched(&self, dev: u64) -> bool {
        self.watched.read().is_ok_and(|w| w.contains(&dev))
    }

    /// A node's attributes, `watched` if the home watches its file system.
    fn attr(&self, node: NodeId, st: &libc::stat) -> Attr {
        attr(node, st, self.is_watched(st.st_dev))
    }

    /// The Entry reply for a name just made in `dir`.
    fn new_entry(&self, dir: &NodeRef, name: &CStr) -> SysResult<FsReply> {
        let (id, st) = self.entry_at(dir, name)?;
        Ok(FsReply::Entry(self.attr(id, &st)))
    }

    fn lookup(&self, who: &Cred, parent: NodeId, name: &[u8]) -> SysResult<FsReply> {
        self.lookup_with(who, parent, name, false)
    }

    fn lookup_with(
        &self,
        who: &Cred,
        parent: NodeId,
        name: &[u8],
        cached: bool,
    ) -> SysResult<FsReply> {
        let (dir, name) = self.dir_and_name(who, parent, name)?;
        let found = self
            .entry_with(&dir, &name, cached)
            .map(|(id, st)| FsReply::Entry(self.attr(id, &st)));
        match found {
            // A name that does not exist: node 0, which the node may cache
            // as long as the directory is watched.
            Err(libc::ENOENT) => {
                let st = sys::fstat(dir.fd())?;
                Ok(FsReply::Entry(Attr {
                    watched: self.is_watched(st.st_dev),
                    ..Attr::default()
                }))
            }
            r => r,
        }
    }

    fn forget(&self, list: &[(NodeId, u64)]) {
        let mut gone = Vec::new();
        {
            let mut nodes = lock(&self.nodes);
            for &(id, count) in list {
                if id == ROOT {
                    continue;
                }
                let Some(n) = nodes.by_id.get_mut(&id) else {
                    continue;
                };
                n.lookups = n.lookups.saturating_sub(count);
                if n.lookups == 0 {
                    if let Some(n) = nodes.by_id.remove(&id) {
                        if nodes.by_key.get(&n.key) == Some(&id) {
                            nodes.by_key.remove(&n.key);
                        }
                        if n.fd.is_some() {
                            nodes.open_fds -= 1;
                        }
                        gone.push((id, n));
                    }
                }
            }
        }
        if !gone.is_empty() {
            let mut locks = lock(&self.locks);
            for (id, _) in &gone {
                if let Some(owners) = locks.map.remove(id) {
                    locks.count -= owners.len();
                }
            }
        }
        // The descriptors close here, outside the tables' locks.
        drop(gone);
    }

    // ---- attributes ----

    fn getattr(&self, who: &Cred, node: NodeId, fh: Option<Fh>) -> SysResult<FsReply> {
        let st = match fh {
            Some(fh) => {
                let h = self.any_handle(fh)?;
                sys::fstat(h.fd.as_fd())?
            }
            None => sys::fstat(self.node_checked(who, node)?.fd())?,
        };
        Ok(FsReply::Attr(self.attr(node, &st)))
    }

    #[expect(clippy::too_many_arguments, reason = "the fields of FsOp::SetAttr")]
    fn setattr(
        &self,
        n: &NodeRef,
        node: NodeId,
        fh: Option<Fh>,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        times: [Option<TimeSet>; 2],
    ) -> SysResult<FsReply> {
        let handle = match fh {
            Some(fh) => Some(self.any_handle(fh)?),
            None => None,
        };
        // chown first: it may clear set-id bits that a mode in the same
        // request sets again.
        if uid.is_some() || gid.is_some() {
            sys::chown_fd(n.fd(), uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX))?;
        }
        if let Some(mode) = mode {
            sys::chmod_fd(n.fd(), mode & 0o7777)?;
        }
        if let Some(size) = size {
            match n.kind {
                libc::S_IFREG => {}
                libc::S_IFDIR => return Err(libc::EISDIR),
                _ => return Err(libc::EINVAL),
            }
            // An open file written through may be truncated even if its
            // mode no longer allows writing (ftruncate); otherwise the
            // caller needs write access (truncate).
            let writable = handle.as_ref().filter(|h| {
                sys::get_fl(h.fd.as_fd()).is_ok_and(|f| f & libc::O_ACCMODE != libc::O_RDONLY)
            });
            match writable {
                Some(h) => sys::ftruncate(h.fd.as_fd(), size)?,
                None => sys::truncate_path(&sys::proc_path(n.fd()), size)?,
            }
        }
        if times.iter().any(Option::is_some) {
            let ts = [timespec(times[0])?, timespec(times[1])?];
            sys::utimens_fd(n.fd(), &ts)?;
        }
        let st = sys::fstat(n.fd())?;
        Ok(FsReply::Attr(self.attr(node, &st)))
    }

    fn rename(
        &self,
        who: &Cred,
        parent: NodeId,
        name: &[u8],
        new_parent: NodeId,
        new_name: &[u8],
        flags: u32,
    ) -> SysResult<FsReply> {
        let known = libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE;
        if flags & !known != 0 {
            return Err(libc::EINVAL);
        }
        let (dir, name) = self.dir_and_name(who, parent, name)?;
        let (new_dir, new_name) = self.dir_and_name(who, new_parent, new_name)?;
        sys::renameat2(dir.fd(), &name, new_dir.fd(), &new_name, flags)?;
        // Known nodes keep working (their descriptors follow the inodes);
        // record their new directories for the search check.
        self.moved(&new_dir, &new_name);
        if flags & libc::RENAME_EXCHANGE != 0 {
            self.moved(&dir, &name);
        }
        Ok(FsReply::Ok)
    }

    /// Notes that what is now `name` in `dir` lives there.
    fn moved(&self, dir: &NodeRef, name: &CStr) {
        let Ok(st) = sys::stat_at(dir.fd(), name) else {
            return;
        };
        let mut nodes = lock(&self.nodes);
        let Some(&id) = nodes.by_key.get(&key(&st)) else {
            return;
        };
        if let Some(n) = nodes.by_id.get_mut(&id) {
            if id != ROOT {
                n.parent = Some(dir.fd.clone());
            }
        }
    }

    // ---- handles ----

    fn add_handle(&self, h: Handle) -> SysResult<Fh> {
        let node = h.node;
        let fh = {
            let mut handles = lock(&self.handles);
            if handles.map.len() >= self.limits.max_handles {
                return Err(libc::EMFILE);
            }
            let fh = handles.next;
            handles.next += 1;
            handles.map.insert(fh, Arc::new(h));
            fh
        };
        self.count_open(node, true);
        Ok(fh)
    }

    /// Counts a node's open handles (its descriptor is kept while any).
    fn count_open(&self, node: NodeId, opened: bool) {
        if let Some(n) = lock(&self.nodes).by_id.get_mut(&node) {
            n.opened = if opened {
                n.opened.saturating_add(1)
            } else {
                n.opened.saturating_sub(1)
            };
        }
    }

    fn any_handle(&self, fh: Fh) -> SysResult<Arc<Handle>> {
        lock(&self.handles).map.get(&fh).cloned().ok_or(libc::EBADF)
    }

    /// An open file's handle (EISDIR for a directory's).
    fn file_handle(&self, fh: Fh) -> SysResult<Arc<Handle>> {
        let h = self.any_handle(fh)?;
        if h.dir.is_some() {
            return Err(libc::EISDIR);
        }
        Ok(h)
    }

    /// Opens the inode behind a node's descriptor anew, as the caller,
    /// with `flags` (native; O_CLOEXEC added).
    fn reopen(&self, n: &NodeRef, flags: libc::c_int) -> SysResult<OwnedFd> {
        sys::openat(self.proc_fds.as_fd(), &sys::fd_name(n.fd()), flags, 0)
    }

    fn open(&self, who: &Cred, node: NodeId, flags: i32) -> SysResult<FsReply> {
        let mut native = open_flags(flags, false)?;
        let n = self.node_checked(who, node)?;
        match n.kind {
            libc::S_IFREG => {}
            libc::S_IFDIR if native & libc::O_ACCMODE == libc::O_RDONLY => {
                native |= libc::O_DIRECTORY;
            }
            libc::S_IFDIR => return Err(libc::EISDIR),
            libc::S_IFLNK => return Err(libc::ELOOP),
            // Devices, FIFOs and sockets are opened by the node's own kernel.
            _ => return Err(libc::EOPNOTSUPP),
        }
        let fd = self.reopen(&n, native | libc::O_NOCTTY)?;
        let st = sys::fstat(fd.as_fd())?;
        let keep_cache = self.saw(node, Version::of(&st));
        let watched = self.is_watched(st.st_dev);
        let fh = self.add_handle(Handle {
            node,
            fd,
            dir: None,
        })?;
        Ok(FsReply::Opened {
            fh,
            keep_cache,
            watched,
        })
    }

    /// Records the version of a node's file seen at an open; whether it is
    /// the one seen at the open before.
    fn saw(&self, node: NodeId, v: Version) -> bool {
        let mut nodes = lock(&self.nodes);
        match nodes.by_id.get_mut(&node) {
            Some(n) => n.seen.replace(v) == Some(v),
            None => false,
        }
    }

    fn create(
        &self,
        who: &Cred,
        parent: NodeId,
        name: &[u8],
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> SysResult<FsReply> {
        let native = open_flags(flags, true)?;
        let (dir, name) = self.dir_and_name(who, parent, name)?;
        // O_NOFOLLOW: a symbolic link that appeared under this name is not
        // followed (ELOOP); O_NONBLOCK: a FIFO that appeared does not block
        // the thread (it is refused below).
        let open_flags =
            native | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK;
        let fd = fsid::with_umask(umask, || {
            sys::openat(dir.fd(), &name, open_flags, mode & 0o7777)
        })
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))??;
        let st = sys::fstat(fd.as_fd())?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(libc::EEXIST);
        }
        sys::set_fl(fd.as_fd(), sys::get_fl(fd.as_fd())? & !libc::O_NONBLOCK)?;
        // The node's O_PATH descriptor, of the very inode just opened.
        let path_fd = sys::openat(
            self.proc_fds.as_fd(),
            &sys::fd_name(fd.as_fd()),
            libc::O_PATH,
            0,
        )?;
        let id = self.remember(path_fd, &st, Some(&dir.fd))?;
        self.saw(id, Version::of(&st));
        match self.add_handle(Handle {
            node: id,
            fd,
            dir: None,
        }) {
            Ok(fh) => Ok(FsReply::Created {
                attr: self.attr(id, &st),
                fh,
            }),
            Err(e) => {
                // The client will not learn of this lookup.
                self.forget(&[(id, 1)]);
                Err(e)
            }
        }
    }

    fn opendir(&self, who: &Cred, node: NodeId) -> SysResult<FsReply> {
        let n = self.node_checked(who, node)?;
        if !n.is_dir() {
            return Err(libc::ENOTDIR);
        }
        let fd = self.reopen(&n, libc::O_RDONLY | libc::O_DIRECTORY)?;
        // The node may keep its cached listing if the directory did not
        // change since its last opendir and the home watches it (a change
        // also sends a notice, which drops the listing).
        let st = sys::fstat(fd.as_fd())?;
        let watched = self.is_watched(st.st_dev);
        let keep_cache = self.saw(node, Version::of(&st)) && watched;
        let fh = self.add_handle(Handle {
            node,
            fd,
            dir: Some(Mutex::default()),
        })?;
        Ok(FsReply::Opened {
            fh,
            keep_cache,
            watched,
        })
    }

    /// Entries from `offset` on (0: the start; otherwise the `next` of an
    /// entry returned before, a telldir cookie of the home's file system).
    fn readdir(&self, fh: Fh, offset: u64) -> SysResult<FsReply> {
        let h = self.any_handle(fh)?;
        let Some(cursor) = &h.dir else {
            return Err(libc::ENOTDIR);
        };
        // Only this handle's lock is held across the system calls.
        let mut cursor = lock(cursor);
        if cursor.pos != Some(offset) {
            cursor.pos = None;
            // Cookies are the file system's d_off values, which some file
            // systems give above i64::MAX: pass the bits as they are.
            sys::lseek(h.fd.as_fd(), offset as i64, libc::SEEK_SET)?;
        }
        let mut buf = vec![0u8; 64 * 1024];
        let len = sys::getdents64(h.fd.as_fd(), &mut buf)?;
        let mut out = Vec::new();
        let mut all = true;
        for (ino, next, kind, name) in dirents(&buf[..len]) {
            if out.len() >= MAX_DIR_ENTRIES as usize {
                all = false;
                break;
            }
            out.push(DirEntry {
                ino,
                next,
                kind,
                name: ByteBuf::from(name.to_vec()),
            });
        }
        // After a whole batch the descriptor stands after its last entry.
        cursor.pos = match out.last() {
            Some(last) if all => Some(last.next),
            _ => None,
        };
        Ok(FsReply::Dir(out))
    }

    fn release(&self, fh: Fh) -> SysResult<FsReply> {
        let h = lock(&self.handles).map.remove(&fh).ok_or(libc::EBADF)?;
        self.count_open(h.node, false);
        // Closes here (or when the last request using it ends).
        drop(h);
        Ok(FsReply::Ok)
    }

    /// A close by `owner`: POSIX says it releases all that owner's locks
    /// on the file, through whichever descriptor they were taken.
    fn flush(&self, fh: Fh, owner: u64) -> SysResult<FsReply> {
        let h = self.any_handle(fh)?;
        self.drop_locks(h.node, owner);
        Ok(FsReply::Ok)
    }

    /// Drops `owner`'s locks on `node` (closing its lock descriptor).
    fn drop_locks(&self, node: NodeId, owner: u64) {
        let dropped = {
            let mut locks = lock(&self.locks);
            let gone = locks.map.get_mut(&node).and_then(|o| o.remove(&owner));
            if gone.is_some() {
                locks.count -= 1;
            }
            if locks.map.get(&node).is_some_and(HashMap::is_empty) {
                locks.map.remove(&node);
            }
            gone
        };
        drop(dropped);
    }

    // ---- locks ----

    /// The descriptor holding `owner`'s POSIX locks on the handle's node:
    /// an open file description of its own (opened as the caller, with the
    /// handle's access mode), so different owners' locks conflict.
    fn lock_fd(&self, h: &Handle, owner: u64) -> SysResult<Arc<OwnedFd>> {
        if let Some(fd) = lock(&self.locks)
            .map
            .get(&h.node)
            .and_then(|o| o.get(&owner))
        {
            return Ok(fd.clone());
        }
        // Read and write if the user may: a node's kernel sends flock(2)
        // as whole-file locks (see the client), and flock takes an
        // exclusive lock through a read-only descriptor too. POSIX write
        // locks through read-only descriptors never get here: the node's
        // kernel refuses them first.
        let mode = sys::get_fl(h.fd.as_fd())? & libc::O_ACCMODE;
        let name = sys::fd_name(h.fd.as_fd());
        let flags = libc::O_NOCTTY | libc::O_NONBLOCK;
        let fd = match sys::openat(self.proc_fds.as_fd(), &name, libc::O_RDWR | flags, 0) {
            Ok(fd) => fd,
            Err(_) => sys::openat(self.proc_fds.as_fd(), &name, mode | flags, 0)?,
        };
        let fd = Arc::new(fd);
        let mut locks = lock(&self.locks);
        if locks.count >= self.limits.max_handles {
            return Err(libc::ENOLCK);
        }
        let owners = locks.map.entry(h.node).or_default();
        // Another request of the same owner may have made one meanwhile.
        if let Some(existing) = owners.get(&owner) {
            return Ok(existing.clone());
        }
        owners.insert(owner, fd.clone());
        locks.count += 1;
        Ok(fd)
    }

    /// Whether `fd` is still `owner`'s lock descriptor for `node` (not
    /// dropped by a close).
    fn lock_fd_current(&self, node: NodeId, owner: u64, fd: &Arc<OwnedFd>) -> bool {
        lock(&self.locks)
            .map
            .get(&node)
            .and_then(|o| o.get(&owner))
            .is_some_and(|cur| Arc::ptr_eq(cur, fd))
    }

    fn setlk(&self, fh: Fh, owner: u64, l: &Lock, wait: bool) -> SysResult<FsReply> {
        let mut fl = to_flock(l)?;
        let h = self.file_handle(fh)?;
        if i32::from(fl.l_type) == libc::F_UNLCK {
            // Nothing to unlock if the owner never locked.
            let fd = lock(&self.locks)
                .map
                .get(&h.node)
                .and_then(|o| o.get(&owner))
                .cloned();
            if let Some(fd) = fd {
                sys::ofd_lock(fd.as_fd(), libc::F_OFD_SETLK, &mut fl)?;
            }
            return Ok(FsReply::Ok);
        }
        let fd = self.lock_fd(&h, owner)?;
        self.wait_for(
            wait,
            || {
                let mut fl = fl;
                match sys::ofd_lock(fd.as_fd(), libc::F_OFD_SETLK, &mut fl) {
                    Err(libc::EACCES) => Err(libc::EAGAIN),
                    r => r,
                }
            },
            || self.lock_fd_current(h.node, owner, &fd),
        )?;
        Ok(FsReply::Ok)
    }

    fn flock(&self, fh: Fh, op: i32) -> SysResult<FsReply> {
        let h = self.file_handle(fh)?;
        let kind = op & !libc::LOCK_NB;
        if ![libc::LOCK_SH, libc::LOCK_EX, libc::LOCK_UN].contains(&kind) {
            return Err(libc::EINVAL);
        }
        let wait = op & libc::LOCK_NB == 0 && kind != libc::LOCK_UN;
        self.wait_for(
            wait,
            || sys::flock(h.fd.as_fd(), kind | libc::LOCK_NB),
            || lock(&self.handles).map.contains_key(&fh),
        )?;
        Ok(FsReply::Ok)
    }

    /// Tries `attempt` (which answers EAGAIN while a lock conflicts) once,
    /// or with `wait` until it succeeds: polling, backing off from 1 ms to
    /// 20 ms, for at most [`Limits::lock_wait`] (then EAGAIN). Gives
    /// up with EINTR when `wanted` turns false (the file was closed) or the
    /// server shuts down.
    fn wait_for(
        &self,
        wait: bool,
        mut attempt: impl FnMut() -> SysResult<()>,
        wanted: impl Fn() -> bool,
    ) -> SysResult<()> {
        let deadline = self.limits.lock_wait.map(|d| Instant::now() + d);
        let mut pause = Duration::from_millis(1);
        loop {
            if self.shutting_down.load(Ordering::SeqCst) {
                return Err(libc::EINTR);
            }
            match attempt() {
                Err(libc::EAGAIN) if wait => {}
                r => return r,
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(libc::EAGAIN);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
            if !wanted() {
                return Err(libc::EINTR);
            }
        }
    }
}
