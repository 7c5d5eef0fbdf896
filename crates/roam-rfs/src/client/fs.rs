//! The FUSE file system: each kernel request becomes one `FsOp`, sent as
//! the calling process's user and answered when the home replies.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags, PollEvents,
    PollFlags, PollNotifier, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLock, ReplyLseek, ReplyOpen, ReplyPoll, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use roam_proto::fs::{Attr, DirEntry, FsOp, FsReply, Lock, MAX_IO};
use roam_proto::types::Cred;
use serde_bytes::ByteBuf;

use super::access::Accesses;
use super::calls::{lock, Caller, Timer};
use super::convert::{dirent_type, errno, file_attr, time_set, valid_name};
use super::opens::Opens;
use super::GroupsOf;

/// The cache lifetimes the kernel is given.
#[derive(Clone, Copy)]
pub(crate) struct Ttls {
    pub(crate) attr: Duration,
    pub(crate) entry: Duration,
    pub(crate) negative: Duration,
    /// Attributes, names and missing names of files on file systems the
    /// home watches (it sends a notice when they change).
    pub(crate) watched: Duration,
}

impl Ttls {
    /// (attribute, entry) lifetimes for `a`.
    fn of(&self, a: &Attr) -> (Duration, Duration) {
        if a.watched {
            (self.watched, self.watched)
        } else {
            (self.attr, self.entry)
        }
    }
}

/// Directory entries fetched from the home but not yet given to the kernel
/// (a `ReadDir` reply holds up to 1024, the kernel asks for a page's worth
/// at a time).
struct DirBuf {
    /// The offset the first buffered entry is read at.
    start: u64,
    entries: VecDeque<DirEntry>,
}

/// The file system fuser runs.
pub(crate) struct RoamFs {
    caller: Caller,
    timer: Arc<Timer>,
    groups_of: GroupsOf,
    ttls: Ttls,
    dirs: Arc<Mutex<HashMap<u64, DirBuf>>>,
    /// Inodes a POSIX lock was asked for from this node: only their
    /// flushes go to the home.
    locked: Mutex<HashSet<u64>>,
    /// Read-only opens kept for reuse.
    opens: Arc<Opens>,
    /// Access checks the home allowed, remembered.
    accesses: Arc<Accesses>,
}

impl RoamFs {
    pub(crate) fn new(
        caller: Caller,
        timer: Arc<Timer>,
        groups_of: GroupsOf,
        ttls: Ttls,
        opens: Arc<Opens>,
        accesses: Arc<Accesses>,
    ) -> Self {
        RoamFs {
            caller,
            timer,
            groups_of,
            ttls,
            dirs: Arc::default(),
            locked: Mutex::default(),
            opens,
            accesses,
        }
    }

    /// Retires the kept opens of a file (see opens.rs), closing the idle
    /// ones at the home.
    fn retire_kept(&self, ino: u64) {
        self.caller.close_kept(self.opens.retire(ino));
        self.accesses.forget(ino);
    }

    fn cred(&self, req: &Request) -> Cred {
        let (uid, gid) = (req.uid(), req.gid());
        Cred {
            uid,
            gid,
            groups: (self.groups_of)(uid, gid),
        }
    }

    fn send(&self, req: &Request, op: FsOp, on_reply: impl FnOnce(FsReply) + Send + 'static) {
        self.caller.call(self.cred(req), op, on_reply);
    }

    /// Sends an op whose reply is a new entry (lookup, mknod, mkdir...).
    fn send_entry(&self, req: &Request, what: &'static str, op: FsOp, reply: ReplyEntry) {
        let ttls = self.ttls;
        let caller = self.caller.clone();
        let cred = self.cred(req);
        let negative_ok = matches!(op, FsOp::Lookup { .. }) && !ttls.negative.is_zero();
        let accesses = self.accesses.clone();
        self.caller.call(cred.clone(), op, move |r| match r {
            FsReply::Entry(a) if a.node != 0 => match file_attr(&a) {
                Some(attr) => {
                    accesses.set_watched(a.node, a.watched);
                    let (attr_ttl, entry_ttl) = ttls.of(&a);
                    reply.entry_with_ttls(&attr_ttl, &entry_ttl, &attr, Generation(0))
                }
                None => {
                    tracing::warn!("a {what} got a file of no known type (mode {:o})", a.mode);
                    caller.forget(cred, a.node);
                    reply.error(Errno::EIO);
                }
            },
            FsReply::Entry(a) if negative_ok => {
                // Node id 0: the kernel caches that the name does not exist.
                let ttl = if a.watched {
                    ttls.watched
                } else {
                    ttls.negative
                };
                reply.entry_with_ttls(&Duration::ZERO, &ttl, &negative_attr(), Generation(0))
            }
            FsReply::Entry(_) | FsReply::Err(libc::ENOENT) => reply.error(Errno::ENOENT),
            other => reply.error(errno(what, &other)),
        });
    }

    fn send_empty(&self, req: &Request, what: &'static str, op: FsOp, reply: ReplyEmpty) {
        self.send(req, op, move |r| match r {
            FsReply::Ok => reply.ok(),
            other => reply.error(errno(what, &other)),
        });
    }

    fn send_attr(&self, req: &Request, what: &'static str, op: FsOp, reply: ReplyAttr) {
        let ttls = self.ttls;
        let accesses = self.accesses.clone();
        self.send(req, op, move |r| match r {
            FsReply::Attr(a) => match file_attr(&a) {
                Some(attr) => {
                    accesses.set_watched(a.node, a.watched);
                    reply.attr(&ttls.of(&a).0, &attr)
                }
                None => {
                    tracing::warn!("a {what} got a file of no known type (mode {:o})", a.mode);
                    reply.error(Errno::EIO)
                }
            },
            other => reply.error(errno(what, &other)),
        });
    }

    fn send_xattr(
        &self,
        req: &Request,
        what: &'static str,
        op: FsOp,
        size: u32,
        reply: ReplyXattr,
    ) {
        self.send(req, op, move |r| match r {
            FsReply::Size(n) if size == 0 => reply.size(n),
            FsReply::Data(d) if size != 0 && d.len() <= size as usize => reply.data(&d),
            FsReply::Data(_) if size != 0 => reply.error(Errno::ERANGE),
            other => reply.error(errno(what, &other)),
        });
    }
}

/// The attributes of a negative entry (only `ino` = 0 matters).
fn negative_attr() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

/// The kernel's "to the end of the file" (OFFSET_MAX); the protocol's is
/// u64::MAX.
const OFFSET_MAX: u64 = i64::MAX as u64;

/// A lock from the kernel as the protocol's.
fn wire_lock(start: u64, end: u64, typ: i32, pid: u32) -> Lock {
    Lock {
        start,
        end: if end >= OFFSET_MAX { u64::MAX } else { end },
        typ,
        pid,
    }
}

fn bytes(s: &OsStr) -> ByteBuf {
    ByteBuf::from(s.as_bytes().to_vec())
}

/// Gives the kernel buffered entries from `buf` until its reply is full;
/// returns how many it took.
fn fill(reply: &mut ReplyDirectory, buf: &mut DirBuf) -> usize {
    let mut n = 0;
    while let Some(e) = buf.entries.front() {
        if !valid_name(&e.name) {
            tracing::warn!(
                "the home listed a bad name ({} bytes): skipped",
                e.name.len()
            );
        } else if reply.add(
            INodeNo(e.ino),
            e.next,
            dirent_type(e.kind),
            OsStr::from_bytes(&e.name),
        ) {
            break;
        } else {
            n += 1;
        }
        buf.start = e.next;
        buf.entries.pop_front();
    }
    n
}

/// Reads the directory `fh` from the home at `offset` into `reply`, and
/// keeps what does not fit for the next `readdir`.
fn read_dir(
    caller: Caller,
    cred: Cred,
    fh: u64,
    offset: u64,
    mut reply: ReplyDirectory,
    dirs: Arc<Mutex<HashMap<u64, DirBuf>>>,
) {
    let again = caller.clone();
    let cred2 = cred.clone();
    caller.call(cred, FsOp::ReadDir { fh, offset }, move |r| match r {
        FsReply::Dir(entries) => {
            let any = !entries.is_empty();
            let mut buf = DirBuf {
                start: offset,
                entries: entries.into(),
            };
            let n = fill(&mut reply, &mut buf);
            if n == 0 && any {
                // Nothing the kernel could take: every entry had a bad
                // name (read on after them) or the reply had no room.
                if buf.entries.is_empty() && buf.start != offset {
                    return read_dir(again, cred2, fh, buf.start, reply, dirs);
                }
                return reply.error(Errno::EIO);
            }
            if !buf.entries.is_empty() {
                lock(&dirs).insert(fh, buf);
            }
            reply.ok();
        }
        other => reply.error(errno("readdir", &other)),
    });
}

impl Filesystem for RoamFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Remote POSIX locks; the kernel drops cached pages when it sees a
        // file's mtime or size change; symlink targets (which never change)
        // cached; lookups and readdirs in one directory in parallel.
        // flock(2) forwarded too: the kernel sends it as a whole-file lock
        // owned by the open file (fuser does not say which requests are
        // flocks), which the home holds as it holds POSIX locks, so
        // flocks exclude each other across nodes (and, as on NFS, also
        // exclude fcntl locks of the same file).
        // Not asked: writeback caching (writes go to the home at once).
        for flag in [
            InitFlags::FUSE_POSIX_LOCKS,
            InitFlags::FUSE_FLOCK_LOCKS,
            InitFlags::FUSE_AUTO_INVAL_DATA,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_ASYNC_DIO,
        ] {
            if config.add_capabilities(flag).is_err() {
                tracing::debug!("the kernel does not offer {flag:?}");
            }
        }
        if let Err(max) = config.set_max_write(MAX_IO) {
            let _ = config.set_max_write(max);
        }
        if let Err(max) = config.set_max_readahead(MAX_IO) {
            let _ = config.set_max_readahead(max);
        }
        // More reads and writes in flight at once (readahead, async I/O).
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        Ok(())
    }

    fn destroy(&mut self) {
        self.timer.stop();
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let op = FsOp::Lookup {
            parent: parent.0,
            name: bytes(name),
        };
        self.send_entry(req, "lookup", op, reply);
    }

    fn forget(&self, req: &Request, ino: INodeNo, nlookup: u64) {
        // Forgotten: no open file of it is left, nor any lock.
        lock(&self.locked).remove(&ino.0);
        self.retire_kept(ino.0);
        let op = FsOp::Forget {
            nodes: vec![(ino.0, nlookup)],
        };
        self.send(req, op, |_| {});
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let op = FsOp::GetAttr {
            node: ino.0,
            fh: fh.map(|f| f.0),
        };
        self.send_attr(req, "getattr", op, reply);
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if mode.is_some() || uid.is_some() || gid.is_some() {
            // Who may open it changes: kept opens are not given out again.
            self.retire_kept(ino.0);
        }
        let op = FsOp::SetAttr {
            node: ino.0,
            fh: fh.map(|f| f.0),
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time_set),
            mtime: mtime.map(time_set),
        };
        self.send_attr(req, "setattr", op, reply);
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        self.send(req, FsOp::ReadLink { node: ino.0 }, move |r| match r {
            FsReply::Data(d) => reply.data(&d),
            other => reply.error(errno("readlink", &other)),
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let op = FsOp::MkNod {
            parent: parent.0,
            name: bytes(name),
            mode,
            rdev,
            umask,
        };
        self.send_entry(req, "mknod", op, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let op = FsOp::MkDir {
            parent: parent.0,
            name: bytes(name),
            mode,
            umask,
        };
        self.send_entry(req, "mkdir", op, reply);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let op = FsOp::Unlink {
            parent: parent.0,
            name: bytes(name),
        };
        self.send_empty(req, "unlink", op, reply);
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let op = FsOp::RmDir {
            parent: parent.0,
            name: bytes(name),
        };
        self.send_empty(req, "rmdir", op, reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let op = FsOp::Symlink {
            parent: parent.0,
            name: bytes(link_name),
            target: bytes(target.as_os_str()),
        };
        self.send_entry(req, "symlink", op, reply);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let op = FsOp::Rename {
            parent: parent.0,
            name: bytes(name),
            new_parent: newparent.0,
            new_name: bytes(newname),
            flags: flags.bits(),
        };
        self.send_empty(req, "rename", op, reply);
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let op = FsOp::Link {
            node: ino.0,
            new_parent: newparent.0,
            new_name: bytes(newname),
        };
        self.send_entry(req, "link", op, reply);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        // A plain read-only open may reuse a kept handle (see opens.rs).
        let plain = flags.0 & libc::O_ACCMODE == libc::O_RDONLY
            && flags.0 & (libc::O_TRUNC | libc::O_CREAT | libc::O_DIRECT) == 0;
        let (uid, gid) = (req.uid(), req.gid());
        if plain {
            if let Some(fh) = self.opens.reuse(ino.0, uid, gid) {
                // Watched: a change would have retired it and dropped the
                // pages, so the cached pages are current.
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
                return;
            }
        }
        let op = FsOp::Open {
            node: ino.0,
            flags: flags.0,
        };
        let opens = self.opens.clone();
        self.send(req, op, move |r| match r {
            FsReply::Opened {
                fh,
                keep_cache,
                watched,
            } => {
                if plain && watched {
                    opens.keep(ino.0, uid, gid, fh);
                }
                // Never FOPEN_DIRECT_IO: files go through the page cache, so
                // mmap works and unchanged pages (programs, libraries) stay.
                let flags = if keep_cache {
                    FopenFlags::FOPEN_KEEP_CACHE
                } else {
                    FopenFlags::empty()
                };
                reply.opened(FileHandle(fh), flags)
            }
            other => reply.error(errno("open", &other)),
        });
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let size = size.min(MAX_IO);
        let op = FsOp::Read {
            fh: fh.0,
            offset,
            size,
        };
        self.send(req, op, move |r| match r {
            FsReply::Data(d) if d.len() <= size as usize => reply.data(&d),
            FsReply::Data(d) => {
                tracing::warn!("a read of {size} bytes got {}: EIO", d.len());
                reply.error(Errno::EIO)
            }
            other => reply.error(errno("read", &other)),
        });
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let len = data.len();
        let op = FsOp::Write {
            fh: fh.0,
            offset,
            data: ByteBuf::from(data.to_vec()),
        };
        self.send(req, op, move |r| match r {
            FsReply::Written(n) if n as usize <= len => reply.written(n),
            FsReply::Written(n) => {
                tracing::warn!("a write of {len} bytes says it wrote {n}: EIO");
                reply.error(Errno::EIO)
            }
            other => reply.error(errno("write", &other)),
        });
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // A flush only drops the closing process's POSIX locks at the home
        // (writes are already there): files never locked from this node
        // are answered here, without a round trip.
        if !lock(&self.locked).contains(&ino.0) {
            reply.ok();
            return;
        }
        let op = FsOp::Flush {
            fh: fh.0,
            owner: lock_owner.0,
        };
        self.send_empty(req, "flush", op, reply);
    }

    fn release(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // `lock_owner` is given when the file was flock()ed: its locks go
        // with the open file.
        if !self.opens.release(fh.0) {
            // A kept handle stays open at the home; only its flocks go.
            match lock_owner {
                Some(owner) => {
                    let op = FsOp::Flush {
                        fh: fh.0,
                        owner: owner.0,
                    };
                    self.send_empty(req, "release", op, reply);
                }
                None => reply.ok(),
            }
            return;
        }
        let op = FsOp::Release {
            fh: fh.0,
            flock_owner: lock_owner.map(|o| o.0),
        };
        self.send_empty(req, "release", op, reply);
    }

    fn fsync(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let op = FsOp::Fsync { fh: fh.0, datasync };
        self.send_empty(req, "fsync", op, reply);
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.send(req, FsOp::OpenDir { node: ino.0 }, move |r| match r {
            // The kernel caches the listing for as long as the directory
            // does not change (the home says so and sends notices).
            FsReply::Opened { fh, keep_cache, .. } => reply.opened(
                FileHandle(fh),
                if keep_cache {
                    FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE
                } else {
                    FopenFlags::FOPEN_CACHE_DIR
                },
            ),
            other => reply.error(errno("opendir", &other)),
        });
    }

    fn readdir(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let fh = fh.0;
        let mut at = offset;
        {
            let mut dirs = lock(&self.dirs);
            if let Some(buf) = dirs.get_mut(&fh) {
                if buf.start == offset && !buf.entries.is_empty() {
                    let n = fill(&mut reply, buf);
                    // Some entries (the kernel asks again for the rest).
                    if n > 0 {
                        if buf.entries.is_empty() {
                            dirs.remove(&fh);
                        }
                        reply.ok();
                        return;
                    }
                    // Every buffered entry was skipped: read on after them.
                    at = buf.start;
                }
            }
            dirs.remove(&fh);
        }
        let cred = self.cred(req);
        read_dir(self.caller.clone(), cred, fh, at, reply, self.dirs.clone());
    }

    fn releasedir(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.dirs).remove(&fh.0);
        self.send_empty(req, "releasedir", FsOp::ReleaseDir { fh: fh.0 }, reply);
    }

    fn fsyncdir(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let op = FsOp::FsyncDir { fh: fh.0, datasync };
        self.send_empty(req, "fsyncdir", op, reply);
    }

    fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        self.send(req, FsOp::StatFs { node: ino.0 }, move |r| match r {
            FsReply::StatFs(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            ),
            other => reply.error(errno("statfs", &other)),
        });
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        // An ACL may change who may open it.
        self.retire_kept(ino.0);
        let op = FsOp::SetXattr {
            node: ino.0,
            name: bytes(name),
            value: ByteBuf::from(value.to_vec()),
            flags,
        };
        self.send_empty(req, "setxattr", op, reply);
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let op = FsOp::GetXattr {
            node: ino.0,
            name: bytes(name),
            size,
        };
        self.send_xattr(req, "getxattr", op, size, reply);
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let op = FsOp::ListXattr { node: ino.0, size };
        self.send_xattr(req, "listxattr", op, size, reply);
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        // An ACL may change who may open it.
        self.retire_kept(ino.0);
        let op = FsOp::RemoveXattr {
            node: ino.0,
            name: bytes(name),
        };
        self.send_empty(req, "removexattr", op, reply);
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        // Remembered if allowed: see access.rs.
        let (uid, gid) = (req.uid(), req.gid());
        let bits = mask.bits() as u32;
        if self.accesses.allowed(ino.0, uid, gid, bits) {
            reply.ok();
            return;
        }
        let op = FsOp::Access {
            node: ino.0,
            mask: mask.bits(),
        };
        let accesses = self.accesses.clone();
        let ttls = (self.ttls.attr, self.ttls.watched);
        self.send(req, op, move |r| match r {
            FsReply::Ok => {
                accesses.note(ino.0, uid, gid, bits, ttls);
                reply.ok()
            }
            other => reply.error(errno("access", &other)),
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let op = FsOp::Create {
            parent: parent.0,
            name: bytes(name),
            mode,
            umask,
            flags,
        };
        let ttls = self.ttls;
        let caller = self.caller.clone();
        let cred = self.cred(req);
        self.caller.call(cred.clone(), op, move |r| match r {
            FsReply::Created { attr: a, fh } if a.node != 0 => match file_attr(&a) {
                Some(attr) => reply.created(
                    &{
                        let (attr_ttl, entry_ttl) = ttls.of(&a);
                        attr_ttl.min(entry_ttl)
                    },
                    &attr,
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                ),
                None => {
                    tracing::warn!("a create got a file of no known type (mode {:o})", a.mode);
                    caller.call(
                        cred.clone(),
                        FsOp::Release {
                            fh,
                            flock_owner: None,
                        },
                        |_| {},
                    );
                    caller.forget(cred, a.node);
                    reply.error(Errno::EIO);
                }
            },
            other => reply.error(errno("create", &other)),
        });
    }

    /// The home's files are files and directories: no ioctl applies
    /// (isatty's TCGETS is the usual one), and none is forwarded.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    /// ENOSYS: the kernel then treats the files as always ready, as it
    /// does regular files.
    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ph: PollNotifier,
        _events: PollEvents,
        _flags: PollFlags,
        reply: ReplyPoll,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn getlk(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: ReplyLock,
    ) {
        let op = FsOp::GetLk {
            fh: fh.0,
            owner: lock_owner.0,
            lock: wire_lock(start, end, typ, pid),
        };
        self.send(req, op, move |r| match r {
            FsReply::Lock(l) => {
                let (start, end) = (l.start.min(OFFSET_MAX), l.end.min(OFFSET_MAX));
                reply.locked(start, end, l.typ, l.pid)
            }
            other => reply.error(errno("getlk", &other)),
        });
    }

    fn setlk(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let op = FsOp::SetLk {
            fh: fh.0,
            owner: lock_owner.0,
            lock: wire_lock(start, end, typ, pid),
            wait: sleep,
        };
        // From now on closes of this file flush to the home (see flush).
        lock(&self.locked).insert(ino.0);
        self.send_empty(req, "setlk", op, reply);
    }

    fn fallocate(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let op = FsOp::Fallocate {
            fh: fh.0,
            offset,
            length,
            mode,
        };
        self.send_empty(req, "fallocate", op, reply);
    }

    fn lseek(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let Ok(offset) = u64::try_from(offset) else {
            reply.error(Errno::ENXIO);
            return;
        };
        let op = FsOp::Lseek {
            fh: fh.0,
            offset,
            whence,
        };
        self.send(req, op, move |r| match r {
            FsReply::Offset(o) => match i64::try_from(o) {
                Ok(o) => reply.offset(o),
                Err(_) => reply.error(Errno::EIO),
            },
            other => reply.error(errno("lseek", &other)),
        });
    }

    fn copy_file_range(
        &self,
        req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        if !flags.is_empty() {
            reply.error(Errno::EINVAL);
            return;
        }
        let op = FsOp::CopyFileRange {
            fh_in: fh_in.0,
            offset_in,
            fh_out: fh_out.0,
            offset_out,
            length: len,
        };
        self.send(req, op, move |r| match r {
            FsReply::Written(n) if u64::from(n) <= len => reply.written(n),
            FsReply::Written(_) => reply.error(Errno::EIO),
            other => reply.error(errno("copy_file_range", &other)),
        });
    }
}

impl Drop for RoamFs {
    fn drop(&mut self) {
        self.timer.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_file_locks_end_at_u64_max_on_the_wire() {
        assert_eq!(wire_lock(0, OFFSET_MAX, 1, 7).end, u64::MAX);
        assert_eq!(wire_lock(0, u64::MAX, 1, 7).end, u64::MAX);
        let l = wire_lock(10, 99, 0, 7);
        assert_eq!((l.start, l.end, l.typ, l.pid), (10, 99, 0, 7));
    }
}
