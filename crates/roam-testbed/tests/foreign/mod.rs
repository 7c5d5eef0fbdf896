//! (A module of the testbed test binary: one test binary per crate.)
//!
//! The foreign-architecture test programs (`tests/programs/*.c`), built for
//! every cross target and for the host, checked under plain qemu-user (and
//! natively): what roam's tests compare a remote run against.
//!
//! Needs no root. Needs the cross compilers and qemu-user-static: a target
//! whose tools are missing fails (with the packages to install), it is not
//! skipped.

use std::error::Error;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use roam_testbed::foreign::{self, build, build_native, qemu_command, run_under_qemu, Link};

const PI_50: &str = "31415926535897932384626433832795028841971693993751";

/// Where a test program runs: under a target's qemu, or on the host.
#[derive(Clone, Copy)]
enum Runner {
    Qemu(&'static str),
    Native,
}

impl Runner {
    fn build(self, program: &str, link: Link) -> PathBuf {
        let built = match self {
            Runner::Qemu(arch) => build(arch, program, link),
            Runner::Native => build_native(program, link),
        };
        built.unwrap_or_else(|e| panic!("{}", chain(&e)))
    }

    /// A command running `binary`, with an empty environment.
    fn command(self, binary: &Path) -> Command {
        let mut command = match self {
            Runner::Qemu(arch) => {
                qemu_command(arch, binary).unwrap_or_else(|e| panic!("{}", chain(&e)))
            }
            Runner::Native => Command::new(binary),
        };
        command.env_clear();
        command
    }

    fn run(self, binary: &Path, args: &[&str]) -> Output {
        match self {
            Runner::Qemu(arch) => run_under_qemu(arch, binary, args),
            Runner::Native => Command::new(binary)
                .args(args)
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display())),
        }
    }

    /// `(pointer bits, endianness)` the programs should report.
    fn expected_machine(self) -> (u32, &'static str) {
        match self {
            Runner::Qemu("aarch64") => (64, "little"),
            Runner::Qemu("s390x") => (64, "big"),
            Runner::Qemu("arm") => (32, "little"),
            Runner::Qemu(other) => panic!("no expectations for {other}"),
            Runner::Native => (
                usize::BITS,
                if cfg!(target_endian = "big") {
                    "big"
                } else {
                    "little"
                },
            ),
        }
    }
}

fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A fresh empty directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static SERIAL: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "roam-foreign-{tag}-{}-{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir.canonicalize().unwrap())
    }

    fn entries(&self) -> Vec<String> {
        std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------- checks

fn check_pi(runner: Runner) {
    let pi = runner.build("pi", Link::Static);

    let out = runner.run(&pi, &["50"]);
    assert!(
        out.status.success(),
        "{:?} {}",
        out.status,
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), format!("{PI_50}\n"));
    assert_eq!(text(&out.stderr), "");

    let out = runner.run(&pi, &[]);
    let digits = text(&out.stdout);
    assert_eq!(digits.len(), 101, "default is 100 digits: {digits:?}");
    assert!(digits.starts_with(PI_50));

    // The long run gives the same digits as the host's build.
    let start = Instant::now();
    let out = runner.run(&pi, &["2000"]);
    let elapsed = start.elapsed();
    assert!(
        out.status.success(),
        "{:?} {}",
        out.status,
        text(&out.stderr)
    );
    let native = Runner::Native.run(&Runner::Native.build("pi", Link::Static), &["2000"]);
    assert_eq!(out.stdout.len(), 2001);
    assert!(
        out.stdout == native.stdout,
        "2000 digits differ from the host's"
    );
    eprintln!("pi 2000: {elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(10),
        "pi 2000 took {elapsed:?}"
    );

    let out = runner.run(&pi, &["0"]);
    assert_eq!(out.status.code(), Some(2));
}

fn check_echoargs(runner: Runner) {
    let echoargs = runner.build("echoargs", Link::Static);
    let cwd = TempDir::new("echoargs");
    let args = ["one", "two words", "", "tab\there", "ünïcödé", "-x", "a=b"];

    // The umask is per process: set it in a shell that then execs the run.
    let inner = runner.command(&echoargs);
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg("umask 027 && exec \"$0\" \"$@\"")
        .arg(inner.get_program())
        .args(inner.get_args())
        .args(args)
        .env_clear()
        .env("ROAM_TEST_B", "2")
        .env("ROAM_TEST_A1", "x y")
        .env("ROAM_TEST_A", "1")
        .env("ROAM_TESTX", "no")
        .env("NOT_ROAM_TEST_C", "no")
        .current_dir(&cwd.0);
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{:?} {}",
        out.status,
        text(&out.stderr)
    );
    assert_eq!(text(&out.stderr), "");

    let (bits, endian) = runner.expected_machine();
    let mut expected = format!("argc={}\nargv[0]={}\n", args.len() + 1, echoargs.display());
    for (i, arg) in args.iter().enumerate() {
        expected.push_str(&format!("argv[{}]={arg}\n", i + 1));
    }
    expected.push_str("ROAM_TEST_A=1\nROAM_TEST_A1=x y\nROAM_TEST_B=2\n");
    expected.push_str(&format!("cwd={}\n", cwd.0.display()));
    expected.push_str("umask=027\n");
    expected.push_str(&format!("arch-bits={bits} endian={endian}\n"));
    assert_eq!(text(&out.stdout), expected);
}

fn check_sigtest_exits(runner: Runner) {
    let sigtest = runner.build("sigtest", Link::Static);
    let cwd = TempDir::new("sigtest");
    let run = |args: &[&str]| {
        let out = runner
            .command(&sigtest)
            .args(args)
            .current_dir(&cwd.0)
            .output()
            .unwrap();
        (out.status, text(&out.stderr))
    };

    let (status, stderr) = run(&["exit", "7"]);
    assert_eq!(status.code(), Some(7), "{status:?} {stderr}");
    assert_eq!(stderr, "");

    let (status, stderr) = run(&["exit", "0"]);
    assert!(status.success(), "{status:?} {stderr}");

    // A guest killed by a signal: qemu-user kills itself with the same
    // signal, so the status is the same as natively. For a core-dumping
    // signal qemu says so on stderr (though the core limit is 0 and no core
    // is written); for the others it says nothing.
    let (status, stderr) = run(&["selfkill", "SEGV"]);
    assert_eq!(status.code(), None, "{status:?} {stderr}");
    assert_eq!(status.signal(), Some(Signal::SIGSEGV as i32), "{status:?}");
    assert!(!status.core_dumped(), "{status:?}");
    match runner {
        Runner::Qemu(_) => assert_eq!(
            stderr,
            "qemu: uncaught target signal 11 (Segmentation fault) - core dumped\n"
        ),
        Runner::Native => assert_eq!(stderr, ""),
    }

    let (status, stderr) = run(&["selfkill", "TERM"]);
    assert_eq!(status.signal(), Some(Signal::SIGTERM as i32), "{status:?}");
    assert_eq!(stderr, "");

    let (status, stderr) = run(&["selfkill", "SIGKILL"]);
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32), "{status:?}");
    assert_eq!(stderr, "");

    // A signal whose default action is to ignore it does not kill.
    let (status, stderr) = run(&["selfkill", "WINCH"]);
    assert_eq!(status.code(), Some(125), "{status:?} {stderr}");

    let (status, _) = run(&["selfkill", "NOSUCH"]);
    assert_eq!(status.code(), Some(2));

    assert_eq!(cwd.entries(), Vec::<String>::new(), "no core files");
}

fn check_sigtest_signals(runner: Runner) {
    let sigtest = runner.build("sigtest", Link::Static);
    let mut child = runner
        .command(&sigtest)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let next_line = || match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(line) => line,
        Err(e) => {
            let _ = kill(pid, Signal::SIGKILL);
            panic!("no line from sigtest: {e}");
        }
    };

    assert_eq!(next_line(), "ready");
    for (signal, name) in [
        (Signal::SIGUSR1, "USR1"),
        (Signal::SIGHUP, "HUP"),
        (Signal::SIGWINCH, "WINCH"),
        (Signal::SIGINT, "INT"),
        (Signal::SIGUSR1, "USR1"),
        (Signal::SIGTERM, "TERM"),
    ] {
        kill(pid, signal).unwrap();
        assert_eq!(next_line(), format!("got {name}"));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{:?} {}",
        out.status,
        text(&out.stderr)
    );
}

fn check_catsum(runner: Runner) {
    let catsum = runner.build("catsum", Link::Static);

    // 1 MiB of xorshift noise: every byte value, no structure.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..1 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[3]
        })
        .collect();
    let sum = data
        .iter()
        .fold(0u32, |sum, &b| sum.wrapping_add(u32::from(b)));

    let mut child = runner
        .command(&catsum)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = data.clone();
    let writer = thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();

    assert!(
        out.status.success(),
        "{:?} {}",
        out.status,
        text(&out.stderr)
    );
    assert_eq!(text(&out.stderr), format!("bytes=1048576 sum={sum:08x}\n"));
    assert!(
        out.stdout == data,
        "stdout differs from stdin ({} bytes)",
        out.stdout.len()
    );

    // Empty input.
    let out = runner
        .command(&catsum)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, b"");
    assert_eq!(text(&out.stderr), "bytes=0 sum=00000000\n");
}

fn check_dynamic(runner: Runner) {
    // Needs the target's loader: qemu_command passes its libc root as -L.
    for program in ["pi", "echoargs"] {
        let binary = runner.build(program, Link::Dynamic);
        assert!(binary
            .to_string_lossy()
            .ends_with(&format!("/{program}-dyn")));
        let out = runner.run(&binary, &["50"]);
        assert!(
            out.status.success(),
            "{:?} {}",
            out.status,
            text(&out.stderr)
        );
        if program == "pi" {
            assert_eq!(text(&out.stdout), format!("{PI_50}\n"));
        } else {
            let (bits, endian) = runner.expected_machine();
            let expected = format!("arch-bits={bits} endian={endian}\n");
            assert!(
                text(&out.stdout).ends_with(&expected),
                "{}",
                text(&out.stdout)
            );
        }
    }
}

// ---------------------------------------------------------------- tests

macro_rules! program_tests {
    ($($module:ident => $runner:expr;)*) => {
        $(
            mod $module {
                use super::*;

                #[test]
                fn pi() {
                    check_pi($runner);
                }

                #[test]
                fn echoargs() {
                    check_echoargs($runner);
                }

                #[test]
                fn sigtest_exits() {
                    check_sigtest_exits($runner);
                }

                #[test]
                fn sigtest_signals() {
                    check_sigtest_signals($runner);
                }

                #[test]
                fn catsum() {
                    check_catsum($runner);
                }

                #[test]
                fn dynamic() {
                    check_dynamic($runner);
                }
            }
        )*
    };
}

program_tests! {
    aarch64 => Runner::Qemu("aarch64");
    s390x => Runner::Qemu("s390x");
    arm => Runner::Qemu("arm");
    native => Runner::Native;
}

/// Every target is tested above, and is installed (CI installs them all).
#[test]
fn all_targets_covered_and_available() {
    let archs: Vec<_> = foreign::targets().iter().map(|t| t.arch).collect();
    assert_eq!(archs, ["aarch64", "s390x", "arm"]);
    for arch in archs {
        if let Err(e) = foreign::available(arch) {
            panic!("{}", chain(&e));
        }
    }
}

/// A cached build is reused while its source is not newer.
#[test]
fn builds_are_cached() {
    let first = build_native("catsum", Link::Static).unwrap();
    let built = std::fs::metadata(&first).unwrap().modified().unwrap();
    let again = build_native("catsum", Link::Static).unwrap();
    assert_eq!(first, again);
    assert_eq!(
        std::fs::metadata(&again).unwrap().modified().unwrap(),
        built
    );
    assert_eq!(
        first.parent().unwrap(),
        foreign::cache_dir("native"),
        "{}",
        first.display()
    );
}
