//! The C allocator's memory, filling large buffers, and files mapped to be
//! read in place.

/// Gives the allocator's free memory back to the system (glibc's
/// `malloc_trim`: the top of the heap, and whole free pages inside it).
/// A daemon calls it when it goes idle, so memory used by a burst of work
/// does not stay resident. Returns whether anything was released.
pub fn trim() -> bool {
    // SAFETY: malloc_trim takes no pointers and is thread-safe.
    unsafe { libc::malloc_trim(0) != 0 }
}

/// Keeps large blocks (up to 8 MiB) in the heap instead of giving each its
/// own mapping, and up to 64 MiB of free heap resident: a daemon that moves
/// data in blocks of hundreds of KiB (file reads, stream chunks) then
/// reuses their memory rather than mapping, faulting in, zeroing and
/// unmapping fresh pages for every block (which cost the home about a
/// fifth of its time serving reads). [`trim`] still gives it all back when
/// the daemon goes idle. Returns whether glibc took both settings.
pub fn keep_large_blocks() -> bool {
    // SAFETY: mallopt takes two integers and is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 8 << 20) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20) == 1
    }
}

/// Leaves the whole pages inside `buf` out of the children this process
/// forks from now on (`MADV_DONTFORK`), or, with `leave_out` false, puts
/// them back (`MADV_DOFORK`: done before the buffer is freed, so that the
/// allocator's reuse of its pages is forked as any memory). A fork then
/// copies no page tables for it: a node daemon holding a migration's
/// pre-copied pages (100 MiB and more) forks its restore stub in a
/// fraction of the time. Only for buffers no forked child reads (roamd's
/// forks run raw system calls, then exec or become a restored process).
pub fn fork_without(buf: &[u8], leave_out: bool) {
    const PAGE: usize = 4096;
    let start = buf.as_ptr() as usize;
    let (a, b) = (
        start.next_multiple_of(PAGE),
        (start + buf.len()) & !(PAGE - 1),
    );
    if a < b {
        let advice = if leave_out {
            libc::MADV_DONTFORK
        } else {
            libc::MADV_DOFORK
        };
        // SAFETY: the range is whole pages inside memory `buf` borrows;
        // the advice changes what a later fork copies, not what this
        // process holds there.
        unsafe { libc::madvise(a as *mut libc::c_void, b - a, advice) };
    }
}

/// Asks for transparent huge pages in the spare capacity of `buf` (the
/// whole 2 MiB blocks inside it): a large buffer about to be filled then
/// takes one fault per 2 MiB instead of one per 4 KiB page. A hint only:
/// without THP (`never`), nothing changes.
pub fn huge_pages_for(buf: &mut Vec<u8>) {
    huge_pages_for_spare(buf)
}

/// Asks for transparent huge pages under `buf` (the whole 2 MiB blocks
/// inside it), for a zeroed buffer that the allocator mapped fresh and
/// nothing has touched yet: its first writes then fault in 2 MiB at a
/// time. A hint only; the contents do not change.
pub fn huge_pages_for_fresh<T>(buf: &mut [T]) {
    const HUGE: usize = 2 << 20;
    let start = buf.as_mut_ptr() as usize;
    let end = start + std::mem::size_of_val(buf);
    let (a, b) = (start.next_multiple_of(HUGE), end & !(HUGE - 1));
    if a < b {
        // SAFETY: the range is inside memory `buf` owns; MADV_HUGEPAGE
        // changes how it is backed, not what it holds (zeroed memory
        // stays zero), and is harmless where THP is off.
        unsafe { libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_HUGEPAGE) };
    }
}

/// [`huge_pages_for`], for a Vec of any element type.
pub fn huge_pages_for_spare<T>(buf: &mut Vec<T>) {
    const HUGE: usize = 2 << 20;
    let spare = buf.spare_capacity_mut();
    let start = spare.as_ptr() as usize;
    let end = start + std::mem::size_of_val(spare);
    let (a, b) = (start.next_multiple_of(HUGE), end & !(HUGE - 1));
    if a < b {
        // SAFETY: the range is inside memory this Vec owns and has not
        // initialized; MADV_HUGEPAGE changes how it is backed, not what it
        // holds (nothing yet), and is harmless where THP is off.
        unsafe { libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_HUGEPAGE) };
    }
}

/// Appends `len` bytes of `f` at `offset` to `out`, read straight into its
/// spare capacity (no zeroing first, as `resize` would).
pub fn read_at_append(
    f: &std::fs::File,
    out: &mut Vec<u8>,
    len: usize,
    offset: u64,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    out.reserve(len);
    let mut done = 0;
    while done < len {
        let spare = out.spare_capacity_mut();
        // SAFETY: pread writes at most `len - done` bytes into the spare
        // capacity, which has room for `len` (reserved above).
        let n = unsafe {
            libc::pread64(
                f.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                len - done,
                (offset + done as u64) as i64,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        // SAFETY: pread initialized these `n` bytes.
        unsafe { out.set_len(out.len() + n as usize) };
        done += n as usize;
    }
    Ok(())
}

/// A file mapped read-only into memory (MAP_PRIVATE): its bytes without a
/// copy into a buffer, the file's pages mapped as they are first read. The file must not shrink while
/// mapped (reading past its new end would raise SIGBUS): map only files
/// this process owns, such as a checkpoint image it is restoring.
pub struct Mapped {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by the `Mapped`; sharing
// `&[u8]` of it between threads is as safe as of any immutable buffer.
unsafe impl Send for Mapped {}
// SAFETY: as above: nothing writes to it.
unsafe impl Sync for Mapped {}

impl Mapped {
    /// Maps the whole of `f` (its current length).
    pub fn file(f: &std::fs::File) -> std::io::Result<Mapped> {
        use std::os::fd::AsRawFd;
        let len = usize::try_from(f.metadata()?.len())
            .map_err(|_| std::io::Error::other("file too large to map"))?;
        if len == 0 {
            return Ok(Mapped {
                ptr: std::ptr::NonNull::dangling().as_ptr(),
                len: 0,
            });
        }
        // SAFETY: a new read-only private mapping of a descriptor we hold,
        // at an address the kernel picks; checked for failure below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                f.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapped { ptr: p.cast(), len })
    }
}

impl std::ops::Deref for Mapped {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes (or is dangling with
        // length 0) for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmaps exactly the mapping this value made; no slice
            // of it outlives `self` (they borrow it).
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
        }
    }
}

impl std::fmt::Debug for Mapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mapped({} bytes)", self.len)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_mapped_file_reads_as_its_bytes() {
        use std::io::Write;
        let mut f = tempfile_in_tmp();
        f.write_all(b"mapped bytes").unwrap();
        let m = super::Mapped::file(&f).unwrap();
        assert_eq!(&m[..], b"mapped bytes");
        let empty = super::Mapped::file(&tempfile_in_tmp()).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn trim_after_freeing_releases_memory() {
        let v: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 100_000]).collect();
        drop(v);
        // Whether anything is left to release depends on the allocator's
        // state; the call itself must be harmless.
        let _ = super::trim();
        let _ = super::trim();
    }

    #[test]
    fn glibc_takes_the_large_block_settings() {
        assert!(super::keep_large_blocks());
        let v = vec![1u8; 1 << 20];
        assert_eq!(v.iter().map(|&b| u64::from(b)).sum::<u64>(), 1 << 20);
    }

    #[test]
    fn reads_append_at_an_offset() {
        use std::io::Write;
        let mut f = tempfile_in_tmp();
        f.write_all(b"0123456789").unwrap();
        let mut out = b"ab".to_vec();
        super::huge_pages_for(&mut out);
        super::read_at_append(&f, &mut out, 4, 3).unwrap();
        assert_eq!(out, b"ab3456");
        let e = super::read_at_append(&f, &mut out, 4, 8).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    fn tempfile_in_tmp() -> std::fs::File {
        let p = std::env::temp_dir().join(format!("roam-mem-{}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        std::fs::remove_file(&p).unwrap();
        f
    }
}
