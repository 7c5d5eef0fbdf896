//! Remote files (a module of the e2e test binary): with `files = "home"`,
//! remote processes see the home's files through the remote file system,
//! with their user's rights. The testbed's nodes have a private /tmp, so a
//! file the test puts in the home's /tmp exists for a remote process only
//! through the remote file system.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use roam_testbed::{Testbed, TestbedOpts};

use super::{bin_dir, text, wait_until, Cluster};

impl Cluster {
    /// `nodes` nodes whose remote processes see the home's files.
    pub(crate) fn home_files(nodes: u32) -> Cluster {
        let mut opts = TestbedOpts::new(nodes, bin_dir().join("roamd"));
        opts.home_files = true;
        let tb = Testbed::up(opts).expect("testbed up");
        tb.wait_nodes_up(nodes as usize, Duration::from_secs(20))
            .expect("nodes up");
        Cluster { tb }
    }
}

/// A directory in the home's /tmp (which no node has in its own tree),
/// removed on drop.
struct HomeDir(PathBuf);

impl HomeDir {
    fn new(tag: &str) -> HomeDir {
        let d = PathBuf::from(format!("/tmp/roam-files-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
        HomeDir(d)
    }
}

impl Drop for HomeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run_in(c: &Cluster, dir: &Path, args: &[&str]) -> std::process::Output {
    c.roam()
        .current_dir(dir)
        .arg("run")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("roam run")
}

#[test]
fn remote_processes_see_the_homes_files() {
    let c = Cluster::home_files(1);
    let d = HomeDir::new("see");
    std::fs::write(d.0.join("hello"), "hello from the home\n").unwrap();

    // Read, in a working directory only the home has.
    let r = run_in(&c, &d.0, &["cat", "hello"]);
    assert!(r.status.success(), "{}", text(&r.stderr));
    assert_eq!(text(&r.stdout), "hello from the home\n");

    // Written remotely: on the home's disk at once.
    let r = run_in(
        &c,
        &d.0,
        &["sh", "-c", "echo written > out; mkdir sub; mv out sub/out2"],
    );
    assert!(r.status.success(), "{}", text(&r.stderr));
    assert_eq!(
        std::fs::read_to_string(d.0.join("sub/out2")).unwrap(),
        "written\n"
    );

    // A dynamically linked program that exists only on the home: loaded,
    // with its libraries, through the remote file system.
    std::fs::copy("/usr/bin/printenv", d.0.join("only-here")).unwrap();
    let r = run_in(&c, &d.0, &["./only-here", "ROAM_NODE"]);
    assert!(r.status.success(), "{}", text(&r.stderr));
    assert_eq!(text(&r.stdout), "n1\n");

    // The node's own /proc: the process sees itself there.
    let r = run_in(&c, &d.0, &["sh", "-c", "cat /proc/self/comm"]);
    assert_eq!(text(&r.stdout), "cat\n");

    // One mount namespace for the node's remote processes (made once),
    // not the node daemon's.
    let ns = |c: &Cluster| text(&run_in(c, &d.0, &["readlink", "/proc/self/ns/mnt"]).stdout);
    let first = ns(&c);
    assert!(first.starts_with("mnt:["), "{first}");
    assert_eq!(ns(&c), first);
    let daemon =
        std::fs::read_link(format!("/proc/{}/ns/mnt", c.tb.daemon_pid("n1").unwrap())).unwrap();
    assert_ne!(first.trim(), daemon.to_string_lossy());

    // Large files, both ways, byte for byte.
    let data: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect();
    std::fs::write(d.0.join("big"), &data).unwrap();
    let r = run_in(&c, &d.0, &["cp", "big", "big2"]);
    assert!(r.status.success(), "{}", text(&r.stderr));
    assert!(std::fs::read(d.0.join("big2")).unwrap() == data);
}

#[test]
fn remote_files_are_accessed_with_the_users_rights() {
    let c = Cluster::home_files(1);
    let d = HomeDir::new("rights");
    let secret = d.0.join("secret");
    std::fs::write(&secret, "root only\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = c
        .roam_as_nobody()
        .current_dir(&d.0)
        .args(["run", "cat", "secret"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!r.status.success());
    assert!(
        text(&r.stderr).contains("Permission denied"),
        "{}",
        text(&r.stderr)
    );

    // What nobody creates is nobody's, with its umask.
    let r = c
        .roam_as_nobody()
        .current_dir(&d.0)
        .args(["run", "sh", "-c", "umask 027; echo mine > mine"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", text(&r.stderr));
    let m = std::fs::metadata(d.0.join("mine")).unwrap();
    assert_eq!((m.uid(), m.gid()), (65534, 65534));
    assert_eq!(m.mode() & 0o777, 0o640);

    // nobody cannot take root's file away in a sticky directory.
    let r = c
        .roam_as_nobody()
        .current_dir(&d.0)
        .args(["run", "rm", "-f", "secret"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!r.status.success());
    assert!(secret.exists());

    // An access check the node remembered (see the client's access.rs)
    // goes with the home's chmod.
    let dir = d.0.join("dir");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let enter = |c: &Cluster| {
        c.roam_as_nobody()
            .current_dir(&d.0)
            .args(["run", "sh", "-c", "cd dir && echo in"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    for _ in 0..2 {
        let r = enter(&c);
        assert_eq!(text(&r.stdout), "in\n", "{}", text(&r.stderr));
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    wait_until("the chmod to be seen", Duration::from_secs(5), || {
        !enter(&c).status.success()
    });
    let r = enter(&c);
    assert!(text(&r.stderr).contains("can't cd"), "{}", text(&r.stderr));
}

#[test]
fn a_node_daemon_that_dies_leaves_no_wedged_mount() {
    let mut c = Cluster::home_files(1);
    let d = HomeDir::new("restart");
    std::fs::write(d.0.join("f"), "before\n").unwrap();
    assert_eq!(text(&run_in(&c, &d.0, &["cat", "f"]).stdout), "before\n");
    // A remote process using the files when the node daemon is killed: it
    // appends a line, and says so on stdout once the append returned.
    let mut child = c
        .roam()
        .current_dir(&d.0)
        .args([
            "run",
            "sh",
            "-c",
            "i=0; while :; do cat f > /dev/null; i=$((i+1)); echo line $i >> log || exit 1; echo $i; done",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let acked = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| l.parse::<u64>().ok())
            .last()
            .unwrap_or(0)
    });
    std::thread::sleep(Duration::from_millis(500));
    c.tb.kill_daemon("n1").unwrap();
    let status = super::wait_timeout(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(255));
    // Every append the process saw done is in the home's file, whole and
    // in order: nothing acknowledged was lost with the node.
    let acked = acked.join().unwrap();
    assert!(acked > 0, "the writer never got going");
    let log = std::fs::read_to_string(d.0.join("log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines.len() as u64 >= acked,
        "{} lines, {acked} acknowledged",
        lines.len()
    );
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(*l, format!("line {}", i + 1));
    }
    // The restarted daemon mounts the home's files again over the dead
    // mount, and new processes use them.
    c.tb.start_daemon("n1").unwrap();
    c.tb.wait_nodes_up(1, Duration::from_secs(20)).unwrap();
    std::fs::write(d.0.join("f"), "after\n").unwrap();
    let r = run_in(&c, &d.0, &["cat", "f"]);
    assert!(r.status.success(), "{}", text(&r.stderr));
    assert_eq!(text(&r.stdout), "after\n");
    assert!(c.log("n1").contains("mounted"), "{}", c.log("n1"));
}

/// Runs `sh -c script` on node `node` in `dir`; its stdout.
fn sh_on(c: &Cluster, node: &str, dir: &Path, script: &str) -> String {
    let r = c
        .roam()
        .current_dir(dir)
        .args(["run", "--node", node, "sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .expect("roam run");
    assert!(
        r.status.success(),
        "{script} on {node}: {}",
        text(&r.stderr)
    );
    text(&r.stdout)
}

#[test]
fn changes_are_seen_at_once_on_every_node() {
    // The nodes cache the home's files for 30 s: only the home's notices
    // make these changes visible at once.
    let c = Cluster::home_files(2);
    let d = HomeDir::new("notify");
    std::fs::write(d.0.join("f"), "v1\n").unwrap();
    let look = "stat -c %s f; cat f; ls";
    for n in ["n1", "n2"] {
        assert_eq!(sh_on(&c, n, &d.0, look), "3\nv1\nf\n");
    }

    // Changed on the home (not by roam): the fanotify watch tells both.
    std::fs::write(d.0.join("f"), "v2 longer\n").unwrap();
    std::fs::write(d.0.join("g"), "").unwrap();
    for n in ["n1", "n2"] {
        assert_eq!(sh_on(&c, n, &d.0, look), "10\nv2 longer\nf\ng\n", "{n}");
    }

    // Changed by a remote process on n1: the home tells n2.
    sh_on(&c, "n1", &d.0, "echo more >> f; rm g; touch h");
    assert_eq!(sh_on(&c, "n2", &d.0, look), "15\nv2 longer\nmore\nf\nh\n");
    // And the home's own view agrees.
    assert_eq!(
        std::fs::read_to_string(d.0.join("f")).unwrap(),
        "v2 longer\nmore\n"
    );
    let log = c.log("home");
    assert!(log.contains("watching"), "{log}");
}

#[test]
fn a_restarted_home_serves_the_nodes_files_again() {
    let mut c = Cluster::home_files(1);
    let d = HomeDir::new("homerestart");
    std::fs::write(d.0.join("f"), "before\n").unwrap();
    assert_eq!(sh_on(&c, "n1", &d.0, "cat f"), "before\n");
    // A remote process writing when the home dies. Its proxy reattaches to
    // the restarted home, but the files it had (root, working directory,
    // open files) belonged to the old home's file server: the node ends
    // it, and its proxy reports that, instead of leaving it hanging or
    // writing elsewhere. The node does not wedge.
    let mut writer = c
        .roam()
        .current_dir(&d.0)
        .args([
            "run",
            "--node",
            "n1",
            "sh",
            "-c",
            "i=0; while :; do i=$((i+1)); echo line $i >> log; done",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    c.tb.kill_daemon("home").unwrap();
    c.tb.start_daemon("home").unwrap();
    c.tb.wait_nodes_up(1, Duration::from_secs(30)).unwrap();
    let status = super::wait_timeout(&mut writer, Duration::from_secs(60));
    // Killed, as the proxy shows a remote death by a signal: by dying of it.
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    // What was written before is whole lines, in order.
    let log = std::fs::read_to_string(d.0.join("log")).unwrap();
    for (i, line) in log.lines().enumerate() {
        assert_eq!(line, format!("line {}", i + 1));
    }
    // The node mounted the files afresh (node ids belong to the old home's
    // file server) and new processes see them right.
    std::fs::write(d.0.join("f"), "after\n").unwrap();
    std::fs::write(d.0.join("g"), "new\n").unwrap();
    assert_eq!(sh_on(&c, "n1", &d.0, "cat f g"), "after\nnew\n");
    let n1 = c.log("n1");
    assert!(n1.contains("mounting the home's files afresh"), "{n1}");
    // Nothing of the writer is left behind on the old mount.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let found = std::process::Command::new("pgrep")
            .args(["-f", "echo line"])
            .output()
            .unwrap();
        if !found.status.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the writer still runs: {}",
            text(&found.stdout)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn locks_exclude_each_other_across_nodes() {
    let c = Cluster::home_files(2);
    let d = HomeDir::new("locks");
    std::fs::write(d.0.join("f"), "").unwrap();
    for (how, tool) in [
        ("flock", "flock -x f sleep 30"),
        // A POSIX record lock, held by python's fcntl.lockf.
        (
            "lockf",
            "python3 -c 'import fcntl,time; f=open(\"f\",\"r+\"); fcntl.lockf(f, fcntl.LOCK_EX); print(\"held\", flush=True); time.sleep(30)'",
        ),
    ] {
        let mut holder = c
            .roam()
            .current_dir(&d.0)
            .args(["run", "--node", "n1", "sh", "-c", tool])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // n2 cannot take it while n1 holds it; nor can the home for a
        // POSIX lock (flocks from nodes are held as POSIX locks at the
        // home, see remote-files.md).
        let probe = "flock -n f true; echo $?; python3 -c 'import fcntl; f=open(\"f\",\"r+\")\ntry:\n fcntl.lockf(f, fcntl.LOCK_EX|fcntl.LOCK_NB); print(0)\nexcept OSError: print(1)'";
        let probe_until = |want: &str, what: &str| {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                let got = sh_on(&c, "n2", &d.0, probe);
                if got == want {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{how} {what}: {got:?}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        };
        probe_until("1\n1\n", "on n1 does not exclude n2");
        let _ = holder.kill();
        let _ = holder.wait();
        // Once n1's holder is gone, n2 gets it.
        probe_until("0\n0\n", "outlives its holder");
    }
}

#[test]
fn a_foreign_dynamic_program_loads_its_libraries_from_the_home() {
    // An aarch64 program whose loader and C library exist only in a
    // directory of the home's /tmp (which no node has): on an emulated
    // aarch64 node it starts only if qemu, inside the remote process's
    // view of the home's tree, finds them there.
    let target = roam_testbed::foreign::available("aarch64").unwrap_or_else(|e| panic!("{e}"));
    let d = HomeDir::new("hetero");
    let lib = d.0.join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    for f in ["ld-linux-aarch64.so.1", "libc.so.6"] {
        std::fs::copy(Path::new(target.sysroot).join("lib").join(f), lib.join(f)).unwrap();
    }
    let prog = d.0.join("echoargs");
    let src = roam_testbed::foreign::programs_dir().join("echoargs.c");
    let out = std::process::Command::new(target.gcc)
        .arg("-O2")
        .arg("-o")
        .arg(&prog)
        .arg(&src)
        .arg(format!(
            "-Wl,--dynamic-linker={}/ld-linux-aarch64.so.1,-rpath,{}",
            lib.display(),
            lib.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));

    let mut opts = TestbedOpts::new(1, bin_dir().join("roamd"));
    opts.home_files = true;
    opts.arch = vec![roam_elf::Arch::Aarch64];
    let tb = Testbed::up(opts).expect("testbed up");
    tb.wait_nodes_up(1, Duration::from_secs(20))
        .expect("nodes up");
    let c = Cluster { tb };
    let r = run_in(&c, &d.0, &["./echoargs", "héllo wörld"]);
    assert!(r.status.success(), "{}", text(&r.stderr));
    let out = text(&r.stdout);
    assert!(out.contains("argv[1]=héllo wörld\n"), "{out}");
    assert!(out.contains("arch-bits=64 endian=little"), "{out}");
    assert!(out.contains(&format!("cwd={}\n", d.0.display())), "{out}");
}

/// A child that ends while another starts through the home's files: the
/// reaper used to wait for the pid table, which the spawner held until
/// the new program's exec was done, and that exec waited for FUSE replies
/// that only the reaper's blocked thread could deliver. The node went
/// silent for seconds and the home declared it down.
#[test]
fn an_exit_during_a_start_through_the_homes_files_stalls_nothing() {
    let c = Cluster::home_files(1);
    for i in 0..80 {
        let mut short = c.start(&["run", "--node", "n1", "sleep", &format!("0.0{}", i % 10)]);
        std::thread::sleep(Duration::from_millis(i % 10));
        let started = std::time::Instant::now();
        let out = c.run(&["run", "--node", "n1", "/bin/true"]);
        assert!(out.status.success(), "round {i}: {}", text(&out.stderr));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "round {i}: a start took {:?}",
            started.elapsed()
        );
        let status = short.wait().unwrap();
        assert!(status.success(), "round {i}: sleep ended {status}");
    }
    assert!(!c.log("home").contains("went down"), "{}", c.log("home"));
}
