//! Registering owned descriptors with tokio's reactor.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;

use tokio::io::unix::AsyncFd;

/// Registers `fd` (which should be non-blocking) with the reactor of the
/// current tokio runtime, as a `File` the `AsyncFd` owns.
pub fn async_file(fd: OwnedFd) -> io::Result<AsyncFd<File>> {
    let file = File::from(fd);
    // SAFETY: the `File` owns its descriptor, which stays open and refers to
    // the same file description until the `File` is dropped with the
    // `AsyncFd`; `File::as_raw_fd` always returns that one descriptor.
    unsafe { AsyncFd::register(file) }.map_err(io::Error::from)
}
