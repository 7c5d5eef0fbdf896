//! GridRPC end to end on the netns testbed: real roamd daemons, workers
//! started as roam remote processes, the C API from a C program and the
//! Rust API from these tests. The testbed serves the home's files, so the
//! nodes run the worker from this build tree wherever it is.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use roam_proto::types::ProcInfo;
use roam_rpc::{Client, Code, Config, Data};
use roam_testbed::{Testbed, TestbedOpts};

/// target/debug (or release): where the binaries and the library are.
fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_owned()
}

fn worker() -> PathBuf {
    build_dir().join("demo_worker")
}

const IDL: &str = include_str!("../examples/demo.idl");

struct Bed {
    tb: Testbed,
}

impl Bed {
    fn up() -> Bed {
        Bed::with(Vec::new())
    }

    /// With n1 emulating `arch` (through qemu-user), if given.
    fn with(arch: Vec<roam_elf::Arch>) -> Bed {
        Bed::new(arch, true)
    }

    /// Its nodes' processes see the home's files, or their node's.
    fn new(arch: Vec<roam_elf::Arch>, home_files: bool) -> Bed {
        let mut opts = TestbedOpts::new(2, build_dir().join("roamd"));
        opts.arch = arch;
        opts.home_files = home_files;
        let tb = Testbed::up(opts).expect("testbed up");
        tb.wait_nodes_up(2, Duration::from_secs(20))
            .expect("nodes up");
        Bed { tb }
    }

    fn config(&self) -> Config {
        let mut c = Config::new();
        c.roam = build_dir().join("roam");
        c.socket = Some(self.tb.socket().to_owned());
        c.executable(worker(), IDL).expect("idl");
        c
    }

    fn ps(&self) -> Vec<ProcInfo> {
        let out = Command::new(build_dir().join("roam"))
            .args(["ps", "--json"])
            .env("ROAM_SOCKET", self.tb.socket())
            .output()
            .expect("roam ps");
        assert!(out.status.success());
        serde_json::from_slice(&out.stdout).expect("ps json")
    }

    fn workers(&self) -> Vec<ProcInfo> {
        self.ps()
            .into_iter()
            .filter(|p| p.command.contains("demo_worker"))
            .collect()
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn the_c_api_runs_calls_on_the_workers() {
    if !root() {
        eprintln!("skipped: the testbed needs root");
        return;
    }
    let bed = Bed::up();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("rpc-c-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let client = dir.join("dmmul_client");
    let src = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cc = Command::new("cc")
        .args(["-O2", "-Wall", "-Wextra", "-Werror"])
        .arg(src.join("examples/c/dmmul_client.c"))
        .arg("-I")
        .arg(src.join("include"))
        .arg("-L")
        .arg(build_dir())
        .args(["-lroam_rpc", "-lm", "-o"])
        .arg(&client)
        .output()
        .expect("cc runs");
    assert!(
        cc.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let cfg = dir.join("client.toml");
    std::fs::write(
        &cfg,
        format!(
            "roam = {:?}\nsocket = {:?}\n[[executable]]\npath = {:?}\nidl = {:?}\n",
            build_dir().join("roam"),
            bed.tb.socket(),
            worker(),
            src.join("examples/demo.idl"),
        ),
    )
    .unwrap();
    let out = Command::new(&client)
        .arg(&cfg)
        .arg("n2")
        .env("LD_LIBRARY_PATH", build_dir())
        .output()
        .expect("client runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ALL PASS"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every worker ended with the client.
    wait_until("the workers to end", || bed.workers().is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bound_handle_keeps_its_worker_and_its_state_and_roam_ps_shows_it() {
    if !root() {
        eprintln!("skipped: the testbed needs root");
        return;
    }
    let bed = Bed::up();
    let client = Client::new(bed.config()).unwrap();
    let h = client.handle_on("n1", "count").unwrap();
    for (add, want) in [(5, 5i64), (7, 12), (-2, 10)] {
        let out = h.call(vec![Data::from(add), Data::Long(vec![])]).unwrap();
        assert_eq!(out, vec![Data::from(want)]);
    }
    let ws = bed.workers();
    assert_eq!(ws.len(), 1, "{ws:?}");
    assert_eq!(ws[0].node, "n1");
    // The remote executable runs where the handle says, as a roam process.
    let w = client.handle_on("n1", "where").unwrap();
    let out = w.call(vec![Data::Char(vec![])]).unwrap();
    let Data::Char(name) = &out[0] else {
        panic!("{out:?}")
    };
    assert!(name.starts_with(b"n1\0"), "{name:?}");
    drop(h);
    drop(w);
    wait_until("the bound workers to end", || bed.workers().is_empty());
    client.shutdown();
}

#[test]
fn default_handles_spread_calls_and_run_them_again_when_a_worker_dies() {
    if !root() {
        eprintln!("skipped: the testbed needs root");
        return;
    }
    let bed = Bed::up();
    let mut cfg = bed.config();
    cfg.retries = 1;
    let client = Client::new(cfg).unwrap();
    let h = client.handle("nap").unwrap();
    let ids: Vec<i32> = (0..2)
        .map(|_| {
            h.call_async(vec![Data::from(1500), Data::Int(vec![])])
                .unwrap()
        })
        .collect();
    wait_until("two workers", || bed.workers().len() == 2);
    let mut nodes: Vec<String> = bed.workers().into_iter().map(|p| p.node).collect();
    nodes.sort();
    assert_eq!(nodes, ["n1", "n2"], "one worker per node");
    // Kill one worker in the middle of its call: the call runs again on
    // the other and still succeeds.
    let victim = bed.workers()[0].home_pid;
    let kill = Command::new(build_dir().join("roam"))
        .args(["kill", "-KILL", &victim.to_string()])
        .env("ROAM_SOCKET", bed.tb.socket())
        .status()
        .unwrap();
    assert!(kill.success());
    for id in ids {
        assert_eq!(client.wait(id).unwrap(), vec![Data::from(1500)]);
    }
    client.shutdown();
    wait_until("the workers to end", || bed.workers().is_empty());
}

#[test]
fn default_handles_place_workers_by_the_clusters_mode() {
    if !root() {
        eprintln!("skipped: the testbed needs root");
        return;
    }
    let bed = Bed::up();
    let roam = |args: &[&str]| {
        Command::new(build_dir().join("roam"))
            .args(args)
            .env("ROAM_SOCKET", bed.tb.socket())
            .current_dir("/")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    // Parallel mode: one process per node, and n1 has one.
    assert!(roam(&["mode", "parallel"]).wait().unwrap().success());
    let mut busy = roam(&["run", "--node", "n1", "sleep", "60"]);
    wait_until("the sleeper", || {
        bed.ps()
            .iter()
            .any(|p| p.node == "n1" && p.command.contains("sleep"))
    });
    let client = Client::new(bed.config()).unwrap();
    let h = client.handle("nap").unwrap();
    let ids: Vec<i32> = (0..3)
        .map(|_| {
            h.call_async(vec![Data::from(200), Data::Int(vec![])])
                .unwrap()
        })
        .collect();
    for id in ids {
        assert_eq!(client.wait(id).unwrap(), vec![Data::from(200)]);
    }
    // All on n2's one worker: n1 is taken, and n2 takes one process.
    let nodes: Vec<String> = bed.workers().into_iter().map(|p| p.node).collect();
    assert_eq!(nodes, ["n2"]);
    client.shutdown();
    busy.kill().unwrap();
    busy.wait().unwrap();
    wait_until("the workers to end", || bed.workers().is_empty());
}

#[test]
fn failures_end_in_the_standard_errors() {
    if !root() {
        eprintln!("skipped: the testbed needs root");
        return;
    }
    let bed = Bed::up();
    let mut cfg = bed.config();
    cfg.timeout = Some(Duration::from_millis(500));
    let client = Client::new(cfg).unwrap();
    // Names that do not exist.
    assert_eq!(
        client.handle("nosuch").err().unwrap().code,
        Code::FunctionNotFound
    );
    let e = client.handle_on("n9", "null").err().unwrap();
    assert_eq!(e.code, Code::ServerNotFound, "{e}");
    // Arguments that do not match the interface.
    let h = client.handle_on("n1", "dmmul").unwrap();
    let e = h
        .call(vec![
            Data::from(2),
            Data::from(vec![1.0; 3]),
            Data::from(vec![1.0; 4]),
            Data::Double(vec![]),
        ])
        .unwrap_err();
    assert_eq!(e.code, Code::OtherErrorCode);
    assert!(
        e.msg.contains("A has 3 elements, the interface says 4"),
        "{e}"
    );
    // The function's own failure.
    let f = client.handle_on("n1", "fail").unwrap();
    let e = f.call(vec![Data::from("bad input")]).unwrap_err();
    assert_eq!(e.code, Code::SessionFailed);
    assert!(e.msg.contains("bad input"), "{e}");
    // A timeout, and the handle works again after it.
    let n = client.handle_on("n2", "nap").unwrap();
    let e = n
        .call(vec![Data::from(5000), Data::Int(vec![])])
        .unwrap_err();
    assert!(
        e.code == Code::SessionFailed && e.msg.contains("timed out"),
        "{e}"
    );
    assert_eq!(
        n.call(vec![Data::from(1), Data::Int(vec![])]).unwrap(),
        vec![Data::from(1)]
    );
    // A worker that crashes in a call.
    let c = client.handle_on("n2", "crash").unwrap();
    let e = c.call(vec![Data::from(3)]).unwrap_err();
    assert_eq!(e.code, Code::CommunicationFailed, "{e}");
    assert!(e.msg.contains("exit status: 3"), "{e}");
    client.shutdown();

    // A worker whose interface is not the configuration's.
    let mut cfg = bed.config();
    cfg.executables.clear();
    cfg.executable(
        worker(),
        "Define dmmul(IN int n, IN double A[n], OUT double C[n])",
    )
    .unwrap();
    let client = Client::new(cfg).unwrap();
    let e = client.handle_on("n1", "dmmul").err().unwrap();
    assert_eq!(e.code, Code::RpcRefused);
    assert!(
        e.msg.contains("says dmmul(IN int n, IN double A[n][n]"),
        "{e}"
    );
    // An executable that is not a worker at all.
    let mut cfg = bed.config();
    cfg.executables.clear();
    cfg.start_timeout = Duration::from_secs(5);
    cfg.executable("/bin/true", "Define null()").unwrap();
    let client = Client::new(cfg).unwrap();
    let e = client.handle_on("n1", "null").err().unwrap();
    assert_eq!(e.code, Code::RpcRefused);
    assert!(e.msg.contains("ended before it connected"), "{e}");
    wait_until("the workers to end", || bed.workers().is_empty());
}

#[test]
fn the_rust_sweep_example_farms_out_its_jobs() {
    if !root() {
        eprintln!("skipped: the testbed needs root");
        return;
    }
    let bed = Bed::up();
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("rpc-sweep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("client.toml");
    std::fs::write(
        &cfg,
        format!(
            "roam = {:?}\nsocket = {:?}\n[[executable]]\npath = {:?}\nidl = {:?}\n",
            build_dir().join("roam"),
            bed.tb.socket(),
            worker(),
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo.idl"),
        ),
    )
    .unwrap();
    let out = Command::new(build_dir().join("examples/sweep"))
        .arg(&cfg)
        .arg("12")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("12/12"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The demo worker built for s390x, a big-endian machine, in a target
/// directory of its own (the outer cargo holds this one's lock).
fn s390x_worker() -> PathBuf {
    let target = "s390x-unknown-linux-gnu";
    let dir = build_dir().parent().expect("target").join("cross");
    let out = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "-p",
            "roam-rpc-demo",
            "--no-default-features",
            "--target",
            target,
        ])
        .env("CARGO_TARGET_DIR", &dir)
        .env(
            "CARGO_TARGET_S390X_UNKNOWN_LINUX_GNU_LINKER",
            "s390x-linux-gnu-gcc",
        )
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cannot build the s390x worker (scripts/deps.sh installs the Rust target \
         and gcc-s390x-linux-gnu): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join(target).join("debug/demo_worker")
}

#[test]
fn a_big_endian_worker_serves_a_little_endian_client() {
    if !root() {
        eprintln!("skipped: the testbed needs root");
        return;
    }
    let worker = s390x_worker();
    let bed = Bed::with(vec![roam_elf::Arch::S390x]);
    let mut cfg = bed.config();
    cfg.executables.clear();
    cfg.executable(&worker, IDL).unwrap();
    let client = Client::new(cfg).unwrap();
    // Only n1 runs s390x programs: a default handle finds it.
    let h = client.handle("dmmul").unwrap();
    let n = 5usize;
    let a: Vec<f64> = (0..n * n).map(|i| i as f64 * 0.5 - 3.0).collect();
    let b: Vec<f64> = (0..n * n).map(|i| (i % 7) as f64 + 0.25).collect();
    let mut want = vec![0.0; n * n];
    for i in 0..n {
        for k in 0..n {
            for j in 0..n {
                want[i * n + j] += a[i * n + k] * b[k * n + j];
            }
        }
    }
    let out = h
        .call(vec![
            Data::from(n as i32),
            Data::from(a),
            Data::from(b),
            Data::Double(vec![]),
        ])
        .unwrap();
    assert_eq!(out, vec![Data::from(want)]);
    assert_eq!(client.worker_nodes(), ["n1"]);
    // Every type, both ways: INOUT longs, OUT ints and chars, a string in.
    let c = client.handle_on("n1", "count").unwrap();
    for (add, total) in [(1 << 20, 1i64 << 20), (-3, (1 << 20) - 3)] {
        assert_eq!(
            c.call(vec![Data::from(add), Data::Long(vec![])]).unwrap(),
            vec![Data::from(total)]
        );
    }
    let e = client.handle_on("n1", "echo").unwrap();
    let x: Vec<f64> = (0..100_000).map(|i| i as f64 / 3.0).collect();
    let back = e
        .call(vec![
            Data::Long(vec![x.len() as i64]),
            Data::from(x.clone()),
        ])
        .unwrap();
    assert_eq!(back, vec![Data::from(x)]);
    let w = client.handle_on("n1", "where").unwrap();
    let Data::Char(name) = &w.call(vec![Data::Char(vec![])]).unwrap()[0] else {
        panic!("chars")
    };
    assert!(name.starts_with(b"n1\0"), "{name:?}");
    let f = client.handle_on("n1", "fail").unwrap();
    let err = f.call(vec![Data::from("über")]).unwrap_err();
    assert!(err.msg.contains("über"), "{err}");
    drop((h, c, e, w, f));
    client.shutdown();
    wait_until("the worker to end", || bed.workers().is_empty());
}

#[test]
fn a_confined_worker_computes_and_reads_files_but_runs_no_program() {
    if !root() {
        eprintln!("skipped: the testbed needs root");
        return;
    }
    let bed = Bed::up();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo.idl");
    let size = std::fs::metadata(&file).unwrap().len() as i64;
    let path = file.to_str().unwrap();
    // Unconfined, a worker runs programs.
    let mut cfg = bed.config();
    cfg.executables[0].confine = false;
    let client = Client::new(cfg).unwrap();
    let s = client.handle_on("n1", "spawn").unwrap();
    assert_eq!(
        s.call(vec![Data::from("/bin/true"), Data::Int(vec![])])
            .unwrap(),
        vec![Data::from(0)]
    );
    client.shutdown();
    // Confined (shipped executables are, by default), it cannot, and
    // says why; files and computing still work.
    let client = Client::new(bed.config()).unwrap();
    let s = client.handle_on("n1", "spawn").unwrap();
    let e = s
        .call(vec![Data::from("/bin/true"), Data::Int(vec![])])
        .unwrap_err();
    assert_eq!(e.code, Code::SessionFailed);
    assert!(e.msg.contains("Operation not permitted"), "{e}");
    let r = client.handle_on("n1", "readfile").unwrap();
    assert_eq!(
        r.call(vec![Data::from(path), Data::Long(vec![])]).unwrap(),
        vec![Data::from(size)]
    );
    let c = client.handle_on("n1", "count").unwrap();
    assert_eq!(
        c.call(vec![Data::from(4), Data::Long(vec![])]).unwrap(),
        vec![Data::from(4i64)]
    );
    drop((s, r, c));
    client.shutdown();
    wait_until("the workers to end", || bed.workers().is_empty());
}

#[test]
fn an_executable_the_nodes_lack_is_shipped_once_per_node() {
    if !root() {
        eprintln!("skipped: the testbed needs root");
        return;
    }
    // The nodes see their own files, and this machine's /tmp is not theirs.
    let bed = Bed::new(Vec::new(), false);
    let dir = PathBuf::from(format!("/tmp/rpc-ship-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("demo_worker");
    std::fs::copy(worker(), &exe).unwrap();
    let config = |ship: bool| {
        let mut c = Config::new();
        c.roam = build_dir().join("roam");
        c.socket = Some(bed.tb.socket().to_owned());
        c.executable(&exe, IDL).expect("idl");
        c.executables[0].ship = ship;
        c.start_timeout = Duration::from_secs(20);
        // A directory every node has (this test's may be in /tmp).
        c.workdir = Some(PathBuf::from("/"));
        c
    };
    // Not shipped, the worker cannot start.
    let client = Client::new(config(false)).unwrap();
    let Err(e) = client.handle_on("n1", "where") else {
        panic!("a worker started from a file its node lacks");
    };
    assert!(e.msg.contains("exit status: 127"), "{e}");
    client.shutdown();
    // Shipped, it runs, on each node; a second client ships nothing.
    let staged = |node: &str| {
        let log = std::fs::read_to_string(bed.tb.log_path(node).unwrap()).unwrap();
        log.matches("staged sha256:").count()
    };
    for round in 0..2 {
        let client = Client::new(config(true)).unwrap();
        for node in ["n1", "n2"] {
            let h = client.handle_on(node, "where").unwrap();
            let out = h.call(vec![Data::Char(vec![])]).unwrap();
            let Data::Char(name) = &out[0] else {
                panic!("{out:?}")
            };
            assert!(name.starts_with(format!("{node}\0").as_bytes()), "{name:?}");
        }
        client.shutdown();
        assert_eq!((staged("n1"), staged("n2")), (1, 1), "round {round}");
    }
    wait_until("the workers to end", || bed.workers().is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_contour_eigensolver_runs_on_workers_of_two_architectures() {
    if !root() {
        eprintln!("skipped: the testbed needs root");
        return;
    }
    let s390x = s390x_worker();
    let bed = Bed::with(vec![roam_elf::Arch::S390x]);
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("rpc-contour-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("client.toml");
    // Two builds: n1 (emulating s390x) gets the big-endian one, n2 the
    // native one.
    std::fs::write(
        &cfg,
        format!(
            "roam = {:?}\nsocket = {:?}\n[[executable]]\nbuilds = [{:?}, {:?}]\nidl = {:?}\n",
            build_dir().join("roam"),
            bed.tb.socket(),
            worker(),
            s390x,
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo.idl"),
        ),
    )
    .unwrap();
    let out = Command::new(build_dir().join("contour"))
        .arg(&cfg)
        .args(["30", "128"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("contour: PASS"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("\"n1\"") && stdout.contains("\"n2\""),
        "{stdout}"
    );
    wait_until("the workers to end", || bed.workers().is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_worker_written_in_c_serves_calls() {
    if !root() {
        eprintln!("skipped: the testbed needs root");
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("rpc-cw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let worker = dir.join("dmmul_worker");
    let src = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cc = Command::new("cc")
        .args(["-O2", "-Wall", "-Wextra", "-Werror"])
        .arg(src.join("examples/c/dmmul_worker.c"))
        .arg("-I")
        .arg(src.join("include"))
        .arg("-L")
        .arg(build_dir())
        .arg(format!("-Wl,-rpath,{}", build_dir().display()))
        .args(["-lroam_rpc", "-o"])
        .arg(&worker)
        .output()
        .expect("cc runs");
    assert!(
        cc.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let bed = Bed::up();
    let mut cfg = bed.config();
    cfg.executables.clear();
    cfg.executable(
        &worker,
        "Module cdemo;\n\
         Define dmmul(IN int n, IN double A[n][n], IN double B[n][n], OUT double C[n][n]);\n\
         Define count(IN int add, OUT long total);\n\
         Define fail(IN string why);\n",
    )
    .unwrap();
    let client = Client::new(cfg).unwrap();
    let h = client.handle_on("n2", "dmmul").unwrap();
    let out = h
        .call(vec![
            Data::from(2),
            Data::from(vec![1.0, 2.0, 3.0, 4.0]),
            Data::from(vec![5.0, 6.0, 7.0, 8.0]),
            Data::Double(vec![]),
        ])
        .unwrap();
    assert_eq!(out, vec![Data::from(vec![19.0, 22.0, 43.0, 50.0])]);
    let c = client.handle_on("n2", "count").unwrap();
    for (add, want) in [(2, 2i64), (3, 5)] {
        assert_eq!(
            c.call(vec![Data::from(add), Data::Long(vec![])]).unwrap(),
            vec![Data::from(want)]
        );
    }
    let f = client.handle_on("n2", "fail").unwrap();
    let e = f.call(vec![Data::from("no")]).unwrap_err();
    assert_eq!(e.code, Code::SessionFailed);
    assert!(e.msg.contains("C worker says: no"), "{e}");
    drop((h, c, f));
    client.shutdown();
    wait_until("the workers to end", || {
        bed.ps().iter().all(|p| !p.command.contains("dmmul_worker"))
    });
    std::fs::remove_dir_all(&dir).unwrap();
}
