//! roam-bench-ckpt: checkpoint and restore times of roam's engine, side
//! by side in one run with the floor the machine allows (reading the same
//! memory with process_vm_readv into a huge-page buffer) and with CRIU
//! when it runs here.
//!
//! Programs: tests/programs/ckpt/pipe_read.c, the minimal program (libc,
//! a pipe, a blocking read), and tests/programs/ckpt/heap.c (a heap of N
//! MiB written with a pattern, blocked in read(0)) at 100 MiB and 1 GiB. Images go to /dev/shm (tmpfs), as
//! in CRIU's published figures. The restore stubs are cloned from a
//! zygote made before the timing starts, as roamd's are. Needs root and
//! `cc`.
//! `cargo build --release && sudo target/release/roam-bench-ckpt`.

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Checkpoint/restore times of roam against the memory-copy floor and CRIU")]
struct Args {
    /// Repetitions per size (medians reported) [default: 15; 3 with --quick].
    #[arg(long)]
    reps: Option<usize>,
    /// Leave the 1 GiB heap out, and fewer repetitions.
    #[arg(long)]
    quick: bool,
}

/// Targets of issue 6.
const MINIMAL_TARGET_MS: f64 = 5.0;
const HEAP100_TARGET_MS: f64 = 100.0;

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roam-bench-ckpt: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn build(name: &str) -> anyhow::Result<PathBuf> {
    let out = std::env::temp_dir().join(format!("roam-bench-ckpt-{name}"));
    let st = Command::new("cc")
        .args(["-O2", "-pthread", "-o"])
        .arg(&out)
        .arg(repo_root().join(format!("tests/programs/ckpt/{name}.c")))
        .status()
        .context("run cc")?;
    if !st.success() {
        bail!("cc failed on {name}.c");
    }
    Ok(out)
}

/// The program (the heap one with `mib` MiB, the minimal one without an
/// argument), ready (blocked in read).
fn start(bin: &Path, mib: Option<u64>) -> anyhow::Result<Child> {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(bin);
    c.args(mib.map(|m| m.to_string()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: close_range in the child before exec: only its descriptors.
    unsafe {
        c.pre_exec(|| {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    let mut child = c.spawn()?;
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    out.read_line(&mut line)?;
    if line.trim() != "READY" {
        bail!("{}: said {line:?}", bin.display());
    }
    // Keep the pipe's read end alive with the child.
    std::mem::forget(out);
    Ok(child)
}

fn reap(mut c: Child) {
    let _ = c.kill();
    let _ = c.wait();
}

/// A copy of every writable private mapping out of the process, as fast
/// as the machine copies one: process_vm_readv into buffers backed by
/// huge pages and faulted in before the clock starts (so that what is
/// timed is the copy alone). The floor.
fn floor_read(pid: i32) -> anyhow::Result<(Duration, u64)> {
    let maps = roam_sys::procfs::maps(pid)?;
    let maps: Vec<_> = maps.iter().filter(|v| v.write && !v.shared).collect();
    let mut bufs: Vec<Vec<u8>> = maps
        .iter()
        .map(|v| {
            let len = (v.end - v.start) as usize;
            let mut buf = Vec::with_capacity(len);
            roam_sys::mem::huge_pages_for(&mut buf);
            buf.resize(len, 0);
            buf.clear();
            buf
        })
        .collect();
    let t = Instant::now();
    let mut total = 0u64;
    for (v, buf) in maps.iter().zip(&mut bufs) {
        let len = (v.end - v.start) as usize;
        if roam_sys::ptrace::read_memory_append(pid, buf, len, v.start).is_ok() {
            total += len as u64;
        }
    }
    Ok((t.elapsed(), total))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct Sample {
    dump: f64,
    frozen: f64,
    restore: f64,
    floor: f64,
    stored: u64,
}

/// One checkpoint (killing it) and restore of a fresh heap program.
fn roam_once(
    bin: &Path,
    mib: Option<u64>,
    dir: &Path,
    stubs: &mut Option<roam_ckpt::stubs::StubFactory>,
) -> anyhow::Result<Sample> {
    let child = start(bin, mib)?;
    let pid = child.id() as i32;
    let (floor, _) = floor_read(pid)?;
    let _ = std::fs::remove_dir_all(dir);
    let r = roam_ckpt::local::checkpoint(pid, dir, false, |_, _| {})?;
    reap(child);
    let null = std::fs::File::open("/dev/null")?;
    let fd = null.as_raw_fd();
    let t = Instant::now();
    let img = roam_ckpt::restore::Image::load(&dir.join(roam_ckpt::local::IMAGE_FILE))?;
    let opts = roam_ckpt::restore::RestoreOpts {
        same_pid: false,
        ..roam_ckpt::restore::RestoreOpts::plain([fd, fd, fd])
    };
    let restored = roam_ckpt::restore::restore_with(&img, &opts, stubs)?;
    let restore = t.elapsed();
    roam_sys::signal::kill(restored.pid, libc::SIGKILL)?;
    roam_sys::spawn::wait_pid(restored.pid as u32, false)?;
    Ok(Sample {
        dump: r.total.as_secs_f64() * 1e3,
        frozen: r.frozen.as_secs_f64() * 1e3,
        restore: restore.as_secs_f64() * 1e3,
        floor: floor.as_secs_f64() * 1e3,
        stored: r.stored,
    })
}

/// The frozen time of a `--leave-running` checkpoint of a running heap.
fn leave_running_frozen(bin: &Path, mib: Option<u64>, dir: &Path) -> anyhow::Result<f64> {
    let child = start(bin, mib)?;
    let _ = std::fs::remove_dir_all(dir);
    let r = roam_ckpt::local::checkpoint(child.id() as i32, dir, true, |_, _| {})?;
    reap(child);
    Ok(r.frozen.as_secs_f64() * 1e3)
}

/// The CRIU to measure: `$ROAM_BENCH_CRIU`, else the one
/// `scripts/criu-trixie.sh` puts in /opt/criu-trixie (Debian trixie's 4.x:
/// bookworm's 3.17 fails on this kernel's vDSO), else `criu` on the PATH.
fn criu_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ROAM_BENCH_CRIU") {
        return PathBuf::from(p);
    }
    let local = Path::new("/opt/criu-trixie/criu");
    if local.exists() {
        return local.to_path_buf();
    }
    PathBuf::from("criu")
}

/// Whether CRIU runs here (`criu check`), and its version line.
fn criu_check() -> Result<String, String> {
    let criu = criu_bin();
    let check = Command::new(&criu)
        .arg("check")
        .output()
        .map_err(|e| format!("{}: {e}", criu.display()))?;
    if !check.status.success() {
        let err = String::from_utf8_lossy(&check.stderr);
        let last = err
            .lines()
            .find(|l| l.contains("Error"))
            .unwrap_or("failed");
        return Err(format!("`criu check` fails here: {last}"));
    }
    let v = Command::new(&criu)
        .arg("--version")
        .output()
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&v.stdout)
        .lines()
        .next()
        .unwrap_or("?")
        .trim()
        .to_string())
}

/// One CRIU dump (its own frozen time, from `--display-stats`) and
/// restore of the same program, images on tmpfs: (dump, frozen, restore)
/// in ms.
fn criu_once(bin: &Path, mib: Option<u64>, dir: &Path) -> Result<(f64, f64, f64), String> {
    let criu = criu_bin();
    let child = start(bin, mib).map_err(|e| e.to_string())?;
    let pid = child.id();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let d = Command::new(&criu)
        .args([
            "dump",
            "--shell-job",
            "--display-stats",
            "-t",
            &pid.to_string(),
            "-D",
        ])
        .arg(dir)
        .output()
        .map_err(|e| e.to_string())?;
    let dump = t.elapsed().as_secs_f64() * 1e3;
    reap(child);
    if !d.status.success() {
        return Err(format!("criu dump: {}", String::from_utf8_lossy(&d.stderr)));
    }
    let stats =
        String::from_utf8_lossy(&d.stdout).into_owned() + &String::from_utf8_lossy(&d.stderr);
    let frozen = stats
        .lines()
        .find_map(|l| l.strip_prefix("Frozen time: "))
        .and_then(|v| v.trim_end_matches(" us").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |us| us / 1e3);
    let t = Instant::now();
    let r = Command::new(&criu)
        .args(["restore", "--shell-job", "-d", "-D"])
        .arg(dir)
        .output()
        .map_err(|e| e.to_string())?;
    let restore = t.elapsed().as_secs_f64() * 1e3;
    // The restored process (the same pid, detached) goes; its pid is
    // free again before the next run.
    let _ = roam_sys::signal::kill(pid as i32, libc::SIGKILL);
    let gone = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() && gone.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    if !r.status.success() {
        return Err(format!(
            "criu restore: {}",
            String::from_utf8_lossy(&r.stderr)
        ));
    }
    Ok((dump, frozen, restore))
}

fn run(args: Args) -> anyhow::Result<()> {
    if !roam_sys::cred::is_root() {
        bail!("needs root (ptrace of any process, PR_SET_MM_MAP)");
    }
    let heap = build("heap")?;
    // The minimal program: a pipe and a blocking read, nothing else.
    let minimal = build("pipe_read")?;
    let reps = args.reps.unwrap_or(if args.quick { 3 } else { 15 });
    let dir = PathBuf::from("/dev/shm/roam-bench-ckpt");
    let mut sizes = vec![(0u64, reps), (100, reps.clamp(3, 7))];
    if !args.quick {
        sizes.push((1024, 3));
    }
    let program = |mib: u64| {
        if mib == 0 {
            (&minimal, None)
        } else {
            (&heap, Some(mib))
        }
    };
    let criu = criu_check();
    println!("roam checkpoint/restore, images on tmpfs; medians; floor = one copy of the same memory out of the process");
    println!(
        "{:>8} {:>5} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12} {:>14}",
        "heap",
        "runs",
        "stored",
        "dump ms",
        "frozen ms",
        "restore ms",
        "floor ms",
        "total/floor",
        "frozen (live)"
    );
    let mut checks = Vec::new();
    // Restore stubs come from a zygote made ahead, as roamd's do (it makes
    // one when the home's files are served): see roam_ckpt::stubs.
    let mut stubs = Some(roam_ckpt::stubs::StubFactory::new(None)?);
    for (mib, n) in sizes {
        let mut s = Vec::new();
        let (bin, arg) = program(mib);
        for _ in 0..n {
            s.push(roam_once(bin, arg, &dir, &mut stubs)?);
        }
        let mut live = Vec::new();
        for _ in 0..n.min(3) {
            live.push(leave_running_frozen(bin, arg, &dir)?);
        }
        let col = |f: fn(&Sample) -> f64| median(&mut s.iter().map(f).collect::<Vec<_>>());
        let (dump, frozen, restore, floor) = (
            col(|x| x.dump),
            col(|x| x.frozen),
            col(|x| x.restore),
            col(|x| x.floor),
        );
        let stored = s[0].stored;
        let live = median(&mut live);
        println!(
            "{:>8} {:>5} {:>8.1}Mi {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>11.1}x {:>12.2}ms",
            if mib == 0 {
                "minimal".to_string()
            } else {
                format!("{mib}Mi")
            },
            n,
            stored as f64 / 1048576.0,
            dump,
            frozen,
            restore,
            floor,
            (dump + restore) / floor.max(1e-3),
            live
        );
        let total = dump + restore;
        match mib {
            0 => checks.push((
                "minimal program checkpoint+restore",
                total,
                MINIMAL_TARGET_MS,
            )),
            100 => checks.push((
                "100 MiB checkpoint+restore (tmpfs)",
                total,
                HEAP100_TARGET_MS,
            )),
            _ => {}
        }
        // Stopped for less than a copy of all its memory takes (what it
        // wrote meanwhile being less than all of it).
        match mib {
            100 => checks.push((
                "100 MiB --leave-running frozen, against the floor",
                live,
                floor,
            )),
            1024 => checks.push((
                "1 GiB --leave-running frozen, against the floor",
                live,
                floor,
            )),
            _ => {}
        }
        match &criu {
            Ok(version) => {
                let mut runs = Vec::new();
                for _ in 0..n {
                    match criu_once(bin, arg, &dir.with_extension("criu")) {
                        Ok(r) => runs.push(r),
                        Err(why) => {
                            println!("  CRIU failed: {why}");
                            break;
                        }
                    }
                }
                if !runs.is_empty() {
                    let (d, f, r) = (
                        median(&mut runs.iter().map(|x| x.0).collect::<Vec<_>>()),
                        median(&mut runs.iter().map(|x| x.1).collect::<Vec<_>>()),
                        median(&mut runs.iter().map(|x| x.2).collect::<Vec<_>>()),
                    );
                    println!(
                        "{:>8} CRIU ({version}): dump {d:.1} ms (frozen {f:.1}) + restore {r:.1} ms = {:.1} ms; roam is {:.2}x faster, frozen {:.2}x shorter",
                        "",
                        d + r,
                        (d + r) / total,
                        f / frozen
                    );
                }
            }
            Err(why) if mib == 0 => println!("  CRIU not measured: {why}"),
            Err(_) => {}
        }
    }
    println!("CRIU 4.1's published figures on this kind of machine (issue 6): minimal 36 + 31 ms; 100 MB 86 + 85 ms");
    for (what, got, limit) in checks {
        let verdict = if got < limit { "PASS" } else { "MISS" };
        println!("{verdict}: {what}: {got:.2} ms (target < {limit:.2} ms)");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
