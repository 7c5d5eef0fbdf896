//! roam-bench: measures roam against its peers, side by side, on a testbed.
//!
//! Builds a testbed (home + N nodes in network namespaces, see
//! roam-testbed), starts a private sshd in node n1, then takes interleaved
//! measurements of: remote create+exit of `/bin/true` (roam, local spawn,
//! ssh over a reused ControlMaster connection, fresh ssh); throughput of
//! stdout and stdin through the proxy (against a local pipe and ssh); the
//! cost of a forwarded identity call (getpid); an idle node daemon's
//! memory and wakeups; and, on a testbed of its own whose node sees the
//! home's files, the remote file system against the same operations here
//! and through sshfs (files.rs). Prints medians, p90 and ratios with
//! PASS/MISS against the targets of issues 2 to 4, and tears everything
//! down, on error and on Ctrl-C too.
//!
//! Needs root (namespaces), and `roam` and `roamd` next to this executable:
//! `cargo build --release && sudo target/release/roam-bench`.

mod children;
mod files;
mod fsop;
mod identity;
mod measure;
mod report;
mod ssh;
mod sshfs;
mod stats;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::thread::sleep;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use nix::sys::signal::{SigSet, Signal};
use roam_elf::Arch;
use roam_testbed::{foreign, Testbed, TestbedOpts};

use files::FileSettings;
use measure::{time_pipeline, time_run, watch_idle, ErrLog, Expect, Idle};
use report::{Check, Machine, Report, Row, Section};
use ssh::{Conn, Sshd};

/// The node everything runs on.
const NODE: &str = "n1";
/// A create+exit run taking longer than this is killed (and reported).
const SPAWN_LIMIT: Duration = Duration::from_secs(30);

/// A throughput run of `size` bytes is killed (and reported as stalled)
/// after 20 s plus the time it takes at 25 MB/s.
fn throughput_limit(size: u64) -> Duration {
    Duration::from_secs(20) + Duration::from_secs_f64(size as f64 / 25e6)
}

#[derive(Parser, Debug)]
#[command(about = "Measure roam against local spawn and ssh, side by side, on a local testbed")]
struct Args {
    /// Compute nodes in the testbed (everything runs on n1).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=200))]
    nodes: u32,
    /// Rounds of roam / local / ControlMaster create+exit [default: 50; 10 with --quick].
    #[arg(long)]
    reps: Option<usize>,
    /// Fresh ssh connections, spread over the rounds [default: 15; 3 with --quick].
    #[arg(long)]
    ssh_reps: Option<usize>,
    /// Rounds of the throughput runs [default: 5; 2 with --quick].
    #[arg(long)]
    tp_reps: Option<usize>,
    /// Bytes moved by each throughput run, in MiB [default: 1024; 64 with --quick].
    #[arg(long)]
    size_mib: Option<u64>,
    /// Length of each idle watch, in seconds [default: 10; 3 with --quick].
    #[arg(long)]
    idle_secs: Option<u64>,
    /// A short smoke run: fewer repetitions, a smaller file.
    #[arg(long)]
    quick: bool,
    /// Leave ssh (and sshfs) out.
    #[arg(long)]
    no_ssh: bool,
    /// Leave the remote file system's section out.
    #[arg(long)]
    no_files: bool,
    /// Rounds of the file-system operations [default: 3; 1 with --quick].
    #[arg(long)]
    files_reps: Option<usize>,
    /// Files in each stat and create/unlink run [default: 5000; 1000 with --quick].
    #[arg(long)]
    files_count: Option<usize>,
    /// Random 4 KiB reads per run [default: 20000; 2000 with --quick].
    #[arg(long)]
    random_reads: Option<u64>,
    /// python3 start-ups per round and variant, each cold then warm [default: 3; 2 with --quick].
    #[arg(long)]
    py_runs: Option<usize>,
    /// Also write the results, with every sample, as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// The settings of a run, defaults filled in.
#[derive(Debug, serde::Serialize)]
struct Settings {
    nodes: u32,
    reps: usize,
    ssh_reps: usize,
    tp_reps: usize,
    size: u64,
    idle_secs: u64,
    /// `None` with --no-files.
    files: Option<FileSettings>,
}

impl Settings {
    fn from(a: &Args) -> Settings {
        let q = a.quick;
        let pick = |v: Option<usize>, full, quick| v.unwrap_or(if q { quick } else { full }).max(1);
        let size = a.size_mib.unwrap_or(if q { 64 } else { 1024 }).max(1) << 20;
        Settings {
            nodes: a.nodes,
            reps: pick(a.reps, 50, 10),
            ssh_reps: pick(a.ssh_reps, 15, 3),
            tp_reps: pick(a.tp_reps, 5, 2),
            size,
            idle_secs: a.idle_secs.unwrap_or(if q { 3 } else { 10 }).max(1),
            files: (!a.no_files).then(|| FileSettings {
                reps: pick(a.files_reps, 3, 1),
                size,
                random_reads: a
                    .random_reads
                    .unwrap_or(if q { 2000 } else { 20_000 })
                    .max(1),
                count: pick(a.files_count, 5000, 1000),
                py_runs: pick(a.py_runs, 3, 2),
            }),
        }
    }
}

/// Fails once SIGINT, SIGTERM or SIGHUP has arrived, so that the guards
/// of the caller's frames clean up as the error goes up.
fn check_interrupted() -> anyhow::Result<()> {
    if children::stopping() {
        bail!("interrupted");
    }
    Ok(())
}

/// Blocks the termination signals in this (still the only) thread, which
/// every later thread inherits, and waits for them in a thread of their
/// own. Children get a clean mask from std's spawn.
fn catch_signals() -> anyhow::Result<()> {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block()?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            while let Ok(sig) = set.wait() {
                if !children::stopping() {
                    eprintln!("\nroam-bench: {sig}: cleaning up");
                }
                children::stop();
            }
        })?;
    Ok(())
}

/// A scratch directory the nodes can see (not /tmp: theirs is private),
/// removed when dropped.
struct WorkDir(PathBuf);

impl WorkDir {
    fn create() -> anyhow::Result<WorkDir> {
        let path = PathBuf::from(format!("/var/tmp/roam-bench.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(WorkDir(path))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn progress(msg: &str) {
    eprintln!("roam-bench: {msg}");
    let _ = std::io::stderr().flush();
}

/// The statically linked proxy `cargo static-roam` builds, beside this
/// executable's `target/release`: `target/static/release/roam`. Err says
/// why it is not used. (Cargo rebuilds it when its sources change only
/// when asked: the benchmark's command runs `cargo static-roam` first.)
fn static_roam(dynamic: &Path) -> Result<PathBuf, String> {
    let release = dynamic.parent().ok_or("no directory")?;
    let path = release
        .parent()
        .ok_or("no target directory")?
        .join("static/release/roam");
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found (build it with `cargo static-roam`)",
            path.display()
        ))
    }
}

/// `roam` and `roamd` from the directory of this executable.
fn binaries() -> anyhow::Result<(PathBuf, PathBuf)> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let dir = exe.parent().context("this executable has no directory")?;
    let (roam, roamd) = (dir.join("roam"), dir.join("roamd"));
    for p in [&roam, &roamd] {
        if !p.is_file() {
            bail!(
                "{} not found: build everything first (cargo build --release)",
                p.display()
            );
        }
    }
    Ok((roam, roamd))
}

/// Writes `size` bytes of a non-repeating-looking pattern to `path`.
fn make_file(path: &Path, size: u64) -> anyhow::Result<()> {
    let mut block = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in block.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

/// What the measurements share.
struct Ctx {
    /// The proxy measured: the static one if there is one.
    roam: PathBuf,
    /// With a static proxy, the dynamic one, measured beside it.
    dynamic_roam: Option<PathBuf>,
    socket: PathBuf,
    log: ErrLog,
}

impl Ctx {
    /// `roam run --node n1 ARGS...`.
    fn roam_run(&self, args: &[&str]) -> Command {
        self.roam_run_with(&self.roam, args)
    }

    fn roam_run_with(&self, roam: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(roam);
        c.env("ROAM_SOCKET", &self.socket)
            .args(["run", "--node", NODE])
            .args(args);
        c
    }
}

fn cmd(prog: &str, args: &[&str]) -> Command {
    let mut c = Command::new(prog);
    c.args(args);
    c
}

/// The create+exit rows of ssh, found by their labels.
const SSH_MASTER: &str = "ssh, reused ControlMaster connection";
const SSH_FRESH: &str = "ssh, fresh connection";

/// Remote create+exit, interleaved round by round, in a rotating order.
fn create_exit(ctx: &mut Ctx, sshd: Option<&Sshd>, s: &Settings) -> anyhow::Result<Section> {
    let linked = if ctx.dynamic_roam.is_some() {
        " (static roam)"
    } else {
        ""
    };
    let mut variants: Vec<(String, Command, usize)> = vec![
        (
            format!("roam run --node {NODE} /bin/true{linked}"),
            ctx.roam_run(&["/bin/true"]),
            s.reps,
        ),
        (
            "local fork+exec+exit /bin/true".into(),
            cmd("/bin/true", &[]),
            s.reps,
        ),
    ];
    if let Some(d) = sshd {
        variants.push((
            SSH_MASTER.into(),
            d.command(Conn::Master, &["/bin/true"]),
            s.reps,
        ));
        variants.push((
            SSH_FRESH.into(),
            d.command(Conn::Fresh, &["/bin/true"]),
            s.ssh_reps.min(s.reps),
        ));
    }
    if let Some(dynamic) = &ctx.dynamic_roam {
        variants.push((
            format!("roam run --node {NODE} /bin/true (dynamic roam)"),
            ctx.roam_run_with(dynamic, &["/bin/true"]),
            s.reps,
        ));
    }
    progress(&format!(
        "create+exit: {} rounds ({} fresh ssh)...",
        s.reps,
        s.ssh_reps.min(s.reps)
    ));
    // Warm-up: caches, the ControlMaster connection.
    for (_, c, _) in &mut variants {
        time_run(c, SPAWN_LIMIT, &mut ctx.log)?;
    }
    let mut samples: Vec<Vec<Option<Duration>>> = vec![Vec::new(); variants.len()];
    for round in 0..s.reps {
        check_interrupted()?;
        let k = variants.len();
        for j in 0..k {
            let i = (round + j) % k;
            let (_, c, want) = &mut variants[i];
            // Spread the rarer runs evenly over the rounds.
            if samples[i].len() < *want && samples[i].len() * s.reps <= round * *want {
                samples[i].push(time_run(c, SPAWN_LIMIT, &mut ctx.log)?);
            }
        }
    }
    let rows = variants
        .iter()
        .zip(&samples)
        .map(|((label, _, _), t)| Row::time(label.clone(), t))
        .collect();
    Ok(Section::with_ratios(
        "remote create+exit of /bin/true, from spawn to reaped",
        "time/roam's",
        0,
        rows,
    ))
}

/// The foreign architecture of the foreign create+exit runs.
const FOREIGN: Arch = Arch::Aarch64;

/// Remote create+exit of a foreign static binary through roam (on a node
/// running it with qemu-user) against the same binary under qemu-user
/// here, interleaved: the overhead roam adds to the emulator's start-up.
fn foreign_create_exit(ctx: &mut Ctx, binary: &Path, s: &Settings) -> anyhow::Result<Section> {
    let arch = FOREIGN.to_string();
    let qemu = FOREIGN
        .qemu_static_binary()
        .context("no qemu binary for the foreign architecture")?;
    let bin = binary.to_str().context("a non-UTF-8 path")?;
    let mut variants: Vec<(String, Command)> = vec![
        (
            format!("roam run --node {NODE} {arch}/true"),
            ctx.roam_run(&[bin]),
        ),
        (format!("{qemu} {arch}/true, here"), cmd(&qemu, &[bin])),
    ];
    progress(&format!("foreign create+exit: {} rounds...", s.reps));
    for (_, c) in &mut variants {
        time_run(c, SPAWN_LIMIT, &mut ctx.log)?;
    }
    let mut samples: Vec<Vec<Option<Duration>>> = vec![Vec::new(); variants.len()];
    for round in 0..s.reps {
        check_interrupted()?;
        for j in 0..variants.len() {
            let i = (round + j) % variants.len();
            samples[i].push(time_run(&mut variants[i].1, SPAWN_LIMIT, &mut ctx.log)?);
        }
    }
    let rows = variants
        .iter()
        .zip(&samples)
        .map(|((label, _), t)| Row::time(label.clone(), t))
        .collect();
    Ok(Section::with_ratios(
        format!("remote create+exit of a static {arch} program, against qemu-user here"),
        "time/qemu's",
        1,
        rows,
    ))
}

/// Throughput runs, interleaved round by round, one section per group; in
/// each group the local pipeline is the reference.
fn throughput(
    ctx: &mut Ctx,
    sshd: Option<&Sshd>,
    s: &Settings,
    file: &str,
) -> anyhow::Result<Vec<Section>> {
    let size = s.size;
    let n = size.to_string();
    let mib = size >> 20;
    let bytes = Expect::Bytes(size);
    let count = Expect::Count(size);
    struct Group {
        title: String,
        variants: Vec<(String, Vec<Command>, Expect)>,
    }
    let mut groups = vec![
        Group {
            title: format!("stdout: a {mib} MiB file read by cat, piped to a byte counter"),
            variants: vec![
                ("cat FILE |".into(), vec![cmd("cat", &[file])], bytes),
                (
                    "roam run cat FILE |".into(),
                    vec![ctx.roam_run(&["cat", file])],
                    bytes,
                ),
            ],
        },
        Group {
            title: format!(
                "stdout: {mib} MiB made by head -c {size} /dev/zero, piped to a byte counter"
            ),
            variants: vec![
                (
                    "head -c N /dev/zero |".into(),
                    vec![cmd("head", &["-c", &n, "/dev/zero"])],
                    bytes,
                ),
                (
                    "roam run head -c N /dev/zero |".into(),
                    vec![ctx.roam_run(&["head", "-c", &n, "/dev/zero"])],
                    bytes,
                ),
            ],
        },
        Group {
            title: format!("stdin: cat of a {mib} MiB file piped into wc -c"),
            variants: vec![
                (
                    "cat FILE | wc -c".into(),
                    vec![cmd("cat", &[file]), cmd("wc", &["-c"])],
                    count,
                ),
                (
                    "cat FILE | roam run wc -c".into(),
                    vec![cmd("cat", &[file]), ctx.roam_run(&["wc", "-c"])],
                    count,
                ),
            ],
        },
    ];
    if let Some(d) = sshd {
        groups[0].variants.push((
            "ssh (ControlMaster) cat FILE |".into(),
            vec![d.command(Conn::Master, &["cat", file])],
            bytes,
        ));
        groups[2].variants.push((
            "cat FILE | ssh (ControlMaster) wc -c".into(),
            vec![cmd("cat", &[file]), d.command(Conn::Master, &["wc", "-c"])],
            count,
        ));
    }
    let all: usize = groups.iter().map(|g| g.variants.len()).sum();
    progress(&format!(
        "throughput: {} rounds of {all} runs of {mib} MiB...",
        s.tp_reps
    ));
    // Warm-up: the file into the page cache.
    let limit = throughput_limit(size);
    time_pipeline(&mut groups[0].variants[0].1, bytes, limit, &mut ctx.log)?;
    let mut samples: Vec<Vec<Vec<Option<Duration>>>> = groups
        .iter()
        .map(|g| vec![Vec::new(); g.variants.len()])
        .collect();
    for round in 0..s.tp_reps {
        let mut order: Vec<(usize, usize)> = groups
            .iter()
            .enumerate()
            .flat_map(|(g, grp)| (0..grp.variants.len()).map(move |v| (g, v)))
            .collect();
        let k = round % order.len();
        order.rotate_left(k);
        for (g, v) in order {
            check_interrupted()?;
            let (_, cmds, expect) = &mut groups[g].variants[v];
            let took = time_pipeline(cmds, *expect, limit, &mut ctx.log)?;
            if took.is_none() {
                progress(&format!(
                    "`{}` stalled: killed after {} s",
                    groups[g].variants[v].0,
                    limit.as_secs()
                ));
            }
            samples[g][v].push(took);
        }
    }
    Ok(groups
        .into_iter()
        .zip(samples)
        .map(|(g, t)| {
            let rows = g
                .variants
                .iter()
                .zip(&t)
                .map(|((label, _, _), t)| Row::rate(label.clone(), size, t))
                .collect();
            Section::with_ratios(g.title, "rate/local's", 0, rows)
        })
        .collect())
}

/// Watches the node's and the home's daemons while nothing runs.
fn idle(tb: &Testbed, s: &Settings, when: &str) -> anyhow::Result<(Idle, Idle)> {
    let pid = |name: &str| {
        tb.daemon_pid(name)
            .with_context(|| format!("the {name} daemon is not running"))
    };
    let (node, home) = (pid(NODE)?, pid("home")?);
    progress(&format!(
        "idle ({when}): settling 2 s, then watching roamd of {NODE} (pid {node}) and home (pid {home}) for {} s...",
        s.idle_secs
    ));
    sleep(Duration::from_secs(2));
    check_interrupted()?;
    let mut v = watch_idle(&[node, home], s.idle_secs, check_interrupted)?;
    let home = v.pop().expect("two watched");
    Ok((v.pop().expect("two watched"), home))
}

fn idle_rows(rows: &mut Vec<Row>, node: &Idle, home: &Idle, when: &str) {
    rows.push(Row::values(
        format!("{NODE} roamd VmRSS, {when}"),
        "MB",
        1e6,
        &node.rss,
    ));
    rows.push(Row::values(
        format!("{NODE} roamd wakeups per second, {when}"),
        "/s",
        1.0,
        &node.wakeups,
    ));
    rows.push(Row::values(
        format!("home roamd wakeups per second, {when}"),
        "/s",
        1.0,
        &home.wakeups,
    ));
}

fn thread_note(who: &str, idle: &Idle, secs: f64) -> String {
    let parts: Vec<String> = idle
        .by_thread
        .iter()
        .map(|(name, n)| format!("{name} {}/s", report::num(*n as f64 / secs)))
        .collect();
    format!(
        "{who}: {} threads; wakeups by thread: {}",
        idle.threads,
        parts.join(", ")
    )
}

fn run(args: Args) -> anyhow::Result<()> {
    let s = Settings::from(&args);
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "the testbed needs root: sudo {}",
            std::env::args().next().unwrap_or_default()
        );
    }
    let (dynamic_roam, roamd) = binaries()?;
    let (roam, dynamic_roam, static_note) = match static_roam(&dynamic_roam) {
        Ok(p) => (
            p.clone(),
            Some(dynamic_roam),
            format!("the proxy measured is the static one, {}", p.display()),
        ),
        Err(why) => (
            dynamic_roam,
            None,
            format!("the proxy measured is dynamically linked: {why}"),
        ),
    };
    progress(&static_note);
    let machine = Machine::probe();
    let ssh_missing = if args.no_ssh {
        Some("left out with --no-ssh".to_string())
    } else {
        ssh::unavailable()
    };

    // Dropped in reverse: sshd, then the testbed, then the files.
    let work = WorkDir::create()?;
    progress(&format!("building a testbed of {} nodes...", s.nodes));
    let foreign_true = foreign::build(&FOREIGN.to_string(), "true", foreign::Link::Static)
        .context("cannot build the foreign test program")?;
    let getpid_loop = foreign::build_native("getpid_loop", foreign::Link::Dynamic)
        .context("cannot build the identity test program")?;
    let mut opts = TestbedOpts::new(s.nodes, roamd.clone());
    // Every node also runs the foreign architecture, through qemu-user.
    opts.runners = vec![FOREIGN];
    let tb = Testbed::up(opts).context("cannot build the testbed")?;
    check_interrupted()?;
    let sshd = match &ssh_missing {
        None => {
            progress(&format!("starting sshd in {NODE}..."));
            Some(Sshd::start(&tb, NODE, &work.0).context("cannot start the ssh peer")?)
        }
        Some(_) => None,
    };
    check_interrupted()?;
    let file = work.0.join("data");
    progress(&format!(
        "writing {} MiB to {}...",
        s.size >> 20,
        file.display()
    ));
    make_file(&file, s.size)?;
    let file = file
        .to_str()
        .context("a non-UTF-8 work directory")?
        .to_owned();
    let mut ctx = Ctx {
        roam,
        dynamic_roam,
        socket: tb.socket(),
        log: ErrLog::create(&work.0.join("stderr.log"))?,
    };

    let measured = (|| {
        let fresh = idle(&tb, &s, "fresh")?;
        let create = create_exit(&mut ctx, sshd.as_ref(), &s)?;
        let foreign = foreign_create_exit(&mut ctx, &foreign_true, &s)?;
        let tput = throughput(&mut ctx, sshd.as_ref(), &s, &file)?;
        let ident = identity::forwarded_call(&mut ctx, &getpid_loop, s.tp_reps * 2)?;
        let after = idle(&tb, &s, "after the runs above")?;
        anyhow::Ok((fresh, create, foreign, tput, ident, after))
    })();
    let ((node0, home0), create, foreign, tput, ident, (node1, home1)) = measured.map_err(|e| {
        if children::stopping() {
            e.context("interrupted")
        } else if tb.dir().exists() {
            e
        } else {
            e.context(format!(
                "testbed {} was torn down from outside (`roam testbed down` without --id removes every testbed)",
                tb.id()
            ))
        }
    })?;

    let files_out = match &s.files {
        Some(fset) => {
            let missing = if args.no_ssh {
                Some("left out with --no-ssh".to_string())
            } else {
                sshfs::unavailable()
            };
            let out = files::measure(
                &ctx.roam,
                &roamd,
                &work.0,
                &file,
                fset,
                missing.as_deref(),
                &mut ctx.log,
            );
            Some(out.map_err(|e| {
                if children::stopping() {
                    e.context("interrupted")
                } else {
                    e
                }
            })?)
        }
        None => None,
    };

    let mut notes = vec![format!(
        "testbed {} with {} nodes; roam and ssh run on {NODE} ({}); \
         throughput FILE is {file}",
        tb.id(),
        s.nodes,
        tb.node_addr(NODE)
            .map(|a| a.to_string())
            .unwrap_or_default()
    )];
    notes.push(match (&sshd, &ssh_missing) {
        (Some(d), _) => d.shell_note.clone(),
        (None, Some(why)) => format!("ssh peer {why}"),
        (None, None) => unreachable!("sshd is started unless it is missing"),
    });
    notes.push(static_note);
    let secs = s.idle_secs as f64;
    notes.push(thread_note(&format!("{NODE} roamd, fresh"), &node0, secs));
    notes.push(thread_note(&format!("{NODE} roamd, after"), &node1, secs));

    let mut checks = Vec::new();
    let med = |label: &str| {
        create
            .rows
            .iter()
            .find(|r| r.label.starts_with(label))
            .map(|r| r.median)
    };
    let roam_ms = create.rows[0].median;
    checks.push(Check::below("roam create+exit, median", roam_ms, "ms", 2.0));
    let ssh_targets = [
        ("fresh ssh / roam create+exit (medians)", SSH_FRESH, 50.0),
        ("ControlMaster ssh / roam create+exit", SSH_MASTER, 4.0),
    ];
    for (what, label, limit) in ssh_targets {
        checks.push(match med(label) {
            Some(m) => Check::at_least(what, m / roam_ms, "x", limit),
            None => Check::not_measured(
                what,
                format!(">= {limit} x"),
                ssh_missing.as_deref().unwrap_or(""),
            ),
        });
    }
    let overhead = foreign.rows[0].median - foreign.rows[1].median;
    checks.push(Check::below(
        "foreign create+exit: roam's median minus qemu's",
        overhead,
        "ms",
        3.0,
    ));
    for (sec, what) in [(0, "roam run cat FILE"), (1, "roam run head /dev/zero")] {
        checks.push(Check::at_least(
            &format!("{what}, median rate"),
            tput[sec].rows[1].median,
            "MB/s",
            500.0,
        ));
    }
    checks.push(Check::below(
        "forwarded getpid, median",
        ident.rows[0].median,
        "us",
        50.0,
    ));
    let stalled = [&create, &foreign]
        .into_iter()
        .chain(&tput)
        .chain(files_out.iter().flat_map(|f| &f.sections))
        .flat_map(|s| &s.rows)
        .filter(|r| r.label.contains("roam run"))
        .map(|r| r.stalled)
        .sum();
    checks.push(Check::none_stalled(
        "roam runs that stalled (killed at the limit)",
        stalled,
    ));
    for (idle, when) in [(&node0, "fresh"), (&node1, "after")] {
        let rss = idle.rss.iter().copied().fold(0.0, f64::max) / 1e6;
        checks.push(Check::below(
            &format!("idle {NODE} roamd VmRSS, max, {when}"),
            rss,
            "MB",
            20.0,
        ));
        checks.push(Check::below(
            &format!("idle {NODE} roamd wakeups/s, {when}"),
            idle.rate,
            "/s",
            5.0,
        ));
    }

    if let Some(f) = &files_out {
        checks.extend(f.checks.iter().cloned());
        notes.extend(f.notes.iter().cloned());
    }
    let mut idle_section = Vec::new();
    idle_rows(&mut idle_section, &node0, &home0, "fresh");
    idle_rows(&mut idle_section, &node1, &home1, "after");
    let mut sections = vec![create, foreign];
    sections.extend(tput);
    sections.push(ident);
    sections.push(Section {
        title: format!("idle daemons, sampled every second for {} s", s.idle_secs),
        ratio: None,
        rows: idle_section,
    });
    if let Some(f) = files_out {
        sections.extend(f.sections);
    }
    let report = Report {
        date: report::today(),
        machine,
        settings: serde_json::to_value(&s)?,
        notes,
        sections,
        checks,
    };
    print!("\n{}", report.render());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        progress(&format!("results written to {}", path.display()));
    }
    progress("tearing down...");
    drop(sshd);
    tb.down().context("cannot tear the testbed down")?;
    drop(work);
    Ok(())
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(fsop::ARG) {
        return fsop::main(&argv[2..]);
    }
    let args = Args::parse();
    if let Err(e) = catch_signals().and_then(|()| Ok(children::watchdog()?)) {
        eprintln!("roam-bench: cannot catch signals: {e:#}");
        return ExitCode::FAILURE;
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roam-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
