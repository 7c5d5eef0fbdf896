//! Heterogeneous nodes (a module of the e2e test binary): foreign programs
//! built by the tests with Debian's cross compilers run on testbed nodes
//! that run their architecture through qemu-user, and behave exactly as
//! under plain qemu; placement refuses what no node runs; a broken runner
//! is reported at join; binfmt_misc makes foreign programs run through roam
//! from any shell.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use roam_elf::Arch;
use roam_testbed::foreign::{self, Link};
use roam_testbed::{Testbed, TestbedOpts};

use super::{bin_dir, text, wait_timeout, Cluster};

/// A foreign test program, built (once, cached) for `arch`.
fn prog(arch: &str, name: &str, link: Link) -> PathBuf {
    foreign::build(arch, name, link).unwrap_or_else(|e| panic!("{e}"))
}

impl Cluster {
    /// `nodes` nodes: the first ones emulate `arch`, the others are native
    /// and run `runners` through qemu.
    pub(crate) fn hetero(nodes: u32, arch: &[Arch], runners: &[Arch]) -> Cluster {
        let mut opts = TestbedOpts::new(nodes, bin_dir().join("roamd"));
        opts.arch = arch.to_vec();
        opts.runners = runners.to_vec();
        let tb = Testbed::up(opts).expect("testbed up");
        tb.wait_nodes_up(nodes as usize, Duration::from_secs(20))
            .expect("nodes up");
        Cluster { tb }
    }
}

/// Runs `binary ARGS` through `roam run` from `dir`, with `env`.
fn roam_run(c: &Cluster, dir: &Path, binary: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = c.roam();
    cmd.current_dir(dir)
        .arg("run")
        .arg(binary)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    cmd.output().expect("roam run")
}

/// The same under plain qemu on this machine.
fn qemu_run(arch: &str, dir: &Path, binary: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = foreign::qemu_command(arch, binary).unwrap_or_else(|e| panic!("{e}"));
    cmd.current_dir(dir)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    cmd.output().expect("qemu runs")
}

#[test]
fn foreign_programs_behave_as_under_plain_qemu() {
    let c = Cluster::hetero(3, &[Arch::Aarch64, Arch::S390x], &[Arch::Arm]);
    let nodes = c.nodes();
    // Listed in join order, which the runner probes may shuffle.
    let node = |name: &str| nodes.iter().find(|n| n.name == name).unwrap().clone();
    assert_eq!(node("n1").arch.native, "aarch64");
    assert!(node("n1").arch.emulated);
    assert_eq!(node("n2").arch.native, "s390x");
    assert_eq!(node("n3").arch.runners, ["arm"]);
    assert!(!node("n3").arch.emulated);
    let dir = prog("aarch64", "pi", Link::Static)
        .parent()
        .unwrap()
        .to_owned();

    // Output byte-identical to plain qemu, little and big endian, 64 and
    // 32 bits, static and dynamic (the arm runner gets the cross libc).
    let cases: [(&str, &str, Link, Vec<&str>); 4] = [
        ("aarch64", "pi", Link::Static, vec!["2000"]),
        ("s390x", "pi", Link::Static, vec!["500"]),
        ("s390x", "echoargs", Link::Static, vec!["a", "b c", ""]),
        ("arm", "echoargs", Link::Dynamic, vec!["x"]),
    ];
    let env = [("ROAM_TEST_V", "1 2"), ("ROAM_TEST_W", "")];
    for (arch, name, link, args) in &cases {
        let bin = prog(arch, name, *link);
        let got = roam_run(&c, &dir, &bin, args, &env);
        let want = qemu_run(arch, &dir, &bin, args, &env);
        assert!(got.status.success(), "{arch} {name}: {}", text(&got.stderr));
        assert_eq!(
            text(&got.stdout),
            text(&want.stdout),
            "{arch} {name} {args:?}"
        );
    }
    let echo = roam_run(&c, &dir, &prog("s390x", "echoargs", Link::Static), &[], &[]);
    assert!(text(&echo.stdout).contains("arch-bits=64 endian=big"));
    let echo = roam_run(&c, &dir, &prog("arm", "echoargs", Link::Dynamic), &[], &[]);
    assert!(text(&echo.stdout).contains("arch-bits=32 endian=little"));

    // Binary stdin and stdout through the runner.
    let data: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let bin = prog("aarch64", "catsum", Link::Static);
    let mut child = c
        .roam()
        .current_dir(&dir)
        .arg("run")
        .arg(&bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feed = data.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&feed));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout == data, "catsum stdout differs");
    let mut q = foreign::qemu_command("aarch64", &bin).unwrap();
    let mut qc = q
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    qc.stdin.take().unwrap().write_all(&data).unwrap();
    let qout = qc.wait_with_output().unwrap();
    assert_eq!(text(&out.stderr), text(&qout.stderr));

    // Exit codes and death by a signal, as under qemu.
    let sig = prog("s390x", "sigtest", Link::Static);
    let r = roam_run(&c, &dir, &sig, &["exit", "7"], &[]);
    assert_eq!(r.status.code(), Some(7));
    let r = roam_run(&c, &dir, &sig, &["selfkill", "SEGV"], &[]);
    assert_eq!(
        r.status.signal(),
        Some(libc::SIGSEGV),
        "{}",
        text(&r.stderr)
    );

    // Signals reach it; `roam ps` shows it on the node that runs s390x.
    let mut child = c
        .roam()
        .current_dir(&dir)
        .arg("run")
        .arg(&sig)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let pid = child.id();
    let listed = c.wait_listed(pid);
    assert_eq!(listed.node, "n2");
    assert!(listed.command.contains("sigtest"), "{}", listed.command);
    for (s, name) in [
        (libc::SIGUSR1, "USR1"),
        (libc::SIGHUP, "HUP"),
        (libc::SIGINT, "INT"),
    ] {
        // SAFETY: a signal to our own child, the proxy.
        unsafe { libc::kill(pid as i32, s) };
        assert_eq!(lines.next().unwrap().unwrap(), format!("got {name}"));
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    assert_eq!(lines.next().unwrap().unwrap(), "got TERM");
    let status = wait_timeout(&mut child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0));

    // A script whose interpreter is a foreign program runs through the
    // runner as the kernel would run it.
    let script = dir.join(format!("script-{}", std::process::id()));
    std::fs::write(
        &script,
        format!(
            "#!{} flag\n",
            prog("aarch64", "echoargs", Link::Static).display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = roam_run(&c, &dir, &script, &["arg"], &[]);
    let _ = std::fs::remove_file(&script);
    let out = text(&r.stdout);
    assert!(r.status.success(), "{}", text(&r.stderr));
    assert!(out.contains("argv[1]=flag\n"), "{out}");
    assert!(
        out.contains(&format!("argv[2]={}\n", script.display())),
        "{out}"
    );
    assert!(out.contains("argv[3]=arg\n"), "{out}");
}

#[test]
fn placement_refuses_what_no_node_runs() {
    let c = Cluster::up(2);
    let dir = prog("aarch64", "pi", Link::Static)
        .parent()
        .unwrap()
        .to_owned();
    let pi = prog("aarch64", "pi", Link::Static);
    let r = roam_run(&c, &dir, &pi, &["5"], &[]);
    assert_eq!(r.status.code(), Some(126));
    let err = text(&r.stderr);
    assert!(
        err.contains("no node runs aarch64 programs (nodes: n1 (x86_64), n2 (x86_64))"),
        "{err}"
    );
    let r = c.run(&["run", "--node", "n2", pi.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(126));
    assert!(text(&r.stderr).contains("node 'n2' does not run aarch64 programs"));
    let r = c.run(&["run", "-N", "2", pi.to_str().unwrap()]);
    assert!(!r.status.success());
    assert!(
        text(&r.stderr).contains("no node runs aarch64"),
        "{}",
        text(&r.stderr)
    );

    // A corrupt ELF header, a script whose interpreter is missing.
    let tmp = dir.join(format!("bad-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let mut bytes = std::fs::read(&pi).unwrap();
    bytes.truncate(100);
    let trunc = tmp.join("truncated");
    std::fs::write(&trunc, &bytes).unwrap();
    let mut bytes = std::fs::read(&pi).unwrap();
    bytes[32..40].copy_from_slice(&u64::MAX.to_le_bytes()); // e_phoff
    let wild = tmp.join("wild-phoff");
    std::fs::write(&wild, &bytes).unwrap();
    let script = tmp.join("script");
    std::fs::write(&script, "#!/nonexistent/interpreter -x\n").unwrap();
    for f in [&trunc, &wild, &script] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let r = roam_run(&c, &dir, &trunc, &[], &[]);
    assert_eq!(r.status.code(), Some(126));
    assert!(text(&r.stderr).contains("truncated"), "{}", text(&r.stderr));
    let r = roam_run(&c, &dir, &wild, &[], &[]);
    assert_eq!(r.status.code(), Some(126));
    assert!(
        text(&r.stderr).contains("wild-phoff"),
        "{}",
        text(&r.stderr)
    );
    let r = roam_run(&c, &dir, &script, &[], &[]);
    assert_eq!(r.status.code(), Some(126));
    assert!(
        text(&r.stderr).contains("interpreter /nonexistent/interpreter not found"),
        "{}",
        text(&r.stderr)
    );
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn a_broken_runner_is_reported_at_join() {
    let mut c = Cluster::hetero(1, &[], &[Arch::Aarch64]);
    assert_eq!(c.nodes()[0].arch.runners, ["aarch64"]);
    // The operator points the runner at a file that is not there.
    let cfg = c.tb.config_path("n1").unwrap();
    let toml = std::fs::read_to_string(&cfg).unwrap();
    let qemu = roam_testbed::qemu_runner(Arch::Aarch64);
    let broken = toml.replace(
        &qemu.path().display().to_string(),
        "/nonexistent/qemu-aarch64-static",
    );
    assert_ne!(toml, broken);
    std::fs::write(&cfg, broken).unwrap();
    c.tb.kill_daemon("n1").unwrap();
    c.tb.start_daemon("n1").unwrap();
    super::wait_until(
        "n1 back with its broken runner",
        Duration::from_secs(20),
        || {
            c.nodes().first().is_some_and(|n| {
                n.state == roam_proto::types::NodeState::Up && !n.arch.broken.is_empty()
            })
        },
    );
    let n = &c.nodes()[0];
    assert!(n.arch.runners.is_empty());
    assert!(
        n.arch.broken[0].contains("runner for aarch64"),
        "{:?}",
        n.arch.broken
    );
    let out = c.run(&["nodes"]);
    assert!(
        text(&out.stderr)
            .contains("warning: n1: runner for aarch64 (/nonexistent/qemu-aarch64-static)"),
        "{}",
        text(&out.stderr)
    );
    assert!(c.log("home").contains("runner for aarch64"), "home log");
    let r = c.run(&["run", prog("aarch64", "pi", Link::Static).to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(126));
}

/// Removes roam's binfmt_misc entries when dropped.
struct BinfmtGuard<'a>(&'a Cluster);

impl Drop for BinfmtGuard<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["binfmt", "remove"]);
    }
}

#[test]
fn binfmt_runs_foreign_programs_from_any_shell() {
    let c = Cluster::hetero(2, &[Arch::S390x], &[Arch::Aarch64]);
    let install = c.run(&["binfmt", "install"]);
    let _guard = BinfmtGuard(&c);
    assert!(install.status.success(), "{}", text(&install.stderr));
    let listed = text(&install.stdout);
    assert!(
        listed.contains("roam-aarch64:") && listed.contains("roam-s390x:"),
        "{listed}"
    );
    let status = text(&c.run(&["binfmt", "status"]).stdout);
    assert!(status.contains("roam-aarch64: enabled"), "{status}");
    assert!(status.contains("flags PF"), "{status}");

    let pi = prog("aarch64", "pi", Link::Static);
    let sig = prog("s390x", "sigtest", Link::Static);
    let echo = prog("s390x", "echoargs", Link::Static);
    let dir = pi.parent().unwrap().to_owned();
    let want = text(&qemu_run("aarch64", &dir, &pi, &["100"], &[]).stdout);
    // The paper's heterogeneous pipe, from a plain shell: the foreign
    // program runs on a node, tail here, joined by a real pipe.
    let script = format!(
        "cd {dir}\n{pi} 100 | tail -c 12; echo \"rc=${{PIPESTATUS[0]}}\"\n{sig} exit 3; echo \"st=$?\"\n{sig} selfkill TERM; echo \"st=$?\"\n(exec -a myname {echo} one) | grep argv\n",
        dir = dir.display(),
        pi = pi.display(),
        sig = sig.display(),
        echo = echo.display(),
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("ROAM_SOCKET", c.tb.socket())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let got = text(&out.stdout);
    let tail = &want.trim_end()[want.trim_end().len() - 11..];
    assert!(
        got.starts_with(&format!("{tail}\nrc=0\nst=3\nst=143\n")),
        "{got}\n{}",
        text(&out.stderr)
    );
    assert!(got.contains("argv[0]=myname\nargv[1]=one\n"), "{got}");

    let removed = c.run(&["binfmt", "remove"]);
    assert!(text(&removed.stdout).contains("removed roam-aarch64"));
    // Without the entry the kernel refuses the file again (unless another
    // entry, such as qemu's own, claims it).
    let status = text(&c.run(&["binfmt", "status"]).stdout);
    assert!(!status.contains("roam-aarch64:"), "{status}");
}

/// A foreign program under its runner (qemu-user, on native nodes that
/// run aarch64 through it) migrates between nodes with it: the runner is
/// an x86_64 process like any other, its guest's memory in its own. The
/// writer (`tests/programs/migrate/writer.c`, built for aarch64) moves
/// n1 -> n2 -> n1, its counters come once each and in order, and it finds
/// every page of its heap as it last wrote it.
#[test]
fn a_foreign_program_migrates_with_its_runner() {
    let mut opts = TestbedOpts::new(2, bin_dir().join("roamd"));
    opts.runners = vec![Arch::Aarch64];
    // The binary is built in the home's tree (under /tmp on CI).
    opts.home_files = true;
    let tb = Testbed::up(opts).expect("testbed up");
    tb.wait_nodes_up(2, Duration::from_secs(20))
        .expect("nodes up");
    let c = Cluster { tb };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("migrate-progs");
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join("writer-aarch64");
    let tmp = dir.join(format!(".writer-aarch64-{}", std::process::id()));
    let st = Command::new("aarch64-linux-gnu-gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&tmp)
        .arg(root.join("tests/programs/migrate/writer.c"))
        .status()
        .expect("aarch64-linux-gnu-gcc (gcc-aarch64-linux-gnu)");
    assert!(st.success(), "aarch64-linux-gnu-gcc writer.c");
    std::fs::rename(&tmp, &bin).unwrap();
    // 8 MiB written at 2 MiB/s, a counter every 100 ms.
    let mut job = c
        .roam()
        .args(["run", "--node", "n1"])
        .arg(&bin)
        .args(["8", "2", "100"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let home_pid = job.id();
    let mut out = BufReader::new(job.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "READY\n");
    for to in ["n2", "n1"] {
        std::thread::sleep(Duration::from_millis(300));
        let m = c
            .roam()
            .args(["migrate", &home_pid.to_string(), to])
            .output()
            .unwrap();
        assert!(m.status.success(), "migrate to {to}: {}", text(&m.stderr));
        let p = c.ps().into_iter().find(|p| p.home_pid == home_pid).unwrap();
        assert_eq!(p.node, to);
    }
    std::thread::sleep(Duration::from_millis(300));
    job.stdin.take().unwrap().write_all(b"check\n").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let status = wait_timeout(&mut job, Duration::from_secs(30));
    assert!(status.success(), "{rest}");
    assert!(
        rest.lines().last().unwrap_or("").starts_with("PASS "),
        "{rest}"
    );
    let counters: Vec<u64> = rest.lines().filter_map(|l| l.parse().ok()).collect();
    assert!(counters.len() > 3, "{rest}");
    assert!(counters.windows(2).all(|w| w[1] == w[0] + 1), "{rest}");
}
