//! Pseudo-terminals, terminal modes (RFC 4254 section 8 encoding), raw mode.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A new pseudo-terminal: (master, slave), both CLOEXEC and neither our
/// controlling terminal, with the given window size.
pub fn open_pty(rows: u16, cols: u16) -> io::Result<(OwnedFd, OwnedFd)> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: posix_openpt returns a new fd or -1.
    let fd = cvt(unsafe { libc::posix_openpt(flags) })?;
    // SAFETY: the fd is new and owned by nobody else.
    let master = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: grantpt and unlockpt on the master we just opened.
    unsafe {
        cvt(libc::grantpt(fd))?;
        cvt(libc::unlockpt(fd))?;
    }
    // TIOCGPTPEER opens the slave through the master (no path lookup, so
    // it works whatever /dev/pts this mount namespace shows).
    // SAFETY: the ioctl takes open flags as its argument and returns a new fd.
    let slave = match cvt(unsafe { libc::ioctl(fd, libc::TIOCGPTPEER, flags) }) {
        // SAFETY: the fd is new and owned by nobody else.
        Ok(s) => unsafe { OwnedFd::from_raw_fd(s) },
        Err(_) => open_slave_by_name(fd, flags)?,
    };
    set_winsize(master.as_fd(), rows, cols)?;
    Ok((master, slave))
}

/// The slave of `master`, opened anew (TIOCGPTPEER): not our controlling
/// terminal, non-blocking.
pub fn peer(master: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC | libc::O_NONBLOCK;
    // SAFETY: the ioctl takes open flags as its argument and returns a new fd.
    let fd = cvt(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) })?;
    // SAFETY: the fd is new and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The most input [`take_input`] takes back: far more than a line
/// discipline holds (4 KiB).
pub const MAX_TAKEN_INPUT: usize = 64 << 10;

/// Takes back the input waiting in `master`'s line discipline, unread by
/// the program on the slave: complete lines and, in canonical mode, the
/// line being typed (the kernel makes it readable when canonical mode is
/// turned off). The modes are as they were after. The program must be
/// stopped meanwhile, or it could see the modes change.
pub fn take_input(master: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let slave = peer(master)?;
    let fd = slave.as_raw_fd();
    let before = get_termios(fd)?;
    let mut t = before;
    t.c_lflag &= !(libc::ICANON | libc::ECHO);
    t.c_cc[libc::VMIN] = 0;
    t.c_cc[libc::VTIME] = 0;
    set_termios(fd, libc::TCSANOW, &t)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let read = loop {
        // SAFETY: read writes at most `buf.len()` bytes into `buf`.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        match n {
            0 => break Ok(()),
            n if n > 0 => {
                out.extend_from_slice(&buf[..n as usize]);
                if out.len() >= MAX_TAKEN_INPUT {
                    break Ok(());
                }
            }
            _ => match io::Error::last_os_error() {
                e if e.kind() == io::ErrorKind::Interrupted => {}
                e if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                e => break Err(e),
            },
        }
    };
    let restored = set_termios(fd, libc::TCSANOW, &before);
    read?;
    restored?;
    Ok(out)
}

/// Puts `input` into `master`'s line discipline as if typed, without
/// echoing it or processing it again (it was, where it was first typed):
/// what [`take_input`] took, put back there or on another terminal. Needs
/// CAP_SYS_ADMIN (TIOCSTI on a terminal that is not ours). The modes are
/// as they were after.
pub fn put_input(master: BorrowedFd<'_>, input: &[u8]) -> io::Result<()> {
    if input.is_empty() {
        return Ok(());
    }
    let slave = peer(master)?;
    let fd = slave.as_raw_fd();
    let before = get_termios(fd)?;
    let mut t = before;
    t.c_iflag &= !(libc::ISTRIP
        | libc::INLCR
        | libc::IGNCR
        | libc::ICRNL
        | libc::IUCLC
        | libc::IXON
        | libc::IXOFF
        | libc::PARMRK);
    t.c_lflag &= !(libc::ECHO
        | libc::ECHOE
        | libc::ECHOK
        | libc::ECHONL
        | libc::ECHOCTL
        | libc::ECHOKE
        | libc::ISIG
        | libc::IEXTEN);
    // In canonical mode, no byte but a newline is special: the line being
    // typed stays a line being typed.
    for c in [
        libc::VEOF,
        libc::VEOL,
        libc::VEOL2,
        libc::VERASE,
        libc::VWERASE,
        libc::VKILL,
        libc::VREPRINT,
        libc::VLNEXT,
    ] {
        t.c_cc[c] = 0;
    }
    set_termios(fd, libc::TCSANOW, &t)?;
    let mut put = Ok(());
    for b in input {
        // SAFETY: TIOCSTI reads one byte from the pointer; the line
        // discipline takes it before the call returns.
        if let Err(e) = cvt(unsafe { libc::ioctl(fd, libc::TIOCSTI, b as *const u8) }) {
            put = Err(e);
            break;
        }
    }
    let restored = set_termios(fd, libc::TCSANOW, &before);
    put?;
    restored
}

/// Fallback for kernels without TIOCGPTPEER: ptsname_r + open.
fn open_slave_by_name(master: RawFd, flags: libc::c_int) -> io::Result<OwnedFd> {
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: ptsname_r writes at most `name.len()` bytes, NUL included.
    let rc = unsafe { libc::ptsname_r(master, name.as_mut_ptr(), name.len()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // SAFETY: `name` is NUL-terminated by ptsname_r.
    let fd = cvt(unsafe { libc::open(name.as_ptr(), flags) })?;
    // SAFETY: the fd is new and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// TIOCSWINSZ.
pub fn set_winsize(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from the pointer.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) })?;
    Ok(())
}

/// TIOCGWINSZ: (rows, cols), None if `fd` is not a terminal.
pub fn get_winsize(fd: BorrowedFd<'_>) -> Option<(u16, u16)> {
    // SAFETY: winsize is plain data.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes a winsize to the pointer.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) }).ok()?;
    Some((ws.ws_row, ws.ws_col))
}

pub fn isatty(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: isatty only inspects the fd.
    unsafe { libc::isatty(fd.as_raw_fd()) == 1 }
}

/// Whether our process group is the terminal's foreground group
/// (tcgetpgrp(fd) == getpgrp()); false if `fd` is not our controlling terminal.
pub fn is_foreground(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: both calls only read process state.
    unsafe {
        let fg = libc::tcgetpgrp(fd.as_raw_fd());
        fg > 0 && fg == libc::getpgrp()
    }
}

/// Blocks SIGTTIN in the calling thread, so that its reads of the
/// controlling terminal while our process group is in the background fail
/// with EIO instead of stopping the whole process (the kernel treats a
/// blocked SIGTTIN as ignored). That includes a read that was waiting when
/// the group went to the background (a stop, then `bg`), which the kernel
/// restarts when the process continues.
pub fn fail_background_reads() -> io::Result<()> {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before
    // use; pthread_sigmask only reads it.
    let rc = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTTIN);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut())
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

fn get_termios(fd: RawFd) -> io::Result<libc::termios> {
    // SAFETY: termios is plain data.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: tcgetattr writes a termios to the pointer.
    cvt(unsafe { libc::tcgetattr(fd, &mut t) })?;
    Ok(t)
}

fn set_termios(fd: RawFd, when: libc::c_int, t: &libc::termios) -> io::Result<()> {
    // SAFETY: tcsetattr reads a termios from the pointer.
    cvt(unsafe { libc::tcsetattr(fd, when, t) })?;
    Ok(())
}

/// Where an RFC 4254 opcode lives in a termios.
#[derive(Clone, Copy)]
enum Field {
    Cc(usize),
    I(libc::tcflag_t),
    L(libc::tcflag_t),
    O(libc::tcflag_t),
    C(libc::tcflag_t),
    /// Character size: CS7 or CS8.
    Size(libc::tcflag_t),
}

use Field::*;

/// RFC 4254 section 8 (and RFC 8160 for IUTF8), limited to what Linux has.
const MODES: &[(u8, Field)] = &[
    (1, Cc(libc::VINTR)),
    (2, Cc(libc::VQUIT)),
    (3, Cc(libc::VERASE)),
    (4, Cc(libc::VKILL)),
    (5, Cc(libc::VEOF)),
    (6, Cc(libc::VEOL)),
    (7, Cc(libc::VEOL2)),
    (8, Cc(libc::VSTART)),
    (9, Cc(libc::VSTOP)),
    (10, Cc(libc::VSUSP)),
    (12, Cc(libc::VREPRINT)),
    (13, Cc(libc::VWERASE)),
    (14, Cc(libc::VLNEXT)),
    (18, Cc(libc::VDISCARD)),
    (30, I(libc::IGNPAR)),
    (31, I(libc::PARMRK)),
    (32, I(libc::INPCK)),
    (33, I(libc::ISTRIP)),
    (34, I(libc::INLCR)),
    (35, I(libc::IGNCR)),
    (36, I(libc::ICRNL)),
    (37, I(libc::IUCLC)),
    (38, I(libc::IXON)),
    (39, I(libc::IXANY)),
    (40, I(libc::IXOFF)),
    (41, I(libc::IMAXBEL)),
    (42, I(libc::IUTF8)),
    (50, L(libc::ISIG)),
    (51, L(libc::ICANON)),
    (52, L(libc::XCASE)),
    (53, L(libc::ECHO)),
    (54, L(libc::ECHOE)),
    (55, L(libc::ECHOK)),
    (56, L(libc::ECHONL)),
    (57, L(libc::NOFLSH)),
    (58, L(libc::TOSTOP)),
    (59, L(libc::IEXTEN)),
    (60, L(libc::ECHOCTL)),
    (61, L(libc::ECHOKE)),
    (62, L(libc::PENDIN)),
    (70, O(libc::OPOST)),
    (71, O(libc::OLCUC)),
    (72, O(libc::ONLCR)),
    (73, O(libc::OCRNL)),
    (74, O(libc::ONOCR)),
    (75, O(libc::ONLRET)),
    (90, Size(libc::CS7)),
    (91, Size(libc::CS8)),
    (92, C(libc::PARENB)),
    (93, C(libc::PARODD)),
    // Not in RFC 4254, which leaves non-canonical reads to the server: roam
    // carries them so that a program's raw mode moves with it intact.
    (TTY_OP_VMIN, Cc(libc::VMIN)),
    (TTY_OP_VTIME, Cc(libc::VTIME)),
];

/// roam's own opcodes (RFC 4254 leaves 160–255 undefined): VMIN, VTIME.
pub const TTY_OP_VMIN: u8 = 200;
pub const TTY_OP_VTIME: u8 = 201;

pub const TTY_OP_ISPEED: u8 = 128;
pub const TTY_OP_OSPEED: u8 = 129;

/// How a disabled control character is sent (as OpenSSH does).
const WIRE_VDISABLE: u32 = 255;

const SPEEDS: &[(libc::speed_t, u32)] = &[
    (libc::B0, 0),
    (libc::B50, 50),
    (libc::B75, 75),
    (libc::B110, 110),
    (libc::B134, 134),
    (libc::B150, 150),
    (libc::B200, 200),
    (libc::B300, 300),
    (libc::B600, 600),
    (libc::B1200, 1200),
    (libc::B1800, 1800),
    (libc::B2400, 2400),
    (libc::B4800, 4800),
    (libc::B9600, 9600),
    (libc::B19200, 19200),
    (libc::B38400, 38400),
    (libc::B57600, 57600),
    (libc::B115200, 115200),
    (libc::B230400, 230400),
    (libc::B460800, 460800),
    (libc::B500000, 500000),
    (libc::B576000, 576000),
    (libc::B921600, 921600),
    (libc::B1000000, 1000000),
    (libc::B1152000, 1152000),
    (libc::B1500000, 1500000),
    (libc::B2000000, 2000000),
    (libc::B2500000, 2500000),
    (libc::B3000000, 3000000),
    (libc::B3500000, 3500000),
    (libc::B4000000, 4000000),
];

fn encode(t: &libc::termios) -> Vec<(u8, u32)> {
    let flag = |set: libc::tcflag_t, bit: libc::tcflag_t| u32::from(set & bit == bit);
    let mut out: Vec<(u8, u32)> = MODES
        .iter()
        .map(|&(op, field)| {
            let v = match field {
                Cc(i) => match t.c_cc[i] {
                    0 => WIRE_VDISABLE,
                    c => u32::from(c),
                },
                I(b) => flag(t.c_iflag, b),
                L(b) => flag(t.c_lflag, b),
                O(b) => flag(t.c_oflag, b),
                C(b) => flag(t.c_cflag, b),
                Size(s) => u32::from(t.c_cflag & libc::CSIZE == s),
            };
            (op, v)
        })
        .collect();
    // What glibc's cfgetospeed and cfgetispeed return (the baud bits of
    // c_cflag), read here: the libc crate binds those two to an old
    // symbol version that a static link of glibc does not have.
    let ospeed = t.c_cflag & libc::CBAUD;
    let ispeed = ospeed;
    for (op, speed) in [(TTY_OP_ISPEED, ispeed), (TTY_OP_OSPEED, ospeed)] {
        if let Some(&(_, baud)) = SPEEDS.iter().find(|s| s.0 == speed) {
            out.push((op, baud));
        }
    }
    out
}

/// Applies opcodes to a termios; unknown opcodes and out-of-range values
/// (they come from the network) are ignored.
fn decode(t: &mut libc::termios, modes: &[(u8, u32)]) {
    let set = |flags: &mut libc::tcflag_t, bit: libc::tcflag_t, v: u32| match v {
        0 => *flags &= !bit,
        1 => *flags |= bit,
        _ => {}
    };
    for &(op, v) in modes {
        if op == TTY_OP_ISPEED || op == TTY_OP_OSPEED {
            // Speed 0 would mean "hang up": never from the network.
            let Some(&(speed, _)) = SPEEDS.iter().find(|s| s.1 == v && v != 0) else {
                continue;
            };
            // SAFETY: cfset*speed only write the termios; the speed is valid.
            unsafe {
                if op == TTY_OP_ISPEED {
                    libc::cfsetispeed(t, speed);
                } else {
                    libc::cfsetospeed(t, speed);
                }
            }
            continue;
        }
        let Some(&(_, field)) = MODES.iter().find(|m| m.0 == op) else {
            continue;
        };
        match field {
            Cc(i) => match v {
                WIRE_VDISABLE => t.c_cc[i] = 0,
                0..=254 => t.c_cc[i] = v as libc::cc_t,
                _ => {}
            },
            I(b) => set(&mut t.c_iflag, b, v),
            L(b) => set(&mut t.c_lflag, b, v),
            O(b) => set(&mut t.c_oflag, b, v),
            C(b) => set(&mut t.c_cflag, b, v),
            Size(s) => {
                if v == 1 {
                    t.c_cflag = (t.c_cflag & !libc::CSIZE) | s;
                }
            }
        }
    }
}

/// The terminal's modes as RFC 4254 section 8 opcodes and values (disabled
/// control characters as 255, speeds in baud).
pub fn encode_modes(fd: BorrowedFd<'_>) -> io::Result<Vec<(u8, u32)>> {
    Ok(encode(&get_termios(fd.as_raw_fd())?))
}

/// Turns back on, in such a list, what a shell's line editor (readline,
/// zle) turns off while it reads a command line: canonical input, echo, and
/// CR to NL on input. The rest (control characters, IUTF8...) stays the
/// user's.
pub fn cook_modes(modes: &mut [(u8, u32)]) {
    for (op, v) in modes.iter_mut() {
        if matches!(
            MODES.iter().find(|m| m.0 == *op),
            Some((_, L(libc::ICANON) | L(libc::ECHO) | I(libc::ICRNL)))
        ) {
            *v = 1;
        }
    }
}

/// Applies such a list to a terminal (TCSANOW). Unknown opcodes and
/// out-of-range values are ignored.
pub fn apply_modes(fd: BorrowedFd<'_>, modes: &[(u8, u32)]) -> io::Result<()> {
    let mut t = get_termios(fd.as_raw_fd())?;
    decode(&mut t, modes);
    set_termios(fd.as_raw_fd(), libc::TCSANOW, &t)
}

/// ssh's raw mode for an interactive session.
fn make_raw(t: &mut libc::termios) {
    t.c_iflag |= libc::IGNPAR;
    t.c_iflag &= !(libc::ISTRIP
        | libc::INLCR
        | libc::IGNCR
        | libc::ICRNL
        | libc::IXON
        | libc::IXANY
        | libc::IXOFF
        | libc::IUCLC);
    t.c_lflag &= !(libc::ISIG
        | libc::ICANON
        | libc::ECHO
        | libc::ECHOE
        | libc::ECHOK
        | libc::ECHONL
        | libc::IEXTEN);
    t.c_oflag &= !libc::OPOST;
    t.c_cc[libc::VMIN] = 1;
    t.c_cc[libc::VTIME] = 0;
}

/// A terminal in raw mode the way ssh sets it for an interactive session;
/// the saved modes come back on [`RawMode::restore`] or drop.
///
/// Holds the fd number, not the fd: keep the terminal open while this lives.
pub struct RawMode {
    fd: RawFd,
    saved: libc::termios,
    active: bool,
}

impl RawMode {
    /// Saves the terminal's modes and makes it raw.
    pub fn enter(fd: BorrowedFd<'_>) -> io::Result<RawMode> {
        let saved = get_termios(fd.as_raw_fd())?;
        let mut raw = RawMode {
            fd: fd.as_raw_fd(),
            saved,
            active: false,
        };
        raw.go_raw()?;
        Ok(raw)
    }

    fn go_raw(&mut self) -> io::Result<()> {
        let mut t = self.saved;
        make_raw(&mut t);
        set_termios(self.fd, libc::TCSADRAIN, &t)?;
        self.active = true;
        Ok(())
    }

    /// Puts the saved modes back; does nothing if already restored.
    pub fn restore(&mut self) {
        if self.active {
            let _ = set_termios(self.fd, libc::TCSADRAIN, &self.saved);
            self.active = false;
        }
    }

    /// Goes raw again, e.g. after a stop and continue: if restored, saves
    /// the terminal's modes anew first (the user may have changed them).
    pub fn reenter(&mut self) -> io::Result<()> {
        if !self.active {
            self.saved = get_termios(self.fd)?;
        }
        self.go_raw()
    }

    pub fn is_active(&self) -> bool {
        self.active
    }
}

impl std::fmt::Debug for RawMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawMode")
            .field("fd", &self.fd)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        self.restore();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(modes: &[(u8, u32)], op: u8) -> Option<u32> {
        modes.iter().find(|m| m.0 == op).map(|m| m.1)
    }

    #[test]
    fn pty_basics() {
        let (m, s) = open_pty(24, 80).unwrap();
        assert!(isatty(m.as_fd()) && isatty(s.as_fd()));
        assert_eq!(get_winsize(s.as_fd()), Some((24, 80)));
        set_winsize(m.as_fd(), 30, 100).unwrap();
        assert_eq!(get_winsize(s.as_fd()), Some((30, 100)));
        for fd in [&m, &s] {
            // SAFETY: reading fd flags.
            let fl = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
            assert_ne!(fl & libc::FD_CLOEXEC, 0);
        }
        // Not our controlling terminal.
        assert!(!is_foreground(s.as_fd()));
        let null = std::fs::File::open("/dev/null").unwrap();
        assert!(!isatty(null.as_fd()));
        assert_eq!(get_winsize(null.as_fd()), None);
        assert!(encode_modes(null.as_fd()).is_err());
    }

    fn read_all(fd: BorrowedFd<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            let mut p = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd; read into a local buffer.
            unsafe {
                if libc::poll(&mut p, 1, 200) != 1 {
                    return out;
                }
                let n = libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len());
                if n <= 0 {
                    return out;
                }
                out.extend_from_slice(&buf[..n as usize]);
            }
        }
    }

    fn write_all(fd: BorrowedFd<'_>, b: &[u8]) {
        // SAFETY: writes a local buffer.
        let n = unsafe { libc::write(fd.as_raw_fd(), b.as_ptr().cast(), b.len()) };
        assert_eq!(n, b.len() as isize);
    }

    #[test]
    fn input_is_taken_back_and_put_back_without_a_second_echo() {
        let (m, s) = open_pty(24, 80).unwrap();
        // A whole line and one being typed, echoed once by the terminal.
        write_all(m.as_fd(), b"one\r");
        write_all(m.as_fd(), b"tw");
        assert_eq!(read_all(m.as_fd()), b"one\r\ntw");
        let before = encode_modes(s.as_fd()).unwrap();
        let taken = take_input(m.as_fd()).unwrap();
        assert_eq!(taken, b"one\ntw");
        assert_eq!(
            encode_modes(s.as_fd()).unwrap(),
            before,
            "modes as they were"
        );
        assert_eq!(take_input(m.as_fd()).unwrap(), b"", "nothing left");
        // On another terminal (as on a migration's new node), not echoed.
        let (m2, s2) = open_pty(24, 80).unwrap();
        put_input(m2.as_fd(), &taken).unwrap();
        assert_eq!(encode_modes(s2.as_fd()).unwrap(), before);
        assert_eq!(read_all(m2.as_fd()), b"", "no echo");
        // The typed part is still a line being typed: finished by more
        // typing, and erasable as any.
        write_all(m2.as_fd(), b"o\x7fo!\r");
        let mut line = [0u8; 64];
        // SAFETY: reads into a local buffer.
        let n = unsafe { libc::read(s2.as_raw_fd(), line.as_mut_ptr().cast(), line.len()) };
        assert_eq!(&line[..n as usize], b"one\n");
        // SAFETY: as above.
        let n = unsafe { libc::read(s2.as_raw_fd(), line.as_mut_ptr().cast(), line.len()) };
        assert_eq!(&line[..n as usize], b"two!\n");
    }

    #[test]
    fn raw_mode_travels_with_vmin_and_vtime() {
        let (_m1, a) = open_pty(24, 80).unwrap();
        let (_m2, b) = open_pty(24, 80).unwrap();
        let mut t = get_termios(a.as_raw_fd()).unwrap();
        make_raw(&mut t);
        t.c_cc[libc::VMIN] = 0;
        t.c_cc[libc::VTIME] = 7;
        set_termios(a.as_raw_fd(), libc::TCSANOW, &t).unwrap();
        apply_modes(b.as_fd(), &encode_modes(a.as_fd()).unwrap()).unwrap();
        let got = get_termios(b.as_raw_fd()).unwrap();
        assert_eq!(got.c_lflag, t.c_lflag);
        assert_eq!(got.c_iflag, t.c_iflag);
        assert_eq!((got.c_cc[libc::VMIN], got.c_cc[libc::VTIME]), (0, 7));
    }

    #[test]
    fn slave_by_name() {
        let (m, _) = open_pty(1, 1).unwrap();
        let s = open_slave_by_name(m.as_raw_fd(), libc::O_RDWR | libc::O_NOCTTY).unwrap();
        assert!(isatty(s.as_fd()));
    }

    #[test]
    fn modes_round_trip() {
        let (_m1, a) = open_pty(24, 80).unwrap();
        let (_m2, b) = open_pty(24, 80).unwrap();
        let fresh = encode_modes(a.as_fd()).unwrap();
        assert_eq!(get(&fresh, 53), Some(1), "ECHO on by default");
        assert_eq!(get(&fresh, 1), Some(3), "VINTR is ^C");
        assert_eq!(get(&fresh, 91), Some(1), "CS8");
        assert_eq!(get(&fresh, 90), Some(0));
        assert!(get(&fresh, TTY_OP_OSPEED).is_some());

        apply_modes(
            a.as_fd(),
            &[
                (53, 0),
                (51, 0),
                (1, 7),
                (2, 255),
                (72, 0),
                (42, 1),
                (TTY_OP_ISPEED, 9600),
                (TTY_OP_OSPEED, 9600),
            ],
        )
        .unwrap();
        let changed = encode_modes(a.as_fd()).unwrap();
        assert_eq!(get(&changed, 53), Some(0));
        assert_eq!(get(&changed, 51), Some(0));
        assert_eq!(get(&changed, 1), Some(7));
        assert_eq!(get(&changed, 2), Some(255));
        assert_eq!(get(&changed, 72), Some(0));
        assert_eq!(get(&changed, 42), Some(1));
        assert_eq!(get(&changed, TTY_OP_OSPEED), Some(9600));

        apply_modes(b.as_fd(), &changed).unwrap();
        assert_eq!(encode_modes(b.as_fd()).unwrap(), changed);

        // Network garbage changes nothing.
        apply_modes(
            b.as_fd(),
            &[
                (53, 2),
                (1, 256),
                (1, u32::MAX),
                (0, 1),
                (11, 1),
                (180, 5),
                (91, 7),
                (TTY_OP_OSPEED, 0),
                (TTY_OP_ISPEED, 12345),
            ],
        )
        .unwrap();
        assert_eq!(encode_modes(b.as_fd()).unwrap(), changed);
    }

    #[test]
    fn char_size_and_parity() {
        // A pty forces CS8 and no parity: check the encoding on a termios.
        let (_m, s) = open_pty(24, 80).unwrap();
        let mut t = get_termios(s.as_raw_fd()).unwrap();
        decode(&mut t, &[(90, 1), (92, 1), (93, 1)]);
        assert_eq!(t.c_cflag & libc::CSIZE, libc::CS7);
        let m = encode(&t);
        assert_eq!((get(&m, 90), get(&m, 91)), (Some(1), Some(0)));
        assert_eq!((get(&m, 92), get(&m, 93)), (Some(1), Some(1)));
        decode(&mut t, &[(91, 1), (92, 0), (90, 0)]);
        assert_eq!(t.c_cflag & libc::CSIZE, libc::CS8);
        let m = encode(&t);
        assert_eq!(
            (get(&m, 90), get(&m, 91), get(&m, 92)),
            (Some(0), Some(1), Some(0))
        );
    }

    #[test]
    fn background_reads_fail_in_this_thread_only() {
        let blocked = || {
            let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
            let mask = status
                .lines()
                .find_map(|l| l.strip_prefix("SigBlk:"))
                .map(|m| u64::from_str_radix(m.trim(), 16).unwrap())
                .unwrap();
            mask & (1 << (libc::SIGTTIN - 1)) != 0
        };
        std::thread::spawn(move || {
            assert!(!blocked());
            fail_background_reads().unwrap();
            assert!(blocked());
        })
        .join()
        .unwrap();
        assert!(!blocked());
    }

    #[test]
    fn cooked_modes() {
        let (_m, s) = open_pty(24, 80).unwrap();
        // As readline leaves a terminal: no ICANON, ECHO, ICRNL; ^V off.
        apply_modes(s.as_fd(), &[(51, 0), (53, 0), (36, 0), (14, 255), (42, 1)]).unwrap();
        let mut modes = encode_modes(s.as_fd()).unwrap();
        cook_modes(&mut modes);
        for op in [51, 53, 36] {
            assert_eq!(get(&modes, op), Some(1), "opcode {op}");
        }
        // The rest is left as it was.
        assert_eq!(get(&modes, 14), Some(255));
        assert_eq!(get(&modes, 42), Some(1));
        assert_eq!(get(&modes, 50), Some(1));
        let mut raw = encode_modes(s.as_fd()).unwrap();
        raw.retain(|m| m.0 != 51 && m.0 != 53 && m.0 != 36);
        let mut cooked = raw.clone();
        cook_modes(&mut cooked);
        assert_eq!(cooked, raw, "only the three modes change");
    }

    #[test]
    fn raw_mode() {
        let (_m, s) = open_pty(24, 80).unwrap();
        let before = encode_modes(s.as_fd()).unwrap();
        let mut raw = RawMode::enter(s.as_fd()).unwrap();
        let r = encode_modes(s.as_fd()).unwrap();
        for op in [50, 51, 53, 38, 70, 36] {
            assert_eq!(get(&r, op), Some(0), "opcode {op}");
        }
        raw.restore();
        assert!(!raw.is_active());
        assert_eq!(encode_modes(s.as_fd()).unwrap(), before);
        raw.restore();
        assert_eq!(encode_modes(s.as_fd()).unwrap(), before);

        // While stopped, the user turned echo off: reenter keeps that for
        // the next restore.
        apply_modes(s.as_fd(), &[(53, 0)]).unwrap();
        raw.reenter().unwrap();
        assert_eq!(get(&encode_modes(s.as_fd()).unwrap(), 51), Some(0));
        // Reenter while raw must not save the raw modes.
        raw.reenter().unwrap();
        drop(raw);
        let after = encode_modes(s.as_fd()).unwrap();
        assert_eq!(get(&after, 53), Some(0));
        assert_eq!(get(&after, 51), Some(1));
    }
}
