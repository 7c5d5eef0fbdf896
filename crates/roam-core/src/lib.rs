//! roam's logic: configuration, membership, placement, the process table,
//! spawning and supervising remote processes, and the home-side proxy.
//!
//! - [`config`]: roamd's TOML configuration;
//! - [`home`]: the home role (membership, placement, process table, relay);
//! - [`node`]: the node role (running and supervising remote processes);
//! - [`identity`]: a remote process's home identity (seccomp supervisor on
//!   nodes, signals to home pids at home);
//! - [`proxy`]: the proxy that stands for a remote process on the home node;
//! - [`locate`]: finding a program and reading its architecture before placing it;
//! - [`client`]: talking to the local roamd;
//! - [`binfmt`]: binfmt_misc entries for transparent exec of foreign programs;
//! - [`placement`]: the placement policy;
//! - [`balance`]: the automatic balancer's policy;
//! - [`runner`]: running foreign-architecture programs (qemu-user);
//! - [`stream`]: resumable, flow-controlled byte streams;
//! - [`daemon`]: wiring the roles together.

pub mod balance;
pub mod binfmt;
pub mod ckpt_client;
pub mod client;
pub mod config;
pub mod daemon;
pub mod fault;
pub mod home;
pub mod identity;
pub mod locate;
pub mod node;
mod node_files;
pub mod placement;
pub mod proxy;
pub mod runner;
pub mod stream;
mod wire;

/// An error and its sources, one line: `what: why: deeper why`.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
