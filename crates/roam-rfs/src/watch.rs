//! The home's watch on the file systems it exports: changes made on the
//! home (by anything but roamd itself, whose changes on a node's behalf
//! the home reports directly) become [`Change`]s for the links' servers to
//! turn into notices.
//!
//! Every file system mounted at or below the export root is marked with
//! fanotify (`FAN_MARK_FILESYSTEM`); those that cannot be (no file
//! handles, no permission) stay unwatched, and their files are given the
//! short cache lifetimes.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use roam_sys::fanotify::{self, Event, Fsid, Watcher};
use roam_sys::files::{self as sys, FileHandle};

use crate::server::{Change, InodeKey, WatchedDevs};

/// At most this many handles' inode keys are remembered between events.
const KEY_CACHE: usize = 4096;

/// A running watch; stops when dropped.
pub struct Watch {
    stop: Arc<AtomicBool>,
    /// Whether anyone wants changes now (see [`Watch::set_listening`]).
    listening: Arc<AtomicBool>,
    waker: fanotify::Waker,
    thread: Option<JoinHandle<()>>,
}

/// A watched file system.
struct Fs {
    /// Any descriptor on it, for open_by_handle_at.
    anchor: OwnedFd,
}

impl Watch {
    /// Watches the file systems at and below `export`, adds their devices
    /// to `devs`, and calls `changed`, on the watch's thread, with the
    /// changes of each batch of events. Fails if fanotify is not available
    /// at all (no CAP_SYS_ADMIN).
    pub fn start(
        export: &Path,
        devs: WatchedDevs,
        changed: impl Fn(Vec<Change>) + Send + 'static,
    ) -> io::Result<Watch> {
        let watcher = Watcher::new()?;
        let mut filesystems: HashMap<Fsid, Fs> = HashMap::new();
        for path in mounts_under(export) {
            match watch_one(&watcher, &path) {
                Ok((fsid, dev, fs)) => {
                    devs.write().unwrap_or_else(|e| e.into_inner()).insert(dev);
                    filesystems.entry(fsid).or_insert(fs);
                }
                Err(e) => tracing::debug!("not watching {}: {e}", path.display()),
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let waker = watcher.waker();
        let listening = Arc::new(AtomicBool::new(true));
        let thread = {
            let (stop, listening) = (stop.clone(), listening.clone());
            std::thread::Builder::new()
                .name("roam-rfs-watch".into())
                .spawn(move || run(watcher, filesystems, &stop, &listening, changed))?
        };
        Ok(Watch {
            stop,
            listening,
            waker,
            thread: Some(thread),
        })
    }
}

impl Watch {
    /// Whether changes are wanted (true at start). While nobody listens
    /// (no node has files from the home), events are read and dropped
    /// without the work of naming what changed.
    pub fn set_listening(&self, on: bool) {
        self.listening.store(on, Ordering::SeqCst);
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Marks the file system of `path`; its fsid, device and anchor.
fn watch_one(watcher: &Watcher, path: &Path) -> io::Result<(Fsid, u64, Fs)> {
    let meta = std::fs::metadata(path)?;
    let anchor = std::fs::File::open(path)?.into();
    watcher.mark_filesystem(path)?;
    Ok((fanotify::fsid_of(path)?, meta.dev(), Fs { anchor }))
}

/// The export root and every mount point below it, from
/// /proc/self/mountinfo.
fn mounts_under(export: &Path) -> Vec<PathBuf> {
    let mut out = vec![export.to_path_buf()];
    for m in roam_sys::procfs::mounts().unwrap_or_default() {
        if m.point.starts_with(export) && m.point != export {
            out.push(m.point);
        }
    }
    out
}

fn run(
    mut watcher: Watcher,
    filesystems: HashMap<Fsid, Fs>,
    stop: &AtomicBool,
    listening: &AtomicBool,
    changed: impl Fn(Vec<Change>),
) {
    let me = std::process::id() as i32;
    let mut keys: HashMap<FileHandle, InodeKey> = HashMap::new();
    while !stop.load(Ordering::SeqCst) {
        let events = match watcher.wait(-1) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("the file-system watch failed: {e}");
                return;
            }
        };
        if !listening.load(Ordering::SeqCst) {
            continue;
        }
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for e in events.iter().filter(|e| e.pid != me) {
            for c in changes(e, &filesystems, &mut keys) {
                if seen.insert(c.clone()) {
                    out.push(c);
                }
            }
        }
        if !out.is_empty() {
            changed(out);
        }
    }
}

/// The changes one event reports.
fn changes(
    e: &Event,
    filesystems: &HashMap<Fsid, Fs>,
    keys: &mut HashMap<FileHandle, InodeKey>,
) -> Vec<Change> {
    if e.mask & fanotify::OVERFLOW != 0 {
        tracing::warn!("file-system events were lost: nodes may see stale files for a while");
        return Vec::new();
    }
    let Some(fs) = filesystems.get(&e.fsid) else {
        return Vec::new();
    };
    let mut key = |h: &FileHandle| -> Option<InodeKey> {
        if let Some(k) = keys.get(h) {
            return Some(*k);
        }
        // The inode may be gone already (ESTALE): nobody can have it
        // cached under a name any more, and its name's change comes as
        // its own event.
        let fd = sys::open_by_handle(fs.anchor.as_fd(), h, libc::O_PATH).ok()?;
        let st = sys::fstat(fd.as_fd()).ok()?;
        let k = (st.st_dev, st.st_ino);
        if keys.len() >= KEY_CACHE {
            keys.clear();
        }
        keys.insert(h.clone(), k);
        Some(k)
    };
    let mut out = Vec::new();
    if e.mask & fanotify::NAMES != 0 {
        if let (Some(dir), Some(name)) = (&e.dir, &e.name) {
            if let Some(dir) = key(dir) {
                out.push(Change::Inode(dir));
                out.push(Change::Entry {
                    dir,
                    name: name.clone(),
                });
            }
        }
    }
    if e.mask & fanotify::CHANGED != 0 {
        // A directory's own change names the directory, with ".".
        let own_dir = e.dir.as_ref().filter(|_| e.name.as_deref() == Some(b"."));
        if let Some(k) = e.object.as_ref().or(own_dir).and_then(&mut key) {
            out.push(Change::Inode(k));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_export_comes_first_and_mounts_below_it_follow() {
        let m = mounts_under(Path::new("/"));
        assert_eq!(m[0], Path::new("/"));
        assert!(m.iter().any(|p| p == Path::new("/proc")), "{m:?}");
        let m = mounts_under(Path::new("/proc"));
        assert!(m.iter().all(|p| p.starts_with("/proc")), "{m:?}");
    }
}
