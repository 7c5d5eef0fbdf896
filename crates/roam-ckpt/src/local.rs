//! Checkpoint and restore on this machine: what `roam checkpoint PID -o
//! DIR` does for a local pid, and `roam restore DIR` without a node,
//! whose process becomes the restored process's parent and proxy (its
//! stdio, the signals it catches, its exit status).

use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::capture::{capture_pending, kind, CaptureError, Captured, StreamError};
use crate::image::{decode_pages, write_atomically, ImageError, Section, PAGE};
use crate::precopy::{decode_held, PageStore, Tracker};
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
    #[error(transparent)]
    Stream(StreamError),
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
///
/// With `leave_running` the memory is copied out while the process runs
/// (a pre-copy round, its writes tracked), then it is stopped only to
/// copy what it wrote meanwhile and its other state, and the image is
/// written once it runs again (see [`live_capture`]). Without, it is read
/// out of the stopped process and written as it is read (a thread reading
/// while the other writes), with no copy held in between.
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
    // With `leave_running`, it runs on while the image is written; else it
    // stays stopped until the image is safe, and runs on if it is not.
    let (mut c, pages, held, frozen) = if leave_running {
        let (c, frozen) = live_capture(pid)?;
        (c, None, None, frozen)
    } else {
        let (c, pages, held) = capture_pending(pid, 0, None)?;
        (c, Some(pages), Some(held), Duration::ZERO)
    };
    let total_bytes: u64 = c
        .sections
        .iter()
        .map(|s| s.payload.len() as u64)
        .sum::<u64>()
        + pages.as_ref().map_or(0, |p| p.max_bytes());
    let show = total_bytes > PROGRESS_ABOVE;
    let mut done = 0u64;
    let mut step = |n: usize| {
        done += n as u64;
        if show {
            progress(done.min(total_bytes), total_bytes);
        }
    };
    let mut streamed = None;
    let written = write_atomically(&path, |w| {
        for s in &c.sections {
            w.section(s.kind, &s.payload)?;
            step(s.payload.len());
        }
        if let Some(pages) = &pages {
            let r = w.section_streamed(kind::PAGES, |sink| {
                Ok(pages.stream(|piece, crc| {
                    sink(piece, Some(crc))?;
                    step(piece.len());
                    Ok(())
                }))
            })?;
            match r {
                Ok(stored) => c.stored_bytes = stored,
                // The sink's own error (a full disk) is the write's.
                Err(StreamError::Sink(e)) => return Err(e),
                Err(e) => {
                    streamed = Some(e);
                    return Err(io::Error::other("the memory could not be read"));
                }
            }
        }
        Ok(())
    });
    if let Some(held) = held {
        held.release(written.is_ok())?;
    }
    if let Some(e) = streamed {
        return Err(LocalError::Stream(e));
    }
    written.map_err(werr)?;
    let frozen = if leave_running { frozen } else { t0.elapsed() };
    let image = std::fs::metadata(&path).map_err(werr)?.len();
    Ok(Report {
        stored: c.stored_bytes,
        image,
        frozen,
        total: t0.elapsed(),
    })
}

/// Captures `pid` and lets it run on, stopping it as briefly as its
/// writes allow: one pre-copy round reads every page while it runs (its
/// writes tracked, see [`crate::precopy`]); then it is stopped, and only
/// the pages written since are read, with the rest of its state. The
/// image's PAGES are the round's copy of the clean pages and the pages
/// read stopped, merged. Where writes cannot be tracked (an older kernel),
/// every page is read stopped. Returns the sections and how long the
/// process was stopped.
fn live_capture(pid: i32) -> Result<(Captured, Duration), LocalError> {
    let mut tracked = Tracker::start(pid).ok().and_then(|mut t| {
        let round = t.round().ok()?;
        let mut store = PageStore::default();
        store.add(round.pages, u64::MAX).ok()?;
        Some((t, store))
    });
    let t0 = Instant::now();
    let (mut c, pages, held) = capture_pending(pid, 0, tracked.as_mut().map(|(t, _)| t))?;
    let read = pages.read_all();
    held.release(false)?;
    let frozen = t0.elapsed();
    let (dirty, stored) = read?;
    let held_runs = match c.sections.iter().position(|s| s.kind == kind::PRECOPIED) {
        Some(i) => decode_held(&c.sections.remove(i).payload)?,
        None => Vec::new(),
    };
    let payload = match (&tracked, held_runs.is_empty()) {
        (Some((_, store)), false) => merge_pages(&dirty, &held_runs, store)?,
        _ => dirty,
    };
    c.stored_bytes = stored
        + held_runs
            .iter()
            .map(|&(_, n)| (n * PAGE) as u64)
            .sum::<u64>();
    c.sections.push(Section {
        kind: kind::PAGES,
        payload,
    });
    Ok((c, frozen))
}

/// One PAGES section out of the pages read stopped (`dirty`, encoded) and
/// the runs `held` in the pre-copy's `store`, in address order.
fn merge_pages(
    dirty: &[u8],
    held: &[(u64, usize)],
    store: &PageStore,
) -> Result<Vec<u8>, LocalError> {
    let mut runs: Vec<(u64, &[u8])> = decode_pages(dirty)?
        .into_iter()
        .map(|r| (r.addr, r.data))
        .collect();
    for &(addr, n) in held {
        let slices = store.slices(addr, n).map_err(|a| {
            LocalError::Image(ImageError::Pages(format!("the pre-copy lost page {a:#x}")))
        })?;
        runs.extend(slices);
    }
    runs.sort_unstable_by_key(|r| r.0);
    let mut out = Vec::with_capacity(runs.iter().map(|r| 12 + r.1.len()).sum());
    roam_sys::mem::huge_pages_for(&mut out);
    for (addr, data) in runs {
        out.extend_from_slice(&addr.to_le_bytes());
        out.extend_from_slice(&((data.len() / PAGE) as u32).to_le_bytes());
        out.extend_from_slice(data);
    }
    // Checked as a restore will: in order, not overlapping.
    decode_pages(&out)?;
    Ok(out)
}

/// Rebuilds the image in `dir` as a child of the caller, on the caller's
/// stdio, with the image's credentials (the caller must be root) and pid
/// if free.
pub fn restore_here(dir: &Path) -> Result<Restored, LocalError> {
    let img = Image::load(&dir.join(IMAGE_FILE))?;
    let opts = RestoreOpts {
        creds: true,
        ..RestoreOpts::plain([0, 1, 2])
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
