//! Userfaultfds of other processes, for two uses.
//!
//! Filling a process being rebuilt ([`enable_missing`],
//! [`register_missing`], [`copy`]): its mappings registered for missing
//! pages, `UFFDIO_COPY` allocates each page and fills it in one step.
//!
//! Dirty-page tracking of another process without soft-dirty bits: a
//! userfaultfd of the target's (made by a call injected into it, taken
//! with pidfd_getfd) in asynchronous write-protect mode
//! (`UFFD_FEATURE_WP_ASYNC`, Linux 6.7), and the `PAGEMAP_SCAN` ioctl on
//! its /proc/PID/pagemap, which lists the pages written since they were
//! last protected and protects them again in the same walk.
//!
//! In async mode a write to a protected page never waits for anyone: the
//! kernel lifts the protection (the page counts as written) and the
//! writer goes on. So nobody reads the userfaultfd; it only has to stay
//! open while tracking lasts.
//!
//! A hole (a page never populated) counts as written until a protecting
//! scan marks it; the mark (a uffd-wp pte marker) then shows in
//! /proc/PID/pagemap as a swapped page. Scans that should leave holes
//! alone ask for present or swapped pages (`Scan::anyof`). The system headers of this machine predate
//! these calls: their numbers and layouts are written here, checked
//! against the kernel's uapi (include/uapi/linux/fs.h, userfaultfd.h).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `UFFD_API`.
const UFFD_API: u64 = 0xAA;
/// `UFFD_FEATURE_WP_ASYNC`.
const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
/// `UFFDIO_REGISTER_MODE_MISSING`.
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1 << 0;
/// `UFFDIO_REGISTER_MODE_WP`.
const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
/// `_IOWR(0xAA, 0x3F, struct uffdio_api)`.
const UFFDIO_API: libc::c_ulong = 0xC018_AA3F;
/// `_IOWR(0xAA, 0x00, struct uffdio_register)`.
const UFFDIO_REGISTER: libc::c_ulong = 0xC020_AA00;
/// `_IOWR(0xAA, 0x03, struct uffdio_copy)`.
const UFFDIO_COPY: libc::c_ulong = 0xC028_AA03;
/// `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: libc::c_ulong = 0xC060_6610;

/// `PM_SCAN_WP_MATCHING`: protect the pages reported, in the same walk.
const PM_SCAN_WP_MATCHING: u64 = 1 << 0;

/// Page categories of `PAGEMAP_SCAN`.
pub const PAGE_IS_WRITTEN: u64 = 1 << 1;
pub const PAGE_IS_FILE: u64 = 1 << 2;
pub const PAGE_IS_PRESENT: u64 = 1 << 3;
pub const PAGE_IS_SWAPPED: u64 = 1 << 4;
pub const PAGE_IS_PFNZERO: u64 = 1 << 5;

/// The flags of the injected `userfaultfd` call: close-on-exec,
/// non-blocking, and user-mode faults only (what an unprivileged process
/// may ask for when vm.unprivileged_userfaultfd is 0; async protection is
/// resolved by the kernel whoever writes).
pub const USERFAULTFD_FLAGS: u64 = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64 | 1;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

#[repr(C)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

const _: () = assert!(std::mem::size_of::<UffdioApi>() == 24);
const _: () = assert!(std::mem::size_of::<UffdioRegister>() == 32);
const _: () = assert!(std::mem::size_of::<PmScanArg>() == 96);
const _: () = assert!(std::mem::size_of::<UffdioCopy>() == 40);

/// One range of pages of the same categories (`struct page_region`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageRegion {
    pub start: u64,
    pub end: u64,
    pub categories: u64,
}

const _: () = assert!(std::mem::size_of::<PageRegion>() == 24);

/// Enables asynchronous write-protect tracking on a fresh userfaultfd,
/// with mremap events (`Event::Remap`).
///
/// The events keep a moved range registered: without them the kernel
/// drops the registration of what mremap moves, so a range moved away and
/// back no longer merges with its neighbours (their flags differ), and a
/// later mremap across the seam fails with EFAULT, which a program never
/// sees untracked. Each mremap of a tracked range then waits until its
/// event is read: whoever holds the descriptor must read them
/// ([`read_events`]) as they come.
pub fn enable_wp_async(uffd: BorrowedFd<'_>) -> io::Result<()> {
    let mut api = UffdioApi {
        api: UFFD_API,
        features: UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_EVENT_REMAP,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_API reads and writes the struct we pass, which lives
    // across the call and has the kernel's layout (checked above).
    let rc = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_API, &mut api) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    if api.features & UFFD_FEATURE_WP_ASYNC == 0 {
        return Err(io::Error::other(
            "this kernel has no asynchronous write-protect userfaultfd",
        ));
    }
    if api.features & UFFD_FEATURE_EVENT_REMAP == 0 {
        return Err(io::Error::other(
            "this kernel's userfaultfd has no mremap events",
        ));
    }
    Ok(())
}

/// Opens a fresh userfaultfd for filling missing pages (no features).
pub fn enable_missing(uffd: BorrowedFd<'_>) -> io::Result<()> {
    let mut api = UffdioApi {
        api: UFFD_API,
        features: 0,
        ioctls: 0,
    };
    // SAFETY: as in `enable_wp_async`.
    let rc = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_API, &mut api) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Registers `[start, end)` of the userfaultfd's process for
/// write-protect tracking.
pub fn register_wp(uffd: BorrowedFd<'_>, start: u64, end: u64) -> io::Result<()> {
    register(uffd, start, end, UFFDIO_REGISTER_MODE_WP)
}

/// Registers `[start, end)` of the userfaultfd's process for missing
/// pages, which [`copy`] then fills. (Faults there from inside the kernel,
/// such as `process_vm_writev`'s, fail while it is registered: the
/// userfaultfd is for user-mode faults only; closing it ends the
/// registration.)
pub fn register_missing(uffd: BorrowedFd<'_>, start: u64, end: u64) -> io::Result<()> {
    register(uffd, start, end, UFFDIO_REGISTER_MODE_MISSING)
}

fn register(uffd: BorrowedFd<'_>, start: u64, end: u64, mode: u64) -> io::Result<()> {
    let mut reg = UffdioRegister {
        start,
        len: end - start,
        mode,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_REGISTER reads the range and mode and writes
    // `ioctls` of the struct we pass; it touches no other memory of ours.
    let rc = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_REGISTER, &mut reg) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Fills missing pages at `dst` in the userfaultfd's process with `src`
/// (whole pages): each page is allocated and copied into at once, never
/// zeroed first nor faulted. Returns how many bytes from the start were
/// filled: all of them, or fewer where a page was already there or the
/// range is not registered (the caller writes the rest another way).
pub fn copy(uffd: BorrowedFd<'_>, dst: u64, src: &[u8]) -> usize {
    let mut done = 0usize;
    while done < src.len() {
        let mut c = UffdioCopy {
            dst: dst + done as u64,
            src: src[done..].as_ptr() as u64,
            len: (src.len() - done) as u64,
            mode: 0,
            copy: 0,
        };
        // SAFETY: UFFDIO_COPY reads `len` bytes at `src` (inside the live
        // slice `src`), writes them into the other process's registered
        // range, and writes `copy` of the struct we pass.
        let rc = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_COPY, &mut c) };
        if c.copy > 0 {
            done += c.copy as usize;
        }
        if rc == 0 {
            continue;
        }
        let again = io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN);
        if !(again && c.copy > 0) {
            break;
        }
    }
    done.min(src.len())
}

/// The flags of an injected `userfaultfd` call whose faults from inside
/// the kernel (a system call's access to a missing page) come to the
/// userfaultfd too, as a post-copy needs: the calling process must have
/// CAP_SYS_PTRACE (a restore stub before it takes the image's
/// credentials).
pub const USERFAULTFD_FLAGS_ALL: u64 = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;

/// `UFFD_FEATURE_EVENT_FORK`, `_REMAP`, `_REMOVE`, `_UNMAP`.
const UFFD_FEATURE_EVENT_FORK: u64 = 1 << 1;
const UFFD_FEATURE_EVENT_REMAP: u64 = 1 << 2;
const UFFD_FEATURE_EVENT_REMOVE: u64 = 1 << 3;
const UFFD_FEATURE_EVENT_UNMAP: u64 = 1 << 6;
/// The events of `struct uffd_msg`.
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
const UFFD_EVENT_FORK: u8 = 0x13;
const UFFD_EVENT_REMAP: u8 = 0x14;
const UFFD_EVENT_REMOVE: u8 = 0x15;
const UFFD_EVENT_UNMAP: u8 = 0x16;
/// `_IOR(0xAA, 0x02, struct uffdio_range)`.
const UFFDIO_WAKE: libc::c_ulong = 0x8010_AA02;
/// `_IOWR(0xAA, 0x04, struct uffdio_zeropage)`.
const UFFDIO_ZEROPAGE: libc::c_ulong = 0xC020_AA04;

#[repr(C)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
struct UffdioZeropage {
    range: UffdioRange,
    mode: u64,
    zeropage: i64,
}

const _: () = assert!(std::mem::size_of::<UffdioRange>() == 16);
const _: () = assert!(std::mem::size_of::<UffdioZeropage>() == 32);

/// `struct uffd_msg`'s size.
const UFFD_MSG: usize = 32;

/// What a userfaultfd of missing pages with events reports.
#[derive(Debug)]
pub enum Event {
    /// A thread waits for the page at `addr` (page-aligned).
    Fault { addr: u64 },
    /// The process forked: the child's memory, registered the same, has
    /// this userfaultfd (a descriptor of the reader's). The child runs
    /// once the event is read.
    Fork { uffd: std::os::fd::OwnedFd },
    /// `[from, from + len)` moved to `to` (mremap).
    Remap { from: u64, to: u64, len: u64 },
    /// `[start, end)` was emptied (madvise DONTNEED or REMOVE): it reads
    /// as zeros from now on.
    Remove { start: u64, end: u64 },
    /// `[start, end)` was unmapped.
    Unmap { start: u64, end: u64 },
}

/// Enables a fresh userfaultfd for a post-copy: missing pages, and the
/// events that change which page is where (fork, mremap, madvise,
/// munmap). Each such event holds its caller until it is read.
pub fn enable_lazy(uffd: BorrowedFd<'_>) -> io::Result<()> {
    let want = UFFD_FEATURE_EVENT_FORK
        | UFFD_FEATURE_EVENT_REMAP
        | UFFD_FEATURE_EVENT_REMOVE
        | UFFD_FEATURE_EVENT_UNMAP;
    let mut api = UffdioApi {
        api: UFFD_API,
        features: want,
        ioctls: 0,
    };
    // SAFETY: as in `enable_wp_async`.
    let rc = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_API, &mut api) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    if api.features & want != want {
        return Err(io::Error::other(
            "this kernel's userfaultfd lacks the events a post-copy needs",
        ));
    }
    Ok(())
}

/// Reads the events waiting on a non-blocking userfaultfd (none if there
/// are none) into `out`.
pub fn read_events(uffd: BorrowedFd<'_>, out: &mut Vec<Event>) -> io::Result<()> {
    use std::os::fd::FromRawFd;
    let mut buf = [0u8; UFFD_MSG * 64];
    // SAFETY: read writes at most buf.len() bytes into our buffer.
    let n = unsafe { libc::read(uffd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) => Ok(()),
            _ => Err(e),
        };
    }
    let word = |m: &[u8], at: usize| u64::from_ne_bytes(m[at..at + 8].try_into().expect("8"));
    for m in buf[..n as usize].chunks_exact(UFFD_MSG) {
        // The union starts at byte 8.
        out.push(match m[0] {
            UFFD_EVENT_PAGEFAULT => Event::Fault {
                addr: word(m, 16) & !0xfff,
            },
            UFFD_EVENT_FORK => {
                let fd = u32::from_ne_bytes(m[8..12].try_into().expect("4")) as i32;
                // SAFETY: the kernel installed this descriptor in our
                // table for the event; nothing else owns it.
                let uffd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
                Event::Fork { uffd }
            }
            UFFD_EVENT_REMAP => Event::Remap {
                from: word(m, 8),
                to: word(m, 16),
                len: word(m, 24),
            },
            UFFD_EVENT_REMOVE => Event::Remove {
                start: word(m, 8),
                end: word(m, 16),
            },
            UFFD_EVENT_UNMAP => Event::Unmap {
                start: word(m, 8),
                end: word(m, 16),
            },
            other => {
                return Err(io::Error::other(format!(
                    "unknown userfaultfd event {other:#x}"
                )))
            }
        });
    }
    Ok(())
}

/// One `UFFDIO_COPY` of `src` (whole pages) to `dst`: the bytes copied,
/// and the error that stopped it short, if any (`EEXIST`: a page was
/// there; `EAGAIN`: the layout is changing, read the events and retry;
/// `ENOENT`, `EINVAL`: not registered any more; `ESRCH`: the process is
/// gone).
pub fn copy_once(uffd: BorrowedFd<'_>, dst: u64, src: &[u8]) -> (usize, Option<io::Error>) {
    let mut c = UffdioCopy {
        dst,
        src: src.as_ptr() as u64,
        len: src.len() as u64,
        mode: 0,
        copy: 0,
    };
    // SAFETY: as in `copy`.
    let rc = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_COPY, &mut c) };
    let done = if c.copy > 0 { c.copy as usize } else { 0 };
    if rc == 0 {
        (src.len(), None)
    } else {
        (done.min(src.len()), Some(io::Error::last_os_error()))
    }
}

/// Maps zero pages at `[addr, addr + len)` where missing, and wakes who
/// waits there; a page that was there already is not an error.
pub fn zeropage(uffd: BorrowedFd<'_>, addr: u64, len: u64) -> io::Result<()> {
    let mut z = UffdioZeropage {
        range: UffdioRange { start: addr, len },
        mode: 0,
        zeropage: 0,
    };
    // SAFETY: UFFDIO_ZEROPAGE reads the range and writes `zeropage` of
    // the struct we pass.
    let rc = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_ZEROPAGE, &mut z) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EEXIST) {
            return wake(uffd, addr, len);
        }
        return Err(e);
    }
    Ok(())
}

/// Wakes the threads that wait for pages in `[addr, addr + len)`.
pub fn wake(uffd: BorrowedFd<'_>, addr: u64, len: u64) -> io::Result<()> {
    let mut r = UffdioRange { start: addr, len };
    // SAFETY: UFFDIO_WAKE reads the range we pass.
    let rc = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_WAKE, &mut r) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits until one of `fds` is readable (or hung up), at most
/// `timeout_ms`; which ones are.
pub fn poll_readable(fds: &[BorrowedFd<'_>], timeout_ms: i32) -> io::Result<Vec<bool>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|f| libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: poll reads and writes the array we pass, of the length we
    // give.
    let rc = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINTR) {
            return Ok(vec![false; fds.len()]);
        }
        return Err(e);
    }
    Ok(p.iter().map(|x| x.revents != 0).collect())
}

/// What a scan asks for.
#[derive(Debug, Clone, Copy)]
pub struct Scan {
    /// Categories a page must all have to be reported.
    pub required: u64,
    /// Categories of which a page must have one at least (0: no such
    /// condition).
    pub anyof: u64,
    /// Categories reported with each region.
    pub returned: u64,
    /// Protect the reported pages again (they count as written again only
    /// once written again).
    pub protect: bool,
}

/// Scans `[start, end)` of the process of `pagemap` (its open
/// /proc/PID/pagemap): the regions whose pages have the `scan.required`
/// categories, appended to `out`, with the categories in `scan.returned`.
pub fn scan(
    pagemap: BorrowedFd<'_>,
    start: u64,
    end: u64,
    scan: Scan,
    out: &mut Vec<PageRegion>,
) -> io::Result<()> {
    let mut vec = vec![PageRegion::default(); 512];
    let mut at = start;
    while at < end {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            flags: if scan.protect { PM_SCAN_WP_MATCHING } else { 0 },
            start: at,
            end,
            walk_end: 0,
            vec: vec.as_mut_ptr() as u64,
            vec_len: vec.len() as u64,
            max_pages: 0,
            category_inverted: 0,
            category_mask: scan.required,
            category_anyof_mask: scan.anyof,
            return_mask: scan.returned | scan.required,
        };
        // SAFETY: PAGEMAP_SCAN reads `arg` and writes at most `vec_len`
        // regions into `vec`, both ours and alive across the call, and
        // `walk_end` of `arg`.
        let n = unsafe { libc::ioctl(pagemap.as_raw_fd(), PAGEMAP_SCAN, &mut arg) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        out.extend_from_slice(&vec[..n as usize]);
        if arg.walk_end <= at {
            break;
        }
        at = arg.walk_end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};

    /// Our own pages, tracked through our own userfaultfd and pagemap:
    /// written pages are reported once, then again only once written
    /// again.
    /// A tracked mapping keeps behaving as an untracked one under mremap:
    /// a part moved away and back, then a move across where it was cut
    /// (which fails with EFAULT if the moved part lost its registration
    /// and so no longer merges with its neighbours).
    #[test]
    fn tracked_memory_moves_as_untracked_memory_does() {
        // SAFETY: userfaultfd takes flags and returns a new descriptor.
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, USERFAULTFD_FLAGS) };
        assert!(fd >= 0, "userfaultfd: {}", io::Error::last_os_error());
        // SAFETY: a fresh descriptor nothing else owns.
        let uffd = std::sync::Arc::new(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        enable_wp_async(uffd.as_fd()).unwrap();
        let page = 4096usize;
        let len = 64 * page;
        let map = |len: usize, prot: i32| {
            // SAFETY: a fresh private anonymous mapping.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    prot,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED);
            p as *mut u8
        };
        let p = map(len, libc::PROT_READ | libc::PROT_WRITE);
        let spare = map(16 * page, libc::PROT_NONE);
        // SAFETY: within the mapping.
        unsafe { std::ptr::write_bytes(p, 5, len) };
        register_wp(uffd.as_fd(), p as u64, p as u64 + len as u64).unwrap();
        // The events, read as they come (each mremap waits for its read).
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (uffd, stop) = (uffd.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut events = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    if poll_readable(&[uffd.as_fd()], 10).unwrap()[0] {
                        read_events(uffd.as_fd(), &mut events).unwrap();
                    }
                }
                events
            })
        };
        let remap = |from: *mut u8, len: usize, to: *mut u8| {
            // SAFETY: moves pages of our own mappings made above onto
            // another of them (MREMAP_FIXED replaces what is there).
            let r = unsafe {
                libc::mremap(
                    from.cast(),
                    len,
                    len,
                    libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                    to.cast::<libc::c_void>(),
                )
            };
            assert_ne!(
                r,
                libc::MAP_FAILED,
                "mremap: {}",
                io::Error::last_os_error()
            );
        };
        // SAFETY: offsets within the mappings made above.
        let (mid, away) = unsafe { (p.add(16 * page), spare) };
        remap(mid, 16 * page, away);
        remap(away, 16 * page, mid);
        // Across the seam.
        remap(p, 32 * page, map(32 * page, libc::PROT_NONE));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let events = reader.join().unwrap();
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, Event::Remap { .. }))
                .count(),
            3,
            "{events:?}"
        );
    }

    #[test]
    fn written_pages_are_reported_once_per_write() {
        // SAFETY: userfaultfd takes flags and returns a new descriptor.
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, USERFAULTFD_FLAGS) };
        if fd < 0 {
            panic!("userfaultfd: {}", io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let uffd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        enable_wp_async(uffd.as_fd()).unwrap();
        let len = 16 * 4096;
        // SAFETY: a fresh private anonymous mapping, unmapped at the end.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        } as *mut u8;
        assert_ne!(p as *mut libc::c_void, libc::MAP_FAILED);
        let start = p as u64;
        register_wp(uffd.as_fd(), start, start + len as u64).unwrap();
        let pagemap = std::fs::File::open("/proc/self/pagemap").unwrap();
        let written = |protect: bool| {
            let mut out = Vec::new();
            let s = Scan {
                required: PAGE_IS_WRITTEN,
                anyof: 0,
                returned: PAGE_IS_PRESENT,
                protect,
            };
            scan(pagemap.as_fd(), start, start + len as u64, s, &mut out).unwrap();
            out.iter()
                .filter(|r| r.categories & PAGE_IS_PRESENT != 0)
                .map(|r| ((r.start - start) / 4096, (r.end - start) / 4096))
                .collect::<Vec<_>>()
        };
        // SAFETY: within the mapping made above.
        let poke = |page: usize| unsafe { *p.add(page * 4096) = 7 };
        // Untouched pages are absent (holes, which a first scan reports
        // as written but not present, and protects).
        assert_eq!(written(true), vec![]);
        poke(3);
        poke(4);
        poke(9);
        assert_eq!(written(false), vec![(3, 5), (9, 10)]);
        assert_eq!(written(true), vec![(3, 5), (9, 10)]);
        // Protected now: nothing until written again.
        assert_eq!(written(true), vec![]);
        poke(4);
        assert_eq!(written(true), vec![(4, 5)]);
        // A page written for the first time after the holes were
        // protected counts too.
        poke(12);
        assert_eq!(written(true), vec![(12, 13)]);
        // SAFETY: the mapping made above, no longer used.
        unsafe { libc::munmap(p as *mut libc::c_void, len) };
    }
}
