//! The C allocator's memory.

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
}
