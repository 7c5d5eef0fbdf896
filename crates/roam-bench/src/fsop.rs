//! The file-system operations the files benchmark times. roam-bench runs
//! a copy of itself as `roam-bench __fsop OP ARGS...`: here on the home,
//! on a node through `roam run` (where `/` is the home's tree, through
//! roam's FUSE client) or inside the node's namespaces on an sshfs mount.
//! Each operation times itself (its start-up is not measured) and prints
//! one `NAME SECONDS COUNT` line per timed phase.
//!
//! Operations (EVICT is `1` to drop the file's cached pages, on this side
//! of the mount, before the clock starts, `0` not to):
//! - `seqread PATH EVICT`: reads PATH from start to end, 1 MiB at a time;
//! - `seqwrite PATH BYTES`: creates PATH, writes BYTES, 1 MiB at a time,
//!   then fsync and close (all timed);
//! - `randread PATH COUNT SEED EVICT`: COUNT preads of 4 KiB at random
//!   4 KiB-aligned offsets, with readahead off (`POSIX_FADV_RANDOM`);
//! - `stat DIR N`: lstat of `DIR/f00000` .. `DIR/f{N-1}`;
//! - `createunlink DIR N`: makes DIR (untimed), creates N empty files in
//!   it (`open(O_CREAT|O_EXCL)` + close), then unlinks them, timed apart,
//!   and removes DIR;
//! - `evict LIST PREFIX`: drops the cached pages of every path of the
//!   file LIST (one a line), prefixed with PREFIX (untimed).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};

/// The first argument that makes roam-bench run an operation.
pub const ARG: &str = "__fsop";

/// Block size of sequential reads and writes.
const BLOCK: usize = 1 << 20;
/// Size of a random read.
const PAGE: u64 = 4096;

/// The name of the `i`th file of a metadata directory.
pub fn file_name(i: usize) -> String {
    format!("f{i:05}")
}

/// Runs the operation `args` (after [`ARG`]) and reports.
pub fn main(args: &[String]) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roam-bench {ARG}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn report(name: &str, start: Instant, count: u64) {
    println!("{name} {:.9} {count}", start.elapsed().as_secs_f64());
}

fn advise(f: &File, advice: PosixFadviseAdvice) -> anyhow::Result<()> {
    posix_fadvise(f.as_raw_fd(), 0, 0, advice).context("posix_fadvise")?;
    Ok(())
}

fn open(path: &str) -> anyhow::Result<File> {
    File::open(path).with_context(|| format!("cannot open {path}"))
}

fn flag(s: &str) -> anyhow::Result<bool> {
    match s {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => bail!("expected 0 or 1, not {s:?}"),
    }
}

fn number(s: &str) -> anyhow::Result<u64> {
    s.parse().with_context(|| format!("not a number: {s:?}"))
}

/// A block of bytes that does not compress.
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut v = vec![0u8; len];
    for b in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
    }
    v
}

fn run(args: &[String]) -> anyhow::Result<()> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args[..] {
        ["seqread", path, evict] => {
            let mut f = open(path)?;
            if flag(evict)? {
                advise(&f, PosixFadviseAdvice::POSIX_FADV_DONTNEED)?;
            }
            let mut buf = vec![0u8; BLOCK];
            let (start, mut total) = (Instant::now(), 0u64);
            loop {
                match f.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => total += n as u64,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e).with_context(|| format!("reading {path}")),
                }
            }
            report("seqread", start, total);
        }
        ["seqwrite", path, bytes] => {
            let size = number(bytes)?;
            let block = pattern(BLOCK);
            let start = Instant::now();
            let mut f = File::create(path).with_context(|| format!("cannot create {path}"))?;
            let mut left = size;
            while left > 0 {
                let n = left.min(BLOCK as u64) as usize;
                f.write_all(&block[..n])
                    .with_context(|| format!("writing {path}"))?;
                left -= n as u64;
            }
            f.sync_all().with_context(|| format!("fsync of {path}"))?;
            drop(f);
            report("seqwrite", start, size);
        }
        ["randread", path, count, seed, evict] => {
            let (count, mut x) = (number(count)?, number(seed)?.max(1));
            let f = open(path)?;
            let pages = f.metadata()?.len() / PAGE;
            if pages == 0 {
                bail!("{path} is smaller than a page");
            }
            if flag(evict)? {
                advise(&f, PosixFadviseAdvice::POSIX_FADV_DONTNEED)?;
            }
            advise(&f, PosixFadviseAdvice::POSIX_FADV_RANDOM)?;
            let mut buf = [0u8; PAGE as usize];
            let start = Instant::now();
            for _ in 0..count {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let off = (x % pages) * PAGE;
                f.read_exact_at(&mut buf, off)
                    .with_context(|| format!("reading {path} at {off}"))?;
            }
            report("randread", start, count);
        }
        ["stat", dir, n] => {
            let n = number(n)? as usize;
            let dir = Path::new(dir);
            let start = Instant::now();
            for i in 0..n {
                let p = dir.join(file_name(i));
                std::fs::symlink_metadata(&p)
                    .with_context(|| format!("cannot stat {}", p.display()))?;
            }
            report("stat", start, n as u64);
        }
        ["createunlink", dir, n] => {
            let n = number(n)? as usize;
            let dir = Path::new(dir);
            std::fs::create_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            let start = Instant::now();
            for i in 0..n {
                let p = dir.join(file_name(i));
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&p)
                    .with_context(|| format!("cannot create {}", p.display()))?;
            }
            report("create", start, n as u64);
            let start = Instant::now();
            for i in 0..n {
                let p = dir.join(file_name(i));
                std::fs::remove_file(&p)
                    .with_context(|| format!("cannot unlink {}", p.display()))?;
            }
            report("unlink", start, n as u64);
            std::fs::remove_dir(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
        }
        ["evict", list, prefix] => {
            let list = std::io::BufReader::new(open(list)?);
            let mut n = 0;
            let start = Instant::now();
            for line in list.lines() {
                let line = line?;
                if line.is_empty() {
                    continue;
                }
                let f = open(&format!("{prefix}{line}"))?;
                advise(&f, PosixFadviseAdvice::POSIX_FADV_DONTNEED)?;
                n += 1;
            }
            report("evict", start, n);
        }
        _ => bail!("unknown operation {args:?}"),
    }
    std::io::stdout().flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_like_numbers() {
        assert_eq!(file_name(7), "f00007");
        assert!(file_name(999) < file_name(1000));
    }

    #[test]
    fn the_pattern_does_not_repeat_early() {
        let p = pattern(4096);
        assert_ne!(p[..8], p[8..16]);
        assert_eq!(p.len(), 4096);
    }
}
