//! roam's remote file system: a remote process sees the home node's files.
//!
//! - [`server`]: the home's file server. It performs each request with the
//!   credentials of the user whose process made it (per-thread fsuid, fsgid
//!   and groups), never as root on a user's behalf.
//! - [`client`]: the node's FUSE file system. It forwards every operation
//!   to the home through a [`client::Transport`] (the cluster's
//!   authenticated link) and lets the kernel cache attributes, entries and
//!   pages, which the home invalidates when files change.
//!
//! The messages are `roam_proto::fs`.

pub mod client;
pub mod server;
pub mod watch;
