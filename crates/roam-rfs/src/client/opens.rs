//! Read-only opens of watched files, kept for reuse.
//!
//! Every open(2) of a home file costs a round trip to the home (its file
//! server opens the file as the user, which checks the user's access). A
//! program's start-up opens the same libraries and modules each time. So
//! when a read-only open of a *watched* file is closed, its handle at the
//! home is kept, and the next read-only open of that file by the same user
//! (uid and gid) is answered here with it.
//!
//! That stays right because the home tells the node when a watched file
//! changes (its content, or its mode and owner, which decide who may open
//! it): the handles of a changed file are retired (closed at the home once
//! unused, never given out again). A file the kernel forgets has its idle
//! handles closed. At most [`MAX_KEPT`] handles are kept.

use std::collections::HashMap;
use std::sync::Mutex;

use super::calls::lock;

/// The most handles kept (in use or idle) for reuse.
pub(crate) const MAX_KEPT: usize = 4096;

/// (node, uid, gid).
type Key = (u64, u32, u32);

struct Entry {
    node: u64,
    /// None once retired: closed at its last release.
    key: Option<Key>,
    users: u32,
}

#[derive(Default)]
struct Inner {
    by_key: HashMap<Key, u64>,
    by_fh: HashMap<u64, Entry>,
    by_node: HashMap<u64, Vec<u64>>,
}

impl Inner {
    /// Removes `fh` (which must have no users) from every table.
    fn remove(&mut self, fh: u64) {
        let Some(e) = self.by_fh.remove(&fh) else {
            return;
        };
        if let Some(k) = e.key {
            self.by_key.remove(&k);
        }
        if let Some(v) = self.by_node.get_mut(&e.node) {
            v.retain(|&f| f != fh);
            if v.is_empty() {
                self.by_node.remove(&e.node);
            }
        }
    }
}

/// The kept handles.
#[derive(Default)]
pub(crate) struct Opens {
    inner: Mutex<Inner>,
}

impl Opens {
    /// A kept handle for `(node, uid, gid)`, now used once more.
    pub(crate) fn reuse(&self, node: u64, uid: u32, gid: u32) -> Option<u64> {
        let mut i = lock(&self.inner);
        let fh = *i.by_key.get(&(node, uid, gid))?;
        i.by_fh.get_mut(&fh)?.users += 1;
        Some(fh)
    }

    /// Keeps `fh`, just opened read-only by `(uid, gid)` and in use once,
    /// for reuse; false if it is not kept (one is kept already, or the
    /// table is full): close it at the home as usual.
    pub(crate) fn keep(&self, node: u64, uid: u32, gid: u32, fh: u64) -> bool {
        let mut i = lock(&self.inner);
        let key = (node, uid, gid);
        if i.by_fh.len() >= MAX_KEPT || i.by_key.contains_key(&key) {
            return false;
        }
        i.by_key.insert(key, fh);
        i.by_fh.insert(
            fh,
            Entry {
                node,
                key: Some(key),
                users: 1,
            },
        );
        i.by_node.entry(node).or_default().push(fh);
        true
    }

    /// A release of `fh`: whether to close it at the home (not a kept
    /// handle, or a retired one no longer used).
    pub(crate) fn release(&self, fh: u64) -> bool {
        let mut i = lock(&self.inner);
        let Some(e) = i.by_fh.get_mut(&fh) else {
            return true;
        };
        e.users = e.users.saturating_sub(1);
        if e.users == 0 && e.key.is_none() {
            i.remove(fh);
            return true;
        }
        false
    }

    /// The file changed at the home: its handles are given out no more;
    /// returns the unused ones, to close at the home.
    pub(crate) fn retire(&self, node: u64) -> Vec<u64> {
        let mut i = lock(&self.inner);
        let fhs = i.by_node.get(&node).cloned().unwrap_or_default();
        let mut idle = Vec::new();
        for fh in fhs {
            let Some(e) = i.by_fh.get_mut(&fh) else {
                continue;
            };
            if let Some(k) = e.key.take() {
                i.by_key.remove(&k);
            }
            if i.by_fh.get(&fh).is_some_and(|e| e.users == 0) {
                i.remove(fh);
                idle.push(fh);
            }
        }
        idle
    }

    /// How many handles are kept (in use or not).
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.inner).by_fh.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_handle_is_reused_by_the_same_user_only() {
        let o = Opens::default();
        assert_eq!(o.reuse(5, 1000, 100), None);
        assert!(o.keep(5, 1000, 100, 77));
        assert!(!o.keep(5, 1000, 100, 78), "one per file and user");
        assert!(!o.release(77), "kept, not closed");
        assert_eq!(o.reuse(5, 1000, 100), Some(77));
        assert_eq!(o.reuse(5, 1001, 100), None);
        assert_eq!(o.reuse(5, 1000, 101), None);
        assert_eq!(o.reuse(6, 1000, 100), None);
        assert!(!o.release(77));
        assert!(o.release(12345), "unknown handles are closed");
    }

    #[test]
    fn a_changed_file_retires_its_handles() {
        let o = Opens::default();
        assert!(o.keep(5, 1, 1, 10));
        assert!(o.keep(5, 2, 2, 11));
        assert!(!o.release(10)); // 10 idle, 11 in use
        let mut idle = o.retire(5);
        idle.sort();
        assert_eq!(idle, vec![10]);
        assert_eq!(o.reuse(5, 1, 1), None);
        assert_eq!(o.reuse(5, 2, 2), None);
        // The one in use closes at its release.
        assert!(o.release(11));
        assert_eq!(o.len(), 0);
        assert!(o.retire(5).is_empty());
        // A new open after the change is kept afresh.
        assert!(o.keep(5, 1, 1, 12));
        assert_eq!(o.reuse(5, 1, 1), Some(12));
    }

    #[test]
    fn the_table_is_bounded() {
        let o = Opens::default();
        for n in 0..MAX_KEPT as u64 {
            assert!(o.keep(n, 0, 0, n + 1));
        }
        assert!(!o.keep(u64::MAX, 0, 0, 0));
        assert_eq!(o.len(), MAX_KEPT);
    }
}
