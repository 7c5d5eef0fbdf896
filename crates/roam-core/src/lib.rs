//! roam's logic: configuration, membership, placement, the process table,
//! spawning and supervising remote processes, and the home-side proxy.
//!
//! - [`config`]: roamd's TOML configuration;
//! - [`home`]: the home role (membership, placement, process table, relay);
//! - [`node`]: the node role (running and supervising remote processes);
//! - [`proxy`]: the proxy that stands for a remote process on the home node;
//! - [`client`]: talking to the local roamd;
//! - [`placement`]: the placement policy;
//! - [`stream`]: resumable, flow-controlled byte streams;
//! - [`daemon`]: wiring the roles together.

pub mod client;
pub mod config;
pub mod daemon;
pub mod home;
pub mod node;
pub mod placement;
pub mod proxy;
pub mod stream;
mod wire;
