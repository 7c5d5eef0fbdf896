//! The remote file system end to end on one machine: the FUSE client
//! mounted over a loopback transport that calls the real file server on a
//! pool of threads, each test on its own export and mount under /var/tmp.
//!
//! These tests mount FUSE file systems: they need root and /dev/fuse, and
//! fail (not skip) without them.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use roam_proto::fs::{FsNotice, FsOp, FsReply, ROOT};
use roam_proto::types::Cred;
use roam_rfs::client::{mount, Mount, MountOptions, Transport};
use roam_rfs::server::{Server, ServerConfig, WatchedDevs};
use roam_rfs::watch::Watch;

type Done = Box<dyn FnOnce(FsReply) + Send>;

/// Calls the file server on a pool of threads, as the link would.
struct Loopback {
    jobs: Mutex<mpsc::Sender<(Cred, FsOp, Done)>>,
}

impl Loopback {
    fn new(server: Arc<Server>, threads: usize) -> Arc<Loopback> {
        let (tx, rx) = mpsc::channel::<(Cred, FsOp, Done)>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            let server = server.clone();
            std::thread::Builder::new()
                .name(format!("loopback-{i}"))
                .spawn(move || loop {
                    let job = rx.lock().unwrap().recv();
                    let Ok((cred, op, done)) = job else {
                        return;
                    };
                    done(server.handle(&cred, op));
                })
                .unwrap();
        }
        Arc::new(Loopback {
            jobs: Mutex::new(tx),
        })
    }
}

impl Transport for Loopback {
    fn call(&self, cred: Cred, op: FsOp, done: Done) {
        let _ = self.jobs.lock().unwrap().send((cred, op, done));
    }
}

/// Never answers (the home unreachable); keeps the callbacks.
#[derive(Default)]
struct Silent(Mutex<Vec<Done>>);

impl Transport for Silent {
    fn call(&self, _cred: Cred, _op: FsOp, done: Done) {
        self.0.lock().unwrap().push(done);
    }
}

/// Answers everything with a reply of the wrong kind.
struct Wrong;

impl Transport for Wrong {
    fn call(&self, _cred: Cred, _op: FsOp, done: Done) {
        done(FsReply::Written(7));
    }
}

fn require_root() {
    let euid = fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    assert!(
        euid == 0 && Path::new("/dev/fuse").exists(),
        "these tests mount FUSE file systems: run them as root on a machine with /dev/fuse \
         (for example `sudo -E cargo test -p roam-rfs --test rfs`)"
    );
}

fn opts() -> MountOptions {
    MountOptions::new(Arc::new(|_uid, gid| vec![gid]))
}

/// An export directory (the home's files) and the mount of it, under
/// /var/tmp; unmounted and removed on drop, even after a failure.
struct Fixture {
    base: PathBuf,
    export: PathBuf,
    mnt: PathBuf,
    mount: Option<Mount>,
    watch: Option<Watch>,
}

impl Fixture {
    /// The real server over the loopback transport.
    fn new(name: &str) -> Fixture {
        Fixture::with(name, opts(), None)
    }

    fn with(name: &str, opts: MountOptions, transport: Option<Arc<dyn Transport>>) -> Fixture {
        let mut f = Fixture::dirs(name);
        let transport = transport.unwrap_or_else(|| {
            let server = Server::new(ServerConfig::new(&f.export)).expect("file server");
            Loopback::new(Arc::new(server), 16)
        });
        f.mount = Some(mount(&f.mnt, transport, opts).expect("mount"));
        f
    }

    /// The directories, nothing mounted yet.
    fn dirs(name: &str) -> Fixture {
        require_root();
        static N: AtomicU32 = AtomicU32::new(0);
        let base = PathBuf::from(format!(
            "/var/tmp/roam-rfs-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let export = base.join("export");
        let mnt = base.join("mnt");
        for d in [&base, &export, &mnt] {
            fs::create_dir_all(d).unwrap();
            fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
        }
        Fixture {
            base,
            export,
            mnt,
            mount: None,
            watch: None,
        }
    }

    /// As the home runs it: the server marks watched files, and the
    /// home's fanotify watch sends the mount its notices.
    fn watched(name: &str) -> Fixture {
        let mut f = Fixture::dirs(name);
        let devs = WatchedDevs::default();
        let mut cfg = ServerConfig::new(&f.export);
        cfg.watched = devs.clone();
        let server = Arc::new(Server::new(cfg).expect("file server"));
        let transport = Loopback::new(server.clone(), 16);
        f.mount = Some(mount(&f.mnt, transport, opts()).expect("mount"));
        let notices = f.mount().notices();
        f.watch = Some(
            Watch::start(&f.export, devs, move |changes| {
                for c in &changes {
                    if let Some(n) = server.notice(c) {
                        notices.send(n);
                    }
                }
            })
            .expect("fanotify watch"),
        );
        f
    }

    /// A path through the mount.
    fn m(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// The same path on the home.
    fn h(&self, rel: &str) -> PathBuf {
        self.export.join(rel)
    }

    fn mount(&self) -> &Mount {
        self.mount.as_ref().unwrap()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        drop(self.watch.take());
        drop(self.mount.take());
        // Remove the directories only once the mount is gone, so as never
        // to walk into a mount that is still there.
        let unmounted = match (fs::metadata(&self.base), fs::metadata(&self.mnt)) {
            (Ok(b), Ok(m)) => b.dev() == m.dev(),
            _ => false,
        };
        if unmounted {
            let _ = fs::remove_dir_all(&self.base);
        } else {
            eprintln!("{} is still mounted: left in place", self.mnt.display());
        }
    }
}

/// Runs `cmd`, returning (success, stdout, stderr).
fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("run a command");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Retries `check` until it holds or `limit` passes.
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Deterministic bytes that do not repeat with any short period.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

#[test]
fn files_made_through_the_mount_are_on_the_home_at_once() {
    let f = Fixture::new("files");

    // Create, write, read back.
    fs::write(f.m("a.txt"), b"hello").unwrap();
    assert_eq!(fs::read(f.h("a.txt")).unwrap(), b"hello");
    assert_eq!(fs::read(f.m("a.txt")).unwrap(), b"hello");

    // Append.
    let mut a = OpenOptions::new().append(true).open(f.m("a.txt")).unwrap();
    a.write_all(b" world").unwrap();
    drop(a);
    assert_eq!(fs::read(f.h("a.txt")).unwrap(), b"hello world");
    assert_eq!(fs::read(f.m("a.txt")).unwrap(), b"hello world");

    // Overwrite in the middle, then truncate, through an open file.
    let mut a = OpenOptions::new()
        .read(true)
        .write(true)
        .open(f.m("a.txt"))
        .unwrap();
    a.seek(SeekFrom::Start(6)).unwrap();
    a.write_all(b"W").unwrap();
    a.sync_all().unwrap();
    a.sync_data().unwrap();
    assert_eq!(fs::read(f.h("a.txt")).unwrap(), b"hello World");
    a.set_len(5).unwrap();
    assert_eq!(a.metadata().unwrap().len(), 5);
    drop(a);
    assert_eq!(fs::read(f.h("a.txt")).unwrap(), b"hello");
    // O_TRUNC.
    fs::write(f.m("a.txt"), b"hi").unwrap();
    assert_eq!(fs::read(f.h("a.txt")).unwrap(), b"hi");

    // Rename.
    fs::rename(f.m("a.txt"), f.m("b.txt")).unwrap();
    assert!(!f.m("a.txt").exists() && !f.h("a.txt").exists());
    assert_eq!(fs::read(f.h("b.txt")).unwrap(), b"hi");

    // Hard link.
    fs::hard_link(f.m("b.txt"), f.m("c.txt")).unwrap();
    assert_eq!(fs::metadata(f.m("b.txt")).unwrap().nlink(), 2);
    assert_eq!(
        fs::metadata(f.h("b.txt")).unwrap().ino(),
        fs::metadata(f.h("c.txt")).unwrap().ino()
    );

    // Symlink and readlink.
    std::os::unix::fs::symlink("b.txt", f.m("d")).unwrap();
    assert_eq!(fs::read_link(f.m("d")).unwrap(), Path::new("b.txt"));
    assert_eq!(fs::read_link(f.h("d")).unwrap(), Path::new("b.txt"));
    assert_eq!(fs::read(f.m("d")).unwrap(), b"hi");
    assert!(fs::symlink_metadata(f.m("d"))
        .unwrap()
        .file_type()
        .is_symlink());

    // Directories.
    fs::create_dir(f.m("sub")).unwrap();
    fs::write(f.m("sub/x"), b"x").unwrap();
    assert!(f.h("sub/x").is_file());
    let e = fs::remove_dir(f.m("sub")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTEMPTY));
    fs::remove_file(f.m("sub/x")).unwrap();
    fs::remove_dir(f.m("sub")).unwrap();
    assert!(!f.h("sub").exists());

    // Unlink.
    fs::remove_file(f.m("c.txt")).unwrap();
    assert!(!f.h("c.txt").exists());
    assert_eq!(fs::metadata(f.m("b.txt")).unwrap().nlink(), 1);

    // chmod.
    fs::set_permissions(f.m("b.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(fs::metadata(f.h("b.txt")).unwrap().mode() & 0o7777, 0o640);
    assert_eq!(fs::metadata(f.m("b.txt")).unwrap().mode() & 0o7777, 0o640);

    // utimes.
    let t = SystemTime::UNIX_EPOCH + Duration::new(1_000_000_000, 5);
    File::options()
        .write(true)
        .open(f.m("b.txt"))
        .unwrap()
        .set_modified(t)
        .unwrap();
    assert_eq!(fs::metadata(f.h("b.txt")).unwrap().modified().unwrap(), t);
    assert_eq!(fs::metadata(f.m("b.txt")).unwrap().modified().unwrap(), t);

    // statfs, and real tools.
    let (ok, out, err) = run(Command::new("stat").args(["-f", "-c", "%b %S"]).arg(&f.mnt));
    assert!(ok, "stat -f: {err}");
    let blocks: u64 = out.split_whitespace().next().unwrap().parse().unwrap();
    assert!(blocks > 0, "statfs: {out}");
    let (ok, out, err) = run(Command::new("sh").current_dir(&f.mnt).arg("-c").arg(
        "set -e; echo one > t; echo two >> t; cat t; mv t u; cp u v; ls; rm u; \
         mkdir -p p/q/r; touch p/q/r/s; rm -r p; sync v; wc -c < v",
    ));
    assert!(ok, "shell: {err}");
    assert_eq!(out, "one\ntwo\nb.txt\nd\nu\nv\n8\n");
    assert_eq!(fs::read(f.h("v")).unwrap(), b"one\ntwo\n");
}

#[test]
fn a_large_directory_lists_completely() {
    let f = Fixture::new("bigdir");
    fs::create_dir(f.h("big")).unwrap();
    let mut want = BTreeSet::new();
    for i in 0..3000 {
        let name = format!("file-with-a-longish-name-{i:05}");
        File::create(f.h("big").join(&name)).unwrap();
        want.insert(name);
    }
    let got: BTreeSet<String> = fs::read_dir(f.m("big"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(got, want);
    let (ok, out, err) = run(Command::new("ls").arg("-1").arg(f.m("big")));
    assert!(ok, "ls: {err}");
    assert_eq!(out.lines().count(), 3000);
    // Names made through the mount list too, and go.
    for i in 0..500 {
        File::create(f.m(&format!("big/new-{i}"))).unwrap();
    }
    assert_eq!(fs::read_dir(f.m("big")).unwrap().count(), 3500);
    let (ok, _, err) = run(Command::new("rm").arg("-r").arg(f.m("big")));
    assert!(ok, "rm -r: {err}");
    assert!(!f.h("big").exists());
}

#[test]
fn home_changes_are_seen_after_a_notice() {
    // Long TTLs: only the notices can make the changes visible.
    let long = MountOptions {
        attr_ttl: Duration::from_secs(300),
        entry_ttl: Duration::from_secs(300),
        negative_ttl: Duration::from_secs(300),
        ..opts()
    };
    let f = Fixture::with("notice", long, None);
    fs::write(f.h("f"), b"one").unwrap();
    assert_eq!(fs::read(f.m("f")).unwrap(), b"one");
    let node = fs::metadata(f.m("f")).unwrap().ino();

    fs::write(f.h("f"), b"three").unwrap();
    f.mount().notice(FsNotice::Inode { node });
    assert!(
        eventually(Duration::from_secs(5), || fs::read(f.m("f")).unwrap()
            == b"three"),
        "the change is not seen after the notice"
    );

    // A name that did not exist (and is cached as missing) appears.
    assert!(fs::metadata(f.m("g")).is_err());
    fs::write(f.h("g"), b"new").unwrap();
    f.mount().notice(FsNotice::Entry {
        parent: ROOT,
        name: b"g".to_vec().into(),
    });
    assert!(
        eventually(Duration::from_secs(5), || f.m("g").exists()),
        "the new name is not seen after the notice"
    );
    assert_eq!(fs::read(f.m("g")).unwrap(), b"new");

    // A name removed on the home goes.
    fs::remove_file(f.h("g")).unwrap();
    f.mount().notice(FsNotice::Entry {
        parent: ROOT,
        name: b"g".to_vec().into(),
    });
    assert!(eventually(Duration::from_secs(5), || !f.m("g").exists()));
    // Notices for nodes and names the kernel does not know are harmless.
    f.mount().notice(FsNotice::Inode { node: 987_654 });
    f.mount().notice(FsNotice::Entry {
        parent: 987_654,
        name: b"nothing".to_vec().into(),
    });
}

/// Runs a shell command on the "home" as another process (the watch
/// ignores changes made by its own process, the file server's).
fn home_sh(cmd: &str, dir: &Path) {
    let (ok, _, err) = run(Command::new("sh").arg("-c").arg(cmd).current_dir(dir));
    assert!(ok, "{cmd}: {err}");
}

#[test]
fn home_changes_are_pushed_by_the_watch() {
    // The export is on a file system the watch can mark (the fixtures live
    // under /var/tmp): its files are cached for 30 s, so only the watch's
    // notices can make the changes below visible in time.
    let f = Fixture::watched("watch");
    home_sh("printf one > f && mkdir d && printf x > d/in", &f.export);
    assert_eq!(fs::read(f.m("f")).unwrap(), b"one");
    assert_eq!(fs::metadata(f.m("f")).unwrap().len(), 3);
    assert!(fs::metadata(f.m("g")).is_err(), "g cached as missing");
    let listed = |dir: &str| -> BTreeSet<String> {
        fs::read_dir(f.m(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(listed("d"), BTreeSet::from(["in".to_string()]));
    // Twice: the second listing comes from the kernel's cache.
    assert_eq!(listed("d"), BTreeSet::from(["in".to_string()]));

    let t = Instant::now();
    home_sh(
        "printf three! > f && printf new > g && printf y > d/more && chmod 600 d/in",
        &f.export,
    );
    let limit = Duration::from_secs(10);
    assert!(
        eventually(limit, || fs::read(f.m("f")).unwrap() == b"three!"),
        "the write on the home is not seen"
    );
    assert!(
        eventually(limit, || fs::metadata(f.m("f")).unwrap().len() == 6),
        "the new size is not seen"
    );
    assert!(
        eventually(limit, || f.m("g").exists()),
        "a name created on the home is not seen"
    );
    assert!(
        eventually(limit, || listed("d").len() == 2),
        "the cached listing is not dropped"
    );
    assert!(
        eventually(limit, || fs::metadata(f.m("d/in")).unwrap().mode() & 0o777
            == 0o600),
        "a chmod on the home is not seen"
    );
    let first = t.elapsed();

    home_sh("rm g && mv f f2", &f.export);
    assert!(
        eventually(limit, || !f.m("g").exists() && !f.m("f").exists()),
        "names removed on the home are still seen"
    );
    assert_eq!(fs::read(f.m("f2")).unwrap(), b"three!");
    // Far below the 30 s the kernel may otherwise cache them.
    assert!(first < limit, "{first:?}");

    // Read-only opens are kept for reuse (no round trip), but a change of
    // who may open the file retires them: nobody reads the file, then may
    // not once the home makes it 0600.
    let nobody_cat = |rel: &str| {
        run(Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
            .arg(f.m(rel)))
    };
    home_sh("printf open > pub && chmod 644 pub", &f.export);
    for _ in 0..3 {
        let (ok, out, err) = nobody_cat("pub");
        assert!(ok && out == "open", "{err}");
    }
    home_sh("chmod 600 pub", &f.export);
    assert!(
        eventually(limit, || !nobody_cat("pub").0),
        "a kept open let nobody read a file made 0600 on the home"
    );
    let (_, _, err) = nobody_cat("pub");
    assert!(err.contains("Permission denied"), "{err}");
    // And a change of content through a kept open is seen at once.
    home_sh("printf changed > pub && chmod 644 pub", &f.export);
    assert!(eventually(limit, || nobody_cat("pub").1 == "changed"));
}

#[test]
fn home_changes_are_seen_within_the_ttl() {
    let f = Fixture::new("ttl");
    fs::write(f.h("f"), b"one").unwrap();
    assert_eq!(fs::read(f.m("f")).unwrap(), b"one");
    assert!(fs::metadata(f.m("g")).is_err());
    std::thread::sleep(Duration::from_millis(20));
    fs::write(f.h("f"), b"two!").unwrap();
    fs::write(f.h("g"), b"g").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(fs::read(f.m("f")).unwrap(), b"two!");
    assert_eq!(fs::read(f.m("g")).unwrap(), b"g");
}

#[test]
fn a_large_file_copies_intact() {
    let f = Fixture::new("large");
    let data = pattern(64 << 20, 42);
    fs::write(f.h("big"), &data).unwrap();

    // Read through the mount.
    let mut got = Vec::new();
    File::open(f.m("big"))
        .unwrap()
        .read_to_end(&mut got)
        .unwrap();
    assert!(got == data, "the file read through the mount differs");

    // Written through the mount by a real tool.
    let (ok, _, err) = run(Command::new("cp").arg(f.h("big")).arg(f.m("copy")));
    assert!(ok, "cp: {err}");
    assert!(fs::read(f.h("copy")).unwrap() == data, "cp's copy differs");

    // Mount to mount (copy_file_range where the kernel offers it).
    fs::copy(f.m("big"), f.m("copy2")).unwrap();
    assert!(fs::read(f.h("copy2")).unwrap() == data, "the copy differs");
    let mut file = File::open(f.m("copy2")).unwrap();
    file.seek(SeekFrom::Start(40 << 20)).unwrap();
    let mut part = vec![0; 100_000];
    file.read_exact(&mut part).unwrap();
    assert!(part[..] == data[40 << 20..(40 << 20) + 100_000]);
}

/// A mapping of `len` bytes of `file`, unmapped on drop.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mapping {
    fn new(file: &File, len: usize, prot: i32, flags: i32) -> Mapping {
        // SAFETY: a fresh mapping at an address the kernel picks, of an open
        // file; no existing memory is touched.
        let ptr =
            unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, file.as_raw_fd(), 0) };
        assert_ne!(
            ptr,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        Mapping { ptr, len }
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` maps `len` bytes, readable (and writable where the
        // test writes) until drop; `&mut self` keeps the slice unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.cast::<u8>(), self.len) }
    }

    fn sync(&self) {
        // SAFETY: msync of exactly the mapping made in `new`.
        let r = unsafe { libc::msync(self.ptr, self.len, libc::MS_SYNC) };
        assert_eq!(r, 0, "msync: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; no slice of it
        // outlives `self`.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

#[test]
fn private_and_shared_mappings_work() {
    let f = Fixture::new("mmap");
    let len = 256 * 1024;
    let data = pattern(len, 7);
    fs::write(f.h("map"), &data).unwrap();

    // Private: reads the file; writes stay in the process.
    let file = File::open(f.m("map")).unwrap();
    let mut private = Mapping::new(
        &file,
        len,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE,
    );
    assert!(private.bytes()[..] == data[..]);
    private.bytes()[0] ^= 0xff;
    drop(private);
    drop(file);
    assert!(fs::read(f.h("map")).unwrap() == data);

    // Shared and writable: writes reach the home's file.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(f.m("map"))
        .unwrap();
    let mut shared = Mapping::new(
        &file,
        len,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_SHARED,
    );
    assert!(shared.bytes()[..] == data[..]);
    shared.bytes()[10..15].copy_from_slice(b"HELLO");
    shared.bytes()[200_000..200_005].copy_from_slice(b"WORLD");
    shared.sync();
    let home = fs::read(f.h("map")).unwrap();
    assert_eq!(&home[10..15], b"HELLO");
    assert_eq!(&home[200_000..200_005], b"WORLD");
    // Written after msync: munmap and close write it.
    shared.bytes()[100..103].copy_from_slice(b"BYE");
    drop(shared);
    drop(file);
    assert_eq!(&fs::read(f.h("map")).unwrap()[100..103], b"BYE");
}

/// The shared libraries and the program interpreter `prog` needs (from
/// `ldd`).
fn libraries(prog: &Path) -> (Vec<PathBuf>, PathBuf) {
    let (ok, out, err) = run(Command::new("ldd").arg(prog));
    assert!(ok, "ldd: {err}");
    let mut libs = Vec::new();
    let mut interp = None;
    for line in out.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        let Some(path) = path.filter(|p| p.starts_with('/')) else {
            continue;
        };
        if line.contains("=>") {
            libs.push(PathBuf::from(path));
        } else {
            interp = Some(PathBuf::from(path));
        }
    }
    (libs, interp.expect("ldd names no interpreter"))
}

#[test]
fn a_program_that_lives_only_on_the_home_runs() {
    let f = Fixture::new("exec");
    fs::create_dir_all(f.h("bin")).unwrap();
    fs::create_dir_all(f.h("lib")).unwrap();
    fs::copy("/bin/true", f.h("bin/true")).unwrap();
    fs::copy("/bin/ls", f.h("bin/ls")).unwrap();
    let (libs, interp) = libraries(Path::new("/bin/ls"));
    for lib in &libs {
        fs::copy(lib, f.h("lib").join(lib.file_name().unwrap())).unwrap();
    }
    fs::copy(&interp, f.h("lib/ld.so")).unwrap();
    for p in ["bin/true", "bin/ls", "lib/ld.so"] {
        fs::set_permissions(f.h(p), fs::Permissions::from_mode(0o755)).unwrap();
    }

    let status = Command::new(f.m("bin/true")).status().unwrap();
    assert!(status.success(), "bin/true: {status}");

    // The interpreter, the program and every library mapped from the mount.
    let (ok, out, err) = run(Command::new(f.m("lib/ld.so"))
        .arg("--library-path")
        .arg(f.m("lib"))
        .arg(f.m("bin/ls"))
        .arg(f.m("bin")));
    assert!(ok, "ls from the home: {err}");
    assert_eq!(out, "ls\ntrue\n");
    // Again, from the page cache.
    let (ok, out, _) = run(Command::new(f.m("lib/ld.so"))
        .arg("--library-path")
        .arg(f.m("lib"))
        .arg(f.m("bin/ls"))
        .arg(f.m("lib/ld.so")));
    assert!(ok);
    assert_eq!(out.trim_end(), f.m("lib/ld.so").to_str().unwrap());
}

/// Runs `args` as user and group 65534 with no supplementary groups.
fn as_nobody(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(args))
}

#[test]
fn a_user_gets_only_their_own_rights() {
    let f = Fixture::new("perm");
    fs::write(f.h("secret"), b"root only").unwrap();
    fs::set_permissions(f.h("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(f.h("public"), b"for all").unwrap();
    fs::set_permissions(f.h("public"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::create_dir(f.h("open")).unwrap();
    fs::set_permissions(f.h("open"), fs::Permissions::from_mode(0o777)).unwrap();

    let secret = f.m("secret");
    let (ok, out, err) = as_nobody(&["cat".as_ref(), secret.as_os_str()]);
    assert!(!ok, "nobody read root's 0600 file: {out}");
    assert!(err.contains("Permission denied"), "cat: {err}");
    // Root still can (and the refusal was not cached as the answer).
    assert_eq!(fs::read(f.m("secret")).unwrap(), b"root only");

    let public = f.m("public");
    let (ok, out, err) = as_nobody(&["cat".as_ref(), public.as_os_str()]);
    assert!(ok, "cat public: {err}");
    assert_eq!(out, "for all");

    // Writing where only root may write is refused.
    let (ok, _, err) = as_nobody(&[
        "sh".as_ref(),
        "-c".as_ref(),
        "echo x >> \"$0\"".as_ref(),
        public.as_os_str(),
    ]);
    assert!(!ok && err.contains("Permission denied"), "append: {err}");
    let newfile = f.m("new");
    let (ok, _, err) = as_nobody(&["touch".as_ref(), newfile.as_os_str()]);
    assert!(!ok && err.contains("Permission denied"), "touch: {err}");
    assert!(!f.h("new").exists());

    // Where nobody may write, what it makes is its own.
    let mine = f.m("open/mine");
    let (ok, _, err) = as_nobody(&["touch".as_ref(), mine.as_os_str()]);
    assert!(ok, "touch in a 0777 directory: {err}");
    let meta = fs::metadata(f.h("open/mine")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    let (ok, _, err) = as_nobody(&["chmod".as_ref(), "600".as_ref(), public.as_os_str()]);
    assert!(!ok, "nobody changed root's file's mode: {err}");
    assert_eq!(fs::metadata(f.h("public")).unwrap().mode() & 0o777, 0o644);
}

/// Tries a write lock on the whole of `path` from a child process (waiting
/// for it with `wait`); returns (locked, the type F_GETLK saw first).
fn lock_from_child(path: &Path, wait: Option<(&File, Duration)>) -> (bool, i32) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let setlk = if wait.is_some() {
        libc::F_SETLKW
    } else {
        libc::F_SETLK
    };
    // SAFETY: the child calls only async-signal-safe functions (open,
    // fcntl, _exit) on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: (in the child) `c` is a valid C string; `fl` is a plain
        // struct the kernel fills; nothing returns from `_exit`.
        unsafe {
            let fd = libc::open(c.as_ptr(), libc::O_RDWR);
            if fd < 0 {
                libc::_exit(100);
            }
            let mut fl: libc::flock = std::mem::zeroed();
            fl.l_type = libc::F_WRLCK as i16;
            fl.l_whence = libc::SEEK_SET as i16;
            if libc::fcntl(fd, libc::F_GETLK, &mut fl) != 0 {
                libc::_exit(101);
            }
            let seen = i32::from(fl.l_type);
            let mut fl: libc::flock = std::mem::zeroed();
            fl.l_type = libc::F_WRLCK as i16;
            fl.l_whence = libc::SEEK_SET as i16;
            let locked = libc::fcntl(fd, setlk, &fl) == 0;
            libc::_exit(seen * 2 + i32::from(locked));
        }
    }
    if let Some((holder, after)) = wait {
        std::thread::sleep(after);
        set_lock(holder, libc::F_UNLCK).unwrap();
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked; `status` is ours.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid);
    assert!(libc::WIFEXITED(status));
    let code = libc::WEXITSTATUS(status);
    assert!(code < 100, "the child failed early ({code})");
    (code & 1 == 1, code >> 1)
}

fn set_lock(file: &File, typ: i32) -> std::io::Result<()> {
    // SAFETY: `flock` is a plain C struct; zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = typ as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    // SAFETY: F_SETLK on our open file with a valid `flock`.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &fl) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[test]
fn fcntl_locks_conflict_between_processes() {
    // A short timeout: a lock wait longer than it must still succeed.
    let short = MountOptions {
        request_timeout: Duration::from_secs(1),
        ..opts()
    };
    let f = Fixture::with("locks", short, None);
    fs::write(f.h("lockfile"), b"data").unwrap();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(f.m("lockfile"))
        .unwrap();
    set_lock(&file, libc::F_WRLCK).unwrap();
    let (locked, seen) = lock_from_child(&f.m("lockfile"), None);
    assert!(!locked, "another process took a lock this one holds");
    assert_eq!(
        seen,
        libc::F_WRLCK,
        "F_GETLK does not show the holder's lock"
    );

    set_lock(&file, libc::F_UNLCK).unwrap();
    let (locked, seen) = lock_from_child(&f.m("lockfile"), None);
    assert!(locked, "the lock is not free after unlocking");
    assert_eq!(seen, libc::F_UNLCK);

    // F_SETLKW waits for the holder, past the request timeout.
    set_lock(&file, libc::F_WRLCK).unwrap();
    let t0 = Instant::now();
    let (locked, _) = lock_from_child(&f.m("lockfile"), Some((&file, Duration::from_millis(1500))));
    assert!(locked, "F_SETLKW did not get the lock once free");
    assert!(t0.elapsed() >= Duration::from_millis(1500));

    // Closing a descriptor releases the process's locks.
    set_lock(&file, libc::F_WRLCK).unwrap();
    drop(file);
    let (locked, _) = lock_from_child(&f.m("lockfile"), None);
    assert!(locked, "the lock outlived close");

    // flock(2): held at the home, owned by the open file.
    let (ok, _, err) = run(Command::new("flock").arg(f.m("lockfile")).arg("true"));
    assert!(ok, "flock: {err}");
    // -o: the lock is flock's own, not its child's.
    let mut holder = Command::new("flock")
        .args(["-o", "-x"])
        .arg(f.m("lockfile"))
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    let held = || {
        // -n: fail (exit 1) at once if held. -s: even a shared lock.
        let st = Command::new("flock")
            .args(["-n", "-s"])
            .arg(f.m("lockfile"))
            .arg("true")
            .status()
            .unwrap();
        st.code() == Some(1)
    };
    assert!(
        eventually(Duration::from_secs(5), held),
        "flock -x not held"
    );
    // The home holds it: its record lock shows there, as a POSIX lock
    // (flocks from nodes are whole-file locks at the home, as on NFS).
    let (locked, seen) = lock_from_child(&f.h("lockfile"), None);
    assert!(!locked && seen == libc::F_WRLCK, "the home does not see it");
    // Ending the holder (its last descriptor closes) frees it.
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(
        eventually(Duration::from_secs(5), || !held()),
        "the flock outlived its open file"
    );
    // Shared flocks share; an exclusive one through a read-only
    // descriptor works, as flock(2) allows.
    let (ok, _, err) = run(Command::new("sh").arg("-c").arg(format!(
        "exec 3<'{p}' 4<'{p}'; flock -s 3 && flock -n -s 4 && flock -u 3 && flock -u 4 && flock -n -x 3",
        p = f.m("lockfile").display()
    )));
    assert!(ok, "{err}");
}

fn xattr_name() -> CString {
    CString::new("user.roam-test").unwrap()
}

#[test]
fn extended_attributes_are_the_homes() {
    let f = Fixture::new("xattr");
    fs::write(f.h("x"), b"").unwrap();
    let path = CString::new(f.m("x").as_os_str().as_bytes()).unwrap();
    let home = CString::new(f.h("x").as_os_str().as_bytes()).unwrap();
    let name = xattr_name();
    let value = b"forty-two";
    // SAFETY: valid C strings and a buffer of the length given.
    let r = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EOPNOTSUPP) {
        panic!("/var/tmp does not support user.* extended attributes");
    }
    assert_eq!(r, 0, "setxattr: {}", std::io::Error::last_os_error());

    let mut buf = [0u8; 64];
    // SAFETY: valid C strings and a buffer of the length given.
    let n = unsafe {
        libc::getxattr(
            home.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert_eq!(&buf[..n.max(0) as usize], value, "on the home");
    // Size query, then the value, through the mount.
    // SAFETY: a size query (NULL buffer of length 0).
    let n = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
    assert_eq!(n, value.len() as isize);
    // SAFETY: valid C strings and a buffer of the length given.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert_eq!(&buf[..n.max(0) as usize], value, "through the mount");
    // Too small a buffer: ERANGE.
    // SAFETY: valid C strings and a buffer of the length given.
    let n = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), 3) };
    assert_eq!(n, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ERANGE)
    );
    // SAFETY: a valid C string and a buffer of the length given.
    let n = unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n > 0, "listxattr: {}", std::io::Error::last_os_error());
    assert!(buf[..n as usize]
        .split(|&b| b == 0)
        .any(|x| x == name.as_bytes()));
    // SAFETY: valid C strings.
    let r = unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) };
    assert_eq!(r, 0, "removexattr: {}", std::io::Error::last_os_error());
    // SAFETY: a size query (NULL buffer of length 0).
    let n = unsafe { libc::getxattr(home.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
    assert_eq!(n, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ENODATA)
    );
}

#[test]
fn odd_names_long_names_and_symlink_loops() {
    let f = Fixture::new("names");
    let odd = std::ffi::OsStr::from_bytes(b"sp ace\nnew\xffline");
    fs::write(f.mnt.join(odd), b"odd").unwrap();
    assert_eq!(fs::read(f.export.join(odd)).unwrap(), b"odd");
    let names: Vec<_> = fs::read_dir(&f.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![odd.to_owned()]);

    let long = "n".repeat(255);
    fs::write(f.m(&long), b"long").unwrap();
    assert_eq!(fs::read(f.h(&long)).unwrap(), b"long");
    let e = fs::write(f.m(&"n".repeat(256)), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENAMETOOLONG));

    std::os::unix::fs::symlink("loop-b", f.m("loop-a")).unwrap();
    std::os::unix::fs::symlink("loop-a", f.m("loop-b")).unwrap();
    let e = fs::read(f.m("loop-a")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
}

#[test]
fn dropping_the_mount_detaches_it_and_open_files_keep_working() {
    let mut f = Fixture::new("lazy");
    fs::write(f.h("f"), b"still here").unwrap();
    let mut file = File::open(f.m("f")).unwrap();
    drop(f.mount.take());
    assert_eq!(fs::read_dir(&f.mnt).unwrap().count(), 0, "still mounted");
    let mut s = String::new();
    file.read_to_string(&mut s).unwrap();
    assert_eq!(s, "still here");
}

#[test]
fn files_that_vanish_or_shrink_during_a_read() {
    let f = Fixture::watched("vanish");
    let data = pattern(4 << 20, 7);
    fs::write(f.h("gone"), &data).unwrap();
    fs::write(f.h("shrinks"), &data).unwrap();
    // Removed on the home while open on the node: the open file reads on,
    // whole, as a local one would; the name is gone.
    let mut a = File::open(f.m("gone")).unwrap();
    let mut head = vec![0u8; 1 << 20];
    a.read_exact(&mut head).unwrap();
    home_sh("rm gone", &f.export);
    let mut rest = Vec::new();
    a.read_to_end(&mut rest).unwrap();
    head.extend_from_slice(&rest);
    assert!(head == data, "an unlinked open file did not read whole");
    assert!(eventually(Duration::from_secs(10), || !f
        .m("gone")
        .exists()));
    // Truncated on the home in the middle of a read: the reader gets the
    // data that is left, then the end of the file; no error, no hang.
    let mut b = File::open(f.m("shrinks")).unwrap();
    let mut first = vec![0u8; 1 << 20];
    b.read_exact(&mut first).unwrap();
    home_sh("truncate -s 1500000 shrinks", &f.export);
    let mut rest = Vec::new();
    let t = Instant::now();
    b.read_to_end(&mut rest).unwrap();
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(
        (1 << 20) + rest.len() <= data.len(),
        "read past what the file ever held"
    );
    assert_eq!(&first[..], &data[..1 << 20]);
    // What the node reads now matches the home.
    assert!(eventually(Duration::from_secs(10), || fs::read(
        f.m("shrinks")
    )
    .unwrap()
    .len()
        == 1_500_000));
}

#[test]
fn an_unanswered_call_fails_with_eio_after_the_timeout() {
    let short = MountOptions {
        request_timeout: Duration::from_secs(1),
        ..opts()
    };
    let f = Fixture::with("silent", short, Some(Arc::new(Silent::default())));
    let t0 = Instant::now();
    let e = fs::metadata(f.m("x")).unwrap_err();
    let took = t0.elapsed();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert!(took >= Duration::from_secs(1), "failed too soon: {took:?}");
    assert!(took < Duration::from_secs(10), "failed too late: {took:?}");
}

#[test]
fn a_reply_of_the_wrong_kind_is_eio() {
    let f = Fixture::with("wrong", opts(), Some(Arc::new(Wrong)));
    for p in ["x", ""] {
        let e = fs::metadata(f.m(p)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{p}: {e}");
    }
    let e = fs::read_dir(&f.mnt).map(|_| ()).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
}
