//! What a call changes, and the notices that tell other nodes about it.
//!
//! Node ids belong to one link's server, so a change is named by what all
//! servers share: the inode's (st_dev, st_ino). The home turns each change
//! (made by a node through its server, or on the home itself, seen by the
//! fanotify watcher) into a notice for every other link whose node knows
//! the inode or the directory.

use roam_proto::fs::{FsNotice, FsOp, NodeId};
use serde_bytes::ByteBuf;

use super::{lock, Server};

/// An inode, as every server names it: (st_dev, st_ino).
pub type InodeKey = (u64, u64);

/// A change to the home's files.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Change {
    /// The inode's data or attributes changed.
    Inode(InodeKey),
    /// A name in the directory appeared, went away or now names another
    /// inode.
    Entry { dir: InodeKey, name: Vec<u8> },
}

impl Server {
    fn key_of_node(&self, id: NodeId) -> Option<InodeKey> {
        lock(&self.nodes).by_id.get(&id).map(|n| n.key)
    }

    fn key_of_handle(&self, fh: u64) -> Option<InodeKey> {
        let node = lock(&self.handles).map.get(&fh)?.node;
        self.key_of_node(node)
    }

    /// What `op` changes if it succeeds (read before performing it: it
    /// names nodes and handles the call may forget or close).
    pub fn changes_of(&self, op: &FsOp) -> Vec<Change> {
        let mut out = Vec::new();
        let mut inode = |k: Option<InodeKey>| {
            if let Some(k) = k {
                out.push(Change::Inode(k));
            }
        };
        let mut names: Vec<(NodeId, &[u8])> = Vec::new();
        match op {
            FsOp::SetAttr { node, .. }
            | FsOp::SetXattr { node, .. }
            | FsOp::RemoveXattr { node, .. } => inode(self.key_of_node(*node)),
            FsOp::Open { node, flags } if flags & libc::O_TRUNC != 0 => {
                inode(self.key_of_node(*node))
            }
            FsOp::Write { fh, .. } | FsOp::Fallocate { fh, .. } => inode(self.key_of_handle(*fh)),
            FsOp::CopyFileRange { fh_out, .. } => inode(self.key_of_handle(*fh_out)),
            FsOp::MkNod { parent, name, .. }
            | FsOp::MkDir { parent, name, .. }
            | FsOp::Unlink { parent, name }
            | FsOp::RmDir { parent, name }
            | FsOp::Symlink { parent, name, .. }
            | FsOp::Create { parent, name, .. } => names.push((*parent, name)),
            FsOp::Link {
                node,
                new_parent,
                new_name,
            } => {
                inode(self.key_of_node(*node));
                names.push((*new_parent, new_name));
            }
            FsOp::Rename {
                parent,
                name,
                new_parent,
                new_name,
                ..
            } => {
                names.push((*parent, name));
                names.push((*new_parent, new_name));
            }
            _ => {}
        }
        for (dir, name) in names {
            if let Some(dir) = self.key_of_node(dir) {
                out.push(Change::Inode(dir));
                out.push(Change::Entry {
                    dir,
                    name: name.to_vec(),
                });
            }
        }
        out
    }

    /// The notice that tells this server's node about `change`, if its
    /// node knows the inode or directory (a node that never looked it up
    /// has nothing cached).
    pub fn notice(&self, change: &Change) -> Option<FsNotice> {
        let nodes = lock(&self.nodes);
        match change {
            Change::Inode(k) => nodes.by_key.get(k).map(|&node| FsNotice::Inode { node }),
            Change::Entry { dir, name } => nodes.by_key.get(dir).map(|&parent| FsNotice::Entry {
                parent,
                name: ByteBuf::from(name.clone()),
            }),
        }
    }
}
