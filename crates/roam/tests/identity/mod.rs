//! Identity forwarding (a module of the e2e test binary): on nodes with
//! `identity = "home"` (the default), a remote process sees its home pid,
//! its home parent and the home's host name, and its signals to home pids
//! reach their targets, at home or on other nodes, with its user's rights.
//!
//! The testbed runs every node on this machine, in one pid namespace, so a
//! home pid is also a pid on the node: the tests check the home's log to
//! tell a signal the home sent from one the node's kernel delivered
//! directly. Each node has its own host name (its UTS namespace).

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use roam_core::config::IdentityMode;
use roam_testbed::foreign::{self, Link};
use roam_testbed::{Testbed, TestbedOpts};

use super::{bin_dir, text, wait_timeout, wait_until, Cluster};

impl Cluster {
    fn with_identity(nodes: u32, identity: IdentityMode) -> Cluster {
        let mut opts = TestbedOpts::new(nodes, bin_dir().join("roamd"));
        opts.identity = identity;
        let tb = Testbed::up(opts).expect("testbed up");
        tb.wait_nodes_up(nodes as usize, Duration::from_secs(20))
            .expect("nodes up");
        Cluster { tb }
    }

    /// `roam run ARGS` in the background; returns the child (the proxy,
    /// whose pid is the remote process's home pid) and its output.
    fn run_pid(&self, args: &[&str]) -> (u32, std::process::Output) {
        let child = self
            .roam()
            .arg("run")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("roam run starts");
        let pid = child.id();
        (pid, child.wait_with_output().expect("roam run ends"))
    }
}

const PYTHON: &str = "/usr/bin/python3";

fn home_host() -> String {
    roam_sys::procfs::hostname()
}

/// A process whose stdout says "ready" once its USR1 trap is set, then
/// "got-usr1" when the signal comes (and it exits 0).
fn trap_script() -> &'static str {
    "trap 'echo got-usr1; exit 0' USR1; echo ready; while :; do sleep 0.05; done"
}

/// Waits for `child`'s first stdout line to be "ready"; returns the reader.
fn wait_ready(child: &mut Child) -> BufReader<std::process::ChildStdout> {
    let mut out = BufReader::new(child.stdout.take().expect("stdout piped"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read ready");
    assert_eq!(line, "ready\n", "the trap process did not start");
    out
}

/// The rest of `child`'s output, and its status.
fn finish(
    child: &mut Child,
    mut out: BufReader<std::process::ChildStdout>,
) -> (String, std::process::ExitStatus) {
    let status = wait_timeout(child, Duration::from_secs(10));
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    (rest, status)
}

#[test]
fn remote_processes_see_their_home_pid_parent_and_host() {
    let c = Cluster::up(1);
    // The node's own name differs from the home's: the answers below come
    // from the supervisor, not from the node.
    let node =
        c.tb.command_in("n1", "uname")
            .unwrap()
            .arg("-n")
            .output()
            .unwrap();
    assert_eq!(text(&node.stdout), "n1\n");
    assert_ne!(home_host(), "n1");

    // $$ in sh comes from getpid: the proxy's pid.
    let (pid, out) = c.run_pid(&["sh", "-c", "echo $$"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{pid}\n"));

    // getppid: the proxy's parent, this test.
    let (_, out) = c.run_pid(&[PYTHON, "-c", "import os; print(os.getppid())"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{}\n", std::process::id()));

    // uname -n and hostname: the home's host name.
    let (_, out) = c.run_pid(&["sh", "-c", "uname -n; hostname"]);
    let h = home_host();
    assert_eq!(text(&out.stdout), format!("{h}\n{h}\n"));
    let (_, out) = c.run_pid(&[PYTHON, "-c", "import socket; print(socket.gethostname())"]);
    assert_eq!(text(&out.stdout), format!("{h}\n"));

    // A child's $PPID is its parent's $$; the child has its own pid.
    let (pid, out) = c.run_pid(&["sh", "-c", "echo $$; sh -c 'echo $PPID; echo $$'"]);
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0], pid.to_string());
    assert_eq!(lines[1], pid.to_string());
    assert_ne!(lines[2], pid.to_string());

    // no_new_privs is the price of the filter.
    let (_, out) = c.run_pid(&["grep", "NoNewPrivs", "/proc/self/status"]);
    assert_eq!(text(&out.stdout), "NoNewPrivs:\t1\n");
}

#[test]
fn remote_processes_signal_themselves_by_their_home_pid() {
    let c = Cluster::up(1);
    // A trap, then the signal through $$ (the home pid).
    let (_, out) = c.run_pid(&[
        "sh",
        "-c",
        "trap 'echo trapped' USR1; kill -USR1 $$; echo after",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "trapped\nafter\n");

    // Death by its own signal, as the proxy reports it.
    let (_, out) = c.run_pid(&["sh", "-c", "kill -TERM $$; echo not reached"]);
    assert_eq!(out.status.signal(), Some(libc::SIGTERM), "{out:?}");
    assert_eq!(text(&out.stdout), "");

    // kill -- -$$: its process group.
    let (_, out) = c.run_pid(&["bash", "-c", "kill -TERM -- -$$; echo not reached"]);
    assert_eq!(out.status.signal(), Some(libc::SIGTERM), "{out:?}");

    // raise() is tgkill(getpid(), gettid()); abort() raises SIGABRT.
    let script = "import os, signal\n\
                  signal.signal(signal.SIGUSR1, lambda s, f: print('handled', flush=True))\n\
                  signal.raise_signal(signal.SIGUSR1)\n\
                  os.kill(os.getpid(), 0)\n\
                  print('alive', flush=True)\n\
                  os.abort()\n";
    let (_, out) = c.run_pid(&[PYTHON, "-c", script]);
    assert_eq!(
        text(&out.stdout),
        "handled\nalive\n",
        "{}",
        text(&out.stderr)
    );
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{out:?}");

    // A child signals its parent by $PPID (the parent's home pid).
    let (_, out) = c.run_pid(&[
        "sh",
        "-c",
        "trap 'echo parent-got-it; exit 0' USR2; sh -c 'kill -USR2 $PPID'; sleep 5; echo missed",
    ]);
    assert_eq!(
        text(&out.stdout),
        "parent-got-it\n",
        "{}",
        text(&out.stderr)
    );
    assert!(out.status.success());

    // None of that went through the home.
    assert!(!c.log("home").contains(" signals "), "{}", c.log("home"));
}

#[test]
fn remote_processes_signal_home_processes_with_their_users_rights() {
    let c = Cluster::up(1);
    // A process of the home (root's), with a trap.
    let mut target = Command::new("bash")
        .args(["-c", trap_script()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_ready(&mut target);
    let tpid = target.id();

    // nobody may not signal it: EPERM, from the home.
    let r = c
        .roam_as_nobody()
        .args(["run", "sh", "-c", &format!("kill -USR1 {tpid}")])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!r.status.success());
    assert!(
        text(&r.stderr).contains("Operation not permitted"),
        "{}",
        text(&r.stderr)
    );
    assert!(
        target.try_wait().unwrap().is_none(),
        "nobody's signal arrived"
    );

    // Its owner may: the signal reaches it at home.
    let r = c.run(&["run", "sh", "-c", &format!("kill -USR1 {tpid}")]);
    assert!(r.status.success(), "{}", text(&r.stderr));
    let (rest, status) = finish(&mut target, out);
    assert_eq!(rest, "got-usr1\n");
    assert!(status.success());
    let log = c.log("home");
    assert!(
        log.contains(&format!("signals {tpid} with USR1 (here): Ok(())")),
        "{log}"
    );
    assert!(log.contains("Err(NotPermitted)"), "{log}");

    // A pid nobody has: ESRCH.
    let r = c.run(&["run", "sh", "-c", "kill -0 2147483000"]);
    assert!(!r.status.success());
    assert!(
        text(&r.stderr).contains("No such process"),
        "{}",
        text(&r.stderr)
    );

    // kill -1 (every process the user may signal) is refused. Signal 0
    // and as nobody, so that a broken supervisor could harm nothing.
    let r = c
        .roam_as_nobody()
        .args(["run", "sh", "-c", "kill -0 -1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!r.status.success());
    assert!(
        text(&r.stderr).contains("Operation not permitted"),
        "{}",
        text(&r.stderr)
    );
}

#[test]
fn remote_processes_signal_remote_processes_by_home_pid() {
    let c = Cluster::up(2);
    // A remote process with a trap, on n2.
    let mut target = c
        .roam()
        .args(["run", "--node", "n2", "bash", "-c", trap_script()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_ready(&mut target);
    let tpid = target.id();
    c.wait_listed(tpid);

    // From n1, by its home pid.
    let r = c.run(&[
        "run",
        "--node",
        "n1",
        "sh",
        "-c",
        &format!("kill -USR1 {tpid}"),
    ]);
    assert!(r.status.success(), "{}", text(&r.stderr));
    let (rest, status) = finish(&mut target, out);
    assert_eq!(rest, "got-usr1\n");
    assert!(status.success());
    let log = c.log("home");
    assert!(
        log.contains(&format!("signals {tpid} with USR1 (remote, on n2): Ok(())")),
        "{log}"
    );

    // Another user's remote process: refused.
    let mut root_job = c.start(&["run", "--node", "n2", "sleep", "30"]);
    let rpid = root_job.id();
    c.wait_listed(rpid);
    let r = c
        .roam_as_nobody()
        .args(["run", "--node", "n1", "sh", "-c", &format!("kill {rpid}")])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!r.status.success());
    assert!(
        text(&r.stderr).contains("Operation not permitted"),
        "{}",
        text(&r.stderr)
    );
    assert!(root_job.try_wait().unwrap().is_none());
    let _ = root_job.kill();
    let _ = root_job.wait();
}

#[test]
fn nodes_without_identity_forwarding_run_processes_as_they_are() {
    let c = Cluster::with_identity(1, IdentityMode::Node);
    let (pid, out) = c.run_pid(&[
        "sh",
        "-c",
        "echo $$; uname -n; grep NoNewPrivs /proc/self/status",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    assert_ne!(lines[0], pid.to_string());
    assert_eq!(lines[1], "n1");
    assert_eq!(lines[2], "NoNewPrivs:\t0");
}

/// The cost of a forwarded identity call: getpid 100000 times on a node,
/// against the same here. Printed (`--nocapture`), not judged: speed is
/// the benchmark's business (docs/benchmarks.md); the target is
/// under 50 us.
#[test]
fn forwarded_getpid_cost() {
    let prog =
        foreign::build_native("getpid_loop", Link::Dynamic).unwrap_or_else(|e| panic!("{e}"));
    let c = Cluster::up(1);
    let p = prog.to_str().unwrap();
    let local = Command::new(&prog).arg("100000").output().unwrap();
    let (pid, out) = c.run_pid(&[p, "100000"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let fields: Vec<String> = text(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        fields[0],
        pid.to_string(),
        "every call answered with the home pid"
    );
    let local_ns: f64 = text(&local.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let remote_ns: f64 = fields[1].parse().unwrap();
    eprintln!(
        "getpid: {:.2} us forwarded on a node, {:.3} us here ({:.0}x)",
        remote_ns / 1000.0,
        local_ns / 1000.0,
        remote_ns / local_ns.max(1.0)
    );
    wait_until(
        "the supervisor thread to end",
        Duration::from_secs(5),
        || {
            // The node's supervisor threads are named roam-id-PID; once the
            // process is gone, so is its thread.
            let node_pid = c.tb.daemon_pid("n1").unwrap();
            let threads = std::fs::read_dir(format!("/proc/{node_pid}/task")).unwrap();
            !threads.filter_map(Result::ok).any(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|c| c.starts_with("roam-id-"))
            })
        },
    );
}

/// Under a runner (qemu-user on an emulated node) the filter sees qemu's
/// system calls, the host's: a foreign program sees its home pid too.
#[test]
fn foreign_programs_see_their_home_pid() {
    let prog =
        foreign::build("aarch64", "getpid_loop", Link::Static).unwrap_or_else(|e| panic!("{e}"));
    let mut opts = TestbedOpts::new(1, bin_dir().join("roamd"));
    opts.arch = vec![roam_elf::Arch::Aarch64];
    let c = Cluster {
        tb: Testbed::up(opts).expect("testbed up"),
    };
    c.tb.wait_nodes_up(1, Duration::from_secs(20))
        .expect("nodes up");
    let (pid, out) = c.run_pid(&[prog.to_str().unwrap(), "20000"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let fields: Vec<String> = text(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(fields[0], pid.to_string());
    eprintln!("getpid under qemu-aarch64: {} ns forwarded", fields[1]);
}
