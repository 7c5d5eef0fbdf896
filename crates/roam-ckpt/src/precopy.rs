//! Pre-copy: the pages of a running process sent ahead of its freeze, in
//! rounds, each round only the pages written since the last one; then,
//! frozen, an image that names the pages the destination already holds
//! instead of carrying them (the PRECOPIED section). See
//! docs/design/migration.md.
//!
//! Dirty pages are tracked without soft-dirty bits (not in this kernel):
//! a userfaultfd made inside the process by an injected call, in
//! asynchronous write-protect mode, and `PAGEMAP_SCAN`, which reports the
//! pages written since the last scan and protects them again in the same
//! walk (`roam_sys::uffd`). A page read after its scan and written again
//! before the freeze is simply reported again.
//!
//! Only private mappings are tracked: shared memory may be written
//! through another process's page tables, which the target's protection
//! does not see; their pages are read at the freeze, as in an eager
//! capture. Each page sent is remembered with the physical page that held
//! it (its /proc/PID/pagemap entry: frame or swap slot, which the node
//! daemon, root, may read): a page moved since by mremap, a mapping
//! replaced, or a page the kernel moved, no longer matches and is read
//! again at the freeze.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use roam_sys::procfs::{self, Vma, PAGE_PRESENT, PAGE_SWAPPED};
use roam_sys::ptrace;
use roam_sys::remote::{Remote, Site};
use roam_sys::uffd::{self, Scan, PAGE_IS_FILE, PAGE_IS_PRESENT, PAGE_IS_SWAPPED, PAGE_IS_WRITTEN};

use crate::capture::{
    read_runs, stop_all, stores_pages, syscall_in_vdso, CaptureError, Held, ZerosKept,
};
use crate::image::{decode_pages, ImageError, PAGE};
use crate::postcopy::Pager;

/// The physical page behind an address: its pagemap entry's frame (or
/// swap slot) and its present and swapped bits; 0 for none (no page, or
/// frames hidden from an unprivileged reader), which never matches.
type Origin = u64;

fn origin(entry: u64) -> Origin {
    const FRAME: u64 = (1 << 55) - 1;
    let o = entry & (FRAME | PAGE_PRESENT | PAGE_SWAPPED);
    if o & FRAME == 0 {
        0
    } else {
        o
    }
}

/// The dirty-page tracking of one running process, and what was sent.
pub struct Tracker {
    pid: i32,
    /// Kept open: tracking lasts as long as the descriptor (here and in
    /// the thread that reads its events).
    uffd: Arc<OwnedFd>,
    /// Tells that thread to end.
    stop: Arc<AtomicBool>,
    pagemap: File,
    mem: File,
    /// Pages the destination holds, as they were when read, and where
    /// they came from then; with `true` for a page that was zero (not
    /// sent: the destination's fresh memory is zero).
    sent: BTreeMap<u64, (Origin, bool)>,
    rounds: u32,
}

/// One round's pages.
pub struct Round {
    /// Page runs (the PAGES section's encoding), zero pages left out.
    pub pages: Vec<u8>,
    /// Bytes of pages found written since the last round.
    pub written: u64,
}

/// Reads the events of a tracking userfaultfd (mremaps, each of which
/// waits until its event is read; see [`uffd::enable_wp_async`]) until
/// told to stop or the process is gone. A page moved is found at the
/// freeze by its frame, so the events need no more than reading.
fn drain_events(fd: &OwnedFd, stop: &AtomicBool) {
    let mut events = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match uffd::poll_readable(&[fd.as_fd()], 50) {
            Ok(ready) if ready.first() == Some(&true) => {
                events.clear();
                if uffd::read_events(fd.as_fd(), &mut events).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        // Not joined (it ends within its poll's 50 ms): the freeze does
        // not wait for it. The tracking ends when it lets go of the
        // descriptor too.
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Whether the pages of a mapping may be pre-copied: those an image
/// stores, of a private mapping.
fn trackable(v: &Vma) -> bool {
    stores_pages(v) && !v.shared
}

impl Tracker {
    /// Starts tracking process `pid`: stops it for the few injected calls
    /// that make its userfaultfd, then lets it run on. Run on the tracer
    /// thread (ptrace).
    pub fn start(pid: i32) -> Result<Tracker, CaptureError> {
        let sys = |what| move |source| CaptureError::Sys { pid, what, source };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return Err(CaptureError::NoProcess { pid });
        }
        let tids = stop_all(pid)?;
        let held = Held::new(pid, tids.clone());
        let made = (|| {
            let site =
                Site::Syscall(syscall_in_vdso(pid).map_err(sys("find a system-call instruction"))?);
            let mut r = Remote::new(tids[0], site).map_err(sys("read the registers"))?;
            let result = r
                .call(libc::SYS_userfaultfd, &[uffd::USERFAULTFD_FLAGS])
                .map_err(sys("make a userfaultfd in it"))
                .and_then(|fd| {
                    let taken =
                        ptrace::take_fd(pid, fd as i32).map_err(sys("take its userfaultfd"));
                    let closed = r
                        .call(libc::SYS_close, &[fd])
                        .map_err(sys("close its userfaultfd"));
                    let taken = taken?;
                    closed?;
                    Ok(taken)
                });
            r.finish().map_err(sys("give the registers back"))?;
            result
        })();
        held.release(false)?;
        let uffd = made?;
        uffd::enable_wp_async(uffd.as_fd()).map_err(sys("track its writes (userfaultfd)"))?;
        let uffd = Arc::new(uffd);
        let stop = Arc::new(AtomicBool::new(false));
        let (fd, end) = (uffd.clone(), stop.clone());
        std::thread::Builder::new()
            .name("roam-track".into())
            .spawn(move || drain_events(&fd, &end))
            .map_err(sys("start reading its userfaultfd's events"))?;
        let pagemap =
            File::open(format!("/proc/{pid}/pagemap")).map_err(sys("open the page map"))?;
        let mem = File::open(format!("/proc/{pid}/mem")).map_err(sys("open the memory"))?;
        Ok(Tracker {
            pid,
            uffd,
            stop,
            pagemap,
            mem,
            sent: BTreeMap::new(),
            rounds: 0,
        })
    }

    /// Rounds done.
    pub fn rounds(&self) -> u32 {
        self.rounds
    }

    /// One round, the process running: the pages written since the last
    /// round (at first, every page), protected again and read. A page
    /// never protected counts as written: so every page of a mapping new
    /// since the last round.
    pub fn round(&mut self) -> Result<Round, CaptureError> {
        let pid = self.pid;
        let sys = |what| move |source| CaptureError::Sys { pid, what, source };
        let vmas = procfs::maps(pid).map_err(|_| CaptureError::Gone { pid })?;
        let mut runs: Vec<(u64, usize)> = Vec::new();
        let mut regions = Vec::new();
        for v in vmas.iter().filter(|v| trackable(v)) {
            // Again each round: a mapping new since, or merged with one,
            // is tracked too (the same userfaultfd may register again).
            if uffd::register_wp(self.uffd.as_fd(), v.start, v.end).is_err() {
                // Not trackable after all: read at the freeze.
                continue;
            }
            regions.clear();
            // Pages only: protecting a hole would leave a marker that the
            // page map shows as a swapped page.
            let scan = Scan {
                required: PAGE_IS_WRITTEN,
                anyof: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                returned: PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_FILE,
                protect: true,
            };
            uffd::scan(self.pagemap.as_fd(), v.start, v.end, scan, &mut regions)
                .map_err(sys("scan the page map for written pages"))?;
            let file_backed = v.inode != 0;
            for r in &regions {
                // Unmodified file pages are the file's.
                let wanted = !(file_backed && r.categories & PAGE_IS_FILE != 0);
                if wanted {
                    let n = ((r.end - r.start) / PAGE as u64) as usize;
                    push_run(&mut runs, r.start, n);
                }
            }
        }
        let written = runs.iter().map(|&(_, n)| (n * PAGE) as u64).sum();
        // The physical pages first, then their bytes: a page replaced in
        // between is found at the freeze by its frame.
        let mut frames = Vec::with_capacity(runs.len());
        for &(addr, n) in &runs {
            frames.push(
                procfs::pagemap_of(&self.pagemap, addr, n).map_err(sys("read the page map"))?,
            );
        }
        // The process runs: memory scanned may be unmapped before it is
        // read. Such a run is not sent (and no longer held): if it is
        // there at the freeze, it is read then.
        let zeros = ZerosKept::of(&vmas);
        let pages = match read_runs(pid, &self.mem, &runs, &zeros) {
            Ok((pages, _)) => pages,
            Err(_) => {
                let mut pages = Vec::new();
                for (i, run) in runs.iter().enumerate() {
                    match read_runs(pid, &self.mem, std::slice::from_ref(run), &zeros) {
                        Ok((p, _)) => pages.extend_from_slice(&p),
                        Err(_) if procfs::proc_stat(pid as u32).is_ok() => frames[i].clear(),
                        Err(_) => return Err(CaptureError::Gone { pid }),
                    }
                }
                pages
            }
        };
        // What is sent replaces what was: each page read, zero (left out
        // of the round) until found among the pages sent.
        for (&(addr, n), frames) in runs.iter().zip(&frames) {
            for i in 0..n {
                let a = addr + (i * PAGE) as u64;
                match frames.get(i).map_or(0, |&e| origin(e)) {
                    0 => self.sent.remove(&a),
                    o => self.sent.insert(a, (o, true)),
                };
            }
        }
        for run in decode_pages(&pages).map_err(|e| sys("read the memory")(io_err(e)))? {
            for i in 0..(run.data.len() / PAGE) as u64 {
                if let Some(p) = self.sent.get_mut(&(run.addr + i * PAGE as u64)) {
                    p.1 = false;
                }
            }
        }
        self.rounds += 1;
        Ok(Round { pages, written })
    }

    /// At the freeze (the process stopped, `vmas` its mappings now): the
    /// pages the destination holds as they are now (not written since they
    /// were read, and where they were), each with `true` if zero: which
    /// the image names instead of carrying, or leaves out.
    pub(crate) fn clean(&mut self, vmas: &[Vma]) -> std::io::Result<BTreeMap<u64, bool>> {
        let mut clean = BTreeMap::new();
        let mut regions = Vec::new();
        for v in vmas.iter().filter(|v| trackable(v)) {
            if self.sent.range(v.start..v.end).next().is_none() {
                continue;
            }
            regions.clear();
            let scan = Scan {
                required: PAGE_IS_WRITTEN,
                anyof: 0,
                returned: 0,
                protect: false,
            };
            uffd::scan(self.pagemap.as_fd(), v.start, v.end, scan, &mut regions)?;
            let frames = procfs::pagemap_of(
                &self.pagemap,
                v.start,
                ((v.end - v.start) / PAGE as u64) as usize,
            )?;
            let mut written = regions.iter().peekable();
            for (&a, &(o, zero)) in self.sent.range(v.start..v.end) {
                while written.peek().is_some_and(|r| r.end <= a) {
                    written.next();
                }
                let now = frames
                    .get(((a - v.start) / PAGE as u64) as usize)
                    .map_or(0, |&e| origin(e));
                if written.peek().is_none_or(|r| r.start > a) && o == now {
                    clean.insert(a, zero);
                }
            }
        }
        Ok(clean)
    }
}

fn io_err(e: ImageError) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Appends a run, merged with the last if contiguous.
fn push_run(runs: &mut Vec<(u64, usize)>, addr: u64, n: usize) {
    if let Some((a, m)) = runs.last_mut() {
        if *a + (*m * PAGE) as u64 == addr {
            *m += n;
            return;
        }
    }
    runs.push((addr, n));
}

/// Page runs: (address, pages).
pub(crate) type Runs = Vec<(u64, usize)>;

/// Splits page runs into those to read and those the destination holds
/// (`clean`: zero pages among them in neither), in address order.
pub(crate) fn split_runs(runs: &[(u64, usize)], clean: &BTreeMap<u64, bool>) -> (Runs, Runs) {
    if clean.is_empty() {
        return (runs.to_vec(), Vec::new());
    }
    let (mut read, mut held) = (Vec::new(), Vec::new());
    for &(addr, n) in runs {
        for i in 0..n {
            let a = addr + (i * PAGE) as u64;
            match clean.get(&a) {
                None => push_run(&mut read, a, 1),
                Some(false) => push_run(&mut held, a, 1),
                Some(true) => {}
            }
        }
    }
    (read, held)
}

/// The PRECOPIED section: runs `address u64 | pages u32`, no data.
pub(crate) fn encode_held(runs: &[(u64, usize)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(runs.len() * 12);
    for &(addr, n) in runs {
        out.extend_from_slice(&addr.to_le_bytes());
        out.extend_from_slice(&(n as u32).to_le_bytes());
    }
    out
}

/// Decodes the PRECOPIED section: runs in increasing, page-aligned,
/// non-overlapping order, or an error.
pub fn decode_held(mut b: &[u8]) -> Result<Vec<(u64, usize)>, ImageError> {
    let bad = |m: &str| ImageError::Pages(m.to_string());
    if !b.len().is_multiple_of(12) {
        return Err(bad("a pre-copied run is cut"));
    }
    let mut out = Vec::with_capacity(b.len() / 12);
    let mut min = 0u64;
    while !b.is_empty() {
        let addr = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
        let n = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
        if n == 0 || addr % PAGE as u64 != 0 || addr < min {
            return Err(bad("pre-copied runs out of order, empty or unaligned"));
        }
        min = addr
            .checked_add(n as u64 * PAGE as u64)
            .ok_or_else(|| bad("a pre-copied run past the end of memory"))?;
        out.push((addr, n as usize));
        b = &b[12..];
    }
    Ok(out)
}

/// The destination's side: the pages of the rounds, the last copy of each
/// page kept, until the image says which of them to use. Each round's
/// bytes are kept as they came (no copy); a page sent again points to its
/// newer copy.
#[derive(Default)]
pub struct PageStore {
    rounds: Vec<Vec<u8>>,
    /// Page address → (round, offset of its bytes).
    index: HashMap<u64, (u32, usize)>,
    /// Bytes of all rounds kept.
    held: u64,
}

impl std::fmt::Debug for PageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PageStore({} pages)", self.index.len())
    }
}

impl Drop for PageStore {
    fn drop(&mut self) {
        for r in &self.rounds {
            roam_sys::mem::fork_without(r, false);
        }
    }
}

impl PageStore {
    /// Adds a round's pages (the PAGES encoding); at most `limit` bytes
    /// held in all.
    pub fn add(&mut self, encoded: Vec<u8>, limit: u64) -> Result<(), ImageError> {
        if self.held + encoded.len() as u64 > limit {
            return Err(ImageError::Pages(format!(
                "pre-copied pages past {limit} bytes"
            )));
        }
        let round = self.rounds.len() as u32;
        let base = encoded.as_ptr() as usize;
        for run in decode_pages(&encoded)? {
            let at = run.data.as_ptr() as usize - base;
            for i in 0..run.data.len() / PAGE {
                let addr = run.addr + (i * PAGE) as u64;
                self.index.insert(addr, (round, at + i * PAGE));
            }
        }
        self.held += encoded.len() as u64;
        // Not copied into the restore stub, a fork of the daemon.
        roam_sys::mem::fork_without(&encoded, true);
        self.rounds.push(encoded);
        Ok(())
    }

    /// Bytes held.
    #[cfg(test)]
    fn bytes(&self) -> u64 {
        self.held
    }

    /// The page at `addr`.
    #[cfg(test)]
    fn page(&self, addr: u64) -> Option<&[u8]> {
        self.index
            .get(&addr)
            .map(|&(r, at)| &self.rounds[r as usize][at..at + PAGE])
    }

    /// The pages of run (`addr`, `n`) as slices of contiguous bytes held
    /// (one per stretch kept in one piece), or the first page missing.
    pub fn slices(&self, addr: u64, n: usize) -> Result<Vec<(u64, &[u8])>, u64> {
        let mut out: Vec<(u64, &[u8])> = Vec::new();
        // (address, round, offset, pages) of the stretch being gathered.
        let mut last: Option<(u64, u32, usize, usize)> = None;
        for i in 0..n {
            let a = addr + (i * PAGE) as u64;
            let (r, at) = *self.index.get(&a).ok_or(a)?;
            match &mut last {
                Some((_, lr, start, m)) if *lr == r && *start + *m * PAGE == at => *m += 1,
                _ => {
                    if let Some((la, lr, start, m)) = last.take() {
                        out.push((la, &self.rounds[lr as usize][start..start + m * PAGE]));
                    }
                    last = Some((a, r, at, 1));
                }
            }
        }
        if let Some((la, lr, start, m)) = last {
            out.push((la, &self.rounds[lr as usize][start..start + m * PAGE]));
        }
        Ok(out)
    }
}

/// Pages a [`Filler`] places at a time between looks at the faults
/// waiting (1 MiB: a fault waits at most for one such copy).
const FILL_CHUNK: usize = 256;

/// What a [`Filler`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filled {
    /// Bytes of the pages placed (each counted once, however many
    /// address spaces waited for it).
    pub bytes: u64,
    /// Faults that waited for a page not yet placed.
    pub faults: u64,
}

/// What the [`Filler`]'s thread is told.
enum FillMsg {
    /// A fault waits for the page that was at this address.
    Want(u64),
    /// Place all the pages now.
    Go,
}

/// Places a migration's pre-copied pages into its new process after the
/// rebuild, while the process runs (or waits, held, for the commit): the
/// restore leaves them out and registers the private anonymous mappings
/// on a userfaultfd ([`crate::restore::RestoreOpts::precopied_later`]);
/// a [`Pager`] serves that descriptor, and a thread of the filler's
/// copies the pages from the store, in order, 1 MiB at a time, a page a
/// fault waits for first. The pages are all on this node already: the
/// process depends on nothing elsewhere, only its first touches of a
/// page may wait (for one copy of at most 1 MiB). Until [`Filler::go`],
/// only the pages faults wait for are placed: the rest of the rebuild
/// (the freeze, in a migration) does not share the machine with the copy.
///
/// The store is freed, and the userfaultfd closed (the registrations
/// end), once every page is in.
pub struct Filler {
    thread: Option<std::thread::JoinHandle<Result<Filled, String>>>,
    tell: mpsc::Sender<FillMsg>,
}

impl std::fmt::Debug for Filler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filler").finish_non_exhaustive()
    }
}

impl Filler {
    /// Starts placing the pages of `runs` (address, pages; each in
    /// `store`, as the restore checked: a run that is not is never placed,
    /// and [`Filler::wait`] says so) into the process of `uffd`, which
    /// waits for them.
    pub fn start(
        uffd: OwnedFd,
        store: Arc<PageStore>,
        runs: Vec<(u64, usize)>,
    ) -> std::io::Result<Filler> {
        let (tell, told) = mpsc::channel();
        let want = tell.clone();
        let pager = Pager::start(uffd, &runs, move |src| {
            let _ = want.send(FillMsg::Want(src));
        })?;
        let thread = std::thread::Builder::new()
            .name("roam-fill".into())
            .spawn(move || fill(pager, &store, &runs, &told))?;
        Ok(Filler {
            thread: Some(thread),
            tell,
        })
    }

    /// Places all the pages from now on (not only those faults wait for).
    pub fn go(&self) {
        let _ = self.tell.send(FillMsg::Go);
    }

    /// Waits until every page is in (or the process is gone); why not, if
    /// the pages could not be placed (the process then waits forever on
    /// the first of them: kill it). Implies [`Filler::go`].
    pub fn wait(mut self) -> Result<Filled, String> {
        self.go();
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            _ => Err("the filling thread panicked".into()),
        }
    }
}

impl Drop for Filler {
    /// Not waited for: the thread places the pages, or finds the process
    /// gone, and ends.
    fn drop(&mut self) {
        self.go();
    }
}

/// The [`Filler`]'s thread.
fn fill(
    pager: Pager,
    store: &PageStore,
    runs: &[(u64, usize)],
    told: &mpsc::Receiver<FillMsg>,
) -> Result<Filled, String> {
    let put = |addr: u64, n: usize| -> Result<u64, String> {
        let mut bytes = 0;
        // In the store, as the restore checked (if not, never placed:
        // counted as left at the end).
        for (a, data) in store.slices(addr, n).unwrap_or_default() {
            pager
                .deliver(a, data)
                .map_err(|e| format!("cannot place the pages at {a:#x}: {e}"))?;
            bytes += data.len() as u64;
        }
        Ok(bytes)
    };
    // The faults only, until told to go (or the process is gone).
    loop {
        match told.recv_timeout(std::time::Duration::from_millis(50)) {
            Ok(FillMsg::Want(src)) => {
                put(src, 1)?;
            }
            Ok(FillMsg::Go) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) if pager.left() == 0 => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    let mut bytes = 0;
    'runs: for &(addr, n) in runs {
        let mut i = 0;
        while i < n {
            while let Ok(FillMsg::Want(src)) = told.try_recv() {
                put(src, 1)?;
            }
            if let Some(e) = pager.failed() {
                return Err(format!("the pager stopped: {e}"));
            }
            let m = (n - i).min(FILL_CHUNK);
            bytes += put(addr + (i * PAGE) as u64, m)?;
            i += m;
            if pager.left() == 0 {
                break 'runs;
            }
        }
    }
    // Every run delivered once reaches every address space waiting (a
    // child forked meanwhile waits for the same pages as its parent).
    let left = pager.left();
    if left != 0 {
        return Err(format!("{left} pre-copied pages were not placed"));
    }
    Ok(Filled {
        bytes,
        faults: pager.faults(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::capture_held_tracked;
    use crate::image::encode_pages;
    use crate::restore::{restore, Image, RestoreError, RestoreOpts};
    use crate::testutil::{close_all, exit_code, pipe, plain_opts, read_byte, write_byte};
    use std::os::fd::RawFd;

    /// A forked child with `pages` pages of values it remembers (page p
    /// all v[p]) and a small mapping of 16 more; says `R`. Each `w` on
    /// stdin rewrites a third of the pages (and, the first time, zeroes
    /// every 17th; the second, maps the small mapping anew with new
    /// values) and says `R`; `g` checks every page and says `P` or `M`.
    fn child(pages: usize, stdin: RawFd, stdout: RawFd) -> i32 {
        // SAFETY: the child makes raw calls only, and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid != 0 {
            return pid;
        }
        // SAFETY: all on this (child) process's own state; never returns.
        unsafe {
            libc::dup2(stdin, 0);
            libc::dup2(stdout, 1);
            libc::syscall(libc::SYS_close_range, 2u32, u32::MAX, 0u32);
            let anon = |len: usize, at: *mut libc::c_void, fixed: libc::c_int| {
                libc::mmap(
                    at,
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | fixed,
                    -1,
                    0,
                ) as *mut u8
            };
            let all = pages + 16;
            let m = anon(pages * PAGE, std::ptr::null_mut(), 0);
            let small = anon(16 * PAGE, std::ptr::null_mut(), 0);
            let v = anon(all, std::ptr::null_mut(), 0);
            let page = |p: usize| {
                if p < pages {
                    m.add(p * PAGE)
                } else {
                    small.add((p - pages) * PAGE)
                }
            };
            for p in 0..all {
                *v.add(p) = (p % 251) as u8 + 1;
                std::ptr::write_bytes(page(p), *v.add(p), PAGE);
            }
            libc::write(1, c"R".as_ptr().cast(), 1);
            libc::write(1, (&(m as u64) as *const u64).cast(), 8);
            let mut generation = 0;
            loop {
                let mut c = 0u8;
                while libc::read(0, (&mut c as *mut u8).cast(), 1) != 1 {}
                if c == b'g' {
                    break;
                }
                generation += 1;
                for p in (0..pages).filter(|p| p % 3 == generation % 3) {
                    *v.add(p) = (*v.add(p)).wrapping_add(1).max(1);
                    std::ptr::write_bytes(page(p), *v.add(p), PAGE);
                }
                if generation == 1 {
                    for p in (0..pages).step_by(17) {
                        *v.add(p) = 0;
                        std::ptr::write_bytes(page(p), 0, PAGE);
                    }
                }
                if generation == 2 {
                    libc::munmap(small.cast(), 16 * PAGE);
                    anon(16 * PAGE, small.cast(), libc::MAP_FIXED);
                    for p in pages..all {
                        *v.add(p) = 200;
                        std::ptr::write_bytes(page(p), 200, PAGE);
                    }
                }
                libc::write(1, c"R".as_ptr().cast(), 1);
            }
            let mut verdict = b'P';
            for p in 0..all {
                if (0..PAGE).any(|i| *page(p).add(i) != *v.add(p)) {
                    verdict = b'M';
                }
            }
            libc::write(1, [verdict].as_ptr().cast(), 1);
            libc::_exit(0)
        }
    }

    #[test]
    fn a_process_sent_in_rounds_is_rebuilt_from_them_and_its_last_writes() {
        rebuilt_from_rounds(false);
    }

    #[test]
    fn pre_copied_pages_placed_after_the_rebuild_are_all_there() {
        rebuilt_from_rounds(true);
    }

    /// Sends a child's memory in rounds, captures it, rebuilds it from the
    /// rounds and the image; with `later`, the rounds' pages are placed
    /// while it runs.
    fn rebuilt_from_rounds(later: bool) {
        // Needs root (PR_SET_MM_MAP), as CI runs.
        let pages = 2048;
        let (in_r, in_w) = pipe();
        let (out_r, out_w) = pipe();
        let pid = child(pages, in_r, out_w);
        assert_eq!(read_byte(out_r), b'R');
        let m = u64::from_le_bytes([(); 8].map(|()| read_byte(out_r)));
        let mut t = Tracker::start(pid).unwrap();
        let mut store = PageStore::default();
        let first = t.round().unwrap();
        assert!(first.written >= (pages * PAGE) as u64, "{}", first.written);
        store.add(first.pages, u64::MAX).unwrap();
        write_byte(in_w, b'w');
        assert_eq!(read_byte(out_r), b'R');
        let second = t.round().unwrap();
        // A third of the pages written, and the zeroed ones.
        let third = (pages * PAGE / 3) as u64;
        assert!(
            second.written >= third && second.written < 2 * third,
            "{} of {}",
            second.written,
            pages * PAGE
        );
        store.add(second.pages, u64::MAX).unwrap();
        assert_eq!(t.rounds(), 2);
        write_byte(in_w, b'w');
        assert_eq!(read_byte(out_r), b'R');
        let (c, held) = capture_held_tracked(pid, 0, Some(&mut t)).unwrap();
        held.release(true).unwrap();
        assert_eq!(exit_code(pid), -libc::SIGKILL);
        // The freeze read about a third of the pages. (Of these pages
        // only: the rest of the child's memory is the test harness's,
        // inherited, whose huge pages the harness splits as it runs,
        // which may count them as written.)
        let pages_section = &c
            .sections
            .iter()
            .find(|s| s.kind == crate::capture::kind::PAGES)
            .expect("pages")
            .payload;
        let end = m + (pages * PAGE) as u64;
        let read: usize = crate::image::decode_pages(pages_section)
            .unwrap()
            .iter()
            .map(|r| {
                let (a, b) = (r.addr.max(m), (r.addr + r.data.len() as u64).min(end));
                b.saturating_sub(a) as usize
            })
            .sum();
        assert!(read < pages * PAGE / 2, "{read}");
        let opts = RestoreOpts {
            precopied_later: later,
            ..plain_opts(in_r, out_w)
        };
        let mut img = Image::from_sections(c.sections).unwrap();
        assert!(!img.precopied.is_empty());
        assert!(matches!(
            restore(&img, &opts),
            Err(RestoreError::Precopied(_))
        ));
        assert!(img.attach_precopied(PageStore::default()).is_err());
        img.attach_precopied(store).unwrap();
        let mut r = restore(&img, &opts).unwrap();
        drop(img);
        assert_eq!(r.filler.is_some(), later);
        write_byte(in_w, b'g');
        let verdict = read_byte(out_r);
        assert_eq!(exit_code(r.pid), 0);
        assert_eq!(verdict, b'P');
        if let Some(f) = r.filler.take() {
            // Every page of the big mapping was pre-copied, most of them
            // placed by the filler.
            let filled = f.wait().unwrap();
            assert!(filled.bytes >= (pages * PAGE / 2) as u64, "{filled:?}");
        }
        close_all(&[in_r, in_w, out_r, out_w]);
    }

    #[test]
    fn runs_split_into_read_and_held() {
        let p = PAGE as u64;
        let clean: BTreeMap<u64, bool> =
            [(p, false), (2 * p, false), (3 * p, true), (7 * p, false)]
                .into_iter()
                .collect();
        let (read, held) = split_runs(&[(0, 5), (6 * p, 2)], &clean);
        assert_eq!(read, vec![(0, 1), (4 * p, 1), (6 * p, 1)]);
        assert_eq!(held, vec![(p, 2), (7 * p, 1)]);
        assert_eq!(decode_held(&encode_held(&held)).unwrap(), held);
    }

    #[test]
    fn bad_held_runs_are_refused() {
        let p = PAGE as u64;
        let b = encode_held(&[(2 * p, 2), (p, 1)]);
        assert!(decode_held(&b).is_err());
        assert!(decode_held(&b[..13]).is_err());
        assert!(decode_held(&encode_held(&[(5, 1)])).is_err());
        assert!(decode_held(&encode_held(&[(u64::MAX - 4095, 2)])).is_err());
    }

    #[test]
    fn the_store_keeps_the_last_copy_within_its_limit() {
        let p = PAGE as u64;
        let a = vec![1u8; PAGE];
        let b = vec![2u8; PAGE];
        let mut s = PageStore::default();
        s.add(encode_pages([(0, &a[..]), (p, &a[..])]), 1 << 20)
            .unwrap();
        s.add(encode_pages([(p, &b[..]), (5 * p, &b[..])]), 1 << 20)
            .unwrap();
        assert_eq!(s.page(p).unwrap(), &b[..]);
        assert_eq!(s.page(0).unwrap(), &a[..]);
        // Two rounds of two pages, with their run headers.
        assert_eq!(s.bytes(), 4 * p + 3 * 12);
        // Page 1 was sent again: two stretches, the newer copy.
        let slices = s.slices(0, 2).unwrap();
        assert_eq!(slices.len(), 2);
        assert_eq!((slices[1].0, slices[1].1), (p, &b[..]));
        let mut t = PageStore::default();
        t.add(encode_pages([(0, &a[..]), (p, &b[..])]), 1 << 20)
            .unwrap();
        assert_eq!(t.slices(0, 2).unwrap()[0].1.len(), 2 * PAGE);
        assert_eq!(s.slices(0, 3), Err(2 * p));
        assert!(s.add(encode_pages([(9 * p, &a[..])]), 4 * p).is_err());
    }
}
