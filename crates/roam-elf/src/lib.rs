//! Inspecting a program file before roam places it on a node: which
//! architecture it needs, whether it is static, what its program
//! interpreter is, and for a `#!` script, what runs it.
//!
//! - [`inspect_file`] reads a file with a few bounded reads and follows
//!   `#!` lines as the kernel does;
//! - [`inspect_bytes`] parses an ELF header and its program headers from a
//!   buffer already read;
//! - [`Arch`] names architectures as qemu-user does, and gives the qemu-user
//!   binary and binfmt_misc pattern for each.
//!
//! Nothing here trusts the file: every offset and size is checked, and no
//! read or allocation is larger than a fixed limit.

pub mod arch;
pub mod elf;
pub mod program;

pub use arch::{Arch, BinfmtPattern, Class, Endian, UnknownArch};
pub use elf::{ElfError, ElfInfo, Kind};
pub use program::{inspect_file, InspectError, Program, MAX_SCRIPT_DEPTH};

/// Parses the ELF header and program headers at the start of `head`.
///
/// Everything needed must lie inside `head`: the program headers, the
/// `PT_INTERP` path, and for an `ET_DYN` file without one, `PT_DYNAMIC`.
/// If something lies past it, the error is [`ElfError::Truncated`] with the
/// byte offset it reaches, so the caller can read more and try again (or use
/// [`inspect_file`]).
pub fn inspect_bytes(head: &[u8]) -> Result<ElfInfo, ElfError> {
    elf::parse(&mut elf::Bytes(head)).map_err(|e| match e {
        elf::Failure::Elf(e) => e,
        // A buffer has no I/O; keep the error anyway rather than panic.
        elf::Failure::Io(e) => ElfError::Malformed {
            what: e.to_string(),
        },
    })
}
