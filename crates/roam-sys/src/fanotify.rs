//! fanotify(7) reporting file identifiers: the home watches the file
//! systems it exports and tells nodes which inodes and names changed, so a
//! node's cached attributes, names and pages of the home's files stay
//! true without short cache lifetimes.
//!
//! A watcher marks whole file systems (`FAN_MARK_FILESYSTEM`, which needs
//! CAP_SYS_ADMIN) and reports, for each change, the changed object's file
//! handle and, for name changes, the directory's handle and the name.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use crate::files::FileHandle;
use crate::ns::cpath;
use crate::wake::Wake;

/// A file's contents or attributes changed (write, truncate, chmod, chown,
/// utimes, link count).
pub const CHANGED: u64 = libc::FAN_MODIFY | libc::FAN_ATTRIB;
/// A name in a directory appeared or went away (create, link, unlink,
/// rmdir, rename).
pub const NAMES: u64 =
    libc::FAN_CREATE | libc::FAN_DELETE | libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO;
/// Events were lost (never with the unlimited queue the watcher asks for,
/// but handled).
pub const OVERFLOW: u64 = libc::FAN_Q_OVERFLOW;

/// Size of `struct fanotify_event_metadata`.
const META: usize = 24;
/// Size of `struct fanotify_event_info_header` plus `__kernel_fsid_t`.
const FID_HEAD: usize = 4 + 8;

/// A file system identifier (`statfs`'s `f_fsid`), as events carry it.
pub type Fsid = [i32; 2];

/// One change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// FAN_* bits (see [`CHANGED`], [`NAMES`], [`OVERFLOW`]).
    pub mask: u64,
    /// The process that made the change.
    pub pid: i32,
    /// The file system of the handles.
    pub fsid: Fsid,
    /// The changed object.
    pub object: Option<FileHandle>,
    /// For name changes (and as reported for others): the directory and
    /// the name in it.
    pub dir: Option<FileHandle>,
    pub name: Option<Vec<u8>>,
}

/// A fanotify group watching whole file systems.
pub struct Watcher {
    fd: OwnedFd,
    buf: Vec<u8>,
    /// Ends a wait early (see [`Waker`]).
    wake: Arc<Wake>,
}

/// Ends a [`Watcher::wait`] in progress, from another thread.
#[derive(Clone)]
pub struct Waker(Arc<Wake>);

impl Waker {
    pub fn wake(&self) {
        self.0.wake();
    }
}

impl Watcher {
    /// A group with an unlimited queue that reports file handles, the
    /// directory and the name. Needs CAP_SYS_ADMIN.
    pub fn new() -> io::Result<Watcher> {
        let flags = libc::FAN_CLASS_NOTIF
            | libc::FAN_CLOEXEC
            | libc::FAN_NONBLOCK
            | libc::FAN_UNLIMITED_QUEUE
            | libc::FAN_REPORT_FID
            | libc::FAN_REPORT_DFID_NAME;
        // SAFETY: fanotify_init takes two flag words and returns a new
        // descriptor or -1.
        let fd = unsafe { libc::fanotify_init(flags, (libc::O_RDONLY | libc::O_LARGEFILE) as u32) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Watcher {
            fd,
            buf: vec![0; 64 * 1024],
            wake: Arc::new(Wake::new()?),
        })
    }

    /// A handle that ends a wait early.
    pub fn waker(&self) -> Waker {
        Waker(self.wake.clone())
    }

    /// Watches the whole file system `path` is on, for [`CHANGED`] and
    /// [`NAMES`] on files and directories. Fails (EXDEV, ENODEV,
    /// EOPNOTSUPP) on file systems that cannot report file handles.
    pub fn mark_filesystem(&self, path: &Path) -> io::Result<()> {
        let c = cpath(path)?;
        // SAFETY: a valid descriptor, flags, mask and NUL-terminated path.
        let rc = unsafe {
            libc::fanotify_mark(
                self.fd.as_raw_fd(),
                libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
                CHANGED | NAMES | libc::FAN_ONDIR,
                libc::AT_FDCWD,
                c.as_ptr(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout_ms` (-1: no limit) for changes and returns
    /// those queued (none after the timeout or a [`Waker::wake`]).
    pub fn wait(&mut self, timeout_ms: i32) -> io::Result<Vec<Event>> {
        let mut pfd = [
            libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.wake.as_fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds that outlive the call.
        let rc = unsafe { libc::poll(pfd.as_mut_ptr(), 2, timeout_ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(Vec::new())
            } else {
                Err(e)
            };
        }
        if pfd[1].revents != 0 {
            self.wake.clear();
            return Ok(Vec::new());
        }
        if rc == 0 {
            return Ok(Vec::new());
        }
        // SAFETY: `buf` is writable for its whole length.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                self.buf.as_mut_ptr().cast(),
                self.buf.len(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(Vec::new()),
                _ => Err(e),
            };
        }
        Ok(parse(&self.buf[..n as usize]))
    }
}

/// The id of the file system `path` is on, as events name it.
pub fn fsid_of(path: &Path) -> io::Result<Fsid> {
    let c = cpath(path)?;
    // SAFETY: an all-zero statfs is a valid value to be overwritten.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a writable statfs.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fsid_t is #[repr(C)] two c_ints (its fields are private in
    // the libc crate).
    Ok(unsafe { std::mem::transmute::<libc::fsid_t, Fsid>(st.f_fsid) })
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Parses a buffer of events; malformed tails are dropped (the kernel
/// writes whole events, but nothing here trusts lengths blindly).
pub fn parse(buf: &[u8]) -> Vec<Event> {
    let mut out = Vec::new();
    let mut at = 0;
    while let (Some(len), Some(meta_len)) = (u32_at(buf, at), u16_at(buf, at + 6)) {
        let len = len as usize;
        let meta_len = meta_len as usize;
        if len < META || meta_len < META || meta_len > len || at + len > buf.len() {
            break;
        }
        let ev = &buf[at..at + len];
        if let Some(e) = parse_one(ev, meta_len) {
            out.push(e);
        }
        at += len;
    }
    out
}

fn parse_one(ev: &[u8], meta_len: usize) -> Option<Event> {
    let mask = u64_at(ev, 8)?;
    let pid = u32_at(ev, 20)? as i32;
    let mut e = Event {
        mask,
        pid,
        fsid: [0, 0],
        object: None,
        dir: None,
        name: None,
    };
    let mut at = meta_len;
    while at + FID_HEAD <= ev.len() {
        let info_type = ev[at];
        let len = u16_at(ev, at + 2)? as usize;
        if len < FID_HEAD || at + len > ev.len() {
            break;
        }
        let rec = &ev[at..at + len];
        at += len;
        let named = match info_type {
            libc::FAN_EVENT_INFO_TYPE_FID => false,
            libc::FAN_EVENT_INFO_TYPE_DFID_NAME | libc::FAN_EVENT_INFO_TYPE_DFID => true,
            _ => continue,
        };
        e.fsid = [u32_at(rec, 4)? as i32, u32_at(rec, 8)? as i32];
        let bytes = u32_at(rec, FID_HEAD)? as usize;
        let typ = u32_at(rec, FID_HEAD + 4)? as i32;
        let start = FID_HEAD + 8;
        let handle = rec.get(start..start + bytes)?;
        let h = FileHandle::new(typ, handle.to_vec());
        if named {
            if info_type == libc::FAN_EVENT_INFO_TYPE_DFID_NAME {
                let rest = &rec[start + bytes..];
                let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
                e.name = Some(rest[..end].to_vec());
            }
            e.dir = Some(h);
        } else {
            e.object = Some(h);
        }
    }
    Some(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(info_type: u8, handle: &[u8], name: Option<&[u8]>) -> Vec<u8> {
        let mut r = vec![info_type, 0, 0, 0];
        r.extend_from_slice(&7i32.to_ne_bytes());
        r.extend_from_slice(&9i32.to_ne_bytes());
        r.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
        r.extend_from_slice(&1i32.to_ne_bytes());
        r.extend_from_slice(handle);
        if let Some(n) = name {
            r.extend_from_slice(n);
            r.push(0);
        }
        while r.len() % 4 != 0 {
            r.push(0);
        }
        let len = r.len() as u16;
        r[2..4].copy_from_slice(&len.to_ne_bytes());
        r
    }

    fn event(mask: u64, records: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = records.concat();
        let mut e = Vec::new();
        e.extend_from_slice(&((META + body.len()) as u32).to_ne_bytes());
        e.extend_from_slice(&[3, 0]);
        e.extend_from_slice(&(META as u16).to_ne_bytes());
        e.extend_from_slice(&mask.to_ne_bytes());
        e.extend_from_slice(&(-1i32).to_ne_bytes());
        e.extend_from_slice(&42i32.to_ne_bytes());
        e.extend_from_slice(&body);
        e
    }

    #[test]
    fn parses_name_and_object_records() {
        let buf = [
            event(
                libc::FAN_CREATE,
                &[
                    record(
                        libc::FAN_EVENT_INFO_TYPE_DFID_NAME,
                        b"dirhandl",
                        Some(b"new"),
                    ),
                    record(libc::FAN_EVENT_INFO_TYPE_FID, b"objhandl", None),
                ],
            ),
            event(
                libc::FAN_MODIFY,
                &[record(libc::FAN_EVENT_INFO_TYPE_FID, b"obj2", None)],
            ),
        ]
        .concat();
        let evs = parse(&buf);
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].mask, libc::FAN_CREATE);
        assert_eq!(evs[0].pid, 42);
        assert_eq!(evs[0].fsid, [7, 9]);
        assert_eq!(evs[0].name.as_deref(), Some(&b"new"[..]));
        assert_eq!(evs[0].dir, Some(FileHandle::new(1, b"dirhandl".to_vec())));
        assert_eq!(
            evs[0].object,
            Some(FileHandle::new(1, b"objhandl".to_vec()))
        );
        assert_eq!(evs[1].object, Some(FileHandle::new(1, b"obj2".to_vec())));
        assert_eq!(evs[1].dir, None);
    }

    #[test]
    fn truncated_and_garbage_buffers_do_not_panic() {
        let good = event(
            libc::FAN_CREATE,
            &[record(
                libc::FAN_EVENT_INFO_TYPE_DFID_NAME,
                b"h",
                Some(b"n"),
            )],
        );
        for cut in 0..good.len() {
            let _ = parse(&good[..cut]);
        }
        let mut x: u32 = 1;
        for _ in 0..2000 {
            let mut b = good.clone();
            for _ in 0..4 {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let i = (x as usize >> 8) % b.len();
                b[i] = (x >> 16) as u8;
            }
            let _ = parse(&b);
        }
    }

    #[test]
    fn a_real_watcher_sees_a_change_when_root() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return; // CAP_SYS_ADMIN needed; the e2e tests run as root.
        }
        let dir = std::env::temp_dir().join(format!("roam-fan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut w = Watcher::new().unwrap();
        w.mark_filesystem(&dir).unwrap();
        let fsid = fsid_of(&dir).unwrap();
        std::fs::write(dir.join("f"), b"x").unwrap();
        let mut seen = Vec::new();
        for _ in 0..50 {
            seen.extend(w.wait(100).unwrap());
            if seen.iter().any(|e| e.mask & libc::FAN_MODIFY != 0) {
                break;
            }
        }
        // A waker ends a wait with no limit.
        let waker = w.waker();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            waker.wake();
        });
        while !w.wait(-1).unwrap().is_empty() {}
        t.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let e = seen
            .iter()
            .find(|e| e.mask & libc::FAN_CREATE != 0 && e.name.as_deref() == Some(b"f"))
            .expect("a create event for f");
        assert_eq!(e.fsid, fsid);
        assert_eq!(e.pid as u32, std::process::id());
        assert!(e.dir.is_some());
        // A write reports the file itself as well as its directory and name.
        let m = seen
            .iter()
            .find(|e| e.mask & libc::FAN_MODIFY != 0)
            .expect("a modify event");
        assert!(m.object.is_some() && m.dir.is_some(), "{m:?}");
        // A directory's own change (chmod) says which directory.
        let sub = std::env::temp_dir().join(format!("roam-fan-d-{}", std::process::id()));
        std::fs::create_dir_all(&sub).unwrap();
        let mut w = Watcher::new().unwrap();
        w.mark_filesystem(&sub).unwrap();
        std::fs::set_permissions(&sub, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let mut seen = Vec::new();
        for _ in 0..50 {
            seen.extend(w.wait(100).unwrap());
            if seen.iter().any(|e| e.mask & libc::FAN_ATTRIB != 0) {
                break;
            }
        }
        std::fs::remove_dir_all(&sub).unwrap();
        let a = seen
            .iter()
            .find(|e| e.mask & libc::FAN_ATTRIB != 0)
            .expect("an attribute event");
        // Reported as the directory with the name "." (and no object).
        assert!(a.mask & libc::FAN_ONDIR != 0, "{a:?}");
        assert!(a.dir.is_some() && a.name.as_deref() == Some(b"."), "{a:?}");
    }
}
