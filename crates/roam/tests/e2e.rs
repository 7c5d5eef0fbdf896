//! End-to-end tests of the cluster foundation on the netns testbed: real
//! roamd daemons in network namespaces, the real `roam` CLI, real processes.
//!
//! Each test builds its own testbed (they run in parallel with distinct
//! ids) and tears it down on drop, even when the test fails.

mod files;
mod hetero;
mod identity;
mod migrate;
mod stage;

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use roam_proto::types::{NodeState, ProcInfo};
use roam_testbed::{Testbed, TestbedOpts};

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_roam"))
        .parent()
        .expect("binary has a directory")
        .to_owned()
}

struct Cluster {
    tb: Testbed,
}

impl Cluster {
    fn up(nodes: u32) -> Cluster {
        Self::with(nodes, 1000, 4000)
    }

    fn with(nodes: u32, heartbeat_ms: u64, timeout_ms: u64) -> Cluster {
        let mut opts = TestbedOpts::new(nodes, bin_dir().join("roamd"));
        opts.heartbeat_ms = heartbeat_ms;
        opts.timeout_ms = timeout_ms;
        let tb = Testbed::up(opts).expect("testbed up");
        tb.wait_nodes_up(nodes as usize, Duration::from_secs(20))
            .expect("nodes up");
        Cluster { tb }
    }

    fn roam(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_roam"));
        c.env("ROAM_SOCKET", self.tb.socket());
        c.current_dir("/");
        c
    }

    /// Starts `roam ARGS` in the background: stdin from /dev/null, stdout
    /// and stderr piped (the tests' programs write little).
    fn start(&self, args: &[&str]) -> Child {
        self.roam()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("roam starts")
    }

    /// `roam` as the unprivileged user nobody (no supplementary groups).
    fn roam_as_nobody(&self) -> Command {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_roam"))
            .env("ROAM_SOCKET", self.tb.socket())
            .current_dir("/");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.roam()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("roam runs")
    }

    fn ps(&self) -> Vec<ProcInfo> {
        let out = self.run(&["ps", "--json"]);
        assert!(out.status.success(), "roam ps: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("ps json")
    }

    fn nodes(&self) -> Vec<roam_proto::types::NodeInfo> {
        let out = self.run(&["nodes", "--json"]);
        assert!(out.status.success(), "roam nodes: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("nodes json")
    }

    /// Waits until `roam ps` lists the process with this home pid.
    fn wait_listed(&self, pid: u32) -> ProcInfo {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(p) = self.ps().into_iter().find(|p| p.home_pid == pid) {
                return p;
            }
            assert!(Instant::now() < deadline, "pid {pid} never listed");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.tb.dir().join(format!("{name}.log"))).unwrap_or_default()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Waits for a child with a deadline; kills it and fails on timeout.
fn wait_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child {} did not finish within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn run_streams_and_exit_statuses() {
    let c = Cluster::up(1);
    let out = c.run(&["run", "echo", "hello", "world"]);
    assert_eq!(text(&out.stdout), "hello world\n");
    assert!(out.status.success());

    // stdout and stderr separate, exit code carried.
    let out = c.run(&["run", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(text(&out.stdout), "out\n");
    assert_eq!(text(&out.stderr), "err\n");
    assert_eq!(out.status.code(), Some(7));

    // Death by signal is the proxy's death by the same signal.
    let out = c.run(&["run", "sh", "-c", "kill -SEGV $$"]);
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV));
    let out = c.run(&["run", "sh", "-c", "kill -KILL $$"]);
    assert_eq!(out.status.signal(), Some(libc::SIGKILL));

    // Programs that cannot run: the shell's codes and a clear message.
    let out = c.run(&["run", "/no/such/program"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(
        text(&out.stderr).contains("No such file or directory"),
        "{}",
        text(&out.stderr)
    );
    let not_exec = c.tb.dir().join("not-executable");
    std::fs::write(&not_exec, "#!/bin/sh\necho hi\n").unwrap();
    let out = c.run(&["run", not_exec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(126));
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn stdin_is_binary_safe_both_ways() {
    let c = Cluster::up(1);
    // 6 MiB of every byte value, more than the flow-control window.
    let data: Vec<u8> = (0..6 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut child = c
        .roam()
        .args(["run", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = {
        let data = data.clone();
        std::thread::spawn(move || {
            stdin.write_all(&data).unwrap();
        })
    };
    let mut got = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(30));
    assert!(status.success());
    assert_eq!(got.len(), data.len());
    assert!(got == data, "bytes differ");

    // Sustained pressure: 256 MiB into a remote reader, far beyond every
    // buffer on the way, so the node's pipe fills and drains many times.
    let mut child = c
        .roam()
        .args(["run", "wc", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let block = vec![0u8; 1 << 20];
        for _ in 0..256 {
            stdin.write_all(&block).unwrap();
        }
    });
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    writer.join().unwrap();
    assert!(wait_timeout(&mut child, Duration::from_secs(60)).success());
    assert_eq!(out.trim(), (256u64 << 20).to_string());

    // End of file reaches the remote process.
    let mut child = c
        .roam()
        .args(["run", "wc", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"12345").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout).trim(), "5");
}

#[test]
fn caller_context_and_credentials() {
    let c = Cluster::up(1);
    let dir = c.tb.dir().to_owned();
    let out = c
        .roam()
        .args(["run", "sh", "-c", "echo $ROAM_E2E; pwd; umask"])
        .env("ROAM_E2E", "from-the-caller")
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let s = text(&out.stdout);
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines[0], "from-the-caller");
    assert_eq!(Path::new(lines[1]), dir);
    // The umask of the test process (022 unless changed).
    let ours = roam_sys::cred::current_umask();
    assert_eq!(lines[2], format!("{ours:04o}"));

    // An unprivileged caller's process runs as that user, not as root.
    let out = c
        .roam_as_nobody()
        .args(["run", "sh", "-c", "id -u; id -g; id -G"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "65534\n65534\n65534\n");
}

#[test]
fn ps_kill_and_the_proxys_identity() {
    let c = Cluster::up(2);
    let mut child = c.start(&[
        "run",
        "sh",
        "-c",
        "trap 'echo got-usr1' USR1; echo ready; while :; do sleep 0.05; done",
    ]);
    let pid = child.id();
    let p = c.wait_listed(pid);
    assert!(p.node == "n1" || p.node == "n2");
    assert!(p.command.starts_with("sh -c trap"));
    assert_eq!(p.uid, 0);
    assert!(p.node_pid > 0);

    // ps and top on the home see the proxy under the program's name.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "sh");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(cmdline.starts_with(b"sh\0-c\0trap"), "{}", text(&cmdline));

    // A signal to the proxy reaches the remote process (once its trap is
    // set: before, USR1 would end it).
    let mut stdout = child.stdout.take().unwrap();
    let mut ready = [0u8; 6];
    stdout.read_exact(&mut ready).unwrap();
    assert_eq!(&ready, b"ready\n");
    let status = Command::new("kill")
        .args(["-USR1", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut buf = [0u8; 9];
    stdout.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"got-usr1\n");

    // roam kill takes home pids.
    let out = c.run(&["kill", "-TERM", &pid.to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status = wait_timeout(&mut child, Duration::from_secs(10));
    assert_eq!(status.signal(), Some(libc::SIGTERM));

    let out = c.run(&["kill", "999999"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no remote process with home pid 999999"));
    let out = c.run(&["kill", "-NOPE", "1"]);
    assert!(text(&out.stderr).contains("unknown signal"));
}

#[test]
fn a_stop_signal_to_the_proxy_stops_the_job_without_a_terminal() {
    let c = Cluster::up(1);
    let mut child = c.start(&["run", "sleep", "30"]);
    let pid = child.id();
    let p = c.wait_listed(pid);
    let state = |pid: u32| {
        roam_sys::procfs::proc_stat(pid)
            .map(|s| s.state)
            .unwrap_or('?')
    };
    // As Ctrl-Z would: SIGTSTP to the proxy stops the remote process, and
    // the proxy mirrors the stop so a shell sees the job stopped.
    let kill = |sig: &str| {
        assert!(Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success())
    };
    kill("-TSTP");
    wait_until("remote stopped", Duration::from_secs(10), || {
        state(p.node_pid) == 'T'
    });
    wait_until("proxy stopped", Duration::from_secs(10), || {
        state(pid) == 'T'
    });
    kill("-CONT");
    wait_until("remote running", Duration::from_secs(10), || {
        state(p.node_pid) == 'S'
    });
    assert!(c.run(&["kill", &pid.to_string()]).status.success());
    let status = wait_timeout(&mut child, Duration::from_secs(10));
    assert_eq!(status.signal(), Some(libc::SIGTERM));
}

#[test]
fn users_act_on_their_own_processes_only() {
    let c = Cluster::up(1);
    let mut root_job = c.start(&["run", "sleep", "30"]);
    let pid = root_job.id();
    c.wait_listed(pid);
    let as_nobody = |args: &[&str]| {
        c.roam_as_nobody()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = as_nobody(&["kill", "-KILL", &pid.to_string()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("belongs to another user"),
        "{}",
        text(&out.stderr)
    );
    let out = as_nobody(&["ps", "--json"]);
    let procs: Vec<ProcInfo> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        procs.iter().all(|p| p.home_pid != pid),
        "nobody sees root's process"
    );
    let out = as_nobody(&["mode", "parallel"]);
    assert!(text(&out.stderr).contains("only root"));
    // Root sees and acts on everyone's.
    assert!(c.ps().iter().any(|p| p.home_pid == pid));
    assert!(c.run(&["kill", "-KILL", &pid.to_string()]).status.success());
    let status = wait_timeout(&mut root_job, Duration::from_secs(10));
    assert_eq!(status.signal(), Some(libc::SIGKILL));
}

#[test]
fn sigkill_of_the_proxy_kills_the_remote_process() {
    let c = Cluster::up(1);
    let mut child = c.start(&["run", "sleep", "60"]);
    let pid = child.id();
    let p = c.wait_listed(pid);
    assert!(roam_sys::procfs::pid_alive(p.node_pid));
    child.kill().unwrap();
    child.wait().unwrap();
    wait_until("remote process killed", Duration::from_secs(10), || {
        !roam_sys::procfs::pid_alive(p.node_pid)
            || roam_sys::procfs::proc_stat(p.node_pid).is_ok_and(|s| s.state == 'Z')
    });
    wait_until("ps forgets it", Duration::from_secs(10), || {
        c.ps().iter().all(|q| q.home_pid != pid)
    });
}

#[test]
fn placement_modes_and_jobs() {
    let c = Cluster::up(2);
    assert!(c.run(&["mode", "parallel"]).status.success());
    assert_eq!(text(&c.run(&["mode"]).stdout).trim(), "parallel");
    let mut a = c.start(&["run", "sleep", "30"]);
    let pa = c.wait_listed(a.id());
    let mut b = c.start(&["run", "sleep", "30"]);
    let pb = c.wait_listed(b.id());
    assert_ne!(pa.node, pb.node, "parallel mode: one process per node");
    let out = c.run(&["run", "true"]);
    assert_eq!(out.status.code(), Some(255));
    assert!(text(&out.stderr).contains("busy"), "{}", text(&out.stderr));
    // Per-run mode overrides the cluster's.
    let out = c.run(&["run", "--mode", "balance", "echo", "ok"]);
    assert_eq!(text(&out.stdout), "ok\n");
    assert!(c.run(&["mode", "balance"]).status.success());
    let out = c.run(&["run", "echo", "ok"]);
    assert_eq!(text(&out.stdout), "ok\n");
    for ch in [&mut a, &mut b] {
        ch.kill().unwrap();
        ch.wait().unwrap();
    }
    wait_until("sessions gone", Duration::from_secs(10), || {
        c.ps().is_empty()
    });

    // Balance spreads processes over equally loaded nodes.
    let mut kids: Vec<Child> = (0..4).map(|_| c.start(&["run", "sleep", "30"])).collect();
    for k in &kids {
        c.wait_listed(k.id());
    }
    let ps = c.ps();
    let on_n1 = ps.iter().filter(|p| p.node == "n1").count();
    assert_eq!(on_n1, 2, "balanced 2/2: {ps:?}");
    for k in &mut kids {
        k.kill().unwrap();
        k.wait().unwrap();
    }
    wait_until("sessions gone", Duration::from_secs(10), || {
        c.ps().is_empty()
    });

    // -N: one instance per node, each told its rank.
    let out = c.run(&[
        "run",
        "-N",
        "2",
        "sh",
        "-c",
        "echo rank=$ROAM_RANK size=$ROAM_SIZE node=$ROAM_NODE",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    lines.sort();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].starts_with("rank=0 size=2 node=n"));
    assert!(lines[1].starts_with("rank=1 size=2 node=n"));
    assert_ne!(
        lines[0][lines[0].len() - 2..],
        lines[1][lines[1].len() - 2..]
    );
    let out = c.run(&["run", "-N", "3", "true"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("3 nodes wanted but only 2 are free"));
    // A failing rank decides the job's status.
    let out = c.run(&["run", "-N", "2", "sh", "-c", "exit $((ROAM_RANK + 3))"]);
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn unknown_node_and_bad_requests() {
    let c = Cluster::up(1);
    let out = c.run(&["run", "--node", "nope", "true"]);
    assert_eq!(out.status.code(), Some(255));
    assert!(text(&out.stderr).contains("no node named 'nope' (nodes: n1)"));
    let out = c.run(&["run", "--node", "n1", "echo", "on-n1"]);
    assert_eq!(text(&out.stdout), "on-n1\n");

    // Garbage on the local socket: the daemon answers or drops, and lives.
    // (The daemon may drop us before the second write: ignore its EPIPE.)
    let mut s = std::os::unix::net::UnixStream::connect(c.tb.socket()).unwrap();
    let _ = s.write_all(&[0xff; 64]);
    let _ = s.write_all(&u32::MAX.to_le_bytes());
    drop(s);
    let mut s = std::os::unix::net::UnixStream::connect(c.tb.socket()).unwrap();
    let _ = s.write_all(&u32::MAX.to_le_bytes());
    drop(s);
    // Another protocol version is refused with a clear answer.
    let mut s = std::os::unix::net::UnixStream::connect(c.tb.socket()).unwrap();
    let hello = roam_proto::frame::encode_hello_version("x", 99, &"hi".to_string()).unwrap();
    s.write_all(&hello).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let reply: roam_proto::local::LocalHelloReply =
        roam_proto::decode_hello("reply", &answer[4..]).expect("a hello reply");
    match reply {
        roam_proto::local::LocalHelloReply::Refused { reason } => {
            assert!(reason.contains("this client speaks version 99"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(c.nodes().len(), 1);
}

#[test]
fn a_dead_node_ends_its_proxies_and_the_cluster_carries_on() {
    let mut c = Cluster::with(2, 200, 1000);
    let mut child = c.start(&["run", "--node", "n1", "sleep", "60"]);
    c.wait_listed(child.id());
    let killed = Instant::now();
    c.tb.kill_daemon("n1").unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(10));
    assert!(
        killed.elapsed() < Duration::from_secs(4),
        "ended within the timeout"
    );
    assert_eq!(status.code(), Some(255));
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("node n1 is down"), "{err}");
    wait_until("n1 down", Duration::from_secs(5), || {
        c.nodes()
            .iter()
            .any(|n| n.name == "n1" && n.state == NodeState::Down)
    });
    // The rest of the cluster works.
    let out = c.run(&["run", "echo", "still-here"]);
    assert_eq!(text(&out.stdout), "still-here\n");
    let out = c.run(&["run", "--node", "n1", "true"]);
    assert!(
        text(&out.stderr).contains("node 'n1' is down"),
        "{}",
        text(&out.stderr)
    );
    // The node rejoins and takes new work.
    c.tb.start_daemon("n1").unwrap();
    wait_until("n1 back", Duration::from_secs(10), || {
        c.nodes()
            .iter()
            .any(|n| n.name == "n1" && n.state == NodeState::Up)
    });
    let out = c.run(&["run", "--node", "n1", "echo", "back"]);
    assert_eq!(text(&out.stdout), "back\n");
}

#[test]
fn a_node_that_leaves_ends_its_proxies_at_once() {
    // A long timeout: only the leave message can end the proxy quickly.
    let mut c = Cluster::with(2, 1000, 30_000);
    let mut child = c.start(&["run", "--node", "n1", "sleep", "60"]);
    let p = c.wait_listed(child.id());
    let t = Instant::now();
    c.tb.stop_daemon("n1").unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(10));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(status.code(), Some(255));
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("node n1 is down (it left"), "{err}");
    assert!(!roam_sys::procfs::pid_alive(p.node_pid));
    assert!(c
        .nodes()
        .iter()
        .any(|n| n.name == "n1" && n.state == NodeState::Down));
}

#[test]
fn a_cut_link_ends_proxies_and_the_orphan_is_killed_on_return() {
    let c = Cluster::with(2, 200, 1000);
    cut_then_orphan_killed(&c);
}

/// A process on n1 whose link is cut: its proxy ends (255); once the link
/// is back, n1 rejoins and the home tells it to forget the process, which
/// it kills.
fn cut_then_orphan_killed(c: &Cluster) {
    let mut child = c.start(&["run", "--node", "n1", "sleep", "60"]);
    let p = c.wait_listed(child.id());
    c.tb.cut_link("n1").unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(10));
    c.tb.heal_link("n1").unwrap();
    assert_eq!(status.code(), Some(255));
    wait_until("n1 back", Duration::from_secs(20), || {
        c.nodes()
            .iter()
            .any(|n| n.name == "n1" && n.state == NodeState::Up)
    });
    wait_until("orphan killed", Duration::from_secs(10), || {
        !roam_sys::procfs::pid_alive(p.node_pid)
            || roam_sys::procfs::proc_stat(p.node_pid).is_ok_and(|s| s.state == 'Z')
    });
}

/// A node slow to notice the home's silence (its own timeout a minute)
/// keeps its connection through a short cut, as TCP does: the home,
/// having declared it down, ends that connection itself, so the node
/// rejoins and is told to kill the process whose proxy is gone, instead
/// of running on unseen.
#[test]
fn a_node_declared_down_rejoins_even_if_its_connection_survived_the_cut() {
    let mut c = Cluster::with(1, 200, 1000);
    c.tb.stop_daemon("n1").unwrap();
    let path = c.tb.config_path("n1").unwrap();
    let cfg = std::fs::read_to_string(&path).unwrap();
    assert!(cfg.contains("timeout_ms = 1000"), "{cfg}");
    std::fs::write(
        &path,
        cfg.replace("timeout_ms = 1000", "timeout_ms = 60000"),
    )
    .unwrap();
    c.tb.start_daemon("n1").unwrap();
    c.tb.wait_nodes_up(1, Duration::from_secs(20)).unwrap();
    cut_then_orphan_killed(&c);
    let log = c.log("n1");
    assert!(
        !log.contains("silent"),
        "the node noticed by itself:\n{log}"
    );
}

#[test]
fn processes_survive_a_home_restart() {
    let mut c = Cluster::with(1, 200, 1000);
    let mut child = c.start(&[
        "run",
        "sh",
        "-c",
        "for i in $(seq 1 40); do echo line-$i; sleep 0.05; done; exit 5",
    ]);
    let pid = child.id();
    c.wait_listed(pid);
    c.tb.kill_daemon("home").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    c.tb.start_daemon("home").unwrap();
    c.tb.wait_nodes_up(1, Duration::from_secs(10)).unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(20));
    let want: String = (1..=40).map(|i| format!("line-{i}\n")).collect();
    assert_eq!(
        out,
        want,
        "no line lost or doubled; home log:\n{}",
        c.log("home")
    );
    assert_eq!(status.code(), Some(5));
}

#[test]
fn ps_shows_processes_again_after_a_home_restart() {
    let mut c = Cluster::with(1, 200, 1000);
    let mut child = c.start(&["run", "sleep", "30"]);
    let pid = child.id();
    let before = c.wait_listed(pid);
    c.tb.stop_daemon("home").unwrap();
    c.tb.start_daemon("home").unwrap();
    c.tb.wait_nodes_up(1, Duration::from_secs(10)).unwrap();
    let after = c.wait_listed(pid);
    assert_eq!(after.node_pid, before.node_pid);
    assert!(c.run(&["kill", &pid.to_string()]).status.success());
    let status = wait_timeout(&mut child, Duration::from_secs(10));
    assert_eq!(status.signal(), Some(libc::SIGTERM));
}

#[test]
fn strangers_and_wrong_versions_are_refused() {
    let c = Cluster::up(1);
    let addr: std::net::SocketAddr = format!("10.77.{}.1:7170", c.tb.id()).parse().unwrap();
    // A plain TCP peer without the cluster's certificate: dropped before
    // any request is read.
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(b"\x10\x00\x00\x00ROAM\x01\x00\x00\x00hello there!");
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    assert!(
        n == 0 || buf[0] == 0x15,
        "a TLS alert or nothing, got {n} bytes"
    );

    // A peer with a valid certificate but another protocol version.
    let creds = c.tb.dir().join("creds");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let reply = rt.block_on(async {
        let id = roam_net::tls::Identity::load(
            &creds.join("ca.pem"),
            &creds.join("n1.pem"),
            &creds.join("n1.key"),
        )
        .unwrap();
        let stream = roam_net::tls::connect(&id, addr, "home", Duration::from_secs(5))
            .await
            .unwrap();
        let (r, w) = tokio::io::split(stream);
        let mut w = roam_net::framed::FrameWriter::new(w);
        let frame =
            roam_proto::frame::encode_hello_version("x", 99, &"future".to_string()).unwrap();
        w.write_raw(&frame).await.unwrap();
        let mut r = roam_net::framed::FrameReader::new(r);
        r.read_hello::<roam_proto::link::LinkHelloReply>("reply")
            .await
    });
    match reply {
        Ok(Some(roam_proto::link::LinkHelloReply::Refused { reason })) => {
            assert!(reason.contains("version mismatch"), "{reason}");
            assert!(reason.contains("version 99"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    wait_until("home logs the refusal", Duration::from_secs(5), || {
        c.log("home").contains("speaks version 99")
    });
    // The cluster is unharmed.
    assert_eq!(text(&c.run(&["run", "echo", "ok"]).stdout), "ok\n");
}
