//! The remote file system (issue 4) against the same operations here on
//! the home and through sshfs, interleaved round by round.
//!
//! A testbed of its own (one node, `files = "home"`) runs each operation
//! as a process on n1 with `roam run`, whose files are the home's through
//! roam's FUSE client and the authenticated link; the same operation runs
//! here on the home, and inside n1's namespaces on an sshfs mount of the
//! home's `/` (see sshfs.rs). The operations are a copy of roam-bench run
//! as `__fsop` (see fsop.rs), which times itself; start-up of a dynamic
//! program is `python3 -c pass`, timed from spawn to reaped.
//!
//! *Cold* means the node's caches of the files were dropped just before:
//! the file's pages on the node side (`POSIX_FADV_DONTNEED` through the
//! node's mount) and, for python3, the pages of every file it loads, then
//! a wait for roam's 1 s attribute and name cache to expire; sshfs is
//! remounted. The home's page cache stays warm throughout: what is
//! measured is the link and the client, not the home's disk.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use roam_testbed::{Testbed, TestbedOpts, HOME};

use crate::fsop;
use crate::measure::{run_capture, time_run, ErrLog};
use crate::report::{Check, Row, Section};
use crate::sshfs::{HomeSshd, SshfsMount};
use crate::{check_interrupted, progress, NODE};

/// Where the sshfs mount is, in n1 (whose /tmp is its own).
const MNT: &str = "/tmp/roam-bench-sshfs";
/// The dynamic program whose start-up is measured.
const PYTHON: &str = "/usr/bin/python3";
/// Where a node mounts the home's files, unless its config says otherwise.
const DEFAULT_FILES_MOUNT: &str = "/run/roam/files";
/// A run of a metadata or random-read operation is killed after this.
const OP_LIMIT: Duration = Duration::from_secs(120);
/// Prints every file python3 has mapped or imported once started.
const PY_FILES: &str = "import sys\n\
paths = set()\n\
for line in open('/proc/self/maps'):\n    \
    f = line.split()\n    \
    if len(f) >= 6 and f[5].startswith('/'): paths.add(f[5])\n\
for m in list(sys.modules.values()):\n    \
    for a in ('__file__', '__cached__'):\n        \
        p = getattr(m, a, None)\n        \
        if isinstance(p, str) and p.startswith('/'): paths.add(p)\n\
print('\\n'.join(sorted(paths)))\n";

/// The settings of the files section.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileSettings {
    /// Rounds of every operation.
    pub reps: usize,
    /// Size of the sequential and random reads' file, and of each write.
    pub size: u64,
    /// Random 4 KiB reads per run.
    pub random_reads: u64,
    /// Files per metadata run.
    pub count: usize,
    /// python3 start-ups per round (each variant, cold then warm).
    pub py_runs: usize,
}

/// What the files section found.
pub struct Outcome {
    pub sections: Vec<Section>,
    pub checks: Vec<Check>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Where {
    /// On the home, on its own files.
    Here,
    /// On n1 through `roam run`, the home's files through roam's FUSE.
    Roam,
    /// On n1, on the sshfs mount of the home's `/`.
    Sshfs,
}

impl Where {
    fn label(self) -> &'static str {
        match self {
            Where::Here => "here, on the home",
            Where::Roam => "roam run on n1 (roam's FUSE)",
            Where::Sshfs => "on n1 through sshfs",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Where::Here => "here",
            Where::Roam => "roam",
            Where::Sshfs => "sshfs",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    SeqRead,
    SeqWrite,
    RandRead,
    Stat,
    CreateUnlink,
}

impl Op {
    const ALL: [Op; 5] = [
        Op::SeqRead,
        Op::SeqWrite,
        Op::RandRead,
        Op::Stat,
        Op::CreateUnlink,
    ];

    /// The phases the operation reports, by name.
    fn phases(self) -> &'static [&'static str] {
        match self {
            Op::SeqRead => &["seqread"],
            Op::SeqWrite => &["seqwrite"],
            Op::RandRead => &["randread"],
            Op::Stat => &["stat"],
            Op::CreateUnlink => &["create", "unlink"],
        }
    }
}

/// What the runs share.
struct Env<'a> {
    tb: &'a Testbed,
    roam: PathBuf,
    /// The copy of roam-bench that runs the operations (in the work
    /// directory, which the home, the node and the sshfs mount all see).
    helper: String,
    mount: Option<SshfsMount<'a>>,
    log: &'a mut ErrLog,
    s: &'a FileSettings,
    /// The file read.
    data: String,
    /// The directory of everything else.
    dir: PathBuf,
    /// Where n1 mounts the home's files (in n1's namespaces).
    files_mount: String,
}

impl Env<'_> {
    /// `path` (a home path) as `w` sees it.
    fn path(&self, w: Where, path: &Path) -> String {
        match w {
            Where::Sshfs => format!("{MNT}{}", path.display()),
            _ => path.display().to_string(),
        }
    }

    /// `prog ARGS` run as `w`: here, through `roam run` on n1, or in n1's
    /// namespaces (with `chroot`: chrooted into the sshfs mount, so that
    /// `prog` and its libraries come from the home).
    fn command(
        &self,
        w: Where,
        prog: &str,
        args: &[String],
        chroot: bool,
    ) -> anyhow::Result<Command> {
        Ok(match w {
            Where::Here => {
                let mut c = Command::new(prog);
                c.args(args);
                c
            }
            Where::Roam => {
                let mut c = Command::new(&self.roam);
                c.env("ROAM_SOCKET", self.tb.socket())
                    .current_dir("/")
                    .args(["run", "--node", NODE, prog])
                    .args(args);
                c
            }
            Where::Sshfs if chroot => {
                let mut c = self.tb.command_in(NODE, "chroot")?;
                c.arg(MNT).arg(prog).args(args);
                c
            }
            Where::Sshfs => {
                let mut c = self.tb.command_in(NODE, prog)?;
                c.args(args);
                c
            }
        })
    }

    /// The arguments of `op` run as `w` in round `round`.
    fn op_args(&self, op: Op, w: Where, round: usize) -> Vec<String> {
        let evict = if w == Where::Here { "0" } else { "1" }.to_string();
        let data = Path::new(&self.data);
        let named = |name: String| self.path(w, &self.dir.join(name));
        let count = self.s.count.to_string();
        let v: Vec<String> = match op {
            Op::SeqRead => vec!["seqread".into(), self.path(w, data), evict],
            Op::SeqWrite => vec![
                "seqwrite".into(),
                named(format!("write-{}", w.tag())),
                self.s.size.to_string(),
            ],
            Op::RandRead => vec![
                "randread".into(),
                self.path(w, data),
                self.s.random_reads.to_string(),
                (round * 3 + w as usize + 1).to_string(),
                evict,
            ],
            Op::Stat => vec!["stat".into(), named(stat_dir(round, w)), count],
            Op::CreateUnlink => vec![
                "createunlink".into(),
                named(format!("create-{round}-{}", w.tag())),
                count,
            ],
        };
        std::iter::once(fsop::ARG.to_string()).chain(v).collect()
    }

    /// The amount each phase of `op` must report.
    fn expected(&self, op: Op) -> u64 {
        match op {
            Op::SeqRead | Op::SeqWrite => self.s.size,
            Op::RandRead => self.s.random_reads,
            Op::Stat | Op::CreateUnlink => self.s.count as u64,
        }
    }

    /// Runs `op` as `w`: the seconds of each phase, `None` if it was
    /// killed at its limit.
    fn run_op(&mut self, op: Op, w: Where, round: usize) -> anyhow::Result<Option<Vec<f64>>> {
        let args = self.op_args(op, w, round);
        let mut cmd = self.command(w, &self.helper, &args, false)?;
        let limit = match op {
            Op::SeqRead | Op::SeqWrite => crate::throughput_limit(self.s.size),
            _ => OP_LIMIT,
        };
        let out = run_capture(&mut cmd, limit, self.log)?;
        if let Op::SeqWrite = op {
            let _ = fs::remove_file(self.dir.join(format!("write-{}", w.tag())));
        }
        let Some(out) = out else {
            return Ok(None);
        };
        let mut secs = Vec::new();
        let lines: Vec<&str> = out.lines().collect();
        for (phase, line) in op.phases().iter().zip(&lines) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (name, t, n) = match f[..] {
                [name, t, n] => (name, t.parse::<f64>(), n.parse::<u64>()),
                _ => bail!("{op:?} as {w:?} printed {out:?}"),
            };
            if name != *phase || n != Ok(self.expected(op)) || t.is_err() {
                bail!(
                    "{op:?} as {w:?} printed {line:?}, expected `{phase} SECONDS {}`",
                    self.expected(op)
                );
            }
            secs.push(t.expect("checked"));
        }
        if lines.len() != op.phases().len() {
            bail!("{op:?} as {w:?} printed {out:?}");
        }
        Ok(Some(secs))
    }

    /// Drops n1's cached pages of every file python3 loads (through n1's
    /// own mount of the home's files, so that the files are not mapped by
    /// the process that drops them).
    fn evict_python_node(&mut self, list: &Path) -> anyhow::Result<()> {
        let mut cmd = self.tb.command_in(NODE, &self.helper)?;
        cmd.args([fsop::ARG, "evict"])
            .arg(list)
            .arg(&self.files_mount);
        if run_capture(&mut cmd, OP_LIMIT, self.log)?.is_none() {
            bail!("dropping n1's cache of python3's files took more than {OP_LIMIT:?}");
        }
        Ok(())
    }

    /// Drops the home's cached pages of every file python3 loads.
    fn evict_python_home(&mut self, list: &Path) -> anyhow::Result<()> {
        let mut cmd = Command::new(&self.helper);
        cmd.args([fsop::ARG, "evict"]).arg(list).arg("");
        if run_capture(&mut cmd, OP_LIMIT, self.log)?.is_none() {
            bail!("dropping the home's cache of python3's files took more than {OP_LIMIT:?}");
        }
        Ok(())
    }

    /// Start-ups of python3 as `w`: cold (nothing of it cached anywhere:
    /// its files' pages dropped on the home and the node, every name and
    /// inode dropped), then warm (the run right after); for roam and sshfs
    /// then also cold on the node only (the home's cache warm).
    fn python(&mut self, w: Where, list: &Path) -> anyhow::Result<Vec<(Start, Option<Duration>)>> {
        let args = ["-c".to_string(), "pass".to_string()];
        let limit = Duration::from_secs(60);
        // The node side's cache of python3's files.
        let drop_node = |env: &mut Self| -> anyhow::Result<()> {
            match w {
                Where::Here => Ok(()),
                Where::Roam => env.evict_python_node(list),
                Where::Sshfs => env
                    .mount
                    .as_mut()
                    .expect("sshfs is measured only when mounted")
                    .remount(),
            }
        };
        let mut cmd = self.command(w, PYTHON, &args, true)?;
        let mut out = Vec::new();
        drop_node(self)?;
        self.evict_python_home(list)?;
        drop_names()?;
        out.push((Start::Cold, time_run(&mut cmd, limit, self.log)?));
        out.push((Start::Warm, time_run(&mut cmd, limit, self.log)?));
        if w != Where::Here {
            drop_node(self)?;
            drop_names()?;
            out.push((Start::NodeCold, time_run(&mut cmd, limit, self.log)?));
        }
        Ok(out)
    }
}

/// How much of a start-up's files was cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Start {
    /// Nothing, anywhere.
    Cold,
    /// Nothing on the node; everything on the home.
    NodeCold,
    /// Everything (the run right after another).
    Warm,
}

/// Drops every cached name and inode of the machine (not the page cache),
/// so that a cold run looks everything up again.
fn drop_names() -> anyhow::Result<()> {
    fs::write("/proc/sys/vm/drop_caches", "2")
        .map_err(|e| anyhow::anyhow!("cannot drop the kernel's name cache: {e}"))
}

fn stat_dir(round: usize, w: Where) -> String {
    format!("stat-{round}-{}", w.tag())
}

/// Where node `node` of `tb` mounts the home's files (its config's
/// `files_mount`).
fn files_mount(tb: &Testbed, node: &str) -> String {
    tb.config_path(node)
        .and_then(|p| fs::read_to_string(p).ok())
        .and_then(|cfg| {
            cfg.lines().find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == "files_mount").then(|| v.trim().trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| DEFAULT_FILES_MOUNT.to_string())
}

/// Measures the files section. `data` is a file of `s.size` bytes in
/// `work` (a directory every node sees); `helper` the roam-bench to run
/// the operations with; `sshfs_missing` why sshfs is left out, if it is.
pub fn measure(
    roam: &Path,
    roamd: &Path,
    work: &Path,
    data: &str,
    s: &FileSettings,
    sshfs_missing: Option<&str>,
    log: &mut ErrLog,
) -> anyhow::Result<Outcome> {
    let dir = work.join("files");
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let helper = dir.join("roam-bench-fsop");
    let exe = std::env::current_exe().context("cannot find this executable")?;
    fs::copy(&exe, &helper)
        .with_context(|| format!("cannot copy roam-bench to {}", helper.display()))?;
    let helper = helper
        .to_str()
        .context("a non-UTF-8 work directory")?
        .to_owned();

    // What python3 loads, to drop from the node's cache.
    let py_list = dir.join("python-files");
    let out = Command::new(PYTHON)
        .args(["-c", PY_FILES])
        .output()
        .with_context(|| format!("cannot run {PYTHON}"))?;
    if !out.status.success() {
        bail!(
            "{PYTHON} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    fs::write(&py_list, &out.stdout)?;
    let py_files = out
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count();

    progress("files: building a testbed of 1 node with files = \"home\"...");
    let mut opts = TestbedOpts::new(1, roamd.to_path_buf());
    opts.home_files = true;
    let tb = Testbed::up(opts).context("cannot build the files testbed")?;
    check_interrupted()?;
    let sshd = match sshfs_missing {
        None => {
            progress("files: starting sshd on the home and mounting it with sshfs in n1...");
            let addr = tb
                .node_addr(HOME)
                .context("the testbed has no home address")?;
            Some(HomeSshd::start(addr, work).context("cannot start the sshfs peer's sshd")?)
        }
        Some(_) => None,
    };
    let mount = match &sshd {
        Some(d) => Some(SshfsMount::mount(&tb, NODE, MNT, d).context("cannot mount sshfs")?),
        None => None,
    };
    let mut notes = vec![format!(
        "files: testbed {} (1 node, files = \"home\"); operations run as a process on {NODE} \
         (roam run; sshfs: in {NODE}'s namespaces) or here, by a copy of roam-bench that times \
         itself; cold (reads) = the node side's cached pages of the file dropped before the clock \
         starts, the home's stay warm; python3 (its {py_files} files): cold = their pages dropped on \
         the home and on the node (sshfs: remounted) and every cached name and inode dropped \
         (drop_caches 2), cold on n1 only = the same with the home's pages warm, warm = the run \
         right after",
        tb.id()
    )];
    match (&sshd, sshfs_missing) {
        (Some(d), _) => notes.push(d.note(NODE, MNT)),
        (None, why) => notes.push(format!("sshfs peer {}", why.unwrap_or(""))),
    }

    let mut wheres = vec![Where::Here, Where::Roam];
    if mount.is_some() {
        wheres.push(Where::Sshfs);
    }
    for round in 0..s.reps {
        for w in &wheres {
            let d = dir.join(stat_dir(round, *w));
            fs::create_dir(&d).with_context(|| format!("cannot create {}", d.display()))?;
            for i in 0..s.count {
                fs::File::create(d.join(fsop::file_name(i)))?;
            }
        }
    }
    let mut env = Env {
        tb: &tb,
        roam: roam.to_path_buf(),
        helper,
        mount,
        log,
        s,
        data: data.to_string(),
        dir,
        files_mount: files_mount(&tb, NODE),
    };

    let mut samples: BTreeMap<(&'static str, Where), Vec<Option<Duration>>> = BTreeMap::new();
    let mut py: BTreeMap<(Where, Start), Vec<Option<Duration>>> = BTreeMap::new();
    let mut turn = 0;
    let started = std::time::Instant::now();
    for round in 0..s.reps {
        progress(&format!(
            "files: round {} of {}: {} MiB read and write, {} random reads, {} stats, creates and unlinks, {} python3 start-ups, each {}...",
            round + 1,
            s.reps,
            s.size >> 20,
            s.random_reads,
            s.count,
            s.py_runs,
            wheres.iter().map(|w| w.tag()).collect::<Vec<_>>().join(", ")
        ));
        for op in Op::ALL {
            for j in 0..wheres.len() {
                check_interrupted()?;
                let w = wheres[(turn + j) % wheres.len()];
                let took = env.run_op(op, w, round)?;
                if took.is_none() {
                    progress(&format!("{op:?} as {w:?} stalled: killed at its limit"));
                }
                for (i, phase) in op.phases().iter().enumerate() {
                    let t = took.as_ref().map(|t| Duration::from_secs_f64(t[i]));
                    samples.entry((phase, w)).or_default().push(t);
                }
            }
            turn += 1;
        }
        for _ in 0..s.py_runs {
            for j in 0..wheres.len() {
                check_interrupted()?;
                let w = wheres[(turn + j) % wheres.len()];
                for (start, t) in env.python(w, &py_list)? {
                    py.entry((w, start)).or_default().push(t);
                }
            }
            turn += 1;
        }
    }

    let (reference, ratio) = match wheres.iter().position(|w| *w == Where::Sshfs) {
        Some(i) => (i, "rate/sshfs's"),
        None => (0, "rate/here's"),
    };
    let mib = s.size >> 20;
    let section = |title: String, phase: &'static str, unit: &'static str, amount: f64| {
        let rows = wheres
            .iter()
            .map(|w| {
                let t = samples.get(&(phase, *w)).map_or(&[][..], Vec::as_slice);
                Row::per_second(w.label(), unit, amount, t)
            })
            .collect();
        Section::with_ratios(title, ratio, reference, rows)
    };
    let mb = s.size as f64 / 1e6;
    let n = s.count as f64;
    let mut sections = vec![
        section(
            format!("files: sequential read of a {mib} MiB file, 1 MiB reads, node cache dropped first"),
            "seqread",
            "MB/s",
            mb,
        ),
        section(
            format!("files: sequential write of {mib} MiB, 1 MiB writes, then fsync"),
            "seqwrite",
            "MB/s",
            mb,
        ),
        section(
            format!(
                "files: {} random 4 KiB reads of the {mib} MiB file, readahead off, node cache dropped first",
                s.random_reads
            ),
            "randread",
            "reads/s",
            s.random_reads as f64,
        ),
        section(
            format!("files: lstat of {} files, a directory its reader never saw", s.count),
            "stat",
            "stats/s",
            n,
        ),
        section(
            format!("files: create (open O_CREAT|O_EXCL, close) of {} files in a new directory", s.count),
            "create",
            "creates/s",
            n,
        ),
        section(format!("files: unlink of those {} files", s.count), "unlink", "unlinks/s", n),
    ];
    let mut py_rows = Vec::new();
    for w in &wheres {
        for start in [Start::Warm, Start::Cold, Start::NodeCold] {
            let label = match (w, start) {
                (Where::Here, Start::NodeCold) => continue,
                (Where::Here, Start::Warm) => "python3 -c pass, here, warm",
                (Where::Here, Start::Cold) => "python3 -c pass, here, cold",
                (Where::Roam, Start::Warm) => "roam run on n1 python3 -c pass, warm",
                (Where::Roam, Start::Cold) => "roam run on n1 python3 -c pass, cold",
                (Where::Roam, Start::NodeCold) => "roam run on n1 python3, cold on n1 only",
                (Where::Sshfs, Start::Warm) => "chroot to sshfs on n1, python3, warm",
                (Where::Sshfs, Start::Cold) => "chroot to sshfs on n1, python3, cold",
                (Where::Sshfs, Start::NodeCold) => {
                    "chroot to sshfs on n1, python3, cold on n1 only"
                }
            };
            let t = py.get(&(*w, start)).map_or(&[][..], Vec::as_slice);
            py_rows.push(Row::time(label.to_string(), t));
        }
    }
    sections.push(Section::with_ratios(
        "files: start-up of a dynamic program, python3 -c pass (spawn to reaped), from the home's tree",
        "time/here warm",
        0,
        py_rows,
    ));

    let mut checks = Vec::new();
    let read = &sections[0].rows;
    checks.push(Check::at_least(
        "files: roam sequential read, median",
        read[1].median,
        "MB/s",
        500.0,
    ));
    let what = "files: roam / sshfs sequential read (medians)";
    checks.push(match read.get(2) {
        Some(sshfs) => Check::at_least(what, read[1].median / sshfs.median, "x", 3.0),
        None => Check::not_measured(what, ">= 3 x".into(), sshfs_missing.unwrap_or("")),
    });
    // Rows: here warm, here cold, roam warm, roam cold, roam cold on n1.
    let start = &sections[6].rows;
    for (what, roam, here) in [
        ("warm / here warm", 2, 0),
        ("cold / here cold", 3, 1),
        ("cold on n1 only / here warm", 4, 0),
    ] {
        checks.push(Check::below(
            &format!("files: python3 start-up through roam, {what}"),
            start[roam].median / start[here].median,
            "x",
            3.0,
        ));
    }

    progress(&format!(
        "files: measured in {:.0} s; tearing down...",
        started.elapsed().as_secs_f64()
    ));
    drop(env);
    drop(sshd);
    tb.down().context("cannot tear the files testbed down")?;
    Ok(Outcome {
        sections,
        checks,
        notes,
    })
}
