//! Capturing a running process into an image (x86-64): every thread
//! stopped from outside with ptrace, its registers, FP state and rseq
//! registration read, its mappings listed, and the memory that cannot be
//! had again from a file read and stored (zero pages left out).
//!
//! Everything here runs on the calling thread, which is the tracer: the
//! caller gives each capture a thread of its own (see `roam_sys::ptrace`).
//! Restoring comes next (docs/design/checkpoint.md).

use std::collections::BTreeSet;
use std::io;
use std::io::Read;
use std::os::fd::AsFd;

use roam_sys::procfs::{self, Vma, PAGE_PRESENT, PAGE_SWAPPED};
use roam_sys::ptrace::{self, Stop};
use roam_sys::remote::{self, Remote, Site};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use thiserror::Error;

use crate::image::{crc_of, is_zero, Section, PAGE};

/// Section kinds of an image.
pub mod kind {
    pub const META: u32 = 1;
    pub const THREAD: u32 = 2;
    pub const MAPS: u32 = 3;
    pub const PAGES: u32 = 4;
    pub const FILES: u32 = 5;
    pub const CONTEXT: u32 = 6;
    pub const PROCESS: u32 = 7;
    /// Pages the destination of a migration holds from its pre-copy
    /// rounds: runs without data (see [`crate::precopy`]).
    pub const PRECOPIED: u32 = 8;
    /// Pages a post-copy migration brings after the process runs again:
    /// runs without data, in the PRECOPIED section's format (see
    /// [`crate::postcopy`]).
    pub const LAZY: u32 = 9;
}

/// A post-copy leaves out of the image the pages of private anonymous
/// mappings of at least this size (heaps, large buffers); smaller ones
/// (thread-local data, the libraries' own) and the stack, which the
/// process touches at once, travel in the image.
pub const LAZY_MIN_VMA: u64 = 1 << 20;

/// Whether a post-copy leaves the pages of `v` out of the image.
fn lazy_vma(v: &Vma) -> bool {
    !v.shared
        && v.inode == 0
        && v.read
        && !v.path.starts_with(b"/")
        && &v.path[..] != b"[stack]"
        && stores_pages(v)
        && v.end - v.start >= LAZY_MIN_VMA
}

/// Deleted files still open are stored whole, up to this size.
pub const MAX_DELETED_FILE: u64 = 64 << 20;

/// /proc/PID/pagemap: the page is a file page or shared memory (bit 61);
/// clear for a private mapping's page once written (copied on write).
const PAGE_FILE: u64 = 1 << 61;

/// Why a capture failed. The process is left running as it was (detached)
/// in every case but a failure to detach.
#[derive(Debug, Error)]
pub enum CaptureError {
    #[error("no process {pid}")]
    NoProcess { pid: i32 },
    #[error(
        "process {pid} holds {what}, which checkpoints do not support yet; it was not touched"
    )]
    Unsupported { pid: i32, what: String },
    #[error("process {pid} went away during the checkpoint")]
    Gone { pid: i32 },
    #[error("cannot {what} of process {pid}")]
    Sys {
        pid: i32,
        what: &'static str,
        source: io::Error,
    },
}

/// The image's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub pid: i32,
    /// "x86_64".
    pub arch: String,
    pub exe: ByteBuf,
    pub threads: u32,
}

/// One thread's registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadState {
    pub tid: i32,
    /// `user_regs_struct`, 27 words in the kernel's order.
    pub regs: Vec<u64>,
    /// The XSAVE area.
    pub xstate: ByteBuf,
    pub rseq: (u64, u32, u32, u32),
    /// sigaltstack: (ss_sp, ss_flags, ss_size).
    pub altstack: (u64, i32, u64),
    /// set_tid_address's address (pthread_join waits on it).
    pub tid_address: u64,
    /// Signals pending for this thread, each its 128-byte siginfo.
    pub pending: Vec<ByteBuf>,
    /// The robust futex list (head, length).
    pub robust_list: (u64, u64),
    /// The thread's name (`comm`).
    pub comm: ByteBuf,
}

/// One signal's disposition, as the kernel keeps it (`struct
/// kernel_sigaction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigAction {
    pub signal: u32,
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

/// The memory layout fields of the process (`prctl(PR_SET_MM_MAP)`'s).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmFields {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
}

/// What the process holds as a whole: its layout, signal dispositions,
/// interval timers, process-wide pending signals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub mm: MmFields,
    /// /proc/PID/auxv.
    pub auxv: ByteBuf,
    /// Dispositions other than the default.
    pub sigactions: Vec<SigAction>,
    /// ITIMER_REAL, _VIRTUAL, _PROF: interval (s, us), value (s, us).
    pub itimers: Vec<[i64; 4]>,
    /// Signals pending for the whole process, each its siginfo.
    pub pending: Vec<ByteBuf>,
}

/// One mapping, and whether its pages are in the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapRecord {
    pub start: u64,
    pub end: u64,
    /// r, w, x as bits 0, 1, 2.
    pub prot: u8,
    pub shared: bool,
    pub offset: u64,
    pub inode: u64,
    pub path: ByteBuf,
    /// Its written (or anonymous) pages are in the PAGES section.
    pub stored: bool,
}

/// One open descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdRecord {
    pub fd: i32,
    /// What `/proc/PID/fd/N` names: a path (` (deleted)` appended for a
    /// deleted file), `pipe:[INODE]`, `anon_inode:[...]`...
    pub target: ByteBuf,
    /// The file offset (`fdinfo` pos).
    pub pos: u64,
    /// The open flags (`fdinfo` flags: access mode, O_APPEND, O_CLOEXEC...).
    pub flags: u32,
    pub kind: FdKind,
}

/// How a descriptor is rebuilt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FdKind {
    /// Opened again by its path.
    Path,
    /// Descriptor 0, 1 or 2 on a pipe, socket or terminal: the restorer's
    /// stream takes its place.
    Stdio,
    /// The same open file as this lower descriptor (dup'ed).
    Dup(i32),
    /// A deleted file still open: its contents.
    Deleted(ByteBuf),
    /// One end of a pipe whose both ends the process holds; the bytes in
    /// it, stored with the first end seen.
    Pipe {
        inode: u64,
        write: bool,
        buffered: ByteBuf,
    },
}

/// The process's context: where it is, what it may, which signals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    pub cwd: ByteBuf,
    pub root: ByteBuf,
    pub umask: u32,
    /// (soft, hard) per resource, in the kernel's order.
    pub rlimits: Vec<(u64, u64)>,
    /// Signals ignored and caught (the handlers themselves come with the
    /// injected calls of the restore), and pending for the process.
    pub sig_ignored: u64,
    pub sig_caught: u64,
    pub sig_pending: u64,
    /// Per thread (the THREAD sections' order): blocked and pending.
    pub thread_signals: Vec<(u64, u64)>,
    /// Real, effective, saved and file-system uid; the same for gid.
    pub uids: [u32; 4],
    pub gids: [u32; 4],
    pub groups: Vec<u32>,
}

/// A captured process: the image's sections, ready to write.
#[derive(Debug)]
pub struct Captured {
    pub sections: Vec<Section>,
    /// Bytes of memory stored.
    pub stored_bytes: u64,
    /// A post-copy's pages left out (runs of pages, named in the LAZY
    /// section).
    pub lazy: Vec<(u64, usize)>,
    /// How long each step of the capture took, in order (for the logs).
    pub steps: Vec<(&'static str, std::time::Duration)>,
}

/// The first step of a capture ([`Captured::steps`]): the checks made
/// while the process still runs, before it is stopped.
pub const STEP_CHECK: &str = "check";

/// Captures process `pid`; with `leave_running` it runs on afterwards,
/// otherwise it is killed once captured.
pub fn capture(pid: i32, leave_running: bool) -> Result<Captured, CaptureError> {
    let (c, held) = capture_held(pid)?;
    held.release(!leave_running)?;
    Ok(c)
}

/// A captured process, still stopped (every thread, its registers its
/// own again), until [`Held::release`]: so that it is killed only once
/// its image is safely written, and resumed if that fails. A restored
/// one (`RestoreOpts::hold`) is held the same way until it may run.
#[must_use = "a held process stays stopped until released"]
#[derive(Debug)]
pub struct Held {
    pid: i32,
    tids: Vec<i32>,
}

impl Held {
    pub(crate) fn new(pid: i32, tids: Vec<i32>) -> Held {
        Held { pid, tids }
    }

    /// Kills the process, or lets it run on.
    pub fn release(self, kill: bool) -> Result<(), CaptureError> {
        if kill {
            // SAFETY: kill takes a pid and a signal; no memory.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            return Ok(());
        }
        let pid = self.pid;
        self.tids
            .iter()
            .map(|&t| ptrace::detach(t))
            .find_map(Result::err)
            .map_or(Ok(()), |source| {
                Err(CaptureError::Sys {
                    pid,
                    what: "let it run again",
                    source,
                })
            })
    }
}

/// Captures process `pid` and keeps it stopped (see [`Held`]). On error
/// it runs on, untouched.
pub fn capture_held(pid: i32) -> Result<(Captured, Held), CaptureError> {
    capture_held_with(pid, 0)
}

/// [`capture_held`] of a process that has `own_filters` seccomp filters
/// of its caller's (a node's supervision), which the caller installs
/// again at restore; any other filter is refused.
pub fn capture_held_with(pid: i32, own_filters: u32) -> Result<(Captured, Held), CaptureError> {
    capture_held_tracked(pid, own_filters, None)
}

/// [`capture_held_with`] at the end of a pre-copy: the pages `tracker`
/// sent and that were not written since are named in a PRECOPIED section
/// instead of stored.
pub fn capture_held_tracked(
    pid: i32,
    own_filters: u32,
    tracker: Option<&mut crate::precopy::Tracker>,
) -> Result<(Captured, Held), CaptureError> {
    let (c, pages, held) = capture_pending_with(pid, own_filters, tracker, false)?;
    fill_pages(c, pages, held)
}

/// [`capture_held_with`] for a post-copy: the pages of large private
/// anonymous mappings are named in a LAZY section and listed in
/// [`Captured::lazy`], not stored; the caller reads them from the held
/// process as they are wanted.
pub fn capture_held_lazy(pid: i32, own_filters: u32) -> Result<(Captured, Held), CaptureError> {
    let (c, pages, held) = capture_pending_with(pid, own_filters, None, true)?;
    fill_pages(c, pages, held)
}

/// Adds the PAGES section, read from the held process.
fn fill_pages(
    mut c: Captured,
    pages: PendingPages,
    held: Held,
) -> Result<(Captured, Held), CaptureError> {
    let t0 = std::time::Instant::now();
    match pages.read_all() {
        Ok((payload, stored_bytes)) => {
            c.steps.push(("pages", t0.elapsed()));
            c.sections.push(Section {
                kind: kind::PAGES,
                payload,
            });
            c.stored_bytes = stored_bytes;
            Ok((c, held))
        }
        Err(e) => {
            let _ = held.release(false);
            Err(e)
        }
    }
}

/// [`capture_held_tracked`] but for the memory itself: every section but
/// PAGES, and the pages to store, found but not read yet (the process
/// being held, they do not change), to be read by [`PendingPages::stream`]
/// as they are written out, or all at once.
pub fn capture_pending(
    pid: i32,
    own_filters: u32,
    tracker: Option<&mut crate::precopy::Tracker>,
) -> Result<(Captured, PendingPages, Held), CaptureError> {
    capture_pending_with(pid, own_filters, tracker, false)
}

fn capture_pending_with(
    pid: i32,
    own_filters: u32,
    mut tracker: Option<&mut crate::precopy::Tracker>,
    lazy: bool,
) -> Result<(Captured, PendingPages, Held), CaptureError> {
    let sys = |what| move |source| CaptureError::Sys { pid, what, source };
    let mut steps = crate::steps::Steps::since(std::time::Instant::now());
    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return Err(CaptureError::NoProcess { pid });
    }
    // What cannot be captured is refused before the process is touched.
    refuse_unsupported(pid, own_filters)?;
    steps.mark(STEP_CHECK);
    let tids = stop_all(pid)?;
    steps.mark("stop");
    let mut remotes = Vec::new();
    let result = (|| {
        let mut sections = Vec::new();
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| p.into_os_string().into_encoded_bytes())
            .unwrap_or_default();
        let meta = Meta {
            pid,
            arch: "x86_64".into(),
            exe: ByteBuf::from(exe),
            threads: tids.len() as u32,
        };
        sections.push(section(kind::META, &meta));
        // Registers first, then the calls injected to read what /proc
        // does not show (dispositions, alternate stacks, timers, brk).
        // The layout, read once: stopped, the process changes it only
        // by the calls injected below, which undo what they do.
        let vmas = procfs::maps(pid).map_err(sys("list the mappings"))?;
        let site = Site::Syscall(
            syscall_in_vdso_of(pid, &vmas).map_err(sys("find a system-call instruction"))?,
        );
        for &tid in &tids {
            remotes.push(Remote::new(tid, site).map_err(sys("read the registers"))?);
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(sys("read the status"))?;
        steps.mark("registers");
        let (threads, process) = injected(pid, &mut remotes, &status)
            .map_err(sys("read the state by injected calls"))?;
        steps.mark("injected");
        for (r, (altstack, tid_address)) in remotes.iter().zip(threads) {
            let tid = r.tid();
            let xstate = ptrace::xstate(tid).map_err(sys("read the FP state"))?;
            let rseq = ptrace::rseq(tid).map_err(sys("read the rseq registration"))?;
            let pending = ptrace::pending_siginfo(tid, false)
                .map_err(sys("read the pending signals"))?
                .into_iter()
                .map(|i| ByteBuf::from(i.to_vec()))
                .collect();
            let t = ThreadState {
                tid,
                regs: regs_words(r.saved()),
                xstate: ByteBuf::from(xstate),
                rseq: (rseq.address, rseq.len, rseq.flags, rseq.signature),
                altstack,
                tid_address,
                pending,
                robust_list: ptrace::robust_list(tid).map_err(sys("read the robust list"))?,
                comm: ByteBuf::from(
                    std::fs::read(format!("/proc/{pid}/task/{tid}/comm"))
                        .map_err(sys("read a thread's name"))?
                        .trim_ascii_end()
                        .to_vec(),
                ),
            };
            sections.push(section(kind::THREAD, &t));
        }
        sections.push(section(kind::PROCESS, &process));
        steps.mark("threads");
        let mem =
            std::fs::File::open(format!("/proc/{pid}/mem")).map_err(sys("open the memory"))?;
        let pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap"))
            .map_err(sys("open the page map"))?;
        let clean = match tracker.as_deref_mut() {
            Some(t) => t
                .clean(&vmas)
                .map_err(sys("find the pages written since they were sent"))?,
            None => Default::default(),
        };
        let mut records = Vec::new();
        // The runs of pages to store, found first, so that the section is
        // sized once and the pages read straight into it.
        let mut runs: Vec<(u64, usize)> = Vec::new();
        let mut later: Vec<(u64, usize)> = Vec::new();
        for v in &vmas {
            let stored = stores_pages(v);
            if stored {
                let to = if lazy && lazy_vma(v) {
                    &mut later
                } else {
                    &mut runs
                };
                page_runs(&pagemap, v, to).map_err(sys("read the page map"))?;
            }
            records.push(MapRecord {
                start: v.start,
                end: v.end,
                prot: u8::from(v.read) | u8::from(v.write) << 1 | u8::from(v.exec) << 2,
                shared: v.shared,
                offset: v.offset,
                inode: v.inode,
                path: ByteBuf::from(v.path.clone()),
                stored,
            });
        }
        sections.push(section(kind::MAPS, &records));
        steps.mark("maps");
        sections.push(section(
            kind::FILES,
            &files(pid).map_err(sys("list the descriptors"))?,
        ));
        steps.mark("files");
        sections.push(section(
            kind::CONTEXT,
            &context(pid, &tids, &status).map_err(sys("read the context"))?,
        ));
        steps.mark("context");
        let (runs, held) = crate::precopy::split_runs(&runs, &clean);
        if !held.is_empty() {
            sections.push(Section {
                kind: kind::PRECOPIED,
                payload: crate::precopy::encode_held(&held),
            });
        }
        if !later.is_empty() {
            sections.push(Section {
                kind: kind::LAZY,
                payload: crate::precopy::encode_held(&later),
            });
        }
        Ok((
            Captured {
                sections,
                stored_bytes: 0,
                lazy: later,
                steps: Vec::new(),
            },
            PendingPages {
                pid,
                mem,
                runs,
                zeros: ZerosKept::of(&vmas),
            },
        ))
    })();
    let mut ended = None;
    for r in remotes {
        if let Err(e) = r.finish() {
            ended.get_or_insert(e);
        }
    }
    let ended = ended.map(sys("give the registers back"));
    let held = Held { pid, tids };
    steps.mark("resume registers");
    match (result, ended) {
        (Ok((mut c, pages)), None) => {
            c.steps = steps.lengths();
            Ok((c, pages, held))
        }
        (Err(e), _) | (Ok(_), Some(e)) => {
            let _ = held.release(false);
            Err(e)
        }
    }
}

/// The address of a `syscall` instruction (bytes 0f 05) in the vDSO of
/// `pid`, for injected calls that write nothing into the process.
pub(crate) fn syscall_in_vdso(pid: i32) -> io::Result<u64> {
    syscall_in_vdso_of(pid, &procfs::maps(pid)?)
}

/// [`syscall_in_vdso`] of a process whose mappings are `vmas`.
fn syscall_in_vdso_of(pid: i32, vmas: &[procfs::Vma]) -> io::Result<u64> {
    let vdso = vmas
        .iter()
        .find(|v| v.path == b"[vdso]")
        .ok_or_else(|| io::Error::other("the process has no vDSO"))?;
    let mut code = vec![0u8; (vdso.end - vdso.start) as usize];
    let n = ptrace::read_memory(pid, vdso.start, &mut code)?;
    code[..n]
        .windows(2)
        .position(|w| w == [0x0f, 0x05])
        .map(|i| vdso.start + i as u64)
        .ok_or_else(|| io::Error::other("no system-call instruction in the vDSO"))
}

/// The area mapped in the process for the injected calls' answers (and
/// their code: see [`injected`]): code from 0, results from
/// [`AREA_RESULTS`], answers from [`AREA_DATA`].
const AREA: u64 = 4 * PAGE as u64;
const AREA_RESULTS: u64 = 2 * PAGE as u64;
const AREA_DATA: u64 = AREA_RESULTS + 1024;
/// Offsets in the answers: 64 dispositions, 3 timers, a thread's
/// alternate stack and clear-tid address.
const AT_ITIMERS: u64 = 64 * 32;
const AT_ALTSTACK: u64 = AT_ITIMERS + 3 * 32;
const AT_TID_ADDRESS: u64 = AT_ALTSTACK + 32;

/// Per thread (alternate stack, clear-tid address) and the process's
/// state that only the process itself can tell, by calls injected into
/// its threads (an area mapped for the answers, then unmapped). Each call
/// through the vDSO's `syscall` is two stops of the thread (entry and
/// exit: a ptrace round trip each); so the area is mapped executable if
/// the process allows it, and each thread's calls are made in one stop
/// ([`Remote::batch`]) from code written there. A process that refuses
/// writable code (`PR_SET_MDWE`, a security module) gets them one by one.
#[allow(clippy::type_complexity)]
fn injected(
    pid: i32,
    remotes: &mut [Remote],
    status: &str,
) -> io::Result<(Vec<((u64, i32, u64), u64)>, Process)> {
    let map = |r: &mut Remote, prot: i32| {
        r.call(
            libc::SYS_mmap,
            &[
                0,
                AREA,
                prot as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                u64::MAX,
                0,
            ],
        )
    };
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let (area, batched) = match map(&mut remotes[0], rw | libc::PROT_EXEC) {
        Ok(a) => (a, true),
        Err(_) => (map(&mut remotes[0], rw)?, false),
    };
    let data = area + AREA_DATA;
    // Every call's answer goes to its own place in the area: one read
    // after them all.
    let run = |r: &mut Remote, calls: &[(libc::c_long, [u64; 6])]| -> io::Result<Vec<u64>> {
        if !batched {
            return calls.iter().map(|(nr, args)| r.call(*nr, args)).collect();
        }
        let site = r.site();
        r.set_site(Site::Trap(area));
        let got = r.batch(area, area + AREA_RESULTS, calls);
        r.set_site(site);
        let got = got?;
        match remote::first_failed(&got) {
            Some(e) => Err(e),
            None => Ok(got),
        }
    };
    let read = |at: u64, len: usize| -> io::Result<Vec<u8>> {
        let mut b = vec![0u8; len];
        ptrace::read_memory(pid, data + at, &mut b)?;
        Ok(b)
    };
    let word = |b: &[u8], i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
    let thread_calls = [
        (libc::SYS_sigaltstack, [0, data + AT_ALTSTACK, 0, 0, 0, 0]),
        (
            libc::SYS_prctl,
            [
                libc::PR_GET_TID_ADDRESS as u64,
                data + AT_TID_ADDRESS,
                0,
                0,
                0,
                0,
            ],
        ),
    ];
    let result = (|| {
        let handled = sigset(status, "SigIgn:") | sigset(status, "SigCgt:");
        let signals: Vec<u32> = (1..=64u32)
            .filter(|s| handled & (1 << (s - 1)) != 0)
            .collect();
        let mut calls: Vec<(libc::c_long, [u64; 6])> = signals
            .iter()
            .map(|&s| {
                let at = data + 32 * u64::from(s - 1);
                (libc::SYS_rt_sigaction, [u64::from(s), 0, at, 8, 0, 0])
            })
            .collect();
        calls.push((libc::SYS_brk, [0; 6]));
        for which in 0..3u64 {
            let at = data + AT_ITIMERS + 32 * which;
            calls.push((libc::SYS_getitimer, [which, at, 0, 0, 0, 0]));
        }
        calls.extend(thread_calls);
        let got = run(&mut remotes[0], &calls)?;
        let brk = got[signals.len()];
        let answers = read(0, AT_TID_ADDRESS as usize + 8)?;
        let sigactions = signals
            .iter()
            .map(|&signal| {
                let b = &answers[32 * (signal as usize - 1)..];
                SigAction {
                    signal,
                    handler: word(b, 0),
                    flags: word(b, 1),
                    restorer: word(b, 2),
                    mask: word(b, 3),
                }
            })
            .collect();
        let itimers = (0..3)
            .map(|w| {
                let b = &answers[AT_ITIMERS as usize + 32 * w..];
                [0, 1, 2, 3].map(|i| word(b, i) as i64)
            })
            .collect();
        let thread = |b: &[u8]| {
            let alt = &b[AT_ALTSTACK as usize..];
            let tid_address = word(&b[AT_TID_ADDRESS as usize..], 0);
            (
                (word(alt, 0), word(alt, 1) as i32, word(alt, 2)),
                tid_address,
            )
        };
        let mut threads = vec![thread(&answers)];
        for r in remotes.iter_mut().skip(1) {
            run(r, &thread_calls)?;
            threads.push(thread(&read(0, AT_TID_ADDRESS as usize + 8)?));
        }
        Ok::<_, io::Error>((threads, sigactions, itimers, brk))
    })();
    remotes[0].call(libc::SYS_munmap, &[area, AREA])?;
    let (threads, sigactions, itimers, brk) = result?;
    let mut mm = mm_fields(pid)?;
    mm.brk = brk;
    let pending = ptrace::pending_siginfo(pid, true)?
        .into_iter()
        .map(|i| ByteBuf::from(i.to_vec()))
        .collect();
    let process = Process {
        mm,
        auxv: ByteBuf::from(std::fs::read(format!("/proc/{pid}/auxv"))?),
        sigactions,
        itimers,
        pending,
    };
    Ok((threads, process))
}

/// The layout fields of /proc/PID/stat (brk comes from an injected call).
fn mm_fields(pid: i32) -> io::Result<MmFields> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces and parentheses).
    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // Field N of stat(5) is f[N - 3].
    let at = |n: usize| f.get(n - 3).copied().unwrap_or(0);
    Ok(MmFields {
        start_code: at(26),
        end_code: at(27),
        start_stack: at(28),
        start_data: at(45),
        end_data: at(46),
        start_brk: at(47),
        brk: 0,
        arg_start: at(48),
        arg_end: at(49),
        env_start: at(50),
        env_end: at(51),
    })
}

fn section<T: Serialize>(kind: u32, value: &T) -> Section {
    Section {
        kind,
        payload: postcard::to_allocvec(value).expect("plain data always serialises"),
    }
}

/// The registers as the kernel's 27 words.
fn regs_words(r: &libc::user_regs_struct) -> Vec<u64> {
    vec![
        r.r15, r.r14, r.r13, r.r12, r.rbp, r.rbx, r.r11, r.r10, r.r9, r.r8, r.rax, r.rcx, r.rdx,
        r.rsi, r.rdi, r.orig_rax, r.rip, r.cs, r.eflags, r.rsp, r.ss, r.fs_base, r.gs_base, r.ds,
        r.es, r.fs, r.gs,
    ]
}

/// The open descriptors, from /proc/PID/fd and fdinfo, and how each is
/// rebuilt (dup'ed ones found with kcmp).
fn files(pid: i32) -> io::Result<Vec<FdRecord>> {
    let mut out: Vec<FdRecord> = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))?.flatten() {
        let Some(fd) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        // A descriptor closed meanwhile (another thread) is simply gone.
        let (Ok(target), Ok(info)) = (
            std::fs::read_link(e.path()),
            std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")),
        ) else {
            continue;
        };
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .unwrap_or("0")
                .to_owned()
        };
        out.push(FdRecord {
            fd,
            target: ByteBuf::from(target.into_os_string().into_encoded_bytes()),
            pos: field("pos:").parse().unwrap_or(0),
            flags: u32::from_str_radix(&field("flags:"), 8).unwrap_or(0),
            kind: FdKind::Path,
        });
    }
    out.sort_by_key(|f| f.fd);
    let mut pipes_seen = BTreeSet::new();
    // Pipes whose both ends the process holds are its own, even on stdio.
    let inner = |inode: u64| {
        out.iter()
            .filter(|f| pipe_inode(&f.target) == Some(inode))
            .count()
            >= 2
    };
    let inner: Vec<bool> = out
        .iter()
        .map(|f| pipe_inode(&f.target).is_some_and(inner))
        .collect();
    for i in 0..out.len() {
        let dup = (0..i).find(|&j| {
            out[j].target == out[i].target
                && ptrace::same_open_file(pid, out[j].fd, out[i].fd).unwrap_or(false)
        });
        let f = &out[i];
        out[i].kind = if let Some(j) = dup {
            FdKind::Dup(out[j].fd)
        } else if f.fd <= 2 && is_stream(&f.target) && !inner[i] {
            FdKind::Stdio
        } else if let Some(inode) = pipe_inode(&f.target) {
            let buffered = if pipes_seen.insert(inode) {
                ptrace::peek_pipe(ptrace::take_fd(pid, f.fd)?.as_fd())?
            } else {
                Vec::new()
            };
            FdKind::Pipe {
                inode,
                write: f.flags & libc::O_ACCMODE as u32 == libc::O_WRONLY as u32,
                buffered: ByteBuf::from(buffered),
            }
        } else if f.target.ends_with(DELETED) {
            let mut data = Vec::new();
            std::fs::File::open(format!("/proc/{pid}/fd/{}", f.fd))?
                .take(MAX_DELETED_FILE)
                .read_to_end(&mut data)?;
            FdKind::Deleted(ByteBuf::from(data))
        } else {
            FdKind::Path
        };
    }
    Ok(out)
}

const DELETED: &[u8] = b" (deleted)";

/// A pipe, socket or terminal: what a process's stdio is connected to.
fn is_stream(target: &[u8]) -> bool {
    target.starts_with(b"pipe:")
        || target.starts_with(b"socket:")
        || target.starts_with(b"/dev/pts/")
        || target.starts_with(b"/dev/tty")
        || target.starts_with(b"/dev/console")
}

/// The inode of `pipe:[N]`.
fn pipe_inode(target: &[u8]) -> Option<u64> {
    std::str::from_utf8(target.strip_prefix(b"pipe:[")?.strip_suffix(b"]")?)
        .ok()?
        .parse()
        .ok()
}

/// The numbers of a /proc/PID/status line (`Uid:`, `Gid:`, `Groups:`).
pub(crate) fn status_ids(status: &str, name: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| {
            v.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A hexadecimal signal set of /proc/PID/status (`SigBlk:` and so on).
pub(crate) fn sigset(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

/// The process's context (see [`Context`]).
fn context(pid: i32, tids: &[i32], status: &str) -> io::Result<Context> {
    let link = |what: &str| -> io::Result<ByteBuf> {
        let p = std::fs::read_link(format!("/proc/{pid}/{what}"))?;
        Ok(ByteBuf::from(p.into_os_string().into_encoded_bytes()))
    };
    let ids = |name: &str| status_ids(status, name);
    let four =
        |v: Vec<u32>| -> [u32; 4] { std::array::from_fn(|i| v.get(i).copied().unwrap_or(0)) };
    let umask = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        .unwrap_or(0o022);
    let mut thread_signals = Vec::new();
    for tid in tids {
        let st = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))?;
        thread_signals.push((sigset(&st, "SigBlk:"), sigset(&st, "SigPnd:")));
    }
    Ok(Context {
        cwd: link("cwd")?,
        root: link("root")?,
        umask,
        rlimits: ptrace::rlimits(pid)?,
        sig_ignored: sigset(status, "SigIgn:"),
        sig_caught: sigset(status, "SigCgt:"),
        sig_pending: sigset(status, "ShdPnd:"),
        thread_signals,
        uids: four(ids("Uid:")),
        gids: four(ids("Gid:")),
        groups: ids("Groups:"),
    })
}

/// A failure to read /proc/`pid`: the process is gone, or we may not.
fn gone_or(pid: i32, what: &'static str) -> impl FnOnce(io::Error) -> CaptureError {
    move |source| {
        if source.kind() == io::ErrorKind::NotFound {
            CaptureError::Gone { pid }
        } else {
            CaptureError::Sys { pid, what, source }
        }
    }
}

/// Descriptors, mappings and timers the engine cannot capture yet.
fn refuse_unsupported(pid: i32, own_filters: u32) -> Result<(), CaptureError> {
    let unsupported = |what: String| CaptureError::Unsupported { pid, what };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|_| CaptureError::Gone { pid })?;
    let field = |name: &str| status_ids(&status, name).first().copied().unwrap_or(0);
    match (field("Seccomp:"), field("Seccomp_filters:")) {
        (0, _) => {}
        (2, n) if n == own_filters => {}
        (1, _) => return Err(unsupported("strict seccomp mode".into())),
        (_, n) => return Err(unsupported(format!("{n} seccomp filter(s) of its own"))),
    }
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map_err(gone_or(pid, "list the descriptors"))?;
    let mut pipes: Vec<(u64, String)> = Vec::new();
    for e in fds.flatten() {
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        let t = target.to_string_lossy();
        let fd = e.file_name().to_string_lossy().into_owned();
        let stdio = fd.parse::<i32>().is_ok_and(|n| n <= 2);
        if stdio && is_stream(t.as_bytes()) && !t.starts_with("pipe:") {
            continue;
        }
        if t.starts_with("socket:") {
            return Err(unsupported(format!("a socket (descriptor {fd})")));
        }
        if let Some(kind) = t.strip_prefix("anon_inode:") {
            return Err(unsupported(format!("{kind} (descriptor {fd})")));
        }
        if let Some(inode) = pipe_inode(t.as_bytes()) {
            pipes.push((inode, fd));
            continue;
        }
        if t.ends_with(" (deleted)") {
            let len = std::fs::metadata(e.path()).map_or(0, |m| m.len());
            if len > MAX_DELETED_FILE {
                return Err(unsupported(format!(
                    "a deleted file of {len} bytes (descriptor {fd}; at most {MAX_DELETED_FILE})"
                )));
            }
        }
    }
    for (inode, fd) in &pipes {
        let stdio = fd.parse::<i32>().is_ok_and(|n| n <= 2);
        if !stdio && pipes.iter().filter(|(i, _)| i == inode).count() < 2 {
            return Err(unsupported(format!(
                "a pipe to another process (descriptor {fd})"
            )));
        }
    }
    let timers = std::fs::read_to_string(format!("/proc/{pid}/timers")).unwrap_or_default();
    if !timers.trim().is_empty() {
        return Err(unsupported("POSIX timers (timer_create)".into()));
    }
    let vmas = procfs::maps(pid).map_err(gone_or(pid, "list the mappings"))?;
    for v in vmas {
        let p = String::from_utf8_lossy(&v.path);
        let device =
            p.starts_with("/dev/") && !p.starts_with("/dev/shm/") && !p.starts_with("/dev/zero");
        if device {
            return Err(unsupported(format!("a mapping of the device {p}")));
        }
        if !v.shared && v.inode != 0 && p.ends_with(" (deleted)") {
            return Err(unsupported(format!(
                "a private mapping of the deleted file {p}"
            )));
        }
    }
    Ok(())
}

/// Whether process `pid` has ended (gone, or a zombie).
fn ended(pid: i32) -> bool {
    procfs::proc_stat(pid as u32).map_or(true, |s| matches!(s.state, 'Z' | 'X'))
}

/// Seizes and stops every thread, again until no new one appears.
pub(crate) fn stop_all(pid: i32) -> Result<Vec<i32>, CaptureError> {
    let mut stopped = BTreeSet::new();
    let release = |stopped: &BTreeSet<i32>| {
        for &t in stopped {
            let _ = ptrace::detach(t);
        }
    };
    loop {
        let tids = ptrace::threads(pid).map_err(|_| CaptureError::Gone { pid })?;
        let new: Vec<i32> = tids.into_iter().filter(|t| !stopped.contains(t)).collect();
        if new.is_empty() {
            return Ok(stopped.into_iter().collect());
        }
        for tid in new {
            let ok = ptrace::seize(tid).and_then(|()| ptrace::interrupt(tid));
            let stop = ok.and_then(|()| ptrace::wait_stop(tid));
            match stop {
                Ok(Stop::Stopped { .. }) => {
                    stopped.insert(tid);
                }
                // A thread that ended meanwhile is no loss, unless it is
                // the whole process.
                Ok(_) | Err(_) if tid != pid => {}
                // A zombie cannot be seized (EPERM): it ended.
                Err(source) if source.raw_os_error() != Some(libc::ESRCH) && !ended(pid) => {
                    release(&stopped);
                    return Err(CaptureError::Sys {
                        pid,
                        what: "stop it (ptrace)",
                        source,
                    });
                }
                _ => {
                    release(&stopped);
                    return Err(CaptureError::Gone { pid });
                }
            }
        }
    }
}

/// Whether a mapping's pages go into the image: anonymous memory (private
/// or shared) and the written pages of private file mappings; not the
/// kernel's own (vdso, vvar, vsyscall), whose contents the destination has.
pub(crate) fn stores_pages(v: &Vma) -> bool {
    !matches!(
        &v.path[..],
        b"[vdso]" | b"[vvar]" | b"[vvar_vclock]" | b"[vsyscall]"
    ) && (!v.shared || v.inode == 0 || anonymous_shared(&v.path))
}

/// Shared memory with no file of its own to come back from: MAP_SHARED
/// anonymous memory (`/dev/zero (deleted)`), memfd, SysV shm, deleted
/// files.
/// (`path`: the mapping's, of a shared mapping.)
pub fn anonymous_shared(path: &[u8]) -> bool {
    path.starts_with(b"/dev/zero")
        || path.starts_with(b"/memfd:")
        || path.starts_with(b"/SYSV")
        || path.ends_with(DELETED)
}

/// Appends the runs (address, pages) of `v`'s pages worth storing:
/// present or swapped, and, for a private file mapping, only those written
/// (no longer the file's).
fn page_runs(pagemap: &std::fs::File, v: &Vma, out: &mut Vec<(u64, usize)>) -> io::Result<()> {
    let n = ((v.end - v.start) / PAGE as u64) as usize;
    let map = procfs::pagemap_of(pagemap, v.start, n)?;
    let file_backed = v.inode != 0 && !v.shared;
    let wanted =
        |e: u64| e & (PAGE_PRESENT | PAGE_SWAPPED) != 0 && !(file_backed && e & PAGE_FILE != 0);
    let mut i = 0;
    while i < map.len() {
        if !wanted(map[i]) {
            i += 1;
            continue;
        }
        let first = i;
        while i < map.len() && wanted(map[i]) {
            i += 1;
        }
        out.push((v.start + (first * PAGE) as u64, i - first));
    }
    Ok(())
}

/// The pages of a held process, found (runs of pages worth storing) but
/// not read yet.
#[derive(Debug)]
pub struct PendingPages {
    pid: i32,
    mem: std::fs::File,
    runs: Vec<(u64, usize)>,
    zeros: ZerosKept,
}

/// The address ranges whose zero pages are stored all the same: private
/// file mappings, where a page left out of the image comes back from the
/// file, not as zeros. (The dynamic loader zeroes the part of a library's
/// last data page past its file data, the start of its .bss: a page it
/// may leave all zero, and that the file holds other bytes for.)
#[derive(Debug, Default, Clone)]
pub(crate) struct ZerosKept(Vec<(u64, u64)>);

impl ZerosKept {
    /// The ranges of `vmas` (in address order, as the maps list them).
    pub(crate) fn of(vmas: &[Vma]) -> ZerosKept {
        ZerosKept(
            vmas.iter()
                .filter(|v| v.inode != 0 && !v.shared)
                .map(|v| (v.start, v.end))
                .collect(),
        )
    }

    /// Whether the page at `addr` is stored even if zero.
    fn keeps(&self, addr: u64) -> bool {
        let i = self.0.partition_point(|&(_, end)| end <= addr);
        self.0.get(i).is_some_and(|&(start, _)| start <= addr)
    }
}

/// Why streaming the pages out stopped.
#[derive(Debug, Error)]
pub enum StreamError {
    #[error("cannot read the memory of process {pid}")]
    Read { pid: i32, source: io::Error },
    #[error("cannot write the pages out")]
    Sink(#[source] io::Error),
}

/// The pages read and handed on at a time when streamed (2 MiB blocks:
/// the buffers are backed by huge pages).
const STREAM_CHUNK_PAGES: usize = 1024;

impl PendingPages {
    /// At most how many bytes the PAGES section takes (zero pages are
    /// left out as they are read).
    pub fn max_bytes(&self) -> u64 {
        self.runs.iter().map(|&(_, n)| 12 + (n * PAGE) as u64).sum()
    }

    /// The PAGES section, read at once, and the bytes of memory stored.
    pub fn read_all(&self) -> Result<(Vec<u8>, u64), CaptureError> {
        read_runs(self.pid, &self.mem, &self.runs, &self.zeros).map_err(|source| {
            CaptureError::Sys {
                pid: self.pid,
                what: "read the memory",
                source,
            }
        })
    }

    /// Hands the PAGES section to `sink` piece by piece (runs of pages,
    /// in order) with each piece's CRC-32 state, each piece read while the
    /// one before is with `sink`: a thread reads out of the process into
    /// one buffer (and checksums it, while it is in the cache) while the
    /// caller writes the other. Returns the bytes of memory stored.
    pub fn stream(
        &self,
        mut sink: impl FnMut(&[u8], &crc32fast::Hasher) -> io::Result<()>,
    ) -> Result<u64, StreamError> {
        let read_err = |source| StreamError::Read {
            pid: self.pid,
            source,
        };
        let batches = batches(&self.runs, STREAM_CHUNK_PAGES);
        if batches.len() <= 1 {
            let (payload, stored) =
                read_runs(self.pid, &self.mem, &self.runs, &self.zeros).map_err(read_err)?;
            sink(&payload, &crc_of(&payload)).map_err(StreamError::Sink)?;
            return Ok(stored);
        }
        let cap = STREAM_CHUNK_PAGES * (PAGE + 12);
        type Piece = (Vec<u8>, crc32fast::Hasher);
        let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<io::Result<Piece>>(1);
        let (free_tx, free_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        for _ in 0..2 {
            let mut buf = Vec::with_capacity(cap);
            roam_sys::mem::huge_pages_for(&mut buf);
            let _ = free_tx.send(buf);
        }
        std::thread::scope(|s| {
            s.spawn(move || {
                for batch in &batches {
                    // The caller stopped (its sink failed): so does this.
                    let Ok(mut buf) = free_rx.recv() else { return };
                    buf.clear();
                    let read = read_batch(self.pid, &self.mem, &mut buf, batch, &self.zeros);
                    let failed = read.is_err();
                    let piece = read.map(|()| {
                        let crc = crc_of(&buf);
                        (buf, crc)
                    });
                    if full_tx.send(piece).is_err() || failed {
                        return;
                    }
                }
            });
            // Owns the receiving end: returning early ends the reader.
            let consume = move || {
                let mut stored = 0u64;
                for piece in full_rx {
                    let (buf, crc) = piece.map_err(read_err)?;
                    stored += stored_in(&buf).map_err(read_err)?;
                    sink(&buf, &crc).map_err(StreamError::Sink)?;
                    let _ = free_tx.send(buf);
                }
                Ok(stored)
            };
            consume()
        })
    }
}

/// Runs of pages grouped `per` pages at most a group, a run longer than
/// that cut in pieces.
fn batches(runs: &[(u64, usize)], per: usize) -> Vec<Vec<(u64, usize)>> {
    let mut out: Vec<Vec<(u64, usize)>> = Vec::new();
    let mut room = 0;
    for &(mut addr, mut n) in runs {
        while n > 0 {
            if room == 0 {
                out.push(Vec::new());
                room = per;
            }
            let take = n.min(room);
            out.last_mut().expect("pushed").push((addr, take));
            addr += (take * PAGE) as u64;
            n -= take;
            room -= take;
        }
    }
    out
}

/// Bytes of memory in encoded runs of pages.
fn stored_in(encoded: &[u8]) -> io::Result<u64> {
    Ok(crate::image::decode_pages(encoded)
        .map_err(|e| io::Error::other(e.to_string()))?
        .iter()
        .map(|r| r.data.len() as u64)
        .sum())
}

/// The PAGES section: each run read in one call straight into its place,
/// then zero pages taken out in place (but those `zeros` keeps); and the
/// bytes stored.
pub(crate) fn read_runs(
    pid: i32,
    mem: &std::fs::File,
    runs: &[(u64, usize)],
    zeros: &ZerosKept,
) -> io::Result<(Vec<u8>, u64)> {
    let total: usize = runs.iter().map(|&(_, n)| 12 + n * PAGE).sum();
    let mut out = Vec::with_capacity(total);
    roam_sys::mem::huge_pages_for(&mut out);
    // In batches: a dropped page moves what follows it in its batch only.
    for batch in batches(runs, STREAM_CHUNK_PAGES) {
        read_batch(pid, mem, &mut out, &batch, zeros)?;
    }
    let stored = stored_in(&out)?;
    Ok((out, stored))
}

/// Appends `runs` to `out` as [`read_run`] does each, read together (one
/// process_vm_readv per thousand runs: a heap with a hole every few pages
/// has thousands), then their zero pages taken out in one pass; one by
/// one if some page may not be read that way.
fn read_batch(
    pid: i32,
    mem: &std::fs::File,
    out: &mut Vec<u8>,
    runs: &[(u64, usize)],
    zeros: &ZerosKept,
) -> io::Result<()> {
    let start = out.len();
    let pages: Vec<(u64, usize)> = runs.iter().map(|&(a, n)| (a, n * PAGE)).collect();
    let head = |i: usize| {
        let mut h = [0u8; 12];
        h[..8].copy_from_slice(&runs[i].0.to_le_bytes());
        h[8..].copy_from_slice(&(runs[i].1 as u32).to_le_bytes());
        h
    };
    if ptrace::read_runs_append(pid, out, &pages, head).is_err() {
        return runs
            .iter()
            .try_for_each(|&(addr, n)| read_run(pid, mem, out, addr, n, zeros));
    }
    // Each run moved down to where the last one ended, without its zero
    // pages: never past the bytes still to be moved.
    let (mut src, mut dst) = (start, start);
    for &(_, n) in runs {
        let next = src + 12 + n * PAGE;
        dst = compact_run(out, src, dst, zeros);
        src = next;
    }
    out.truncate(dst);
    Ok(())
}

/// Appends the run of `n` pages at `addr` to `out` (a run header, then
/// the pages), its zero pages taken out (but those `zeros` keeps).
fn read_run(
    pid: i32,
    mem: &std::fs::File,
    out: &mut Vec<u8>,
    addr: u64,
    n: usize,
    zeros: &ZerosKept,
) -> io::Result<()> {
    let head = out.len();
    out.extend_from_slice(&addr.to_le_bytes());
    out.extend_from_slice(&(n as u32).to_le_bytes());
    // process_vm_readv copies once; pages it may not read (PROT_NONE)
    // come through /proc/PID/mem, which reads as the tracer.
    if ptrace::read_memory_append(pid, out, n * PAGE, addr).is_err() {
        out.truncate(head + 12);
        roam_sys::mem::read_at_append(mem, out, n * PAGE, addr)?;
    }
    let end = compact_run(out, head, head, zeros);
    out.truncate(end);
    Ok(())
}

/// Moves the run whose header is at `src` down to `dst` (at most `src`)
/// without its zero pages (but those `zeros` keeps): split into runs
/// around them. Returns where it ends. A new header (12 bytes) always
/// follows a dropped page (4096), so writes never overtake reads, of this
/// run or of those after it.
fn compact_run(out: &mut [u8], src: usize, dst: usize, zeros: &ZerosKept) -> usize {
    let addr = u64::from_le_bytes(out[src..src + 8].try_into().expect("8 bytes"));
    let n = u32::from_le_bytes(out[src + 8..src + 12].try_into().expect("4 bytes")) as usize;
    let data = src + 12;
    let page = |i: usize| data + i * PAGE;
    let dropped = |out: &[u8], i: usize| {
        is_zero(&out[page(i)..page(i) + PAGE]) && !zeros.keeps(addr + (i * PAGE) as u64)
    };
    if !(0..n).any(|i| dropped(out, i)) {
        if src != dst {
            out.copy_within(src..data + n * PAGE, dst);
        }
        return dst + 12 + n * PAGE;
    }
    let mut w = dst;
    let mut i = 0;
    while i < n {
        if dropped(out, i) {
            i += 1;
            continue;
        }
        let first = i;
        while i < n && !dropped(out, i) {
            i += 1;
        }
        let a = addr + (first * PAGE) as u64;
        out[w..w + 8].copy_from_slice(&a.to_le_bytes());
        out[w + 8..w + 12].copy_from_slice(&((i - first) as u32).to_le_bytes());
        out.copy_within(page(first)..page(i), w + 12);
        w += 12 + (i - first) * PAGE;
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{decode_pages, read, Writer};

    /// A child (forked: same layout) that keeps none of the test's
    /// descriptors (other tests' sockets among them), fills `len` bytes of
    /// a fresh anonymous mapping with a pattern, makes a socket pair if
    /// `socket`, writes the mapping's address to a pipe and spins until
    /// killed.
    fn child_with_pattern(len: usize, socket: bool) -> (i32, u64) {
        let mut fds = [0; 2];
        // SAFETY: pipe fills two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the child only maps memory, writes and spins; it never
        // returns into the harness and is killed by the parent.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let w = fds[1] as u32;
            // SAFETY: closes descriptor ranges of this (child) process only.
            unsafe {
                libc::syscall(libc::SYS_close_range, 0u32, w - 1, 0u32);
                libc::syscall(libc::SYS_close_range, w + 1, u32::MAX, 0u32);
            }
            // A file at an offset, appending, duplicated to 10; a pipe;
            // a working directory, a umask and a blocked signal to find.
            // SAFETY: plain calls on this (child) process's own state.
            unsafe {
                let f = libc::open(
                    c"/proc/self/status".as_ptr(),
                    libc::O_RDONLY | libc::O_CLOEXEC,
                );
                libc::lseek(f, 7, libc::SEEK_SET);
                libc::dup2(f, 10);
                let mut p = [0; 2];
                libc::pipe(p.as_mut_ptr());
                libc::write(p[1], c"abc".as_ptr().cast(), 3);
                libc::chdir(c"/usr".as_ptr());
                libc::umask(0o027);
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGUSR2);
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            }
            if socket {
                let mut s = [0; 2];
                // SAFETY: socketpair fills two descriptors.
                unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, s.as_mut_ptr()) };
            }
            // SAFETY: a fresh anonymous mapping of `len` bytes.
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
            for i in 0..len {
                // SAFETY: inside the mapping; every 3rd page left zero.
                unsafe {
                    *p.add(i) = if (i / PAGE) % 3 == 2 {
                        0
                    } else {
                        (i % 251) as u8 | 1
                    }
                };
            }
            let a = (p as u64).to_le_bytes();
            // SAFETY: writes 8 bytes from a live array to the pipe, which
            // is then closed (a pipe to another process is refused).
            unsafe {
                libc::write(w as i32, a.as_ptr().cast(), 8);
                libc::close(w as i32);
            }
            loop {
                std::hint::spin_loop();
            }
        }
        let mut a = [0u8; 8];
        // SAFETY: closing our write end, then reading 8 bytes into a live
        // array, then until the end of the pipe: the child has closed its
        // write end too (a pipe to another process would be refused).
        unsafe {
            libc::close(fds[1]);
            assert_eq!(libc::read(fds[0], a.as_mut_ptr().cast(), 8), 8);
            let mut more = [0u8; 8];
            while libc::read(fds[0], more.as_mut_ptr().cast(), 8) > 0 {}
            libc::close(fds[0]);
        }
        (pid, u64::from_le_bytes(a))
    }

    fn reap(pid: i32) {
        // SAFETY: kill and reap our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), libc::__WALL);
        }
    }

    #[test]
    fn a_running_process_is_captured_and_runs_on() {
        let len = 3 << 20;
        let (pid, addr) = child_with_pattern(len, false);
        let result = std::panic::catch_unwind(|| {
            let c = capture(pid, true).unwrap();
            // Written to an image and read back.
            let mut w = Writer::new(Vec::new()).unwrap();
            for s in &c.sections {
                w.section(s.kind, &s.payload).unwrap();
            }
            let img = w.finish().unwrap();
            let sections = read(&img[..]).unwrap();
            let of = |k: u32| -> &[u8] {
                &sections
                    .iter()
                    .find(|s| s.kind == k)
                    .expect("section")
                    .payload
            };
            let meta: Meta = postcard::from_bytes(of(kind::META)).unwrap();
            assert_eq!((meta.pid, meta.threads), (pid, 1));
            let t: ThreadState = postcard::from_bytes(of(kind::THREAD)).unwrap();
            assert_eq!(t.tid, pid);
            assert_eq!(t.regs.len(), 27);
            assert!(t.xstate.len() >= 576);
            let maps: Vec<MapRecord> = postcard::from_bytes(of(kind::MAPS)).unwrap();
            let m = maps
                .iter()
                .find(|m| m.start <= addr && addr < m.end)
                .expect("the pattern's mapping");
            assert!(m.stored && m.prot == 0b011 && !m.shared);
            assert!(maps.iter().any(|m| &m.path[..] == b"[vdso]" && !m.stored));
            let files: Vec<FdRecord> = postcard::from_bytes(of(kind::FILES)).unwrap();
            let f10 = files.iter().find(|f| f.fd == 10).expect("fd 10");
            assert!(f10.target.ends_with(b"/status"), "{f10:?}");
            assert_eq!(f10.pos, 7);
            let cloexec = files
                .iter()
                .find(|f| f.target == f10.target && f.fd != 10)
                .expect("the original descriptor");
            assert_ne!(cloexec.flags & libc::O_CLOEXEC as u32, 0);
            assert_eq!(f10.flags & libc::O_CLOEXEC as u32, 0, "dup2 clears it");
            assert_eq!(f10.kind, FdKind::Dup(cloexec.fd));
            let pipes: Vec<&FdKind> = files
                .iter()
                .filter(|f| f.target.starts_with(b"pipe:"))
                .map(|f| &f.kind)
                .collect();
            assert!(
                matches!(
                    &pipes[..],
                    [FdKind::Pipe { write: false, buffered: b, .. }, FdKind::Pipe { write: true, .. }]
                        if &b[..] == b"abc"
                ),
                "{pipes:?}"
            );
            let process: Process = postcard::from_bytes(of(kind::PROCESS)).unwrap();
            assert!(process.mm.brk >= process.mm.start_brk, "{:?}", process.mm);
            assert!(process.mm.arg_start != 0 && process.mm.start_stack != 0);
            assert!(process.auxv.len() >= 16 * 10);
            assert_eq!(process.itimers.len(), 3);
            assert_ne!(t.tid_address, 0, "glibc's clear-tid word");
            let ctx: Context = postcard::from_bytes(of(kind::CONTEXT)).unwrap();
            assert_eq!(&ctx.cwd[..], b"/usr");
            assert_eq!(&ctx.root[..], b"/");
            assert_eq!(ctx.umask, 0o027);
            assert_eq!(ctx.rlimits.len(), libc::RLIMIT_RTTIME as usize + 1);
            assert_eq!(ctx.thread_signals.len(), 1);
            assert_ne!(ctx.thread_signals[0].0 & (1 << (libc::SIGUSR2 - 1)), 0);
            // The pattern's pages are there, the zero ones are not.
            let runs = decode_pages(of(kind::PAGES)).unwrap();
            let mut found = 0;
            for r in &runs {
                for (i, page) in r.data.chunks(PAGE).enumerate() {
                    let a = r.addr + (i * PAGE) as u64;
                    if a < addr || a >= addr + len as u64 {
                        continue;
                    }
                    let off = (a - addr) as usize;
                    assert_ne!((off / PAGE) % 3, 2, "a zero page was stored");
                    for (j, &b) in page.iter().enumerate() {
                        assert_eq!(b, ((off + j) % 251) as u8 | 1);
                    }
                    found += 1;
                }
            }
            assert_eq!(found, len / PAGE * 2 / 3, "pattern pages stored");
            assert!(c.stored_bytes >= (len / 3 * 2) as u64);
            // Left running: it can be captured again.
            assert!(capture(pid, true).is_ok());
        });
        reap(pid);
        if let Err(e) = result {
            std::panic::resume_unwind(e);
        }
    }

    #[test]
    fn pages_streamed_in_pieces_are_the_pages_read_at_once() {
        // 19 MiB: more than a few pieces, the last one partial.
        let len = 19 << 20;
        let (pid, _) = child_with_pattern(len, false);
        let result = std::panic::catch_unwind(|| {
            let (_, pages, held) = capture_pending(pid, 0, None).unwrap();
            let (whole, stored) = pages.read_all().unwrap();
            let mut pieces = 0;
            let mut streamed = Vec::new();
            let n = pages
                .stream(|piece, crc| {
                    pieces += 1;
                    assert_eq!(crc.clone().finalize(), crate::image::crc32(piece));
                    streamed.extend_from_slice(piece);
                    Ok(())
                })
                .unwrap();
            assert!(pieces > 4, "{pieces} pieces");
            assert_eq!(n, stored);
            // The same pages (a run cut between two pieces is two runs).
            let flat = |enc: &[u8]| -> Vec<(u64, Vec<u8>)> {
                decode_pages(enc)
                    .unwrap()
                    .iter()
                    .flat_map(|r| {
                        r.data
                            .chunks(PAGE)
                            .enumerate()
                            .map(|(i, p)| (r.addr + (i * PAGE) as u64, p.to_vec()))
                            .collect::<Vec<_>>()
                    })
                    .collect()
            };
            assert!(flat(&streamed) == flat(&whole), "streamed pages differ");
            // A sink that fails stops the stream with its error.
            let mut calls = 0;
            let e = pages
                .stream(|_, _| {
                    calls += 1;
                    if calls == 2 {
                        Err(io::Error::other("disk full"))
                    } else {
                        Ok(())
                    }
                })
                .unwrap_err();
            assert!(matches!(e, StreamError::Sink(_)), "{e}");
            assert_eq!(calls, 2);
            held.release(false).unwrap();
        });
        reap(pid);
        if let Err(e) = result {
            std::panic::resume_unwind(e);
        }
    }

    #[test]
    fn runs_are_batched_and_cut_to_the_batch_size() {
        let runs = [(0x1000u64, 3usize), (0x10000, 10), (0x100000, 1)];
        let b = batches(&runs, 4);
        assert_eq!(
            b,
            vec![
                vec![(0x1000, 3), (0x10000, 1)],
                vec![(0x11000, 4)],
                vec![(0x15000, 4)],
                vec![(0x19000, 1), (0x100000, 1)],
            ]
        );
        assert!(batches(&[], 4).is_empty());
    }

    #[test]
    fn zero_pages_are_taken_out_of_a_run_in_place() {
        // Pages: data, zero, zero, data, data, zero, data.
        let marks = [1u8, 0, 0, 2, 3, 0, 4];
        let mut out = vec![9u8; 5]; // what came before stays
        let head = out.len();
        out.extend_from_slice(&0x10_000u64.to_le_bytes());
        out.extend_from_slice(&(marks.len() as u32).to_le_bytes());
        for m in marks {
            out.extend(std::iter::repeat_n(m, PAGE));
        }
        let end = compact_run(&mut out, head, head, &ZerosKept::default());
        out.truncate(end);
        assert_eq!(&out[..5], &[9; 5]);
        let runs = crate::image::decode_pages(&out[5..]).unwrap();
        let got: Vec<(u64, Vec<u8>)> = runs
            .iter()
            .map(|r| (r.addr, r.data.chunks(PAGE).map(|p| p[0]).collect()))
            .collect();
        assert_eq!(
            got,
            vec![
                (0x10_000, vec![1]),
                (0x13_000, vec![2, 3]),
                (0x16_000, vec![4])
            ]
        );
        // A run without zero pages is left as it is.
        let mut out = Vec::new();
        out.extend_from_slice(&0x20_000u64.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend(std::iter::repeat_n(5u8, PAGE));
        let before = out.clone();
        let end = compact_run(&mut out, 0, 0, &ZerosKept::default());
        out.truncate(end);
        assert_eq!(out, before);
    }

    #[test]
    fn runs_read_together_are_the_runs_read_one_by_one() {
        // Our own memory: 10 pages, pages 2, 5 and 9 zero; page 7 PROT_NONE
        // in the second case (process_vm_readv cannot read it: one by one
        // then, through /proc/self/mem).
        for guard in [false, true] {
            // SAFETY: a fresh private anonymous mapping of ours.
            let m = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    10 * PAGE,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            } as *mut u8;
            for p in [0usize, 1, 3, 4, 6, 7, 8] {
                // SAFETY: inside the mapping.
                unsafe { std::ptr::write_bytes(m.add(p * PAGE), p as u8 + 1, PAGE) };
            }
            if guard {
                // SAFETY: a page of our mapping.
                unsafe { libc::mprotect(m.add(7 * PAGE).cast(), PAGE, libc::PROT_NONE) };
            }
            let base = m as u64;
            let runs = [
                (base, 4),
                (base + 4 * PAGE as u64, 1),
                (base + 5 * PAGE as u64, 5),
            ];
            let mem = std::fs::File::open("/proc/self/mem").unwrap();
            let mut out = vec![7u8; 3]; // what came before stays
            read_batch(
                std::process::id() as i32,
                &mem,
                &mut out,
                &runs,
                &ZerosKept::default(),
            )
            .unwrap();
            assert_eq!(&out[..3], &[7; 3]);
            let got: Vec<(u64, Vec<u8>)> = decode_pages(&out[3..])
                .unwrap()
                .iter()
                .map(|r| (r.addr, r.data.chunks(PAGE).map(|p| p[0]).collect()))
                .collect();
            let at = |p: usize| base + (p * PAGE) as u64;
            assert_eq!(
                got,
                vec![
                    (at(0), vec![1, 2]),
                    (at(3), vec![4]),
                    (at(4), vec![5]),
                    (at(6), vec![7, 8, 9]),
                ],
                "guard: {guard}"
            );
            // SAFETY: our mapping, no longer used.
            unsafe { libc::munmap(m.cast(), 10 * PAGE) };
        }
    }

    #[test]
    fn zero_pages_of_private_file_mappings_are_kept() {
        let vma = |start: u64, end: u64, inode: u64, shared: bool| Vma {
            start,
            end,
            read: true,
            write: true,
            exec: false,
            shared,
            offset: 0,
            dev: (0, 0),
            inode,
            path: Vec::new(),
        };
        // Anonymous, private file, shared file, private file.
        let zeros = ZerosKept::of(&[
            vma(0x10_000, 0x12_000, 0, false),
            vma(0x12_000, 0x14_000, 7, false),
            vma(0x20_000, 0x21_000, 8, true),
            vma(0x30_000, 0x31_000, 9, false),
        ]);
        let kept: Vec<u64> = (0x10..0x32)
            .map(|p| p << 12)
            .filter(|&a| zeros.keeps(a))
            .collect();
        assert_eq!(kept, vec![0x12_000, 0x13_000, 0x30_000]);
        // A run across the anonymous and the file mapping, all zero: only
        // the file's pages stay.
        let mut out = Vec::new();
        out.extend_from_slice(&0x10_000u64.to_le_bytes());
        out.extend_from_slice(&4u32.to_le_bytes());
        out.resize(12 + 4 * PAGE, 0);
        let end = compact_run(&mut out, 0, 0, &zeros);
        out.truncate(end);
        let runs = crate::image::decode_pages(&out).unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!((runs[0].addr, runs[0].data.len()), (0x12_000, 2 * PAGE));
    }

    #[test]
    fn a_process_that_ended_is_gone_not_an_error_of_ours() {
        // A child that has exited and is not reaped yet: what a process
        // that ends as its checkpoint starts looks like.
        // SAFETY: the child only exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: ends the forked child.
            unsafe { libc::_exit(3) };
        }
        while procfs::proc_stat(pid as u32).map_or(true, |s| s.state != 'Z') {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let e = capture(pid, true).unwrap_err();
        assert!(matches!(e, CaptureError::Gone { .. }), "{e}");
        assert!(e.to_string().contains("went away"), "{e}");
        let mut status = 0;
        // SAFETY: reaps our child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert_eq!(libc::WEXITSTATUS(status), 3);
    }

    #[test]
    fn unsupported_and_missing_processes_are_refused_untouched() {
        assert!(matches!(
            capture(i32::MAX - 1, true),
            Err(CaptureError::NoProcess { .. })
        ));
        // A process holding a socket is refused before it is touched.
        let (holder, _) = child_with_pattern(PAGE, true);
        let e = capture(holder, true).unwrap_err();
        assert!(e.to_string().contains("socket"), "{e}");
        // Untouched: not traced, so another tracer can seize it.
        let seized = ptrace::seize(holder);
        reap(holder);
        seized.unwrap();
    }
}
