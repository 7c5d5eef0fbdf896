//! Post-copy: a process rebuilt before its memory is all here, the rest
//! brought in as it runs (docs/design/migration.md, "Post-copy").
//!
//! The image of a post-copy names the pages of the large private
//! anonymous mappings (its LAZY section) instead of carrying them. The
//! restore registers those mappings on a userfaultfd of the process, with
//! the events that move pages (fork, mremap, madvise, munmap), and hands
//! it to a [`Pager`] before the rest of the rebuild. The pager then:
//! - places the pages that come ([`Pager::deliver`], `UFFDIO_COPY`), in
//!   every address space that still waits for them;
//! - on a fault, asks for the page (the `want` callback) if it is still to
//!   come, or maps a zero page if it is not (never written, or emptied
//!   since: madvise);
//! - follows the process's layout: pages moved by mremap are expected at
//!   their new place, pages unmapped or emptied are no longer expected,
//!   and a child forked meanwhile waits for the same pages as its parent
//!   did (its own userfaultfd, from the fork event).
//!
//! The events are read and handled, and the pages placed, under one lock:
//! once an event is read the kernel goes on (an madvise empties its range),
//! so no page may be placed between the reading and the handling.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use roam_sys::uffd::{self, Event};

const PAGE: u64 = crate::image::PAGE as u64;

/// The bytes of memory in runs of pages (address, pages).
pub fn bytes_of(runs: &[(u64, usize)]) -> u64 {
    runs.iter().map(|&(_, n)| n as u64 * PAGE).sum()
}

/// How long a page's placement may be put off by a layout change under
/// way before the pager gives up.
const LAYOUT_PATIENCE: Duration = Duration::from_secs(10);

/// Pages still to come into one address space: where each is now (its
/// address in the process) and where it was (its address in the image,
/// by which the old node reads it). Kept as extents, pages consecutive
/// both now and then: a run of the image is one extent until pages are
/// placed or the layout changes, so a heap of a gigabyte costs a few
/// entries, not one per page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pending {
    /// By where an extent starts now: where it started then, its pages.
    by_dest: BTreeMap<u64, (u64, u64)>,
    /// By where an extent started then: where it starts now.
    by_src: BTreeMap<u64, u64>,
    pages: usize,
}

impl Pending {
    /// The pages of `runs` (address, pages), each where it was.
    pub fn new(runs: &[(u64, usize)]) -> Pending {
        let mut p = Pending::default();
        for &(addr, n) in runs {
            p.put(addr, addr, n as u64);
        }
        p
    }

    /// Pages still to come.
    pub fn len(&self) -> usize {
        self.pages
    }

    pub fn is_empty(&self) -> bool {
        self.pages == 0
    }

    /// Expects the `pages` pages that were at `src` at `dest` (again).
    fn put(&mut self, dest: u64, src: u64, pages: u64) {
        if pages == 0 {
            return;
        }
        self.by_dest.insert(dest, (src, pages));
        self.by_src.insert(src, dest);
        self.pages += pages as usize;
    }

    fn unlink(&mut self, dest: u64) -> Option<(u64, u64)> {
        let (src, pages) = self.by_dest.remove(&dest)?;
        self.by_src.remove(&src);
        self.pages -= pages as usize;
        Some((src, pages))
    }

    /// Where the page now at `dest` was, if it is still to come.
    pub fn src_of(&self, dest: u64) -> Option<u64> {
        let (&d, &(s, n)) = self.by_dest.range(..=dest).next_back()?;
        (dest < d + n * PAGE).then(|| s + (dest - d))
    }

    /// The page that was at `src`, if still to come: no longer expected;
    /// where it goes. (The pager takes runs: [`Pending::take_run`].)
    #[cfg(test)]
    fn take(&mut self, src: u64) -> Option<u64> {
        let (dest, _, _) = self.take_run(src, 1).pop()?;
        Some(dest)
    }

    /// The pages that were at `[src, src + pages pages)` and are still to
    /// come: no longer expected; pieces consecutive both ways (where they
    /// go, where they were, pages), in the order of where they were.
    pub fn take_run(&mut self, src: u64, pages: u64) -> Vec<(u64, u64, u64)> {
        let end = src.saturating_add(pages.saturating_mul(PAGE));
        // The extent begun before `src` may reach into the run.
        let first = self.by_src.range(..src).next_back().map(|(&s, _)| s);
        let starts: Vec<u64> = first
            .into_iter()
            .chain(self.by_src.range(src..end).map(|(&s, _)| s))
            .collect();
        let mut found = Vec::new();
        for s0 in starts {
            let Some(&d0) = self.by_src.get(&s0) else {
                continue;
            };
            let (_, n0) = self.by_dest[&d0];
            let (lo, hi) = (s0.max(src), (s0 + n0 * PAGE).min(end));
            if lo < hi {
                found.push((d0 + (lo - s0), lo, (hi - lo) / PAGE));
            }
        }
        for &(d, _, n) in &found {
            self.cut(d, d + n * PAGE);
        }
        found
    }

    /// Takes `[start, end)` (where pages are now) out: the pieces that were
    /// there (where they are, where they were, pages).
    fn cut(&mut self, start: u64, end: u64) -> Vec<(u64, u64, u64)> {
        let hit: Vec<u64> = self
            .by_dest
            .range(..end)
            .rev()
            .take_while(|(&d, &(_, n))| d + n * PAGE > start)
            .map(|(&d, _)| d)
            .collect();
        let mut out = Vec::new();
        for d in hit {
            let Some((s, n)) = self.unlink(d) else {
                continue;
            };
            let e = d + n * PAGE;
            let (lo, hi) = (d.max(start), e.min(end));
            self.put(d, s, (lo - d) / PAGE);
            self.put(hi, s + (hi - d), (e - hi) / PAGE);
            out.push((lo, s + (lo - d), (hi - lo) / PAGE));
        }
        out
    }

    /// `[start, end)` was emptied or unmapped: nothing comes there.
    pub fn remove(&mut self, start: u64, end: u64) {
        self.cut(start, end);
    }

    /// `[from, from + len)` moved to `to` (what was at `to` is gone).
    pub fn remap(&mut self, from: u64, to: u64, len: u64) {
        let moving = self.cut(from, from.saturating_add(len));
        self.cut(to, to.saturating_add(len));
        for (d, s, n) in moving {
            self.put(d - from + to, s, n);
        }
    }
}

/// One address space the pager fills: the process's, or a child's forked
/// during the post-copy.
struct Space {
    uffd: Arc<OwnedFd>,
    pending: Pending,
    /// Its process is gone.
    gone: bool,
}

type Want = Box<dyn FnMut(u64) + Send>;

struct State {
    spaces: Vec<Space>,
    /// Pages asked for (by their old address), not to be asked again.
    requested: HashSet<u64>,
    want: Want,
}

struct Inner {
    state: Mutex<State>,
    stop: AtomicBool,
    /// Ends the thread's wait at once when it must stop (a drop would
    /// otherwise wait out the poll's timeout: 50 ms at the end of every
    /// move, measured).
    wake: roam_sys::wake::Wake,
    faults: AtomicU64,
    error: Mutex<Option<String>>,
}

/// Serves the userfaultfd of a post-copy's process (see the module's
/// documentation) until dropped; dropping it closes the userfaultfds,
/// which ends the registrations (the process then faults as any other).
pub struct Pager {
    inner: Arc<Inner>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Pager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pager").field("left", &self.left()).finish()
    }
}

impl Pager {
    /// Starts serving `uffd` (a restore's, see
    /// [`crate::restore::RestoreOpts::lazy`]), whose process waits for
    /// the pages of `runs`; `want` is called with the old address of each
    /// page a fault waits for (once per page), from the pager's thread.
    pub fn start(
        uffd: OwnedFd,
        runs: &[(u64, usize)],
        want: impl FnMut(u64) + Send + 'static,
    ) -> io::Result<Pager> {
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                spaces: vec![Space {
                    uffd: Arc::new(uffd),
                    pending: Pending::new(runs),
                    gone: false,
                }],
                requested: HashSet::new(),
                want: Box::new(want),
            }),
            stop: AtomicBool::new(false),
            wake: roam_sys::wake::Wake::new()?,
            faults: AtomicU64::new(0),
            error: Mutex::new(None),
        });
        let run = inner.clone();
        let thread = std::thread::Builder::new()
            .name("roam-pager".into())
            .spawn(move || {
                if let Err(e) = serve(&run) {
                    *run.error.lock().unwrap() = Some(e.to_string());
                }
            })?;
        Ok(Pager {
            inner,
            thread: Some(thread),
        })
    }

    /// Pages still to come, over the address spaces whose processes live.
    pub fn left(&self) -> usize {
        let st = self.inner.state.lock().unwrap();
        st.spaces
            .iter()
            .filter(|s| !s.gone)
            .map(|s| s.pending.len())
            .sum()
    }

    /// Faults that waited for a page to come.
    pub fn faults(&self) -> u64 {
        self.inner.faults.load(Ordering::Relaxed)
    }

    /// Why the pager stopped serving faults, if it did.
    pub fn failed(&self) -> Option<String> {
        self.inner.error.lock().unwrap().clone()
    }

    /// Places the pages `data` (whole pages) that were at `src` on, in
    /// every address space that waits for them. Pages no longer expected
    /// are dropped.
    pub fn deliver(&self, src: u64, data: &[u8]) -> io::Result<()> {
        if !src.is_multiple_of(PAGE)
            || !(data.len() as u64).is_multiple_of(PAGE)
            || src.checked_add(data.len() as u64).is_none()
        {
            return Err(io::Error::other(format!(
                "pages at {src:#x} of {} bytes are not whole pages",
                data.len()
            )));
        }
        let since = Instant::now();
        loop {
            let mut st = self.inner.state.lock().unwrap();
            let mut again = false;
            for space in st.spaces.iter_mut().filter(|s| !s.gone) {
                // Pieces: where they go, where they were, pages.
                let pieces = space.pending.take_run(src, data.len() as u64 / PAGE);
                for (i, &(dest, from, n)) in pieces.iter().enumerate() {
                    let off = (from - src) as usize;
                    let len = (n * PAGE) as usize;
                    match place(space, dest, &data[off..off + len]) {
                        Placed::All => {}
                        Placed::Gone => {
                            space.gone = true;
                            break;
                        }
                        Placed::Later(done) => {
                            // Expected again (a layout change under way:
                            // its event is read and handled first).
                            let done = done as u64;
                            space
                                .pending
                                .put(dest + done * PAGE, from + done * PAGE, n - done);
                            for &(d, s, m) in &pieces[i + 1..] {
                                space.pending.put(d, s, m);
                            }
                            again = true;
                            break;
                        }
                    }
                }
            }
            drop(st);
            if !again {
                return Ok(());
            }
            if since.elapsed() > LAYOUT_PATIENCE {
                return Err(io::Error::other(
                    "the process's layout kept changing while its pages were placed",
                ));
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

impl Drop for Pager {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        self.inner.wake.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

enum Placed {
    All,
    /// The process is gone.
    Gone,
    /// From this page on, not placed: try again.
    Later(usize),
}

/// Copies `data`, whole pages, into `space` at `dest`.
fn place(space: &Space, dest: u64, data: &[u8]) -> Placed {
    let len = data.len();
    let mut at = 0;
    while at < len {
        let (n, e) = uffd::copy_once(space.uffd.as_fd(), dest + at as u64, &data[at..]);
        at += n;
        let Some(e) = e else { break };
        match e.raw_os_error() {
            Some(libc::EAGAIN) => return Placed::Later(at / PAGE as usize),
            Some(libc::ESRCH) => return Placed::Gone,
            // There already, or no longer registered there (unmapped
            // meanwhile): that page is done with.
            _ => at += PAGE as usize,
        }
    }
    Placed::All
}

/// The pager's thread: waits for events, handles them.
fn serve(inner: &Inner) -> io::Result<()> {
    let mut events = Vec::new();
    while !inner.stop.load(Ordering::SeqCst) {
        let fds: Vec<(usize, Arc<OwnedFd>)> = {
            let st = inner.state.lock().unwrap();
            st.spaces
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.gone)
                .map(|(i, s)| (i, s.uffd.clone()))
                .collect()
        };
        let mut borrowed: Vec<_> = fds.iter().map(|(_, f)| f.as_fd()).collect();
        borrowed.push(inner.wake.as_fd());
        let ready = uffd::poll_readable(&borrowed, 50)?;
        for ((i, fd), ready) in fds.iter().zip(ready) {
            if !ready {
                continue;
            }
            // Read and handled under the lock: see the module's
            // documentation.
            let mut st = inner.state.lock().unwrap();
            events.clear();
            if let Err(e) = uffd::read_events(fd.as_fd(), &mut events) {
                if e.raw_os_error() == Some(libc::ESRCH) {
                    st.spaces[*i].gone = true;
                    continue;
                }
                return Err(e);
            }
            for ev in events.drain(..) {
                handle(inner, &mut st, *i, ev);
            }
        }
    }
    Ok(())
}

/// Handles one event of space `i`.
fn handle(inner: &Inner, st: &mut State, i: usize, ev: Event) {
    let fd = st.spaces[i].uffd.clone();
    let wake = |start: u64, len: u64| {
        // Who waited there faults again, and finds what is there now.
        let _ = uffd::wake(fd.as_fd(), start, len);
    };
    match ev {
        Event::Fault { addr } => match st.spaces[i].pending.src_of(addr) {
            Some(src) => {
                inner.faults.fetch_add(1, Ordering::Relaxed);
                if st.requested.insert(src) {
                    (st.want)(src);
                }
            }
            // Nothing comes for it: a page never written, or emptied since.
            None => {
                if let Err(e) = uffd::zeropage(fd.as_fd(), addr, PAGE) {
                    if e.raw_os_error() == Some(libc::ESRCH) {
                        st.spaces[i].gone = true;
                    }
                }
            }
        },
        Event::Fork { uffd } => {
            let pending = st.spaces[i].pending.clone();
            st.spaces.push(Space {
                uffd: Arc::new(uffd),
                pending,
                gone: false,
            });
        }
        Event::Remap { from, to, len } => {
            st.spaces[i].pending.remap(from, to, len);
            wake(from, len);
        }
        Event::Remove { start, end } | Event::Unmap { start, end } => {
            st.spaces[i].pending.remove(start, end);
            wake(start, end.saturating_sub(start));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = PAGE;

    #[test]
    fn pending_pages_follow_remaps_and_removals() {
        let mut p = Pending::new(&[(0x10000, 4), (0x20000, 2)]);
        assert_eq!(p.len(), 6);
        assert_eq!(p.src_of(0x10000 + P), Some(0x10000 + P));
        // Emptied: not expected any more.
        p.remove(0x10000 + P, 0x10000 + 3 * P);
        assert_eq!(p.len(), 4);
        assert_eq!(p.src_of(0x10000 + P), None);
        assert_eq!(p.take(0x10000 + 2 * P), None);
        // Moved: expected at the new place, still read from the old one.
        p.remap(0x10000, 0x50000, 4 * P);
        assert_eq!(p.src_of(0x10000), None);
        assert_eq!(p.src_of(0x50000), Some(0x10000));
        assert_eq!(p.src_of(0x50000 + 3 * P), Some(0x10000 + 3 * P));
        assert_eq!(p.take(0x10000), Some(0x50000));
        assert_eq!(p.src_of(0x50000), None);
        assert_eq!(p.len(), 3);
        // A move onto pages still expected drops them.
        p.remap(0x50000, 0x20000, 4 * P);
        assert_eq!(p.len(), 1);
        assert_eq!(p.src_of(0x20000 + 3 * P), Some(0x10000 + 3 * P));
        assert_eq!(p.take(0x20000), None);
        assert_eq!(p.take(0x10000 + 3 * P), Some(0x20000 + 3 * P));
        assert!(p.is_empty());
    }

    #[test]
    fn a_run_taken_comes_in_pieces_consecutive_both_ways() {
        let mut p = Pending::new(&[(0x10000, 8), (0x20000, 4)]);
        // A hole in the first run, and its tail moved elsewhere.
        p.remove(0x10000 + 2 * P, 0x10000 + 3 * P);
        p.remap(0x10000 + 6 * P, 0x90000, 2 * P);
        let got = p.take_run(0x10000 + P, 8);
        assert_eq!(
            got,
            vec![
                (0x10000 + P, 0x10000 + P, 1),
                (0x10000 + 3 * P, 0x10000 + 3 * P, 3),
                (0x90000, 0x10000 + 6 * P, 2),
            ]
        );
        assert_eq!(p.len(), 1 + 4);
        assert_eq!(p.src_of(0x10000), Some(0x10000));
        assert_eq!(p.take_run(0x10000 + P, 8), vec![]);
        // From the middle of an extent; a run past the last page.
        assert_eq!(
            p.take_run(0x20000 + 2 * P, 100),
            vec![(0x20000 + 2 * P, 0x20000 + 2 * P, 2)]
        );
        assert_eq!(p.len(), 3);
        assert_eq!(p.take_run(u64::MAX - P + 1, u64::MAX), vec![]);
    }

    /// Pending against a page-by-page model, under random takes, puts,
    /// removals and moves.
    #[test]
    fn extents_agree_with_pages_one_by_one() {
        use std::collections::HashMap;
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let base = 0x100000u64;
        let span = 64u64;
        for _ in 0..200 {
            let runs = [(base, 20usize), (base + 24 * P, 16), (base + 48 * P, 8)];
            let mut p = Pending::new(&runs);
            let mut model: HashMap<u64, u64> = HashMap::new();
            for &(a, n) in &runs {
                for i in 0..n as u64 {
                    model.insert(a + i * P, a + i * P);
                }
            }
            let mut taken: Vec<(u64, u64)> = Vec::new();
            for _ in 0..30 {
                let a = base + rand(span) * P;
                let n = 1 + rand(12);
                match rand(4) {
                    0 => {
                        let got = p.take_run(a, n);
                        let mut want: Vec<(u64, u64)> = model
                            .iter()
                            .filter(|(_, &s)| s >= a && s < a + n * P)
                            .map(|(&d, &s)| (d, s))
                            .collect();
                        want.sort_by_key(|&(_, s)| s);
                        let flat: Vec<(u64, u64)> = got
                            .iter()
                            .flat_map(|&(d, s, m)| (0..m).map(move |i| (d + i * P, s + i * P)))
                            .collect();
                        assert_eq!(flat, want);
                        for (d, s) in want {
                            model.remove(&d);
                            taken.push((d, s));
                        }
                    }
                    1 => {
                        p.remove(a, a + n * P);
                        model.retain(|&d, _| d < a || d >= a + n * P);
                    }
                    2 => {
                        let to = base + rand(span) * P;
                        p.remap(a, to, n * P);
                        let moving: Vec<(u64, u64)> = model
                            .iter()
                            .filter(|(&d, _)| d >= a && d < a + n * P)
                            .map(|(&d, &s)| (d, s))
                            .collect();
                        model.retain(|&d, _| d < a || d >= a + n * P);
                        model.retain(|&d, _| d < to || d >= to + n * P);
                        for (d, s) in moving {
                            model.insert(d - a + to, s);
                        }
                    }
                    _ => {
                        // Back, where nothing is expected now.
                        if let Some((d, s)) = taken.pop() {
                            if !model.contains_key(&d) && !model.values().any(|&v| v == s) {
                                p.put(d, s, 1);
                                model.insert(d, s);
                            }
                        }
                    }
                }
                assert_eq!(p.len(), model.len());
                for i in 0..span + 32 {
                    let d = base + i * P;
                    assert_eq!(p.src_of(d), model.get(&d).copied(), "page {i}");
                }
            }
        }
    }
}
