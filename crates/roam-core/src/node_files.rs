//! A node's side of the remote file system: the link transport its FUSE
//! client calls through, and the users' groups it sends with each call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use roam_proto::fs::{FsOp, FsReply};
use roam_proto::link::LinkMsg;
use roam_proto::types::Cred;
use roam_rfs::client::Transport;

use crate::wire::FrameTx;

type Done = Box<dyn FnOnce(FsReply) + Send>;

/// File-system calls to the home over the cluster link. A call made while
/// the link is down fails at once with EIO; calls in flight when it goes
/// down fail then (the FUSE client also gives up on a call after its own
/// timeout).
#[derive(Default)]
pub struct LinkTransport {
    link: Mutex<Option<FrameTx>>,
    pending: Mutex<HashMap<u64, Done>>,
    next: AtomicU64,
    /// Supplementary groups of the users whose processes run here, from
    /// their spawn requests (the kernel's FUSE requests carry only uid and
    /// gid).
    groups: Mutex<HashMap<u32, Vec<u32>>>,
    /// The epoch of the home's file server at the other end (see
    /// `LinkHelloReply::Welcome`).
    epoch: AtomicU64,
}

impl LinkTransport {
    /// The home said which file server answers (before the link is up).
    pub fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    /// The link is up (`Some`) or down (`None`).
    pub fn set_link(&self, link: Option<FrameTx>) {
        let down = link.is_none();
        *self.link.lock().unwrap() = link;
        if down {
            let failed: Vec<Done> = self
                .pending
                .lock()
                .unwrap()
                .drain()
                .map(|(_, d)| d)
                .collect();
            for done in failed {
                done(FsReply::Err(libc::EIO));
            }
        }
    }

    /// The home's answer to call `req`.
    pub fn complete(&self, req: u64, reply: FsReply) {
        let done = self.pending.lock().unwrap().remove(&req);
        match done {
            Some(done) => done(reply),
            None => tracing::debug!("file-system answer {req} for no pending call"),
        }
    }

    /// Remembers a user's groups (from a process's credentials).
    pub fn note_user(&self, cred: &Cred) {
        self.groups
            .lock()
            .unwrap()
            .insert(cred.uid, cred.groups.clone());
    }

    /// The groups of `uid` as last seen (only the primary group if never).
    pub fn groups_of(&self, uid: u32, gid: u32) -> Vec<u32> {
        self.groups
            .lock()
            .unwrap()
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| vec![gid])
    }
}

impl Transport for LinkTransport {
    fn call(&self, cred: Cred, op: FsOp, done: Box<dyn FnOnce(FsReply) + Send>) {
        let link = self.link.lock().unwrap().clone();
        let Some(link) = link else {
            done(FsReply::Err(libc::EIO));
            return;
        };
        let req = self.next.fetch_add(1, Ordering::Relaxed);
        self.pending.lock().unwrap().insert(req, done);
        let sent = link.send(
            "link",
            &LinkMsg::Fs {
                req,
                cred,
                op: Box::new(op),
            },
        );
        if !sent {
            if let Some(done) = self.pending.lock().unwrap().remove(&req) {
                done(FsReply::Err(libc::EIO));
            }
        }
    }
}

/// The link transport as one mount of the home's files uses it: node ids
/// belong to one file server, so calls go through only while the home's
/// server is the one the mount was first used with; otherwise (the home
/// restarted, or declared the node down and dropped its server) they fail
/// with EIO, and the node mounts the files afresh.
pub struct MountTransport {
    link: Arc<LinkTransport>,
    /// 0 until the first link binds it.
    epoch: AtomicU64,
}

impl MountTransport {
    /// A transport for a new mount, bound to `epoch` (0: to the next
    /// link's).
    pub fn new(link: Arc<LinkTransport>, epoch: u64) -> Arc<MountTransport> {
        Arc::new(MountTransport {
            link,
            epoch: AtomicU64::new(epoch),
        })
    }

    /// Whether the mount can be used with file server `epoch` (binding it
    /// if it was not yet).
    pub fn bind(&self, epoch: u64) -> bool {
        match self
            .epoch
            .compare_exchange(0, epoch, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => true,
            Err(mine) => mine == epoch,
        }
    }
}

impl Transport for MountTransport {
    fn call(&self, cred: Cred, op: FsOp, done: Box<dyn FnOnce(FsReply) + Send>) {
        let mine = self.epoch.load(Ordering::SeqCst);
        if mine == 0 || mine != self.link.epoch.load(Ordering::SeqCst) {
            done(FsReply::Err(libc::EIO));
            return;
        }
        self.link.call(cred, op, done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn calls_without_a_link_fail_with_eio() {
        let t = LinkTransport::default();
        assert_eq!(call(&t), Some(FsReply::Err(libc::EIO)));
        t.complete(99, FsReply::Ok); // unknown: ignored
    }

    fn call(t: &dyn Transport) -> Option<FsReply> {
        let got = Arc::new(Mutex::new(None));
        let g = got.clone();
        t.call(
            Cred {
                uid: 1,
                gid: 1,
                groups: vec![],
            },
            FsOp::StatFs { node: 1 },
            Box::new(move |r| *g.lock().unwrap() = Some(r)),
        );
        let r = got.lock().unwrap().take();
        r
    }

    #[test]
    fn a_mount_only_talks_to_the_file_server_it_was_bound_to() {
        let link = Arc::new(LinkTransport::default());
        let (tx, _rx) = FrameTx::new();
        link.set_epoch(7);
        link.set_link(Some(tx));
        let m = MountTransport::new(link.clone(), 0);
        // Not yet bound: EIO.
        assert_eq!(call(&*m), Some(FsReply::Err(libc::EIO)));
        assert!(m.bind(7));
        assert!(m.bind(7));
        // Bound and current: the call goes out (no answer yet).
        assert_eq!(call(&*m), None);
        // Another server: refused, and calls fail at once.
        link.set_epoch(8);
        assert!(!m.bind(8));
        assert_eq!(call(&*m), Some(FsReply::Err(libc::EIO)));
    }

    #[test]
    fn groups_are_remembered_per_user() {
        let t = LinkTransport::default();
        assert_eq!(t.groups_of(1000, 100), vec![100]);
        t.note_user(&Cred {
            uid: 1000,
            gid: 100,
            groups: vec![100, 27],
        });
        assert_eq!(t.groups_of(1000, 100), vec![100, 27]);
    }
}
