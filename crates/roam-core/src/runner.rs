//! Runners: how a node runs programs of an architecture other than its own.
//!
//! A node's configuration lists a runner per foreign architecture (qemu-user
//! for most). The node probes each one when it starts, before it joins: a
//! runner that is missing, not executable or fails `--version` is left out
//! and reported to the home with the reason, so the operator learns of it
//! at join rather than at the first program that needs it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use roam_elf::Arch;
use roam_proto::types::ArchInfo;

use crate::config::{NodeConfig, RunnerConfig};

/// How long a runner's `--version` may take.
const PROBE_LIMIT: Duration = Duration::from_secs(5);

/// What a node runs, and how.
#[derive(Debug, Clone)]
pub struct Runners {
    /// The architecture the node declares.
    native: Arch,
    /// The node is another machine running `native` through a runner.
    emulated: bool,
    usable: Vec<(Arch, RunnerConfig)>,
    broken: Vec<String>,
}

/// What to execute for a program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    pub program: Vec<u8>,
    pub argv: Vec<Vec<u8>>,
}

impl Runners {
    /// Probes the runners of `cfg`. Blocking (it runs each runner once):
    /// call it before the daemon reaps children with `waitpid(-1)`.
    pub fn probe(cfg: &NodeConfig) -> Runners {
        let native = cfg.declared_arch();
        let mut usable = Vec::new();
        let mut broken = Vec::new();
        for (name, runner) in &cfg.runners {
            let Ok(arch) = name.parse::<Arch>() else {
                continue; // the config check refuses these
            };
            match probe_one(runner.path()) {
                Ok(()) => usable.push((arch, runner.clone())),
                Err(why) => {
                    let msg = format!("runner for {arch} ({}): {why}", runner.path().display());
                    tracing::warn!("{msg}");
                    broken.push(msg);
                }
            }
        }
        Runners {
            native,
            emulated: cfg.emulated(),
            usable,
            broken,
        }
    }

    /// A node running only its machine's own programs.
    pub fn native_only() -> Runners {
        Runners {
            native: Arch::native(),
            emulated: false,
            usable: Vec::new(),
            broken: Vec::new(),
        }
    }

    /// What the node tells the home. An emulated node whose own runner is
    /// broken runs nothing, and says so.
    pub fn arch_info(&self) -> ArchInfo {
        ArchInfo {
            native: self.native.to_string(),
            emulated: self.emulated,
            runners: self
                .usable
                .iter()
                .map(|(a, _)| *a)
                .filter(|a| *a != self.native)
                .map(|a| a.to_string())
                .collect(),
            broken: self.broken.clone(),
        }
    }

    /// Problems to report at join.
    pub fn warnings(&self) -> Vec<String> {
        self.broken.clone()
    }

    fn runner(&self, arch: Arch) -> Option<&RunnerConfig> {
        self.usable.iter().find(|(a, _)| *a == arch).map(|(_, r)| r)
    }

    /// What to execute for `program` with `argv`, built for `arch` (`None`:
    /// unknown, executed as it is). `script` is the kernel's expansion of a
    /// `#!` script (see `SpawnSpec::script`), which a runner needs. An
    /// error says what the node runs.
    pub fn plan(
        &self,
        arch: Option<&str>,
        program: &[u8],
        argv: &[Vec<u8>],
        script: &[Vec<u8>],
    ) -> Result<Exec, String> {
        let direct = || Exec {
            program: program.to_vec(),
            argv: argv.to_vec(),
        };
        let Some(name) = arch else {
            return Ok(direct());
        };
        let arch: Arch = name.parse().map_err(|e| format!("{e}"))?;
        if arch == self.native && !self.emulated {
            return Ok(direct());
        }
        let Some(runner) = self.runner(arch) else {
            return Err(format!(
                "cannot run {arch} programs (it runs {})",
                self.arch_info().all().join(", ")
            ));
        };
        if script.is_empty() {
            return Ok(through(runner, program, argv));
        }
        let expanded: Vec<Vec<u8>> = script.iter().chain(argv.iter().skip(1)).cloned().collect();
        Ok(through(runner, &script[0], &expanded))
    }
}

/// `RUNNER [ARGS] [-0 ARGV0] PROGRAM ARGV[1..]`.
fn through(runner: &RunnerConfig, program: &[u8], argv: &[Vec<u8>]) -> Exec {
    use std::os::unix::ffi::OsStrExt;
    let path = runner.path().as_os_str().as_bytes().to_vec();
    let mut out = vec![path.clone()];
    out.extend(runner.args().iter().map(|a| a.as_bytes().to_vec()));
    let is_qemu = runner
        .path()
        .file_name()
        .is_some_and(|n| n.as_bytes().starts_with(b"qemu-"));
    if let (true, Some(argv0)) = (is_qemu, argv.first()) {
        out.push(b"-0".to_vec());
        out.push(argv0.clone());
    }
    out.push(program.to_vec());
    out.extend(argv.iter().skip(1).cloned());
    Exec {
        program: path,
        argv: out,
    }
}

/// Checks that `path` is an executable file that answers `--version`.
fn probe_one(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err("not executable".into());
    }
    let mut child = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start it: {e}"))?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("`--version` failed ({status})")),
            Ok(None) if started.elapsed() > PROBE_LIMIT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("`--version` took over {}s", PROBE_LIMIT.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn runners(native: Arch, emulated: bool, usable: &[(Arch, &str)]) -> Runners {
        Runners {
            native,
            emulated,
            usable: usable
                .iter()
                .map(|(a, p)| (*a, RunnerConfig::Path(PathBuf::from(p))))
                .collect(),
            broken: Vec::new(),
        }
    }

    fn v(items: &[&str]) -> Vec<Vec<u8>> {
        items.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn plans_direct_and_runner_execs() {
        let r = runners(
            Arch::X86_64,
            false,
            &[(Arch::Aarch64, "/usr/bin/qemu-aarch64-static")],
        );
        let argv = v(&["pi", "100"]);
        let d = r.plan(Some("x86_64"), b"./pi", &argv, &[]).unwrap();
        assert_eq!(d.program, b"./pi");
        assert_eq!(d.argv, argv);
        assert_eq!(r.plan(None, b"./pi", &argv, &[]).unwrap(), d);
        let q = r.plan(Some("arm64"), b"./pi", &argv, &[]).unwrap();
        assert_eq!(q.program, b"/usr/bin/qemu-aarch64-static");
        assert_eq!(
            q.argv,
            v(&["/usr/bin/qemu-aarch64-static", "-0", "pi", "./pi", "100"])
        );
        let e = r.plan(Some("s390x"), b"./pi", &argv, &[]).unwrap_err();
        assert!(e.contains("s390x") && e.contains("x86_64, aarch64"), "{e}");
        // A script whose interpreter is an aarch64 program.
        let s = r
            .plan(
                Some("aarch64"),
                b"/t/s",
                &v(&["s", "x"]),
                &v(&["/t/interp", "-f", "/t/s"]),
            )
            .unwrap();
        assert_eq!(
            s.argv,
            v(&[
                "/usr/bin/qemu-aarch64-static",
                "-0",
                "/t/interp",
                "/t/interp",
                "-f",
                "/t/s",
                "x"
            ])
        );
        assert!(e.contains("s390x") && e.contains("x86_64, aarch64"), "{e}");
    }

    #[test]
    fn an_emulated_node_runs_its_own_arch_through_its_runner_only() {
        let r = runners(Arch::S390x, true, &[(Arch::S390x, "/opt/box-s390x")]);
        let info = r.arch_info();
        assert_eq!(info.native, "s390x");
        assert!(info.emulated);
        assert!(info.runners.is_empty());
        let p = r
            .plan(Some("s390x"), b"/t/x", &v(&["x", "a"]), &[])
            .unwrap();
        // Not a qemu: no -0.
        assert_eq!(p.argv, v(&["/opt/box-s390x", "/t/x", "a"]));
        let native = Arch::native().to_string();
        if native != "s390x" {
            assert!(r
                .plan(Some(&native), b"/bin/true", &v(&["true"]), &[])
                .is_err());
        }
    }

    #[test]
    fn probing_finds_broken_runners() {
        assert!(probe_one(Path::new("/bin/true")).is_ok());
        assert!(probe_one(Path::new("/nonexistent/qemu"))
            .unwrap_err()
            .contains("No such file"));
        let plain = std::env::temp_dir().join(format!("roam-probe-{}", std::process::id()));
        std::fs::write(&plain, b"data").unwrap();
        let e = probe_one(&plain).unwrap_err();
        let _ = std::fs::remove_file(&plain);
        assert!(e.contains("not executable"), "{e}");
        assert!(probe_one(Path::new("/bin/false"))
            .unwrap_err()
            .contains("failed"));
        assert!(probe_one(Path::new("/tmp"))
            .unwrap_err()
            .contains("regular file"));
    }
}
