//! End-to-end tests of `roam checkpoint` and `roam restore` on this
//! machine (as root, as CI runs): unmodified C programs that each hold one
//! kind of state and check it after the restore (tests/programs/ckpt/),
//! and real programs from Debian checkpointed mid-run whose output must be
//! the same as an uninterrupted run's.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

/// A command whose process keeps no descriptor beyond stdio (the test
/// runner's environment may leak some, which a checkpoint would refuse).
fn clean(program: impl AsRef<std::ffi::OsStr>) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(program);
    // SAFETY: close_range is async-signal-safe and touches only the
    // child's descriptors.
    unsafe {
        c.pre_exec(|| {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    c
}

fn roam() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_roam"))
}

fn tmp(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("ckpt-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Builds tests/programs/ckpt/NAME.c (dynamic or static) once per run.
fn build(name: &str, static_: bool) -> PathBuf {
    build_from("ckpt", name, static_)
}

/// Builds tests/programs/DIR/NAME.c.
fn build_from(dir: &str, name: &str, static_: bool) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/programs")
        .join(dir)
        .join(format!("{name}.c"));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ckpt-progs");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!("{name}{}", if static_ { "-static" } else { "" }));
    let tmp = dir.join(format!(".{name}-{}-{static_}", std::process::id()));
    let mut cc = Command::new("cc");
    cc.args(["-O1", "-Wall", "-Wextra", "-pthread"]);
    if static_ {
        cc.arg("-static");
    }
    let st = cc.arg("-o").arg(&tmp).arg(&src).status().expect("cc");
    assert!(st.success(), "cc {}", src.display());
    std::fs::rename(&tmp, &out).unwrap();
    out
}

/// Reads stdout until a line equal to `want`.
fn wait_line(out: &mut BufReader<ChildStdout>, want: &str) {
    let mut line = String::new();
    loop {
        line.clear();
        let n = out.read_line(&mut line).unwrap();
        assert!(n > 0, "the program ended before saying {want}");
        if line.trim_end() == want {
            return;
        }
    }
}

fn checkpoint(pid: u32, dir: &Path, leave_running: bool) {
    let mut c = Command::new(roam());
    c.arg("checkpoint").arg(pid.to_string()).arg("-o").arg(dir);
    if leave_running {
        c.arg("--leave-running");
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "roam checkpoint: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn restore(dir: &Path) -> Child {
    Command::new(roam())
        .arg("restore")
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs a state-checking program through a checkpoint (after `before`
/// leave-running checkpoints) and a restore; its verdict must be PASS.
fn state_program(name: &str, static_: bool, args: &[&str], before: usize) {
    let bin = build(name, static_);
    let work = tmp(&format!("{name}-{static_}"));
    let mut child = clean(&bin)
        .args(args)
        .current_dir(&work)
        .env("TMPDIR", &work)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    wait_line(&mut out, "READY");
    let image = work.join("image");
    for _ in 0..before {
        checkpoint(child.id(), &image, true);
    }
    checkpoint(child.id(), &image, false);
    let st = child.wait().unwrap();
    assert_eq!(st.signal(), Some(libc::SIGKILL), "the checkpoint ends it");
    let mut r = restore(&image);
    r.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut text = String::new();
    r.stdout.take().unwrap().read_to_string(&mut text).unwrap();
    let mut err = String::new();
    r.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let st = r.wait().unwrap();
    assert!(
        text.contains("PASS") && st.success(),
        "{name} (static: {static_}): {st:?}\nstdout: {text}\nstderr: {err}"
    );
    let _ = std::fs::remove_dir_all(&work);
}

macro_rules! state_tests {
    ($($name:ident: $prog:literal $args:expr, $before:literal;)*) => {
        mod dynamic {
            $(#[test] fn $name() { super::state_program($prog, false, $args, $before); })*
        }
        mod statically_linked {
            $(#[test] fn $name() { super::state_program($prog, true, $args, $before); })*
        }
    };
}

state_tests! {
    registers: "regs" &[], 0;
    heap_100_mib_checkpointed_many_times: "heap" &["100"], 3;
    mappings: "maps" &[], 0;
    files: "files" &[], 0;
    signals: "signals" &[], 0;
    timers: "timers" &[], 0;
    threads: "threads" &[], 0;
    sleep_in_progress: "sleep" &[], 0;
    nanosleep_in_progress: "nanosleep" &[], 0;
    pipe_read: "pipe_read" &[], 0;
}

/// A process writing its memory as fast as it can is checkpointed while it
/// runs (`--leave-running`: a pre-copy round, then a short stop for what it
/// wrote meanwhile), twice, and the second image restored: every page is
/// as it was at that stop (writer.c checks each page's round against its
/// own count), and the original ran on meanwhile.
#[test]
fn a_process_writing_its_memory_is_checkpointed_live_and_restored_whole() {
    let bin = build_from("migrate", "writer", false);
    let work = tmp("live-writer");
    // 64 MiB written at 200 MiB/s: pages change while the round reads.
    let mut child = clean(&bin)
        .args(["64", "200", "100"])
        .current_dir(&work)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    wait_line(&mut out, "READY");
    std::thread::sleep(Duration::from_millis(300));
    let image = work.join("image");
    checkpoint(child.id(), &image, true);
    std::thread::sleep(Duration::from_millis(300));
    checkpoint(child.id(), &image, true);
    // It ran on: it still counts, then passes its own check.
    wait_line(&mut out, "12");
    child.stdin.take().unwrap().write_all(b"check\n").unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(child.wait().unwrap().success(), "the original: {rest}");
    let mut r = restore(&image);
    let mut text = String::new();
    let mut rout = BufReader::new(r.stdout.take().unwrap());
    // A counter line from the restored process, then its check.
    rout.read_line(&mut text).unwrap();
    r.stdin.take().unwrap().write_all(b"check\n").unwrap();
    rout.read_to_string(&mut text).unwrap();
    let mut err = String::new();
    r.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let st = r.wait().unwrap();
    assert!(
        text.contains("PASS") && st.success(),
        "restored: {st:?}\nstdout: {text}\nstderr: {err}"
    );
    let _ = std::fs::remove_dir_all(&work);
}

/// A real program's output, uninterrupted and checkpointed after `delay`
/// then restored: the same.
fn real_program(name: &str, argv: &[&str], work: &Path, delay: Duration) {
    let plain = Command::new(argv[0])
        .args(&argv[1..])
        .current_dir(work)
        .output()
        .unwrap();
    assert!(plain.status.success(), "{name}: {plain:?}");
    let mut child = clean(argv[0])
        .args(&argv[1..])
        .current_dir(work)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Its output so far is read on a thread; the rest comes from the
    // restored process.
    let mut so_far = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        so_far.read_to_end(&mut v).unwrap();
        v
    });
    std::thread::sleep(delay);
    let image = work.join("image");
    checkpoint(child.id(), &image, false);
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    let mut out = reader.join().unwrap();
    let r = restore(&image).wait_with_output().unwrap();
    assert!(
        r.status.success(),
        "{name}: {:?} {}",
        r.status,
        String::from_utf8_lossy(&r.stderr)
    );
    out.extend_from_slice(&r.stdout);
    assert_eq!(
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&plain.stdout),
        "{name}: the output differs from an uninterrupted run"
    );
}

#[test]
fn python_loop_mid_run() {
    let work = tmp("python");
    let prog = "s = 0\nfor i in range(6_000_000):\n    s = (s * 31 + i) % 1000003\n    \
                if i % 1_000_000 == 0: print(i, s, flush=True)\nprint('done', s)\n";
    std::fs::write(work.join("loop.py"), prog).unwrap();
    real_program(
        "python3",
        &["python3", "loop.py"],
        &work,
        Duration::from_millis(400),
    );
}

#[test]
fn sha256sum_of_a_large_file_mid_run() {
    let work = tmp("sha");
    let data: Vec<u8> = (0..400u32 << 20 >> 2)
        .flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes())
        .collect();
    std::fs::write(work.join("big"), &data).unwrap();
    real_program(
        "sha256sum",
        &["sha256sum", "big"],
        &work,
        Duration::from_millis(300),
    );
}

#[test]
fn sort_mid_run() {
    let work = tmp("sort");
    let mut text = String::new();
    for i in 0..3_000_000u64 {
        text.push_str(&format!(
            "{}\n",
            i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 20
        ));
    }
    std::fs::write(work.join("in.txt"), text).unwrap();
    real_program(
        "sort",
        &["sort", "-S", "500M", "in.txt"],
        &work,
        Duration::from_millis(300),
    );
}

#[test]
fn bad_input_is_refused_clearly() {
    let work = tmp("bad");
    // A pid that does not exist.
    let out = Command::new(roam())
        .args(["checkpoint", "999999999", "-o"])
        .arg(work.join("x"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no process"),
        "{out:?}"
    );
    // A corrupt image, and a missing one.
    std::fs::create_dir_all(work.join("bad")).unwrap();
    std::fs::write(work.join("bad/roam.img"), b"ROAMCKPT garbage").unwrap();
    for (dir, want) in [("bad", "image"), ("missing", "No such file")] {
        let out = Command::new(roam())
            .arg("restore")
            .arg(work.join(dir))
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{dir}: {err}");
    }
    // A process holding a socket is refused and left running untouched.
    let mut child = clean("python3")
        .args([
            "-c",
            "import socket,sys,time\ns=socket.socket()\nprint('R',flush=True)\ntime.sleep(30)",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    wait_line(&mut out, "R");
    let res = Command::new(roam())
        .args(["checkpoint", &child.id().to_string(), "-o"])
        .arg(work.join("sock"))
        .output()
        .unwrap();
    assert!(!res.status.success());
    assert!(
        String::from_utf8_lossy(&res.stderr).contains("socket"),
        "{res:?}"
    );
    assert!(child.try_wait().unwrap().is_none(), "left running");
    assert!(!work.join("sock/roam.img").exists());
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Unmounts on drop, even when the test fails.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_leaves_no_image_and_the_process_running() {
    let work = tmp("full");
    let small = work.join("small");
    std::fs::create_dir_all(&small).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "roam-test-full"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(st.success(), "mount a small tmpfs");
    let _mounted = Mounted(small.clone());
    let bin = build("heap", false);
    let mut child = clean(&bin)
        .arg("8")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    wait_line(&mut out, "READY");
    let image = small.join("image");
    let res = Command::new(roam())
        .args(["checkpoint", &child.id().to_string(), "-o"])
        .arg(&image)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success());
    assert!(err.contains("cannot write the image"), "{err}");
    // Nothing that looks like an image, not even a partial one.
    let left: Vec<_> = std::fs::read_dir(&image)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    // The process was not lost: it runs on, its state intact.
    assert!(child.try_wait().unwrap().is_none());
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(child.wait().unwrap().success(), "{rest}");
    assert!(rest.contains("PASS"), "{rest}");
}
