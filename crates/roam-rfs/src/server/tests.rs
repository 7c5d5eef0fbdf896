//! The server driven through `Server::handle`, on a scratch export under
//! /var/tmp. These tests need root: they act as other users.

use super::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::AtomicU32;

const NOBODY: u32 = 65534;

/// A scratch exported directory and a server for it; both go away on drop
/// (also when the test panics).
struct Export {
    dir: PathBuf,
    srv: Server,
}

impl Export {
    fn new() -> Export {
        Export::with(|_| {})
    }

    /// An export whose file system counts as watched (as the home's
    /// fanotify watch would make it).
    fn watched() -> Export {
        Export::make(|_| {}, true)
    }

    fn with(adjust: impl FnOnce(&mut Limits)) -> Export {
        Export::make(adjust, false)
    }

    fn make(adjust: impl FnOnce(&mut Limits), watched: bool) -> Export {
        // SAFETY: geteuid cannot fail and touches no memory.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "the file server tests need root: they act as other users (run as root)"
        );
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = PathBuf::from(format!("/var/tmp/roam-rfs-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut limits = Limits::default();
        adjust(&mut limits);
        let cfg = ServerConfig::new(&dir);
        if watched {
            let dev = std::fs::metadata(&dir).unwrap().dev();
            cfg.watched.write().unwrap().insert(dev);
        }
        let srv = Server::with_limits(cfg, limits).unwrap();
        Export { dir, srv }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    fn call(&self, cred: &Cred, op: FsOp) -> FsReply {
        let r = self.srv.handle(cred, op);
        assert_eq!(fsid::fsuid(), 0, "the thread did not switch back");
        r
    }

    fn lookup(&self, cred: &Cred, parent: NodeId, name: &str) -> Result<Attr, i32> {
        match self.call(
            cred,
            FsOp::Lookup {
                parent,
                name: bytes(name),
            },
        ) {
            // A missing name answers node 0.
            FsReply::Entry(a) if a.node == 0 => Err(libc::ENOENT),
            FsReply::Entry(a) => Ok(a),
            FsReply::Err(e) => Err(e),
            other => panic!("lookup: {other:?}"),
        }
    }

    /// Closes a handle (as root), which must succeed.
    fn release(&self, fh: Fh) {
        let op = FsOp::Release {
            fh,
            flock_owner: None,
        };
        assert_eq!(self.call(&root(), op), FsReply::Ok);
    }

    /// Looks a relative path up component by component, as root.
    fn walk(&self, rel: &str) -> Attr {
        let mut node = ROOT;
        let mut last = None;
        for c in rel.split('/') {
            let a = self
                .lookup(&root(), node, c)
                .unwrap_or_else(|e| panic!("{rel}: {e}"));
            node = a.node;
            last = Some(a);
        }
        last.unwrap()
    }

    fn open(&self, cred: &Cred, node: NodeId, flags: i32) -> Result<(Fh, bool), i32> {
        match self.call(cred, FsOp::Open { node, flags }) {
            FsReply::Opened { fh, keep_cache, .. } => Ok((fh, keep_cache)),
            FsReply::Err(e) => Err(e),
            other => panic!("open: {other:?}"),
        }
    }

    fn create(
        &self,
        cred: &Cred,
        parent: NodeId,
        name: &str,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> Result<(Attr, Fh), i32> {
        let op = FsOp::Create {
            parent,
            name: bytes(name),
            mode,
            umask,
            flags,
        };
        match self.call(cred, op) {
            FsReply::Created { attr, fh } => Ok((attr, fh)),
            FsReply::Err(e) => Err(e),
            other => panic!("create: {other:?}"),
        }
    }

    fn read(&self, cred: &Cred, fh: Fh, offset: u64, size: u32) -> Result<Vec<u8>, i32> {
        match self.call(cred, FsOp::Read { fh, offset, size }) {
            FsReply::Data(d) => Ok(d.into_vec()),
            FsReply::Err(e) => Err(e),
            other => panic!("read: {other:?}"),
        }
    }

    fn write(&self, cred: &Cred, fh: Fh, offset: u64, data: &[u8]) -> Result<u32, i32> {
        let op = FsOp::Write {
            fh,
            offset,
            data: ByteBuf::from(data.to_vec()),
        };
        match self.call(cred, op) {
            FsReply::Written(n) => Ok(n),
            FsReply::Err(e) => Err(e),
            other => panic!("write: {other:?}"),
        }
    }

    fn getattr(&self, cred: &Cred, node: NodeId) -> Result<Attr, i32> {
        match self.call(cred, FsOp::GetAttr { node, fh: None }) {
            FsReply::Attr(a) => Ok(a),
            FsReply::Err(e) => Err(e),
            other => panic!("getattr: {other:?}"),
        }
    }

    fn ok(&self, cred: &Cred, op: FsOp) -> Result<(), i32> {
        match self.call(cred, op) {
            FsReply::Ok => Ok(()),
            FsReply::Err(e) => Err(e),
            other => panic!("expected Ok: {other:?}"),
        }
    }

    /// All names of a directory, read in batches from offset 0.
    fn list(&self, cred: &Cred, node: NodeId) -> Vec<String> {
        let fh = match self.call(cred, FsOp::OpenDir { node }) {
            FsReply::Opened { fh, .. } => fh,
            other => panic!("opendir: {other:?}"),
        };
        let mut names = Vec::new();
        let mut offset = 0;
        loop {
            let FsReply::Dir(entries) = self.call(cred, FsOp::ReadDir { fh, offset }) else {
                panic!("readdir");
            };
            let Some(last) = entries.last() else { break };
            offset = last.next;
            names.extend(
                entries
                    .iter()
                    .map(|e| String::from_utf8_lossy(&e.name).into_owned()),
            );
        }
        self.ok(cred, FsOp::ReleaseDir { fh }).unwrap();
        names.retain(|n| n != "." && n != "..");
        names.sort();
        names
    }
}

impl Drop for Export {
    fn drop(&mut self) {
        // Make everything removable again whatever a test did to modes.
        let _ = std::process::Command::new("chmod")
            .args(["-R", "u+rwx"])
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn bytes(s: &str) -> ByteBuf {
    ByteBuf::from(s.as_bytes().to_vec())
}

fn root() -> Cred {
    Cred {
        uid: 0,
        gid: 0,
        groups: vec![],
    }
}

fn user(uid: u32) -> Cred {
    Cred {
        uid,
        gid: uid,
        groups: vec![],
    }
}

const O_RDONLY: i32 = 0;
const O_WRONLY: i32 = 1;
const O_RDWR: i32 = 2;
const O_EXCL: i32 = 0o200;
const O_TRUNC: i32 = 0o1000;
const O_APPEND: i32 = 0o2000;

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn server_lookup_getattr_readdir_nested() {
    let ex = Export::new();
    std::fs::create_dir_all(ex.path("a/b/c")).unwrap();
    std::fs::write(ex.path("a/b/c/file"), b"hello").unwrap();
    let a = ex.lookup(&root(), ROOT, "a").unwrap();
    assert_eq!(a.mode & libc::S_IFMT, libc::S_IFDIR);
    let b = ex.lookup(&root(), a.node, "b").unwrap();
    let c = ex.lookup(&root(), b.node, "c").unwrap();
    let f = ex.lookup(&root(), c.node, "file").unwrap();
    assert_eq!(f.size, 5);
    assert_eq!(f.mode & libc::S_IFMT, libc::S_IFREG);
    assert_eq!(ex.getattr(&root(), f.node).unwrap(), f);
    assert_eq!(ex.getattr(&root(), ROOT).unwrap().node, ROOT);
    assert_eq!(ex.list(&root(), ROOT), ["a"]);
    assert_eq!(ex.list(&root(), c.node), ["file"]);
    assert_eq!(ex.lookup(&root(), c.node, "none"), Err(libc::ENOENT));
    // A file is not a directory to look in.
    assert_eq!(ex.lookup(&root(), f.node, "x"), Err(libc::ENOTDIR));
}

#[test]
fn server_readdir_batches_and_resumes() {
    let ex = Export::new();
    std::fs::create_dir(ex.path("big")).unwrap();
    let want: Vec<String> = (0..2500).map(|i| format!("entry-{i:05}")).collect();
    for n in &want {
        std::fs::write(ex.path(&format!("big/{n}")), b"").unwrap();
    }
    let big = ex.lookup(&root(), ROOT, "big").unwrap();
    assert_eq!(ex.list(&root(), big.node), want);

    // Resuming from any entry's `next` gives exactly the entries after it.
    let FsReply::Opened { fh, .. } = ex.call(&root(), FsOp::OpenDir { node: big.node }) else {
        panic!()
    };
    let FsReply::Dir(first) = ex.call(&root(), FsOp::ReadDir { fh, offset: 0 }) else {
        panic!()
    };
    assert!(first.len() <= MAX_DIR_ENTRIES as usize && first.len() > 10);
    let FsReply::Dir(again) = ex.call(
        &root(),
        FsOp::ReadDir {
            fh,
            offset: first[9].next,
        },
    ) else {
        panic!()
    };
    assert_eq!(again[0], first[10]);
    // And from the start again.
    let FsReply::Dir(restart) = ex.call(&root(), FsOp::ReadDir { fh, offset: 0 }) else {
        panic!()
    };
    assert_eq!(restart[0], first[0]);
    ex.ok(&root(), FsOp::ReleaseDir { fh }).unwrap();
}

#[test]
fn server_node_ids_and_forget() {
    let ex = Export::new();
    std::fs::write(ex.path("f"), b"x").unwrap();
    std::fs::hard_link(ex.path("f"), ex.path("g")).unwrap();
    let f1 = ex.lookup(&root(), ROOT, "f").unwrap();
    let f2 = ex.lookup(&root(), ROOT, "f").unwrap();
    let g = ex.lookup(&root(), ROOT, "g").unwrap();
    // One inode, one id.
    assert_eq!(f1.node, f2.node);
    assert_eq!(f1.node, g.node);
    assert_eq!(ex.srv.counts().0, 2);
    ex.ok(
        &root(),
        FsOp::Forget {
            nodes: vec![(f1.node, 2)],
        },
    )
    .unwrap();
    assert!(ex.getattr(&root(), f1.node).is_ok());
    ex.ok(
        &root(),
        FsOp::Forget {
            nodes: vec![(f1.node, 1), (ROOT, 5), (12345, 1)],
        },
    )
    .unwrap();
    assert_eq!(ex.getattr(&root(), f1.node), Err(libc::ESTALE));
    assert!(ex.getattr(&root(), ROOT).is_ok());
    assert_eq!(ex.srv.counts().0, 1);
    // Looked up again: a new id.
    let f3 = ex.lookup(&root(), ROOT, "f").unwrap();
    assert_ne!(f3.node, f1.node);
}

#[test]
fn server_create_write_read_truncate_fsync() {
    let ex = Export::new();
    let (a, fh) = ex
        .create(&root(), ROOT, "new", 0o644, 0o022, O_RDWR)
        .unwrap();
    assert_eq!(a.size, 0);
    assert_eq!(a.mode, libc::S_IFREG | 0o644);
    assert_eq!(ex.write(&root(), fh, 0, b"hello world").unwrap(), 11);
    assert_eq!(ex.write(&root(), fh, 6, b"WORLD").unwrap(), 5);
    assert_eq!(ex.read(&root(), fh, 0, 100).unwrap(), b"hello WORLD");
    assert_eq!(ex.read(&root(), fh, 6, 3).unwrap(), b"WOR");
    assert_eq!(ex.read(&root(), fh, 100, 3).unwrap(), b"");
    assert_eq!(std::fs::read(ex.path("new")).unwrap(), b"hello WORLD");
    ex.ok(
        &root(),
        FsOp::Fsync {
            fh,
            datasync: false,
        },
    )
    .unwrap();
    ex.ok(&root(), FsOp::Fsync { fh, datasync: true }).unwrap();
    let op = FsOp::SetAttr {
        node: a.node,
        fh: Some(fh),
        mode: None,
        uid: None,
        gid: None,
        size: Some(5),
        atime: None,
        mtime: None,
    };
    let FsReply::Attr(t) = ex.call(&root(), op) else {
        panic!()
    };
    assert_eq!(t.size, 5);
    assert_eq!(std::fs::read(ex.path("new")).unwrap(), b"hello");
    // Without a handle too.
    let op = FsOp::SetAttr {
        node: a.node,
        fh: None,
        mode: None,
        uid: None,
        gid: None,
        size: Some(2),
        atime: None,
        mtime: None,
    };
    assert!(matches!(ex.call(&root(), op), FsReply::Attr(t) if t.size == 2));
    // GetAttr through the handle.
    let FsReply::Attr(h) = ex.call(
        &root(),
        FsOp::GetAttr {
            node: a.node,
            fh: Some(fh),
        },
    ) else {
        panic!()
    };
    assert_eq!(h.size, 2);
    ex.ok(&root(), FsOp::Flush { fh, owner: 1 }).unwrap();
    ex.release(fh);
    assert_eq!(ex.read(&root(), fh, 0, 1), Err(libc::EBADF));
    assert_eq!(ex.srv.counts().1, 0);
    // O_EXCL on an existing name; O_TRUNC on open.
    assert_eq!(
        ex.create(&root(), ROOT, "new", 0o644, 0, O_RDWR | O_EXCL)
            .unwrap_err(),
        libc::EEXIST
    );
    let (fh, _) = ex.open(&root(), a.node, O_WRONLY | O_TRUNC).unwrap();
    ex.release(fh);
    assert_eq!(std::fs::metadata(ex.path("new")).unwrap().len(), 0);
}

#[test]
fn server_setattr_times_and_mode() {
    let ex = Export::new();
    std::fs::write(ex.path("f"), b"x").unwrap();
    let f = ex.lookup(&root(), ROOT, "f").unwrap();
    let op = FsOp::SetAttr {
        node: f.node,
        fh: None,
        mode: Some(0o600),
        uid: Some(NOBODY),
        gid: Some(NOBODY),
        size: None,
        atime: Some(TimeSet::At(Time {
            secs: 1000,
            nanos: 5,
        })),
        mtime: Some(TimeSet::At(Time {
            secs: 2000,
            nanos: 7,
        })),
    };
    let FsReply::Attr(a) = ex.call(&root(), op) else {
        panic!()
    };
    assert_eq!(a.mode & 0o7777, 0o600);
    assert_eq!((a.uid, a.gid), (NOBODY, NOBODY));
    assert_eq!(
        a.atime,
        Time {
            secs: 1000,
            nanos: 5
        }
    );
    assert_eq!(
        a.mtime,
        Time {
            secs: 2000,
            nanos: 7
        }
    );
    let op = FsOp::SetAttr {
        node: f.node,
        fh: None,
        mode: None,
        uid: None,
        gid: None,
        size: None,
        atime: None,
        mtime: Some(TimeSet::Now),
    };
    // The owner (now nobody) may set times to now.
    let FsReply::Attr(b) = ex.call(&user(NOBODY), op) else {
        panic!()
    };
    assert!(b.mtime.secs > 2000);
    assert_eq!(b.atime, a.atime);
    let bad = FsOp::SetAttr {
        node: f.node,
        fh: None,
        mode: None,
        uid: None,
        gid: None,
        size: None,
        atime: Some(TimeSet::At(Time {
            secs: 1,
            nanos: 2_000_000_000,
        })),
        mtime: None,
    };
    assert_eq!(ex.call(&root(), bad), FsReply::Err(libc::EINVAL));
}

#[test]
fn server_append() {
    let ex = Export::new();
    std::fs::write(ex.path("log"), b"one\n").unwrap();
    let f = ex.lookup(&root(), ROOT, "log").unwrap();
    let (fh, _) = ex.open(&root(), f.node, O_WRONLY | O_APPEND).unwrap();
    ex.write(&root(), fh, 0, b"two\n").unwrap();
    ex.write(&root(), fh, 0, b"three\n").unwrap();
    assert_eq!(std::fs::read(ex.path("log")).unwrap(), b"one\ntwo\nthree\n");
    // Create with O_APPEND too.
    let (_, fh2) = ex
        .create(&root(), ROOT, "log2", 0o644, 0, O_WRONLY | O_APPEND)
        .unwrap();
    ex.write(&root(), fh2, 100, b"a").unwrap();
    ex.write(&root(), fh2, 0, b"b").unwrap();
    assert_eq!(std::fs::read(ex.path("log2")).unwrap(), b"ab");
}

#[test]
fn server_rename_while_open_and_flags() {
    let ex = Export::new();
    std::fs::create_dir(ex.path("d1")).unwrap();
    std::fs::create_dir(ex.path("d2")).unwrap();
    let d1 = ex.lookup(&root(), ROOT, "d1").unwrap();
    let d2 = ex.lookup(&root(), ROOT, "d2").unwrap();
    let (a, fh) = ex.create(&root(), d1.node, "f", 0o644, 0, O_RDWR).unwrap();
    ex.write(&root(), fh, 0, b"before").unwrap();
    let mv = FsOp::Rename {
        parent: d1.node,
        name: bytes("f"),
        new_parent: d2.node,
        new_name: bytes("g"),
        flags: 0,
    };
    ex.ok(&root(), mv).unwrap();
    // The handle and the node still work, and name the moved file.
    ex.write(&root(), fh, 6, b"+after").unwrap();
    assert_eq!(std::fs::read(ex.path("d2/g")).unwrap(), b"before+after");
    assert_eq!(ex.getattr(&root(), a.node).unwrap().size, 12);
    assert_eq!(ex.lookup(&root(), d2.node, "g").unwrap().node, a.node);
    assert_eq!(ex.lookup(&root(), d1.node, "f"), Err(libc::ENOENT));
    // Renamed on the home, behind the server's back: still the same node.
    std::fs::rename(ex.path("d2/g"), ex.path("h")).unwrap();
    assert_eq!(ex.read(&root(), fh, 0, 6).unwrap(), b"before");
    assert_eq!(ex.lookup(&root(), ROOT, "h").unwrap().node, a.node);

    // RENAME_NOREPLACE and RENAME_EXCHANGE.
    std::fs::write(ex.path("x"), b"x").unwrap();
    std::fs::write(ex.path("y"), b"y").unwrap();
    let rn = |flags| FsOp::Rename {
        parent: ROOT,
        name: bytes("x"),
        new_parent: ROOT,
        new_name: bytes("y"),
        flags,
    };
    assert_eq!(
        ex.ok(&root(), rn(libc::RENAME_NOREPLACE)),
        Err(libc::EEXIST)
    );
    ex.ok(&root(), rn(libc::RENAME_EXCHANGE)).unwrap();
    assert_eq!(std::fs::read(ex.path("x")).unwrap(), b"y");
    assert_eq!(std::fs::read(ex.path("y")).unwrap(), b"x");
    assert_eq!(ex.ok(&root(), rn(libc::RENAME_WHITEOUT)), Err(libc::EINVAL));
    ex.ok(&root(), rn(0)).unwrap();
    assert!(!ex.path("x").exists());
}

#[test]
fn server_namespace_ops() {
    let ex = Export::new();
    let mkdir = FsOp::MkDir {
        parent: ROOT,
        name: bytes("dir"),
        mode: 0o777,
        umask: 0o022,
    };
    let FsReply::Entry(d) = ex.call(&root(), mkdir.clone()) else {
        panic!()
    };
    assert_eq!(d.mode, libc::S_IFDIR | 0o755);
    assert_eq!(ex.call(&root(), mkdir), FsReply::Err(libc::EEXIST));
    std::fs::write(ex.path("dir/file"), b"data").unwrap();
    let f = ex.lookup(&root(), d.node, "file").unwrap();

    // Link.
    let link = FsOp::Link {
        node: f.node,
        new_parent: ROOT,
        new_name: bytes("hard"),
    };
    let FsReply::Entry(h) = ex.call(&root(), link) else {
        panic!()
    };
    assert_eq!(h.node, f.node);
    assert_eq!(h.nlink, 2);
    let link_dir = FsOp::Link {
        node: d.node,
        new_parent: ROOT,
        new_name: bytes("dirlink"),
    };
    assert_eq!(ex.call(&root(), link_dir), FsReply::Err(libc::EPERM));

    // Symlink and ReadLink.
    let sym = FsOp::Symlink {
        parent: ROOT,
        name: bytes("sym"),
        target: bytes("dir/file"),
    };
    let FsReply::Entry(s) = ex.call(&root(), sym) else {
        panic!()
    };
    assert_eq!(s.mode & libc::S_IFMT, libc::S_IFLNK);
    assert_eq!(
        ex.call(&root(), FsOp::ReadLink { node: s.node }),
        FsReply::Data(bytes("dir/file").into())
    );
    assert_eq!(
        ex.call(&root(), FsOp::ReadLink { node: f.node }),
        FsReply::Err(libc::EINVAL)
    );
    let empty = FsOp::Symlink {
        parent: ROOT,
        name: bytes("e"),
        target: bytes(""),
    };
    assert_eq!(ex.call(&root(), empty), FsReply::Err(libc::ENOENT));
    let long = FsOp::Symlink {
        parent: ROOT,
        name: bytes("l"),
        target: ByteBuf::from(vec![b'a'; MAX_PATH]),
    };
    assert_eq!(ex.call(&root(), long), FsReply::Err(libc::ENAMETOOLONG));

    // MkNod: a FIFO, and a regular file.
    let fifo = FsOp::MkNod {
        parent: ROOT,
        name: bytes("fifo"),
        mode: libc::S_IFIFO | 0o666,
        rdev: 0,
        umask: 0o022,
    };
    let FsReply::Entry(p) = ex.call(&root(), fifo) else {
        panic!()
    };
    assert_eq!(p.mode, libc::S_IFIFO | 0o644);
    // The server never opens it (the node's kernel does).
    assert_eq!(ex.open(&root(), p.node, O_RDONLY), Err(libc::EOPNOTSUPP));
    let reg = FsOp::MkNod {
        parent: ROOT,
        name: bytes("reg"),
        mode: 0o600,
        rdev: 0,
        umask: 0,
    };
    assert!(matches!(ex.call(&root(), reg), FsReply::Entry(a) if a.mode == libc::S_IFREG | 0o600));
    let dir_nod = FsOp::MkNod {
        parent: ROOT,
        name: bytes("x"),
        mode: libc::S_IFDIR | 0o755,
        rdev: 0,
        umask: 0,
    };
    assert_eq!(ex.call(&root(), dir_nod), FsReply::Err(libc::EINVAL));

    // Unlink, RmDir.
    let rmdir = |name: &str| FsOp::RmDir {
        parent: ROOT,
        name: bytes(name),
    };
    assert_eq!(ex.ok(&root(), rmdir("dir")), Err(libc::ENOTEMPTY));
    ex.ok(
        &root(),
        FsOp::Unlink {
            parent: d.node,
            name: bytes("file"),
        },
    )
    .unwrap();
    ex.ok(
        &root(),
        FsOp::Unlink {
            parent: ROOT,
            name: bytes("hard"),
        },
    )
    .unwrap();
    // The unlinked file's node still answers.
    assert_eq!(ex.getattr(&root(), f.node).unwrap().nlink, 0);
    ex.ok(&root(), rmdir("dir")).unwrap();
    assert_eq!(
        ex.ok(
            &root(),
            FsOp::Unlink {
                parent: ROOT,
                name: bytes("dir")
            }
        ),
        Err(libc::ENOENT)
    );
    assert_eq!(ex.list(&root(), ROOT), ["fifo", "reg", "sym"]);

    // StatFs, Access.
    let FsReply::StatFs(st) = ex.call(&root(), FsOp::StatFs { node: ROOT }) else {
        panic!()
    };
    assert!(st.blocks > 0 && st.bsize > 0 && st.namelen >= 255);
    ex.ok(
        &root(),
        FsOp::Access {
            node: ROOT,
            mask: libc::R_OK | libc::X_OK,
        },
    )
    .unwrap();
    assert_eq!(
        ex.ok(
            &root(),
            FsOp::Access {
                node: ROOT,
                mask: 0o10
            }
        ),
        Err(libc::EINVAL)
    );
}

#[test]
fn server_permissions_are_the_callers() {
    let ex = Export::new();
    std::fs::write(ex.path("secret"), b"root only").unwrap();
    chmod(&ex.path("secret"), 0o600);
    std::fs::create_dir(ex.path("tmp")).unwrap();
    chmod(&ex.path("tmp"), 0o1777);
    std::fs::create_dir(ex.path("closed")).unwrap();
    chmod(&ex.path("closed"), 0o755);
    let nobody = user(NOBODY);

    // A 0600 root file cannot be opened, nor read-checked.
    let s = ex.lookup(&nobody, ROOT, "secret").unwrap();
    assert_eq!(ex.open(&nobody, s.node, O_RDONLY), Err(libc::EACCES));
    assert_eq!(ex.open(&nobody, s.node, O_WRONLY), Err(libc::EACCES));
    assert_eq!(
        ex.ok(
            &nobody,
            FsOp::Access {
                node: s.node,
                mask: libc::R_OK
            }
        ),
        Err(libc::EACCES)
    );
    ex.ok(
        &root(),
        FsOp::Access {
            node: s.node,
            mask: libc::R_OK,
        },
    )
    .unwrap();
    assert!(ex.open(&root(), s.node, O_RDONLY).is_ok());
    // Nor truncated, chmod-ed, chown-ed, renamed over or unlinked.
    let setattr = |mode, uid, size| FsOp::SetAttr {
        node: s.node,
        fh: None,
        mode,
        uid,
        gid: None,
        size,
        atime: None,
        mtime: None,
    };
    assert_eq!(
        ex.call(&nobody, setattr(None, None, Some(0))),
        FsReply::Err(libc::EACCES)
    );
    assert_eq!(
        ex.call(&nobody, setattr(Some(0o666), None, None)),
        FsReply::Err(libc::EPERM)
    );
    assert_eq!(
        ex.call(&nobody, setattr(None, Some(NOBODY), None)),
        FsReply::Err(libc::EPERM)
    );
    assert_eq!(
        ex.ok(
            &nobody,
            FsOp::Unlink {
                parent: ROOT,
                name: bytes("secret")
            }
        ),
        Err(libc::EACCES)
    );
    assert_eq!(std::fs::read(ex.path("secret")).unwrap(), b"root only");

    // No creating in a directory one cannot write.
    let closed = ex.lookup(&nobody, ROOT, "closed").unwrap();
    assert_eq!(
        ex.create(&nobody, closed.node, "f", 0o644, 0, O_WRONLY)
            .unwrap_err(),
        libc::EACCES
    );
    let mkdir = FsOp::MkDir {
        parent: closed.node,
        name: bytes("d"),
        mode: 0o755,
        umask: 0,
    };
    assert_eq!(ex.call(&nobody, mkdir), FsReply::Err(libc::EACCES));

    // Files made in a 1777 directory are the caller's, with its umask.
    let tmp = ex.lookup(&nobody, ROOT, "tmp").unwrap();
    let (a, fh) = ex
        .create(&nobody, tmp.node, "mine", 0o666, 0o027, O_RDWR)
        .unwrap();
    assert_eq!((a.uid, a.gid, a.mode & 0o777), (NOBODY, NOBODY, 0o640));
    ex.write(&nobody, fh, 0, b"x").unwrap();
    let meta = std::fs::metadata(ex.path("tmp/mine")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (NOBODY, NOBODY, 0o640)
    );
    let mkdir = FsOp::MkDir {
        parent: tmp.node,
        name: bytes("sub"),
        mode: 0o777,
        umask: 0o077,
    };
    let FsReply::Entry(d) = ex.call(&nobody, mkdir) else {
        panic!()
    };
    assert_eq!((d.uid, d.mode & 0o777), (NOBODY, 0o700));
    // Its owner may chmod it, but not give it away.
    let chmod_mine = FsOp::SetAttr {
        node: a.node,
        fh: None,
        mode: Some(0o600),
        uid: None,
        gid: None,
        size: None,
        atime: None,
        mtime: None,
    };
    assert!(matches!(ex.call(&nobody, chmod_mine), FsReply::Attr(x) if x.mode & 0o777 == 0o600));
    let give = FsOp::SetAttr {
        node: a.node,
        fh: None,
        mode: None,
        uid: Some(1000),
        gid: None,
        size: None,
        atime: None,
        mtime: None,
    };
    assert_eq!(ex.call(&nobody, give), FsReply::Err(libc::EPERM));
    // Another user cannot remove it from the sticky directory.
    assert_eq!(
        ex.ok(
            &user(1000),
            FsOp::Unlink {
                parent: tmp.node,
                name: bytes("mine")
            }
        ),
        Err(libc::EPERM)
    );

    // Supplementary groups grant access to a group file.
    std::fs::write(ex.path("group"), b"for the group").unwrap();
    std::os::unix::fs::chown(ex.path("group"), Some(0), Some(4242)).unwrap();
    chmod(&ex.path("group"), 0o640);
    let g = ex.lookup(&root(), ROOT, "group").unwrap();
    assert_eq!(ex.open(&nobody, g.node, O_RDONLY), Err(libc::EACCES));
    let member = Cred {
        uid: NOBODY,
        gid: NOBODY,
        groups: vec![4242],
    };
    let (fh, _) = ex.open(&member, g.node, O_RDONLY).unwrap();
    assert_eq!(ex.read(&member, fh, 0, 100).unwrap(), b"for the group");
    assert_eq!(ex.open(&member, g.node, O_RDWR), Err(libc::EACCES));
    // The primary group too.
    let primary = Cred {
        uid: NOBODY,
        gid: 4242,
        groups: vec![],
    };
    assert!(ex.open(&primary, g.node, O_RDONLY).is_ok());
}

#[test]
fn server_search_rights_on_the_path() {
    // Checked afresh each time: the modes change below.
    let ex = Export::with(|l| l.search_cache = Duration::ZERO);
    std::fs::create_dir_all(ex.path("private/sub")).unwrap();
    std::fs::write(ex.path("private/sub/open"), b"readable").unwrap();
    chmod(&ex.path("private/sub/open"), 0o644);
    chmod(&ex.path("private"), 0o700);
    // Root looked the file up (so its node is known) ...
    let sub = ex.walk("private/sub");
    let f = ex.walk("private/sub/open");
    // ... but another user may not reach it: "private" is not searchable.
    let nobody = user(NOBODY);
    assert_eq!(ex.lookup(&nobody, ROOT, "private").map(|_| ()), Ok(()));
    assert_eq!(ex.lookup(&nobody, sub.node, "open"), Err(libc::EACCES));
    assert_eq!(ex.open(&nobody, f.node, O_RDONLY), Err(libc::EACCES));
    assert_eq!(ex.getattr(&nobody, f.node), Err(libc::EACCES));
    assert_eq!(ex.getattr(&nobody, sub.node), Err(libc::EACCES));
    assert_eq!(
        ex.call(&nobody, FsOp::OpenDir { node: sub.node }),
        FsReply::Err(libc::EACCES)
    );
    chmod(&ex.path("private"), 0o711);
    let (fh, _) = ex.open(&nobody, f.node, O_RDONLY).unwrap();
    assert_eq!(ex.read(&nobody, fh, 0, 8).unwrap(), b"readable");
    // Once open, a file stays readable (as a local descriptor would).
    chmod(&ex.path("private"), 0o700);
    assert_eq!(ex.read(&nobody, fh, 0, 8).unwrap(), b"readable");
    // Moved out of the export on the home: unreachable for users.
    let outside = PathBuf::from(format!("{}-outside", ex.dir.display()));
    std::fs::create_dir(&outside).unwrap();
    struct Gone(PathBuf);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _gone = Gone(outside.clone());
    std::fs::create_dir(ex.path("pub")).unwrap();
    std::fs::write(ex.path("pub/f"), b"f").unwrap();
    let pubf = ex.walk("pub/f");
    assert!(ex.getattr(&nobody, pubf.node).is_ok());
    std::fs::rename(ex.path("pub"), outside.join("pub")).unwrap();
    assert_eq!(ex.getattr(&nobody, pubf.node), Err(libc::EACCES));
}

#[test]
fn server_search_checks_are_remembered_briefly() {
    let ex = Export::with(|l| l.search_cache = Duration::from_millis(200));
    std::fs::create_dir_all(ex.path("d/e")).unwrap();
    std::fs::write(ex.path("d/e/f"), b"f").unwrap();
    let f = ex.walk("d/e/f");
    let nobody = user(NOBODY);
    assert!(ex.getattr(&nobody, f.node).is_ok());
    chmod(&ex.path("d"), 0o700);
    // Within the cache time the earlier answer stands (for this user
    // only); after it the new mode counts.
    assert!(ex.getattr(&nobody, f.node).is_ok());
    assert_eq!(ex.getattr(&user(1000), f.node), Err(libc::EACCES));
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(ex.getattr(&nobody, f.node), Err(libc::EACCES));
}

#[test]
fn server_rejects_bad_names() {
    let ex = Export::new();
    std::fs::create_dir(ex.path("d")).unwrap();
    for bad in ["", ".", "..", "/", "a/b", "/etc", "../x", "d/.."] {
        assert_eq!(ex.lookup(&root(), ROOT, bad), Err(libc::EINVAL), "{bad:?}");
        assert_eq!(
            ex.create(&root(), ROOT, bad, 0o644, 0, O_RDWR).unwrap_err(),
            libc::EINVAL
        );
    }
    let nul = FsOp::Lookup {
        parent: ROOT,
        name: ByteBuf::from(b"a\0b".to_vec()),
    };
    assert_eq!(ex.call(&root(), nul), FsReply::Err(libc::EINVAL));
    let long = "x".repeat(MAX_NAME + 1);
    assert_eq!(ex.lookup(&root(), ROOT, &long), Err(libc::ENAMETOOLONG));
    assert_eq!(
        ex.lookup(&root(), ROOT, &"x".repeat(MAX_NAME)),
        Err(libc::ENOENT)
    );
    let rename = FsOp::Rename {
        parent: ROOT,
        name: bytes("d"),
        new_parent: ROOT,
        new_name: bytes("../escaped"),
        flags: 0,
    };
    assert_eq!(ex.call(&root(), rename), FsReply::Err(libc::EINVAL));
    // Odd bytes that are legal in names work.
    let odd = FsOp::MkDir {
        parent: ROOT,
        name: ByteBuf::from(b"\xff\x01 odd\n".to_vec()),
        mode: 0o755,
        umask: 0,
    };
    assert!(matches!(ex.call(&root(), odd), FsReply::Entry(_)));
}

#[test]
fn server_does_not_follow_symlinks_out() {
    let ex = Export::new();
    let outside = PathBuf::from(format!("{}-target", ex.dir.display()));
    std::fs::create_dir(&outside).unwrap();
    struct Gone(PathBuf);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _gone = Gone(outside.clone());
    std::fs::write(outside.join("victim"), b"outside").unwrap();
    std::os::unix::fs::symlink(&outside, ex.path("out")).unwrap();
    std::os::unix::fs::symlink(outside.join("victim"), ex.path("vlink")).unwrap();
    std::os::unix::fs::symlink("..", ex.path("up")).unwrap();

    let out = ex.lookup(&root(), ROOT, "out").unwrap();
    assert_eq!(out.mode & libc::S_IFMT, libc::S_IFLNK);
    // Looking through the link is not the server's business.
    assert_eq!(ex.lookup(&root(), out.node, "victim"), Err(libc::ENOTDIR));
    let up = ex.lookup(&root(), ROOT, "up").unwrap();
    assert_eq!(ex.lookup(&root(), up.node, "etc"), Err(libc::ENOTDIR));
    assert_eq!(
        ex.call(&root(), FsOp::OpenDir { node: out.node }),
        FsReply::Err(libc::ENOTDIR)
    );
    let v = ex.lookup(&root(), ROOT, "vlink").unwrap();
    assert_eq!(ex.open(&root(), v.node, O_RDWR), Err(libc::ELOOP));
    // Creating over a link does not write through it.
    assert!(ex
        .create(&root(), ROOT, "vlink", 0o644, 0, O_RDWR | O_TRUNC)
        .is_err());
    let mk = FsOp::MkDir {
        parent: out.node,
        name: bytes("new"),
        mode: 0o755,
        umask: 0,
    };
    assert_eq!(ex.call(&root(), mk), FsReply::Err(libc::ENOTDIR));
    let rename = FsOp::Rename {
        parent: out.node,
        name: bytes("victim"),
        new_parent: ROOT,
        new_name: bytes("stolen"),
        flags: 0,
    };
    assert_eq!(ex.call(&root(), rename), FsReply::Err(libc::ENOTDIR));
    // Attributes of the link itself, not its target.
    let op = FsOp::SetAttr {
        node: v.node,
        fh: None,
        mode: None,
        uid: None,
        gid: None,
        size: Some(0),
        atime: None,
        mtime: None,
    };
    assert_eq!(ex.call(&root(), op), FsReply::Err(libc::EINVAL));
    let xa = FsOp::SetXattr {
        node: v.node,
        name: bytes("user.x"),
        value: bytes("1"),
        flags: 0,
    };
    assert!(matches!(ex.call(&root(), xa), FsReply::Err(_)));
    let link = FsOp::Link {
        node: v.node,
        new_parent: ROOT,
        new_name: bytes("vlink2"),
    };
    assert!(
        matches!(ex.call(&root(), link), FsReply::Entry(a) if a.mode & libc::S_IFMT == libc::S_IFLNK)
    );
    assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"outside");
    assert!(std::fs::symlink_metadata(ex.path("vlink2"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn server_unknown_ids_are_errors() {
    let ex = Export::new();
    let r = root();
    assert_eq!(ex.getattr(&r, 999), Err(libc::ESTALE));
    assert_eq!(ex.getattr(&r, 0), Err(libc::ESTALE));
    assert_eq!(ex.lookup(&r, 999, "x"), Err(libc::ESTALE));
    assert_eq!(ex.open(&r, 999, O_RDONLY), Err(libc::ESTALE));
    assert_eq!(ex.read(&r, 999, 0, 10), Err(libc::EBADF));
    assert_eq!(ex.write(&r, 999, 0, b"x"), Err(libc::EBADF));
    assert_eq!(
        ex.ok(
            &r,
            FsOp::Release {
                fh: 999,
                flock_owner: None
            }
        ),
        Err(libc::EBADF)
    );
    assert_eq!(ex.ok(&r, FsOp::ReleaseDir { fh: 999 }), Err(libc::EBADF));
    assert_eq!(
        ex.ok(&r, FsOp::Flush { fh: 999, owner: 1 }),
        Err(libc::EBADF)
    );
    assert_eq!(
        ex.call(&r, FsOp::ReadDir { fh: 999, offset: 0 }),
        FsReply::Err(libc::EBADF)
    );
    assert_eq!(
        ex.ok(
            &r,
            FsOp::Forget {
                nodes: vec![(999, 1)]
            }
        ),
        Ok(())
    );
    // A directory handle is not a file handle, and the reverse.
    let FsReply::Opened { fh, .. } = ex.call(&r, FsOp::OpenDir { node: ROOT }) else {
        panic!()
    };
    assert_eq!(ex.read(&r, fh, 0, 10), Err(libc::EISDIR));
    let (_, ffh) = ex.create(&r, ROOT, "f", 0o644, 0, O_RDWR).unwrap();
    assert_eq!(
        ex.call(&r, FsOp::ReadDir { fh: ffh, offset: 0 }),
        FsReply::Err(libc::ENOTDIR)
    );
    // Sizes beyond the protocol's.
    assert_eq!(ex.read(&r, ffh, 0, MAX_IO + 1), Err(libc::EINVAL));
    assert_eq!(
        ex.write(&r, ffh, 0, &vec![0; MAX_IO as usize + 1]),
        Err(libc::EINVAL)
    );
    assert_eq!(ex.read(&r, ffh, u64::MAX, 10), Err(libc::EINVAL));
    assert_eq!(ex.read(&r, ffh, 0, MAX_IO).unwrap(), b"");
}

#[test]
fn server_handle_limit() {
    let ex = Export::with(|c| c.max_handles = 2);
    std::fs::write(ex.path("f"), b"x").unwrap();
    let f = ex.lookup(&root(), ROOT, "f").unwrap();
    let (a, _) = ex.open(&root(), f.node, O_RDONLY).unwrap();
    ex.open(&root(), f.node, O_RDONLY).unwrap();
    assert_eq!(ex.open(&root(), f.node, O_RDONLY), Err(libc::EMFILE));
    assert_eq!(
        ex.call(&root(), FsOp::OpenDir { node: ROOT }),
        FsReply::Err(libc::EMFILE)
    );
    assert_eq!(
        ex.create(&root(), ROOT, "g", 0o644, 0, O_RDWR).unwrap_err(),
        libc::EMFILE
    );
    // The failed create leaves no node behind.
    assert_eq!(ex.srv.counts(), (2, 2));
    ex.release(a);
    assert!(ex.open(&root(), f.node, O_RDONLY).is_ok());
}

#[test]
fn server_keep_cache() {
    let ex = Export::new();
    std::fs::write(ex.path("lib.so"), b"code").unwrap();
    let f = ex.lookup(&root(), ROOT, "lib.so").unwrap();
    let (a, keep) = ex.open(&root(), f.node, O_RDONLY).unwrap();
    assert!(!keep, "nothing cached at the first open");
    let (b, keep) = ex.open(&root(), f.node, O_RDONLY).unwrap();
    assert!(keep, "unchanged file");
    std::thread::sleep(Duration::from_millis(10));
    std::fs::write(ex.path("lib.so"), b"new code").unwrap();
    let (_, keep) = ex.open(&root(), f.node, O_RDONLY).unwrap();
    assert!(!keep, "changed file");
    let (_, keep) = ex.open(&root(), f.node, O_RDONLY).unwrap();
    assert!(keep);
    for fh in [a, b] {
        ex.release(fh);
    }
}

#[test]
fn server_closes_and_reopens_node_descriptors() {
    let ex = Export::with(|l| l.max_open_nodes = 4);
    std::fs::create_dir(ex.path("d")).unwrap();
    let d = ex.lookup(&root(), ROOT, "d").unwrap();
    let mut files = Vec::new();
    for i in 0..40 {
        let name = format!("f{i}");
        std::fs::write(ex.path(&format!("d/{name}")), name.as_bytes()).unwrap();
        chmod(&ex.path(&format!("d/{name}")), 0o644);
        files.push((name.clone(), ex.lookup(&root(), d.node, &name).unwrap()));
    }
    std::os::unix::fs::symlink("f0", ex.path("d/link")).unwrap();
    let link = ex.lookup(&root(), d.node, "link").unwrap();
    let open_fds = || super::lock(&ex.srv.nodes).open_fds;
    assert!(open_fds() <= 4, "{} node descriptors open", open_fds());
    // Every node still answers, as another user too, and keeps its id.
    let nobody = user(NOBODY);
    for (name, a) in &files {
        assert_eq!(ex.getattr(&nobody, a.node).unwrap().node, a.node);
        let (fh, _) = ex.open(&nobody, a.node, O_RDONLY).unwrap();
        assert_eq!(ex.read(&nobody, fh, 0, 10).unwrap(), name.as_bytes());
        ex.ok(
            &nobody,
            FsOp::Release {
                fh,
                flock_owner: None,
            },
        )
        .unwrap();
        assert_eq!(ex.lookup(&root(), d.node, name).unwrap().node, a.node);
    }
    assert_eq!(
        ex.call(&root(), FsOp::ReadLink { node: link.node }),
        FsReply::Data(bytes("f0").into())
    );
    // Renamed while closed: still the same file.
    let (_, first) = &files[0];
    std::fs::rename(ex.path("d/f0"), ex.path("moved")).unwrap();
    for (_, a) in &files[1..] {
        ex.getattr(&root(), a.node).unwrap();
    }
    assert_eq!(ex.getattr(&root(), first.node).unwrap().size, 2);
    // An open file keeps its descriptor; a deleted, closed one is stale.
    let (_, second) = &files[1];
    let (fh, _) = ex.open(&root(), second.node, O_RDWR).unwrap();
    let (_, third) = &files[2];
    std::fs::remove_file(ex.path("d/f1")).unwrap();
    std::fs::remove_file(ex.path("d/f2")).unwrap();
    for (_, a) in &files[3..] {
        ex.getattr(&root(), a.node).unwrap();
    }
    assert_eq!(ex.getattr(&root(), second.node).unwrap().nlink, 0);
    assert_eq!(ex.read(&root(), fh, 0, 10).unwrap(), b"f1");
    assert_eq!(ex.getattr(&root(), third.node), Err(libc::ESTALE));
    assert!(open_fds() <= 4, "{} node descriptors open", open_fds());
}

fn lock(start: u64, end: u64, typ: i32) -> Lock {
    Lock {
        start,
        end,
        typ,
        pid: 0,
    }
}

#[test]
fn server_posix_locks() {
    let ex = Arc::new(Export::new());
    let (f, fh1) = ex
        .create(&root(), ROOT, "locked", 0o666, 0, O_RDWR)
        .unwrap();
    let (fh2, _) = ex.open(&root(), f.node, O_RDWR).unwrap();
    let (fh3, _) = ex.open(&root(), f.node, O_RDWR).unwrap();
    let setlk = |fh, owner, l, wait| FsOp::SetLk {
        fh,
        owner,
        lock: l,
        wait,
    };
    // Owner A write-locks 0..=99.
    ex.ok(&root(), setlk(fh1, 0xA, lock(0, 99, 1), false))
        .unwrap();
    // Owner B conflicts, through another handle.
    assert_eq!(
        ex.ok(&root(), setlk(fh2, 0xB, lock(50, 60, 0), false)),
        Err(libc::EAGAIN)
    );
    let FsReply::Lock(held) = ex.call(
        &root(),
        FsOp::GetLk {
            fh: fh2,
            owner: 0xB,
            lock: lock(50, 60, 1),
        },
    ) else {
        panic!()
    };
    assert_eq!((held.start, held.end, held.typ), (0, 99, 1));
    // B may lock elsewhere; A's own further locks do not conflict with A's,
    // even through another handle of the same file.
    ex.ok(&root(), setlk(fh2, 0xB, lock(100, u64::MAX, 0), false))
        .unwrap();
    ex.ok(&root(), setlk(fh3, 0xA, lock(10, 20, 0), false))
        .unwrap();
    let FsReply::Lock(free) = ex.call(
        &root(),
        FsOp::GetLk {
            fh: fh1,
            owner: 0xA,
            lock: lock(0, 50, 1),
        },
    ) else {
        panic!()
    };
    assert_eq!(free.typ, 2, "no conflict for the owner itself");
    // The home's own processes see the locks (OFD and POSIX locks conflict).
    let home = std::fs::OpenOptions::new()
        .write(true)
        .open(ex.path("locked"))
        .unwrap();
    // SAFETY: an all-zero flock is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = 5;
    fl.l_len = 1;
    // SAFETY: `fl` is a valid, writable flock.
    let rc = unsafe {
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&home),
            libc::F_SETLK,
            &mut fl,
        )
    };
    assert_eq!(rc, -1);
    drop(home);

    // A waiting request is granted when A unlocks.
    let ex2 = ex.clone();
    let waiter = std::thread::spawn(move || ex2.ok(&root(), setlk(fh2, 0xB, lock(0, 9, 1), true)));
    std::thread::sleep(Duration::from_millis(50));
    assert!(!waiter.is_finished());
    ex.ok(&root(), setlk(fh1, 0xA, lock(0, u64::MAX, 2), false))
        .unwrap();
    assert_eq!(waiter.join().unwrap(), Ok(()));

    // Closing (Flush) by B drops B's locks.
    assert_eq!(
        ex.ok(&root(), setlk(fh1, 0xA, lock(0, 9, 0), false)),
        Err(libc::EAGAIN)
    );
    ex.ok(
        &root(),
        FsOp::Flush {
            fh: fh2,
            owner: 0xB,
        },
    )
    .unwrap();
    ex.ok(&root(), setlk(fh1, 0xA, lock(0, 9, 1), false))
        .unwrap();

    // A waiter gives up when its owner closes the file.
    let ex2 = ex.clone();
    let waiter = std::thread::spawn(move || ex2.ok(&root(), setlk(fh3, 0xC, lock(0, 0, 1), true)));
    std::thread::sleep(Duration::from_millis(50));
    ex.ok(
        &root(),
        FsOp::Flush {
            fh: fh3,
            owner: 0xC,
        },
    )
    .unwrap();
    assert_eq!(waiter.join().unwrap(), Err(libc::EINTR));
    // And at shutdown.
    let ex2 = ex.clone();
    let waiter = std::thread::spawn(move || ex2.ok(&root(), setlk(fh3, 0xD, lock(0, 0, 1), true)));
    std::thread::sleep(Duration::from_millis(50));
    ex.srv.shutdown();
    assert_eq!(waiter.join().unwrap(), Err(libc::EINTR));

    // Bad locks.
    assert_eq!(
        ex.ok(&root(), setlk(fh1, 1, lock(10, 5, 1), false)),
        Err(libc::EINVAL)
    );
    assert_eq!(
        ex.ok(&root(), setlk(fh1, 1, lock(0, 1, 7), false)),
        Err(libc::EINVAL)
    );
    assert_eq!(
        ex.ok(
            &root(),
            setlk(fh1, 1, lock(u64::MAX - 1, u64::MAX, 1), false)
        ),
        Err(libc::EINVAL)
    );
}

#[test]
fn server_lock_wait_limit_and_read_only_locks() {
    let ex = Export::with(|c| c.lock_wait = Some(Duration::from_millis(30)));
    std::fs::write(ex.path("f"), b"x").unwrap();
    chmod(&ex.path("f"), 0o644);
    let f = ex.lookup(&root(), ROOT, "f").unwrap();
    let (rw, _) = ex.open(&root(), f.node, O_RDWR).unwrap();
    let nobody = user(NOBODY);
    let (ro, _) = ex.open(&nobody, f.node, O_RDONLY).unwrap();
    let setlk = |fh, owner, l, wait| FsOp::SetLk {
        fh,
        owner,
        lock: l,
        wait,
    };
    // A read lock through a read-only handle of a user who cannot write.
    ex.ok(&nobody, setlk(ro, 1, lock(0, 0, 0), false)).unwrap();
    assert_eq!(
        ex.ok(&nobody, setlk(ro, 1, lock(0, 0, 1), false)),
        Err(libc::EBADF)
    );
    let start = Instant::now();
    assert_eq!(
        ex.ok(&root(), setlk(rw, 2, lock(0, 0, 1), true)),
        Err(libc::EAGAIN)
    );
    assert!(start.elapsed() >= Duration::from_millis(30));
}

#[test]
fn server_flock() {
    let ex = Arc::new(Export::with(|c| c.lock_wait = Some(Duration::from_secs(5))));
    let (f, fh1) = ex.create(&root(), ROOT, "f", 0o644, 0, O_RDWR).unwrap();
    let (fh2, _) = ex.open(&root(), f.node, O_RDONLY).unwrap();
    let flock = |fh, op| FsOp::Flock { fh, owner: fh, op };
    ex.ok(&root(), flock(fh1, libc::LOCK_EX | libc::LOCK_NB))
        .unwrap();
    assert_eq!(
        ex.ok(&root(), flock(fh2, libc::LOCK_SH | libc::LOCK_NB)),
        Err(libc::EWOULDBLOCK)
    );
    let ex2 = ex.clone();
    let waiter = std::thread::spawn(move || ex2.ok(&root(), flock(fh2, libc::LOCK_SH)));
    std::thread::sleep(Duration::from_millis(30));
    ex.ok(&root(), flock(fh1, libc::LOCK_UN)).unwrap();
    assert_eq!(waiter.join().unwrap(), Ok(()));
    assert_eq!(
        ex.ok(&root(), flock(fh1, libc::LOCK_EX | libc::LOCK_NB)),
        Err(libc::EWOULDBLOCK)
    );
    // Releasing the handle releases its flock.
    ex.release(fh2);
    ex.ok(&root(), flock(fh1, libc::LOCK_EX | libc::LOCK_NB))
        .unwrap();
    assert_eq!(ex.ok(&root(), flock(fh1, 0x40)), Err(libc::EINVAL));
}

#[test]
fn server_fallocate_lseek_copy_file_range() {
    let ex = Export::new();
    let (_, a) = ex.create(&root(), ROOT, "a", 0o644, 0, O_RDWR).unwrap();
    let (_, b) = ex.create(&root(), ROOT, "b", 0o644, 0, O_RDWR).unwrap();
    ex.ok(
        &root(),
        FsOp::Fallocate {
            fh: a,
            offset: 0,
            length: 1 << 20,
            mode: 0,
        },
    )
    .unwrap();
    assert_eq!(std::fs::metadata(ex.path("a")).unwrap().len(), 1 << 20);
    ex.write(&root(), b, 1 << 20, b"data").unwrap();
    let FsReply::Offset(data) = ex.call(
        &root(),
        FsOp::Lseek {
            fh: b,
            offset: 0,
            whence: libc::SEEK_DATA,
        },
    ) else {
        panic!()
    };
    assert!(data > 0 && data <= 1 << 20, "{data}");
    let FsReply::Offset(hole) = ex.call(
        &root(),
        FsOp::Lseek {
            fh: b,
            offset: 0,
            whence: libc::SEEK_HOLE,
        },
    ) else {
        panic!()
    };
    assert_eq!(hole, 0);
    assert_eq!(
        ex.call(
            &root(),
            FsOp::Lseek {
                fh: b,
                offset: 0,
                whence: libc::SEEK_END
            }
        ),
        FsReply::Err(libc::EINVAL)
    );
    ex.write(&root(), a, 0, b"copy me").unwrap();
    let op = FsOp::CopyFileRange {
        fh_in: a,
        offset_in: 0,
        fh_out: b,
        offset_out: 3,
        length: 7,
    };
    assert_eq!(ex.call(&root(), op), FsReply::Written(7));
    assert_eq!(ex.read(&root(), b, 0, 10).unwrap(), b"\0\0\0copy me");
}

#[test]
fn server_xattrs() {
    let ex = Export::new();
    std::fs::write(ex.path("f"), b"x").unwrap();
    let f = ex.lookup(&root(), ROOT, "f").unwrap();
    let set = |name: &str, value: &str, flags| FsOp::SetXattr {
        node: f.node,
        name: bytes(name),
        value: bytes(value),
        flags,
    };
    ex.ok(&root(), set("user.colour", "blue", 0)).unwrap();
    assert_eq!(
        ex.ok(&root(), set("user.colour", "red", libc::XATTR_CREATE)),
        Err(libc::EEXIST)
    );
    let get = |name: &str, size| FsOp::GetXattr {
        node: f.node,
        name: bytes(name),
        size,
    };
    assert_eq!(ex.call(&root(), get("user.colour", 0)), FsReply::Size(4));
    assert_eq!(
        ex.call(&root(), get("user.colour", 100)),
        FsReply::Data(bytes("blue").into())
    );
    assert_eq!(
        ex.call(&root(), get("user.colour", 2)),
        FsReply::Err(libc::ERANGE)
    );
    assert_eq!(
        ex.call(&root(), get("user.none", 100)),
        FsReply::Err(libc::ENODATA)
    );
    assert_eq!(ex.call(&root(), get("", 100)), FsReply::Err(libc::ERANGE));
    let FsReply::Size(n) = ex.call(
        &root(),
        FsOp::ListXattr {
            node: f.node,
            size: 0,
        },
    ) else {
        panic!()
    };
    let FsReply::Data(list) = ex.call(
        &root(),
        FsOp::ListXattr {
            node: f.node,
            size: n,
        },
    ) else {
        panic!()
    };
    assert!(list.split(|&b| b == 0).any(|n| n == b"user.colour"));
    // Others may read a 0644 file's user attributes, not change them; the
    // trusted namespace is root's alone (the server's capabilities are not
    // lent to users).
    let nobody = user(NOBODY);
    assert_eq!(
        ex.call(&nobody, get("user.colour", 100)),
        FsReply::Data(bytes("blue").into())
    );
    assert_eq!(
        ex.ok(&nobody, set("user.colour", "red", 0)),
        Err(libc::EACCES)
    );
    ex.ok(&root(), set("trusted.t", "1", 0)).unwrap();
    assert_eq!(
        ex.call(&nobody, get("trusted.t", 100)),
        FsReply::Err(libc::ENODATA)
    );
    std::os::unix::fs::chown(ex.path("f"), Some(NOBODY), Some(NOBODY)).unwrap();
    assert_eq!(ex.ok(&nobody, set("trusted.u", "1", 0)), Err(libc::EPERM));
    // File capabilities (a valid v2 value granting CAP_SYS_ADMIN) need
    // CAP_SETFCAP, which a user's request does not have.
    let mut caps = 0x0200_0000u32.to_le_bytes().to_vec();
    caps.extend((1u32 << 21).to_le_bytes());
    caps.extend([0; 12]);
    let fcaps = FsOp::SetXattr {
        node: f.node,
        name: bytes("security.capability"),
        value: ByteBuf::from(caps),
        flags: 0,
    };
    assert_eq!(ex.ok(&nobody, fcaps), Err(libc::EPERM));
    ex.ok(&nobody, set("user.mine", "ok", 0)).unwrap();
    ex.ok(
        &nobody,
        FsOp::RemoveXattr {
            node: f.node,
            name: bytes("user.mine"),
        },
    )
    .unwrap();
    assert_eq!(
        ex.ok(
            &nobody,
            FsOp::RemoveXattr {
                node: f.node,
                name: bytes("user.mine")
            }
        ),
        Err(libc::ENODATA)
    );
    let big = FsOp::SetXattr {
        node: f.node,
        name: bytes("user.big"),
        value: ByteBuf::from(vec![0; XATTR_MAX + 1]),
        flags: 0,
    };
    assert_eq!(ex.call(&root(), big), FsReply::Err(libc::E2BIG));
}

#[test]
fn server_many_threads_many_users() {
    let ex = Arc::new(Export::new());
    std::fs::create_dir(ex.path("shared")).unwrap();
    chmod(&ex.path("shared"), 0o1777);
    let dir = ex.lookup(&root(), ROOT, "shared").unwrap().node;
    let threads: Vec<_> = (0..8u32)
        .map(|t| {
            let ex = ex.clone();
            std::thread::spawn(move || {
                let me = user(20000 + t);
                for i in 0..50 {
                    let name = format!("t{t}-{i}");
                    let (a, fh) = ex.create(&me, dir, &name, 0o600, 0o022, O_RDWR).unwrap();
                    assert_eq!(a.uid, 20000 + t);
                    ex.write(&me, fh, 0, name.as_bytes()).unwrap();
                    assert_eq!(ex.read(&me, fh, 0, 100).unwrap(), name.as_bytes());
                    ex.ok(
                        &me,
                        FsOp::Release {
                            fh,
                            flock_owner: None,
                        },
                    )
                    .unwrap();
                    // Another user's private file stays closed.
                    if i > 0 {
                        let other = format!("t{}-{}", (t + 1) % 8, i - 1);
                        if let Ok(o) = ex.lookup(&me, dir, &other) {
                            assert_eq!(ex.open(&me, o.node, O_RDONLY), Err(libc::EACCES));
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(ex.list(&root(), dir).len(), 400);
}

/// A small deterministic random generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize].clone()
    }

    /// An id from `real` most of the time, else a made-up one.
    fn id(&mut self, real: &[u64], bogus: &[u64]) -> u64 {
        if real.is_empty() || self.below(5) == 0 {
            self.pick(bogus)
        } else {
            self.pick(real)
        }
    }

    /// Mostly small numbers, sometimes extreme ones.
    fn num(&mut self) -> u64 {
        match self.below(8) {
            0 => u64::MAX - self.below(3),
            1 => i64::MAX as u64 + self.below(3),
            2 => self.next(),
            _ => self.below(5000),
        }
    }

    /// A write's size: mostly small, sometimes beyond MAX_IO.
    fn write_len(&mut self) -> usize {
        let big = self.below(50) == 0;
        self.below(if big { 300_000 } else { 100 }) as usize
    }

    /// A length that cannot fill the disk: small, or too big to be taken.
    fn len(&mut self) -> u64 {
        if self.below(6) == 0 {
            u64::MAX - self.below(3)
        } else {
            self.below(1 << 20)
        }
    }
}

#[test]
fn server_fuzz_never_panics() {
    let ex = Export::with(|c| {
        c.lock_wait = Some(Duration::from_millis(5));
        c.max_handles = 64;
        c.max_open_nodes = 8;
    });
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let names: Vec<ByteBuf> = [
        &b"a"[..],
        b"b",
        b"c",
        b"dir",
        b"",
        b".",
        b"..",
        b"/",
        b"a/b",
        b"x\0y",
        b"\xff\xfe",
        &[b'n'; 256],
        &[b'm'; 255],
    ]
    .iter()
    .map(|n| ByteBuf::from(n.to_vec()))
    .collect();
    let creds = [
        root(),
        user(NOBODY),
        Cred {
            uid: 1000,
            gid: 1000,
            groups: vec![0, 4242],
        },
    ];
    // Real ids come first in these lists; made-up ones are picked a fifth
    // of the time.
    let mut known: Vec<u64> = vec![ROOT];
    let bogus = [0, 2, 3, 77, u64::MAX];
    let mut handles: Vec<u64> = vec![];
    let mut successes = 0u32;
    let mut errors = HashMap::new();
    for round in 0..30_000u32 {
        let node = rng.id(&known, &bogus);
        let fh = rng.id(&handles, &bogus);
        let name = rng.pick(&names);
        let op = match rng.below(36) {
            0 => FsOp::Lookup { parent: node, name },
            1 => FsOp::Forget {
                nodes: vec![(node, rng.below(3))],
            },
            2 => FsOp::GetAttr {
                node,
                fh: (rng.below(2) == 0).then_some(fh),
            },
            3 => FsOp::SetAttr {
                node,
                fh: (rng.below(2) == 0).then_some(fh),
                mode: (rng.below(2) == 0).then(|| rng.next() as u32),
                uid: (rng.below(4) == 0).then(|| rng.pick(&[0, NOBODY, 1000, u32::MAX])),
                gid: (rng.below(4) == 0).then(|| rng.pick(&[0, NOBODY, 1000, u32::MAX])),
                size: (rng.below(3) == 0).then(|| rng.len()),
                atime: rng.pick(&[
                    None,
                    Some(TimeSet::Now),
                    Some(TimeSet::At(Time {
                        secs: -5,
                        nanos: 2_000_000_000,
                    })),
                ]),
                mtime: rng.pick(&[
                    None,
                    Some(TimeSet::Now),
                    Some(TimeSet::At(Time {
                        secs: i64::MAX,
                        nanos: 0,
                    })),
                ]),
            },
            4 => FsOp::ReadLink { node },
            5 => FsOp::MkNod {
                parent: node,
                name,
                mode: rng.pick(&[
                    libc::S_IFIFO,
                    libc::S_IFREG,
                    libc::S_IFSOCK,
                    libc::S_IFCHR,
                    0o170000,
                    0,
                ]) | (rng.next() as u32 & 0o7777),
                rdev: rng.next() as u32,
                umask: rng.next() as u32,
            },
            6 => FsOp::MkDir {
                parent: node,
                name,
                mode: rng.next() as u32,
                umask: rng.next() as u32,
            },
            7 => FsOp::Unlink { parent: node, name },
            8 => FsOp::RmDir { parent: node, name },
            9 => FsOp::Symlink {
                parent: node,
                name,
                target: rng.pick(&[
                    bytes("/etc/passwd"),
                    bytes(".."),
                    bytes(""),
                    ByteBuf::from(vec![b'l'; 5000]),
                ]),
            },
            10 => FsOp::Rename {
                parent: node,
                name,
                new_parent: rng.id(&known, &bogus),
                new_name: rng.pick(&names),
                flags: rng.pick(&[0, 1, 2, 3, 4, u32::MAX]),
            },
            11 => FsOp::Link {
                node,
                new_parent: rng.id(&known, &bogus),
                new_name: name,
            },
            12 | 13 => FsOp::Open {
                node,
                flags: rng.next() as i32,
            },
            14 | 15 => FsOp::Create {
                parent: node,
                name,
                mode: rng.next() as u32,
                umask: rng.next() as u32,
                flags: rng.next() as i32,
            },
            16 | 17 => FsOp::Read {
                fh,
                offset: rng.num(),
                size: rng.num() as u32,
            },
            18 | 19 => FsOp::Write {
                fh,
                offset: rng.num(),
                data: ByteBuf::from(vec![b'w'; rng.write_len()]),
            },
            20 => FsOp::Flush {
                fh,
                owner: rng.below(3),
            },
            21 => FsOp::Release {
                fh,
                flock_owner: None,
            },
            22 => FsOp::Fsync {
                fh,
                datasync: rng.below(2) == 0,
            },
            23 => FsOp::OpenDir { node },
            24 => FsOp::ReadDir {
                fh,
                offset: rng.num(),
            },
            25 => FsOp::ReleaseDir { fh },
            26 => FsOp::StatFs { node },
            27 => FsOp::Access {
                node,
                mask: rng.next() as i32 & 0xf,
            },
            28 => FsOp::GetLk {
                fh,
                owner: rng.below(3),
                lock: Lock {
                    start: rng.num(),
                    end: rng.num(),
                    typ: rng.below(4) as i32,
                    pid: 0,
                },
            },
            29 => FsOp::SetLk {
                fh,
                owner: rng.below(3),
                lock: Lock {
                    start: rng.num(),
                    end: rng.num(),
                    typ: rng.below(4) as i32,
                    pid: 0,
                },
                wait: rng.below(2) == 0,
            },
            30 => FsOp::Flock {
                fh,
                owner: 0,
                op: rng.below(16) as i32,
            },
            31 => FsOp::Fallocate {
                fh,
                offset: rng.len(),
                length: rng.len(),
                mode: rng.pick(&[0, 1, 3, 0x10, -1]),
            },
            32 => FsOp::Lseek {
                fh,
                offset: rng.num(),
                whence: rng.below(6) as i32,
            },
            33 => FsOp::CopyFileRange {
                fh_in: fh,
                offset_in: rng.len(),
                fh_out: rng.id(&handles, &bogus),
                offset_out: rng.len(),
                length: rng.len(),
            },
            34 => FsOp::GetXattr {
                node,
                name: rng.pick(&[bytes("user.a"), bytes(""), ByteBuf::from(vec![b'u'; 300])]),
                size: rng.num() as u32,
            },
            _ => match rng.below(3) {
                0 => FsOp::ListXattr {
                    node,
                    size: rng.num() as u32,
                },
                1 => FsOp::SetXattr {
                    node,
                    name: bytes("user.a"),
                    value: bytes("v"),
                    flags: rng.below(5) as i32,
                },
                _ => FsOp::RemoveXattr {
                    node,
                    name: bytes("user.a"),
                },
            },
        };
        let cred = rng.pick(&creds);
        let gone_node = match &op {
            FsOp::Forget { nodes } if nodes[0].1 > 0 => Some(nodes[0].0),
            _ => None,
        };
        let gone_fh = match &op {
            FsOp::Release { fh, .. } | FsOp::ReleaseDir { fh } => Some(*fh),
            _ => None,
        };
        // Every other call tries the home's at-once path first.
        let reply = if round % 2 == 0 {
            match ex.srv.try_now(&cred, op) {
                Ok(r) => r,
                Err(op) => ex.call(&cred, op),
            }
        } else {
            ex.call(&cred, op)
        };
        known.retain(|&n| Some(n) != gone_node || n == ROOT);
        handles.retain(|&h| Some(h) != gone_fh);
        match &reply {
            FsReply::Err(e) => *errors.entry(*e).or_insert(0u32) += 1,
            _ => successes += 1,
        }
        match reply {
            FsReply::Entry(a) => known.push(a.node),
            FsReply::Created { attr, fh } => {
                known.push(attr.node);
                handles.push(fh);
            }
            FsReply::Opened { fh, .. } => handles.push(fh),
            _ => {}
        }
        if round % 1000 == 0 {
            // Keep the newest (the older ones are mostly forgotten or
            // released by now).
            let k = known.len().saturating_sub(64);
            known.drain(1..k.max(1));
            let h = handles.len().saturating_sub(64);
            handles.drain(..h);
        }
    }
    eprintln!("fuzz: {successes} successes, errors by errno: {errors:?}");
    assert!(successes > 3000, "the fuzz hardly reached the file system");
    // The tables are bounded and the server still works.
    assert!(ex.srv.counts().1 <= 64);
    assert!(ex.getattr(&root(), ROOT).is_ok());
}

#[test]
fn cached_calls_are_answered_at_once_and_others_given_back() {
    let ex = Export::watched();
    std::fs::write(ex.path("f"), b"0123456789").unwrap();
    // The name was just made: the kernel has it cached.
    let FsReply::Entry(a) = ex
        .srv
        .try_now(
            &root(),
            FsOp::Lookup {
                parent: ROOT,
                name: bytes("f"),
            },
        )
        .expect("a cached lookup is answered at once")
    else {
        panic!("lookup")
    };
    assert_eq!(a.size, 10);
    // A missing name too (a negative entry), as node 0.
    let r = ex.srv.try_now(
        &user(1000),
        FsOp::Lookup {
            parent: ROOT,
            name: bytes("f"),
        },
    );
    assert!(matches!(r, Ok(FsReply::Entry(_))), "{r:?}");
    // An open may block (a FIFO, a truncation): given back.
    let open = FsOp::Open {
        node: a.node,
        flags: O_RDONLY,
    };
    let Err(open) = ex.srv.try_now(&root(), open) else {
        panic!("an open was performed at once")
    };
    let FsReply::Opened { fh, .. } = ex.call(&root(), open) else {
        panic!("open")
    };
    // Cached pages are read at once, to the end of the file.
    let r = ex.srv.try_now(
        &root(),
        FsOp::Read {
            fh,
            offset: 4,
            size: 100,
        },
    );
    assert_eq!(r, Ok(FsReply::Data(b"456789".to_vec().into())));
    // Attributes too (a watched, local file system).
    let r = ex.srv.try_now(
        &root(),
        FsOp::GetAttr {
            node: a.node,
            fh: None,
        },
    );
    assert!(matches!(r, Ok(FsReply::Attr(_))), "{r:?}");
    // A read of more than MAX_IO is not done at once (handle refuses it).
    let big = FsOp::Read {
        fh,
        offset: 0,
        size: MAX_IO + 1,
    };
    assert!(ex.srv.try_now(&root(), big).is_err());
    // A write is never done at once.
    let w = FsOp::Write {
        fh,
        offset: 0,
        data: ByteBuf::from(b"x".to_vec()),
    };
    assert!(ex.srv.try_now(&root(), w).is_err());
    assert_eq!(
        ex.srv.try_now(
            &root(),
            FsOp::Release {
                fh,
                flock_owner: None
            }
        ),
        Ok(FsReply::Ok)
    );

    // Not watched (a network file system, say): reads and attributes go
    // to a thread that may block; lookups from the caches still do not.
    let ex = Export::new();
    std::fs::write(ex.path("g"), b"abc").unwrap();
    let g = ex.lookup(&root(), ROOT, "g").unwrap();
    let get = FsOp::GetAttr {
        node: g.node,
        fh: None,
    };
    assert!(ex.srv.try_now(&root(), get).is_err());
    let (fh, _) = ex.open(&root(), g.node, O_RDONLY).unwrap();
    let read = FsOp::Read {
        fh,
        offset: 0,
        size: 3,
    };
    assert!(ex.srv.try_now(&root(), read).is_err());
}
