//! Staging (a module of the e2e test binary): `roam run --ship` sends the
//! program to a node that cannot see it, which keeps it in its cache by
//! content hash and runs it from there, natively or through its runner;
//! the second run ships nothing; a file whose bytes do not match the hash
//! it was sent as is refused and not kept; `--confine` lets the program
//! start and refuses its next exec.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use roam_core::client::{Client, ClientError};
use roam_elf::Arch;
use roam_proto::link::LinkMsg;
use roam_proto::local::LocalMsg;
use roam_proto::types::{ImageSummary, StageHash};
use roam_testbed::foreign::{self, Link};

use super::{text, Cluster};

/// A directory under this machine's /tmp: the nodes' processes see their
/// own /tmp, so they cannot see what is in it.
struct HomeOnly(PathBuf);

impl HomeOnly {
    fn new(tag: &str) -> HomeOnly {
        let d = PathBuf::from(format!("/tmp/roam-stage-test-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        HomeOnly(d)
    }
    fn copy(&self, from: &Path, name: &str) -> PathBuf {
        let to = self.0.join(name);
        std::fs::copy(from, &to).unwrap();
        to
    }
}

impl Drop for HomeOnly {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn run(c: &Cluster, args: &[&str]) -> Output {
    c.roam()
        .arg("run")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn staged_count(c: &Cluster, node: &str) -> usize {
    c.log(node).matches("staged sha256:").count()
}

#[test]
fn shipped_programs_run_where_the_file_is_not_and_ship_once() {
    let c = Cluster::hetero(2, &[Arch::S390x], &[]);
    let home = HomeOnly::new("ship");
    let native = foreign::build_native("exec_once", Link::Dynamic).unwrap();
    let prog = home.copy(&native, "exec_once");
    let p = prog.to_str().unwrap();

    // n2 cannot see the file.
    let out = run(&c, &["--node", "n2", p]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));

    // Shipped, it runs, under its own name, from the node's cache.
    let out = run(&c, &["--ship", "--node", "n2", p]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("exec_once {p}\n"));
    let cached = c.tb.stage_dir("n2").join(sha256(&prog));
    assert!(cached.is_file(), "{} missing", cached.display());
    assert_eq!(staged_count(&c, "n2"), 1);

    // The second run ships nothing.
    let out = run(&c, &["--ship", "--node", "n2", p]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(staged_count(&c, "n2"), 1);

    // A foreign build goes where the placement puts it (the node that
    // runs it), through its runner.
    let s390x = foreign::build("s390x", "exec_once", Link::Dynamic).unwrap();
    let sprog = home.copy(&s390x, "exec_once.s390x");
    let sp = sprog.to_str().unwrap();
    let out = run(&c, &["--ship", sp]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("exec_once {sp}\n"));
    assert_eq!(staged_count(&c, "n1"), 1);

    // Only ELF programs are shipped.
    let script = home.0.join("script.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = run(&c, &["--ship", "--node", "n2", script.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(126));
    assert!(
        text(&out.stderr).contains("ELF programs only"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_confined_program_starts_and_runs_nothing_else() {
    let c = Cluster::hetero(2, &[Arch::S390x], &[]);
    let native = foreign::build_native("exec_once", Link::Dynamic).unwrap();
    let p = native.to_str().unwrap();
    // Unconfined, it runs another program.
    let out = run(&c, &["--node", "n2", p, "/bin/true"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    // Confined, shipped or not, it starts, and its exec fails.
    for args in [
        &["--confine", "--node", "n2", p, "/bin/true"][..],
        &["--confine", "--ship", "--node", "n2", p, "/bin/true"],
    ] {
        let out = run(&c, args);
        assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
        assert_eq!(
            text(&out.stdout),
            format!("exec_once {p}\nexecv /bin/true: Operation not permitted\n")
        );
    }
    // Its confinement would not survive a restore: it stays where it is.
    let mut sleeper = c.start(&["run", "--confine", "--node", "n2", "sleep", "30"]);
    let info = c.wait_listed(sleeper.id());
    let out = c.run(&[
        "checkpoint",
        &info.home_pid.to_string(),
        "-o",
        "/tmp/roam-stage-test-never",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("confined"),
        "{}",
        text(&out.stderr)
    );
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    // So through qemu on an emulated node: the runner starts, the guest's
    // exec fails.
    let s390x = foreign::build("s390x", "exec_once", Link::Dynamic).unwrap();
    let sp = s390x.to_str().unwrap();
    let out = run(
        &c,
        &["--confine", "--ship", "--node", "n1", sp, "/bin/true"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).ends_with("execv /bin/true: Operation not permitted\n"),
        "{}",
        text(&out.stdout)
    );
}

/// Stages `data` on `node` as `hash`, as `roam run --ship` does; the
/// home's answer.
fn stage(c: &Cluster, node: &str, hash: StageHash, data: &[u8]) -> Result<LocalMsg, ClientError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut client = Client::connect(&c.tb.socket(), "stage test").await?;
        client
            .send(&LocalMsg::Stage {
                node: node.into(),
                hash,
                len: data.len() as u64,
            })
            .await?;
        client
            .send(&LocalMsg::Transfer(LinkMsg::Image {
                req: 0,
                offset: 0,
                data: data.to_vec(),
            }))
            .await?;
        let end = ImageSummary {
            len: data.len() as u64,
            stored: 0,
            frozen_us: 0,
            stopped_after_us: 0,
            lazy: 0,
        };
        client
            .send(&LocalMsg::Transfer(LinkMsg::ImageEnd {
                req: 0,
                result: Ok(end),
            }))
            .await?;
        loop {
            match client.recv().await? {
                Some(LocalMsg::Transfer(_)) => {}
                Some(LocalMsg::Error(e)) => return Err(ClientError::Remote(e)),
                Some(m) => return Ok(m),
                None => return Err(ClientError::Closed),
            }
        }
    })
}

#[test]
fn a_file_that_does_not_match_its_hash_is_refused_and_not_kept() {
    let c = Cluster::up(1);
    let data = b"\x7fELF not really a program".to_vec();
    let wrong = StageHash([0x5a; 32]);
    let e = stage(&c, "n1", wrong, &data).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("hash") && msg.contains(&wrong.hex()), "{msg}");
    let dir = c.tb.stage_dir("n1");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?} left in {}", dir.display());
    // With the right hash, it is kept; an unknown node is an error.
    let tmp = HomeOnly::new("hash");
    let f = tmp.0.join("d");
    std::fs::write(&f, &data).unwrap();
    let hex = sha256(&f);
    let mut right = StageHash([0; 32]);
    for (i, b) in right.0.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    assert_eq!(stage(&c, "n1", right, &data).unwrap(), LocalMsg::Ok);
    assert!(dir.join(right.hex()).is_file());
    let e = stage(&c, "n9", right, &data).unwrap_err();
    assert!(e.to_string().contains("no node n9"), "{e}");
}
