//! roam's checkpoint/restore engine (issue 6). So far: the image format
//! ([`image`]); the capture layer's system calls are in `roam_sys::ptrace`.
//! See docs/design/checkpoint.md.

#[cfg(target_arch = "x86_64")]
pub mod capture;
pub mod image;
#[cfg(target_arch = "x86_64")]
pub mod local;
#[cfg(target_arch = "x86_64")]
pub mod postcopy;
#[cfg(target_arch = "x86_64")]
pub mod precopy;
#[cfg(target_arch = "x86_64")]
pub mod restore;
pub mod steps;
#[cfg(target_arch = "x86_64")]
pub mod stubs;
#[cfg(test)]
mod testutil;
