//! roam's logic: configuration, membership, placement, the process table,
//! spawning and supervising remote processes, and the home-side proxy.

pub mod config;
