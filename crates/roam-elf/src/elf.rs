//! Reading an ELF header and its program headers.
//!
//! Every offset and size comes from the file and is checked before use: sums
//! are overflow-checked, the program header table is at most
//! [`MAX_PHDR_TABLE`] bytes, `PT_INTERP` at most [`MAX_INTERP`] bytes, and
//! nothing is read or allocated past those limits.

use crate::arch::{Arch, Class, Endian};
use std::borrow::Cow;
use std::io;

/// The largest program header table accepted, in bytes (the kernel's own
/// limit is 64 KiB or less).
pub const MAX_PHDR_TABLE: u64 = 64 * 1024;
/// The largest `PT_INTERP` accepted, in bytes (the kernel's is PATH_MAX).
pub const MAX_INTERP: u64 = 4096;
/// How much of `PT_DYNAMIC` is searched for `DT_FLAGS_1`, in bytes.
pub const MAX_DYNAMIC_SCAN: u64 = 64 * 1024;

const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_FLAGS_1: u64 = 0x6fff_fffb;
const DF_1_PIE: u64 = 0x0800_0000;

/// What an ELF file's headers say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    /// `e_machine`.
    pub machine: u16,
    pub class: Class,
    pub endian: Endian,
    pub kind: Kind,
    /// The program interpreter (`PT_INTERP`), such as
    /// `/lib64/ld-linux-x86-64.so.2`.
    pub interpreter: Option<String>,
    /// No program interpreter: the kernel starts the program itself.
    pub is_static: bool,
    pub arch: Arch,
}

/// What kind of ELF file it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `ET_EXEC`: loaded at a fixed address.
    Executable,
    /// `ET_DYN` with a program interpreter or the `DF_1_PIE` flag: a
    /// position-independent executable (static-pie included).
    PositionIndependent,
    /// Any other `ET_DYN`: a shared library (the kernel still runs it).
    SharedObject,
}

/// Why a buffer could not be read as an ELF program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    #[error("not an ELF file")]
    NotElf,
    /// Part of what is needed lies past the available bytes; reading up to
    /// `end` may be enough.
    #[error("truncated: the {what} ends at byte {end}, past the {available} bytes available")]
    Truncated {
        what: &'static str,
        end: u64,
        available: u64,
    },
    #[error("malformed: {what}")]
    Malformed { what: String },
}

/// A parse failure: bad bytes, or an I/O error reading them.
#[derive(Debug)]
pub(crate) enum Failure {
    Elf(ElfError),
    Io(io::Error),
}

impl From<ElfError> for Failure {
    fn from(e: ElfError) -> Failure {
        Failure::Elf(e)
    }
}

fn malformed(what: impl Into<String>) -> Failure {
    Failure::Elf(ElfError::Malformed { what: what.into() })
}

/// Where the parser gets bytes from: a buffer or a file.
pub(crate) trait Source {
    /// Exactly `len` bytes at `offset`, or `Truncated` naming `what`.
    fn read(&mut self, offset: u64, len: u64, what: &'static str)
        -> Result<Cow<'_, [u8]>, Failure>;
}

/// The end of `len` bytes at `offset`, or a malformed-offset error.
pub(crate) fn end_of(offset: u64, len: u64, what: &'static str) -> Result<u64, Failure> {
    offset
        .checked_add(len)
        .ok_or_else(|| malformed(format!("the {what}'s offset {offset:#x} overflows")))
}

/// A byte buffer: nothing past its end exists.
pub(crate) struct Bytes<'a>(pub &'a [u8]);

impl Source for Bytes<'_> {
    fn read(
        &mut self,
        offset: u64,
        len: u64,
        what: &'static str,
    ) -> Result<Cow<'_, [u8]>, Failure> {
        let end = end_of(offset, len, what)?;
        let available = self.0.len() as u64;
        let slice = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(end).ok())
            .and_then(|(start, end)| self.0.get(start..end));
        slice
            .map(Cow::Borrowed)
            .ok_or(Failure::Elf(ElfError::Truncated {
                what,
                end,
                available,
            }))
    }
}

/// Reads integers of one byte order from a slice; out-of-range reads give
/// `Truncated` (callers size their slices first, so this is a safety net).
struct Fields<'a> {
    bytes: &'a [u8],
    endian: Endian,
    what: &'static str,
}

impl Fields<'_> {
    fn array<const N: usize>(&self, at: usize) -> Result<[u8; N], Failure> {
        at.checked_add(N)
            .and_then(|end| self.bytes.get(at..end))
            .and_then(|s| s.try_into().ok())
            .ok_or(Failure::Elf(ElfError::Truncated {
                what: self.what,
                end: (at as u64).saturating_add(N as u64),
                available: self.bytes.len() as u64,
            }))
    }

    fn u16(&self, at: usize) -> Result<u16, Failure> {
        let b = self.array::<2>(at)?;
        Ok(match self.endian {
            Endian::Little => u16::from_le_bytes(b),
            Endian::Big => u16::from_be_bytes(b),
        })
    }

    fn u32(&self, at: usize) -> Result<u32, Failure> {
        let b = self.array::<4>(at)?;
        Ok(match self.endian {
            Endian::Little => u32::from_le_bytes(b),
            Endian::Big => u32::from_be_bytes(b),
        })
    }

    fn u64(&self, at: usize) -> Result<u64, Failure> {
        let b = self.array::<8>(at)?;
        Ok(match self.endian {
            Endian::Little => u64::from_le_bytes(b),
            Endian::Big => u64::from_be_bytes(b),
        })
    }

    /// A word: 4 bytes in a 32-bit file, 8 in a 64-bit one.
    fn word(&self, class: Class, at: usize) -> Result<u64, Failure> {
        match class {
            Class::Elf32 => self.u32(at).map(u64::from),
            Class::Elf64 => self.u64(at),
        }
    }
}

/// A segment's place in the file.
#[derive(Clone, Copy)]
struct Segment {
    offset: u64,
    filesz: u64,
}

/// Parses the ELF file `src` holds.
pub(crate) fn parse(src: &mut impl Source) -> Result<ElfInfo, Failure> {
    let ident: Result<[u8; 16], Failure> = src
        .read(0, 16, "ELF header")
        .map(|b| b.as_ref().try_into().unwrap_or([0; 16]));
    let ident = match ident {
        Ok(ident) => ident,
        // Too short for an ELF header: an ELF file only if the magic is there.
        Err(Failure::Elf(ElfError::Truncated { available, .. })) => {
            let n = available.min(4);
            let magic = src.read(0, n, "ELF header")?.as_ref() == b"\x7fELF";
            return Err(if magic {
                ElfError::Truncated {
                    what: "ELF header",
                    end: 16,
                    available,
                }
                .into()
            } else {
                ElfError::NotElf.into()
            });
        }
        Err(e) => return Err(e),
    };
    if &ident[..4] != b"\x7fELF" {
        return Err(ElfError::NotElf.into());
    }
    let class = match ident[4] {
        1 => Class::Elf32,
        2 => Class::Elf64,
        n => {
            return Err(malformed(format!(
                "EI_CLASS {n} is neither 1 (32-bit) nor 2 (64-bit)"
            )))
        }
    };
    let endian = match ident[5] {
        1 => Endian::Little,
        2 => Endian::Big,
        n => {
            return Err(malformed(format!(
                "EI_DATA {n} is neither 1 (little-endian) nor 2 (big-endian)"
            )))
        }
    };

    // Offsets of the header fields that differ by class.
    let (ehsize, phoff_at, flags_at, phentsize_at, phnum_at, phentsize_want) = match class {
        Class::Elf32 => (52u64, 28, 36, 42, 44, 32u16),
        Class::Elf64 => (64u64, 32, 48, 54, 56, 56u16),
    };
    let header = src.read(0, ehsize, "ELF header")?;
    let h = Fields {
        bytes: &header,
        endian,
        what: "ELF header",
    };
    let e_type = h.u16(16)?;
    let machine = h.u16(18)?;
    let phoff = h.word(class, phoff_at)?;
    let flags = h.u32(flags_at)?;
    let phentsize = h.u16(phentsize_at)?;
    let phnum = h.u16(phnum_at)?;
    drop(header);

    if e_type != ET_EXEC && e_type != ET_DYN {
        let name = match e_type {
            0 => "no file type",
            1 => "a relocatable object",
            4 => "a core dump",
            _ => "not a known type",
        };
        return Err(malformed(format!(
            "e_type {e_type} ({name}) is neither an executable nor a shared object"
        )));
    }
    if phentsize != phentsize_want {
        return Err(malformed(format!(
            "e_phentsize {phentsize}, expected {phentsize_want} for a {class} file"
        )));
    }
    if phnum == 0 {
        return Err(malformed("no program headers (e_phnum 0)"));
    }
    let table_len = u64::from(phnum) * u64::from(phentsize);
    if table_len > MAX_PHDR_TABLE {
        return Err(malformed(format!(
            "program header table of {phnum} entries ({table_len} bytes) is larger than {MAX_PHDR_TABLE} bytes"
        )));
    }
    end_of(phoff, table_len, "program header table")?;

    let mut interp_seg = None;
    let mut dynamic_seg = None;
    {
        let table = src.read(phoff, table_len, "program header table")?;
        let t = Fields {
            bytes: &table,
            endian,
            what: "program header table",
        };
        for i in 0..usize::from(phnum) {
            let at = i * usize::from(phentsize);
            let p_type = t.u32(at)?;
            let (offset, filesz) = match class {
                Class::Elf32 => (t.word(class, at + 4)?, t.word(class, at + 16)?),
                Class::Elf64 => (t.u64(at + 8)?, t.u64(at + 32)?),
            };
            let seg = Segment { offset, filesz };
            // The kernel uses the first of each.
            match p_type {
                PT_INTERP if interp_seg.is_none() => interp_seg = Some(seg),
                PT_DYNAMIC if dynamic_seg.is_none() => dynamic_seg = Some(seg),
                _ => {}
            }
        }
    }

    let interpreter = match interp_seg {
        Some(seg) => Some(read_interp(src, seg)?),
        None => None,
    };
    let kind = match e_type {
        ET_EXEC => Kind::Executable,
        _ if interpreter.is_some() => Kind::PositionIndependent,
        _ => match dynamic_seg {
            Some(seg) if has_pie_flag(src, seg, class, endian)? => Kind::PositionIndependent,
            _ => Kind::SharedObject,
        },
    };
    Ok(ElfInfo {
        machine,
        class,
        endian,
        kind,
        is_static: interpreter.is_none(),
        interpreter,
        arch: Arch::from_elf(machine, class, endian, flags),
    })
}

/// The program interpreter's path, checked as the kernel checks it: 2 to
/// [`MAX_INTERP`] bytes, NUL-terminated.
fn read_interp(src: &mut impl Source, seg: Segment) -> Result<String, Failure> {
    if seg.filesz < 2 || seg.filesz > MAX_INTERP {
        return Err(malformed(format!(
            "PT_INTERP size {} is outside 2..={MAX_INTERP}",
            seg.filesz
        )));
    }
    let bytes = src.read(seg.offset, seg.filesz, "PT_INTERP segment")?;
    if bytes.last() != Some(&0) {
        return Err(malformed("PT_INTERP is not NUL-terminated"));
    }
    let path = bytes.split(|&b| b == 0).next().unwrap_or_default();
    if path.is_empty() {
        return Err(malformed("PT_INTERP is empty"));
    }
    String::from_utf8(path.to_vec()).map_err(|_| malformed("PT_INTERP is not valid UTF-8"))
}

/// Whether `PT_DYNAMIC` has `DT_FLAGS_1` with `DF_1_PIE` (a static-pie
/// program). Only the first [`MAX_DYNAMIC_SCAN`] bytes are searched.
fn has_pie_flag(
    src: &mut impl Source,
    seg: Segment,
    class: Class,
    endian: Endian,
) -> Result<bool, Failure> {
    let entsize: u64 = match class {
        Class::Elf32 => 8,
        Class::Elf64 => 16,
    };
    let len = seg.filesz.min(MAX_DYNAMIC_SCAN) / entsize * entsize;
    let bytes = src.read(seg.offset, len, "PT_DYNAMIC segment")?;
    let d = Fields {
        bytes: &bytes,
        endian,
        what: "PT_DYNAMIC segment",
    };
    let word = (entsize / 2) as usize;
    for i in 0..(len / entsize) as usize {
        let at = i * entsize as usize;
        let tag = d.word(class, at)?;
        if tag == DT_NULL {
            break;
        }
        if tag == DT_FLAGS_1 {
            return Ok(d.word(class, at + word)? & DF_1_PIE != 0);
        }
    }
    Ok(false)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::arch::EF_MIPS_ABI2;
    use crate::inspect_bytes;

    /// Builds a minimal ELF file: header, program headers, then the
    /// interpreter path and a dynamic section if asked.
    pub(crate) struct Builder {
        pub class: Class,
        pub endian: Endian,
        pub machine: u16,
        pub e_type: u16,
        pub flags: u32,
        pub interp: Option<Vec<u8>>,
        /// `DT_FLAGS_1` value, if a dynamic section is wanted.
        pub flags_1: Option<u64>,
    }

    impl Builder {
        pub fn new(class: Class, endian: Endian, machine: u16) -> Builder {
            Builder {
                class,
                endian,
                machine,
                e_type: ET_EXEC,
                flags: 0,
                interp: None,
                flags_1: None,
            }
        }

        pub fn interp(mut self, path: &str) -> Builder {
            let mut v = path.as_bytes().to_vec();
            v.push(0);
            self.interp = Some(v);
            self
        }

        fn put(&self, out: &mut Vec<u8>, at: usize, v: u64, size: usize) {
            let bytes = match self.endian {
                Endian::Little => v.to_le_bytes()[..size].to_vec(),
                Endian::Big => v.to_be_bytes()[8 - size..].to_vec(),
            };
            if out.len() < at + size {
                out.resize(at + size, 0);
            }
            out[at..at + size].copy_from_slice(&bytes);
        }

        pub fn build(&self) -> Vec<u8> {
            let is64 = self.class == Class::Elf64;
            let (ehsize, phentsize, w) = if is64 { (64, 56, 8) } else { (52, 32, 4) };
            let mut phdrs: Vec<(u32, Vec<u8>)> = vec![(1, Vec::new())]; // PT_LOAD
            if let Some(i) = &self.interp {
                phdrs.push((PT_INTERP, i.clone()));
            }
            if let Some(f) = self.flags_1 {
                let mut dynamic = Vec::new();
                let put_word = |d: &mut Vec<u8>, v: u64| {
                    let at = d.len();
                    self.put(d, at, v, w);
                };
                put_word(&mut dynamic, 1); // DT_NEEDED-like noise
                put_word(&mut dynamic, 5);
                put_word(&mut dynamic, DT_FLAGS_1);
                put_word(&mut dynamic, f);
                put_word(&mut dynamic, DT_NULL);
                put_word(&mut dynamic, 0);
                phdrs.push((PT_DYNAMIC, dynamic));
            }
            let mut out = vec![0u8; ehsize + phentsize * phdrs.len()];
            out[..4].copy_from_slice(b"\x7fELF");
            out[4] = if is64 { 2 } else { 1 };
            out[5] = if self.endian == Endian::Little { 1 } else { 2 };
            out[6] = 1;
            self.put(&mut out, 16, self.e_type.into(), 2);
            self.put(&mut out, 18, self.machine.into(), 2);
            self.put(&mut out, 20, 1, 4);
            let (phoff_at, flags_at) = if is64 { (32, 48) } else { (28, 36) };
            self.put(&mut out, phoff_at, ehsize as u64, w);
            self.put(&mut out, flags_at, self.flags.into(), 4);
            self.put(&mut out, flags_at + 4, ehsize as u64, 2);
            self.put(&mut out, flags_at + 6, phentsize as u64, 2);
            self.put(&mut out, flags_at + 8, phdrs.len() as u64, 2);
            let mut data_at = ehsize + phentsize * phdrs.len();
            for (i, (p_type, data)) in phdrs.iter().enumerate() {
                let at = ehsize + i * phentsize;
                self.put(&mut out, at, (*p_type).into(), 4);
                let (offset, filesz) = if data.is_empty() {
                    (0, 0)
                } else {
                    (data_at, data.len())
                };
                if is64 {
                    self.put(&mut out, at + 8, offset as u64, 8);
                    self.put(&mut out, at + 32, filesz as u64, 8);
                } else {
                    self.put(&mut out, at + 4, offset as u64, 4);
                    self.put(&mut out, at + 16, filesz as u64, 4);
                }
                data_at += data.len();
            }
            for (_, data) in &phdrs {
                out.extend_from_slice(data);
            }
            out
        }
    }

    use crate::arch::machine::*;

    #[test]
    fn s390x_big_endian_64() {
        let b = Builder::new(Class::Elf64, Endian::Big, EM_S390).interp("/lib/ld64.so.1");
        let info = inspect_bytes(&b.build()).unwrap();
        assert_eq!(info.arch, Arch::S390x);
        assert_eq!(info.machine, EM_S390);
        assert_eq!(info.class, Class::Elf64);
        assert_eq!(info.endian, Endian::Big);
        assert_eq!(info.kind, Kind::Executable);
        assert_eq!(info.interpreter.as_deref(), Some("/lib/ld64.so.1"));
        assert!(!info.is_static);
    }

    #[test]
    fn arm_32_little_and_big() {
        let mut b = Builder::new(Class::Elf32, Endian::Little, EM_ARM);
        b.e_type = ET_DYN;
        let b = b.interp("/lib/ld-linux-armhf.so.3");
        let info = inspect_bytes(&b.build()).unwrap();
        assert_eq!(info.arch, Arch::Arm);
        assert_eq!(info.class, Class::Elf32);
        assert_eq!(info.kind, Kind::PositionIndependent);
        assert_eq!(
            info.interpreter.as_deref(),
            Some("/lib/ld-linux-armhf.so.3")
        );

        let b = Builder::new(Class::Elf32, Endian::Big, EM_ARM);
        let info = inspect_bytes(&b.build()).unwrap();
        assert_eq!(info.arch, Arch::Armeb);
        assert!(info.is_static);
        assert_eq!(info.interpreter, None);
    }

    #[test]
    fn ppc64_big_endian() {
        let b = Builder::new(Class::Elf64, Endian::Big, EM_PPC64).interp("/lib64/ld64.so.1");
        let info = inspect_bytes(&b.build()).unwrap();
        assert_eq!(info.arch, Arch::Ppc64);
        assert_eq!(info.arch.to_string(), "ppc64");
        let b = Builder::new(Class::Elf64, Endian::Little, EM_PPC64);
        assert_eq!(inspect_bytes(&b.build()).unwrap().arch, Arch::Ppc64le);
    }

    #[test]
    fn mips_little_endian_32() {
        let b = Builder::new(Class::Elf32, Endian::Little, EM_MIPS).interp("/lib/ld.so.1");
        let info = inspect_bytes(&b.build()).unwrap();
        assert_eq!(info.arch, Arch::Mipsel);
        assert_eq!(info.endian, Endian::Little);
        assert_eq!(info.class, Class::Elf32);

        let mut b = Builder::new(Class::Elf32, Endian::Little, EM_MIPS);
        b.flags = EF_MIPS_ABI2;
        assert_eq!(inspect_bytes(&b.build()).unwrap().arch, Arch::Mipsn32el);
    }

    #[test]
    fn shared_object_and_static_pie() {
        let mut b = Builder::new(Class::Elf64, Endian::Little, EM_AARCH64);
        b.e_type = ET_DYN;
        assert_eq!(inspect_bytes(&b.build()).unwrap().kind, Kind::SharedObject);
        b.flags_1 = Some(0x1);
        assert_eq!(inspect_bytes(&b.build()).unwrap().kind, Kind::SharedObject);
        b.flags_1 = Some(DF_1_PIE | 0x1);
        let info = inspect_bytes(&b.build()).unwrap();
        assert_eq!(info.kind, Kind::PositionIndependent);
        assert!(info.is_static);

        let mut b = Builder::new(Class::Elf32, Endian::Big, EM_PPC);
        b.e_type = ET_DYN;
        b.flags_1 = Some(DF_1_PIE);
        let info = inspect_bytes(&b.build()).unwrap();
        assert_eq!(info.kind, Kind::PositionIndependent);
        assert_eq!(info.arch, Arch::Ppc);
    }

    #[test]
    fn unknown_machine() {
        let b = Builder::new(Class::Elf64, Endian::Big, 1234);
        let info = inspect_bytes(&b.build()).unwrap();
        assert_eq!(
            info.arch.to_string(),
            "unknown (e_machine 1234, 64-bit, big-endian)"
        );
    }

    fn set(bytes: &mut [u8], at: usize, v: &[u8]) {
        bytes[at..at + v.len()].copy_from_slice(v);
    }

    fn malformed_what(bytes: &[u8]) -> String {
        match inspect_bytes(bytes) {
            Err(ElfError::Malformed { what }) => what,
            other => panic!("expected malformed, got {other:?}"),
        }
    }

    #[test]
    fn rejects_bad_headers() {
        let good = Builder::new(Class::Elf64, Endian::Little, EM_X86_64)
            .interp("/lib64/ld-linux-x86-64.so.2")
            .build();
        assert!(inspect_bytes(&good).is_ok());

        assert_eq!(inspect_bytes(b""), Err(ElfError::NotElf));
        assert_eq!(inspect_bytes(b"\x7fEL"), Err(ElfError::NotElf));
        assert_eq!(inspect_bytes(b"#!/bin/sh\n"), Err(ElfError::NotElf));
        assert!(matches!(
            inspect_bytes(b"\x7fELF\x02"),
            Err(ElfError::Truncated { end: 16, .. })
        ));

        let mut b = good.clone();
        b[4] = 3;
        assert!(malformed_what(&b).contains("EI_CLASS 3"));
        let mut b = good.clone();
        b[5] = 0;
        assert!(malformed_what(&b).contains("EI_DATA 0"));
        let mut b = good.clone();
        set(&mut b, 16, &1u16.to_le_bytes());
        assert!(malformed_what(&b).contains("relocatable"));
        let mut b = good.clone();
        set(&mut b, 54, &32u16.to_le_bytes());
        assert_eq!(
            malformed_what(&b),
            "e_phentsize 32, expected 56 for a 64-bit file"
        );
        let mut b = good.clone();
        set(&mut b, 56, &0u16.to_le_bytes());
        assert!(malformed_what(&b).contains("e_phnum 0"));
        let mut b = good.clone();
        set(&mut b, 56, &0xffffu16.to_le_bytes());
        assert!(malformed_what(&b).contains("65535 entries"));
        let mut b = good.clone();
        set(&mut b, 32, &u64::MAX.to_le_bytes());
        assert!(malformed_what(&b).contains("overflows"));
        let mut b = good.clone();
        set(&mut b, 32, &(u64::MAX / 2).to_le_bytes());
        assert!(matches!(
            inspect_bytes(&b),
            Err(ElfError::Truncated {
                what: "program header table",
                ..
            })
        ));

        // PT_INTERP is the second program header, at 64 + 56.
        let interp = 64 + 56;
        let mut b = good.clone();
        set(&mut b, interp + 32, &5000u64.to_le_bytes());
        assert!(malformed_what(&b).contains("PT_INTERP size 5000"));
        let mut b = good.clone();
        set(&mut b, interp + 32, &1u64.to_le_bytes());
        assert!(malformed_what(&b).contains("PT_INTERP size 1"));
        let mut b = good.clone();
        set(&mut b, interp + 8, &(u64::MAX - 10).to_le_bytes());
        assert!(malformed_what(&b).contains("overflows"));
        let mut b = good.clone();
        set(&mut b, interp + 8, &1_000_000u64.to_le_bytes());
        assert_eq!(
            inspect_bytes(&b),
            Err(ElfError::Truncated {
                what: "PT_INTERP segment",
                end: 1_000_000 + 28,
                available: good.len() as u64,
            })
        );
        let mut b = good.clone();
        let last = b.len() - 1;
        b[last] = b'x';
        assert!(malformed_what(&b).contains("not NUL-terminated"));
        let mut b = good.clone();
        let first = b.len() - 28;
        b[first] = 0;
        assert!(malformed_what(&b).contains("empty"));
        let mut b = good;
        b[last - 1] = 0xff;
        assert!(malformed_what(&b).contains("UTF-8"));
    }

    #[test]
    fn truncated_tells_how_much_is_needed() {
        let good = Builder::new(Class::Elf32, Endian::Big, EM_MIPS)
            .interp("/lib/ld.so.1")
            .build();
        for len in 16..good.len() {
            match inspect_bytes(&good[..len]) {
                Err(ElfError::Truncated { end, available, .. }) => {
                    assert_eq!(available, len as u64);
                    assert!(end > available && end <= good.len() as u64);
                    // Giving it what it asked for moves it on.
                    match inspect_bytes(&good[..end as usize]) {
                        Ok(_) => {}
                        Err(ElfError::Truncated { end: next, .. }) => assert!(next > end),
                        Err(e) => panic!("length {end}: {e}"),
                    }
                }
                other => panic!("length {len}: {other:?}"),
            }
        }
        assert!(inspect_bytes(&good).is_ok());
    }

    #[test]
    fn real_dynamic_binary() {
        let bytes = std::fs::read("/bin/true").unwrap();
        let info = inspect_bytes(&bytes).unwrap();
        assert_eq!(info.arch, Arch::native());
        assert!(!info.is_static);
        assert!(info.interpreter.as_deref().unwrap().starts_with('/'));
        assert_ne!(info.kind, Kind::SharedObject);
        // The first 4 KiB hold everything needed.
        assert_eq!(inspect_bytes(&bytes[..4096]).unwrap(), info);
    }

    /// A small deterministic PRNG (xorshift64*).
    pub(crate) struct Rng(pub u64);

    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        pub fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    pub(crate) fn fuzz_seeds() -> Vec<Vec<u8>> {
        let mut seeds = vec![
            Builder::new(Class::Elf64, Endian::Little, EM_X86_64)
                .interp("/lib64/ld-linux-x86-64.so.2")
                .build(),
            Builder::new(Class::Elf32, Endian::Big, EM_MIPS)
                .interp("/lib/ld.so.1")
                .build(),
        ];
        let mut pie = Builder::new(Class::Elf64, Endian::Big, EM_S390);
        pie.e_type = ET_DYN;
        pie.flags_1 = Some(DF_1_PIE);
        seeds.push(pie.build());
        let mut pie32 = Builder::new(Class::Elf32, Endian::Little, EM_ARM);
        pie32.e_type = ET_DYN;
        pie32.flags_1 = Some(DF_1_PIE);
        seeds.push(pie32.build());
        if let Ok(b) = std::fs::read("/bin/true") {
            seeds.push(b[..b.len().min(8192)].to_vec());
        }
        seeds
    }

    /// Overwrites a header field with an extreme value.
    pub(crate) fn smash(rng: &mut Rng, b: &mut [u8]) {
        const VALUES: [u64; 6] = [u64::MAX, u64::MAX - 7, 1 << 63, 0xffff_ffff, 0, 0xffff];
        let v = VALUES[rng.below(VALUES.len())];
        let at = rng.below(b.len());
        let size = [2, 4, 8][rng.below(3)];
        for i in 0..size {
            if let Some(byte) = b.get_mut(at + i) {
                *byte = (v >> (8 * i)) as u8;
            }
        }
    }

    #[test]
    fn fuzz_never_panics() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for seed in fuzz_seeds() {
            assert!(inspect_bytes(&seed).is_ok());
            // Truncation at every length.
            for len in 0..seed.len() {
                let _ = inspect_bytes(&seed[..len]);
            }
            // Huge phoff and phnum in both byte orders, both classes' places.
            for at in [28, 32, 44, 56] {
                for v in [u64::MAX, u64::MAX - 55, 1 << 40] {
                    let mut b = seed.clone();
                    for (i, byte) in v.to_le_bytes().iter().enumerate() {
                        if let Some(x) = b.get_mut(at + i) {
                            *x = *byte;
                        }
                    }
                    let _ = inspect_bytes(&b);
                    b[5] ^= 3;
                    let _ = inspect_bytes(&b);
                }
            }
            // Random flips and smashed fields.
            for _ in 0..3000 {
                let mut b = seed.clone();
                for _ in 0..=rng.below(8) {
                    let at = rng.below(b.len());
                    b[at] ^= 1 << rng.below(8);
                }
                if rng.below(2) == 0 {
                    smash(&mut rng, &mut b);
                }
                if rng.below(4) == 0 {
                    b.truncate(rng.below(b.len() + 1));
                }
                let _ = inspect_bytes(&b);
            }
        }
    }
}
