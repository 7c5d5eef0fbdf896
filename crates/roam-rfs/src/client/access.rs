//! Access checks answered on the node, for a while.
//!
//! access(2) and chdir(2) on this file system become ACCESS requests, each
//! a round trip to the home, whose file server checks them as the user:
//! every start of a remote program makes three (its root, twice, and its
//! working directory), every restore one. An allowed check is remembered
//! per (file, uid, gid) for as long as the kernel keeps the file's
//! attributes: the watched lifetime for a file the home watches (it sends
//! a notice when the file changes, which forgets what was remembered of
//! it), the short one for the others. A denial is never remembered, and a
//! file's remembered checks go when its mode or owner is set from here or
//! the kernel forgets it. What a remembered check allows is the check
//! only: every operation on the file is still made by the home, as the
//! user.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::calls::lock;

/// The most files with remembered checks; past it all are forgotten.
pub(crate) const MAX_FILES: usize = 4096;

/// One user's allowed checks of a file: (uid, gid, mask bits, until).
type Allowed = Vec<(u32, u32, u32, Instant)>;

#[derive(Default)]
pub(crate) struct Accesses {
    allowed: Mutex<HashMap<u64, Allowed>>,
    /// Files the home watches (from their attributes).
    watched: Mutex<HashSet<u64>>,
}

impl Accesses {
    /// Whether `(uid, gid)` was allowed `mask` on `node` and still is to
    /// be believed.
    pub(crate) fn allowed(&self, node: u64, uid: u32, gid: u32, mask: u32) -> bool {
        let now = Instant::now();
        lock(&self.allowed).get(&node).is_some_and(|v| {
            v.iter().any(|&(u, g, bits, until)| {
                u == uid && g == gid && mask & !bits == 0 && now < until
            })
        })
    }

    /// The home allowed `(uid, gid)` `mask` on `node`.
    pub(crate) fn note(
        &self,
        node: u64,
        uid: u32,
        gid: u32,
        mask: u32,
        ttls: (Duration, Duration),
    ) {
        let ttl = if lock(&self.watched).contains(&node) {
            ttls.1
        } else {
            ttls.0
        };
        let until = Instant::now() + ttl;
        let mut all = lock(&self.allowed);
        if all.len() >= MAX_FILES && !all.contains_key(&node) {
            all.clear();
        }
        let v = all.entry(node).or_default();
        match v.iter_mut().find(|e| e.0 == uid && e.1 == gid) {
            // Checks still believed add up; an old one is replaced.
            Some(e) if Instant::now() < e.3 => {
                e.2 |= mask;
                e.3 = e.3.min(until);
            }
            Some(e) => *e = (uid, gid, mask, until),
            None => v.push((uid, gid, mask, until)),
        }
    }

    /// Whether the home watches `node` (from attributes it sent).
    pub(crate) fn set_watched(&self, node: u64, watched: bool) {
        let mut w = lock(&self.watched);
        if watched {
            if w.len() >= MAX_FILES * 4 {
                w.clear();
            }
            w.insert(node);
        } else {
            w.remove(&node);
        }
    }

    /// Forgets what was remembered of `node` (it changed, or the kernel
    /// forgot it).
    pub(crate) fn forget(&self, node: u64) {
        lock(&self.allowed).remove(&node);
        lock(&self.watched).remove(&node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTLS: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));

    #[test]
    fn an_allowed_check_is_remembered_per_user_and_mask() {
        let a = Accesses::default();
        assert!(!a.allowed(5, 1000, 1000, 1));
        a.note(5, 1000, 1000, libc::X_OK as u32, TTLS);
        assert!(a.allowed(5, 1000, 1000, libc::X_OK as u32));
        assert!(
            a.allowed(5, 1000, 1000, 0),
            "existence comes with any check"
        );
        assert!(!a.allowed(5, 1000, 1000, (libc::X_OK | libc::W_OK) as u32));
        assert!(!a.allowed(5, 1001, 1000, libc::X_OK as u32), "another user");
        assert!(
            !a.allowed(5, 1000, 1001, libc::X_OK as u32),
            "another group"
        );
        assert!(!a.allowed(6, 1000, 1000, libc::X_OK as u32), "another file");
        a.note(5, 1000, 1000, libc::W_OK as u32, TTLS);
        assert!(a.allowed(5, 1000, 1000, (libc::X_OK | libc::W_OK) as u32));
    }

    #[test]
    fn a_changed_file_and_an_expired_check_are_asked_again() {
        let a = Accesses::default();
        a.set_watched(5, true);
        a.note(5, 0, 0, 1, TTLS);
        a.note(6, 0, 0, 1, (Duration::ZERO, Duration::from_secs(30)));
        assert!(a.allowed(5, 0, 0, 1), "watched: the long lifetime");
        assert!(!a.allowed(6, 0, 0, 1), "not watched: the short one");
        a.forget(5);
        assert!(!a.allowed(5, 0, 0, 1));
        a.note(5, 0, 0, 1, (Duration::ZERO, Duration::ZERO));
        assert!(!a.allowed(5, 0, 0, 1));
    }

    #[test]
    fn the_table_stays_bounded() {
        let a = Accesses::default();
        for node in 0..MAX_FILES as u64 + 10 {
            a.note(node, 0, 0, 1, TTLS);
        }
        assert!(lock(&a.allowed).len() <= MAX_FILES);
        assert!(a.allowed(MAX_FILES as u64 + 9, 0, 0, 1));
    }
}
