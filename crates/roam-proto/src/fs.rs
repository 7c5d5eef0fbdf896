//! The remote file system's messages: a node's FUSE client asks, the home's
//! file server answers, each request carrying the credentials of the user
//! whose process made the call (the home performs it with them).
//!
//! Files are named by **node ids** the server hands out (the FUSE inode
//! numbers the node's kernel sees); 1 is the exported root. A node id stays
//! valid until the client forgets it as many times as lookups returned it.
//! Open files and directories are named by **handles** (`fh`), valid until
//! released.
//!
//! Error numbers travel in the Linux asm-generic numbering (x86, arm,
//! aarch64, riscv, s390x share it), like signals.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// A file as the server names it (a FUSE inode number). 1 is the root.
pub type NodeId = u64;
/// An open file or directory on the server.
pub type Fh = u64;

/// The root's node id.
pub const ROOT: NodeId = 1;
/// The largest read or write in one request (and so in one frame: half of
/// `MAX_FRAME`, which leaves room for the rest of the request, a caller's
/// groups included).
pub const MAX_IO: u32 = 512 * 1024;
const _: () = assert!(MAX_IO as usize * 2 <= crate::MAX_FRAME);
/// The most directory entries in one `ReadDir` reply.
pub const MAX_DIR_ENTRIES: u32 = 1024;
/// The longest name (one path component), as Linux's NAME_MAX.
pub const MAX_NAME: usize = 255;
/// The longest symbolic link target or path, as Linux's PATH_MAX.
pub const MAX_PATH: usize = 4096;

/// A point in time: seconds and nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Time {
    pub secs: i64,
    pub nanos: u32,
}

/// How `SetAttr` sets a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimeSet {
    Now,
    At(Time),
}

/// A file's attributes, as `stat` gives them (`mode` includes the type
/// bits, S_IFREG and so on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Attr {
    pub node: NodeId,
    pub size: u64,
    pub blocks: u64,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub blksize: u32,
    /// The home watches the file's file system and tells the node when it
    /// changes (`FsNotice`), so the node may cache it for long.
    pub watched: bool,
}

/// A POSIX record lock (`struct flock`), owned by `owner` (the FUSE lock
/// owner: one per process and file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub start: u64,
    /// Last byte, inclusive (u64::MAX: to the end of the file).
    pub end: u64,
    /// F_RDLCK, F_WRLCK or F_UNLCK (asm-generic values: 0, 1, 2).
    pub typ: i32,
    /// The pid holding a conflicting lock (`GetLk` replies; 0 if unknown).
    pub pid: u32,
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// The entry's inode number on the server's file system (not a node
    /// id: `ReadDir` does not look entries up).
    pub ino: u64,
    /// The offset to continue reading after this entry.
    pub next: u64,
    /// The file type, as in `d_type` (DT_REG, DT_DIR...).
    pub kind: u8,
    pub name: ByteBuf,
}

/// A request, node → home.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FsOp {
    Lookup {
        parent: NodeId,
        name: ByteBuf,
    },
    /// The client's kernel forgot `count` lookups of each node.
    Forget {
        nodes: Vec<(NodeId, u64)>,
    },
    GetAttr {
        node: NodeId,
        fh: Option<Fh>,
    },
    SetAttr {
        node: NodeId,
        fh: Option<Fh>,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeSet>,
        mtime: Option<TimeSet>,
    },
    ReadLink {
        node: NodeId,
    },
    MkNod {
        parent: NodeId,
        name: ByteBuf,
        mode: u32,
        rdev: u32,
        umask: u32,
    },
    MkDir {
        parent: NodeId,
        name: ByteBuf,
        mode: u32,
        umask: u32,
    },
    Unlink {
        parent: NodeId,
        name: ByteBuf,
    },
    RmDir {
        parent: NodeId,
        name: ByteBuf,
    },
    Symlink {
        parent: NodeId,
        name: ByteBuf,
        target: ByteBuf,
    },
    /// `flags`: RENAME_NOREPLACE, RENAME_EXCHANGE (renameat2).
    Rename {
        parent: NodeId,
        name: ByteBuf,
        new_parent: NodeId,
        new_name: ByteBuf,
        flags: u32,
    },
    Link {
        node: NodeId,
        new_parent: NodeId,
        new_name: ByteBuf,
    },
    /// `flags`: the open(2) flags (asm-generic values), without O_CREAT.
    Open {
        node: NodeId,
        flags: i32,
    },
    Create {
        parent: NodeId,
        name: ByteBuf,
        mode: u32,
        umask: u32,
        flags: i32,
    },
    Read {
        fh: Fh,
        offset: u64,
        size: u32,
    },
    Write {
        fh: Fh,
        offset: u64,
        data: ByteBuf,
    },
    /// close(2) of one descriptor of an open file (`owner`: the lock owner,
    /// whose POSIX locks close releases).
    Flush {
        fh: Fh,
        owner: u64,
    },
    Release {
        fh: Fh,
        /// The last close of an open file that was flock()ed: that lock
        /// owner's locks on the file go.
        flock_owner: Option<u64>,
    },
    Fsync {
        fh: Fh,
        datasync: bool,
    },
    OpenDir {
        node: NodeId,
    },
    ReadDir {
        fh: Fh,
        offset: u64,
    },
    ReleaseDir {
        fh: Fh,
    },
    FsyncDir {
        fh: Fh,
        datasync: bool,
    },
    StatFs {
        node: NodeId,
    },
    Access {
        node: NodeId,
        mask: i32,
    },
    GetLk {
        fh: Fh,
        owner: u64,
        lock: Lock,
    },
    /// F_SETLK, or F_SETLKW with `wait`.
    SetLk {
        fh: Fh,
        owner: u64,
        lock: Lock,
        wait: bool,
    },
    /// flock(2) on the open file (`op`: LOCK_SH, LOCK_EX, LOCK_UN, with
    /// LOCK_NB).
    Flock {
        fh: Fh,
        owner: u64,
        op: i32,
    },
    Fallocate {
        fh: Fh,
        offset: u64,
        length: u64,
        mode: i32,
    },
    /// SEEK_DATA or SEEK_HOLE.
    Lseek {
        fh: Fh,
        offset: u64,
        whence: i32,
    },
    CopyFileRange {
        fh_in: Fh,
        offset_in: u64,
        fh_out: Fh,
        offset_out: u64,
        length: u64,
    },
    GetXattr {
        node: NodeId,
        name: ByteBuf,
        size: u32,
    },
    ListXattr {
        node: NodeId,
        size: u32,
    },
    SetXattr {
        node: NodeId,
        name: ByteBuf,
        value: ByteBuf,
        flags: i32,
    },
    RemoveXattr {
        node: NodeId,
        name: ByteBuf,
    },
}

/// File-system statistics (`statvfs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

/// The bytes of an [`FsReply::Data`]. On the wire a byte string, as a
/// `ByteBuf`; a node reads a large one where it lies in the frame it came
/// in ([`crate::link::decode_link_msg`]), without copying it out.
#[derive(Clone, Default)]
pub struct FsData {
    buf: Vec<u8>,
    /// The bytes are `buf[start..]`.
    start: usize,
}

impl FsData {
    /// The bytes `buf[start..]` (all of `buf` if `start` is past its end:
    /// never panics).
    pub(crate) fn in_frame(buf: Vec<u8>, start: usize) -> Self {
        let start = if start <= buf.len() { start } else { 0 };
        FsData { buf, start }
    }

    /// The bytes, as a vector of their own.
    pub fn into_vec(mut self) -> Vec<u8> {
        if self.start == 0 {
            self.buf
        } else {
            self.buf.split_off(self.start)
        }
    }
}

impl std::ops::Deref for FsData {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

impl From<Vec<u8>> for FsData {
    fn from(buf: Vec<u8>) -> Self {
        FsData { buf, start: 0 }
    }
}

impl From<ByteBuf> for FsData {
    fn from(b: ByteBuf) -> Self {
        b.into_vec().into()
    }
}

impl PartialEq for FsData {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl std::fmt::Debug for FsData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FsData({} bytes)", self.len())
    }
}

impl Serialize for FsData {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self)
    }
}

impl<'de> Deserialize<'de> for FsData {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(ByteBuf::deserialize(d)?.into())
    }
}

/// An answer, home → node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FsReply {
    /// The call failed with this errno (asm-generic numbering).
    Err(i32),
    /// Done, nothing to return.
    Ok,
    /// A node (Lookup, MkNod, MkDir, Symlink, Link). A `Lookup` of a name
    /// that does not exist may answer node 0 (only `watched` meaningful):
    /// the node may cache the absence as long as a watched entry.
    Entry(Attr),
    Attr(Attr),
    /// Bytes read (fewer than asked at end of file), a link's target, an
    /// extended attribute or the list of names.
    Data(FsData),
    /// The size of an extended attribute (or list) when asked with size 0.
    Size(u32),
    Written(u32),
    /// An open file or directory. `keep_cache`: the client's kernel may
    /// keep its cached pages (the file did not change since they were
    /// read).
    Opened {
        fh: Fh,
        keep_cache: bool,
        /// The file's file system is watched (see `Attr::watched`).
        watched: bool,
    },
    Created {
        attr: Attr,
        fh: Fh,
    },
    Dir(Vec<DirEntry>),
    StatFs(StatFs),
    Lock(Lock),
    Offset(u64),
}

impl FsReply {
    /// An error reply for an `std::io::Error` (EIO if it has no errno).
    pub fn from_io(e: &std::io::Error) -> FsReply {
        FsReply::Err(e.raw_os_error().unwrap_or(5))
    }
}

/// Invalidations, home → node: the home saw a file change that the node's
/// kernel may have cached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FsNotice {
    /// A node's attributes and cached data are stale.
    Inode { node: NodeId },
    /// A name in a directory changed (created, removed, renamed).
    Entry { parent: NodeId, name: ByteBuf },
}
