//! An eventfd that ends another thread's `poll` early: put among the
//! descriptors a thread waits on, written by whoever needs it to look
//! again (to stop, or to see a new descriptor) instead of waiting out its
//! timeout.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

#[derive(Debug)]
pub struct Wake(OwnedFd);

impl Wake {
    pub fn new() -> io::Result<Wake> {
        // SAFETY: eventfd takes an initial value and flags.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor that nothing else owns.
        Ok(Wake(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Makes the descriptor readable (until [`Wake::clear`]).
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), (&raw const one).cast(), 8) };
    }

    /// Makes it unreadable again; whether it had been woken.
    pub fn clear(&self) -> bool {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from a non-blocking eventfd.
        unsafe { libc::read(self.0.as_raw_fd(), (&raw mut v).cast(), 8) == 8 }
    }
}

impl AsFd for Wake {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wake_ends_a_poll_until_cleared() {
        let w = Wake::new().unwrap();
        let readable = |w: &Wake| {
            let mut p = libc::pollfd {
                fd: w.as_fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one live pollfd.
            unsafe { libc::poll(&mut p, 1, 0) == 1 }
        };
        assert!(!readable(&w));
        assert!(!w.clear());
        w.wake();
        w.wake();
        assert!(readable(&w));
        assert!(w.clear());
        assert!(!readable(&w));
    }
}
