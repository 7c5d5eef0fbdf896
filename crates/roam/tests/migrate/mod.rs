//! Checkpoint and restore of remote processes (a module of the e2e test
//! binary): `roam checkpoint HOME_PID` captures a process on its node,
//! `roam restore DIR --node NAME` rebuilds it on another node, and the
//! restore command is its new proxy. Real daemons, real processes, real
//! ptrace on the testbed.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{text, wait_timeout, wait_until, Cluster};

mod balance;
mod live;

/// Prints 0..n, one line every 50 ms, then `tail` (a file's first line,
/// when it names one) and exits 7.
const COUNTER: &str = "
import os, sys, time
n = int(sys.argv[1])
for i in range(n):
    print(i, os.getpid(), os.getuid(), flush=True)
    time.sleep(0.05)
sys.exit(7)
";

/// A scratch directory the user `uid` may write, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str, uid: u32) -> Scratch {
        let p = std::env::temp_dir().join(format!("roam-migrate-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        std::os::unix::fs::chown(&p, Some(uid), Some(uid)).unwrap();
        Scratch(p)
    }

    fn dir(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads a child's stdout to its end.
fn stdout_of(child: &mut Child) -> String {
    let mut s = String::new();
    child.stdout.take().unwrap().read_to_string(&mut s).unwrap();
    s
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    child.stderr.take().unwrap().read_to_string(&mut s).unwrap();
    s
}

/// The counts of the counter's lines, and the pids and uids it printed.
fn counts(out: &str) -> Vec<(u32, u32, u32)> {
    out.lines()
        .map(|l| {
            let f: Vec<u32> = l.split(' ').map(|x| x.parse().unwrap()).collect();
            (f[0], f[1], f[2])
        })
        .collect()
}

/// Waits until the counter behind `child` has printed a line or two (the
/// output is read afterwards).
fn wait_counting(c: &Cluster, pid: u32) {
    c.wait_listed(pid);
    std::thread::sleep(Duration::from_millis(600));
}

fn as_user(c: &Cluster, uid: Option<u32>, args: &[&str]) -> Command {
    let mut cmd = match uid {
        None => c.roam(),
        Some(u) => {
            let mut cmd = Command::new("setpriv");
            cmd.args([
                &format!("--reuid={u}"),
                &format!("--regid={u}"),
                "--clear-groups",
                "--",
            ])
            .arg(env!("CARGO_BIN_EXE_roam"))
            .env("ROAM_SOCKET", c.tb.socket())
            .current_dir("/");
            cmd
        }
    };
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Moves a counter from n1 to n2 as `uid` (None: root) and checks that
/// the two proxies' outputs together are the whole count, once each.
fn moves_between_nodes(c: &Cluster, uid: Option<u32>, scratch: &Scratch) {
    let mut first = as_user(
        c,
        uid,
        &["run", "--node", "n1", "python3", "-c", COUNTER, "60"],
    )
    .spawn()
    .unwrap();
    let home_pid = first.id();
    wait_counting(c, home_pid);
    let dir = scratch.dir("img");
    let out = as_user(c, uid, &["checkpoint", &home_pid.to_string(), "-o", &dir])
        .output()
        .unwrap();
    assert!(out.status.success(), "checkpoint: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("checkpoint of {home_pid} (on n1)")),
        "{}",
        text(&out.stderr)
    );
    assert!(Path::new(&dir).join("roam.img").exists());
    // The old proxy ends as its process did: killed, once its image is safe.
    let status = wait_timeout(&mut first, Duration::from_secs(10));
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    let before = counts(&stdout_of(&mut first));
    assert!(!before.is_empty(), "the counter printed nothing before");
    let mut second = as_user(c, uid, &["restore", &dir, "--node", "n2"])
        .spawn()
        .unwrap();
    let new_home_pid = second.id();
    let p = c.wait_listed(new_home_pid);
    assert_eq!(p.node, "n2");
    assert_eq!(p.uid, uid.unwrap_or(0));
    let status = wait_timeout(&mut second, Duration::from_secs(30));
    let err = stderr_of(&mut second);
    assert_eq!(status.code(), Some(7), "restore: {err}");
    let after = counts(&stdout_of(&mut second));
    let all: Vec<u32> = before.iter().chain(&after).map(|l| l.0).collect();
    assert_eq!(
        all,
        (0..60).collect::<Vec<_>>(),
        "every count once, in order"
    );
    // It sees its home identity: the proxy's pid, now the restore's.
    assert!(before.iter().all(|l| l.1 == home_pid));
    // (The first line after the move may carry the old pid: the process
    // can be caught between its getpid and the write of that line.)
    assert!(
        after
            .first()
            .is_some_and(|l| l.1 == new_home_pid || l.1 == home_pid)
            && after.iter().skip(1).all(|l| l.1 == new_home_pid),
        "{after:?}"
    );
    assert!(all.len() == 60);
    let want_uid = uid.unwrap_or(0);
    assert!(before.iter().chain(&after).all(|l| l.2 == want_uid));
}

#[test]
fn a_remote_process_moves_to_another_node_by_checkpoint_and_restore() {
    let c = Cluster::up(2);
    let root = Scratch::new("root", 0);
    moves_between_nodes(&c, None, &root);
    // A user moves their own process, with their rights only.
    let nobody = Scratch::new("nobody", 65534);
    moves_between_nodes(&c, Some(65534), &nobody);
}

#[test]
fn checkpoints_and_restores_are_refused_clearly() {
    let c = Cluster::up(2);
    let scratch = Scratch::new("refused", 65534);
    let run = |uid: Option<u32>, args: &[&str]| as_user(&c, uid, args).output().unwrap();
    // A process that runs on after a checkpoint (--leave-running).
    let mut job = as_user(
        &c,
        None,
        &["run", "--node", "n1", "python3", "-c", COUNTER, "100"],
    )
    .spawn()
    .unwrap();
    let pid = job.id().to_string();
    wait_counting(&c, job.id());
    let img = scratch.dir("root-img");
    let out = run(None, &["checkpoint", &pid, "-o", &img, "--leave-running"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("left running"));
    // Another user may neither capture it nor restore its image.
    let out = run(Some(65534), &["checkpoint", &pid, "-o", &scratch.dir("x")]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("belongs to another user"),
        "{}",
        text(&out.stderr)
    );
    let out = run(Some(65534), &["restore", &img, "--node", "n2"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("only uid 65534 gid 65534 may be restored"),
        "{}",
        text(&out.stderr)
    );
    // Unknown pids and nodes.
    let out = run(None, &["checkpoint", "999999", "-o", &scratch.dir("y")]);
    assert!(!out.status.success());
    let out = run(
        Some(65534),
        &["checkpoint", "999999", "-o", &scratch.dir("y")],
    );
    assert!(
        text(&out.stderr).contains("no remote process with home pid 999999"),
        "{}",
        text(&out.stderr)
    );
    let out = run(None, &["restore", &img, "--node", "n9"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no node named 'n9'"),
        "{}",
        text(&out.stderr)
    );
    // A corrupt image: refused by the node, nothing runs.
    let bad = scratch.dir("bad");
    std::fs::create_dir_all(&bad).unwrap();
    let mut bytes = std::fs::read(Path::new(&img).join("roam.img")).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(Path::new(&bad).join("roam.img"), &bytes).unwrap();
    let out = run(None, &["restore", &bad, "--node", "n2"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("checksum"),
        "{}",
        text(&out.stderr)
    );
    // The process ran on through all of it, untouched.
    let status = wait_timeout(&mut job, Duration::from_secs(30));
    assert_eq!(status.code(), Some(7));
    let seen: Vec<u32> = counts(&stdout_of(&mut job)).iter().map(|l| l.0).collect();
    assert_eq!(seen, (0..100).collect::<Vec<_>>());
    // What it cannot capture (a socket) is refused before it is touched.
    let mut holder = as_user(
        &c,
        None,
        &[
            "run",
            "--node",
            "n1",
            "python3",
            "-c",
            "import socket, time\ns = socket.socket()\nprint('up', flush=True)\ntime.sleep(30)",
        ],
    )
    .spawn()
    .unwrap();
    let hpid = holder.id();
    let mut up = [0u8; 3];
    holder.stdout.as_mut().unwrap().read_exact(&mut up).unwrap();
    assert_eq!(&up, b"up\n");
    let out = run(
        None,
        &["checkpoint", &hpid.to_string(), "-o", &scratch.dir("sock")],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("a socket"),
        "{}",
        text(&out.stderr)
    );
    assert!(!Path::new(&scratch.dir("sock")).join("roam.img").exists());
    wait_until(
        "the socket holder to still run",
        Duration::from_secs(5),
        || c.ps().iter().any(|p| p.home_pid == hpid),
    );
    let _ = holder.kill();
    let _ = holder.wait();
}

#[test]
fn a_process_keeps_its_home_files_when_it_moves() {
    let c = Cluster::home_files(2);
    let scratch = Scratch::new("files", 0);
    let log = scratch.dir("log.txt");
    let prog = format!(
        "import time\nf = open('{log}', 'a')\nfor i in range(40):\n    f.write('%d\\n' % i); f.flush(); time.sleep(0.05)\n"
    );
    let mut first = as_user(&c, None, &["run", "--node", "n1", "python3", "-c", &prog])
        .spawn()
        .unwrap();
    // Counting (its first lines written): `python3` may be a launcher
    // script (pyenv's) that holds pipes to its helpers while it starts,
    // which checkpoints refuse. (maps.c checks the page that a process
    // caught in its loader needs: see docs/design/checkpoint.md.)
    wait_until("the first lines", Duration::from_secs(20), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() >= 2)
    });
    let img = scratch.dir("img");
    let out = as_user(
        &c,
        None,
        &["checkpoint", &first.id().to_string(), "-o", &img],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_timeout(&mut first, Duration::from_secs(10));
    let mut second = as_user(&c, None, &["restore", &img, "--node", "n2"])
        .spawn()
        .unwrap();
    let status = wait_timeout(&mut second, Duration::from_secs(30));
    assert!(status.success(), "{status:?} {}", stderr_of(&mut second));
    let lines: Vec<u32> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(lines, (0..40).collect::<Vec<_>>());
}

#[test]
fn a_stub_killed_mid_restore_leaves_nothing_and_the_image_restores_later() {
    let c = Cluster::up(1);
    let scratch = Scratch::new("stub", 0);
    let prog = "import time\nb = bytearray(b'\\x01') * (300 << 20)\nprint('ready', flush=True)\ntime.sleep(1.5)\nprint(sum(b[::4096]), flush=True)\n";
    let mut first = as_user(&c, None, &["run", "--node", "n1", "python3", "-c", prog])
        .spawn()
        .unwrap();
    let mut ready = [0u8; 6];
    first
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut ready)
        .unwrap();
    assert_eq!(&ready, b"ready\n");
    let node_pid = c.wait_listed(first.id()).node_pid;
    let img = scratch.dir("img");
    let out = as_user(
        &c,
        None,
        &["checkpoint", &first.id().to_string(), "-o", &img],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_timeout(&mut first, Duration::from_secs(10));
    // The stub takes the process's pid again (free since it was killed):
    // killed as soon as it exists, while 300 MiB are written into it.
    let mut doomed = as_user(&c, None, &["restore", &img, "--node", "n1"])
        .spawn()
        .unwrap();
    let proc_dir = PathBuf::from(format!("/proc/{node_pid}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !proc_dir.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the stub never appeared"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    // SAFETY: kill takes a pid and a signal.
    unsafe { libc::kill(node_pid as i32, libc::SIGKILL) };
    let status = wait_timeout(&mut doomed, Duration::from_secs(30));
    let err = stderr_of(&mut doomed);
    assert!(!status.success(), "the restore cannot succeed: {err}");
    assert!(err.contains("node n1:"), "{err}");
    assert!(c.ps().iter().all(|p| p.home_pid != doomed.id()));
    wait_until("the stub to be reaped", Duration::from_secs(5), || {
        !proc_dir.exists()
    });
    // The image is intact: it restores, and the process finishes.
    let mut second = as_user(&c, None, &["restore", &img, "--node", "n1"])
        .spawn()
        .unwrap();
    let status = wait_timeout(&mut second, Duration::from_secs(60));
    assert!(status.success(), "{}", stderr_of(&mut second));
    assert_eq!(stdout_of(&mut second), format!("{}\n", 300 << 8));
}
