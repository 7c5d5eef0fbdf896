//! A process's name as `ps` and `top` show it.

use std::io;
use std::os::unix::fs::FileExt;

/// Makes `ps -f`, `ps aux` and `/proc/self/cmdline` show `argv` instead of
/// our own argv, like setproctitle: the argument area of our initial stack
/// (arg_start..arg_end, fields 48 and 49 of /proc/self/stat) is rewritten
/// with the NUL-separated `argv`, truncated if longer, padded with NULs.
///
/// The write goes through /proc/self/mem, so bad addresses give an error,
/// not a crash. `std::env::args()` reads the same memory: after this call
/// it returns the new arguments (call it early, before other threads
/// might be reading them).
pub fn set_cmdline(argv: &[Vec<u8>]) -> io::Result<()> {
    let stat = std::fs::read("/proc/self/stat")?;
    let (start, end) = arg_area(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "cannot read arg_start/arg_end from /proc/self/stat",
        )
    })?;
    let len = usize::try_from(end - start)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "argument area too large"))?;
    let area = fill_area(argv, len);
    let mem = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/mem")?;
    mem.write_all_at(&area, start)
}

/// (arg_start, arg_end) from the text of /proc/PID/stat, if non-empty.
fn arg_area(stat: &[u8]) -> Option<(u64, u64)> {
    // comm may contain anything: the fields start after the LAST ')'.
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // Field N is f[N - 3].
    let start: u64 = f.get(48 - 3)?.parse().ok()?;
    let end: u64 = f.get(49 - 3)?.parse().ok()?;
    (start != 0 && end > start).then_some((start, end))
}

/// `argv` as NUL-terminated strings in exactly `len` bytes, the last a NUL.
fn fill_area(argv: &[Vec<u8>], len: usize) -> Vec<u8> {
    let mut area = Vec::with_capacity(len);
    for a in argv {
        area.extend(a.iter().copied().take_while(|&b| b != 0));
        area.push(0);
    }
    area.resize(len, 0);
    if let Some(last) = area.last_mut() {
        *last = 0;
    }
    area
}

/// PR_SET_NAME: the `comm` that plain `ps` and `top` show, truncated to 15
/// bytes. It names the calling thread: call it from the main thread to
/// name the process.
pub fn set_comm(name: &[u8]) -> io::Result<()> {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name[..n]);
    // SAFETY: PR_SET_NAME reads at most 16 bytes from a NUL-terminated
    // buffer; `buf` is 16 bytes and its last byte is always 0.
    if unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr(), 0, 0, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<Vec<u8>> {
        args.iter().map(|a| a.as_bytes().to_vec()).collect()
    }

    #[test]
    fn fill() {
        assert_eq!(fill_area(&v(&["ab", "c"]), 8), b"ab\0c\0\0\0\0");
        assert_eq!(fill_area(&v(&["abcdef", "gh"]), 5), b"abcd\0");
        assert_eq!(fill_area(&v(&["ab"]), 3), b"ab\0");
        assert_eq!(fill_area(&[], 2), b"\0\0");
        assert_eq!(fill_area(&v(&["a\0b", "c"]), 6), b"a\0c\0\0\0");
    }

    #[test]
    fn area_parsing() {
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[0] = "R".into();
        let line = format!("1 (x) y)) {}", fields.join(" "));
        assert_eq!(arg_area(line.as_bytes()), Some((48, 49)));
        assert_eq!(arg_area(b"1 (x) R 1 2"), None);
    }

    #[test]
    fn cmdline_of_self() {
        let before = std::fs::read("/proc/self/cmdline").unwrap();
        set_cmdline(&v(&["roam-test", "-x", "hello world"])).unwrap();
        let after = std::fs::read("/proc/self/cmdline").unwrap();
        assert_eq!(after.len(), before.len());
        assert!(before.len() > 25, "test binary path unexpectedly short");
        assert!(
            after.starts_with(b"roam-test\0-x\0hello world\0"),
            "{after:?}"
        );
        assert!(after[24..].iter().all(|&b| b == 0));

        // Longer than the area: truncated, still NUL-terminated.
        let long = "z".repeat(before.len() * 2 + 100);
        set_cmdline(&v(&[&long])).unwrap();
        let after = std::fs::read("/proc/self/cmdline").unwrap();
        assert_eq!(after.len(), before.len());
        assert_eq!(*after.last().unwrap(), 0);
        assert!(after[..after.len() - 1].iter().all(|&b| b == b'z'));

        // The process's stat (and so ps) still parses.
        let stat = crate::procfs::proc_stat(std::process::id()).unwrap();
        assert!(!stat.comm.is_empty());
    }

    #[test]
    fn comm_of_this_thread() {
        set_comm(b"roam-proxy-with-a-long-name").unwrap();
        let comm = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
        assert_eq!(comm, "roam-proxy-with\n");
        set_comm(b"short").unwrap();
        let comm = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
        assert_eq!(comm, "short\n");
    }
}
