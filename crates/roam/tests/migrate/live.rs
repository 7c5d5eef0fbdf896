//! Live migration (`roam migrate`, `roam drain`): a running remote process
//! moves between testbed nodes while its proxy, its pipes and its exit
//! status stay; faults at each step leave exactly one running copy.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::time::Duration;

use super::{as_user, stderr_of, stdout_of};
use crate::{text, wait_timeout, wait_until, Cluster};

/// Echoes each stdin line to stdout with its pid and uid, and every tenth
/// to stderr; at the end of input prints the count and exits 3.
const ECHO: &str = "
import os, sys, time
n = 0
for l in sys.stdin:
    n += 1
    print(l.strip(), os.getpid(), os.getuid(), flush=True)
    if n % 10 == 0:
        print('e', l.strip(), file=sys.stderr, flush=True)
    time.sleep(0.001)
print('total', n, flush=True)
sys.exit(3)
";

/// Feeds `lines` numbered lines to a child's stdin, a burst every 20 ms,
/// then closes it.
fn feed(mut stdin: ChildStdin, lines: u32) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for i in 1..=lines {
            if stdin.write_all(format!("{i}\n").as_bytes()).is_err() {
                return;
            }
            if i % 40 == 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    })
}

fn migrate(c: &Cluster, uid: Option<u32>, pid: u32, node: &str) -> std::process::Output {
    as_user(c, uid, &["migrate", &pid.to_string(), node])
        .output()
        .unwrap()
}

/// Runs the echo on n1 as `uid`, moves it n1 → n2 → n1 → n2 while input
/// flows, and checks every line arrived once, in order, from the same
/// home pid, with the exit status.
fn echo_moves(c: &Cluster, uid: Option<u32>) {
    const LINES: u32 = 4000;
    let mut job = as_user(c, uid, &["run", "--node", "n1", "python3", "-c", ECHO])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let home_pid = job.id();
    let feeder = feed(job.stdin.take().unwrap(), LINES);
    let mut out = BufReader::new(job.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let reader = std::thread::spawn(move || {
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        first + &rest
    });
    let mut err = job.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    for to in ["n2", "n1", "n2"] {
        let m = migrate(c, uid, home_pid, to);
        assert!(m.status.success(), "migrate: {}", text(&m.stderr));
        let said = text(&m.stderr);
        assert!(said.contains(&format!("to {to}")), "{said}");
        assert!(said.contains("frozen"), "{said}");
        let p = c.ps().into_iter().find(|p| p.home_pid == home_pid).unwrap();
        assert_eq!(p.node, to);
        std::thread::sleep(Duration::from_millis(150));
    }
    feeder.join().unwrap();
    let status = wait_timeout(&mut job, Duration::from_secs(60));
    let out = reader.join().unwrap();
    let err = err_reader.join().unwrap();
    assert_eq!(status.code(), Some(3), "stderr: {err}");
    let mut lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.pop(), Some(format!("total {LINES}").as_str()));
    let want_uid = uid.unwrap_or(0);
    let got: Vec<u32> = lines
        .iter()
        .map(|l| {
            let f: Vec<u32> = l.split(' ').map(|x| x.parse().unwrap()).collect();
            assert_eq!(f[1], home_pid, "getpid is the home pid: {l}");
            assert_eq!(f[2], want_uid, "{l}");
            f[0]
        })
        .collect();
    assert_eq!(got, (1..=LINES).collect::<Vec<_>>(), "every line once");
    let errs: Vec<String> = err.lines().map(str::to_owned).collect();
    let want: Vec<String> = (1..=LINES / 10).map(|i| format!("e {}", i * 10)).collect();
    assert_eq!(errs, want);
}

#[test]
fn a_process_moves_between_nodes_with_its_streams_and_status() {
    let c = Cluster::up(2);
    echo_moves(&c, None);
    // A user moves their own process.
    echo_moves(&c, Some(65534));
    let log = c.log("home");
    assert!(log.contains("moved from n1 to n2"), "{log}");
    // Node to node, not through the home.
    let n2 = c.tb.node_addr("n2").unwrap();
    assert!(
        log.contains(&format!("from n1 to n2, directly to {n2}:7171")),
        "{log}"
    );
    let log = c.log("n1");
    assert!(log.contains("sent directly in"), "{log}");
}

/// A peer listener takes only cluster members (TLS with the cluster's
/// certificates), and from them only the migrations the home announced
/// from them; migrations go on working after both kinds of intruder.
#[test]
fn a_peer_link_takes_only_migrations_the_home_announced() {
    use roam_net::framed::{FrameReader, FrameWriter};
    let c = Cluster::up(2);
    let addr = std::net::SocketAddr::from((c.tb.node_addr("n2").unwrap(), 7171));
    // Not TLS at all: dropped.
    let mut raw = std::net::TcpStream::connect(addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    std::io::Write::write_all(&mut raw, b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut buf = [0u8; 64];
    let n = std::io::Read::read(&mut raw, &mut buf).unwrap_or(0);
    assert!(n == 0 || buf[0] == 0x15, "not dropped: {:?}", &buf[..n]);
    // A member (n1's own certificate) sending a migration nobody
    // announced: the link is closed, nothing is delivered.
    let creds = c.tb.dir().join("creds");
    let id = roam_net::tls::Identity::load(
        &creds.join("ca.pem"),
        &creds.join("n1.pem"),
        &creds.join("n1.key"),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let closed = rt.block_on(async {
        let (r, w) = roam_net::tls::connect_sealed(&id, addr, "n2", Duration::from_secs(5))
            .await
            .unwrap();
        let mut w = FrameWriter::new(w);
        w.write_hello("peer hello", &roam_proto::link::PeerHello { flags: 0 })
            .await
            .unwrap();
        let frame = roam_proto::link::encode_image_frame(424_242, 0, b"not an image").unwrap();
        w.write_raw(&frame).await.unwrap();
        let mut r = FrameReader::new(r);
        tokio::time::timeout(Duration::from_secs(30), r.read_frame()).await
    });
    assert!(
        matches!(closed, Ok(Ok(None)) | Ok(Err(_))),
        "the link stayed open: {closed:?}"
    );
    // (Logged once the link is closed.)
    wait_until("the refusal logged", Duration::from_secs(10), || {
        c.log("n2")
            .contains("sends migration 424242, which the home did not announce from it")
    });
    // Migrations still go, directly.
    let job = big(&c, 8);
    let out = migrate(&c, None, job.id(), "n2");
    assert!(out.status.success(), "{}", text(&out.stderr));
    finish_big(job, 8);
}

/// Starts a process holding `mib` MiB on n1 that prints `ready`, waits
/// for a line on stdin, then prints its memory's checksum and exits.
fn big(c: &Cluster, mib: u32) -> Child {
    python_on_n1(
        c,
        &format!(
            "import sys\nb = bytearray(b'\\x01') * ({mib} << 20)\nprint('ready', flush=True)\nsys.stdin.readline()\nprint(sum(b[::4096]), flush=True)\n"
        ),
    )
}

/// Runs the Python program `prog` on n1 and waits for its `ready` line.
fn python_on_n1(c: &Cluster, prog: &str) -> Child {
    let mut job = as_user(c, None, &["run", "--node", "n1", "python3", "-c", prog])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = [0u8; 6];
    job.stdout.as_mut().unwrap().read_exact(&mut ready).unwrap();
    assert_eq!(&ready, b"ready\n");
    job
}

/// Ends a [`big`] process and checks its answer.
fn finish_big(mut job: Child, mib: u32) {
    job.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let status = wait_timeout(&mut job, Duration::from_secs(30));
    let out = stdout_of(&mut job);
    assert!(status.success(), "{}", stderr_of(&mut job));
    assert_eq!(out, format!("{}\n", mib << 8));
}

/// Starts `roam migrate PID n2` and waits until its image is on its way.
fn migrate_started(c: &Cluster, pid: u32) -> Child {
    let mut m = as_user(c, None, &["migrate", &pid.to_string(), "n2"])
        .spawn()
        .unwrap();
    let mut err = m.stderr.take().unwrap();
    let mut seen = Vec::new();
    let mut b = [0u8; 1];
    while !text(&seen).contains("moving") {
        assert_eq!(err.read(&mut b).unwrap(), 1, "{}", text(&seen));
        seen.push(b[0]);
    }
    m.stderr = Some(err);
    m
}

#[test]
fn migrations_are_refused_clearly_and_a_lost_destination_changes_nothing() {
    let mut c = Cluster::up(2);
    let job = big(&c, 400);
    let pid = job.id();
    // Not the caller's, where it is already, nowhere, nothing.
    let out = migrate(&c, Some(65534), pid, "n2");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("belongs to another user"));
    let out = migrate(&c, None, pid, "n1");
    assert!(
        text(&out.stderr).contains("is on n1 already"),
        "{}",
        text(&out.stderr)
    );
    let out = migrate(&c, None, pid, "n9");
    assert!(
        text(&out.stderr).contains("no node named 'n9'"),
        "{}",
        text(&out.stderr)
    );
    let out = migrate(&c, None, 999_999, "n2");
    assert!(text(&out.stderr).contains("no remote process with home pid 999999"));
    // Two at once: the second is refused.
    let mut first = migrate_started(&c, pid);
    let out = migrate(&c, None, pid, "n2");
    assert!(
        text(&out.stderr).contains("migrating already"),
        "{}",
        text(&out.stderr)
    );
    // The destination dies mid-transfer: the process goes on on n1.
    c.tb.kill_daemon("n2").unwrap();
    let status = wait_timeout(&mut first, Duration::from_secs(30));
    let said = stderr_of(&mut first);
    assert!(!status.success());
    assert!(said.contains("goes on on n1"), "{said}");
    let p = c.ps().into_iter().find(|p| p.home_pid == pid).unwrap();
    assert_eq!(p.node, "n1");
    finish_big(job, 400);
}

#[test]
fn a_source_lost_mid_transfer_takes_its_process_and_the_proxy_says_so() {
    let mut c = Cluster::up(2);
    let mut job = big(&c, 400);
    let pid = job.id();
    let mut m = migrate_started(&c, pid);
    c.tb.kill_daemon("n1").unwrap();
    let status = wait_timeout(&mut m, Duration::from_secs(30));
    assert!(!status.success());
    let status = wait_timeout(&mut job, Duration::from_secs(30));
    let said = stderr_of(&mut job);
    assert!(!status.success());
    assert!(said.contains("node n1 is down"), "{said}");
    assert!(said.contains("is lost"), "{said}");
    // No copy anywhere.
    wait_until("no process listed", Duration::from_secs(10), || {
        c.ps().is_empty()
    });
}

#[test]
fn a_drained_node_gives_its_processes_away_and_takes_no_more() {
    let c = Cluster::up(2);
    let jobs: Vec<Child> = (0..3).map(|_| big(&c, 8)).collect();
    let out = c.run(&["drain", "n1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("3 of 3 processes moved"),
        "{}",
        text(&out.stderr)
    );
    assert!(c.ps().iter().all(|p| p.node == "n2"));
    // Nothing more goes there, until undone.
    let out = c.run(&["run", "--mode", "balance", "sh", "-c", "echo $ROAM_NODE"]);
    assert_eq!(text(&out.stdout), "n2\n");
    let out = c.run(&["drain", "--undo", "n1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = c.run(&["run", "--node", "n1", "true"]);
    assert!(out.status.success());
    for j in jobs {
        finish_big(j, 8);
    }
}

/// Builds tests/programs/ckpt/NAME.c where the nodes see it.
fn build_state_program(name: &str) -> std::path::PathBuf {
    build_program("ckpt", name)
}

/// Builds tests/programs/DIR/NAME.c where the nodes see it.
fn build_program(dir_name: &str, name: &str) -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("migrate-progs");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(name);
    // Built once per test process: tests run at once, and one building
    // again would delete the executable of another's running program
    // (which a checkpoint then refuses).
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap();
    let key = format!("{dir_name}/{name}");
    if built.contains(&key) {
        return out;
    }
    let tmp = dir.join(format!(".{name}-{}", std::process::id()));
    let st = std::process::Command::new("cc")
        .args(["-O1", "-pthread", "-o"])
        .arg(&tmp)
        .arg(root.join(format!("tests/programs/{dir_name}/{name}.c")))
        .status()
        .unwrap();
    assert!(st.success(), "cc {name}.c");
    std::fs::rename(&tmp, &out).unwrap();
    built.push(key);
    out
}

#[test]
fn state_checking_programs_and_debian_programs_survive_moves() {
    // The programs and their files are the home's (a node's /tmp, where a
    // clone may be, is its own): the nodes see them as remote processes
    // do in a real cluster.
    let c = Cluster::home_files(2);
    let work = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("migrate-work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    for name in [
        "regs",
        "heap",
        "maps",
        "files",
        "signals",
        "timers",
        "threads",
        "sleep",
        "nanosleep",
        "pipe_read",
    ] {
        let bin = build_state_program(name);
        let mut job = c
            .roam()
            .args(["run", "--node", "n1"])
            .arg(&bin)
            .current_dir(&work)
            .env("TMPDIR", &work)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(job.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line, "READY\n", "{name}");
        for to in ["n2", "n1"] {
            // Eager: these short runs would often end while pre-copy
            // rounds go ahead (the test of pre-copy is below).
            let m = as_user(&c, None, &["migrate", &job.id().to_string(), to, "--eager"])
                .output()
                .unwrap();
            assert!(m.status.success(), "{name}: {}", text(&m.stderr));
        }
        job.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        let status = wait_timeout(&mut job, Duration::from_secs(60));
        assert!(
            status.success() && rest.contains("PASS"),
            "{name}: {status:?} {rest} {}",
            stderr_of(&mut job)
        );
    }
    // Real programs moved mid-run: the same output as a run in place.
    let data = work.join("data");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&data).unwrap());
    for i in 0..2_000_000u32 {
        writeln!(f, "{}", i.wrapping_mul(2_654_435_761) % 1_000_003).unwrap();
    }
    drop(f);
    let big = work.join("big");
    let block: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let mut f = std::fs::File::create(&big).unwrap();
    for _ in 0..64 {
        f.write_all(&block).unwrap();
    }
    drop(f);
    let data = data.to_string_lossy().into_owned();
    let big = big.to_string_lossy().into_owned();
    let loop_py =
        "import time\nfor i in range(30):\n    print(i * i, flush=True)\n    time.sleep(0.03)\n";
    for argv in [
        vec!["sha256sum", &big, &big, &big, &big, &big, &big, &big, &big],
        vec!["sort", "-n", &data],
        vec!["python3", "-c", loop_py],
    ] {
        let plain = std::process::Command::new(argv[0])
            .args(&argv[1..])
            .output()
            .unwrap();
        let mut job = c
            .roam()
            .args(["run", "--node", "n1"])
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut so = job.stdout.take().unwrap();
        let got = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = got.clone();
        let reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = so.read(&mut buf).unwrap();
                if n == 0 {
                    break v;
                }
                v.extend_from_slice(&buf[..n]);
                seen.store(v.len(), std::sync::atomic::Ordering::Relaxed);
            }
        });
        // Moved once it runs the program (not while its exec is under way).
        let node_pid = c.wait_listed(job.id()).node_pid;
        wait_until("the exec", Duration::from_secs(20), || {
            std::fs::read_to_string(format!("/proc/{node_pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == argv[0])
        });
        if argv[0] == "python3" {
            // Once it counts: `python3` may be a launcher script (pyenv's)
            // that holds pipes to its helpers while it starts, which
            // checkpoints refuse.
            wait_until("its first line", Duration::from_secs(20), || {
                got.load(std::sync::atomic::Ordering::Relaxed) > 0
            });
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut moved = 0;
        for to in ["n2", "n1"] {
            // Eager: these short runs would often end while pre-copy
            // rounds go ahead (the test of pre-copy is below).
            let m = as_user(&c, None, &["migrate", &job.id().to_string(), to, "--eager"])
                .output()
                .unwrap();
            // A short program may end before its second move.
            if m.status.success() {
                moved += 1;
            } else {
                // (or during it, while its pages went ahead).
                let said = text(&m.stderr);
                assert!(
                    said.contains("no remote process") || said.contains("ended during"),
                    "{}: {said}",
                    argv[0],
                );
            }
        }
        let status = wait_timeout(&mut job, Duration::from_secs(60));
        let out = reader.join().unwrap();
        assert!(status.success(), "{}: {}", argv[0], stderr_of(&mut job));
        assert!(moved > 0, "{} ended before it could move", argv[0]);
        assert_eq!(
            text(&out),
            text(&plain.stdout),
            "{}: the output differs from a run in place",
            argv[0]
        );
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// What a migration's output must say, or must not.
enum Says {
    Any,
    Has(&'static str),
    Lacks(&'static str),
}

/// `writer.c` with 64 MiB written at 20 MiB/s (a counter every 100 ms)
/// moves as `moves` say (to, how, what it says), and finds every page as it
/// last wrote it, its counters printed once each, in order; the home's log
/// then has `logged`.
fn writer_moves_and_finds_its_memory_whole(moves: &[(&str, &str, Says)], logged: &str) {
    let c = Cluster::home_files(2);
    let writer = build_program("migrate", "writer");
    let writer = writer.to_str().unwrap();
    let mut job = as_user(
        &c,
        None,
        &["run", "--node", "n1", writer, "64", "20", "100"],
    )
    .stdin(Stdio::piped())
    .spawn()
    .unwrap();
    let home_pid = job.id();
    let mut out = BufReader::new(job.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "READY\n");
    for (to, how, says) in moves {
        let m = as_user(&c, None, &["migrate", &home_pid.to_string(), to, how])
            .output()
            .unwrap();
        assert!(m.status.success(), "migrate {how}: {}", text(&m.stderr));
        let said = text(&m.stderr);
        match says {
            Says::Any => {}
            Says::Has(t) => assert!(said.contains(t), "{how}: {said}"),
            Says::Lacks(t) => assert!(!said.contains(t), "{how}: {said}"),
        }
        let p = c.ps().into_iter().find(|p| p.home_pid == home_pid).unwrap();
        assert_eq!(p.node, *to);
        std::thread::sleep(Duration::from_millis(300));
    }
    job.stdin.take().unwrap().write_all(b"check\n").unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let status = wait_timeout(&mut job, Duration::from_secs(30));
    assert!(status.success(), "{rest}");
    let last = rest.lines().last().unwrap_or("");
    assert!(last.starts_with("PASS "), "{rest}");
    // Counters printed once each, in order, across the moves.
    let counters: Vec<u64> = rest.lines().filter_map(|l| l.parse().ok()).collect();
    assert!(counters.windows(2).all(|w| w[1] == w[0] + 1), "{rest}");
    let log = c.log("home");
    assert!(log.contains(logged), "{log}");
}

/// A process that keeps writing its 64 MiB heap moves with pre-copy (and
/// eagerly, and as the default chooses) n1 -> n2 -> n1 -> n2 -> n1, and
/// finds every page as it last wrote it.
#[test]
fn a_process_writing_its_memory_moves_with_precopy_and_finds_it_whole() {
    writer_moves_and_finds_its_memory_whole(
        &[
            ("n2", "--precopy", Says::Has("pre-copied in")),
            ("n1", "--precopy", Says::Has("pre-copied in")),
            ("n2", "--eager", Says::Lacks("pre-copied")),
            ("n1", "-q", Says::Any),
        ],
        "pre-copied in",
    );
}

/// The same with post-copy, n1 -> n2 -> n1 -> n2: it runs on the new node
/// before its heap is there.
#[test]
fn a_process_writing_its_memory_moves_with_postcopy_and_finds_it_whole() {
    writer_moves_and_finds_its_memory_whole(
        &[
            ("n2", "--post-copy", Says::Has("MiB followed in")),
            ("n1", "--post-copy", Says::Has("MiB followed in")),
            ("n2", "--post-copy", Says::Has("MiB followed in")),
        ],
        "post-copy from n1 over",
    );
}

/// A process that forks, empties and moves its memory all the time moves
/// with post-copy n1 -> n2 -> n1: its children, its emptied pages and its
/// moved pages find what they should while its heap comes in (the pager
/// follows the fork, madvise, mremap and munmap events).
#[test]
fn a_process_changing_its_layout_during_a_postcopy_finds_its_memory_whole() {
    churn_moves("--post-copy", "MiB followed in", "post-copy from");
}

/// The same with pre-copy: its pre-copied pages are placed while it runs
/// on the new node, as it forks, empties and moves its memory.
#[test]
fn a_process_changing_its_layout_after_a_precopy_finds_its_memory_whole() {
    churn_moves("--precopy", "pre-copied in", "pre-copied pages placed in");
}

/// `churn.c` (48 MiB) moves n1 -> n2 -> n1 with `how`, `roam migrate`
/// saying `said_then` each time, and finds its memory whole; a node's log
/// then has `logged`.
fn churn_moves(how: &str, said_then: &str, logged: &str) {
    let c = Cluster::home_files(2);
    let churn = build_program("migrate", "churn");
    let mut job = as_user(
        &c,
        None,
        &["run", "--node", "n1", churn.to_str().unwrap(), "48"],
    )
    .stdin(Stdio::piped())
    .spawn()
    .unwrap();
    let home_pid = job.id();
    let mut out = BufReader::new(job.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "READY\n");
    for to in ["n2", "n1"] {
        std::thread::sleep(Duration::from_millis(300));
        let m = as_user(&c, None, &["migrate", &home_pid.to_string(), to, how])
            .output()
            .unwrap();
        let said = text(&m.stderr);
        assert!(m.status.success(), "migrate: {said}");
        assert!(said.contains(said_then), "{said}");
    }
    std::thread::sleep(Duration::from_millis(300));
    job.stdin.take().unwrap().write_all(b"check\n").unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let status = wait_timeout(&mut job, Duration::from_secs(30));
    assert!(status.success(), "{rest}");
    let words: Vec<&str> = rest.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"PASS"), "{rest}");
    let forks: u64 = words[2].parse().unwrap();
    assert!(forks > 10, "{rest}");
    let logs = c.log("n1") + &c.log("n2");
    assert!(logs.contains(logged), "{logs}");
}

/// The new node's link is cut while the pages go ahead in rounds: the
/// migration fails once the home finds the node gone, the process runs on
/// where it was, whole; once the link is back, it moves (over a new peer
/// link: the one cut is not reused).
#[test]
fn a_link_cut_during_precopy_leaves_the_process_running_where_it_was() {
    let c = Cluster::home_files(2);
    let writer = build_program("migrate", "writer");
    let writer = writer.to_str().unwrap();
    // 400 MiB written at 50 MiB/s: rounds long enough to cut one.
    let mut job = as_user(
        &c,
        None,
        &["run", "--node", "n1", writer, "400", "50", "100"],
    )
    .stdin(Stdio::piped())
    .spawn()
    .unwrap();
    let home_pid = job.id();
    let mut out = BufReader::new(job.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "READY\n");
    let mut m = as_user(
        &c,
        None,
        &["migrate", &home_pid.to_string(), "n2", "--precopy"],
    )
    .spawn()
    .unwrap();
    let mut err = m.stderr.take().unwrap();
    let mut seen = Vec::new();
    let mut b = [0u8; 1];
    // The first pages are across: a round is under way.
    while !text(&seen).contains("moving") {
        assert_eq!(err.read(&mut b).unwrap(), 1, "{}", text(&seen));
        seen.push(b[0]);
    }
    c.tb.cut_link("n2").unwrap();
    m.stderr = Some(err);
    let status = wait_timeout(&mut m, Duration::from_secs(60));
    let said = text(&seen) + &stderr_of(&mut m);
    c.tb.heal_link("n2").unwrap();
    assert!(!status.success(), "{said}");
    assert!(said.contains("goes on on n1"), "{said}");
    let p = c.ps().into_iter().find(|p| p.home_pid == home_pid).unwrap();
    assert_eq!(p.node, "n1");
    // Back: it moves now.
    if let Err(e) = c.tb.wait_nodes_up(2, Duration::from_secs(30)) {
        panic!("{e:?}\nn2's log:\n{}", c.log("n2"));
    }
    let m = as_user(
        &c,
        None,
        &["migrate", &home_pid.to_string(), "n2", "--precopy"],
    )
    .output()
    .unwrap();
    assert!(m.status.success(), "{}", text(&m.stderr));
    job.stdin.take().unwrap().write_all(b"check\n").unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let status = wait_timeout(&mut job, Duration::from_secs(30));
    assert!(status.success(), "{rest}");
    assert!(
        rest.lines().last().unwrap_or("").starts_with("PASS "),
        "{rest}"
    );
}

/// How a migration with a fault ends.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    /// It failed; the process goes on where it was.
    Stays,
    /// The process is lost with its node, and its proxy says so.
    Lost,
}

/// Python processes on this machine (every node's: the testbed's nodes
/// share its pid namespace) whose command line holds `marker` (not the
/// proxy, which takes its program's command line).
fn copies(marker: &str) -> usize {
    marked(marker).len()
}

/// A python process on n1 that holds 8 MiB and, while it runs, appends
/// "PID TIME" to `log` every 5 ms until a line comes on its stdin (its
/// pid on the machine, from /proc/self: getpid gives the home pid); then
/// it prints a sum of its memory. Its command line holds `marker`.
fn heartbeat_job(c: &Cluster, marker: &str, log: &std::path::Path) -> std::process::Child {
    let prog = format!(
        "import os, sys, time, select\nb = bytearray(b'\\x01') * (8 << 20)\nlog = open({log:?}, 'a', buffering=1)\nprint('ready', flush=True)\nwhile not select.select([sys.stdin], [], [], 0.005)[0]:\n    log.write('%s %d\\n' % (os.readlink('/proc/self'), time.monotonic_ns()))\nsys.stdin.readline()\nprint(sum(b[::4096]), flush=True)\n# {marker}\n"
    );
    python_on_n1(c, &prog)
}

/// Whether two copies of a [`heartbeat_job`] ran at once: their beats,
/// in time order, go from one pid to another and back.
fn two_ran(log: &std::path::Path) -> bool {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut beats: Vec<(u64, u32)> = text
        .lines()
        .filter_map(|l| {
            let (pid, t) = l.split_once(' ')?;
            Some((t.parse().ok()?, pid.parse().ok()?))
        })
        .collect();
    beats.sort_unstable();
    let mut seen: Vec<u32> = Vec::new();
    for (_, pid) in beats {
        match seen.last() {
            Some(&last) if last == pid => {}
            _ if seen.contains(&pid) => return true,
            _ => seen.push(pid),
        }
    }
    false
}

fn marked(marker: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            let python = std::fs::read_link(e.path().join("exe")).is_ok_and(|x| {
                x.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("python"))
            });
            python
                && std::fs::read(e.path().join("cmdline")).is_ok_and(|c| text(&c).contains(marker))
        })
        .map(|e| e.path())
        .collect()
}

/// Both nodes afresh (the last case may have killed one); with
/// `(node, fault)`, that node with that fault (`ROAM_FAULT`).
fn restart_nodes(c: &mut Cluster, with: Option<(&str, &str)>) {
    for n in ["n1", "n2"] {
        let _ = c.tb.stop_daemon(n);
        let env: &[(&str, &str)] = match with {
            Some((node, fault)) if node == n => &[("ROAM_FAULT", fault)],
            _ => &[],
        };
        c.tb.start_daemon_with_env(n, env).unwrap();
    }
    c.tb.wait_nodes_up(2, Duration::from_secs(30)).unwrap();
}

/// A failed move (`said` by `roam migrate`, after `fault`) left the
/// process of `home_pid` on n1, in one copy (`one_copy`), once a node
/// whose link was cut is back.
fn went_on_on_n1(
    c: &Cluster,
    case: &str,
    said: &str,
    fault: &str,
    home_pid: u32,
    one_copy: impl FnMut() -> bool,
) {
    assert!(said.contains("goes on on n1"), "{case}: {said}");
    if fault.starts_with("cut") {
        c.tb.wait_nodes_up(2, Duration::from_secs(30)).unwrap();
    }
    wait_until(
        &format!("{case}: one copy"),
        Duration::from_secs(15),
        one_copy,
    );
    let p = c.ps().into_iter().find(|p| p.home_pid == home_pid).unwrap();
    assert_eq!(p.node, "n1", "{case}");
}

#[test]
fn faults_injected_at_each_step_of_a_migration_leave_one_copy_or_none_said() {
    let mut c = Cluster::up(2);
    let cases: [(&str, &str, Outcome); 9] = [
        // The old node: its link cut, or it killed, as it sends each of
        // its messages.
        ("n1", "cut:Captured", Outcome::Stays),
        ("n1", "cut:Image", Outcome::Stays),
        ("n1", "cut:ImageEnd", Outcome::Stays),
        ("n1", "die:Captured", Outcome::Lost),
        ("n1", "die:ImageEnd", Outcome::Lost),
        // The new node, likewise.
        ("n2", "cut:ImageAck", Outcome::Stays),
        ("n2", "cut:Spawned", Outcome::Stays),
        ("n2", "die:ImageAck", Outcome::Stays),
        ("n2", "die:Spawned", Outcome::Stays),
    ];
    for (i, (node, fault, outcome)) in cases.into_iter().enumerate() {
        let case = format!("case {i}: {fault} on {node}");
        restart_nodes(&mut c, Some((node, fault)));
        let marker = format!("roam-fault-case-{i}-{}", std::process::id());
        let beats = c.tb.dir().join(format!("{marker}.beats"));
        let mut job = heartbeat_job(&c, &marker, &beats);
        let pid = job.id();
        let mut m = as_user(&c, None, &["migrate", &pid.to_string(), "n2"])
            .spawn()
            .unwrap();
        let status = wait_timeout(&mut m, Duration::from_secs(60));
        let said = stderr_of(&mut m);
        assert!(!status.success(), "{case}: {said}");
        match outcome {
            Outcome::Stays => {
                went_on_on_n1(&c, &case, &said, fault, pid, || copies(&marker) == 1);
                assert!(!two_ran(&beats), "{case}: two copies ran");
                job.stdin.take().unwrap().write_all(b"go\n").unwrap();
                let st = wait_timeout(&mut job, Duration::from_secs(30));
                let out = stdout_of(&mut job);
                assert!(st.success(), "{case}: {}", stderr_of(&mut job));
                assert_eq!(out, format!("{}\n", 8 << 8), "{case}");
            }
            Outcome::Lost => {
                let st = wait_timeout(&mut job, Duration::from_secs(30));
                let err = stderr_of(&mut job);
                assert!(!st.success(), "{case}");
                assert!(err.contains("is lost"), "{case}: {err}");
                assert!(!two_ran(&beats), "{case}: two copies ran");
            }
        }
        wait_until(
            &format!("{case}: no copy left"),
            Duration::from_secs(15),
            || copies(&marker) == 0,
        );
    }
    restart_nodes(&mut c, None);
}

/// Writers whose command line has `tick` (their third argument, unique
/// to a test case).
fn writers(tick: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|&b| b == 0).collect();
                args.first().is_some_and(|a| a.ends_with(b"/writer"))
                    && args.get(3).is_some_and(|a| *a == tick.as_bytes())
            })
        })
        .count()
}

/// A writer of 64 MiB it does not write, on n1, ready (`tick`, unique to
/// a test case, tells its processes apart): the job, its home pid, its
/// stdout.
fn idle_writer(c: &Cluster, writer: &str, tick: &str) -> (Child, u32, BufReader<ChildStdout>) {
    let mut job = as_user(c, None, &["run", "--node", "n1", writer, "64", "0", tick])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let home_pid = job.id();
    let mut out = BufReader::new(job.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "READY\n", "writer {tick}");
    (job, home_pid, out)
}

/// A post-copy needs both nodes until every page is in: the old node
/// killed while it pushes the pages, or the new one killed while it takes
/// them, loses the process, and the user is told; no copy is left.
#[test]
fn a_node_dying_during_a_postcopy_loses_the_process_and_says_so() {
    let mut c = Cluster::home_files(2);
    let writer = build_program("migrate", "writer");
    let writer = writer.to_str().unwrap();
    for (i, (node, fault)) in [("n1", "die:LazyPages#40"), ("n2", "die:ImageAck#30")]
        .into_iter()
        .enumerate()
    {
        let case = format!("{fault} on {node}");
        restart_nodes(&mut c, Some((node, fault)));
        let tick = format!("{}", 1000 + i);
        let (mut job, home_pid, _out) = idle_writer(&c, writer, &tick);
        let m = as_user(
            &c,
            None,
            &["migrate", &home_pid.to_string(), "n2", "--post-copy"],
        )
        .output()
        .unwrap();
        let said = text(&m.stderr);
        assert!(!m.status.success(), "{case}: {said}");
        assert!(said.contains("is lost"), "{case}: {said}");
        let st = wait_timeout(&mut job, Duration::from_secs(30));
        assert!(!st.success(), "{case}");
        let err = stderr_of(&mut job);
        assert!(
            err.contains("the process was lost") || err.contains("is lost"),
            "{case}: {err}"
        );
        wait_until(
            &format!("{case}: no copy left"),
            Duration::from_secs(15),
            || writers(&tick) == 0,
        );
    }
    restart_nodes(&mut c, None);
}

/// An eager move over a peer link streams the heap into the new process
/// while it is held: a failure then (either node's link cut, or the new
/// node killed, mid-stream) leaves the process running on the old node,
/// its memory whole; the old node killed then loses it, and says so.
#[test]
fn a_failure_while_the_pages_stream_in_leaves_one_copy_or_none_said() {
    let mut c = Cluster::home_files(2);
    let writer = build_program("migrate", "writer");
    let writer = writer.to_str().unwrap();
    let cases = [
        ("n1", "cut:LazyPages#20", Outcome::Stays),
        ("n1", "die:LazyPages#20", Outcome::Lost),
        ("n2", "cut:ImageAck#20", Outcome::Stays),
        ("n2", "die:ImageAck#20", Outcome::Stays),
    ];
    for (i, (node, fault, outcome)) in cases.into_iter().enumerate() {
        let case = format!("{fault} on {node}");
        restart_nodes(&mut c, Some((node, fault)));
        let tick = format!("{}", 2000 + i);
        let (mut job, home_pid, mut out) = idle_writer(&c, writer, &tick);
        let m = as_user(
            &c,
            None,
            &["migrate", &home_pid.to_string(), "n2", "--eager"],
        )
        .output()
        .unwrap();
        let said = text(&m.stderr);
        assert!(!m.status.success(), "{case}: {said}");
        match outcome {
            Outcome::Stays => {
                // Its proxy (which bears its command line) and one copy.
                went_on_on_n1(&c, &case, &said, fault, home_pid, || writers(&tick) == 2);
                job.stdin.take().unwrap().write_all(b"check\n").unwrap();
                let mut rest = String::new();
                out.read_to_string(&mut rest).unwrap();
                let st = wait_timeout(&mut job, Duration::from_secs(30));
                assert!(st.success(), "{case}: {rest} {}", stderr_of(&mut job));
                assert!(
                    rest.lines().last().unwrap_or("").starts_with("PASS "),
                    "{case}: {rest}"
                );
            }
            Outcome::Lost => {
                let st = wait_timeout(&mut job, Duration::from_secs(30));
                assert!(!st.success(), "{case}");
                let err = stderr_of(&mut job);
                assert!(err.contains("is lost"), "{case}: {err}");
            }
        }
        wait_until(
            &format!("{case}: no copy left"),
            Duration::from_secs(15),
            || writers(&tick) == 0,
        );
    }
    restart_nodes(&mut c, None);
}

#[test]
fn the_home_dying_at_each_step_of_a_migration_leaves_one_copy() {
    let mut c = Cluster::up(2);
    for (i, kind) in ["MigrateOut", "Restore", "MigrateEnd", "PathUp"]
        .into_iter()
        .enumerate()
    {
        let case = format!("home dies before {kind}");
        let fault = format!("die:{kind}");
        let _ = c.tb.stop_daemon("home");
        c.tb.start_daemon_with_env("home", &[("ROAM_FAULT", &fault)])
            .unwrap();
        c.tb.wait_nodes_up(2, Duration::from_secs(30)).unwrap();
        let marker = format!("roam-home-fault-{i}-{}", std::process::id());
        let beats = c.tb.dir().join(format!("{marker}.beats"));
        let mut job = heartbeat_job(&c, &marker, &beats);
        let pid = job.id();
        let mut m = as_user(&c, None, &["migrate", &pid.to_string(), "n2"])
            .spawn()
            .unwrap();
        let status = wait_timeout(&mut m, Duration::from_secs(60));
        let said = stderr_of(&mut m);
        assert!(!status.success(), "{case}: {said}");
        // A new home (without the fault); the nodes and the proxy come back.
        c.tb.start_daemon("home").unwrap();
        c.tb.wait_nodes_up(2, Duration::from_secs(30)).unwrap();
        wait_until(
            &format!("{case}: one copy, running"),
            Duration::from_secs(30),
            || copies(&marker) == 1,
        );
        wait_until(&format!("{case}: listed"), Duration::from_secs(30), || {
            c.ps().iter().any(|p| p.home_pid == pid)
        });
        job.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let st = wait_timeout(&mut job, Duration::from_secs(30));
        let out = stdout_of(&mut job);
        assert!(st.success(), "{case}: {}", stderr_of(&mut job));
        assert_eq!(out, format!("{}\n", 8 << 8), "{case}");
        assert!(!two_ran(&beats), "{case}: two copies ran");
        wait_until(
            &format!("{case}: no copy left"),
            Duration::from_secs(15),
            || copies(&marker) == 0,
        );
    }
    let _ = c.tb.stop_daemon("home");
    c.tb.start_daemon("home").unwrap();
}
