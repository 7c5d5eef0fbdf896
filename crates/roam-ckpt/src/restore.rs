//! Rebuilding a captured process (x86-64): a stub is forked and stopped
//! under ptrace (or cloned from a zygote readied before, see
//! [`crate::stubs`]), and system calls injected into it replace its
//! memory, descriptors, signal state and threads with the image's, after
//! which every thread is given its registers back and let go.
//!
//! Each stop of the stub costs a round trip between it and its tracer
//! (tens of microseconds here): calls whose result is only checked are
//! queued and made many to a stop (`Builder::defer`); a descriptor an
//! open is to get is foreseen (the lowest free) and checked afterwards.
//!
//! The order matters (DESIGN.md's traps):
//! 1. the stub's rseq area is unregistered (its memory is about to go);
//! 2. a page with `syscall; int3`, in a hole of both layouts, becomes the
//!    injection site, with room for batches of calls, a scratch page and
//!    the queued calls' arguments after it (`SITE_LEN`);
//! 3. the stub's own mappings are unmapped, its vDSO block moved where
//!    the program had it (relative offsets kept);
//! 4. the program's mappings are made and filled, then given their
//!    protections; the mm fields (brk, arg/env areas, auxv, exe) set;
//! 5. descriptors, working directory, root, umask, limits, dispositions;
//! 6. threads cloned (same tids when free), each with its clear-tid
//!    address, robust list, rseq, alternate stack, credentials, mask;
//! 7. pending signals queued, interval timers armed;
//! 8. every thread gets its registers and FP state, the main one after
//!    the last call, which unmaps the injection page.
//!
//! Everything runs on the calling thread, the stub's tracer.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

use roam_sys::procfs::{self, Vma};
use roam_sys::ptrace::{self, Stop};
use roam_sys::remote::{self, Interrupted, Remote, Site};
use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::capture::{
    kind, Context, FdKind, FdRecord, MapRecord, Meta, Process, ThreadState, MAX_DELETED_FILE,
};
use crate::image::{decode_pages, ImageError, Section, PAGE};
use crate::precopy::{decode_held, Filler, PageStore};
use crate::stubs::{SpawnError, StubFactory};

/// The end of the user address space (x86-64, 4-level paging).
const USER_TOP: u64 = 0x7fff_ffff_f000;

/// The kernel's special mappings: never unmapped, moved with the vDSO.
const SPECIAL: [&[u8]; 3] = [b"[vvar]", b"[vvar_vclock]", b"[vdso]"];

/// Why a restore failed. The stub is killed in every case: no half-built
/// process is left.
#[derive(Debug, Error)]
pub enum RestoreError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("the image has no {0} section")]
    Missing(&'static str),
    #[error("the image's {what} section is malformed")]
    Malformed {
        what: &'static str,
        source: postcard::Error,
    },
    #[error("the image is of an {found} process; this machine is x86_64")]
    Arch { found: String },
    #[error(
        "the image's FP state uses CPU features (XSAVE bits {missing:#x}) that this CPU lacks"
    )]
    CpuFeatures { missing: u64 },
    #[error("the vDSO here differs from the image's ({0}); the process cannot be rebuilt here")]
    Vdso(String),
    #[error(
        "the image's process has uids {uids:?} and gids {gids:?}; only uid {uid} gid {gid} may be restored for this user"
    )]
    NotYours {
        uids: [u32; 4],
        gids: [u32; 4],
        uid: u32,
        gid: u32,
    },
    #[error("the image names pages sent before it (pre-copy), but {0}")]
    Precopied(String),
    #[error("the image leaves pages to come after the restore (post-copy), but {0}")]
    Lazy(String),
    #[error("cannot {what}")]
    Sys { what: String, source: io::Error },
}

pub(crate) fn sys(what: impl Into<String>) -> impl FnOnce(io::Error) -> RestoreError {
    let what = what.into();
    move |source| RestoreError::Sys { what, source }
}

/// A decoded image.
#[derive(Debug)]
pub struct Image {
    pub meta: Meta,
    pub threads: Vec<ThreadState>,
    pub process: Process,
    pub maps: Vec<MapRecord>,
    pub files: Vec<FdRecord>,
    pub context: Context,
    /// The PAGES section (runs, decoded as they are written).
    pub pages: Pages,
    /// The PRECOPIED section's runs: pages the destination of a migration
    /// holds from its pre-copy rounds (see [`Image::attach_precopied`]).
    pub precopied: Vec<(u64, usize)>,
    /// The LAZY section's runs: pages a post-copy brings once the process
    /// runs (see [`RestoreOpts::lazy`]).
    pub lazy: Vec<(u64, usize)>,
    store: Option<Arc<PageStore>>,
}

/// The PAGES section's bytes: read into memory (an image received), or
/// the part of a mapped image file that holds them (an image restored from
/// a file: no copy before the one into the stub).
#[derive(Debug)]
pub enum Pages {
    Owned(Vec<u8>),
    Mapped(
        std::sync::Arc<roam_sys::mem::Mapped>,
        std::ops::Range<usize>,
    ),
    /// The part of a received buffer (a whole image, and more) that holds
    /// them: not copied out of it.
    Received(Vec<u8>, std::ops::Range<usize>),
}

impl std::ops::Deref for Pages {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Pages::Owned(v) => v,
            Pages::Mapped(m, r) => &m[r.clone()],
            Pages::Received(v, r) => &v[r.clone()],
        }
    }
}

impl Image {
    /// Decodes the sections of an image ([`crate::image::read`]'s).
    pub fn from_sections(mut sections: Vec<Section>) -> Result<Image, RestoreError> {
        let at = sections
            .iter()
            .position(|s| s.kind == kind::PAGES)
            .ok_or(RestoreError::Missing("pages"))?;
        let pages = Pages::Owned(std::mem::take(&mut sections[at].payload));
        let list: Vec<(u32, &[u8])> = sections.iter().map(|s| (s.kind, &s.payload[..])).collect();
        Image::decode(&list, pages)
    }

    /// Checks and decodes the image that `buf` holds from `start` to its
    /// end (a received transfer: what comes before is not the image's), its
    /// pages left where they are.
    pub fn from_received(buf: Vec<u8>, start: usize) -> Result<Image, RestoreError> {
        let whole = buf.get(start..).ok_or(RestoreError::Missing("image"))?;
        let index: Vec<(u32, std::ops::Range<usize>)> = crate::image::index(whole)?
            .into_iter()
            .map(|(k, r)| (k, r.start + start..r.end + start))
            .collect();
        let pages = index
            .iter()
            .find(|(k, _)| *k == kind::PAGES)
            .ok_or(RestoreError::Missing("pages"))?
            .1
            .clone();
        let small: Vec<(u32, Vec<u8>)> = index
            .iter()
            .filter(|(k, _)| *k != kind::PAGES)
            .map(|(k, r)| (*k, buf[r.clone()].to_vec()))
            .collect();
        let list: Vec<(u32, &[u8])> = small.iter().map(|(k, p)| (*k, &p[..])).collect();
        Image::decode(&list, Pages::Received(buf, pages))
    }

    /// Decodes an image from its sections' payloads (kind, bytes) and its
    /// PAGES section.
    fn decode(sections: &[(u32, &[u8])], pages: Pages) -> Result<Image, RestoreError> {
        fn one<T: DeserializeOwned>(
            sections: &[(u32, &[u8])],
            k: u32,
            what: &'static str,
        ) -> Result<T, RestoreError> {
            let (_, payload) = sections
                .iter()
                .find(|(kind, _)| *kind == k)
                .ok_or(RestoreError::Missing(what))?;
            postcard::from_bytes(payload).map_err(|source| RestoreError::Malformed { what, source })
        }
        let threads = sections
            .iter()
            .filter(|(k, _)| *k == kind::THREAD)
            .map(|(_, payload)| {
                postcard::from_bytes(payload).map_err(|source| RestoreError::Malformed {
                    what: "thread",
                    source,
                })
            })
            .collect::<Result<Vec<ThreadState>, _>>()?;
        if threads.is_empty() {
            return Err(RestoreError::Missing("thread"));
        }
        // Checked now: a bad run is found before any stub exists.
        decode_pages(&pages)?;
        let runs_of = |k: u32| match sections.iter().find(|(kind, _)| *kind == k) {
            Some((_, payload)) => decode_held(payload),
            None => Ok(Vec::new()),
        };
        let precopied = runs_of(kind::PRECOPIED)?;
        let lazy = runs_of(kind::LAZY)?;
        Ok(Image {
            meta: one(sections, kind::META, "meta")?,
            threads,
            process: one(sections, kind::PROCESS, "process")?,
            maps: one(sections, kind::MAPS, "maps")?,
            files: one(sections, kind::FILES, "files")?,
            context: one(sections, kind::CONTEXT, "context")?,
            pages,
            precopied,
            lazy,
            store: None,
        })
    }

    /// Gives the image the pages of its pre-copy rounds, which must hold
    /// every page the image names.
    pub fn attach_precopied(&mut self, store: PageStore) -> Result<(), RestoreError> {
        for &(addr, n) in &self.precopied {
            store
                .slices(addr, n)
                .map_err(|a| RestoreError::Precopied(format!("page {a:#x} was not among them")))?;
        }
        self.store = Some(Arc::new(store));
        Ok(())
    }

    /// The metadata of the image file at `path` (its first section only)
    /// and the file's length.
    pub fn peek(path: &std::path::Path) -> Result<(Meta, u64), RestoreError> {
        let f =
            std::fs::File::open(path).map_err(sys(format!("open the image {}", path.display())))?;
        let len = f
            .metadata()
            .map_err(sys(format!("read the size of {}", path.display())))?
            .len();
        let first = crate::image::read_first(io::BufReader::new(f))?;
        if first.kind != kind::META {
            return Err(RestoreError::Missing("metadata"));
        }
        let meta =
            postcard::from_bytes(&first.payload).map_err(|source| RestoreError::Malformed {
                what: "metadata",
                source,
            })?;
        Ok((meta, len))
    }

    /// Checks and decodes the image file at `path`, mapped, not read: its
    /// pages are copied once, from the file's pages into the stub.
    pub fn load(path: &std::path::Path) -> Result<Image, RestoreError> {
        let f =
            std::fs::File::open(path).map_err(sys(format!("open the image {}", path.display())))?;
        let map = std::sync::Arc::new(
            roam_sys::mem::Mapped::file(&f)
                .map_err(sys(format!("map the image {}", path.display())))?,
        );
        let index = crate::image::index(&map)?;
        let pages = index
            .iter()
            .find(|(k, _)| *k == kind::PAGES)
            .ok_or(RestoreError::Missing("pages"))?
            .1
            .clone();
        let list: Vec<(u32, &[u8])> = index.iter().map(|(k, r)| (*k, &map[r.clone()])).collect();
        Image::decode(&list, Pages::Mapped(map.clone(), pages))
    }

    /// Whether `user` may restore the image: every uid and gid of its
    /// process is theirs.
    pub fn check_user(&self, user: &User) -> Result<(), RestoreError> {
        let c = &self.context;
        if c.uids.iter().any(|&u| u != user.uid) || c.gids.iter().any(|&g| g != user.gid) {
            return Err(RestoreError::NotYours {
                uids: c.uids,
                gids: c.gids,
                uid: user.uid,
                gid: user.gid,
            });
        }
        Ok(())
    }

    /// Whether this machine can run the image: architecture, FP features.
    pub fn check_machine(&self) -> Result<(), RestoreError> {
        if self.meta.arch != "x86_64" {
            return Err(RestoreError::Arch {
                found: self.meta.arch.clone(),
            });
        }
        let xcr0 = ptrace::xcr0();
        for t in &self.threads {
            let bv = t
                .xstate
                .get(512..520)
                .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
            if bv & !xcr0 != 0 {
                return Err(RestoreError::CpuFeatures {
                    missing: bv & !xcr0,
                });
            }
        }
        Ok(())
    }
}

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreOpts {
    /// The restored process's descriptors 0, 1 and 2 where the image's
    /// were streams (pipes, terminals, sockets).
    pub stdio: [RawFd; 3],
    /// Give the process (and its threads) their old ids if free.
    pub same_pid: bool,
    /// The process leads a new session.
    pub new_session: bool,
    /// Which of `stdio` is a terminal (a pty's slave) whose foreground job
    /// the process is to be, as a program started on it is: it becomes the
    /// controlling terminal of a new session led by a keeper, and the
    /// process leads its foreground group (see
    /// [`roam_sys::remote::spawn_stub`]). `new_session` is then moot.
    pub ctty: Option<usize>,
    /// Take the image's credentials (uids, gids, groups); the caller must
    /// be root. Without, the process runs as the caller.
    pub creds: bool,
    /// Restore on behalf of this user: the image's uids and gids must all
    /// be theirs, its files and mappings are opened with their rights
    /// (fsuid, fsgid, groups, set before anything is opened), and the
    /// process gets their groups. Implies `creds`.
    pub user: Option<User>,
    /// Put the process under a seccomp user-notification filter (installed
    /// last, on every thread); its listener is in [`Restored::listener`].
    pub supervise: Option<Vec<libc::sock_filter>>,
    /// The signal the process gets when its parent thread exits.
    pub pdeathsig: Option<i32>,
    /// The `/` the process sees, if not the caller's (a mount namespace
    /// of its own, as [`roam_sys::spawn::SpawnRequest::root`] gives).
    pub root: Option<Vec<u8>>,
    /// Keep the process stopped, ready to run, under the calling thread's
    /// ptrace ([`Restored::held`]): a migration's new copy, which runs
    /// only once the move is decided.
    pub hold: bool,
    /// For an image with pages to come (its LAZY section): where the
    /// userfaultfd that waits for them goes, as soon as it is made, before
    /// the rest of the rebuild (whose calls may touch those pages): to a
    /// [`crate::postcopy::Pager`], which must serve it from then on.
    pub lazy: Option<std::sync::mpsc::Sender<OwnedFd>>,
    /// For an image with pre-copied pages (its PRECOPIED section, the
    /// pages in the store [`Image::attach_precopied`] gave it): place
    /// those of private anonymous mappings after the rebuild, while the
    /// process runs, from a thread of their own ([`Restored::filler`]),
    /// instead of before it runs.
    pub precopied_later: bool,
}

impl RestoreOpts {
    /// Plain options: `stdio`, the old pid if free, nothing else asked
    /// for (the caller's credentials, no session, no supervision).
    pub fn plain(stdio: [RawFd; 3]) -> RestoreOpts {
        RestoreOpts {
            stdio,
            same_pid: true,
            new_session: false,
            ctty: None,
            creds: false,
            user: None,
            supervise: None,
            pdeathsig: None,
            root: None,
            hold: false,
            lazy: None,
            precopied_later: false,
        }
    }
}

/// Who a restore is done for (see [`RestoreOpts::user`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// A restored process, running, a child of the caller (who reaps it).
#[derive(Debug)]
pub struct Restored {
    pub pid: i32,
    pub tids: Vec<i32>,
    /// The listener of the filter [`RestoreOpts::supervise`] asked for.
    pub listener: Option<OwnedFd>,
    /// With [`RestoreOpts::hold`]: the process, stopped; release it (from
    /// the same thread) to let it run, or to kill it.
    pub held: Option<crate::capture::Held>,
    /// With [`RestoreOpts::precopied_later`]: what places the pre-copied
    /// pages; the process needs it until [`Filler::wait`] returns.
    pub filler: Option<Filler>,
    /// How long each step of the rebuild took, in order (for the logs).
    pub steps: Vec<(&'static str, std::time::Duration)>,
}

/// Rebuilds the image's process and lets it run, in a stub forked for
/// it.
pub fn restore(img: &Image, opts: &RestoreOpts) -> Result<Restored, RestoreError> {
    check(img, opts)?;
    let t0 = std::time::Instant::now();
    let stub = fresh_stub(img, opts)?;
    rebuild(img, opts, stub, None, t0, Vec::new())
}

/// [`restore`] in a stub from `stubs` (made here if there is none, or
/// none for `opts.root` as it is mounted now): a few milliseconds less
/// than forking one. A stub on a controlling terminal is forked as in
/// [`restore`]; so is one when no factory can be made, or the one made
/// again after a failure fails too (its zygote killed, say). A stub
/// killed while it is made fails the restore, as a forked one would.
pub fn restore_with(
    img: &Image,
    opts: &RestoreOpts,
    stubs: &mut Option<StubFactory>,
) -> Result<Restored, RestoreError> {
    restore_prespawned(img, opts, stubs, None)
}

/// [`restore_with`] in the stub `pre` made ahead of time if it fits (from
/// the factory as it is, with the pid this restore asks for); a stub that
/// does not is killed, and one made as [`restore_with`] does.
pub fn restore_prespawned(
    img: &Image,
    opts: &RestoreOpts,
    stubs: &mut Option<StubFactory>,
    mut pre: Option<crate::stubs::Prespawned>,
) -> Result<Restored, RestoreError> {
    check(img, opts)?;
    // A broken factory is made again once.
    for _ in 0..2 {
        if opts.ctty.is_some() {
            break;
        }
        if !stubs
            .as_ref()
            .is_some_and(|f| f.serves(opts.root.as_deref()))
        {
            *stubs = StubFactory::new(opts.root.as_deref()).ok();
        }
        let Some(f) = stubs else {
            break;
        };
        let want = opts.same_pid.then_some(img.meta.pid);
        let t0 = std::time::Instant::now();
        // A stub made ahead gets its stdio in the rebuild's first calls.
        if let Some(p) = pre.take().filter(|p| f.fits(p, want)) {
            let (stub, first) = p.defer_stdio(opts.stdio, opts.new_session);
            return rebuild(img, opts, stub, Some(f.site()), t0, first);
        }
        match f.spawn(opts.stdio, want, opts.new_session) {
            Ok(stub) => return rebuild(img, opts, stub, Some(f.site()), t0, Vec::new()),
            Err(SpawnError::Stub(e)) => return Err(e),
            Err(SpawnError::Factory(_)) => *stubs = None,
        }
    }
    let t0 = std::time::Instant::now();
    let stub = fresh_stub(img, opts)?;
    rebuild(img, opts, stub, None, t0, Vec::new())
}

/// What makes an image unrestorable with these options, before any stub.
fn check(img: &Image, opts: &RestoreOpts) -> Result<(), RestoreError> {
    img.check_machine()?;
    if !img.precopied.is_empty() && img.store.is_none() {
        return Err(RestoreError::Precopied(
            "they are not here (an image of a migration is restored by the migration)".into(),
        ));
    }
    if !img.lazy.is_empty() && opts.lazy.is_none() {
        return Err(RestoreError::Lazy(
            "nothing here would bring them (a post-copy's image is restored by its migration)"
                .into(),
        ));
    }
    if let Some(u) = &opts.user {
        img.check_user(u)?;
    }
    Ok(())
}

/// A stub forked for this restore.
fn fresh_stub(img: &Image, opts: &RestoreOpts) -> Result<i32, RestoreError> {
    let want = opts.same_pid.then_some(img.meta.pid);
    remote::spawn_stub(
        opts.stdio,
        want,
        opts.new_session,
        opts.ctty,
        opts.root.as_deref(),
    )
    .map_err(sys("start the restore stub"))
}

/// Rebuilds the image in `stub` (readied before if `ready` gives its
/// injection page), the calls `first` made there before any other (a
/// stub made ahead's stdio); the stub is killed if that fails.
fn rebuild(
    img: &Image,
    opts: &RestoreOpts,
    stub: i32,
    ready: Option<u64>,
    spawned_from: std::time::Instant,
    first: Vec<crate::stubs::StdioCall>,
) -> Result<Restored, RestoreError> {
    let mut b = Builder {
        img,
        pid: stub,
        main: None,
        others: Vec::new(),
        scratch: 0,
        site: 0,
        listener: None,
        filler: None,
        ready,
        queue: Vec::new(),
        stashed: 0,
        marks: crate::steps::Steps::since(spawned_from),
    };
    for c in first {
        b.defer_expect(c.what, c.nr, &c.args, c.expect);
    }
    b.mark("spawn");
    match b.build(opts) {
        Ok(tids) => Ok(Restored {
            filler: b.filler.take().inspect(Filler::go),
            pid: stub,
            held: opts
                .hold
                .then(|| crate::capture::Held::new(stub, tids.clone())),
            tids,
            listener: b.listener.take(),
            steps: b.marks.lengths(),
        }),
        Err(e) => {
            kill_stub(stub);
            Err(e)
        }
    }
}

/// Kills and reaps a stub, a child of ours.
pub(crate) fn kill_stub(stub: i32) {
    // SAFETY: kill and reap our own child, the stub.
    unsafe {
        libc::kill(stub, libc::SIGKILL);
        libc::waitpid(stub, std::ptr::null_mut(), libc::__WALL);
    }
}

/// Images with more pages than this are written into the stub by two
/// threads.
const FILL_IN_TWO_ABOVE: usize = 8 << 20;

/// Images with fewer pages than this are written without a userfaultfd
/// (making one costs more than it saves).
const UFFD_ABOVE: usize = 1 << 20;

/// Private anonymous memory with stored pages (heap, stack, anonymous
/// mappings): what a userfaultfd fills.
fn anon_private(m: &MapRecord) -> bool {
    m.stored && !m.shared && !m.path.starts_with(b"/") && !SPECIAL.contains(&&m.path[..])
}

/// Whether `[addr, addr + len)` lies in one private anonymous mapping
/// with stored pages (see [`anon_private`]).
fn in_anon_private(maps: &[MapRecord], addr: u64, len: u64) -> bool {
    maps.iter()
        .any(|m| anon_private(m) && m.start <= addr && addr + len <= m.end)
}

/// Runs `work` on the pieces, in two threads for a half each if they are
/// many bytes; returns what both return, concatenated.
fn in_two<'p>(
    pieces: Vec<(u64, &'p [u8])>,
    work: impl Fn(&[(u64, &'p [u8])]) -> Result<Vec<(u64, &'p [u8])>, RestoreError> + Sync,
) -> Result<Vec<(u64, &'p [u8])>, RestoreError> {
    let total: usize = pieces.iter().map(|(_, d)| d.len()).sum();
    if total < FILL_IN_TWO_ABOVE {
        return work(&pieces);
    }
    let (first, second) = halves(&pieces, total / 2);
    std::thread::scope(|s| {
        let other = s.spawn(|| work(&second));
        let mut mine = work(&first)?;
        let other = other.join().unwrap_or_else(|_| {
            Err(RestoreError::Sys {
                what: "write the pages".into(),
                source: io::Error::other("the writing thread panicked"),
            })
        })?;
        mine.extend(other);
        Ok(mine)
    })
}

/// Fills pieces through a userfaultfd; returns what it left (pages that
/// were there already, or a piece outside what it registered).
fn copy_pieces<'p>(uffd: &OwnedFd, pieces: &[(u64, &'p [u8])]) -> Vec<(u64, &'p [u8])> {
    let mut left = Vec::new();
    for &(addr, data) in pieces {
        let mut done = 0;
        while done < data.len() {
            done += roam_sys::uffd::copy(uffd.as_fd(), addr + done as u64, &data[done..]);
            if done < data.len() {
                // That page the other way; the rest here again.
                left.push((addr + done as u64, &data[done..done + PAGE]));
                done += PAGE;
            }
        }
    }
    left
}

/// Writes pieces of memory (address, bytes) into process `pid`.
fn write_pieces(pid: i32, pieces: &[(u64, &[u8])]) -> Result<(), RestoreError> {
    for &(addr, data) in pieces {
        let n = ptrace::write_memory(pid, addr, data)
            .map_err(sys(format!("write the pages at {addr:#x}")))?;
        if n != data.len() {
            return Err(RestoreError::Sys {
                what: format!("write the pages at {addr:#x}"),
                source: io::Error::other(format!("{n} of {} bytes", data.len())),
            });
        }
    }
    Ok(())
}

/// Splits pieces of memory in two: the first `bytes` (a piece cut at a
/// page if need be), and the rest.
#[allow(clippy::type_complexity)]
fn halves<'p>(
    pieces: &[(u64, &'p [u8])],
    bytes: usize,
) -> (Vec<(u64, &'p [u8])>, Vec<(u64, &'p [u8])>) {
    let (mut first, mut second) = (Vec::new(), Vec::new());
    let mut left = bytes;
    for &(addr, data) in pieces {
        if left >= data.len() {
            left -= data.len();
            first.push((addr, data));
        } else if left > 0 {
            let cut = left.next_multiple_of(PAGE).min(data.len());
            first.push((addr, &data[..cut]));
            if cut < data.len() {
                second.push((addr + cut as u64, &data[cut..]));
            }
            left = 0;
        } else {
            second.push((addr, data));
        }
    }
    (first, second)
}

/// The injection area of a stub, from its start: the site (`syscall;
/// int3`); a batch of calls' code ([`Remote::batch`]) from
/// [`BATCH_CODE`], its results from [`BATCH_RESULTS`]; the scratch page
/// of single calls at [`SCRATCH`]; the stash of deferred calls' arguments
/// (`Builder::defer`) at [`STASH`].
pub(crate) const SITE_LEN: u64 = 8 * PAGE as u64;
const BATCH_CODE: u64 = 16;
const BATCH_RESULTS: u64 = 3 * PAGE as u64;
pub(crate) const SCRATCH: u64 = 4 * PAGE as u64;
const STASH: u64 = 5 * PAGE as u64;
const STASH_LEN: u64 = SITE_LEN - STASH;

/// Calls per batch: as many as the code room holds, and the results'.
const PER_BATCH: usize = {
    let code = (BATCH_RESULTS - BATCH_CODE) as usize / remote::BATCH_CALL_BYTES - 1;
    let results = (SCRATCH - BATCH_RESULTS) as usize / 8;
    if code < results {
        code
    } else {
        results
    }
};

/// Makes `calls` in one stop of a readied stub's `remote`, whose
/// injection page is at `site`; the raw results.
pub(crate) fn batch(
    remote: &mut Remote,
    site: u64,
    calls: &[(libc::c_long, [u64; 6])],
) -> io::Result<Vec<u64>> {
    remote.batch(site + BATCH_CODE, site + BATCH_RESULTS, calls)
}

fn call_in(
    remote: &mut Remote,
    what: &str,
    nr: libc::c_long,
    args: &[u64],
) -> Result<u64, RestoreError> {
    remote
        .call(nr, args)
        .map_err(sys(format!("{what} (in the stub)")))
}

/// Readies a stub just spawned ([`remote::spawn_stub`]: stopped right
/// after a system call) for the injection of a rebuild:
/// 1. its rseq area is unregistered (its memory is about to go);
/// 2. a page with `syscall; int3` becomes the injection site, a scratch
///    page beside it, in a hole of its layout and of `avoid`; every
///    signal is blocked (nothing reaches the stub while it is rebuilt);
/// 3. its own mappings are unmapped, but the kernel's special ones.
///
/// Returns the stub to inject into, the site, and its mappings as they
/// were.
pub(crate) fn prepare_stub(
    pid: i32,
    avoid: &[(u64, u64)],
) -> Result<(Remote, u64, Vec<Vma>), RestoreError> {
    let r = ptrace::regs(pid).map_err(sys("read the stub's registers"))?;
    let mut code = [0u8; 2];
    ptrace::read_memory(pid, r.rip - 2, &mut code).map_err(sys("read the stub's code"))?;
    if code != [0x0f, 0x05] {
        return Err(RestoreError::Sys {
            what: "find the stub's system-call instruction".into(),
            source: io::Error::other(format!("{code:02x?} before rip")),
        });
    }
    let mut remote = Remote::new(pid, Site::Syscall(r.rip - 2)).map_err(sys("take the stub"))?;
    let rs = ptrace::rseq(pid).map_err(sys("read the stub's rseq"))?;
    if rs.address != 0 {
        call_in(
            &mut remote,
            "unregister the stub's rseq",
            libc::SYS_rseq,
            &[rs.address, u64::from(rs.len), 1, u64::from(rs.signature)],
        )?;
    }
    let stub_maps = procfs::maps(pid).map_err(sys("list the stub's mappings"))?;
    let mut taken = avoid.to_vec();
    taken.extend(stub_maps.iter().map(|v| (v.start, v.end)));
    let site = hole(&taken, SITE_LEN).ok_or_else(|| RestoreError::Sys {
        what: "find room for the injection page".into(),
        source: io::Error::from_raw_os_error(libc::ENOMEM),
    })?;
    call_in(
        &mut remote,
        "map the injection page",
        libc::SYS_mmap,
        &[
            site,
            SITE_LEN,
            (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64,
            u64::MAX,
            0,
        ],
    )?;
    ptrace::write_memory(pid, site, &[0x0f, 0x05, 0xcc])
        .map_err(sys("write the injection code"))?;
    remote.set_site(Site::Trap(site));
    let all = site + SCRATCH;
    ptrace::write_memory(pid, all, &u64::MAX.to_le_bytes())
        .map_err(sys("write the stub's scratch page"))?;
    // In as few calls as there are gaps between what stays (munmap
    // takes holes in its range in its stride).
    let mut calls = vec![(
        libc::SYS_rt_sigprocmask,
        [libc::SIG_SETMASK as u64, all, 0, 8, 0, 0],
    )];
    let mut keep: Vec<(u64, u64)> = stub_maps
        .iter()
        .filter(|v| SPECIAL.contains(&&v.path[..]))
        .map(|v| (v.start, v.end))
        .collect();
    keep.push((site, site + SITE_LEN));
    keep.sort_unstable();
    let mut from = 0u64;
    for (start, end) in keep.into_iter().chain([(USER_TOP, USER_TOP)]) {
        let used = stub_maps
            .iter()
            .any(|v| v.start < start && v.end > from && v.path != b"[vsyscall]");
        if start > from && used {
            calls.push((libc::SYS_munmap, [from, start - from, 0, 0, 0, 0]));
        }
        from = from.max(end);
    }
    let got = batch(&mut remote, site, &calls).map_err(sys("ready the stub"))?;
    if let Some(source) = remote::first_failed(&got) {
        return Err(RestoreError::Sys {
            what: "block signals and unmap the stub's memory (in the stub)".into(),
            source,
        });
    }
    Ok((remote, site, stub_maps))
}

/// Takes a stub readied before ([`crate::stubs::StubFactory`]), its
/// injection page at `site`, for an image with mappings `maps`: the page
/// is moved away if the image needs its place.
fn adopt_stub(
    pid: i32,
    site: u64,
    maps: &[MapRecord],
) -> Result<(Remote, u64, Vec<Vma>), RestoreError> {
    let mut remote = Remote::new(pid, Site::Trap(site)).map_err(sys("take the stub"))?;
    let stub_maps = procfs::maps(pid).map_err(sys("list the stub's mappings"))?;
    let len = SITE_LEN;
    if !maps.iter().any(|m| m.start < site + len && m.end > site) {
        return Ok((remote, site, stub_maps));
    }
    let mut taken: Vec<(u64, u64)> = maps.iter().map(|m| (m.start, m.end)).collect();
    taken.extend(stub_maps.iter().map(|v| (v.start, v.end)));
    let to = hole(&taken, len).ok_or_else(|| RestoreError::Sys {
        what: "find room for the injection page".into(),
        source: io::Error::from_raw_os_error(libc::ENOMEM),
    })?;
    // The call moves the page it runs from: stepped to its exit, after
    // which nothing of the old page runs.
    remote.set_site(Site::Syscall(site));
    call_in(
        &mut remote,
        "move the injection page",
        libc::SYS_mremap,
        &[
            site,
            len,
            len,
            (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64,
            to,
        ],
    )?;
    remote.set_site(Site::Trap(to));
    let stub_maps = procfs::maps(pid).map_err(sys("list the stub's mappings"))?;
    Ok((remote, to, stub_maps))
}

struct Builder<'a> {
    img: &'a Image,
    pid: i32,
    main: Option<Remote>,
    others: Vec<Remote>,
    /// The scratch page (arguments the calls read or write).
    scratch: u64,
    /// The injection page.
    site: u64,
    /// The supervision filter's listener, once installed.
    listener: Option<OwnedFd>,
    /// What places the pre-copied pages, once started.
    filler: Option<Filler>,
    /// The injection page of a stub readied before (see
    /// [`crate::stubs::StubFactory`]).
    ready: Option<u64>,
    /// Calls of the main thread not made yet (`Builder::defer`).
    queue: Vec<Deferred>,
    /// Bytes of the stash in use by the queued calls.
    stashed: u64,
    /// Each step's end (see [`Restored::steps`]).
    marks: crate::steps::Steps,
}

/// A call made later, in a batch with others: what it is for, its number
/// and arguments, and the result it must have if not only "no error" (a
/// descriptor number foreseen, say).
struct Deferred {
    what: String,
    nr: libc::c_long,
    args: [u64; 6],
    expect: Option<u64>,
}

impl Builder<'_> {
    fn main(&mut self) -> &mut Remote {
        self.main.as_mut().expect("the stub's main thread")
    }

    /// Makes a call now (the deferred ones first), for its result.
    fn call(&mut self, what: &str, nr: libc::c_long, args: &[u64]) -> Result<u64, RestoreError> {
        self.flush()?;
        call_in(self.main(), what, nr, args)
    }

    /// Queues a call of the main thread whose result is only checked: the
    /// queue is made in one stop (per [`PER_BATCH`] calls) when a call's
    /// result is needed ([`Builder::call`]), when the stub's memory is
    /// read or written otherwise, and at the end ([`Builder::flush`]).
    /// Its arguments in memory go in the stash ([`Builder::stash`]).
    fn defer(&mut self, what: impl Into<String>, nr: libc::c_long, args: &[u64]) {
        self.defer_expect(what, nr, args, None);
    }

    /// [`Builder::defer`] of a call that must return `expect`.
    fn defer_expect(
        &mut self,
        what: impl Into<String>,
        nr: libc::c_long,
        args: &[u64],
        expect: Option<u64>,
    ) {
        assert!(args.len() <= 6, "six arguments at most");
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        self.queue.push(Deferred {
            what: what.into(),
            nr,
            args: a,
            expect,
        });
    }

    /// Writes a queued call's arguments into the stash; their address.
    /// The queue is made first if the stash is full: a call's arguments
    /// go in one piece ([`Builder::room`]), before it is queued.
    fn stash(&mut self, data: &[u8]) -> Result<u64, RestoreError> {
        let at = self.room(data.len())?;
        ptrace::write_memory(self.pid, at, data).map_err(sys("write the stub's stash"))?;
        Ok(at)
    }

    /// `len` bytes of the stash, to write a call's arguments into.
    fn room(&mut self, len: usize) -> Result<u64, RestoreError> {
        let len = (len as u64).next_multiple_of(8);
        if len > STASH_LEN {
            return Err(RestoreError::Sys {
                what: "pass arguments to the stub".into(),
                source: io::Error::other(format!("{len} bytes")),
            });
        }
        if self.stashed + len > STASH_LEN {
            self.flush()?;
        }
        let at = self.site + STASH + self.stashed;
        self.stashed += len;
        Ok(at)
    }

    /// A NUL-terminated path in the stash.
    fn stash_path(&mut self, path: &[u8]) -> Result<u64, RestoreError> {
        self.stash(&c_path(path)?)
    }

    /// Makes the queued calls, in order, in as few stops as the injection
    /// area holds code for. Every call is made; the first that failed (or
    /// returned other than it must) is the error.
    fn flush(&mut self) -> Result<(), RestoreError> {
        let queue = std::mem::take(&mut self.queue);
        self.stashed = 0;
        let site = self.site;
        for chunk in queue.chunks(PER_BATCH) {
            let list: Vec<(libc::c_long, [u64; 6])> =
                chunk.iter().map(|d| (d.nr, d.args)).collect();
            let got = batch(self.main(), site, &list).map_err(sys("make calls in the stub"))?;
            check_results(chunk, &got)?;
        }
        Ok(())
    }

    /// Writes `data` into the scratch page at `off`; its address.
    fn put(&self, off: u64, data: &[u8]) -> Result<u64, RestoreError> {
        assert!(off as usize + data.len() <= PAGE, "scratch overflow");
        let at = self.scratch + off;
        ptrace::write_memory(self.pid, at, data).map_err(sys("write the stub's scratch page"))?;
        Ok(at)
    }

    /// A NUL-terminated path in the scratch page.
    fn put_path(&self, path: &[u8]) -> Result<u64, RestoreError> {
        self.put(0, &c_path(path)?)
    }

    fn build(&mut self, opts: &RestoreOpts) -> Result<Vec<i32>, RestoreError> {
        let pid = self.pid;
        // 1.-3. A stub readied: rseq unregistered, the injection site and
        // scratch page in a hole of both layouts, signals blocked, its own
        // memory gone; then its vDSO block moves.
        let (remote, site, stub_maps) = match self.ready {
            None => {
                let avoid: Vec<(u64, u64)> =
                    self.img.maps.iter().map(|m| (m.start, m.end)).collect();
                prepare_stub(pid, &avoid)?
            }
            Some(site) => adopt_stub(pid, site, &self.img.maps)?,
        };
        self.main = Some(remote);
        self.site = site;
        self.scratch = site + SCRATCH;
        self.mark("stub");
        self.move_vdso(&stub_maps, site)?;
        if let Some(u) = &opts.user {
            self.open_as(u)?;
        }
        // 4. The program's memory.
        self.map_all()?;
        self.mark("map");
        self.fill_pages(opts)?;
        self.mark("fill");
        self.protect_all()?;
        self.set_mm()?;
        self.mark("mm");
        // 5. Descriptors, context, dispositions.
        self.files()?;
        self.mark("files");
        self.context()?;
        self.sigactions()?;
        self.mark("context");
        // 6. Threads, then each thread's own state.
        let mut tids = vec![pid];
        for t in &self.img.threads[1..] {
            let tid = self.clone_thread(if opts.same_pid { t.tid } else { 0 })?;
            tids.push(tid);
        }
        for i in 0..self.img.threads.len() {
            self.thread_state(i, opts)?;
        }
        self.mark("threads");
        // 7. Pending signals and timers, then what the caller asked for,
        // last before the registers.
        self.pending(&tids)?;
        self.timers()?;
        if let Some(sig) = opts.pdeathsig {
            // After the credentials: changing them clears it.
            let args = [libc::PR_SET_PDEATHSIG as u64, sig as u64];
            self.defer("set the parent-death signal", libc::SYS_prctl, &args);
            for r in &mut self.others {
                call_in(r, "set the parent-death signal", libc::SYS_prctl, &args)?;
            }
        }
        if let Some(filter) = &opts.supervise {
            self.supervise(filter)?;
        }
        self.mark("signals");
        // 8. Registers: other threads at their stop, the main one at the
        // exit of the call that unmaps the injection page.
        self.flush()?;
        for (i, t) in self.img.threads.iter().enumerate().skip(1) {
            let r = &self.others[i - 1];
            ptrace::set_xstate(r.tid(), &t.xstate).map_err(sys("set a thread's FP state"))?;
            ptrace::set_regs(r.tid(), &resume_regs(&t.regs))
                .map_err(sys("set a thread's registers"))?;
        }
        let t0 = &self.img.threads[0];
        ptrace::set_xstate(pid, &t0.xstate).map_err(sys("set the FP state"))?;
        let regs = resume_regs(&t0.regs);
        let site = self.site;
        self.main()
            .last_call(libc::SYS_munmap, &[site, SITE_LEN], &regs)
            .map_err(sys("unmap the injection page"))?;
        self.mark("registers");
        if !opts.hold {
            for &tid in &tids {
                ptrace::detach(tid).map_err(sys("let the process run"))?;
            }
        }
        Ok(tids)
    }

    /// Notes the end of a step (see [`Restored::steps`]).
    fn mark(&mut self, step: &'static str) {
        self.marks.mark(step);
    }

    /// Takes `u`'s rights to open files (groups, fsgid, fsuid): what the
    /// image names is opened as they could open it, not as root.
    fn open_as(&mut self, u: &User) -> Result<(), RestoreError> {
        let groups: Vec<u8> = u.groups.iter().flat_map(|g| g.to_le_bytes()).collect();
        if groups.len() > PAGE {
            return Err(RestoreError::Sys {
                what: "set the groups (in the stub)".into(),
                source: io::Error::from_raw_os_error(libc::EINVAL),
            });
        }
        let at = self.stash(&groups)?;
        self.defer(
            "set the groups",
            libc::SYS_setgroups,
            &[u.groups.len() as u64, at],
        );
        self.defer("set the fsgid", libc::SYS_setfsgid, &[u64::from(u.gid)]);
        self.defer("set the fsuid", libc::SYS_setfsuid, &[u64::from(u.uid)]);
        Ok(())
    }

    /// Installs `filter` on every thread with a user-notification
    /// listener, and takes the listener from the process.
    fn supervise(&mut self, filter: &[libc::sock_filter]) -> Result<(), RestoreError> {
        let code: Vec<u8> = filter
            .iter()
            .flat_map(|f| {
                let mut b = f.code.to_le_bytes().to_vec();
                b.extend_from_slice(&[f.jt, f.jf]);
                b.extend_from_slice(&f.k.to_le_bytes());
                b
            })
            .collect();
        if code.len() + 16 > PAGE {
            return Err(RestoreError::Sys {
                what: "pass the seccomp filter to the stub".into(),
                source: io::Error::from_raw_os_error(libc::E2BIG),
            });
        }
        let prog_at = self.put(16, &code)?;
        // struct sock_fprog: a u16 length, padding, the filter's address.
        let mut fprog = (filter.len() as u64).to_le_bytes().to_vec();
        fprog.extend_from_slice(&prog_at.to_le_bytes());
        let fprog_at = self.put(0, &fprog)?;
        self.defer(
            "set no_new_privs",
            libc::SYS_prctl,
            &[libc::PR_SET_NO_NEW_PRIVS as u64, 1, 0, 0, 0],
        );
        // TSYNC reaches every thread; with NEW_LISTENER it needs
        // TSYNC_ESRCH (a failure to sync is then an error, not a tid).
        const NEW_LISTENER: u64 = 1 << 3;
        const TSYNC: u64 = 1;
        const TSYNC_ESRCH: u64 = 1 << 4;
        const SET_MODE_FILTER: u64 = 1;
        let fd = self.call(
            "install the seccomp filter",
            libc::SYS_seccomp,
            &[
                SET_MODE_FILTER,
                NEW_LISTENER | TSYNC | TSYNC_ESRCH,
                fprog_at,
            ],
        )?;
        let listener = ptrace::take_fd(self.pid, fd as i32)
            .map_err(sys("take the seccomp listener from the stub"))?;
        self.defer("close the listener", libc::SYS_close, &[fd]);
        self.listener = Some(listener);
        Ok(())
    }

    /// Moves the stub's vvar/vdso block where the program had its own,
    /// through a spot free in both layouts (the two may overlap).
    fn move_vdso(&mut self, stub_maps: &[Vma], site: u64) -> Result<(), RestoreError> {
        let mine: Vec<&Vma> = stub_maps
            .iter()
            .filter(|v| SPECIAL.contains(&&v.path[..]))
            .collect();
        let theirs: Vec<&MapRecord> = self
            .img
            .maps
            .iter()
            .filter(|m| SPECIAL.contains(&&m.path[..]))
            .collect();
        let a: Vec<(&[u8], u64)> = mine
            .iter()
            .map(|v| (&v.path[..], v.end - v.start))
            .collect();
        let b: Vec<(&[u8], u64)> = theirs
            .iter()
            .map(|m| (&m.path[..], m.end - m.start))
            .collect();
        if a != b {
            let names = |v: &[(&[u8], u64)]| {
                v.iter()
                    .map(|(n, l)| format!("{} {l}", String::from_utf8_lossy(n)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(RestoreError::Vdso(format!(
                "here: {}; image: {}",
                names(&a),
                names(&b)
            )));
        }
        if mine.is_empty() {
            return Ok(());
        }
        let (lo, hi) = (mine[0].start, mine[mine.len() - 1].end);
        let (tlo, thi) = (theirs[0].start, theirs[theirs.len() - 1].end);
        if mine.iter().zip(&theirs).all(|(v, m)| v.start == m.start) {
            return Ok(());
        }
        let mut taken: Vec<(u64, u64)> = self.img.maps.iter().map(|m| (m.start, m.end)).collect();
        taken.push((lo, hi));
        taken.push((site, site + SITE_LEN));
        // Straight there unless the two places overlap; else through a
        // spot free in both.
        let steps = if thi <= lo || tlo >= hi {
            vec![(lo, tlo)]
        } else {
            let tmp = hole(&taken, hi - lo).ok_or_else(|| RestoreError::Vdso("no room".into()))?;
            vec![(lo, tmp), (tmp, tlo)]
        };
        for (from, to) in steps {
            for v in &mine {
                let old = v.start - lo + from;
                let new = v.start - lo + to;
                let len = v.end - v.start;
                self.defer_expect(
                    "move the vDSO",
                    libc::SYS_mremap,
                    &[
                        old,
                        len,
                        len,
                        (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64,
                        new,
                    ],
                    Some(new),
                );
            }
        }
        debug_assert_eq!(thi - tlo, hi - lo);
        Ok(())
    }

    /// Makes every mapping of the image (writable while being filled).
    fn map_all(&mut self) -> Result<(), RestoreError> {
        // Shared memory without a file: one memfd per object, mapped at
        // each of its views.
        let mut shm: BTreeMap<u64, u64> = BTreeMap::new();
        let mut sysv: BTreeMap<u64, (u64, bool)> = BTreeMap::new();
        // Files open for mapping, by path and mode (a library has several
        // mappings).
        let mut opened: BTreeMap<(Vec<u8>, bool), u64> = BTreeMap::new();
        // The descriptors an open is foreseen to get (the lowest free):
        // opened in the same batch as the mappings made from them.
        let mut fds = self.open_fds()?;
        let img = self.img;
        let maps = &img.maps;
        for m in maps {
            if SPECIAL.contains(&&m.path[..]) || m.path == b"[vsyscall]" {
                continue;
            }
            let len = m.end - m.start;
            if m.shared && m.path.starts_with(b"/SYSV") {
                self.attach_sysv(m, &mut sysv)?;
                continue;
            }
            let prot = prot_of(m) | if m.stored { libc::PROT_WRITE } else { 0 };
            let anon_shared =
                m.shared && (m.inode == 0 || crate::capture::anonymous_shared(&m.path));
            let file = !anon_shared && m.path.starts_with(b"/");
            let (flags, fd) = if anon_shared {
                let fd = match shm.get(&m.inode) {
                    Some(&fd) => fd,
                    None => {
                        let size = maps
                            .iter()
                            .filter(|o| o.shared && o.inode == m.inode && o.path == m.path)
                            .map(|o| o.offset + (o.end - o.start))
                            .max()
                            .unwrap_or(len);
                        let name = self.put_path(b"roam-shm")?;
                        let fd =
                            self.call("make shared memory", libc::SYS_memfd_create, &[name, 0])?;
                        fds.insert(fd);
                        self.defer("size shared memory", libc::SYS_ftruncate, &[fd, size]);
                        shm.insert(m.inode, fd);
                        fd
                    }
                };
                (libc::MAP_SHARED, fd)
            } else if file {
                let write = m.shared && m.prot & 2 != 0;
                let fd = match opened.get(&(m.path.to_vec(), write)) {
                    Some(&fd) => fd,
                    None => {
                        let mode = if write { libc::O_RDWR } else { libc::O_RDONLY };
                        let path = self.stash_path(&m.path)?;
                        let fd = lowest_free(&fds);
                        self.defer_expect(
                            format!("open {}", String::from_utf8_lossy(&m.path)),
                            libc::SYS_openat,
                            &[
                                libc::AT_FDCWD as u64,
                                path,
                                (mode | libc::O_CLOEXEC) as u64,
                                0,
                            ],
                            Some(fd),
                        );
                        fds.insert(fd);
                        opened.insert((m.path.to_vec(), write), fd);
                        fd
                    }
                };
                let flags = if m.shared {
                    libc::MAP_SHARED
                } else {
                    libc::MAP_PRIVATE
                };
                (flags, fd)
            } else {
                let grows = if m.path == b"[stack]" {
                    libc::MAP_GROWSDOWN
                } else {
                    0
                };
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | grows, u64::MAX)
            };
            let offset = if fd == u64::MAX { 0 } else { m.offset };
            self.defer_expect(
                format!("map {:#x}-{:#x}", m.start, m.end),
                libc::SYS_mmap,
                &[
                    m.start,
                    len,
                    prot as u64,
                    (flags | libc::MAP_FIXED) as u64,
                    fd,
                    offset,
                ],
                Some(m.start),
            );
        }
        // Then the descriptors they were made from.
        for fd in opened.into_values().chain(shm.into_values()) {
            self.defer("close a mapped file", libc::SYS_close, &[fd]);
        }
        for (id, deleted) in sysv.into_values() {
            if deleted {
                self.call(
                    "remove a SysV segment",
                    libc::SYS_shmctl,
                    &[id, libc::IPC_RMID as u64, 0],
                )?;
            }
        }
        Ok(())
    }

    /// A SysV shared memory view: the segment made again (its key kept
    /// unless it had been removed, in which case it is removed again once
    /// attached) and attached where it was.
    fn attach_sysv(
        &mut self,
        m: &MapRecord,
        sysv: &mut BTreeMap<u64, (u64, bool)>,
    ) -> Result<(), RestoreError> {
        if m.offset != 0 {
            return Err(RestoreError::Sys {
                what: format!("attach the SysV segment at {:#x}", m.start),
                source: io::Error::other("a partly unmapped segment"),
            });
        }
        let id = match sysv.get(&m.inode) {
            Some(&(id, _)) => id,
            None => {
                let deleted = m.path.ends_with(b" (deleted)");
                let key = std::str::from_utf8(&m.path[5..m.path.len().min(13)])
                    .ok()
                    .and_then(|k| u32::from_str_radix(k, 16).ok())
                    .unwrap_or(0);
                let size = self
                    .img
                    .maps
                    .iter()
                    .filter(|o| o.inode == m.inode && o.path == m.path)
                    .map(|o| o.end - o.start)
                    .max()
                    .unwrap_or(m.end - m.start);
                let key = if deleted { 0 } else { u64::from(key) };
                let id = self.call(
                    "make a SysV segment",
                    libc::SYS_shmget,
                    &[key, size, (libc::IPC_CREAT | 0o600) as u64],
                )?;
                sysv.insert(m.inode, (id, deleted));
                id
            }
        };
        let exec = if m.prot & 4 != 0 { libc::SHM_EXEC } else { 0 };
        self.call(
            "attach a SysV segment",
            libc::SYS_shmat,
            &[id, m.start, exec as u64],
        )?;
        Ok(())
    }

    /// Writes the stored pages. Those of private anonymous memory (most)
    /// go through a userfaultfd of the stub's (`UFFDIO_COPY`: each page
    /// allocated and filled in one step, where a write would fault it in,
    /// zero it, then copy); the others, and any the userfaultfd could not
    /// fill, with process_vm_writev once it is closed. A large image is
    /// written by two threads, half each: the kernel allocates the stub's
    /// pages in parallel.
    fn fill_pages(&mut self, opts: &RestoreOpts) -> Result<(), RestoreError> {
        // The mappings made before their pages are written.
        self.flush()?;
        if opts.precopied_later && self.img.lazy.is_empty() && !self.img.precopied.is_empty() {
            if let Some(store) = self.img.store.clone() {
                return self.fill_pages_but_precopied(store);
            }
        }
        let mut pieces: Vec<(u64, &[u8])> = decode_pages(&self.img.pages)?
            .into_iter()
            .map(|r| (r.addr, r.data))
            .collect();
        if let Some(store) = &self.img.store {
            for &(addr, n) in &self.img.precopied {
                let slices = store.slices(addr, n).map_err(|a| {
                    RestoreError::Precopied(format!("page {a:#x} was not among them"))
                })?;
                pieces.extend(slices);
            }
        }
        let pid = self.pid;
        let total: usize = pieces.iter().map(|(_, d)| d.len()).sum();
        let mut rest = pieces;
        if let Some(to) = opts.lazy.as_ref().filter(|_| !self.img.lazy.is_empty()) {
            let uffd = self.lazy_uffd()?;
            let (anon, other) = rest.into_iter().partition(|&(addr, data)| {
                in_anon_private(&self.img.maps, addr, data.len() as u64)
            });
            rest = other;
            rest.extend(in_two(anon, |half| Ok(copy_pieces(&uffd, half)))?);
            in_two(rest, |half| write_pieces(pid, half).map(|()| Vec::new()))?;
            return to
                .send(uffd)
                .map_err(|_| RestoreError::Lazy("their pager is gone".into()));
        }
        if total >= UFFD_ABOVE {
            if let Some(uffd) = self.missing_pages_uffd()? {
                let (anon, other) = rest.into_iter().partition(|&(addr, data)| {
                    in_anon_private(&self.img.maps, addr, data.len() as u64)
                });
                rest = other;
                rest.extend(in_two(anon, |half| Ok(copy_pieces(&uffd, half)))?);
                // Closed (the stub's copy was closed at once): the
                // registrations end, and writes may fault pages in.
                drop(uffd);
            }
        }
        in_two(rest, |half| write_pieces(pid, half).map(|()| Vec::new()))?;
        Ok(())
    }

    /// [`RestoreOpts::precopied_later`]: writes the image's pages and the
    /// pre-copied ones outside private anonymous mappings, and starts a
    /// [`Filler`] for the rest, on a userfaultfd made as a post-copy's
    /// (the process's layout may change before they are all in).
    fn fill_pages_but_precopied(&mut self, store: Arc<PageStore>) -> Result<(), RestoreError> {
        let uffd = self.lazy_uffd()?;
        let mut later = Vec::new();
        let mut now = Vec::new();
        for &(addr, n) in &self.img.precopied {
            let slices = store
                .slices(addr, n)
                .map_err(|a| RestoreError::Precopied(format!("page {a:#x} was not among them")))?;
            for (a, data) in slices {
                if in_anon_private(&self.img.maps, a, data.len() as u64) {
                    later.push((a, data.len() / PAGE));
                } else {
                    now.push((a, data));
                }
            }
        }
        let (anon, other): (Vec<_>, Vec<_>) = decode_pages(&self.img.pages)?
            .into_iter()
            .map(|r| (r.addr, r.data))
            .partition(|&(addr, data)| in_anon_private(&self.img.maps, addr, data.len() as u64));
        now.extend(other);
        // Before anything touches the registered mappings.
        let fill_uffd = uffd.try_clone().map_err(sys("duplicate the userfaultfd"))?;
        self.filler = Some(
            Filler::start(fill_uffd, store.clone(), later)
                .map_err(sys("start placing the pre-copied pages"))?,
        );
        now.extend(in_two(anon, |half| Ok(copy_pieces(&uffd, half)))?);
        drop(uffd);
        let pid = self.pid;
        in_two(now, |half| write_pieces(pid, half).map(|()| Vec::new()))?;
        Ok(())
    }

    /// A userfaultfd of the stub's, every private anonymous mapping with
    /// stored pages registered on it for missing pages; none (the pages
    /// are then written) if the kernel or a mapping refuses.
    fn missing_pages_uffd(&mut self) -> Result<Option<OwnedFd>, RestoreError> {
        self.flush()?;
        let Ok(fd) = self
            .main()
            .call(libc::SYS_userfaultfd, &[roam_sys::uffd::USERFAULTFD_FLAGS])
        else {
            return Ok(None);
        };
        let taken = ptrace::take_fd(self.pid, fd as i32);
        self.call("close the userfaultfd", libc::SYS_close, &[fd])?;
        let Ok(uffd) = taken else { return Ok(None) };
        if roam_sys::uffd::enable_missing(uffd.as_fd()).is_err() {
            return Ok(None);
        }
        for m in self.img.maps.iter().filter(|m| anon_private(m)) {
            if roam_sys::uffd::register_missing(uffd.as_fd(), m.start, m.end).is_err() {
                return Ok(None);
            }
        }
        Ok(Some(uffd))
    }

    /// The userfaultfd of a post-copy: made in the stub (still root, so
    /// that the kernel's own faults come to it too), with the events that
    /// move pages, every private anonymous mapping registered.
    fn lazy_uffd(&mut self) -> Result<OwnedFd, RestoreError> {
        let fd = self.call(
            "make a userfaultfd",
            libc::SYS_userfaultfd,
            &[roam_sys::uffd::USERFAULTFD_FLAGS_ALL],
        )?;
        let taken = ptrace::take_fd(self.pid, fd as i32);
        self.call("close the userfaultfd", libc::SYS_close, &[fd])?;
        let uffd = taken.map_err(sys("take the userfaultfd from the stub"))?;
        roam_sys::uffd::enable_lazy(uffd.as_fd()).map_err(sys("set up the userfaultfd"))?;
        for m in self.img.maps.iter().filter(|m| anon_private(m)) {
            roam_sys::uffd::register_missing(uffd.as_fd(), m.start, m.end).map_err(sys(
                format!("register {:#x}-{:#x} for post-copy", m.start, m.end),
            ))?;
        }
        for &(addr, n) in &self.img.lazy {
            if !in_anon_private(&self.img.maps, addr, (n * PAGE) as u64) {
                return Err(RestoreError::Lazy(format!(
                    "pages at {addr:#x} are in no private anonymous mapping"
                )));
            }
        }
        Ok(uffd)
    }

    /// Gives mappings made writable for filling their own protection.
    fn protect_all(&mut self) -> Result<(), RestoreError> {
        let img = self.img;
        for m in img
            .maps
            .iter()
            .filter(|m| m.stored && m.prot & 2 == 0)
            .filter(|m| !SPECIAL.contains(&&m.path[..]) && m.path != b"[vsyscall]")
        {
            self.defer(
                format!("protect {:#x}-{:#x}", m.start, m.end),
                libc::SYS_mprotect,
                &[m.start, m.end - m.start, prot_of(m) as u64],
            );
        }
        Ok(())
    }

    /// The stub's open descriptors, as they will be once the queued calls
    /// are made.
    fn open_fds(&mut self) -> Result<std::collections::BTreeSet<u64>, RestoreError> {
        let mut fds: std::collections::BTreeSet<u64> =
            std::fs::read_dir(format!("/proc/{}/fd", self.pid))
                .and_then(|d| {
                    d.map(|e| Ok(e?.file_name().to_string_lossy().parse::<u64>().unwrap_or(0)))
                        .collect()
                })
                .map_err(sys("list the stub's descriptors"))?;
        // As they will be once the queued calls are made: those that open
        // one say which it gets.
        for d in &self.queue {
            match d.nr {
                libc::SYS_close => {
                    fds.remove(&d.args[0]);
                }
                libc::SYS_openat | libc::SYS_pidfd_getfd => fds.extend(d.expect),
                _ => {}
            }
        }
        Ok(fds)
    }

    /// brk, code/data/stack/arg/env areas, auxv and exe
    /// (prctl(PR_SET_MM_MAP)).
    fn set_mm(&mut self) -> Result<(), RestoreError> {
        let mm = self.img.process.mm;
        let auxv = &self.img.process.auxv;
        if auxv.len() > 2048 {
            return Err(RestoreError::Sys {
                what: "set the auxiliary vector".into(),
                source: io::Error::other(format!("{} bytes", auxv.len())),
            });
        }
        // The kernel refuses to replace the exe by the same file while it
        // is mapped (EBUSY): kept when the stub's is already the one.
        let same_exe = std::fs::read_link(format!("/proc/{}/exe", self.pid))
            .is_ok_and(|p| p.as_os_str().as_encoded_bytes() == &self.img.meta.exe[..]);
        let exe_fd = if same_exe {
            u64::from(u32::MAX)
        } else {
            // Foreseen (the calls queued since the pages were written
            // open and close nothing).
            let fd = lowest_free(&self.open_fds()?);
            let exe = self.stash_path(&self.img.meta.exe)?;
            self.defer_expect(
                "open the executable",
                libc::SYS_openat,
                &[
                    libc::AT_FDCWD as u64,
                    exe,
                    (libc::O_RDONLY | libc::O_CLOEXEC) as u64,
                    0,
                ],
                Some(fd),
            );
            fd
        };
        // The map and the auxv after it, in one piece of the stash.
        let map_len = 13 * 8;
        let at = self.room(map_len + auxv.len())?;
        let auxv_at = at + map_len as u64;
        let mut map = Vec::with_capacity(104);
        for v in [
            mm.start_code,
            mm.end_code,
            mm.start_data,
            mm.end_data,
            mm.start_brk,
            mm.brk.max(mm.start_brk),
            mm.start_stack,
            mm.arg_start,
            mm.arg_end,
            mm.env_start,
            mm.env_end,
            auxv_at,
        ] {
            map.extend_from_slice(&v.to_le_bytes());
        }
        map.extend_from_slice(&(auxv.len() as u32).to_le_bytes());
        map.extend_from_slice(&(exe_fd as u32).to_le_bytes());
        debug_assert_eq!(map.len(), map_len);
        map.extend_from_slice(auxv);
        ptrace::write_memory(self.pid, at, &map).map_err(sys("write the stub's stash"))?;
        const PR_SET_MM_MAP: u64 = 14;
        self.defer(
            "set the memory layout fields",
            libc::SYS_prctl,
            &[libc::PR_SET_MM as u64, PR_SET_MM_MAP, at, map_len as u64, 0],
        );
        if !same_exe {
            self.defer("close the executable", libc::SYS_close, &[exe_fd]);
        }
        Ok(())
    }

    /// The descriptors, each at its number: reopened, dup'ed, rebuilt.
    fn files(&mut self) -> Result<(), RestoreError> {
        let files = self.img.files.clone();
        // New descriptors are moved above every target number until placed.
        let high = files.iter().map(|f| f.fd).max().unwrap_or(2) as u64 + 1;
        let mut pipes: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        let mut temps = Vec::new();
        for f in &files {
            let cloexec = f.flags & libc::O_CLOEXEC as u32 != 0;
            let what = format!("rebuild descriptor {}", f.fd);
            let src = match &f.kind {
                FdKind::Stdio => {
                    if f.fd > 2 {
                        return Err(RestoreError::Sys {
                            what,
                            source: io::Error::other("a stream beyond stdio"),
                        });
                    }
                    continue;
                }
                FdKind::Dup(of) => *of as u64,
                FdKind::Path => {
                    let path = self.put_path(&f.target)?;
                    let keep = libc::O_ACCMODE
                        | libc::O_APPEND
                        | libc::O_NONBLOCK
                        | libc::O_DIRECTORY
                        | libc::O_DSYNC
                        | libc::O_SYNC
                        | libc::O_DIRECT
                        | libc::O_NOATIME
                        | libc::O_PATH
                        | libc::O_LARGEFILE;
                    let fd = self.call(
                        &format!("{what}: open {}", String::from_utf8_lossy(&f.target)),
                        libc::SYS_openat,
                        &[
                            libc::AT_FDCWD as u64,
                            path,
                            (f.flags as i32 & keep) as u64,
                            0,
                        ],
                    )?;
                    let t = self.temp(fd, high)?;
                    if f.pos != 0 && f.flags as i32 & libc::O_PATH == 0 {
                        self.call(&what, libc::SYS_lseek, &[t, f.pos, libc::SEEK_SET as u64])?;
                    }
                    temps.push(t);
                    t
                }
                FdKind::Deleted(data) => {
                    if data.len() as u64 > MAX_DELETED_FILE {
                        return Err(RestoreError::Sys {
                            what,
                            source: io::Error::from_raw_os_error(libc::EFBIG),
                        });
                    }
                    let name = f.target.rsplit(|&b| b == b'/').next().unwrap_or(b"deleted");
                    let name = &name[..name.len().min(200)];
                    let at = self.put_path(name)?;
                    let fd = self.call(&what, libc::SYS_memfd_create, &[at, 0])?;
                    let t = self.temp(fd, high)?;
                    let path = format!("/proc/{}/fd/{t}", self.pid);
                    std::fs::write(&path, data).map_err(sys(format!("{what}: fill it")))?;
                    self.call(&what, libc::SYS_lseek, &[t, f.pos, libc::SEEK_SET as u64])?;
                    temps.push(t);
                    t
                }
                FdKind::Pipe {
                    inode,
                    write,
                    buffered,
                } => {
                    let (r, w) = match pipes.get(inode) {
                        Some(&p) => p,
                        None => {
                            let at = self.scratch;
                            self.call(&what, libc::SYS_pipe2, &[at, libc::O_CLOEXEC as u64])?;
                            let mut b = [0u8; 8];
                            ptrace::read_memory(self.pid, at, &mut b)
                                .map_err(sys("read the pipe's descriptors"))?;
                            let r = u32::from_le_bytes(b[..4].try_into().unwrap()) as u64;
                            let w = u32::from_le_bytes(b[4..].try_into().unwrap()) as u64;
                            let (r, w) = (self.temp(r, high)?, self.temp(w, high)?);
                            if !buffered.is_empty() {
                                let size = buffered.len().max(PAGE) as u64;
                                // Room for what was in it, so writing it
                                // back never blocks.
                                let _ = self.call(
                                    &what,
                                    libc::SYS_fcntl,
                                    &[w, libc::F_SETPIPE_SZ as u64, size],
                                );
                                let path = format!("/proc/{}/fd/{w}", self.pid);
                                let mut p = std::fs::OpenOptions::new()
                                    .write(true)
                                    .custom_flags(libc::O_NONBLOCK)
                                    .open(&path)
                                    .map_err(sys(format!("{what}: open the pipe")))?;
                                io::Write::write_all(&mut p, buffered)
                                    .map_err(sys(format!("{what}: refill the pipe")))?;
                            }
                            temps.extend([r, w]);
                            pipes.insert(*inode, (r, w));
                            (r, w)
                        }
                    };
                    if *write {
                        w
                    } else {
                        r
                    }
                }
            };
            let flags = if cloexec { libc::O_CLOEXEC as u64 } else { 0 };
            self.call(&what, libc::SYS_dup3, &[src, f.fd as u64, flags])?;
            // Status flags a pipe or memfd was made without.
            let status = f.flags as i32 & (libc::O_NONBLOCK | libc::O_APPEND | libc::O_ASYNC);
            if matches!(f.kind, FdKind::Pipe { .. } | FdKind::Deleted(_)) && status != 0 {
                self.call(
                    &what,
                    libc::SYS_fcntl,
                    &[f.fd as u64, libc::F_SETFL as u64, status as u64],
                )?;
            }
        }
        for t in temps {
            self.call("close a temporary descriptor", libc::SYS_close, &[t])?;
        }
        Ok(())
    }

    /// Moves a new descriptor above every target number.
    fn temp(&mut self, fd: u64, high: u64) -> Result<u64, RestoreError> {
        if fd >= high {
            return Ok(fd);
        }
        let t = self.call(
            "move a descriptor",
            libc::SYS_fcntl,
            &[fd, libc::F_DUPFD_CLOEXEC as u64, high],
        )?;
        self.call("move a descriptor", libc::SYS_close, &[fd])?;
        Ok(t)
    }

    /// Working directory, root, umask, resource limits.
    fn context(&mut self) -> Result<(), RestoreError> {
        let c = self.img.context.clone();
        if &c.root[..] != b"/" {
            let at = self.stash_path(&c.root)?;
            self.defer("change the root", libc::SYS_chroot, &[at]);
        }
        let at = self.stash_path(&c.cwd)?;
        self.defer(
            format!("enter {}", String::from_utf8_lossy(&c.cwd)),
            libc::SYS_chdir,
            &[at],
        );
        self.defer("set the umask", libc::SYS_umask, &[u64::from(c.umask)]);
        // Set from here (prlimit on another process): no injected call.
        let now = ptrace::rlimits(self.pid).map_err(sys("read the stub's limits"))?;
        for (res, &limit) in c.rlimits.iter().enumerate() {
            if now.get(res) != Some(&limit) {
                ptrace::set_rlimit(self.pid, res as u32, limit)
                    .map_err(sys(format!("set resource limit {res}")))?;
            }
        }
        Ok(())
    }

    /// The signal dispositions (process-wide).
    fn sigactions(&mut self) -> Result<(), RestoreError> {
        // What the stub inherited from its maker goes back to the default
        // unless the image says otherwise.
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .map_err(sys("read the stub's status"))?;
        let inherited =
            crate::capture::sigset(&status, "SigIgn:") | crate::capture::sigset(&status, "SigCgt:");
        let mut actions = self.img.process.sigactions.clone();
        for signal in 1..=64u32 {
            let own = actions.iter().any(|a| a.signal == signal);
            if inherited & (1 << (signal - 1)) != 0 && !own {
                actions.push(crate::capture::SigAction {
                    signal,
                    handler: 0,
                    flags: 0,
                    restorer: 0,
                    mask: 0,
                });
            }
        }
        for a in actions {
            let mut b = Vec::with_capacity(32);
            for v in [a.handler, a.flags, a.restorer, a.mask] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            let at = self.stash(&b)?;
            self.defer(
                format!("set the action of signal {}", a.signal),
                libc::SYS_rt_sigaction,
                &[u64::from(a.signal), at, 0, 8],
            );
        }
        Ok(())
    }

    /// A new thread of the stub (tid `want` if free), stopped and taken.
    fn clone_thread(&mut self, want: i32) -> Result<i32, RestoreError> {
        let flags = libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM;
        // struct clone_args: flags, pidfd, child_tid, parent_tid,
        // exit_signal, stack, stack_size, tls, set_tid, set_tid_size.
        self.flush()?;
        let tid_at = self.scratch + 512;
        self.put(512, &want.to_le_bytes())?;
        let mut args = [0u64; 10];
        args[0] = flags as u64;
        if want != 0 {
            args[8] = tid_at;
            args[9] = 1;
        }
        let bytes: Vec<u8> = args.iter().flat_map(|v| v.to_le_bytes()).collect();
        let at = self.put(0, &bytes)?;
        let mut tid = self.main().call(libc::SYS_clone3, &[at, 80]);
        if tid.is_err() && want != 0 {
            let bytes: Vec<u8> = args[..8].iter().flat_map(|v| v.to_le_bytes()).collect();
            let at = self.put(0, &bytes)?;
            tid = self.main().call(libc::SYS_clone3, &[at, 64]);
        }
        let tid = tid.map_err(sys("create a thread"))? as i32;
        match ptrace::wait_stop(tid).map_err(sys("wait for a new thread"))? {
            Stop::Stopped { .. } => {}
            other => {
                return Err(RestoreError::Sys {
                    what: "take a new thread".into(),
                    source: io::Error::other(format!("{other:?}")),
                })
            }
        }
        self.others
            .push(Remote::new(tid, Site::Trap(self.site)).map_err(sys("take a new thread"))?);
        Ok(tid)
    }

    /// Thread `i`'s own state: clear-tid address, robust list, rseq,
    /// alternate stack, name, credentials, signal mask.
    fn thread_state(&mut self, i: usize, opts: &RestoreOpts) -> Result<(), RestoreError> {
        let t = self.img.threads[i].clone();
        let c = self.img.context.clone();
        if i > 0 {
            // The main thread's calls first; the stash is then this
            // thread's, and holds all of its state (no flush on the way,
            // which would let one piece overwrite another).
            self.flush()?;
            let groups = opts.user.as_ref().map_or(&c.groups, |u| &u.groups);
            if 48 + (4 * groups.len() as u64).next_multiple_of(8) > STASH_LEN {
                return Err(RestoreError::Sys {
                    what: format!("set the groups of thread {}", t.tid),
                    source: io::Error::other(format!("{} groups", groups.len())),
                });
            }
        }
        let what = |w: &str| format!("{w} of thread {}", t.tid);
        let mut calls: Vec<Deferred> = Vec::new();
        let mut add = |what: String, nr: libc::c_long, args: &[u64]| {
            let mut a = [0u64; 6];
            a[..args.len()].copy_from_slice(args);
            calls.push(Deferred {
                what,
                nr,
                args: a,
                expect: None,
            });
        };
        add(
            what("set the clear-tid address"),
            libc::SYS_set_tid_address,
            &[t.tid_address],
        );
        if t.robust_list.0 != 0 {
            add(
                what("set the robust list"),
                libc::SYS_set_robust_list,
                &[t.robust_list.0, t.robust_list.1],
            );
        }
        let (addr, len, _, sig) = t.rseq;
        if addr != 0 {
            add(
                what("register rseq"),
                libc::SYS_rseq,
                &[addr, u64::from(len), 0, u64::from(sig)],
            );
        }
        let (sp, flags, size) = t.altstack;
        let mut b = sp.to_le_bytes().to_vec();
        b.extend_from_slice(&(flags as i64).to_le_bytes());
        b.extend_from_slice(&size.to_le_bytes());
        let at = self.stash(&b)?;
        add(
            what("set the alternate signal stack"),
            libc::SYS_sigaltstack,
            &[at, 0],
        );
        let mut name = t.comm.to_vec();
        name.truncate(15);
        name.push(0);
        let at = self.stash(&name)?;
        add(
            what("set the name"),
            libc::SYS_prctl,
            &[libc::PR_SET_NAME as u64, at],
        );
        if (opts.creds || opts.user.is_some()) && !creds_already(&c) {
            let groups = opts.user.as_ref().map_or(&c.groups, |u| &u.groups);
            let count = groups.len() as u64;
            let groups: Vec<u8> = groups.iter().flat_map(|g| g.to_le_bytes()).collect();
            let at = self.stash(&groups)?;
            add(what("set the groups"), libc::SYS_setgroups, &[count, at]);
            let [gr, ge, gs, gf] = c.gids.map(u64::from);
            add(what("set the gids"), libc::SYS_setresgid, &[gr, ge, gs]);
            add(what("set the fsgid"), libc::SYS_setfsgid, &[gf]);
            let [ur, ue, us, uf] = c.uids.map(u64::from);
            add(what("set the uids"), libc::SYS_setresuid, &[ur, ue, us]);
            add(what("set the fsuid"), libc::SYS_setfsuid, &[uf]);
        }
        let mask = c.thread_signals.get(i).map_or(0, |s| s.0);
        let at = self.stash(&mask.to_le_bytes())?;
        add(
            what("set the signal mask"),
            libc::SYS_rt_sigprocmask,
            &[libc::SIG_SETMASK as u64, at, 0, 8],
        );
        if i == 0 {
            self.queue.extend(calls);
            return Ok(());
        }
        // Another thread: its calls made now, in one stop.
        let site = self.site;
        let list: Vec<(libc::c_long, [u64; 6])> = calls.iter().map(|d| (d.nr, d.args)).collect();
        let got =
            batch(&mut self.others[i - 1], site, &list).map_err(sys(what("set the state")))?;
        self.stashed = 0;
        check_results(&calls, &got)
    }

    /// Queues the signals that were pending, with their siginfo.
    fn pending(&mut self, tids: &[i32]) -> Result<(), RestoreError> {
        let pid = self.pid;
        for info in self.img.process.pending.clone() {
            let sig = siginfo_signal(&info);
            let at = self.put(0, &info)?;
            self.call(
                &format!("queue signal {sig}"),
                libc::SYS_rt_sigqueueinfo,
                &[pid as u64, sig, at],
            )?;
        }
        for (t, &tid) in self.img.threads.clone().iter().zip(tids) {
            for info in &t.pending {
                let sig = siginfo_signal(info);
                let at = self.put(0, info)?;
                self.call(
                    &format!("queue signal {sig} for a thread"),
                    libc::SYS_rt_tgsigqueueinfo,
                    &[pid as u64, tid as u64, sig, at],
                )?;
            }
        }
        Ok(())
    }

    /// Arms the interval timers that were running.
    fn timers(&mut self) -> Result<(), RestoreError> {
        for (which, t) in self.img.process.itimers.clone().iter().enumerate() {
            if t.iter().all(|&v| v == 0) {
                continue;
            }
            let arm = |b: &mut Self, t: [i64; 4]| -> Result<u64, RestoreError> {
                let bytes: Vec<u8> = t.iter().flat_map(|v| v.to_le_bytes()).collect();
                let at = b.put(0, &bytes)?;
                b.call(
                    "arm an interval timer",
                    libc::SYS_setitimer,
                    &[which as u64, at, at],
                )?;
                Ok(at)
            };
            arm(self, *t)?;
            if which == 0 {
                continue;
            }
            // The CPU-time timers get a tick added when set: read back,
            // and set again with the tick taken off.
            let at = self.scratch;
            self.call(
                "read an interval timer",
                libc::SYS_getitimer,
                &[which as u64, at],
            )?;
            let mut b = [0u8; 32];
            ptrace::read_memory(self.pid, at, &mut b).map_err(sys("read an interval timer"))?;
            let got = |i: usize| i64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
            let us = |s: i64, u: i64| s * 1_000_000 + u;
            let extra = us(got(2), got(3)) - us(t[2], t[3]);
            let want = us(t[2], t[3]) - extra;
            if extra > 0 && want > 0 {
                arm(self, [t[0], t[1], want / 1_000_000, want % 1_000_000])?;
            }
        }
        Ok(())
    }
}

/// The first of `calls` that failed, or returned other than it must, as
/// the error; `got` are their raw results.
fn check_results(calls: &[Deferred], got: &[u64]) -> Result<(), RestoreError> {
    for (d, &rax) in calls.iter().zip(got) {
        if let Some(source) = remote::failed(rax) {
            return Err(RestoreError::Sys {
                what: format!("{} (in the stub)", d.what),
                source,
            });
        }
        if let Some(want) = d.expect.filter(|&w| w != rax) {
            return Err(RestoreError::Sys {
                what: format!("{} (in the stub)", d.what),
                source: io::Error::other(format!("it returned {rax:#x}, not {want:#x}")),
            });
        }
    }
    Ok(())
}

/// `path` NUL-terminated, if it fits a page.
fn c_path(path: &[u8]) -> Result<Vec<u8>, RestoreError> {
    if path.len() >= PAGE - 1 {
        return Err(RestoreError::Sys {
            what: "pass a path to the stub".into(),
            source: io::Error::from_raw_os_error(libc::ENAMETOOLONG),
        });
    }
    let mut p = path.to_vec();
    p.push(0);
    Ok(p)
}

/// The lowest descriptor number not in `fds`.
fn lowest_free(fds: &std::collections::BTreeSet<u64>) -> u64 {
    (0..).find(|n| !fds.contains(n)).expect("a free number")
}

/// Whether the stub (which has its maker's credentials) already has the
/// image's.
fn creds_already(c: &Context) -> bool {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
    let ids = |name: &str| crate::capture::status_ids(&status, name);
    ids("Uid:") == c.uids && ids("Gid:") == c.gids && ids("Groups:") == c.groups
}

/// The signal number of a 128-byte siginfo.
fn siginfo_signal(info: &[u8]) -> u64 {
    u64::from(u32::from_le_bytes(info[..4].try_into().expect("4 bytes")))
}

fn prot_of(m: &MapRecord) -> i32 {
    let mut p = 0;
    if m.prot & 1 != 0 {
        p |= libc::PROT_READ;
    }
    if m.prot & 2 != 0 {
        p |= libc::PROT_WRITE;
    }
    if m.prot & 4 != 0 {
        p |= libc::PROT_EXEC;
    }
    p
}

/// The highest free range of `len` bytes (a guard page either side)
/// below the top of the user address space, `taken` avoided.
fn hole(taken: &[(u64, u64)], len: u64) -> Option<u64> {
    const TOP: u64 = 0x7fff_ffff_0000;
    const BOTTOM: u64 = 0x1_0000;
    let mut spans: Vec<(u64, u64)> = taken
        .iter()
        .map(|&(s, e)| (s.saturating_sub(PAGE as u64), e + PAGE as u64))
        .filter(|&(s, _)| s < TOP)
        .collect();
    spans.sort_unstable();
    let mut free_end = TOP;
    for &(s, e) in spans.iter().rev() {
        if e < free_end && free_end - e >= len {
            return Some((free_end - len) & !(PAGE as u64 - 1));
        }
        free_end = free_end.min(s);
    }
    (free_end >= BOTTOM + len).then(|| (free_end - len) & !(PAGE as u64 - 1))
}

/// The registers a thread resumes with: a call the checkpoint interrupted
/// is issued again; a sleep goes on for the time it had left (the kernel
/// wrote it to the caller's `rem`), since a new process has no restart
/// block to resume from.
pub fn resume_regs(words: &[u64]) -> libc::user_regs_struct {
    let r = regs_from_words(words);
    if remote::interrupted(&r) != Interrupted::RestartBlock {
        return remote::restarted(&r);
    }
    let mut out = r;
    out.rax = r.orig_rax;
    out.rip -= 2;
    out.orig_rax = u64::MAX;
    const TIMER_ABSTIME: u64 = 1;
    match r.orig_rax as libc::c_long {
        libc::SYS_nanosleep if r.rsi != 0 => out.rdi = r.rsi,
        libc::SYS_clock_nanosleep if r.rsi & TIMER_ABSTIME == 0 && r.r10 != 0 => out.rdx = r.r10,
        // poll, futex waits...: issued again with their first timeout.
        _ => {}
    }
    out
}

/// `user_regs_struct` from the image's 27 words (capture's order).
fn regs_from_words(w: &[u64]) -> libc::user_regs_struct {
    let g = |i: usize| w.get(i).copied().unwrap_or(0);
    // SAFETY: plain integers; all-zero is valid.
    let mut r: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    (r.r15, r.r14, r.r13, r.r12, r.rbp, r.rbx, r.r11, r.r10, r.r9) =
        (g(0), g(1), g(2), g(3), g(4), g(5), g(6), g(7), g(8));
    (
        r.r8, r.rax, r.rcx, r.rdx, r.rsi, r.rdi, r.orig_rax, r.rip, r.cs,
    ) = (g(9), g(10), g(11), g(12), g(13), g(14), g(15), g(16), g(17));
    (
        r.eflags, r.rsp, r.ss, r.fs_base, r.gs_base, r.ds, r.es, r.fs, r.gs,
    ) = (
        g(18),
        g(19),
        g(20),
        g(21),
        g(22),
        g(23),
        g(24),
        g(25),
        g(26),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::capture;
    use crate::testutil::{close_all, exit_code, pipe, plain_opts, read_byte, write_byte};

    #[test]
    fn pages_split_in_two_halves_at_a_page_and_lose_nothing() {
        let a = vec![1u8; 3 * PAGE];
        let b = vec![2u8; 2 * PAGE];
        let pieces = [(0x10000u64, &a[..]), (0x40000, &b[..])];
        for bytes in [0, 1, PAGE, 2 * PAGE + 5, 3 * PAGE, 4 * PAGE, 5 * PAGE] {
            let (first, second) = halves(&pieces, bytes);
            let mut all: Vec<(u64, &[u8])> = first.iter().chain(&second).copied().collect();
            all.sort_by_key(|p| p.0);
            let mut pages = Vec::new();
            for (addr, data) in &all {
                assert!(!data.is_empty() && data.len() % PAGE == 0, "at {bytes}");
                for (i, page) in data.chunks(PAGE).enumerate() {
                    pages.push((addr + (i * PAGE) as u64, page[0]));
                }
            }
            let want: Vec<(u64, u8)> = (0..3)
                .map(|i| (0x10000 + i * PAGE as u64, 1))
                .chain((0..2).map(|i| (0x40000 + i * PAGE as u64, 2)))
                .collect();
            assert_eq!(pages, want, "split at {bytes}");
            let got: usize = first.iter().map(|p| p.1.len()).sum();
            assert_eq!(got, bytes.next_multiple_of(PAGE).min(5 * PAGE));
        }
    }

    /// A forked child with `len` bytes of pattern, a file at an offset and
    /// a pipe holding bytes; it says `R` on stdout, waits for a byte on
    /// stdin (the checkpoint happens there), checks everything and says
    /// `P` (or a letter naming what failed) before exiting 0.
    fn child(len: usize, stdin: RawFd, stdout: RawFd) -> i32 {
        child_with(len, stdin, stdout, false)
    }

    /// [`child`], refusing writable code first if `mdwe` (PR_SET_MDWE).
    fn child_with(len: usize, stdin: RawFd, stdout: RawFd, mdwe: bool) -> i32 {
        // SAFETY: the child makes raw calls only, and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid != 0 {
            return pid;
        }
        // SAFETY: all on this (child) process's own state; never returns.
        unsafe {
            const PR_SET_MDWE: i32 = 65;
            const PR_MDWE_REFUSE_EXEC_GAIN: u64 = 1;
            if mdwe && libc::prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0u64, 0u64, 0u64) != 0 {
                libc::_exit(8);
            }
            libc::dup2(stdin, 0);
            libc::dup2(stdout, 1);
            libc::syscall(libc::SYS_close_range, 2u32, u32::MAX, 0u32);
            let f = libc::open(c"/proc/self/cmdline".as_ptr(), libc::O_RDONLY);
            libc::lseek(f, 3, libc::SEEK_SET);
            let mut p = [0; 2];
            libc::pipe(p.as_mut_ptr());
            libc::write(p[1], c"xyz".as_ptr().cast(), 3);
            let m = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            ) as *mut u8;
            for i in 0..len {
                *m.add(i) = (i % 253) as u8;
            }
            libc::write(1, c"R".as_ptr().cast(), 1);
            let mut b = [0u8; 4];
            // Interrupted: again; the test gone (end of file): gone too.
            loop {
                match libc::read(0, b.as_mut_ptr().cast(), 1) {
                    1 => break,
                    0 => libc::_exit(9),
                    _ => {}
                }
            }
            let mut verdict = b'P';
            for i in 0..len {
                if *m.add(i) != (i % 253) as u8 {
                    verdict = b'M';
                    break;
                }
            }
            if libc::lseek(f, 0, libc::SEEK_CUR) != 3 {
                verdict = b'O';
            }
            if libc::read(p[0], b.as_mut_ptr().cast(), 4) != 3 || &b[..3] != b"xyz" {
                verdict = b'I';
            }
            libc::write(1, [verdict].as_ptr().cast(), 1);
            libc::_exit(0)
        }
    }

    #[test]
    fn a_captured_process_is_rebuilt_and_carries_on() {
        // Needs root (PR_SET_MM_MAP), as CI runs.
        let (in_r, in_w) = pipe();
        let (out_r, out_w) = pipe();
        let pid = child(8 << 20, in_r, out_w);
        assert_eq!(read_byte(out_r), b'R');
        let img = captured(pid);
        let opts = plain_opts(in_r, out_w);
        let r = restore(&img, &opts).unwrap();
        assert_eq!(r.pid, pid, "the pid was free again");
        write_byte(in_w, b'g');
        let verdict = read_byte(out_r);
        assert_eq!(exit_code(r.pid), 0);
        assert_eq!(verdict, b'P');
        close_all(&[in_r, in_w, out_r, out_w]);
    }

    /// The image of `pid`, captured and killed.
    fn captured(pid: i32) -> Image {
        let c = capture(pid, false).unwrap();
        assert_eq!(exit_code(pid), -libc::SIGKILL);
        Image::from_sections(c.sections).unwrap()
    }

    /// A restored `child` goes on, finds its state whole and ends.
    fn goes_on_whole(pid: i32, in_w: RawFd, out_r: RawFd) {
        write_byte(in_w, b'g');
        assert_eq!(read_byte(out_r), b'P');
        assert_eq!(exit_code(pid), 0);
    }

    fn parent_of(pid: i32) -> i32 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        after.split(' ').nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn stubs_from_a_factory_rebuild_process_after_process() {
        let mut stubs = None;
        let mut zygote = None;
        for round in 0..3 {
            let (in_r, in_w) = pipe();
            let (out_r, out_w) = pipe();
            let pid = child(1 << 20, in_r, out_w);
            assert_eq!(read_byte(out_r), b'R');
            let c = capture(pid, false).unwrap();
            assert_eq!(exit_code(pid), -libc::SIGKILL);
            let img = Image::from_sections(c.sections).unwrap();
            let r = restore_with(&img, &plain_opts(in_r, out_w), &mut stubs).unwrap();
            let f = stubs.as_ref().expect("a factory was made");
            // One zygote serves every restore; its clones are ours.
            assert_eq!(
                *zygote.get_or_insert(f.zygote()),
                f.zygote(),
                "round {round}"
            );
            assert_eq!(r.pid, pid, "the pid was free again");
            assert_eq!(parent_of(r.pid), std::process::id() as i32);
            goes_on_whole(r.pid, in_w, out_r);
            close_all(&[in_r, in_w, out_r, out_w]);
        }
        let zygote = zygote.unwrap();
        drop(stubs);
        assert!(!std::path::Path::new(&format!("/proc/{zygote}")).exists());
    }

    #[test]
    fn a_stub_made_ahead_is_used_and_one_that_does_not_fit_is_killed() {
        let mut stubs = Some(StubFactory::new(None).unwrap());
        let (in_r, in_w) = pipe();
        let (out_r, out_w) = pipe();
        let pid = child(1 << 20, in_r, out_w);
        assert_eq!(read_byte(out_r), b'R');
        let img = captured(pid);
        let f = stubs.as_mut().unwrap();
        let pre = f.prespawn(Some(pid)).unwrap();
        assert_eq!(pre.pid(), pid, "the pid was free again");
        // Its stdio comes with the rebuild's first calls, before the
        // mapped files are opened.
        let r = restore_prespawned(&img, &plain_opts(in_r, out_w), &mut stubs, Some(pre)).unwrap();
        assert_eq!(r.pid, pid);
        assert_eq!(parent_of(r.pid), std::process::id() as i32);
        goes_on_whole(r.pid, in_w, out_r);
        close_all(&[in_r, in_w, out_r, out_w]);

        // Made for another pid: killed, and the restore makes its own.
        let (in_r, in_w) = pipe();
        let (out_r, out_w) = pipe();
        let pid = child(PAGE, in_r, out_w);
        assert_eq!(read_byte(out_r), b'R');
        let img = captured(pid);
        let other = stubs.as_mut().unwrap().prespawn(None).unwrap();
        let other_pid = other.pid();
        assert_ne!(other_pid, pid);
        let r =
            restore_prespawned(&img, &plain_opts(in_r, out_w), &mut stubs, Some(other)).unwrap();
        assert_eq!(r.pid, pid);
        assert!(!std::path::Path::new(&format!("/proc/{other_pid}")).exists());
        goes_on_whole(r.pid, in_w, out_r);
        close_all(&[in_r, in_w, out_r, out_w]);

        // One not used is killed when dropped.
        let unused = stubs.as_mut().unwrap().prespawn(None).unwrap();
        let unused_pid = unused.pid();
        drop(unused);
        assert!(!std::path::Path::new(&format!("/proc/{unused_pid}")).exists());
    }

    #[test]
    fn a_factory_whose_zygote_was_killed_is_made_again() {
        let mut stubs = Some(StubFactory::new(None).unwrap());
        let old = stubs.as_ref().unwrap().zygote();
        // SAFETY: kill takes a pid and a signal; the zygote is our child.
        unsafe { libc::kill(old, libc::SIGKILL) };
        let (in_r, in_w) = pipe();
        let (out_r, out_w) = pipe();
        let pid = child(PAGE, in_r, out_w);
        assert_eq!(read_byte(out_r), b'R');
        let img = captured(pid);
        let r = restore_with(&img, &plain_opts(in_r, out_w), &mut stubs).unwrap();
        let new = stubs.as_ref().expect("a new factory").zygote();
        assert_ne!(new, old);
        assert!(!std::path::Path::new(&format!("/proc/{old}")).exists());
        goes_on_whole(r.pid, in_w, out_r);
        close_all(&[in_r, in_w, out_r, out_w]);
    }

    #[test]
    fn a_stub_moves_its_injection_page_out_of_the_images_way() {
        let mut stubs = Some(StubFactory::new(None).unwrap());
        let site = stubs.as_ref().unwrap().site();
        let (in_r, in_w) = pipe();
        let (out_r, out_w) = pipe();
        // SAFETY: the child makes raw calls only, and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: on this (child) process's own state; never returns.
            unsafe {
                libc::dup2(in_r, 0);
                libc::dup2(out_w, 1);
                libc::syscall(libc::SYS_close_range, 2u32, u32::MAX, 0u32);
                let m = libc::mmap(
                    site as *mut libc::c_void,
                    3 * PAGE,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                    -1,
                    0,
                ) as *mut u8;
                if m as u64 != site {
                    libc::_exit(3);
                }
                for i in 0..3 * PAGE {
                    *m.add(i) = (i % 251) as u8;
                }
                libc::write(1, c"R".as_ptr().cast(), 1);
                let mut b = [0u8; 1];
                // Interrupted: again; the test gone (end of file): gone too.
                loop {
                    match libc::read(0, b.as_mut_ptr().cast(), 1) {
                        1 => break,
                        0 => libc::_exit(9),
                        _ => {}
                    }
                }
                let ok = (0..3 * PAGE).all(|i| *m.add(i) == (i % 251) as u8);
                libc::write(1, [if ok { b'P' } else { b'M' }].as_ptr().cast(), 1);
                libc::_exit(0)
            }
        }
        assert_eq!(read_byte(out_r), b'R');
        let img = captured(pid);
        assert!(img.maps.iter().any(|m| m.start <= site && m.end > site));
        let r = restore_with(&img, &plain_opts(in_r, out_w), &mut stubs).unwrap();
        assert!(stubs.is_some(), "the factory's stub was used");
        goes_on_whole(r.pid, in_w, out_r);
        close_all(&[in_r, in_w, out_r, out_w]);
    }

    #[test]
    fn a_process_refusing_writable_code_is_captured_call_by_call() {
        let (in_r, in_w) = pipe();
        let (out_r, out_w) = pipe();
        let pid = child_with(PAGE, in_r, out_w, true);
        assert_eq!(read_byte(out_r), b'R', "PR_SET_MDWE is in this kernel");
        // Its capture cannot map code in it: one call per stop.
        let img = captured(pid);
        let r = restore(&img, &plain_opts(in_r, out_w)).unwrap();
        goes_on_whole(r.pid, in_w, out_r);
        close_all(&[in_r, in_w, out_r, out_w]);
    }

    #[test]
    fn a_received_image_is_decoded_in_place_as_checked_as_any() {
        let (in_r, in_w) = pipe();
        let (out_r, out_w) = pipe();
        let pid = child(3 * PAGE, in_r, out_w);
        assert_eq!(read_byte(out_r), b'R');
        let c = capture(pid, false).unwrap();
        assert_eq!(exit_code(pid), -libc::SIGKILL);
        let mut w = crate::image::Writer::new(Vec::new()).unwrap();
        for s in &c.sections {
            w.section(s.kind, &s.payload).unwrap();
        }
        let image = w.finish().unwrap();
        // Unread input before it, as a migration's transfer has.
        let buf = [b"unread".to_vec(), image.clone()].concat();
        let got = Image::from_received(buf.clone(), 6).unwrap();
        let want = Image::from_sections(c.sections).unwrap();
        assert_eq!(&got.pages[..], &want.pages[..]);
        assert!(matches!(got.pages, Pages::Received(..)));
        assert_eq!(got.maps, want.maps);
        assert_eq!(got.threads.len(), want.threads.len());
        // A flipped byte anywhere in the image, or a cut, is an error.
        for at in [6, 6 + image.len() / 2, buf.len() - 1] {
            let mut bad = buf.clone();
            bad[at] ^= 0x20;
            assert!(Image::from_received(bad, 6).is_err(), "flip at {at}");
        }
        assert!(Image::from_received(buf[..buf.len() - 1].to_vec(), 6).is_err());
        assert!(Image::from_received(buf.clone(), buf.len() + 1).is_err());
        close_all(&[in_r, in_w, out_r, out_w]);
    }

    #[test]
    fn images_of_another_machine_are_refused_clearly() {
        let (in_r, in_w) = pipe();
        let (out_r, out_w) = pipe();
        let pid = child(PAGE, in_r, out_w);
        assert_eq!(read_byte(out_r), b'R');
        let c = capture(pid, false).unwrap();
        assert_eq!(exit_code(pid), -libc::SIGKILL);
        let img = Image::from_sections(c.sections.clone()).unwrap();
        img.check_machine().unwrap();
        // Another architecture.
        let mut other = Image::from_sections(c.sections.clone()).unwrap();
        other.meta.arch = "aarch64".into();
        let e = other.check_machine().unwrap_err();
        assert!(matches!(e, RestoreError::Arch { .. }), "{e}");
        assert!(e.to_string().contains("aarch64"), "{e}");
        // FP state of a CPU with a feature this one lacks (XSTATE_BV bit
        // 62 is reserved: no CPU enables it in XCR0).
        let mut other = Image::from_sections(c.sections).unwrap();
        other.threads[0].xstate[512 + 7] |= 0x40;
        let e = other.check_machine().unwrap_err();
        assert!(matches!(e, RestoreError::CpuFeatures { .. }), "{e}");
        assert!(e.to_string().contains("this CPU lacks"), "{e}");
        close_all(&[in_r, in_w, out_r, out_w]);
    }

    #[test]
    fn holes_avoid_every_taken_range() {
        let taken = [
            (0x7fff_0000_0000, 0x7fff_ffff_0000),
            (0x1000_0000, 0x2000_0000),
        ];
        let h = hole(&taken, 0x2000).unwrap();
        assert!(h + 0x2000 <= 0x7fff_0000_0000 - PAGE as u64);
        assert!(h > 0x2000_0000);
        assert_eq!(h % PAGE as u64, 0);
        assert_eq!(hole(&[(0, 0x7fff_ffff_0000)], 0x1000), None);
    }

    #[test]
    fn sleeps_resume_with_the_time_they_had_left() {
        let mut w = vec![0u64; 27];
        w[10] = (-516i64) as u64; // rax: -ERESTART_RESTARTBLOCK
        w[15] = libc::SYS_clock_nanosleep as u64;
        w[16] = 0x4000; // rip
        w[13] = 0; // rsi: flags, relative
        w[12] = 0x100; // rdx: request
        w[7] = 0x200; // r10: remaining
        let r = resume_regs(&w);
        assert_eq!(
            (r.rax, r.rip, r.rdx),
            (libc::SYS_clock_nanosleep as u64, 0x3ffe, 0x200)
        );
        assert_eq!(r.orig_rax, u64::MAX);
        // An absolute sleep is issued again as it was.
        w[13] = 1;
        assert_eq!(resume_regs(&w).rdx, 0x100);
        // A read interrupted is simply issued again.
        w[10] = (-512i64) as u64;
        w[15] = 0;
        let r = resume_regs(&w);
        assert_eq!((r.rax, r.rip), (0, 0x3ffe));
    }
}
