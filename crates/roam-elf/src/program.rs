//! Inspecting a program file: an ELF file, or a `#!` script whose
//! interpreter is followed as the kernel follows it.

use crate::elf::{self, ElfError, ElfInfo, Failure, Source};
use crate::Arch;
use std::borrow::Cow;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// How many `#!` scripts may lead to the ELF file. Linux 6.18 runs five
/// nested scripts and refuses a sixth with ELOOP (checked on this machine).
/// A foreign ELF file at the end, reached through binfmt_misc, uses one
/// more level, which leaves four scripts for it.
pub const MAX_SCRIPT_DEPTH: usize = 5;
/// How much of a file is read first: enough for the `#!` line and, almost
/// always, the ELF program headers.
const HEAD_LEN: usize = 4096;
/// The kernel reads this much of a script for its `#!` line.
const SHEBANG_LEN: usize = 256;
/// No single read is larger than this (a safety net: the parser's own
/// limits are lower).
const MAX_READ: u64 = 256 * 1024;

/// A program as the kernel would run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    Elf(ElfInfo),
    /// A `#!` script: the kernel runs `interpreter [arg] script args...`.
    Script {
        interpreter: PathBuf,
        arg: Option<OsString>,
        /// What `interpreter` is.
        resolved: Box<Program>,
    },
}

impl Program {
    /// The ELF file at the end of the `#!` chain.
    pub fn elf(&self) -> &ElfInfo {
        let mut p = self;
        loop {
            match p {
                Program::Elf(info) => return info,
                Program::Script { resolved, .. } => p = resolved,
            }
        }
    }

    /// The architecture the program needs.
    pub fn arch(&self) -> Arch {
        self.elf().arch
    }
}

/// Why a program file could not be inspected.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a regular file")]
    NotRegularFile { path: PathBuf },
    #[error("{path} is neither an ELF file nor a #! script")]
    NotExecutableFormat { path: PathBuf },
    #[error("{path} is truncated: its {what} ends at byte {end}, but the file has {size} bytes")]
    Truncated {
        path: PathBuf,
        what: &'static str,
        end: u64,
        size: u64,
    },
    #[error("{path} is malformed: {what}")]
    Malformed { path: PathBuf, what: String },
    #[error("{script}: interpreter {interpreter} not found")]
    InterpreterMissing {
        script: PathBuf,
        interpreter: PathBuf,
    },
    #[error("{script}: more than {limit} levels of #! interpreters")]
    TooManyLevels { script: PathBuf, limit: usize },
}

/// Inspects the program file at `path`, following `#!` lines to their
/// interpreters as the kernel does (a relative interpreter path is taken
/// from the current directory, as the kernel takes it from the caller's).
///
/// Reads are bounded: the first 4 KiB, then at most 64 KiB of program
/// headers, 4 KiB of `PT_INTERP` and 64 KiB of `PT_DYNAMIC`, wherever the
/// file puts them.
pub fn inspect_file(path: &Path) -> Result<Program, InspectError> {
    inspect_level(path, path, 0)
}

fn inspect_level(top: &Path, path: &Path, depth: usize) -> Result<Program, InspectError> {
    let mut file = FileSource::open(path)?;
    if file.head.starts_with(b"#!") {
        let (interpreter, arg) =
            parse_shebang(&file.head).map_err(|what| InspectError::Malformed {
                path: path.to_owned(),
                what: what.to_owned(),
            })?;
        if depth >= MAX_SCRIPT_DEPTH {
            return Err(InspectError::TooManyLevels {
                script: top.to_owned(),
                limit: MAX_SCRIPT_DEPTH,
            });
        }
        drop(file);
        let resolved = match inspect_level(top, &interpreter, depth + 1) {
            Err(InspectError::Io { path: p, source })
                if p == interpreter && is_missing(&source) =>
            {
                return Err(InspectError::InterpreterMissing {
                    script: path.to_owned(),
                    interpreter,
                })
            }
            r => r?,
        };
        return Ok(Program::Script {
            interpreter,
            arg,
            resolved: Box::new(resolved),
        });
    }
    match elf::parse(&mut file) {
        Ok(info) => Ok(Program::Elf(info)),
        Err(Failure::Io(source)) => Err(InspectError::Io {
            path: path.to_owned(),
            source,
        }),
        Err(Failure::Elf(ElfError::NotElf)) => Err(InspectError::NotExecutableFormat {
            path: path.to_owned(),
        }),
        Err(Failure::Elf(ElfError::Truncated {
            what,
            end,
            available,
        })) => Err(InspectError::Truncated {
            path: path.to_owned(),
            what,
            end,
            size: available,
        }),
        Err(Failure::Elf(ElfError::Malformed { what })) => Err(InspectError::Malformed {
            path: path.to_owned(),
            what,
        }),
    }
}

fn is_missing(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR))
}

/// Splits a `#!` line as Linux's binfmt_script does: the first 256 bytes,
/// up to the first newline (or NUL); the interpreter path is the first word
/// after `#!` and optional spaces or tabs; the rest of the line, trimmed,
/// is one argument. Carriage returns are not trimmed (nor by the kernel).
fn parse_shebang(head: &[u8]) -> Result<(PathBuf, Option<OsString>), &'static str> {
    let spacetab = |c: &u8| *c == b' ' || *c == b'\t';
    // The kernel's buffer: zero-filled past the end of the file.
    let mut buf = [0u8; SHEBANG_LEN];
    let n = head.len().min(SHEBANG_LEN);
    buf[..n].copy_from_slice(&head[..n]);
    let line = match buf.iter().position(|&c| c == b'\n') {
        Some(nl) => &buf[2..nl.max(2)],
        None => {
            // No newline: the interpreter path must end (space, tab or NUL)
            // within the buffer, or it may have been cut.
            let Some(start) = buf[2..].iter().position(|c| !spacetab(c)) else {
                return Err("the #! line names no interpreter");
            };
            if !buf[2 + start..].iter().any(|c| spacetab(c) || *c == 0) {
                return Err("the #! line is longer than 256 bytes");
            }
            // The last byte is kept as a terminator.
            &buf[2..SHEBANG_LEN - 1]
        }
    };
    // Trailing spaces and tabs go, then strings end at a NUL, as in the
    // kernel.
    let end = line.iter().rposition(|c| !spacetab(c)).map_or(0, |e| e + 1);
    let line = line[..end].split(|&c| c == 0).next().unwrap_or_default();
    let start = line.iter().position(|c| !spacetab(c)).unwrap_or(line.len());
    let line = &line[start..];
    if line.is_empty() {
        return Err("the #! line names no interpreter");
    }
    let name_end = line.iter().position(spacetab).unwrap_or(line.len());
    let rest = &line[name_end..];
    let arg = rest
        .iter()
        .position(|c| !spacetab(c))
        .map(|a| OsStr::from_bytes(&rest[a..]).to_owned());
    Ok((PathBuf::from(OsStr::from_bytes(&line[..name_end])), arg))
}

/// A file read with bounded reads: its first [`HEAD_LEN`] bytes are kept,
/// anything past them is read where the parser asks.
struct FileSource {
    file: File,
    size: u64,
    head: Vec<u8>,
}

impl FileSource {
    fn open(path: &Path) -> Result<FileSource, InspectError> {
        let io_err = |source| InspectError::Io {
            path: path.to_owned(),
            source,
        };
        // O_NONBLOCK: opening a FIFO must not wait for a writer.
        let file = File::options()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            return Err(InspectError::NotRegularFile {
                path: path.to_owned(),
            });
        }
        let size = meta.len();
        let want = HEAD_LEN.min(usize::try_from(size).unwrap_or(HEAD_LEN));
        let mut head = vec![0u8; want];
        let n = read_full_at(&file, &mut head, 0).map_err(io_err)?;
        head.truncate(n);
        // If the file shrank since fstat, trust what was read.
        let size = if n < want { n as u64 } else { size };
        Ok(FileSource { file, size, head })
    }
}

impl Source for FileSource {
    fn read(
        &mut self,
        offset: u64,
        len: u64,
        what: &'static str,
    ) -> Result<Cow<'_, [u8]>, Failure> {
        let end = elf::end_of(offset, len, what)?;
        let truncated = |available| {
            Failure::Elf(ElfError::Truncated {
                what,
                end,
                available,
            })
        };
        if end > self.size {
            return Err(truncated(self.size));
        }
        if end <= self.head.len() as u64 {
            return Ok(Cow::Borrowed(&self.head[offset as usize..end as usize]));
        }
        if len > MAX_READ {
            return Err(Failure::Elf(ElfError::Malformed {
                what: format!("the {what} ({len} bytes) is too large to read"),
            }));
        }
        let mut buf = vec![0u8; len as usize];
        let n = read_full_at(&self.file, &mut buf, offset).map_err(Failure::Io)?;
        if n < buf.len() {
            // The file shrank while we read it.
            return Err(truncated(offset + n as u64));
        }
        Ok(Cow::Owned(buf))
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let at = offset + done as u64;
        match file.read_at(&mut buf[done..], at) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::tests::{fuzz_seeds, smash, Builder, Rng};
    use crate::{Class, Endian, Kind};
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A directory removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            static COUNT: AtomicU32 = AtomicU32::new(0);
            let n = COUNT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("roam-elf-test-{}-{n}-{name}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
            let path = self.0.join(name);
            let mut f = File::create(&path).unwrap();
            f.write_all(contents).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn shebang(line: &str) -> Result<(PathBuf, Option<OsString>), &'static str> {
        parse_shebang(line.as_bytes())
    }

    fn some(s: &str) -> Option<OsString> {
        Some(OsString::from(s))
    }

    #[test]
    fn shebang_lines() {
        let p = PathBuf::from;
        assert_eq!(shebang("#!/bin/sh\necho"), Ok((p("/bin/sh"), None)));
        assert_eq!(shebang("#!/bin/sh"), Ok((p("/bin/sh"), None)));
        assert_eq!(shebang("#! \t/bin/sh  \t\n"), Ok((p("/bin/sh"), None)));
        assert_eq!(shebang("#!/bin/sh -e\n"), Ok((p("/bin/sh"), some("-e"))));
        assert_eq!(
            shebang("#!/usr/bin/env  -S python3 -u  \nx"),
            Ok((p("/usr/bin/env"), some("-S python3 -u")))
        );
        // The kernel keeps a carriage return.
        assert_eq!(shebang("#!/bin/sh\r\n"), Ok((p("/bin/sh\r"), None)));
        assert_eq!(shebang("#!python\n"), Ok((p("python"), None)));
        // A NUL ends the line.
        assert_eq!(shebang("#!/bin/sh\0 -x\n"), Ok((p("/bin/sh"), None)));
        assert_eq!(shebang("#!/bin/sh -x\0y\n"), Ok((p("/bin/sh"), some("-x"))));
        assert!(shebang("#!\n").is_err());
        assert!(shebang("#!").is_err());
        assert!(shebang("#!   \t \n/bin/sh").is_err());

        // No newline in the first 256 bytes: fine if the interpreter path
        // ends there (the argument is cut), an error if it may be cut.
        let long_arg = format!("#!/bin/sh {}", "a".repeat(400));
        let (name, arg) = shebang(&long_arg).unwrap();
        assert_eq!(name, p("/bin/sh"));
        assert_eq!(arg.unwrap().len(), 255 - 2 - 8);
        let long_name = format!("#!/{}", "a".repeat(400));
        assert_eq!(
            shebang(&long_name),
            Err("the #! line is longer than 256 bytes")
        );
        let spaces = format!("#!{}", " ".repeat(400));
        assert!(shebang(&spaces).is_err());
    }

    #[test]
    fn shebang_fuzz_never_panics() {
        let mut rng = Rng(42);
        let alphabet = b"#! \t\n\r\0/ab-";
        for _ in 0..5000 {
            let len = rng.below(300);
            let mut b: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            if b.len() >= 2 {
                b[..2].copy_from_slice(b"#!");
            }
            if let Ok((name, _)) = parse_shebang(&b) {
                assert!(!name.as_os_str().is_empty());
            }
        }
    }

    #[test]
    fn real_dynamic_binary() {
        let program = inspect_file(Path::new("/bin/true")).unwrap();
        let Program::Elf(info) = &program else {
            panic!("{program:?}")
        };
        assert_eq!(info.arch, Arch::native());
        assert!(!info.is_static);
        assert!(info.interpreter.is_some());
        assert_eq!(program.arch(), Arch::native());
    }

    #[test]
    fn real_static_binary() {
        let candidates = [
            "/usr/bin/qemu-aarch64-static",
            "/sbin/ldconfig",
            "/usr/sbin/ldconfig",
            "/bin/busybox",
        ];
        let mut found = false;
        for c in candidates {
            let path = Path::new(c);
            if !path.exists() {
                continue;
            }
            let Program::Elf(info) = inspect_file(path).unwrap() else {
                continue;
            };
            if !info.is_static {
                continue;
            }
            found = true;
            assert_eq!(info.interpreter, None, "{c}");
            assert_eq!(info.arch, Arch::native(), "{c}");
            assert_ne!(info.kind, Kind::SharedObject, "{c} (static-pie)");
        }
        if !found {
            eprintln!("skipped: no static binary found among {candidates:?}");
        }
    }

    #[test]
    fn scripts() {
        let dir = TempDir::new("scripts");
        let s = dir.file("s", b"#!/bin/sh\necho hi\n");
        let program = inspect_file(&s).unwrap();
        let Program::Script {
            interpreter,
            arg,
            resolved,
        } = &program
        else {
            panic!("{program:?}")
        };
        assert_eq!(interpreter, Path::new("/bin/sh"));
        assert_eq!(arg, &None);
        assert!(matches!(**resolved, Program::Elf(_)));
        assert_eq!(program.arch(), Arch::native());

        let with_arg = dir.file("t", b"#! /bin/sh -eu\n");
        let Program::Script { arg, .. } = inspect_file(&with_arg).unwrap() else {
            panic!()
        };
        assert_eq!(arg, some("-eu"));

        // A script run by a script.
        let outer = format!("#!{} x\n", s.display());
        let outer = dir.file("u", outer.as_bytes());
        let program = inspect_file(&outer).unwrap();
        let Program::Script {
            interpreter,
            resolved,
            ..
        } = &program
        else {
            panic!()
        };
        assert_eq!(interpreter, &s);
        assert!(matches!(**resolved, Program::Script { .. }));
        assert_eq!(program.elf().arch, Arch::native());
    }

    #[test]
    fn missing_interpreter() {
        let dir = TempDir::new("missing");
        let s = dir.file("s", b"#!/nonexistent/roam-test-interp -x\n");
        let err = inspect_file(&s).unwrap_err();
        assert!(
            matches!(&err, InspectError::InterpreterMissing { script, interpreter }
                if script == &s && interpreter == Path::new("/nonexistent/roam-test-interp")),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&s.display().to_string()), "{msg}");
        assert!(msg.contains("/nonexistent/roam-test-interp"), "{msg}");

        // One level down: the inner script is named.
        let outer = dir.file("o", format!("#!{}\n", s.display()).as_bytes());
        let err = inspect_file(&outer).unwrap_err();
        assert!(
            matches!(&err, InspectError::InterpreterMissing { script, .. } if script == &s),
            "{err:?}"
        );

        // The file itself missing is an I/O error naming it.
        let gone = dir.0.join("gone");
        let err = inspect_file(&gone).unwrap_err();
        assert!(matches!(err, InspectError::Io { .. }));
        assert!(err.to_string().contains(&gone.display().to_string()));
    }

    /// Writes s1..=s`n`, each run by the one before; s1 by /bin/sh.
    fn chain(dir: &TempDir, n: usize) -> PathBuf {
        let mut prev = PathBuf::from("/bin/sh");
        for i in 1..=n {
            prev = dir.file(
                &format!("s{i}"),
                format!("#!{}\n", prev.display()).as_bytes(),
            );
        }
        prev
    }

    #[test]
    fn script_chains() {
        let dir = TempDir::new("chain");
        // The kernel runs five nested scripts...
        let five = chain(&dir, MAX_SCRIPT_DEPTH);
        let mut p = &inspect_file(&five).unwrap();
        let mut levels = 0;
        while let Program::Script { resolved, .. } = p {
            levels += 1;
            p = resolved;
        }
        assert_eq!(levels, 5);
        // ...and refuses six.
        let six = chain(&dir, MAX_SCRIPT_DEPTH + 1);
        let err = inspect_file(&six).unwrap_err();
        assert!(
            matches!(&err, InspectError::TooManyLevels { script, limit: 5 } if script == &six),
            "{err:?}"
        );
        assert!(err.to_string().contains(&six.display().to_string()));

        // A script that runs itself.
        let looped = dir.0.join("loop");
        dir.file("loop", format!("#!{}\n", looped.display()).as_bytes());
        assert!(matches!(
            inspect_file(&looped),
            Err(InspectError::TooManyLevels { .. })
        ));
    }

    /// The kernel agrees with [`MAX_SCRIPT_DEPTH`].
    #[test]
    fn kernel_script_depth() {
        let dir = TempDir::new("kernel");
        let ok = chain(&dir, MAX_SCRIPT_DEPTH);
        match std::process::Command::new(&ok).output() {
            Ok(out) => assert!(out.status.success(), "{out:?}"),
            Err(e) => panic!("running {}: {e}", ok.display()),
        }
        let too_deep = chain(&dir, MAX_SCRIPT_DEPTH + 1);
        let err = std::process::Command::new(&too_deep).output().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP), "{err}");
    }

    #[test]
    fn not_a_program() {
        let dir = TempDir::new("notprog");
        for contents in [&b""[..], b"hello", b"#", b"\x7fEL", b"MZ\x90\x00"] {
            let f = dir.file("f", contents);
            let err = inspect_file(&f).unwrap_err();
            assert!(
                matches!(&err, InspectError::NotExecutableFormat { path } if path == &f),
                "{contents:?}: {err:?}"
            );
            assert!(err.to_string().contains(&f.display().to_string()));
        }
        let err = inspect_file(&dir.0).unwrap_err();
        assert!(
            matches!(err, InspectError::NotRegularFile { .. }),
            "{err:?}"
        );

        let s = dir.file("s", b"#!\n");
        let err = inspect_file(&s).unwrap_err();
        assert!(matches!(err, InspectError::Malformed { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "{} is malformed: the #! line names no interpreter",
                s.display()
            )
        );
    }

    #[test]
    fn fifo_does_not_block() {
        let dir = TempDir::new("fifo");
        let fifo = dir.0.join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("skipped: mkfifo failed");
            return;
        }
        let err = inspect_file(&fifo).unwrap_err();
        assert!(
            matches!(err, InspectError::NotRegularFile { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn truncated_and_malformed_files() {
        let dir = TempDir::new("trunc");
        let true_bytes = std::fs::read("/bin/true").unwrap();
        let f = dir.file("t", &true_bytes[..100]);
        let err = inspect_file(&f).unwrap_err();
        assert!(
            matches!(&err, InspectError::Truncated { path, size: 100, .. } if path == &f),
            "{err:?}"
        );
        assert!(err.to_string().contains(&f.display().to_string()));

        let mut bad = true_bytes[..4096].to_vec();
        bad[4] = 9;
        let f = dir.file("m", &bad);
        let err = inspect_file(&f).unwrap_err();
        assert!(matches!(&err, InspectError::Malformed { path, .. } if path == &f));
        assert!(err.to_string().contains("EI_CLASS 9"), "{err}");
    }

    /// Program headers, interpreter and dynamic section far past the first
    /// 4 KiB, in a large sparse file: read with small reads where they are.
    #[test]
    fn reads_far_into_large_file() {
        let dir = TempDir::new("far");
        let mut b = Builder::new(Class::Elf64, Endian::Little, crate::arch::machine::EM_RISCV);
        b.e_type = 3;
        b.flags_1 = Some(0x0800_0000);
        let elf = b.build();
        // Move everything after the header to 3 GiB.
        let far: u64 = 3 << 30;
        let mut head = elf[..64].to_vec();
        head[32..40].copy_from_slice(&far.to_le_bytes());
        let mut tail = elf[64..].to_vec();
        // Shift the segment offsets in the two program headers by far - 64.
        for i in 0..2 {
            let at = i * 56 + 8;
            let off = u64::from_le_bytes(tail[at..at + 8].try_into().unwrap());
            if off != 0 {
                tail[at..at + 8].copy_from_slice(&(off - 64 + far).to_le_bytes());
            }
        }
        let path = dir.0.join("big");
        let file = File::create(&path).unwrap();
        file.write_all_at(&head, 0).unwrap();
        file.write_all_at(&tail, far).unwrap();
        drop(file);
        let Program::Elf(info) = inspect_file(&path).unwrap() else {
            panic!()
        };
        assert_eq!(info.arch, Arch::Riscv64);
        assert_eq!(info.kind, Kind::PositionIndependent);
        assert!(info.is_static);
        // inspect_bytes on the head says where the headers are.
        assert!(matches!(
            crate::inspect_bytes(&head),
            Err(ElfError::Truncated { end, .. }) if end == far + 112
        ));
    }

    #[test]
    fn fuzz_files_never_panic() {
        let dir = TempDir::new("fuzz");
        let mut rng = Rng(7);
        let seeds = fuzz_seeds();
        for i in 0..400 {
            let mut b = seeds[i % seeds.len()].clone();
            for _ in 0..=rng.below(6) {
                let at = rng.below(b.len());
                b[at] ^= 1 << rng.below(8);
            }
            smash(&mut rng, &mut b);
            if rng.below(3) == 0 {
                b.truncate(rng.below(b.len() + 1));
            }
            let f = dir.file("f", &b);
            let _ = inspect_file(&f);
        }
    }
}
