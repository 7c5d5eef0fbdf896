//! Foreign-architecture test programs.
//!
//! The small C programs in `tests/programs/` (at the repository root) are
//! what tests run on emulated-architecture nodes: each is written to behave
//! the same whatever the word size and byte order, so its output under
//! qemu-user on a foreign node can be compared with a reference. This module
//! cross-compiles them for the [`targets`] (Debian's cross compilers) or for
//! the host ([`build_native`]), and runs a build under plain qemu-user
//! ([`run_under_qemu`]) to get that reference.
//!
//! Builds are cached in `<target dir>/foreign/<arch>/<program>` (`-dyn`
//! appended for a dynamically linked build; `native` for the host), where the
//! target directory is `$CARGO_TARGET_DIR` (relative to the workspace root
//! if relative) or the workspace's `target/`. A build is redone only when the
//! source is newer than the cached binary; it is written under a temporary
//! name and renamed into place, so tests building the same program
//! concurrently never see (or execute) a half-written binary.
//!
//! A statically linked build runs under qemu-user as it is. A dynamically
//! linked one asks for its target's loader (e.g. `/lib/ld-linux-aarch64.so.1`),
//! which lives in the cross libc's root ([`CrossTarget::sysroot`], e.g.
//! `/usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1`): qemu must be told that
//! root with `-L` (as [`qemu_command`] does) or `QEMU_LD_PREFIX` (which,
//! unlike `-L`, the guest also sees in its environment).

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;

/// A foreign architecture the test programs are built for and run on.
#[derive(Debug)]
pub struct CrossTarget {
    /// The architecture as qemu names it (`qemu-<arch>-static`).
    pub arch: &'static str,
    /// The cross C compiler.
    pub gcc: &'static str,
    /// The qemu-user emulator.
    pub qemu: &'static str,
    /// The cross libc's root: where a dynamically linked build's loader and
    /// libraries are (`<sysroot>/lib/...`); qemu's `-L` / `QEMU_LD_PREFIX`.
    pub sysroot: &'static str,
    /// The Debian packages providing [`Self::gcc`] and the libc under
    /// [`Self::sysroot`].
    pub gcc_packages: &'static str,
}

/// The Debian package providing every `qemu-<arch>-static`.
pub const QEMU_PACKAGE: &str = "qemu-user-static";

static TARGETS: [CrossTarget; 3] = [
    CrossTarget {
        arch: "aarch64",
        gcc: "aarch64-linux-gnu-gcc",
        qemu: "qemu-aarch64-static",
        sysroot: "/usr/aarch64-linux-gnu",
        gcc_packages: "gcc-aarch64-linux-gnu libc6-dev-arm64-cross",
    },
    CrossTarget {
        arch: "s390x",
        gcc: "s390x-linux-gnu-gcc",
        qemu: "qemu-s390x-static",
        sysroot: "/usr/s390x-linux-gnu",
        gcc_packages: "gcc-s390x-linux-gnu libc6-dev-s390x-cross",
    },
    CrossTarget {
        arch: "arm",
        gcc: "arm-linux-gnueabihf-gcc",
        qemu: "qemu-arm-static",
        sysroot: "/usr/arm-linux-gnueabihf",
        gcc_packages: "gcc-arm-linux-gnueabihf libc6-dev-armhf-cross",
    },
];

/// The foreign architectures: aarch64 (64-bit little-endian), s390x (64-bit
/// big-endian) and arm (32-bit little-endian, hard float).
pub fn targets() -> &'static [CrossTarget] {
    &TARGETS
}

/// How a test program is linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// `-static`: runs under qemu-user with no target libraries.
    Static,
    /// Against the (cross) libc's shared objects.
    Dynamic,
}

/// Errors finding the tools for, building or running the test programs.
#[derive(Debug, Error)]
pub enum ForeignError {
    #[error("unknown foreign architecture '{arch}' (known: aarch64, s390x, arm)")]
    UnknownArch { arch: String },
    #[error("invalid test program name '{program}' (expected a file name under tests/programs/, without .c)")]
    BadProgram { program: String },
    #[error(
        "{what} for {arch} is missing ({missing}): install it with `apt-get install -y {packages}`"
    )]
    Missing {
        what: &'static str,
        arch: String,
        missing: String,
        packages: &'static str,
    },
    #[error("cannot {what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot run `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` failed ({status}):\n{stderr}")]
    Compile {
        command: String,
        status: String,
        stderr: String,
    },
}

/// The target named `arch`, if its compiler, its libc headers and its qemu
/// are installed; otherwise an error naming the packages to install.
pub fn available(arch: &str) -> Result<&'static CrossTarget, ForeignError> {
    let target = lookup(arch)?;
    require_tool(target.gcc, "the cross compiler", arch, target.gcc_packages)?;
    let stdio_h = Path::new(target.sysroot).join("include/stdio.h");
    if !stdio_h.is_file() {
        return Err(ForeignError::Missing {
            what: "the cross libc",
            arch: arch.to_owned(),
            missing: format!("no {}", stdio_h.display()),
            packages: target.gcc_packages,
        });
    }
    require_tool(target.qemu, "qemu-user", arch, QEMU_PACKAGE)?;
    Ok(target)
}

/// Builds `tests/programs/<program>.c` for `arch` (if not already built from
/// the current source) and returns the binary's path.
pub fn build(arch: &str, program: &str, link: Link) -> Result<PathBuf, ForeignError> {
    check_program_name(program)?;
    let target = available(arch)?;
    compile(target.gcc, target.arch, program, link)
}

/// Builds `tests/programs/<program>.c` for the host with `cc` (if not
/// already built from the current source) and returns the binary's path.
pub fn build_native(program: &str, link: Link) -> Result<PathBuf, ForeignError> {
    check_program_name(program)?;
    // Static linking needs libc6-dev's libc.a, which build-essential brings.
    require_tool("cc", "a C compiler", "the host", "build-essential")?;
    compile("cc", "native", program, link)
}

/// A command running `binary` (built for `arch`) under qemu-user, with the
/// target's libc root as qemu's `-L` so dynamically linked builds run too.
/// Arguments, environment, directory and stdio are the caller's to add.
pub fn qemu_command(arch: &str, binary: &Path) -> Result<Command, ForeignError> {
    let target = lookup(arch)?;
    require_tool(target.qemu, "qemu-user", arch, QEMU_PACKAGE)?;
    let mut command = Command::new(target.qemu);
    command.arg("-L").arg(target.sysroot).arg(binary);
    Ok(command)
}

/// Runs `binary` (built for `arch`) under qemu-user with `args`, stdin
/// empty, and returns its exit status and output: the reference for what a
/// roam node emulating `arch` should produce.
///
/// Under qemu-user a guest killed by a signal shows as qemu killed by the
/// same signal (qemu re-raises it on itself, with core dumps off); for a
/// signal whose default action dumps core, qemu first writes
/// `qemu: uncaught target signal N (Name) - core dumped` to stderr, whether
/// or not a core was written.
///
/// # Panics
///
/// If `arch` is unknown, its qemu is not installed or cannot be run: this
/// is a helper for tests.
pub fn run_under_qemu<I, S>(arch: &str, binary: &Path, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = qemu_command(arch, binary).unwrap_or_else(|e| panic!("{}", chain(&e)));
    command.args(args);
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", command_line(&command)))
}

/// The directory holding the test programs' sources: `tests/programs/` at
/// the repository root.
pub fn programs_dir() -> PathBuf {
    workspace_root().join("tests").join("programs")
}

/// Where builds for `arch` (or `native`) are cached: `TARGET/foreign/ARCH`,
/// or, when the target directory is under `/tmp` (which each testbed node
/// has its own of, so nodes could not see the programs), a directory under
/// `/var/tmp` named after it.
pub fn cache_dir(arch: &str) -> PathBuf {
    let target = target_dir();
    let base = if target.starts_with("/tmp") {
        // FNV-1a of the path: one cache per checkout.
        let hash = target
            .as_os_str()
            .as_encoded_bytes()
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
            });
        PathBuf::from(format!("/var/tmp/roam-foreign-{hash:016x}"))
    } else {
        target.join("foreign")
    };
    base.join(arch)
}

fn lookup(arch: &str) -> Result<&'static CrossTarget, ForeignError> {
    TARGETS
        .iter()
        .find(|t| t.arch == arch)
        .ok_or_else(|| ForeignError::UnknownArch {
            arch: arch.to_owned(),
        })
}

fn require_tool(
    tool: &str,
    what: &'static str,
    arch: &str,
    packages: &'static str,
) -> Result<(), ForeignError> {
    if find_in_path(tool).is_some() {
        return Ok(());
    }
    Err(ForeignError::Missing {
        what,
        arch: arch.to_owned(),
        missing: format!("no `{tool}` on PATH"),
        packages,
    })
}

fn find_in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn workspace_root() -> PathBuf {
    // crates/roam-testbed -> the workspace root.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(Path::parent)
        .unwrap_or(manifest)
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

fn valid_program_name(program: &str) -> bool {
    !program.is_empty()
        && !program.starts_with('-')
        && program
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check_program_name(program: &str) -> Result<(), ForeignError> {
    if valid_program_name(program) {
        Ok(())
    } else {
        Err(ForeignError::BadProgram {
            program: program.to_owned(),
        })
    }
}

fn compile(
    compiler: &str,
    cache: &str,
    program: &str,
    link: Link,
) -> Result<PathBuf, ForeignError> {
    let source = programs_dir().join(format!("{program}.c"));
    let source_time = fs::metadata(&source)
        .and_then(|m| m.modified())
        .map_err(|source_err| ForeignError::Io {
            what: "read the test program",
            path: source.clone(),
            source: source_err,
        })?;

    let dir = cache_dir(cache);
    let name = match link {
        Link::Static => program.to_owned(),
        Link::Dynamic => format!("{program}-dyn"),
    };
    let output = dir.join(&name);
    if let Ok(built) = fs::metadata(&output).and_then(|m| m.modified()) {
        if built >= source_time {
            return Ok(output);
        }
    }

    fs::create_dir_all(&dir).map_err(|source| ForeignError::Io {
        what: "create the build directory",
        path: dir.clone(),
        source,
    })?;
    // Unique among processes (pid) and among threads of this one (counter).
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    let temp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        SERIAL.fetch_add(1, Ordering::Relaxed)
    ));

    let mut command = Command::new(compiler);
    command.args(["-std=c99", "-O2", "-Wall", "-Wextra"]);
    if link == Link::Static {
        command.arg("-static");
    }
    command.arg("-o").arg(&temp).arg(&source);
    let result = command.output().map_err(|source| ForeignError::Spawn {
        command: command_line(&command),
        source,
    })?;
    if !result.status.success() {
        // The compiler may have left a partial output.
        let _ = fs::remove_file(&temp);
        return Err(ForeignError::Compile {
            command: command_line(&command),
            status: result.status.to_string(),
            stderr: String::from_utf8_lossy(&result.stderr)
                .trim_end()
                .to_owned(),
        });
    }
    fs::rename(&temp, &output).map_err(|source| {
        let _ = fs::remove_file(&temp);
        ForeignError::Io {
            what: "move the built program to",
            path: output.clone(),
            source,
        }
    })?;
    Ok(output)
}

fn command_line(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_names() {
        assert!(valid_program_name("pi"));
        assert!(valid_program_name("echo_args-2"));
        for bad in ["", "../pi", "a/b", "-o", "pi.c", "p i"] {
            assert!(!valid_program_name(bad), "{bad:?}");
        }
        assert!(matches!(
            build_native("../x", Link::Static),
            Err(ForeignError::BadProgram { .. })
        ));
    }

    #[test]
    fn unknown_arch_is_an_error() {
        let err = available("mips").unwrap_err();
        assert!(matches!(err, ForeignError::UnknownArch { .. }));
        assert!(err.to_string().contains("aarch64, s390x, arm"), "{err}");
    }

    #[test]
    fn missing_tool_names_the_packages() {
        let err = require_tool(
            "no-such-compiler-roam",
            "the cross compiler",
            "s390x",
            TARGETS[1].gcc_packages,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the cross compiler for s390x is missing (no `no-such-compiler-roam` on PATH): \
             install it with `apt-get install -y gcc-s390x-linux-gnu libc6-dev-s390x-cross`"
        );
    }

    #[test]
    fn sources_exist() {
        for program in ["pi", "echoargs", "sigtest", "catsum"] {
            let source = programs_dir().join(format!("{program}.c"));
            assert!(source.is_file(), "{}", source.display());
        }
    }
}
