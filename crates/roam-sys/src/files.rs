//! The system calls the remote file system's server makes (`roam-rfs`), as
//! small safe functions that answer an errno on failure. All take descriptors and single names (or
//! the server's own `/proc/self/fd/N` paths), never a path from a client.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// A result whose error is an errno.
pub type SysResult<T> = Result<T, i32>;

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn check(rc: libc::c_int) -> SysResult<libc::c_int> {
    if rc < 0 {
        Err(errno())
    } else {
        Ok(rc)
    }
}

fn check_long(rc: libc::c_long) -> SysResult<libc::c_long> {
    if rc < 0 {
        Err(errno())
    } else {
        Ok(rc)
    }
}

fn check_size(rc: libc::ssize_t) -> SysResult<usize> {
    if rc < 0 {
        Err(errno())
    } else {
        Ok(rc as usize)
    }
}

/// An all-zero `struct flock`, to fill in.
pub fn empty_flock() -> libc::flock {
    // SAFETY: an all-zero flock is a valid value of this plain C struct.
    unsafe { std::mem::zeroed() }
}

/// An offset that must fit in off_t.
pub fn off(v: u64) -> SysResult<libc::off_t> {
    libc::off_t::try_from(v).map_err(|_| libc::EINVAL)
}

/// The path `/proc/self/fd/N` of one of our descriptors: how the server
/// names an inode to the calls that take only a path (xattrs, truncate).
pub fn proc_path(fd: BorrowedFd<'_>) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
}

/// The name `N` of a descriptor inside `/proc/self/fd`.
pub fn fd_name(fd: BorrowedFd<'_>) -> CString {
    CString::new(fd.as_raw_fd().to_string()).unwrap_or_default()
}

/// openat(2). O_CLOEXEC is always added.
pub fn openat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> SysResult<OwnedFd> {
    loop {
        // SAFETY: `name` is a valid NUL-terminated string that outlives the
        // call; `dir` is a live descriptor.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                flags | libc::O_CLOEXEC,
                libc::c_uint::from(mode),
            )
        };
        if fd >= 0 {
            // SAFETY: openat returned a new descriptor that nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let e = errno();
        if e != libc::EINTR {
            return Err(e);
        }
    }
}

/// open(2) of an absolute path (the server's own, such as /proc/self/fd).
pub fn open_path(path: &CStr, flags: libc::c_int) -> SysResult<OwnedFd> {
    // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
    let fd = check(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) })?;
    // SAFETY: open returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// fstatat(fd, name, AT_SYMLINK_NOFOLLOW), or the descriptor itself when
/// `name` is empty (AT_EMPTY_PATH: works on O_PATH descriptors too).
pub fn stat_at(dir: BorrowedFd<'_>, name: &CStr) -> SysResult<libc::stat> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let mut flags = libc::AT_SYMLINK_NOFOLLOW;
    if name.is_empty() {
        flags |= libc::AT_EMPTY_PATH;
    }
    // SAFETY: `name` is a valid C string and `st` a writable stat, both
    // outliving the call.
    check(unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, flags) })?;
    Ok(st)
}

/// The descriptor's own attributes.
pub fn fstat(fd: BorrowedFd<'_>) -> SysResult<libc::stat> {
    stat_at(fd, c"")
}

/// readlinkat(fd, "") of an O_PATH descriptor of a symbolic link.
pub fn readlink(fd: BorrowedFd<'_>) -> SysResult<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: the buffer is `buf.len()` writable bytes; the empty name is a
    // valid C string.
    let n = check_size(unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })?;
    if n >= buf.len() {
        return Err(libc::ENAMETOOLONG);
    }
    buf.truncate(n);
    Ok(buf)
}

pub fn mknodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32, rdev: u64) -> SysResult<()> {
    // SAFETY: `name` is a valid C string that outlives the call.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, rdev) }).map(drop)
}

pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> SysResult<()> {
    // SAFETY: `name` is a valid C string that outlives the call.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> SysResult<()> {
    // SAFETY: `name` is a valid C string that outlives the call.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

pub fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> SysResult<()> {
    // SAFETY: both strings are valid C strings that outlive the call.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

pub fn renameat2(
    dir: BorrowedFd<'_>,
    name: &CStr,
    new_dir: BorrowedFd<'_>,
    new_name: &CStr,
    flags: u32,
) -> SysResult<()> {
    // SAFETY: both names are valid C strings that outlive the call; the
    // descriptors are live.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            dir.as_raw_fd(),
            name.as_ptr(),
            new_dir.as_raw_fd(),
            new_name.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// linkat(proc_fd_dir, "N", new_dir, new_name, AT_SYMLINK_FOLLOW): a new
/// name for the inode behind our descriptor N. Through /proc this needs no
/// CAP_DAC_READ_SEARCH (which AT_EMPTY_PATH would), and the kernel checks
/// the user's rights (protected_hardlinks, write access to `new_dir`).
pub fn link_fd(
    proc_fd_dir: BorrowedFd<'_>,
    fd: BorrowedFd<'_>,
    new_dir: BorrowedFd<'_>,
    new_name: &CStr,
) -> SysResult<()> {
    let n = fd_name(fd);
    // SAFETY: both names are valid C strings that outlive the call.
    check(unsafe {
        libc::linkat(
            proc_fd_dir.as_raw_fd(),
            n.as_ptr(),
            new_dir.as_raw_fd(),
            new_name.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })
    .map(drop)
}

/// fchmodat2's number: 452 on every architecture (calls added since 5.1
/// share one numbering), which not every target of the libc crate names.
const SYS_FCHMODAT2: libc::c_long = 452;

/// fchmodat2(fd, "", mode, AT_EMPTY_PATH): works on O_PATH descriptors.
pub fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> SysResult<()> {
    // SAFETY: the empty name is a valid C string; no memory is written.
    check_long(unsafe {
        libc::syscall(
            SYS_FCHMODAT2,
            fd.as_raw_fd(),
            c"".as_ptr(),
            mode,
            libc::AT_EMPTY_PATH,
        )
    })
    .map(drop)
}

/// fchownat(fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW); u32::MAX
/// leaves an id unchanged.
pub fn chown_fd(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> SysResult<()> {
    // SAFETY: the empty name is a valid C string; no memory is written.
    check(unsafe {
        libc::fchownat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            uid,
            gid,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// utimensat(fd, "", times, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW).
pub fn utimens_fd(fd: BorrowedFd<'_>, times: &[libc::timespec; 2]) -> SysResult<()> {
    // SAFETY: `times` points to two timespecs and the empty name is a valid C
    // string, both outliving the call.
    check(unsafe {
        libc::utimensat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            times.as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

pub fn truncate_path(path: &CStr, size: u64) -> SysResult<()> {
    let size = off(size)?;
    // SAFETY: `path` is a valid C string that outlives the call.
    check(unsafe { libc::truncate(path.as_ptr(), size) }).map(drop)
}

pub fn ftruncate(fd: BorrowedFd<'_>, size: u64) -> SysResult<()> {
    let size = off(size)?;
    // SAFETY: ftruncate takes integers only.
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), size) }).map(drop)
}

/// fcntl(F_GETFL): the open flags of a descriptor.
pub fn get_fl(fd: BorrowedFd<'_>) -> SysResult<libc::c_int> {
    // SAFETY: F_GETFL takes no argument and touches no memory.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })
}

/// fcntl(F_SETFL).
pub fn set_fl(fd: BorrowedFd<'_>, flags: libc::c_int) -> SysResult<()> {
    // SAFETY: F_SETFL takes an integer and touches no memory.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags) }).map(drop)
}

/// pread(2) into `buf` until it is full or the file ends.
pub fn pread_full(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> SysResult<usize> {
    let mut done = 0;
    while done < buf.len() {
        let at = off(offset.saturating_add(done as u64))?;
        let rest = &mut buf[done..];
        // SAFETY: `rest` is `rest.len()` writable bytes.
        let n = unsafe { libc::pread(fd.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len(), at) };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            if done > 0 {
                break;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        done += n as usize;
    }
    Ok(done)
}

/// openat2(2) with `RESOLVE_CACHED`: opens `name` in `dir` only if the
/// kernel can do it from its caches alone; EAGAIN if it would have to ask
/// the file system (read a directory from disk). For single names.
pub fn openat_cached(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> SysResult<OwnedFd> {
    // SAFETY: an all-zero open_how is a valid value (flags, mode, resolve).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_CACHED;
    loop {
        // SAFETY: `name` is NUL-terminated and `how` a valid open_how; both
        // outlive the call, whose size argument is `how`'s.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                name.as_ptr(),
                &raw const how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // SAFETY: openat2 returned a new descriptor that nothing else
            // owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) });
        }
        let e = errno();
        if e != libc::EINTR {
            return Err(e);
        }
    }
}

/// pread(2) with `RWF_NOWAIT`: reads what is in the page cache at once.
/// EAGAIN if the read would wait for the disk; a read shorter than `buf`
/// may mean either the end of the file or pages not cached.
pub fn pread_nowait(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> SysResult<usize> {
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    loop {
        // SAFETY: one iovec over `buf`'s writable bytes, both live for the
        // call.
        let n = unsafe {
            libc::preadv2(
                fd.as_raw_fd(),
                &raw const iov,
                1,
                off(offset)?,
                libc::RWF_NOWAIT,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = errno();
        if e != libc::EINTR {
            return Err(e);
        }
    }
}

/// pwrite(2) of all of `data` (on an O_APPEND descriptor Linux appends,
/// whatever the offset). A failure after some bytes were written answers
/// the count written.
pub fn pwrite_all(fd: BorrowedFd<'_>, data: &[u8], offset: u64) -> SysResult<usize> {
    let mut done = 0;
    while done < data.len() {
        let at = off(offset.saturating_add(done as u64))?;
        let rest = &data[done..];
        // SAFETY: `rest` is `rest.len()` readable bytes.
        let n = unsafe { libc::pwrite(fd.as_raw_fd(), rest.as_ptr().cast(), rest.len(), at) };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            if done > 0 {
                break;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        done += n as usize;
    }
    Ok(done)
}

pub fn fsync(fd: BorrowedFd<'_>, datasync: bool) -> SysResult<()> {
    // SAFETY: fsync and fdatasync take a descriptor only.
    check(unsafe {
        if datasync {
            libc::fdatasync(fd.as_raw_fd())
        } else {
            libc::fsync(fd.as_raw_fd())
        }
    })
    .map(drop)
}

pub fn lseek(fd: BorrowedFd<'_>, offset: i64, whence: libc::c_int) -> SysResult<u64> {
    // SAFETY: lseek takes integers only.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), offset, whence) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r as u64)
    }
}

/// getdents64(2) into `buf`; the number of bytes filled (0 at the end).
pub fn getdents64(fd: BorrowedFd<'_>, buf: &mut [u8]) -> SysResult<usize> {
    // SAFETY: `buf` is `buf.len()` writable bytes.
    let n = unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            fd.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    check_long(n).map(|n| n as usize)
}

/// fstatfs(2) (allowed on O_PATH descriptors).
pub fn fstatfs(fd: BorrowedFd<'_>) -> SysResult<libc::statfs> {
    // SAFETY: an all-zero statfs is a valid value of this plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a writable statfs that outlives the call.
    check(unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// faccessat2(fd, "", mask, AT_EACCESS | AT_EMPTY_PATH): the check uses the
/// thread's fsuid, fsgid and groups (plain access(2) would use the real
/// uid, root's).
pub fn access_fd(fd: BorrowedFd<'_>, mask: libc::c_int) -> SysResult<()> {
    // SAFETY: the empty name is a valid C string; no memory is written.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_faccessat2,
            fd.as_raw_fd(),
            c"".as_ptr(),
            mask,
            libc::AT_EACCESS | libc::AT_EMPTY_PATH,
        )
    })
    .map(drop)
}

/// fcntl(F_OFD_SETLK / F_OFD_SETLKW / F_OFD_GETLK) with `fl`, which a
/// GETLK overwrites.
pub fn ofd_lock(fd: BorrowedFd<'_>, cmd: libc::c_int, fl: &mut libc::flock) -> SysResult<()> {
    // SAFETY: `fl` is a valid, writable flock that outlives the call.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), cmd, fl as *mut libc::flock) }).map(drop)
}

pub fn flock(fd: BorrowedFd<'_>, op: libc::c_int) -> SysResult<()> {
    // SAFETY: flock takes integers only.
    check(unsafe { libc::flock(fd.as_raw_fd(), op) }).map(drop)
}

pub fn fallocate(fd: BorrowedFd<'_>, mode: libc::c_int, offset: u64, len: u64) -> SysResult<()> {
    let (offset, len) = (off(offset)?, off(len)?);
    // SAFETY: fallocate takes integers only.
    check(unsafe { libc::fallocate(fd.as_raw_fd(), mode, offset, len) }).map(drop)
}

pub fn copy_file_range(
    fd_in: BorrowedFd<'_>,
    off_in: u64,
    fd_out: BorrowedFd<'_>,
    off_out: u64,
    len: usize,
) -> SysResult<usize> {
    let mut off_in = off(off_in)?;
    let mut off_out = off(off_out)?;
    // SAFETY: both offsets are writable off_t values that outlive the call.
    check_size(unsafe {
        libc::copy_file_range(
            fd_in.as_raw_fd(),
            &mut off_in,
            fd_out.as_raw_fd(),
            &mut off_out,
            len,
            0,
        )
    })
}

/// getxattr(2) on `path`; with an empty `buf`, the value's size.
pub fn getxattr(path: &CStr, name: &CStr, buf: &mut [u8]) -> SysResult<usize> {
    // SAFETY: both strings are valid C strings and `buf` is `buf.len()`
    // writable bytes (a null pointer is fine for a size of 0).
    check_size(unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })
}

/// listxattr(2) on `path`; with an empty `buf`, the list's size.
pub fn listxattr(path: &CStr, buf: &mut [u8]) -> SysResult<usize> {
    // SAFETY: `path` is a valid C string and `buf` is `buf.len()` writable
    // bytes.
    check_size(unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })
}

pub fn setxattr(path: &CStr, name: &CStr, value: &[u8], flags: libc::c_int) -> SysResult<()> {
    // SAFETY: both strings are valid C strings and `value` is `value.len()`
    // readable bytes.
    check(unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(drop)
}

pub fn removexattr(path: &CStr, name: &CStr) -> SysResult<()> {
    // SAFETY: both strings are valid C strings that outlive the call.
    check(unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) }).map(drop)
}

/// `struct file_handle` with room for MAX_HANDLE_SZ bytes.
#[repr(C)]
struct RawHandle {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; MAX_HANDLE_SZ],
}

const MAX_HANDLE_SZ: usize = 128;
const _: () = assert!(std::mem::size_of::<RawHandle>() == 8 + MAX_HANDLE_SZ);

/// A kernel file handle: names an inode of one file system for as long as
/// it exists, without holding it open.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileHandle {
    typ: i32,
    bytes: Vec<u8>,
}

impl FileHandle {
    /// A handle of type `typ` whose opaque bytes are `bytes` (as the kernel
    /// reported them, for example in a fanotify event).
    pub fn new(typ: i32, bytes: Vec<u8>) -> FileHandle {
        FileHandle { typ, bytes }
    }
}

/// name_to_handle_at(fd, "", AT_EMPTY_PATH): the descriptor's inode as a
/// file handle, and the id of the mount it was found on. Fails (EOPNOTSUPP)
/// on file systems that cannot give handles.
pub fn name_to_handle(fd: BorrowedFd<'_>) -> SysResult<(FileHandle, i32)> {
    let mut h = RawHandle {
        handle_bytes: MAX_HANDLE_SZ as u32,
        handle_type: 0,
        f_handle: [0; MAX_HANDLE_SZ],
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `h` is a file_handle whose handle_bytes says how much room
    // follows; `mount_id` and the empty name are valid for the call.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            fd.as_raw_fd(),
            c"".as_ptr(),
            &raw mut h,
            &raw mut mount_id,
            libc::AT_EMPTY_PATH,
        )
    })?;
    let len = (h.handle_bytes as usize).min(MAX_HANDLE_SZ);
    Ok((
        FileHandle {
            typ: h.handle_type,
            bytes: h.f_handle[..len].to_vec(),
        },
        mount_id,
    ))
}

/// open_by_handle_at(2): opens the inode a handle names, on the file system
/// of `mount` (any descriptor on the mount the handle came from). Needs
/// CAP_DAC_READ_SEARCH. O_CLOEXEC is always added.
pub fn open_by_handle(
    mount: BorrowedFd<'_>,
    handle: &FileHandle,
    flags: libc::c_int,
) -> SysResult<OwnedFd> {
    let mut h = RawHandle {
        handle_bytes: handle.bytes.len() as u32,
        handle_type: handle.typ,
        f_handle: [0; MAX_HANDLE_SZ],
    };
    let len = handle.bytes.len().min(MAX_HANDLE_SZ);
    h.f_handle[..len].copy_from_slice(&handle.bytes[..len]);
    // SAFETY: `h` is a valid file_handle that outlives the call; the kernel
    // only reads it.
    let fd = check_long(unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount.as_raw_fd(),
            &raw mut h,
            flags | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: open_by_handle_at returned a new descriptor that nothing else
    // owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Raises the soft limit of open descriptors to the hard one: the server
/// holds one per known node and open handle. Returns the new limit.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a writable rlimit that outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `want` is a valid rlimit that outlives the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            return want.rlim_cur;
        }
    }
    lim.rlim_cur
}
