//! The C allocator's memory, and filling large buffers.

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

/// Asks for transparent huge pages in the spare capacity of `buf` (the
/// whole 2 MiB blocks inside it): a large buffer about to be filled then
/// takes one fault per 2 MiB instead of one per 4 KiB page. A hint only:
/// without THP (`never`), nothing changes.
pub fn huge_pages_for(buf: &mut Vec<u8>) {
    const HUGE: usize = 2 << 20;
    let spare = buf.spare_capacity_mut();
    let start = spare.as_ptr() as usize;
    let end = start + spare.len();
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

#[cfg(test)]
mod tests {
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
