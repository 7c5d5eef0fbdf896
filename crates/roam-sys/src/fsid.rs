//! Acting as a user on one thread: the file-system identity (fsuid, fsgid,
//! supplementary groups, capabilities) and the umask that the kernel checks
//! file access against.
//!
//! The home's file server is root and serves many users from a pool of
//! threads. Each request runs on one thread as the user who made it:
//! [`as_user`] (or an [`FsIdentity`] guard) switches that thread, and only
//! it, and switches back afterwards. It uses the raw system calls because
//! they are per-thread in the kernel; glibc's `setgroups` and `setfsuid`
//! wrappers would change every thread of the process.
//!
//! For a user other than root the thread also drops all its effective
//! capabilities while switched: the kernel clears the file-system ones
//! (CAP_DAC_OVERRIDE, CAP_CHOWN, CAP_FOWNER...) itself when the fsuid leaves
//! 0, but others such as CAP_SYS_ADMIN (trusted.* attributes) and
//! CAP_SETFCAP (file capabilities) would still let the user do what only
//! root may. Root callers keep root's rights.

use std::cell::Cell;
use std::io;
use std::marker::PhantomData;

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAP_VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

/// `struct __user_cap_data_struct` (one of the two words).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const _: () = assert!(std::mem::size_of::<CapHeader>() == 8);
const _: () = assert!(std::mem::size_of::<CapData>() == 12);

/// The largest supplementary group list the kernel takes (NGROUPS_MAX).
const NGROUPS_MAX: usize = 65536;

/// The thread's capability sets.
fn capget() -> io::Result<[CapData; 2]> {
    let mut hdr = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: `hdr` is a valid header and `data` has room for the two words
    // that version 3 writes.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &raw mut hdr, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(data)
}

/// Sets the calling thread's capability sets (pid 0: this thread only).
fn capset(data: &[CapData; 2]) -> io::Result<()> {
    let mut hdr = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    // SAFETY: `hdr` is a valid header and `data` holds the two words that
    // version 3 reads; the kernel does not keep either pointer.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &raw mut hdr, data.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The calling thread's supplementary groups (raw getgroups, per thread).
fn getgroups() -> io::Result<Vec<libc::gid_t>> {
    loop {
        // SAFETY: a size of 0 asks only for the count and writes nothing.
        let n =
            unsafe { libc::syscall(libc::SYS_getgroups, 0, std::ptr::null_mut::<libc::gid_t>()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut groups: Vec<libc::gid_t> = vec![0; n as usize];
        // SAFETY: `groups` has room for `n` gids, the size we pass.
        let got = unsafe { libc::syscall(libc::SYS_getgroups, n, groups.as_mut_ptr()) };
        if got >= 0 {
            groups.truncate(got as usize);
            return Ok(groups);
        }
        let err = io::Error::last_os_error();
        // The list grew between the two calls (only another setgroups on
        // this thread could do that): ask again.
        if err.raw_os_error() != Some(libc::EINVAL) {
            return Err(err);
        }
    }
}

/// Sets the calling thread's supplementary groups (raw setgroups, which the
/// kernel applies to this thread only).
fn setgroups(groups: &[libc::gid_t]) -> io::Result<()> {
    if groups.len() > NGROUPS_MAX {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: the pointer and length describe `groups`, which the kernel
    // only reads during the call.
    let rc = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// setfsuid (raw, this thread), checked: setfsuid reports no errors, so
/// the new value is read back (setfsuid(-1) changes nothing and returns the
/// current one).
fn set_fsuid(uid: u32) -> io::Result<u32> {
    // SAFETY: setfsuid takes an integer and touches no memory of ours.
    let old = unsafe { libc::syscall(libc::SYS_setfsuid, uid) } as u32;
    if fsuid() != uid {
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    Ok(old)
}

/// setfsgid (raw, this thread), checked like [`set_fsuid`].
fn set_fsgid(gid: u32) -> io::Result<u32> {
    // SAFETY: setfsgid takes an integer and touches no memory of ours.
    let old = unsafe { libc::syscall(libc::SYS_setfsgid, gid) } as u32;
    if fsgid() != gid {
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    Ok(old)
}

/// Whether two group lists hold the same groups (order and repeats aside).
fn same_set(a: &[libc::gid_t], b: &[u32]) -> bool {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_unstable();
    a.dedup();
    b.sort_unstable();
    b.dedup();
    a == b
}

/// The calling thread's fsuid.
pub fn fsuid() -> u32 {
    // SAFETY: setfsuid(-1) is refused by the kernel (an invalid id), so it
    // changes nothing and returns the current fsuid.
    unsafe { libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32 }
}

/// The calling thread's fsgid.
pub fn fsgid() -> u32 {
    // SAFETY: setfsgid(-1) is refused by the kernel (an invalid id), so it
    // changes nothing and returns the current fsgid.
    unsafe { libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32 }
}

/// The calling thread's supplementary groups.
pub fn groups() -> io::Result<Vec<u32>> {
    getgroups()
}

/// The calling thread's effective capabilities, as a 64-bit mask.
pub fn effective_caps() -> io::Result<u64> {
    let data = capget()?;
    Ok(u64::from(data[0].effective) | (u64::from(data[1].effective) << 32))
}

/// The calling thread acting as a user: it restores the thread's previous
/// identity when dropped. Bound to its thread (neither `Send` nor `Sync`).
#[must_use = "the identity is restored when the guard is dropped"]
pub struct FsIdentity {
    /// The fsuid and fsgid to put back.
    uid: u32,
    gid: u32,
    /// The groups to put back (None: they were not changed).
    groups: Option<Vec<libc::gid_t>>,
    /// The capability sets to put back (None: they were not changed).
    caps: Option<[CapData; 2]>,
    /// The thread already was the user: nothing to undo.
    unchanged: bool,
    _thread: PhantomData<*const ()>,
}

impl FsIdentity {
    /// Switches the calling thread to fsuid `uid`, fsgid `gid` and the
    /// supplementary `groups`; unless `uid` is 0, also drops its effective
    /// capabilities. Needs CAP_SETUID and CAP_SETGID (the daemon is root).
    /// On error the thread is left as it was.
    ///
    /// A thread that already is that user (and, unless root, has no
    /// effective capabilities) is left alone: so a daemon that is not root
    /// can still serve its own user.
    pub fn enter(uid: u32, gid: u32, groups: &[u32]) -> io::Result<FsIdentity> {
        let old_groups = getgroups()?;
        let saved_caps = capget()?;
        let no_caps = saved_caps.iter().all(|w| w.effective == 0);
        if fsuid() == uid
            && fsgid() == gid
            && same_set(&old_groups, groups)
            && (uid == 0 || no_caps)
        {
            return Ok(FsIdentity {
                uid,
                gid,
                groups: None,
                caps: None,
                unchanged: true,
                _thread: PhantomData,
            });
        }
        let caps = (uid != 0).then_some(saved_caps);
        // Changing credentials costs about a microsecond a call here:
        // groups that are already right stay.
        let old_groups = if same_set(&old_groups, groups) {
            None
        } else {
            setgroups(groups)?;
            Some(old_groups)
        };
        let old_gid = match set_fsgid(gid) {
            Ok(old) => old,
            Err(e) => {
                if let Some(g) = &old_groups {
                    let _ = setgroups(g);
                }
                return Err(e);
            }
        };
        let mut guard = FsIdentity {
            uid: fsuid(),
            gid: old_gid,
            groups: old_groups,
            caps: None,
            unchanged: false,
            _thread: PhantomData,
        };
        // From here on, dropping `guard` undoes what was done.
        set_fsuid(uid)?;
        if let Some(saved) = caps {
            let mut none = saved;
            for word in &mut none {
                word.effective = 0;
            }
            guard.caps = Some(saved);
            capset(&none)?;
        }
        Ok(guard)
    }

    fn restore(&self) -> io::Result<()> {
        if self.unchanged {
            return Ok(());
        }
        // Capabilities first: setgroups needs CAP_SETGID back.
        if let Some(caps) = &self.caps {
            capset(caps)?;
        }
        set_fsuid(self.uid)?;
        set_fsgid(self.gid)?;
        match &self.groups {
            Some(g) => setgroups(g),
            None => Ok(()),
        }
    }
}

impl Drop for FsIdentity {
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            // A thread that cannot become root again would serve the next
            // request with a user's rights, or the user's request with
            // root's: neither is acceptable.
            eprintln!("roam: cannot restore the thread's file-system identity: {e}");
            std::process::abort();
        }
    }
}

/// Runs `f` on the calling thread as fsuid `uid`, fsgid `gid` with the
/// supplementary `groups` (see [`FsIdentity::enter`]), then switches back,
/// also if `f` panics.
pub fn as_user<R>(uid: u32, gid: u32, groups: &[u32], f: impl FnOnce() -> R) -> io::Result<R> {
    let guard = FsIdentity::enter(uid, gid, groups)?;
    let result = f();
    drop(guard);
    Ok(result)
}

/// Runs `f` with capability `cap` (a CAP_* number) in the calling thread's
/// effective set, then puts the set back: for a server thread acting as a
/// user that needs one privileged step that grants the user nothing (such
/// as open_by_handle_at with CAP_DAC_READ_SEARCH to find an inode again).
/// The capability must be in the thread's permitted set (EPERM otherwise).
pub fn with_capability<R>(cap: u32, f: impl FnOnce() -> R) -> io::Result<R> {
    if cap >= 64 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let (word, bit) = ((cap / 32) as usize, 1u32 << (cap % 32));
    let saved = capget()?;
    if saved[word].effective & bit != 0 {
        return Ok(f());
    }
    if saved[word].permitted & bit == 0 {
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    let mut raised = saved;
    raised[word].effective |= bit;
    capset(&raised)?;
    struct Restore([CapData; 2]);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Err(e) = capset(&self.0) {
                eprintln!("roam: cannot drop a capability again: {e}");
                std::process::abort();
            }
        }
    }
    let _restore = Restore(saved);
    Ok(f())
}

thread_local! {
    /// Whether this thread has its own fs_struct (cwd, root, umask).
    static OWN_FS: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with the calling thread's umask set to `mask`, then puts the
/// old one back.
///
/// The umask belongs to the process, so the first call on a thread gives
/// that thread a private copy of it (unshare(CLONE_FS)), together with the
/// working directory and root directory: later chdir or chroot calls by
/// other threads do not reach a thread that used this. Meant for threads
/// that serve file requests.
pub fn with_umask<R>(mask: u32, f: impl FnOnce() -> R) -> io::Result<R> {
    if !OWN_FS.get() {
        // SAFETY: unshare takes a flag word and touches no memory of ours;
        // CLONE_FS alone is allowed in a multi-threaded process and affects
        // the calling thread only.
        if unsafe { libc::unshare(libc::CLONE_FS) } != 0 {
            return Err(io::Error::last_os_error());
        }
        OWN_FS.set(true);
    }
    // SAFETY: umask takes an integer and cannot fail; after the unshare it
    // changes this thread's umask only.
    let old = unsafe { libc::umask(mask & 0o777) };
    struct Restore(libc::mode_t);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: as above.
            unsafe { libc::umask(self.0) };
        }
    }
    let _restore = Restore(old);
    Ok(f())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn require_root() {
        // SAFETY: geteuid cannot fail and touches no memory.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "the fsid tests need root (they switch file-system identities)"
        );
    }

    /// A 1777 directory under /var/tmp, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = PathBuf::from(format!(
                "/var/tmp/roam-fsid-{tag}-{}-{n}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir(&path).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o1777)).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn fsid_switch_and_restore() {
        require_root();
        let before_groups = groups().unwrap();
        let before_caps = effective_caps().unwrap();
        // A thread started before the switch (threads inherit their
        // creator's credentials) keeps root's identity during it.
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            go_rx.recv().unwrap();
            (fsuid(), fsgid(), effective_caps().unwrap())
        });
        as_user(65534, 65533, &[65532, 65531], || {
            assert_eq!(fsuid(), 65534);
            assert_eq!(fsgid(), 65533);
            assert_eq!(groups().unwrap(), vec![65531, 65532]); // the kernel sorts them
            assert_eq!(effective_caps().unwrap(), 0);
            go_tx.send(()).unwrap();
            let (uid, gid, caps) = other.join().unwrap();
            assert_eq!((uid, gid, caps), (0, 0, before_caps));
        })
        .unwrap();
        assert_eq!(fsuid(), 0);
        assert_eq!(fsgid(), 0);
        assert_eq!(groups().unwrap(), before_groups);
        assert_eq!(effective_caps().unwrap(), before_caps);
    }

    #[test]
    fn fsid_with_capability() {
        require_root();
        const CAP_DAC_READ_SEARCH: u32 = 2;
        as_user(65534, 65534, &[], || {
            assert_eq!(effective_caps().unwrap(), 0);
            let inside = with_capability(CAP_DAC_READ_SEARCH, || effective_caps().unwrap());
            assert_eq!(inside.unwrap(), 1 << CAP_DAC_READ_SEARCH);
            assert_eq!(effective_caps().unwrap(), 0);
        })
        .unwrap();
        // Already effective: nothing changes.
        let before = effective_caps().unwrap();
        with_capability(CAP_DAC_READ_SEARCH, || ()).unwrap();
        assert_eq!(effective_caps().unwrap(), before);
    }

    #[test]
    fn fsid_root_keeps_capabilities() {
        require_root();
        let before = effective_caps().unwrap();
        as_user(0, 0, &[], || assert_eq!(effective_caps().unwrap(), before)).unwrap();
    }

    #[test]
    fn fsid_restored_after_panic() {
        require_root();
        let r = std::panic::catch_unwind(|| {
            as_user(65534, 65534, &[], || panic!("inside")).unwrap();
        });
        assert!(r.is_err());
        assert_eq!(fsuid(), 0);
        assert_eq!(fsgid(), 0);
    }

    #[test]
    fn fsid_files_belong_to_the_switched_user() {
        require_root();
        let dir = TempDir::new("own");
        let secret = dir.0.join("secret");
        std::fs::write(&secret, b"root only").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let created = dir.0.join("mine");
        as_user(65534, 65534, &[], || {
            std::fs::write(&created, b"x").unwrap();
            let err = std::fs::read(&secret).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EACCES));
        })
        .unwrap();
        let meta = std::fs::metadata(&created).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
        // Root can read it again.
        assert_eq!(std::fs::read(&secret).unwrap(), b"root only");
    }

    #[test]
    fn fsid_groups_grant_access() {
        require_root();
        let dir = TempDir::new("groups");
        let file = dir.0.join("g");
        std::fs::write(&file, b"group").unwrap();
        std::os::unix::fs::chown(&file, Some(0), Some(4242)).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        as_user(65534, 65534, &[4242], || {
            assert_eq!(std::fs::read(&file).unwrap(), b"group");
        })
        .unwrap();
        as_user(65534, 65534, &[], || {
            assert!(std::fs::read(&file).is_err());
        })
        .unwrap();
    }

    #[test]
    fn fsid_umask_per_thread() {
        require_root();
        let dir = TempDir::new("umask");
        let path = dir.0.join("masked");
        with_umask(0o027, || {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o666)
                .open(&path)
                .unwrap();
        })
        .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }
}
