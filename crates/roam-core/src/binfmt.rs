//! Transparent exec of foreign programs, as the first paper's binary loader:
//! binfmt_misc entries that make the kernel hand every ELF executable of a
//! foreign architecture to `roam-binfmt`, which becomes the program's proxy
//! on the home node while it runs on a node that runs its architecture.
//!
//! Entries are named `roam-ARCH`, match the ELF header of ARCH executables
//! (static or dynamic, any OS ABI byte) and have flags `P` (the program
//! keeps its argv[0]) and `F` (the kernel opens `roam-binfmt` when the entry
//! is registered, so the entry works in every mount namespace and chroot).
//!
//! binfmt_misc tries its entries newest first. Entries registered after
//! roam's (qemu-user-static's `qemu-ARCH`, by systemd-binfmt at boot or by
//! `update-binfmts`) therefore win over roam's for the same files, and
//! roam's win over earlier ones; `roam binfmt install` removes roam's
//! entries and registers them again, so it puts them first. `roam binfmt
//! remove` leaves the other entries alone: qemu's own then take over again.

use std::path::{Path, PathBuf};

use roam_elf::Arch;
use thiserror::Error;

/// Where binfmt_misc is mounted.
pub const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";
/// The prefix of roam's entries.
pub const PREFIX: &str = "roam-";

#[derive(Debug, Error)]
pub enum BinfmtError {
    #[error("cannot mount binfmt_misc on {dir}")]
    Mount {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("roam knows no ELF pattern for {arch}")]
    NoPattern { arch: Arch },
    #[error("{arch} is this machine's own architecture: it needs no entry")]
    Native { arch: Arch },
    #[error("the interpreter {path} must be an absolute path to an existing file")]
    Interpreter { path: PathBuf },
    #[error("cannot register {name} with binfmt_misc (root only)")]
    Register {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot remove the binfmt_misc entry {name}")]
    Remove {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read binfmt_misc's {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One binfmt_misc entry, as its file under the binfmt_misc directory shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    pub name: String,
    pub enabled: bool,
    pub interpreter: String,
    pub flags: String,
    /// Hex, as the entry file shows it (empty for extension entries).
    pub magic: String,
    pub mask: String,
    pub offset: u32,
}

impl Entry {
    /// Parses an entry file (`enabled`, `interpreter PATH`, `flags: PF`,
    /// `offset 0`, `magic HEX`, `mask HEX`).
    pub fn parse(name: &str, text: &str) -> Entry {
        let mut e = Entry {
            name: name.to_owned(),
            ..Entry::default()
        };
        for line in text.lines() {
            let (key, value) = line.split_once([' ', ':']).unwrap_or((line, ""));
            let value = value.trim_start_matches(':').trim();
            match key {
                "enabled" => e.enabled = true,
                "interpreter" => e.interpreter = value.to_owned(),
                "flags" => e.flags = value.to_owned(),
                "offset" => e.offset = value.parse().unwrap_or(0),
                "magic" => e.magic = value.to_owned(),
                "mask" => e.mask = value.to_owned(),
                _ => {}
            }
        }
        e
    }

    /// Whether this entry claims the ELF executables of `arch` (its magic,
    /// under its mask, matches the header roam's pattern describes).
    pub fn claims(&self, arch: Arch) -> bool {
        let Some(p) = arch.binfmt_pattern() else {
            return false;
        };
        let (Some(magic), Some(mask)) = (unhex(&self.magic), unhex_mask(&self.mask, &self.magic))
        else {
            return false;
        };
        if magic.is_empty() || self.offset != 0 || magic.len() > p.magic.len() {
            return false;
        }
        // A header of `arch`: roam's magic, with each byte roam's mask
        // ignores taken as the other entry wants it.
        magic.iter().zip(&mask).enumerate().all(|(i, (m, k))| {
            let ours = p.magic[i] & p.mask[i];
            let theirs = m & k;
            // Where both look at a bit, they must agree.
            (ours ^ theirs) & p.mask[i] & k == 0
        })
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// An entry without a mask matches every bit of its magic.
fn unhex_mask(mask: &str, magic: &str) -> Option<Vec<u8>> {
    if mask.is_empty() {
        Some(vec![0xff; magic.len() / 2])
    } else {
        unhex(mask)
    }
}

/// The name of roam's entry for `arch`.
pub fn entry_name(arch: Arch) -> String {
    format!("{PREFIX}{arch}")
}

/// The line to write to binfmt_misc's `register` file for `arch`.
pub fn registration(arch: Arch, interpreter: &Path) -> Result<String, BinfmtError> {
    if arch == Arch::native() {
        return Err(BinfmtError::Native { arch });
    }
    let p = arch
        .binfmt_pattern()
        .ok_or(BinfmtError::NoPattern { arch })?;
    if !interpreter.is_absolute() || !interpreter.is_file() {
        return Err(BinfmtError::Interpreter {
            path: interpreter.to_owned(),
        });
    }
    Ok(format!(
        ":{}:M::{}:{}:{}:PF",
        entry_name(arch),
        p.magic_escaped(),
        p.mask_escaped(),
        interpreter.display()
    ))
}

/// Mounts binfmt_misc on `dir` unless it is there already.
pub fn ensure_mounted(dir: &Path) -> Result<(), BinfmtError> {
    if dir.join("register").exists() {
        return Ok(());
    }
    roam_sys::ns::mount_binfmt_misc(dir).map_err(|source| BinfmtError::Mount {
        dir: dir.to_owned(),
        source,
    })
}

/// Every entry under `dir` (none if binfmt_misc is not mounted there).
pub fn entries(dir: &Path) -> Result<Vec<Entry>, BinfmtError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(BinfmtError::Read {
                path: dir.to_owned(),
                source,
            })
        }
    };
    let mut out = Vec::new();
    for ent in rd.flatten() {
        let name = ent.file_name().to_string_lossy().into_owned();
        if name == "register" || name == "status" {
            continue;
        }
        let path = ent.path();
        let text = std::fs::read_to_string(&path).map_err(|source| BinfmtError::Read {
            path: path.clone(),
            source,
        })?;
        out.push(Entry::parse(&name, &text));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Removes roam's entries under `dir`; returns their names.
pub fn remove(dir: &Path) -> Result<Vec<String>, BinfmtError> {
    let mut removed = Vec::new();
    for e in entries(dir)? {
        if !e.name.starts_with(PREFIX) {
            continue;
        }
        std::fs::write(dir.join(&e.name), "-1").map_err(|source| BinfmtError::Remove {
            name: e.name.clone(),
            source,
        })?;
        removed.push(e.name);
    }
    Ok(removed)
}

/// Registers an entry for each of `archs` with `interpreter` (absolute),
/// first removing roam's existing entries so that the new ones are tried
/// before every other entry. Returns the names registered.
pub fn install(dir: &Path, archs: &[Arch], interpreter: &Path) -> Result<Vec<String>, BinfmtError> {
    // Check everything before touching anything.
    let lines: Vec<(String, String)> = archs
        .iter()
        .map(|&a| Ok((entry_name(a), registration(a, interpreter)?)))
        .collect::<Result<_, BinfmtError>>()?;
    ensure_mounted(dir)?;
    remove(dir)?;
    let mut done = Vec::new();
    for (name, line) in lines {
        if let Err(source) = std::fs::write(dir.join("register"), &line) {
            // All or nothing.
            let _ = remove(dir);
            return Err(BinfmtError::Register { name, source });
        }
        done.push(name);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU_AARCH64: &str = "enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: F\noffset 0\nmagic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n";

    #[test]
    fn parses_entry_files() {
        let e = Entry::parse("qemu-aarch64", QEMU_AARCH64);
        assert!(e.enabled);
        assert_eq!(e.interpreter, "/usr/bin/qemu-aarch64-static");
        assert_eq!(e.flags, "F");
        assert_eq!(e.offset, 0);
        assert_eq!(e.magic.len(), 40);
        let d = Entry::parse("x", "disabled\ninterpreter /x\nflags: \nextension .exe\n");
        assert!(!d.enabled);
        assert_eq!(d.flags, "");
    }

    #[test]
    fn tells_which_entries_claim_an_architecture() {
        let q = Entry::parse("qemu-aarch64", QEMU_AARCH64);
        assert!(q.claims(Arch::Aarch64));
        assert!(!q.claims(Arch::S390x));
        assert!(!q.claims(Arch::X86_64));
        let ext = Entry::parse(
            "wine",
            "enabled\ninterpreter /usr/bin/wine\nflags: \nextension .exe\n",
        );
        assert!(!ext.claims(Arch::Aarch64));
    }

    #[test]
    fn registration_lines() {
        let exe = std::env::current_exe().unwrap();
        let foreign = if Arch::native() == Arch::Aarch64 {
            Arch::S390x
        } else {
            Arch::Aarch64
        };
        let line = registration(foreign, &exe).unwrap();
        assert!(line.starts_with(&format!(":roam-{foreign}:M::\\x7f\\x45\\x4c\\x46")));
        assert!(line.ends_with(&format!(":{}:PF", exe.display())));
        assert!(matches!(
            registration(Arch::native(), &exe),
            Err(BinfmtError::Native { .. })
        ));
        assert!(matches!(
            registration(foreign, Path::new("relative/roam-binfmt")),
            Err(BinfmtError::Interpreter { .. })
        ));
        // Our own pattern claims what it registers.
        let p = foreign.binfmt_pattern().unwrap();
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let ours = Entry {
            name: entry_name(foreign),
            enabled: true,
            magic: hex(&p.magic),
            mask: hex(&p.mask),
            ..Entry::default()
        };
        assert!(ours.claims(foreign));
    }
}
