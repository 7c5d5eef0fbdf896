//! The testbed for real: bridges, network and mount namespaces, detached
//! daemons. Needs root, `ip` (iproute2) and `ping` (iputils-ping).
//!
//! roamd is played by stand-ins: a shell script that sleeps, and this test
//! binary itself re-run as a fake roamd (see [`fake_roamd_entry`]) that
//! speaks just enough of the local protocol, and whose nodes really connect
//! over TCP from their namespaces to the home's listen address.
//!
//! Every test owns its testbed through a [`Testbed`], whose Drop tears it
//! down even when an assertion fails; ids are unique, so tests run in
//! parallel.

mod foreign;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::sleep;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use roam_core::config::Config;
use roam_proto::local::{LocalHello, LocalHelloReply, LocalMsg};
use roam_proto::types::{ArchInfo, NodeInfo, NodeLoad, NodeState};
use roam_proto::{decode_body, decode_hello, encode_frame, encode_hello};
use roam_testbed::{down_id, list, Testbed, TestbedError, TestbedOpts};

// ---------------------------------------------------------------- helpers

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Skips a test (with a message) where it cannot run.
macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: the testbed needs root");
            return;
        }
    };
}

/// A directory for this test binary's scripts, outside /tmp (nodes get a
/// fresh /tmp) and private to this process.
fn scripts_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("roam-testbed-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

/// Writes an executable script once per test process. Never rewritten in
/// place: a daemon of another test may be starting from it (a shell reading
/// a script while it is truncated runs an empty script).
fn script(name: &str, body: &str) -> PathBuf {
    static WRITTEN: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut written = WRITTEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = written.get(name) {
        return path.clone();
    }
    let path = scripts_dir().join(name);
    let tmp = scripts_dir().join(format!(".{name}.tmp"));
    std::fs::write(&tmp, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    written.insert(name.to_string(), path.clone());
    path
}

/// A roamd that does nothing but stay alive.
fn sleep_roamd() -> PathBuf {
    script("sleep-roamd", "exec sleep 1000000")
}

/// This test binary, re-run as a fake roamd. It is named through
/// `/proc/PID/exe` of this process, which resolves even inside a node
/// whose fresh `/tmp` hides the binary's path (a checkout under /tmp).
fn fake_roamd() -> PathBuf {
    script(
        "fake-roamd",
        &format!(
            "ROAM_FAKE_ROAMD_CONFIG=\"$2\" exec /proc/{}/exe --exact fake_roamd_entry --nocapture --test-threads=1",
            std::process::id()
        ),
    )
}

/// Held while a test brings a testbed up, and from tearing one down until it
/// has checked that everything is gone: ids are reused at once, so another
/// test's new testbed could otherwise take the id in between. A file lock,
/// so that it also holds between test processes (nextest runs each test in
/// a process of its own); every call opens the file anew, and locks on
/// different open files exclude each other within a process too.
fn ids_lock() -> Flock<File> {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("roam-testbed-ids.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap();
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap()
}

fn up(o: TestbedOpts) -> Testbed {
    let _ids = ids_lock();
    Testbed::up(o).unwrap()
}

fn opts(nodes: u32, roamd: PathBuf) -> TestbedOpts {
    let mut o = TestbedOpts::new(nodes, roamd);
    o.wait_ready = false;
    o
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

fn ping(cmd: &mut Command, addr: impl std::fmt::Display) -> bool {
    run(cmd.args(["-c1", "-W1", "-n", "-q", &addr.to_string()]))
        .status
        .success()
}

/// Pings until it works (up to `tries` times).
fn ping_eventually(tb: &Testbed, from: &str, addr: impl std::fmt::Display + Copy) -> bool {
    (0..5).any(|_| ping(&mut tb.command_in(from, "ping").unwrap(), addr))
}

fn host_netns() -> String {
    String::from_utf8(run(Command::new("ip").args(["netns", "list"])).stdout).unwrap()
}

fn link_exists(name: &str) -> bool {
    run(Command::new("ip").args(["link", "show", "dev", name]))
        .status
        .success()
}

fn proc_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s.rsplit_once(')').unwrap().1.trim_start().chars().next();
            !matches!(state, Some('Z' | 'X'))
        }
        Err(_) => false,
    }
}

fn ns_ino(path: impl AsRef<Path>) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().ino()
}

/// Everything a testbed made is gone.
fn assert_gone(id: u32, netns: &[String], pids: &[u32]) {
    assert!(
        !Path::new(&format!("/run/roam-testbed/{id}")).exists(),
        "state dir of testbed {id} left behind"
    );
    let listed = host_netns();
    for ns in netns {
        assert!(!listed.contains(ns.as_str()), "netns {ns} left: {listed}");
    }
    assert!(!link_exists(&format!("roamtb{id}")), "bridge left behind");
    for i in 1..=netns.len() {
        assert!(!link_exists(&format!("rtb{id}-{i}")), "veth left behind");
    }
    for p in pids {
        assert!(!proc_alive(*p), "process {p} still runs");
    }
}

fn all_pids(tb: &Testbed) -> Vec<u32> {
    std::iter::once("home".to_string())
        .chain(tb.node_names())
        .filter_map(|n| tb.daemon_pid(&n))
        .collect()
}

// ------------------------------------------------------------------ tests

#[test]
fn up_builds_a_cluster_of_namespaces_and_down_removes_it() {
    require_root!();
    let tb = up(opts(2, sleep_roamd()));
    let id = tb.id();
    assert!((1..=200).contains(&id));
    assert!(list().contains(&id));
    let dir = tb.dir().to_path_buf();
    assert_eq!(dir, PathBuf::from(format!("/run/roam-testbed/{id}")));
    assert_eq!(tb.socket(), dir.join("home.sock"));
    assert_eq!(tb.node_names(), ["n1", "n2"]);
    assert_eq!(
        tb.node_addr("home"),
        Some(format!("10.77.{id}.1").parse().unwrap())
    );
    assert_eq!(
        tb.node_addr("n2"),
        Some(format!("10.77.{id}.12").parse().unwrap())
    );
    assert_eq!(tb.node_addr("n3"), None);
    assert_eq!(tb.netns("n1").unwrap(), format!("roamtb{id}-n1"));
    assert_eq!(tb.netns("home"), None);

    // State directory: credentials, configs roamd accepts, state file, logs.
    for f in [
        "creds/ca.pem",
        "creds/ca.key",
        "creds/home.pem",
        "creds/n1.key",
        "creds/n2.pem",
    ] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    let home = Config::load(&dir.join("home.toml")).unwrap();
    assert!(home.role.is_home());
    assert_eq!(
        home.home.unwrap().listen.to_string(),
        format!("10.77.{id}.1:7170")
    );
    let n2 = Config::load(&dir.join("n2.toml")).unwrap();
    assert_eq!(n2.name, "n2");
    assert_eq!(
        n2.node.unwrap().home.to_string(),
        format!("10.77.{id}.1:7170")
    );
    assert_eq!(n2.socket, dir.join("n2.sock"));
    assert!(n2.tls.cert.exists());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("testbed.json")).unwrap()).unwrap();
    assert_eq!(json["id"], id);
    assert_eq!(json["bridge"], format!("roamtb{id}"));
    let log = std::fs::read_to_string(dir.join("n1.log")).unwrap();
    assert!(log.contains("starting n1"), "{log}");

    // Network: namespaces, bridge with its address, veths on it.
    let netns: Vec<String> = ["n1", "n2"].iter().map(|n| tb.netns(n).unwrap()).collect();
    let listed = host_netns();
    assert!(
        netns.iter().all(|n| listed.contains(n.as_str())),
        "{listed}"
    );
    let addr =
        run(Command::new("ip").args(["-o", "-4", "addr", "show", "dev", &format!("roamtb{id}")]));
    assert!(
        String::from_utf8_lossy(&addr.stdout).contains(&format!("10.77.{id}.1/24")),
        "{addr:?}"
    );
    let eth0 = run(tb
        .command_in("n2", "ip")
        .unwrap()
        .args(["-o", "-4", "addr", "show", "dev", "eth0"]));
    assert!(
        String::from_utf8_lossy(&eth0.stdout).contains(&format!("10.77.{id}.12/24")),
        "{eth0:?}"
    );

    // Daemons: detached (not our children, own session), each node's in its
    // network namespace and a mount namespace of its own.
    let pids = all_pids(&tb);
    assert_eq!(pids.len(), 3);
    for p in &pids {
        assert!(proc_alive(*p));
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap();
        let f: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        assert_ne!(f[1], std::process::id().to_string(), "daemon is our child");
    }
    let n1 = tb.daemon_pid("n1").unwrap();
    let n2 = tb.daemon_pid("n2").unwrap();
    let home_pid = tb.daemon_pid("home").unwrap();
    assert_eq!(
        ns_ino(format!("/proc/{n1}/ns/net")),
        ns_ino(format!("/run/netns/{}", netns[0]))
    );
    assert_eq!(
        ns_ino(format!("/proc/{home_pid}/ns/net")),
        ns_ino("/proc/self/ns/net")
    );
    assert_eq!(
        ns_ino(format!("/proc/{home_pid}/ns/mnt")),
        ns_ino("/proc/self/ns/mnt")
    );
    let mnt = |p: u32| ns_ino(format!("/proc/{p}/ns/mnt"));
    assert_ne!(mnt(n1), ns_ino("/proc/self/ns/mnt"));
    assert_ne!(mnt(n1), mnt(n2));

    // Reachability: host → node, node → node, node → home.
    assert!(ping(&mut Command::new("ping"), tb.node_addr("n1").unwrap()));
    assert!(ping_eventually(&tb, "n1", tb.node_addr("n2").unwrap()));
    assert!(ping_eventually(&tb, "n2", tb.node_addr("home").unwrap()));

    // Private /tmp: a node's file is seen by that node only, and a host file
    // by no node.
    let name = format!("roam-testbed-{id}-{}", std::process::id());
    let out = run(tb
        .command_in("n1", "sh")
        .unwrap()
        .args(["-c", &format!("echo from-n1 > /tmp/{name}")]));
    assert!(out.status.success(), "{out:?}");
    let out = run(tb
        .command_in("n1", "cat")
        .unwrap()
        .arg(format!("/tmp/{name}")));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "from-n1");
    assert!(
        !Path::new("/tmp").join(&name).exists(),
        "n1's file is on the host"
    );
    let out = run(tb
        .command_in("n2", "test")
        .unwrap()
        .args(["-e", &format!("/tmp/{name}")]));
    assert!(!out.status.success(), "n1's file is in n2");
    let host_file = Path::new("/tmp").join(format!("{name}-host"));
    std::fs::write(&host_file, "host").unwrap();
    let out = run(tb
        .command_in("n1", "test")
        .unwrap()
        .args(["-e", &host_file.to_string_lossy()]));
    std::fs::remove_file(&host_file).unwrap();
    assert!(!out.status.success(), "the host's /tmp is visible in n1");
    // The node's mount table: a tmpfs on /tmp, and no copy of the netns
    // mounts (which would keep deleted namespaces alive).
    let out = run(tb
        .command_in("n1", "cat")
        .unwrap()
        .arg("/proc/self/mountinfo"));
    let mountinfo = String::from_utf8_lossy(&out.stdout);
    assert!(
        mountinfo
            .lines()
            .any(|l| l.split(' ').nth(4) == Some("/tmp") && l.contains(" - tmpfs ")),
        "{mountinfo}"
    );
    assert!(!mountinfo.contains("/run/netns"), "{mountinfo}");
    // ... but the rest of the file system is shared (the state dir, for one).
    let out = run(tb
        .command_in("n1", "test")
        .unwrap()
        .args(["-e", &dir.join("n1.toml").to_string_lossy()]));
    assert!(out.status.success());

    let _ids = ids_lock();
    tb.down().unwrap();
    assert_gone(id, &netns, &pids);
}

#[test]
fn cut_link_isolates_a_node_and_heal_link_restores_it() {
    require_root!();
    let tb = up(opts(2, sleep_roamd()));
    let n2 = tb.node_addr("n2").unwrap();
    assert!(ping_eventually(&tb, "n1", n2));
    tb.cut_link("n2").unwrap();
    assert!(!ping(&mut tb.command_in("n1", "ping").unwrap(), n2));
    assert!(!ping(&mut Command::new("ping"), n2));
    // Others are unaffected.
    assert!(ping(&mut Command::new("ping"), tb.node_addr("n1").unwrap()));
    tb.heal_link("n2").unwrap();
    assert!(ping_eventually(&tb, "n1", n2));
    assert!(ping_eventually(&tb, "home", n2));
    assert!(matches!(
        tb.cut_link("n9"),
        Err(TestbedError::UnknownNode { .. })
    ));
}

#[test]
fn daemons_can_be_killed_stopped_and_restarted() {
    require_root!();
    let mut tb = up(opts(1, sleep_roamd()));
    let old = tb.daemon_pid("n1").unwrap();
    let marker = format!("/tmp/roam-testbed-restart-{}", std::process::id());
    let out = run(tb.command_in("n1", "touch").unwrap().arg(&marker));
    assert!(out.status.success());

    tb.kill_daemon("n1").unwrap();
    assert!(!proc_alive(old));
    assert_eq!(tb.daemon_pid("n1"), None);
    assert!(matches!(
        tb.command_in("n1", "true"),
        Err(TestbedError::NotRunning { .. })
    ));
    assert!(matches!(
        tb.kill_daemon("n1"),
        Err(TestbedError::NotRunning { .. })
    ));

    // A restarted node gets a new mount namespace with a fresh /tmp.
    tb.start_daemon("n1").unwrap();
    let new = tb.daemon_pid("n1").unwrap();
    assert_ne!(new, old);
    let out = run(tb.command_in("n1", "test").unwrap().args(["-e", &marker]));
    assert!(!out.status.success(), "/tmp survived a restart");
    assert!(matches!(
        tb.start_daemon("n1"),
        Err(TestbedError::AlreadyRunning { .. })
    ));
    let log = std::fs::read_to_string(tb.log_path("n1").unwrap()).unwrap();
    assert_eq!(log.matches("starting n1").count(), 2, "{log}");

    let home = tb.daemon_pid("home").unwrap();
    tb.stop_daemon("home").unwrap();
    assert!(!proc_alive(home));
    tb.start_daemon("home").unwrap();
    assert!(tb.daemon_pid("home").is_some());
    assert!(matches!(
        tb.start_daemon("n7"),
        Err(TestbedError::UnknownNode { .. })
    ));
    // The state file follows: a second handle sees the new pids.
    let other = Testbed::open(tb.id()).unwrap();
    assert_eq!(other.daemon_pid("n1"), Some(new));
    drop(other);
    assert!(
        tb.daemon_pid("n1").is_some(),
        "dropping an opened handle tore down"
    );
}

#[test]
fn stop_daemon_falls_back_to_sigkill() {
    require_root!();
    let stubborn = script(
        "stubborn-roamd",
        "trap '' TERM\necho ignoring SIGTERM >&2\nwhile :; do sleep 0.1; done",
    );
    let mut tb = up(opts(0, stubborn));
    let pid = tb.daemon_pid("home").unwrap();
    let log = tb.log_path("home").unwrap();
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("ignoring SIGTERM")
    {
        sleep(Duration::from_millis(10));
    }
    let t = std::time::Instant::now();
    tb.stop_daemon("home").unwrap();
    assert!(t.elapsed() >= Duration::from_secs(4), "{:?}", t.elapsed());
    assert!(!proc_alive(pid));
}

#[test]
fn dropping_a_testbed_tears_it_down_even_after_a_panic() {
    require_root!();
    /// What the panicking test saw: id, network namespaces, daemon pids.
    type Seen = Option<(u32, Vec<String>, Vec<u32>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let seen2 = seen.clone();
    let _ids = ids_lock();
    let r = std::panic::catch_unwind(move || {
        let tb = Testbed::up(opts(2, sleep_roamd())).unwrap();
        let netns = tb
            .node_names()
            .iter()
            .map(|n| tb.netns(n).unwrap())
            .collect();
        *seen2.lock().unwrap() = Some((tb.id(), netns, all_pids(&tb)));
        panic!("a failing test");
    });
    assert!(r.is_err());
    let (id, netns, pids) = seen.lock().unwrap().take().unwrap();
    assert_eq!(pids.len(), 3);
    assert_gone(id, &netns, &pids);
}

#[test]
fn kept_testbeds_outlive_their_handle_and_down_id_removes_everything() {
    require_root!();
    let tb = up(opts(2, sleep_roamd()));
    let id = tb.id();
    let netns: Vec<String> = tb
        .node_names()
        .iter()
        .map(|n| tb.netns(n).unwrap())
        .collect();
    let mut pids = all_pids(&tb);
    // A stray process in n2's namespaces, which the daemon did not start.
    let mut stray = tb.command_in("n2", "sleep").unwrap();
    let mut stray = stray.arg("1000").spawn().unwrap();
    pids.push(stray.id());
    assert_eq!(tb.keep(), id);
    assert!(pids.iter().all(|p| proc_alive(*p)));
    assert!(Path::new(&format!("/run/roam-testbed/{id}")).exists());

    // Lose the state file too: down finds everything by name.
    std::fs::remove_file(format!("/run/roam-testbed/{id}/testbed.json")).unwrap();
    let ids = ids_lock();
    down_id(id).unwrap();
    let status = stray.wait().unwrap();
    assert!(!status.success());
    assert_gone(id, &netns, &pids);
    // Idempotent: nothing left is no error.
    down_id(id).unwrap();
    drop(ids);
}

#[test]
fn teardown_kills_what_the_daemons_left_behind() {
    require_root!();
    // One child in the daemon's session but without its environment, one
    // in a session of its own but with the environment marker.
    let leaky = script(
        "leaky-roamd",
        "env -i sleep 1000001 &\necho \"child $!\" >&2\nsetsid sleep 1000002 &\necho \"child $!\" >&2\nexec sleep 1000000",
    );
    let tb = up(opts(1, leaky));
    let log = tb.log_path("home").unwrap();
    let children = || -> Vec<u32> {
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("child ")?.parse().ok())
            .collect()
    };
    while children().len() < 2 {
        sleep(Duration::from_millis(10));
    }
    let mut pids = children();
    pids.extend(all_pids(&tb));
    assert!(pids.iter().all(|p| proc_alive(*p)));
    let id = tb.id();
    let netns = vec![tb.netns("n1").unwrap()];
    let _ids = ids_lock();
    tb.down().unwrap();
    assert_gone(id, &netns, &pids);
}

#[test]
fn parallel_testbeds_get_distinct_ids_and_networks() {
    require_root!();
    let a = up(opts(1, sleep_roamd()));
    let b = up(opts(1, sleep_roamd()));
    assert_ne!(a.id(), b.id());
    assert_ne!(a.node_addr("n1"), b.node_addr("n1"));
    assert!(ping_eventually(&a, "n1", a.node_addr("home").unwrap()));
    assert!(ping_eventually(&b, "n1", b.node_addr("home").unwrap()));
    // Different bridges: a's node does not reach b's node.
    assert!(!ping(
        &mut a.command_in("n1", "ping").unwrap(),
        b.node_addr("n1").unwrap()
    ));
}

#[test]
fn a_failed_up_reports_the_log_and_cleans_up() {
    require_root!();
    let broken = script("broken-roamd", "echo \"broken roamd given $2\" >&2; exit 3");
    let mut o = TestbedOpts::new(1, broken);
    o.wait_ready = true;
    let _ids = ids_lock();
    let e = Testbed::up(o).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, TestbedError::DaemonDied { .. }), "{msg}");
    assert!(
        msg.contains("broken roamd given /run/roam-testbed/"),
        "{msg}"
    );
    let id: u32 = msg
        .split("/run/roam-testbed/")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_gone(id, &[format!("roamtb{id}-n1")], &[]);
}

#[test]
fn wait_nodes_up_talks_to_the_home_over_its_socket() {
    require_root!();
    let mut o = TestbedOpts::new(3, fake_roamd());
    o.wait_ready = true;
    let mut tb = up(o);
    let nodes = tb.wait_nodes_up(3, Duration::from_secs(10)).unwrap();
    let mut names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["n1", "n2", "n3"]);
    // The fake home saw each node connect from the node's own address.
    for n in &nodes {
        let ip = tb.node_addr(&n.name).unwrap().to_string();
        assert!(n.addr.starts_with(&format!("{ip}:")), "{n:?}");
    }

    // A node that dies drops out.
    tb.kill_daemon("n2").unwrap();
    let n2_state = |tb: &Testbed| {
        tb.nodes()
            .unwrap()
            .into_iter()
            .find(|n| n.name == "n2")
            .map(|n| n.state)
    };
    for _ in 0..100 {
        if n2_state(&tb) == Some(NodeState::Down) {
            break;
        }
        sleep(Duration::from_millis(50));
    }
    assert_eq!(n2_state(&tb), Some(NodeState::Down));
    // Restarted behind a cut link, it cannot join: waiting times out, with
    // the home's log in the error. Healed, it joins.
    tb.cut_link("n2").unwrap();
    tb.start_daemon("n2").unwrap();
    let e = tb.wait_nodes_up(3, Duration::from_millis(700)).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, TestbedError::NotReady { .. }), "{msg}");
    assert!(msg.contains("n2 down"), "{msg}");
    assert!(msg.contains("fake roamd home listening"), "{msg}");
    tb.heal_link("n2").unwrap();
    tb.wait_nodes_up(3, Duration::from_secs(10)).unwrap();

    // Waiting for more nodes than daemons run fails at once.
    tb.stop_daemon("n3").unwrap();
    let e = tb.wait_nodes_up(3, Duration::from_secs(10)).unwrap_err();
    assert!(
        matches!(
            e,
            TestbedError::TooFewDaemons {
                count: 3,
                running: 2
            }
        ),
        "{e}"
    );

    // So does a dead home, with its log.
    let home = tb.daemon_pid("home").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(home as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let t = std::time::Instant::now();
    let e = tb.wait_nodes_up(2, Duration::from_secs(10)).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let msg = e.to_string();
    assert!(matches!(e, TestbedError::DaemonDied { .. }), "{msg}");
    assert!(msg.contains("fake roamd home listening"), "{msg}");
    tb.kill_daemon("home").unwrap_err();
    tb.start_daemon("home").unwrap();
    tb.wait_nodes_up(2, Duration::from_secs(10)).unwrap();
}

// ------------------------------------------------------ the fake roamd

/// Not a test: when this binary is run by `fake-roamd` (with
/// `ROAM_FAKE_ROAMD_CONFIG` set) it becomes a fake roamd and never returns.
#[test]
fn fake_roamd_entry() {
    let Ok(config) = std::env::var("ROAM_FAKE_ROAMD_CONFIG") else {
        return;
    };
    let cfg = Config::load(Path::new(&config)).unwrap();
    if cfg.role.is_home() {
        fake_home(cfg)
    } else {
        fake_node(cfg)
    }
}

type Members = Arc<Mutex<BTreeMap<String, (String, NodeState)>>>;

/// Accepts TCP connections from nodes (each sends its name and stays
/// connected) and answers `Nodes` on its socket.
fn fake_home(cfg: Config) -> ! {
    let listen = cfg.home.as_ref().unwrap().listen;
    let tcp = TcpListener::bind(listen).unwrap();
    let _ = std::fs::remove_file(&cfg.socket);
    let unix = UnixListener::bind(&cfg.socket).unwrap();
    eprintln!("fake roamd home listening on {listen}");
    let members: Members = Arc::default();
    let m = members.clone();
    std::thread::spawn(move || {
        for conn in tcp.incoming().flatten() {
            let m = m.clone();
            std::thread::spawn(move || {
                let peer = conn.peer_addr().unwrap().to_string();
                let mut r = BufReader::new(conn);
                let mut name = String::new();
                if r.read_line(&mut name).is_err() {
                    return;
                }
                let name = name.trim().to_string();
                eprintln!("fake roamd home: {name} joined from {peer}");
                m.lock()
                    .unwrap()
                    .insert(name.clone(), (peer.clone(), NodeState::Up));
                let mut sink = Vec::new();
                let _ = r.read_to_end(&mut sink);
                eprintln!("fake roamd home: {name} left");
                m.lock().unwrap().insert(name, (peer, NodeState::Down));
            });
        }
    });
    for conn in unix.incoming().flatten() {
        let _ = serve_local(conn, &members);
    }
    unreachable!("listener closed")
}

fn read_frame(s: &mut UnixStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
    s.read_exact(&mut body)?;
    Ok(body)
}

fn serve_local(mut s: UnixStream, members: &Members) -> std::io::Result<()> {
    let body = read_frame(&mut s)?;
    let _: LocalHello = decode_hello("hello", &body).map_err(std::io::Error::other)?;
    let welcome = LocalHelloReply::Welcome {
        node_name: "home".into(),
        is_home: true,
    };
    s.write_all(&encode_hello("welcome", &welcome).unwrap())?;
    loop {
        let body = read_frame(&mut s)?;
        let answer = match decode_body::<LocalMsg>("local", &body) {
            Ok(LocalMsg::Nodes) => LocalMsg::NodeList(
                members
                    .lock()
                    .unwrap()
                    .iter()
                    .enumerate()
                    .map(|(i, (name, (addr, state)))| NodeInfo {
                        number: i as u32 + 1,
                        name: name.clone(),
                        addr: addr.clone(),
                        arch: ArchInfo {
                            native: std::env::consts::ARCH.into(),
                            runners: vec![],
                            emulated: false,
                            broken: vec![],
                        },
                        state: *state,
                        load: NodeLoad::default(),
                        last_heartbeat_ms: 0,
                        joined_ms: 0,
                    })
                    .collect(),
            ),
            _ => LocalMsg::Ok,
        };
        s.write_all(&encode_frame("local", &answer).unwrap())?;
    }
}

/// Connects to the home (again and again) and stays connected.
fn fake_node(cfg: Config) -> ! {
    let home = cfg.node.as_ref().unwrap().home;
    loop {
        if let Ok(mut s) = TcpStream::connect_timeout(&home, Duration::from_secs(1)) {
            eprintln!("fake roamd {}: connected to {home}", cfg.name);
            if writeln!(s, "{}", cfg.name).is_ok() {
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink);
            }
        }
        sleep(Duration::from_millis(100));
    }
}

/// With a real roamd (`ROAMD=/path/to/roamd`; skipped without it): the
/// nodes join the home over mutually authenticated TLS from their
/// namespaces, and the home reports them.
#[test]
fn real_roamd_nodes_join() {
    require_root!();
    let Some(roamd) = std::env::var_os("ROAMD") else {
        eprintln!("skipped: set ROAMD to a roamd binary");
        return;
    };
    let mut o = TestbedOpts::new(2, PathBuf::from(roamd));
    o.heartbeat_ms = 200;
    o.timeout_ms = 1000;
    let mut tb = up(o);
    let nodes = tb.wait_nodes_up(2, Duration::from_secs(10)).unwrap();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    // A killed node is noticed; a restarted one rejoins.
    tb.kill_daemon("n2").unwrap();
    let mut down = false;
    for _ in 0..50 {
        let nodes = tb.nodes().unwrap();
        if nodes
            .iter()
            .any(|n| n.name == "n2" && n.state != NodeState::Up)
        {
            down = true;
            break;
        }
        sleep(Duration::from_millis(100));
    }
    assert!(down, "the home did not notice n2 die");
    tb.start_daemon("n2").unwrap();
    tb.wait_nodes_up(2, Duration::from_secs(10)).unwrap();
}
