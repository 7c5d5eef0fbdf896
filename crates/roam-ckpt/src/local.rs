//! Checkpoint and restore on this machine: what `roam checkpoint PID -o
//! DIR` does for a local pid, and `roam restore DIR` without a node,
//! whose process becomes the restored process's parent and proxy (its
//! stdio, the signals it catches, its exit status).

use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::capture::{capture_held, CaptureError};
use crate::image::{write_atomically, ImageError};
use crate::restore::{restore, Image, RestoreError, RestoreOpts, Restored};

/// The image's file in a checkpoint directory.
pub const IMAGE_FILE: &str = "roam.img";

/// Images above this size show progress while being written.
const PROGRESS_ABOVE: u64 = 64 << 20;

#[derive(Debug, Error)]
pub enum LocalError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("cannot write the image {path}")]
    Write { path: PathBuf, source: io::Error },
}

/// What a checkpoint measured.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    /// Memory stored (bytes of pages).
    pub stored: u64,
    /// The image file's size.
    pub image: u64,
    /// From the first stop to the process running again, or killed once
    /// its image is written.
    pub frozen: Duration,
    /// The whole checkpoint, image written and synced.
    pub total: Duration,
}

/// Captures `pid` into `dir`/roam.img (written whole or not at all);
/// `progress(done, total)` is called as a large image is written. Without
/// `leave_running` the process is killed only once its image is written
/// and synced: if writing fails (a full disk), it runs on.
pub fn checkpoint(
    pid: i32,
    dir: &Path,
    leave_running: bool,
    mut progress: impl FnMut(u64, u64),
) -> Result<Report, LocalError> {
    let t0 = Instant::now();
    let path = dir.join(IMAGE_FILE);
    let werr = |source| LocalError::Write {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(werr)?;
    let (c, held) = capture_held(pid)?;
    // With `leave_running`, it runs on while the image is written; else it
    // stays stopped until the image is safe, and runs on if it is not.
    let held = if leave_running {
        held.release(false)?;
        None
    } else {
        Some(held)
    };
    let frozen = t0.elapsed();
    let total_bytes: u64 = c.sections.iter().map(|s| s.payload.len() as u64).sum();
    let show = total_bytes > PROGRESS_ABOVE;
    let mut done = 0u64;
    let written = write_atomically(&path, |w| {
        for s in &c.sections {
            w.section(s.kind, &s.payload)?;
            done += s.payload.len() as u64;
            if show {
                progress(done, total_bytes);
            }
        }
        Ok(())
    })
    .map_err(werr);
    if let Some(held) = held {
        held.release(written.is_ok())?;
    }
    written?;
    let frozen = if leave_running { frozen } else { t0.elapsed() };
    let image = std::fs::metadata(&path).map_err(werr)?.len();
    Ok(Report {
        stored: c.stored_bytes,
        image,
        frozen,
        total: t0.elapsed(),
    })
}

/// Rebuilds the image in `dir` as a child of the caller, on the caller's
/// stdio, with the image's credentials (the caller must be root) and pid
/// if free.
pub fn restore_here(dir: &Path) -> Result<Restored, LocalError> {
    let img = Image::load(&dir.join(IMAGE_FILE))?;
    let opts = RestoreOpts {
        stdio: [0, 1, 2],
        same_pid: true,
        new_session: false,
        creds: true,
        user: None,
        supervise: None,
        pdeathsig: None,
        root: None,
    };
    Ok(restore(&img, &opts)?)
}

/// How the restored process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Killed(i32),
}

/// Stands for the restored child `pid` until it ends: every signal the
/// caller catches (`signals`, delivered as bytes on `caught`, see
/// `roam_sys::signal::catch_into_pipe`) is passed on; when the child
/// stops, so does the caller (job control), continuing it when continued.
pub fn proxy(pid: i32, caught: &OwnedFd) -> io::Result<Ended> {
    // SAFETY: pidfd_open takes a pid and flags; returns a descriptor.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if pidfd < 0 {
        return Err(io::Error::last_os_error());
    }
    let result = (|| loop {
        let mut fds = [
            libc::pollfd {
                fd: caught.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: pidfd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: polls two live pollfds; a stop is looked for every
        // 100 ms (a pidfd says only when the process ends).
        unsafe { libc::poll(fds.as_mut_ptr(), 2, 100) };
        let mut sigs = [0u8; 64];
        // SAFETY: reads into a live buffer from the non-blocking pipe.
        let n = unsafe { libc::read(caught.as_raw_fd(), sigs.as_mut_ptr().cast(), sigs.len()) };
        for &s in &sigs[..n.max(0) as usize] {
            let _ = roam_sys::signal::kill(pid, i32::from(s));
        }
        let mut st = 0;
        // SAFETY: waits on our own child into a live int.
        let rc = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG | libc::WUNTRACED) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        if rc == 0 {
            continue;
        }
        if libc::WIFEXITED(st) {
            return Ok(Ended::Exited(libc::WEXITSTATUS(st)));
        }
        if libc::WIFSIGNALED(st) {
            return Ok(Ended::Killed(libc::WTERMSIG(st)));
        }
        if libc::WIFSTOPPED(st) {
            io::stdout().flush()?;
            roam_sys::signal::stop_self();
            let _ = roam_sys::signal::kill(pid, libc::SIGCONT);
        }
    })();
    // SAFETY: closing the pidfd we opened.
    unsafe { libc::close(pidfd) };
    result
}
