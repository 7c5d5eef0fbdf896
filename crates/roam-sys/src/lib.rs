//! The only crate in roam that speaks raw Linux ABI. Every `unsafe` block
//! carries a `// SAFETY:` comment; everything exported is safe to call.
//!
//! - [`aio`]: registering descriptors with the tokio reactor;
//! - [`files`]: the file server's system calls (`*at` calls on
//!   descriptors, locks, extended attributes), for `roam-rfs`;
//! - [`cred`]: peer credentials of Unix sockets, user names, umask;
//! - [`fsid`]: acting as a user on one thread (fsuid, fsgid, groups,
//!   umask), for the home's file server;
//! - [`procfs`]: what roam reads from `/proc` (CPU and memory use, process
//!   state and usage, the host name);
//! - [`signal`]: wire ⇄ native signal numbers, sending signals, dying by one;
//! - [`spawn`]: starting a process with a user's credentials, and reaping;
//! - [`seccomp`]: seccomp user notification (a supervisor answers chosen
//!   system calls of a process), and the target's memory;
//! - [`confine`]: the calls a confined program may make;
//! - [`pty`]: pseudo-terminals, terminal modes, raw mode;
//! - [`title`]: a process's name as `ps` and `top` show it;
//! - [`ns`]: network and mount namespaces (the testbed), binfmt_misc;
//! - [`ptrace`], [`remote`]: stopping a process from outside, reading
//!   its state, and system calls injected into it (checkpoint/restore);
//! - [`mem`]: giving the allocator's free memory back to the system.
//! - [`uffd`]: dirty-page tracking of another process (userfaultfd in
//!   async write-protect mode, the PAGEMAP_SCAN ioctl), for live migration.

pub mod aio;
pub mod confine;
pub mod cred;
pub mod fanotify;
pub mod files;
pub mod fsid;
pub mod mem;
pub mod ns;
pub mod procfs;
#[cfg(target_arch = "x86_64")]
pub mod ptrace;
pub mod pty;
#[cfg(target_arch = "x86_64")]
pub mod remote;
pub mod seccomp;
pub mod signal;
pub mod spawn;
pub mod title;
pub mod uffd;
pub mod wake;
