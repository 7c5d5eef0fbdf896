//! Architectures, named as qemu-user names them, and the binfmt_misc
//! patterns that match their executables.

use std::fmt;
use std::str::FromStr;

/// ELF machine numbers (`e_machine`) that roam knows by name.
pub mod machine {
    pub const EM_SPARC: u16 = 2;
    pub const EM_386: u16 = 3;
    pub const EM_68K: u16 = 4;
    pub const EM_486: u16 = 6;
    pub const EM_MIPS: u16 = 8;
    pub const EM_PARISC: u16 = 15;
    pub const EM_PPC: u16 = 20;
    pub const EM_PPC64: u16 = 21;
    pub const EM_S390: u16 = 22;
    pub const EM_ARM: u16 = 40;
    pub const EM_SH: u16 = 42;
    pub const EM_SPARCV9: u16 = 43;
    pub const EM_X86_64: u16 = 62;
    pub const EM_AARCH64: u16 = 183;
    pub const EM_RISCV: u16 = 243;
    pub const EM_LOONGARCH: u16 = 258;
    pub const EM_ALPHA: u16 = 0x9026;
}

use machine::*;

/// `e_flags` bit of a 32-bit MIPS file built for the n32 ABI.
pub const EF_MIPS_ABI2: u32 = 0x20;

/// Word size of an ELF file (`EI_CLASS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Elf32,
    Elf64,
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Class::Elf32 => "32-bit",
            Class::Elf64 => "64-bit",
        })
    }
}

/// Byte order of an ELF file (`EI_DATA`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endian {
    Little,
    Big,
}

impl fmt::Display for Endian {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Endian::Little => "little-endian",
            Endian::Big => "big-endian",
        })
    }
}

/// The architecture a program is built for.
///
/// Its name ([`Display`](fmt::Display)) is the one qemu-user uses, which is
/// also `uname -m`'s for most; [`FromStr`] also takes Debian's names and
/// other common aliases (amd64, arm64, i686, armhf, ppc64el...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    X86_64,
    I386,
    Aarch64,
    Aarch64Be,
    /// 32-bit ARM, little-endian (Debian's armhf and armel).
    Arm,
    Armeb,
    Riscv64,
    Riscv32,
    S390x,
    /// 31-bit s390: qemu has no user-mode emulator for it.
    S390,
    Ppc64le,
    Ppc64,
    Ppc,
    /// 32-bit MIPS, o32 ABI, big-endian.
    Mips,
    Mipsel,
    /// 32-bit MIPS file for the n32 ABI (64-bit CPU), big-endian.
    Mipsn32,
    Mipsn32el,
    Mips64,
    Mips64el,
    Sparc64,
    Loongarch64,
    Alpha,
    M68k,
    /// 32-bit PA-RISC.
    Hppa,
    Sh4,
    Sh4eb,
    /// A machine, class and byte order roam has no name for.
    Other {
        machine: u16,
        class: Class,
        endian: Endian,
    },
}

/// What the ELF header says for each named architecture.
struct Spec {
    arch: Arch,
    name: &'static str,
    machine: u16,
    class: Class,
    endian: Endian,
}

const fn spec(arch: Arch, name: &'static str, machine: u16, class: Class, endian: Endian) -> Spec {
    Spec {
        arch,
        name,
        machine,
        class,
        endian,
    }
}

use Class::{Elf32, Elf64};
use Endian::{Big, Little};

/// Every named architecture. For the same machine, class and byte order the
/// first row wins (the MIPS n32 rows are chosen by `e_flags` instead).
const SPECS: &[Spec] = &[
    spec(Arch::X86_64, "x86_64", EM_X86_64, Elf64, Little),
    spec(Arch::I386, "i386", EM_386, Elf32, Little),
    spec(Arch::Aarch64, "aarch64", EM_AARCH64, Elf64, Little),
    spec(Arch::Aarch64Be, "aarch64_be", EM_AARCH64, Elf64, Big),
    spec(Arch::Arm, "arm", EM_ARM, Elf32, Little),
    spec(Arch::Armeb, "armeb", EM_ARM, Elf32, Big),
    spec(Arch::Riscv64, "riscv64", EM_RISCV, Elf64, Little),
    spec(Arch::Riscv32, "riscv32", EM_RISCV, Elf32, Little),
    spec(Arch::S390x, "s390x", EM_S390, Elf64, Big),
    spec(Arch::S390, "s390", EM_S390, Elf32, Big),
    spec(Arch::Ppc64le, "ppc64le", EM_PPC64, Elf64, Little),
    spec(Arch::Ppc64, "ppc64", EM_PPC64, Elf64, Big),
    spec(Arch::Ppc, "ppc", EM_PPC, Elf32, Big),
    spec(Arch::Mips, "mips", EM_MIPS, Elf32, Big),
    spec(Arch::Mipsel, "mipsel", EM_MIPS, Elf32, Little),
    spec(Arch::Mipsn32, "mipsn32", EM_MIPS, Elf32, Big),
    spec(Arch::Mipsn32el, "mipsn32el", EM_MIPS, Elf32, Little),
    spec(Arch::Mips64, "mips64", EM_MIPS, Elf64, Big),
    spec(Arch::Mips64el, "mips64el", EM_MIPS, Elf64, Little),
    spec(Arch::Sparc64, "sparc64", EM_SPARCV9, Elf64, Big),
    spec(
        Arch::Loongarch64,
        "loongarch64",
        EM_LOONGARCH,
        Elf64,
        Little,
    ),
    spec(Arch::Alpha, "alpha", EM_ALPHA, Elf64, Little),
    spec(Arch::M68k, "m68k", EM_68K, Elf32, Big),
    spec(Arch::Hppa, "hppa", EM_PARISC, Elf32, Big),
    spec(Arch::Sh4, "sh4", EM_SH, Elf32, Little),
    spec(Arch::Sh4eb, "sh4eb", EM_SH, Elf32, Big),
];

/// Other names [`Arch::from_str`] accepts: Debian's, `uname -m`'s, and
/// qemu's i486.
const ALIASES: &[(&str, Arch)] = &[
    ("amd64", Arch::X86_64),
    ("x86-64", Arch::X86_64),
    ("arm64", Arch::Aarch64),
    ("x86", Arch::I386),
    ("i486", Arch::I386),
    ("i586", Arch::I386),
    ("i686", Arch::I386),
    ("armhf", Arch::Arm),
    ("armel", Arch::Arm),
    ("armv5tel", Arch::Arm),
    ("armv6l", Arch::Arm),
    ("armv7l", Arch::Arm),
    ("armv8l", Arch::Arm),
    ("ppc64el", Arch::Ppc64le),
    ("powerpc64le", Arch::Ppc64le),
    ("powerpc64", Arch::Ppc64),
    ("powerpc", Arch::Ppc),
    ("loong64", Arch::Loongarch64),
    ("parisc", Arch::Hppa),
];

impl Arch {
    /// The architecture of an ELF file from its header fields. `flags` is
    /// `e_flags`; it matters only for MIPS (o32 or n32).
    pub fn from_elf(machine: u16, class: Class, endian: Endian, flags: u32) -> Arch {
        let machine_named = if machine == EM_486 { EM_386 } else { machine };
        let found = SPECS
            .iter()
            .find(|s| s.machine == machine_named && s.class == class && s.endian == endian)
            .map(|s| s.arch);
        match found {
            Some(Arch::Mips) if flags & EF_MIPS_ABI2 != 0 => Arch::Mipsn32,
            Some(Arch::Mipsel) if flags & EF_MIPS_ABI2 != 0 => Arch::Mipsn32el,
            Some(arch) => arch,
            None => Arch::Other {
                machine,
                class,
                endian,
            },
        }
    }

    /// The architecture this program was compiled for.
    pub fn native() -> Arch {
        let class = if cfg!(target_pointer_width = "64") {
            Elf64
        } else {
            Elf32
        };
        let endian = if cfg!(target_endian = "big") {
            Big
        } else {
            Little
        };
        let machine = if cfg!(target_arch = "x86_64") {
            EM_X86_64
        } else if cfg!(target_arch = "x86") {
            EM_386
        } else if cfg!(target_arch = "aarch64") {
            EM_AARCH64
        } else if cfg!(target_arch = "arm") {
            EM_ARM
        } else if cfg!(any(target_arch = "riscv64", target_arch = "riscv32")) {
            EM_RISCV
        } else if cfg!(target_arch = "s390x") {
            EM_S390
        } else if cfg!(target_arch = "powerpc64") {
            EM_PPC64
        } else if cfg!(target_arch = "powerpc") {
            EM_PPC
        } else if cfg!(any(
            target_arch = "mips",
            target_arch = "mips64",
            target_arch = "mips32r6",
            target_arch = "mips64r6"
        )) {
            EM_MIPS
        } else if cfg!(target_arch = "sparc64") {
            EM_SPARCV9
        } else if cfg!(target_arch = "loongarch64") {
            EM_LOONGARCH
        } else if cfg!(target_arch = "m68k") {
            EM_68K
        } else {
            0
        };
        // A 64-bit MIPS target with 32-bit pointers is n32.
        let flags = if cfg!(any(target_arch = "mips64", target_arch = "mips64r6")) && class == Elf32
        {
            EF_MIPS_ABI2
        } else {
            0
        };
        Arch::from_elf(machine, class, endian, flags)
    }

    fn spec(&self) -> Option<&'static Spec> {
        SPECS.iter().find(|s| s.arch == *self)
    }

    /// The canonical name, or `None` for [`Arch::Other`].
    pub fn name(&self) -> Option<&'static str> {
        self.spec().map(|s| s.name)
    }

    /// `e_machine` of this architecture's ELF files.
    pub fn machine(&self) -> u16 {
        match self {
            Arch::Other { machine, .. } => *machine,
            _ => self.spec().map_or(0, |s| s.machine),
        }
    }

    /// Word size of this architecture's ELF files.
    pub fn class(&self) -> Class {
        match self {
            Arch::Other { class, .. } => *class,
            _ => self.spec().map_or(Elf64, |s| s.class),
        }
    }

    /// Byte order of this architecture's ELF files.
    pub fn endian(&self) -> Endian {
        match self {
            Arch::Other { endian, .. } => *endian,
            _ => self.spec().map_or(Little, |s| s.endian),
        }
    }

    /// qemu-user's name for this architecture, as in `qemu-<name>`; `None`
    /// when qemu has no user-mode emulator for it.
    pub fn qemu_name(&self) -> Option<&'static str> {
        match self {
            Arch::S390 => None,
            _ => self.name(),
        }
    }

    /// The statically linked qemu-user binary's file name, as Debian's
    /// qemu-user-static installs it: `qemu-aarch64-static`.
    pub fn qemu_static_binary(&self) -> Option<String> {
        self.qemu_name().map(|n| format!("qemu-{n}-static"))
    }

    /// The binfmt_misc pattern that matches this architecture's executables
    /// (ET_EXEC and ET_DYN, any OS ABI), built the way qemu's
    /// `scripts/qemu-binfmt-conf.sh` builds its own; `None` for
    /// [`Arch::Other`].
    pub fn binfmt_pattern(&self) -> Option<BinfmtPattern> {
        let spec = self.spec()?;
        let little = spec.endian == Little;
        let mut magic = vec![0u8; 20];
        let mut mask = vec![0xffu8; 20];
        magic[..4].copy_from_slice(b"\x7fELF");
        magic[4] = match spec.class {
            Elf32 => 1,
            Elf64 => 2,
        };
        magic[5] = if little { 1 } else { 2 };
        magic[6] = 1; // EI_VERSION: EV_CURRENT
        mask[7] = 0x00; // EI_OSABI: any
        let put16 = |b: &mut [u8], at: usize, v: u16| {
            let bytes = if little {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            };
            b[at..at + 2].copy_from_slice(&bytes);
        };
        put16(&mut magic, 16, 2); // e_type: ET_EXEC...
        let type_low = if little { 16 } else { 17 };
        mask[type_low] = 0xfe; // ...or ET_DYN
        put16(&mut magic, 18, spec.machine);
        let is_mips = spec.machine == EM_MIPS;
        if is_mips {
            // EI_ABIVERSION 0 or 1, as qemu allows.
            mask[8] = 0xfe;
        }
        if spec.machine == EM_LOONGARCH {
            // EI_ABIVERSION: any, as qemu allows.
            mask[8] = 0x00;
        }
        if is_mips && spec.class == Elf32 {
            // e_flags (offset 36) tells o32 from n32: compare its ABI2 bit.
            let at = if little { 36 } else { 39 };
            magic.resize(at + 1, 0);
            mask.resize(at + 1, 0);
            mask[at] = EF_MIPS_ABI2 as u8;
            if matches!(self, Arch::Mipsn32 | Arch::Mipsn32el) {
                magic[at] = EF_MIPS_ABI2 as u8;
            }
        }
        Some(BinfmtPattern { magic, mask })
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arch::Other {
                machine,
                class,
                endian,
            } => write!(f, "unknown (e_machine {machine}, {class}, {endian})"),
            _ => f.write_str(self.name().unwrap_or("unknown")),
        }
    }
}

/// A name [`Arch::from_str`] does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown architecture '{name}'")]
pub struct UnknownArch {
    pub name: String,
}

impl FromStr for Arch {
    type Err = UnknownArch;

    /// Takes the canonical names and the aliases, in any letter case.
    fn from_str(s: &str) -> Result<Arch, UnknownArch> {
        SPECS
            .iter()
            .map(|spec| (spec.name, spec.arch))
            .chain(ALIASES.iter().copied())
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map(|(_, arch)| arch)
            .ok_or_else(|| UnknownArch { name: s.to_owned() })
    }
}

/// A binfmt_misc magic and mask: a file matches when, for every byte `i`,
/// `file[i] & mask[i] == magic[i] & mask[i]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinfmtPattern {
    pub magic: Vec<u8>,
    pub mask: Vec<u8>,
}

impl BinfmtPattern {
    /// Whether a file starting with `head` matches, as binfmt_misc decides.
    pub fn matches(&self, head: &[u8]) -> bool {
        head.len() >= self.magic.len()
            && self
                .magic
                .iter()
                .zip(&self.mask)
                .zip(head)
                .all(|((m, k), h)| h & k == m & k)
    }

    /// The magic as binfmt_misc's `register` file takes it: `\x7f\x45...`.
    pub fn magic_escaped(&self) -> String {
        escape(&self.magic)
    }

    /// The mask as binfmt_misc's `register` file takes it.
    pub fn mask_escaped(&self) -> String {
        escape(&self.mask)
    }
}

fn escape(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\x{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_named() -> impl Iterator<Item = Arch> {
        SPECS.iter().map(|s| s.arch)
    }

    #[test]
    fn names_round_trip() {
        for arch in all_named() {
            let name = arch.to_string();
            assert_eq!(name.parse::<Arch>(), Ok(arch), "{name}");
            assert_eq!(name.to_uppercase().parse::<Arch>(), Ok(arch), "{name}");
            assert_eq!(Some(name.as_str()), arch.name());
        }
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = SPECS.iter().map(|s| s.name).collect();
        names.extend(ALIASES.iter().map(|(n, _)| *n));
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count);
    }

    #[test]
    fn aliases() {
        let cases = [
            ("amd64", Arch::X86_64),
            ("arm64", Arch::Aarch64),
            ("x86", Arch::I386),
            ("i686", Arch::I386),
            ("armhf", Arch::Arm),
            ("armel", Arch::Arm),
            ("armv7l", Arch::Arm),
            ("ppc64el", Arch::Ppc64le),
            ("powerpc", Arch::Ppc),
            ("loong64", Arch::Loongarch64),
            ("s390", Arch::S390),
        ];
        for (alias, arch) in cases {
            assert_eq!(alias.parse::<Arch>(), Ok(arch), "{alias}");
        }
        let err = "vax".parse::<Arch>().unwrap_err();
        assert_eq!(err.to_string(), "unknown architecture 'vax'");
        assert!("".parse::<Arch>().is_err());
    }

    #[test]
    fn other_display() {
        let other = Arch::from_elf(1234, Elf64, Big, 0);
        assert_eq!(
            other,
            Arch::Other {
                machine: 1234,
                class: Elf64,
                endian: Big
            }
        );
        assert_eq!(
            other.to_string(),
            "unknown (e_machine 1234, 64-bit, big-endian)"
        );
        assert_eq!(other.name(), None);
        assert_eq!(other.qemu_name(), None);
        assert_eq!(other.binfmt_pattern(), None);
        assert_eq!(other.machine(), 1234);
        assert_eq!(other.class(), Elf64);
        assert_eq!(other.endian(), Big);
        // x32: x86-64 machine, 32-bit class.
        assert!(matches!(
            Arch::from_elf(EM_X86_64, Elf32, Little, 0),
            Arch::Other { .. }
        ));
    }

    #[test]
    fn from_elf_by_class_and_endian() {
        let cases = [
            (EM_386, Elf32, Little, 0, Arch::I386),
            (EM_486, Elf32, Little, 0, Arch::I386),
            (EM_ARM, Elf32, Little, 0, Arch::Arm),
            (EM_ARM, Elf32, Big, 0, Arch::Armeb),
            (EM_S390, Elf64, Big, 0, Arch::S390x),
            (EM_S390, Elf32, Big, 0, Arch::S390),
            (EM_PPC64, Elf64, Little, 0, Arch::Ppc64le),
            (EM_PPC64, Elf64, Big, 0, Arch::Ppc64),
            (EM_MIPS, Elf32, Big, 0, Arch::Mips),
            (EM_MIPS, Elf32, Little, 0, Arch::Mipsel),
            (EM_MIPS, Elf32, Big, EF_MIPS_ABI2, Arch::Mipsn32),
            (EM_MIPS, Elf32, Little, EF_MIPS_ABI2 | 1, Arch::Mipsn32el),
            (EM_MIPS, Elf64, Big, 0, Arch::Mips64),
            (EM_MIPS, Elf64, Little, EF_MIPS_ABI2, Arch::Mips64el),
            (EM_RISCV, Elf32, Little, 0, Arch::Riscv32),
        ];
        for (machine, class, endian, flags, want) in cases {
            assert_eq!(Arch::from_elf(machine, class, endian, flags), want);
        }
        for arch in all_named() {
            let flags = if matches!(arch, Arch::Mipsn32 | Arch::Mipsn32el) {
                EF_MIPS_ABI2
            } else {
                0
            };
            assert_eq!(
                Arch::from_elf(arch.machine(), arch.class(), arch.endian(), flags),
                arch
            );
        }
    }

    #[test]
    fn native_is_named() {
        let native = Arch::native();
        assert!(native.name().is_some(), "{native}");
        if cfg!(all(target_arch = "x86_64", target_pointer_width = "64")) {
            assert_eq!(native, Arch::X86_64);
        }
        if cfg!(target_arch = "aarch64") {
            assert_eq!(native, Arch::Aarch64);
        }
    }

    #[test]
    fn qemu_binaries() {
        assert_eq!(
            Arch::Aarch64.qemu_static_binary().as_deref(),
            Some("qemu-aarch64-static")
        );
        assert_eq!(Arch::Ppc64le.qemu_name(), Some("ppc64le"));
        assert_eq!(Arch::Armeb.qemu_name(), Some("armeb"));
        assert_eq!(Arch::Mips64el.qemu_name(), Some("mips64el"));
        assert_eq!(Arch::S390.qemu_name(), None);
        assert_eq!(Arch::S390x.qemu_name(), Some("s390x"));
    }

    /// Values from qemu's scripts/qemu-binfmt-conf.sh, for the
    /// architectures where its masks follow one rule (some of its older
    /// rows mask EI_DATA or the high byte of e_machine by accident).
    #[test]
    fn binfmt_patterns_match_qemu() {
        let cases = [
            (
                Arch::Aarch64,
                r"\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00",
                r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff",
            ),
            (
                Arch::Arm,
                r"\x7f\x45\x4c\x46\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x28\x00",
                r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff",
            ),
            (
                Arch::Armeb,
                r"\x7f\x45\x4c\x46\x01\x02\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x28",
                r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff",
            ),
            (
                Arch::S390x,
                r"\x7f\x45\x4c\x46\x02\x02\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x16",
                r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff",
            ),
            (
                Arch::Riscv64,
                r"\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xf3\x00",
                r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff",
            ),
            (
                Arch::Hppa,
                r"\x7f\x45\x4c\x46\x01\x02\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x0f",
                r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff",
            ),
            (
                Arch::Mips64el,
                r"\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x08\x00",
                r"\xff\xff\xff\xff\xff\xff\xff\x00\xfe\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff",
            ),
            (
                Arch::Mipsel,
                r"\x7f\x45\x4c\x46\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
                r"\xff\xff\xff\xff\xff\xff\xff\x00\xfe\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x20",
            ),
            (
                Arch::Mipsn32,
                r"\x7f\x45\x4c\x46\x01\x02\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x20",
                r"\xff\xff\xff\xff\xff\xff\xff\x00\xfe\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x20",
            ),
        ];
        for (arch, magic, mask) in cases {
            let p = arch.binfmt_pattern().unwrap();
            assert_eq!(p.magic_escaped(), magic, "{arch} magic");
            assert_eq!(p.mask_escaped(), mask, "{arch} mask");
            assert_eq!(p.magic.len(), p.mask.len());
        }
    }

    /// A minimal ELF header of `arch` with the given type, OS ABI and flags.
    fn header(arch: Arch, e_type: u16, osabi: u8, flags: u32) -> Vec<u8> {
        let little = arch.endian() == Little;
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = if arch.class() == Elf32 { 1 } else { 2 };
        h[5] = if little { 1 } else { 2 };
        h[6] = 1;
        h[7] = osabi;
        let w16 = |v: u16| {
            if little {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            }
        };
        h[16..18].copy_from_slice(&w16(e_type));
        h[18..20].copy_from_slice(&w16(arch.machine()));
        let flags_at = if arch.class() == Elf32 { 36 } else { 48 };
        let f = if little {
            flags.to_le_bytes()
        } else {
            flags.to_be_bytes()
        };
        h[flags_at..flags_at + 4].copy_from_slice(&f);
        h
    }

    #[test]
    fn each_pattern_matches_only_its_own_arch() {
        for arch in all_named() {
            let flags = if matches!(arch, Arch::Mipsn32 | Arch::Mipsn32el) {
                EF_MIPS_ABI2
            } else {
                0
            };
            for (e_type, osabi) in [(2, 0), (3, 0), (2, 3), (3, 97)] {
                let h = header(arch, e_type, osabi, flags);
                let matching: Vec<Arch> = all_named()
                    .filter(|a| a.binfmt_pattern().unwrap().matches(&h))
                    .collect();
                assert_eq!(matching, vec![arch], "type {e_type} osabi {osabi}");
            }
            // Relocatable objects and core files do not match.
            for e_type in [1, 4] {
                let h = header(arch, e_type, 0, flags);
                assert!(!arch.binfmt_pattern().unwrap().matches(&h), "{arch}");
            }
        }
    }

    #[test]
    fn pattern_needs_whole_magic() {
        let p = Arch::X86_64.binfmt_pattern().unwrap();
        let h = header(Arch::X86_64, 2, 0, 0);
        assert!(p.matches(&h));
        assert!(!p.matches(&h[..19]));
        assert!(!p.matches(&[]));
    }
}
