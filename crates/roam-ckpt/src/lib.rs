//! roam's checkpoint/restore engine (issue 6). So far: the image format
//! ([`image`]); the capture layer's system calls are in `roam_sys::ptrace`.
//! See docs/design/checkpoint.md.

pub mod image;
