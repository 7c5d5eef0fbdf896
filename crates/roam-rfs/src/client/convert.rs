//! Between the protocol's values and fuser's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo, TimeOrNow};
use roam_proto::fs::{Attr, FsReply, Time, TimeSet};

/// The kernel's view of a file's attributes; `None` if the server sent a
/// file type no file can have.
pub(crate) fn file_attr(a: &Attr) -> Option<FileAttr> {
    Some(FileAttr {
        ino: INodeNo(a.node),
        size: a.size,
        blocks: a.blocks,
        atime: system_time(a.atime),
        mtime: system_time(a.mtime),
        ctime: system_time(a.ctime),
        crtime: UNIX_EPOCH,
        kind: file_type(a.mode)?,
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize,
        flags: 0,
    })
}

/// The type bits of `mode` (S_IFREG...) as fuser's file type.
pub(crate) fn file_type(mode: u32) -> Option<FileType> {
    Some(match mode & libc::S_IFMT {
        libc::S_IFREG => FileType::RegularFile,
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        _ => return None,
    })
}

/// A directory entry's `d_type` as fuser's file type. fuser has no
/// "unknown": an entry of unknown type (DT_UNKNOWN, which the common local
/// file systems never give) is shown as a regular file.
pub(crate) fn dirent_type(d_type: u8) -> FileType {
    match d_type {
        libc::DT_DIR => FileType::Directory,
        libc::DT_LNK => FileType::Symlink,
        libc::DT_CHR => FileType::CharDevice,
        libc::DT_BLK => FileType::BlockDevice,
        libc::DT_FIFO => FileType::NamedPipe,
        libc::DT_SOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

/// A protocol time as a `SystemTime` (times before 1970 included; a time
/// out of range becomes the epoch).
pub(crate) fn system_time(t: Time) -> SystemTime {
    let nanos = t.nanos.min(999_999_999);
    let at = if t.secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(t.secs as u64, nanos))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(t.secs.unsigned_abs()))
            .and_then(|s| s.checked_add(Duration::from_nanos(nanos.into())))
    };
    at.unwrap_or(UNIX_EPOCH)
}

/// A `SystemTime` as a protocol time.
pub(crate) fn wire_time(t: SystemTime) -> Time {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Time {
            secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: d.subsec_nanos(),
        },
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            if d.subsec_nanos() == 0 {
                Time {
                    secs: -secs,
                    nanos: 0,
                }
            } else {
                Time {
                    secs: -secs - 1,
                    nanos: 1_000_000_000 - d.subsec_nanos(),
                }
            }
        }
    }
}

/// `setattr`'s time as the protocol's.
pub(crate) fn time_set(t: TimeOrNow) -> TimeSet {
    match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(t) => TimeSet::At(wire_time(t)),
    }
}

/// The errno to give the kernel for a reply that is not the one `what`
/// expects: the server's error, or EIO (logged) for a reply of the wrong
/// kind.
pub(crate) fn errno(what: &str, reply: &FsReply) -> Errno {
    match reply {
        FsReply::Err(e) => errno_of(*e),
        other => {
            tracing::warn!(
                "a {what} got a reply of the wrong kind: {}",
                reply_kind(other)
            );
            Errno::EIO
        }
    }
}

/// An errno from the server; anything outside Linux's errno range is EIO.
pub(crate) fn errno_of(e: i32) -> Errno {
    if (1..4096).contains(&e) {
        Errno::from_i32(e)
    } else {
        tracing::warn!("the home sent a bad errno ({e}): EIO");
        Errno::EIO
    }
}

fn reply_kind(r: &FsReply) -> &'static str {
    match r {
        FsReply::Err(_) => "Err",
        FsReply::Ok => "Ok",
        FsReply::Entry(_) => "Entry",
        FsReply::Attr(_) => "Attr",
        FsReply::Data(_) => "Data",
        FsReply::Size(_) => "Size",
        FsReply::Written(_) => "Written",
        FsReply::Opened { .. } => "Opened",
        FsReply::Created { .. } => "Created",
        FsReply::Dir(_) => "Dir",
        FsReply::StatFs(_) => "StatFs",
        FsReply::Lock(_) => "Lock",
        FsReply::Offset(_) => "Offset",
    }
}

/// Whether `name` may be a directory entry's name (one path component).
pub(crate) fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= roam_proto::fs::MAX_NAME
        && !name.contains(&b'/')
        && !name.contains(&0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_before_and_after_the_epoch() {
        for t in [
            Time { secs: 0, nanos: 0 },
            Time {
                secs: 1_700_000_000,
                nanos: 123,
            },
            Time {
                secs: -1,
                nanos: 500_000_000,
            },
            Time {
                secs: -100,
                nanos: 0,
            },
        ] {
            assert_eq!(wire_time(system_time(t)), t);
        }
    }

    #[test]
    fn bad_values_do_not_panic() {
        let _ = system_time(Time {
            secs: i64::MAX,
            nanos: u32::MAX,
        });
        let _ = system_time(Time {
            secs: i64::MIN,
            nanos: u32::MAX,
        });
        assert!(file_attr(&Attr {
            mode: 0o170777,
            ..Default::default()
        })
        .is_none());
        assert_eq!(errno_of(0), Errno::EIO);
        assert_eq!(errno_of(-5), Errno::EIO);
        assert_eq!(errno_of(100_000), Errno::EIO);
        assert_eq!(errno_of(libc::ENOENT), Errno::ENOENT);
        assert_eq!(errno("read", &FsReply::Ok), Errno::EIO);
    }

    #[test]
    fn attrs_keep_type_and_permission_bits() {
        let a = file_attr(&Attr {
            node: 3,
            mode: libc::S_IFDIR | 0o1755,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(a.kind, FileType::Directory);
        assert_eq!(a.perm, 0o1755);
        assert_eq!(a.ino, INodeNo(3));
        assert!(valid_name(b"a b"));
        assert!(!valid_name(b"a/b"));
        assert!(!valid_name(b""));
        assert!(!valid_name(&[b'x'; 256]));
    }
}
