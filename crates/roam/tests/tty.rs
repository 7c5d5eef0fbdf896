//! `roam run` at an interactive shell, as a user at a terminal sees it:
//! the remote side's pseudo-terminal and window size, Ctrl-C, Ctrl-Z with
//! `jobs`/`bg`/`fg`, interactive programs, `kill` of the proxy, exit
//! statuses, background jobs and pipelines.
//!
//! Each test brings up its own testbed (so tests run in parallel) and opens
//! its own pseudo-terminal, on which it runs `bash --norc --noprofile -i`
//! in a session of its own with that terminal as its controlling terminal (so
//! job control is on), and drives it like a user: keystrokes written to the
//! master, the screen read back from it. Typed command lines are echoed, so
//! every expected string is one the typed text does not contain (`al""ive`
//! prints `alive`).
//!
//! Needs root (the testbed); skipped otherwise. Finds `roamd` next to the
//! `roam` binary (`cargo build` puts it there), or in `$ROAMD`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use roam_proto::types::ProcInfo;
use roam_sys::spawn::{SpawnRequest, WaitEvent};
use roam_testbed::{Testbed, TestbedOpts};

/// How long any one expectation may take.
const WAIT: Duration = Duration::from_secs(10);
/// The shell's prompt (never part of a typed line).
const PROMPT: &str = "<tty-test>$ ";

fn is_root() -> bool {
    roam_sys::cred::current_cred().0 == 0
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: the testbed needs root");
            return;
        }
    };
}

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_roam"))
        .parent()
        .expect("the roam binary is in a directory")
        .to_path_buf()
}

fn roamd() -> PathBuf {
    let path = std::env::var_os("ROAMD")
        .map(PathBuf::from)
        .unwrap_or_else(|| bin_dir().join("roamd"));
    assert!(
        path.exists(),
        "no roamd at {} (run `cargo build` first, or set ROAMD)",
        path.display()
    );
    path
}

/// Output of the terminal so far, filled by a reader thread.
#[derive(Default)]
struct Screen {
    bytes: Vec<u8>,
    /// The master read end of file or an error: nobody holds the slave.
    closed: bool,
}

/// An interactive bash on a pseudo-terminal of its own.
struct Shell {
    pid: u32,
    /// The terminal's session.
    sid: u32,
    master: File,
    screen: Arc<(Mutex<Screen>, Condvar)>,
    /// Where the next expectation starts looking.
    cursor: usize,
    socket: PathBuf,
}

impl Shell {
    /// Starts bash on a new `rows`x`cols` terminal, talking to the roamd
    /// at `socket`, and waits for its first prompt.
    fn start(socket: &Path, rows: u16, cols: u16) -> Shell {
        let (master, slave) = roam_sys::pty::open_pty(rows, cols).expect("open a pty");
        let path = format!(
            "{}:{}",
            bin_dir().display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into())
        );
        let env: Vec<Vec<u8>> = [
            format!("PATH={path}"),
            format!("ROAM_SOCKET={}", socket.display()),
            "TERM=dumb".into(),
            format!(
                "HOME={}",
                std::env::var("HOME").unwrap_or_else(|_| "/".into())
            ),
            "INPUTRC=/dev/null".into(),
            "HISTFILE=/dev/null".into(),
            "LANG=C".into(),
            format!("PS1={PROMPT}"),
        ]
        .into_iter()
        .map(String::into_bytes)
        .collect();
        let argv: Vec<Vec<u8>> = ["bash", "--norc", "--noprofile", "-i"]
            .into_iter()
            .map(|a| a.as_bytes().to_vec())
            .collect();
        let (uid, gid, groups) = roam_sys::cred::current_cred();
        let pid = roam_sys::spawn::spawn(&SpawnRequest {
            program: b"bash",
            argv: &argv,
            env: &env,
            cwd: b"/",
            umask: 0o022,
            uid,
            gid,
            groups: &groups,
            stdin: slave.as_fd(),
            stdout: slave.as_fd(),
            stderr: slave.as_fd(),
            controlling_tty: Some(slave.as_fd()),
            root: None,
            root_ns: None,
            exec_file: None,
        })
        .expect("start bash");
        drop(slave);
        let sid = session_of(pid).expect("bash's session");
        let screen = Arc::new((Mutex::new(Screen::default()), Condvar::new()));
        let reader = master.try_clone().expect("dup the pty master");
        let filler = screen.clone();
        std::thread::spawn(move || read_screen(reader, &filler));
        let mut sh = Shell {
            pid,
            sid,
            master: File::from(master),
            screen,
            cursor: 0,
            socket: socket.to_path_buf(),
        };
        sh.prompt();
        sh
    }

    /// Everything the terminal showed, for failure messages.
    fn transcript(&self) -> String {
        let screen = self.screen.0.lock().unwrap_or_else(|e| e.into_inner());
        let text = String::from_utf8_lossy(&screen.bytes);
        let mut out = String::from("----- terminal transcript -----\n");
        for line in text.split('\n') {
            out.push_str(&line.escape_debug().to_string());
            out.push('\n');
        }
        out.push_str("----- end of transcript -----");
        out
    }

    /// Waits until the output after the cursor contains `pat`; moves the
    /// cursor past it and returns the output up to and including it.
    fn expect(&mut self, pat: &str) -> String {
        self.expect_within(pat, WAIT)
    }

    fn expect_within(&mut self, pat: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        let (lock, cond) = &*self.screen;
        let mut screen = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let tail = &screen.bytes[self.cursor..];
            if let Some(at) = find(tail, pat.as_bytes()) {
                let end = self.cursor + at + pat.len();
                let got = String::from_utf8_lossy(&screen.bytes[self.cursor..end]).into_owned();
                self.cursor = end;
                return got;
            }
            let now = Instant::now();
            if now >= deadline || screen.closed {
                let why = if screen.closed {
                    "the terminal closed"
                } else {
                    "timed out"
                };
                drop(screen);
                panic!(
                    "{why} after {limit:?} waiting for {pat:?}\n{}",
                    self.transcript()
                );
            }
            screen = cond
                .wait_timeout(screen, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits for the next prompt.
    fn prompt(&mut self) -> String {
        self.expect(PROMPT)
    }

    /// Types `keys`.
    fn send(&mut self, keys: &str) {
        if let Err(e) = self.master.write_all(keys.as_bytes()) {
            panic!("cannot type {keys:?}: {e}\n{}", self.transcript());
        }
    }

    /// Types a command line and Enter.
    fn line(&mut self, cmd: &str) {
        self.send(cmd);
        self.send("\r");
    }

    /// Types a command line, waits for the next prompt and returns what the
    /// command printed (from the end of the typed line to the prompt).
    fn run(&mut self, cmd: &str) -> String {
        self.line(cmd);
        self.expect("\n");
        let out = self.prompt();
        out[..out.len() - PROMPT.len()].to_string()
    }

    /// Waits until the terminal is in raw mode (no ICANON, no ECHO): a
    /// foreground proxy has taken it over.
    fn wait_raw(&self) {
        let deadline = Instant::now() + WAIT;
        loop {
            // A pty master reports the terminal's (the slave's) modes.
            let modes = roam_sys::pty::encode_modes(self.master.as_fd()).unwrap_or_default();
            let flag = |op: u8| modes.iter().find(|m| m.0 == op).map(|m| m.1);
            // RFC 4254: 51 ICANON, 53 ECHO.
            if flag(51) == Some(0) && flag(53) == Some(0) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the terminal did not become raw (modes {modes:?})\n{}",
                self.transcript()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asserts that commands run with the terminal's usual modes (the
    /// proxy gave the terminal back as it found it), by a local `stty -a`.
    fn assert_sane(&mut self) {
        let out = self.run("stty -a");
        let words: Vec<&str> = out.split_ascii_whitespace().collect();
        for mode in [
            "icanon", "echo", "isig", "icrnl", "opost", "onlcr", "iexten",
        ] {
            assert!(
                words.contains(&mode),
                "the terminal is left without {mode}: {out:?}\n{}",
                self.transcript()
            );
        }
    }

    /// Ctrl-C to the foreground job `command` once it has the terminal:
    /// the shell says 130, the terminal is sane, the process is gone.
    fn interrupt(&mut self, command: &str) {
        self.wait_raw();
        self.send("\x03");
        self.prompt();
        let out = self.run("echo rc=$?");
        assert!(out.contains("rc=130"), "{out:?}\n{}", self.transcript());
        self.assert_sane();
        self.wait_ps_gone(command);
    }

    /// Sets the terminal's window size, as a terminal emulator does when
    /// its window is resized (the kernel sends SIGWINCH to the foreground
    /// process group).
    fn resize(&self, rows: u16, cols: u16) {
        roam_sys::pty::set_winsize(self.master.as_fd(), rows, cols).expect("set the window size");
    }

    /// `roam ps --json`, run by the test (not through the shell).
    fn ps(&self) -> Vec<ProcInfo> {
        let out = Command::new(env!("CARGO_BIN_EXE_roam"))
            .args(["ps", "--json"])
            .env("ROAM_SOCKET", &self.socket)
            .output()
            .expect("run roam ps");
        assert!(
            out.status.success(),
            "roam ps failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("roam ps --json output")
    }

    /// Waits until `roam ps` shows a process whose command is `command` in
    /// one of `states` (any state if empty); returns it.
    fn wait_ps(&self, command: &str, states: &str) -> ProcInfo {
        let deadline = Instant::now() + WAIT;
        loop {
            let procs = self.ps();
            if let Some(p) = procs
                .iter()
                .find(|p| p.command == command && (states.is_empty() || states.contains(p.state)))
            {
                return p.clone();
            }
            assert!(
                Instant::now() < deadline,
                "roam ps shows no {command:?} in state {states:?}: {procs:#?}\n{}",
                self.transcript()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `roam ps` no longer shows a process whose command is
    /// `command`.
    fn wait_ps_gone(&self, command: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let procs = self.ps();
            if !procs.iter().any(|p| p.command == command) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "roam ps still shows {command:?}: {procs:#?}\n{}",
                self.transcript()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Shell {
    /// Kills everything in the terminal's session (bash, its jobs, their
    /// proxies) and reaps bash.
    fn drop(&mut self) {
        for _ in 0..3 {
            let members = session_members(self.sid);
            if members.is_empty() {
                break;
            }
            for pid in members {
                let _ = roam_sys::signal::kill(pid as i32, libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = roam_sys::signal::kill(self.pid as i32, libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match roam_sys::spawn::wait_pid(self.pid, true) {
                Ok(Some(WaitEvent::Exited { .. } | WaitEvent::Signaled { .. })) | Err(_) => break,
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

/// The session id of process `pid`.
fn session_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 6 (session) is the 4th after the command's ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_ascii_whitespace().nth(3)?.parse().ok()
}

/// Processes whose session id is `sid`.
fn session_members(sid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| session_of(pid) == Some(sid))
        .collect()
}

fn read_screen(master: OwnedFd, screen: &(Mutex<Screen>, Condvar)) {
    let mut f = File::from(master);
    let mut buf = [0u8; 4096];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) | Err(_) => 0,
            Ok(n) => n,
        };
        let mut s = screen.0.lock().unwrap_or_else(|e| e.into_inner());
        if n == 0 {
            s.closed = true;
            screen.1.notify_all();
            return;
        }
        s.bytes.extend_from_slice(&buf[..n]);
        screen.1.notify_all();
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A testbed and a shell on it; the shell goes first on drop.
struct Session {
    sh: Shell,
    tb: Testbed,
}

impl std::ops::Deref for Session {
    type Target = Shell;
    fn deref(&self) -> &Shell {
        &self.sh
    }
}

impl std::ops::DerefMut for Session {
    fn deref_mut(&mut self) -> &mut Shell {
        &mut self.sh
    }
}

fn session(nodes: u32, rows: u16, cols: u16) -> Session {
    let tb = Testbed::up(TestbedOpts::new(nodes, roamd())).expect("testbed up");
    tb.wait_nodes_up(nodes as usize, Duration::from_secs(20))
        .expect("nodes up");
    let sh = Shell::start(&tb.socket(), rows, cols);
    Session { sh, tb }
}

// ------------------------------------------------------------------ tests

/// The remote side gets a terminal of the local terminal's size, and
/// follows its resizes.
#[test]
fn remote_terminal_and_window_size() {
    require_root!();
    let mut s = session(1, 33, 111);
    let out = s.run("roam run sh -c 'tty; stty size'");
    assert!(out.contains("/dev/pts/"), "no pty: {out:?}");
    assert!(out.contains("33 111"), "wrong size: {out:?}");

    // Resized at the prompt: a new process sees the new size.
    s.resize(40, 132);
    let out = s.run("roam run stty size");
    assert!(out.contains("40 132"), "wrong size: {out:?}");

    // Resized while a process runs: it gets SIGWINCH and the new size.
    s.line(
        "roam run sh -c 'trap \"stty size\" WINCH; echo rea\"\"dy; while :; do sleep 0.1; done'",
    );
    s.expect("ready");
    s.wait_raw();
    s.resize(50, 150);
    s.expect("50 150");
    s.resize(27, 90);
    s.expect("27 90");
    s.send("\x03");
    s.prompt();
    let out = s.run("echo rc=$?");
    assert!(out.contains("rc=130"), "{out:?}\n{}", s.transcript());
}

/// Ctrl-C ends a remote program as it would a local one.
#[test]
fn ctrl_c_interrupts() {
    require_root!();
    let mut s = session(1, 24, 80);
    s.line("roam run sleep 100");
    s.wait_ps("sleep 100", "");
    s.interrupt("sleep 100");
}

/// Ctrl-Z stops the remote program; `jobs`, `bg`, `fg` and `kill %1` work
/// on it as on a local job.
///
/// This needs the node's session keeper: were the program the session
/// leader, its process group would be orphaned (its parent, roamd, is in
/// another session) and the kernel would discard the SIGTSTP the remote
/// terminal sends it for Ctrl-Z.
#[test]
fn ctrl_z_and_job_control() {
    require_root!();
    let mut s = session(1, 24, 80);
    s.line("roam run sleep 100");
    s.wait_ps("sleep 100", "");
    s.wait_raw();
    s.send("\x1a");
    s.expect("Stopped");
    s.prompt();
    s.assert_sane();
    s.wait_ps("sleep 100", "T");
    let out = s.run("jobs");
    assert!(
        out.contains("Stopped") && out.contains("roam run sleep 100"),
        "{out:?}\n{}",
        s.transcript()
    );

    // bg: running again, in the background; the shell stays usable.
    s.run("bg");
    s.wait_ps("sleep 100", "SR");
    let out = s.run("echo al\"\"ive");
    assert!(out.contains("alive"), "{out:?}\n{}", s.transcript());
    let out = s.run("jobs");
    assert!(out.contains("Running"), "{out:?}\n{}", s.transcript());

    // kill %1: SIGTERM to the proxy reaches the remote process.
    let out = s.run("kill %1; wait %1; echo rc=$?");
    assert!(
        out.contains("Terminated") && out.contains("rc=143"),
        "{out:?}\n{}",
        s.transcript()
    );
    s.wait_ps_gone("sleep 100");

    // Stopped, then fg, then Ctrl-C.
    s.line("roam run sleep 101");
    s.wait_ps("sleep 101", "");
    s.wait_raw();
    s.send("\x1a");
    s.expect("Stopped");
    s.prompt();
    s.wait_ps("sleep 101", "T");
    s.line("fg");
    s.expect("roam run sleep 101");
    s.wait_ps("sleep 101", "SR");
    s.wait_raw();
    s.send("\x03");
    s.prompt();
    let out = s.run("echo rc=$?");
    assert!(out.contains("rc=130"), "{out:?}\n{}", s.transcript());
    s.wait_ps_gone("sleep 101");
    let out = s.run("jobs; echo no-more\"\"-jobs");
    assert!(
        out.trim_end().ends_with("no-more-jobs") && !out.contains("roam run"),
        "{out:?}\n{}",
        s.transcript()
    );
}

/// Interactive programs read the terminal through the remote pty: its echo,
/// line editing, Ctrl-D as end of file.
#[test]
fn interactive_programs() {
    require_root!();
    let mut s = session(1, 24, 80);
    s.line("roam run cat");
    s.wait_ps("cat", "");
    s.wait_raw();
    s.send("hello\r");
    // The remote terminal's echo, then cat's copy.
    s.expect("hello\r\nhello\r\n");
    // Line editing on the remote terminal: erase (DEL) and kill (^U).
    s.send("wrx\x7fong\x15wo\x7f\x7f\x7frld\r");
    s.expect("rld\r\nrld\r\n");
    s.send("\x04");
    s.prompt();
    let out = s.run("echo rc=$?");
    assert!(out.contains("rc=0"), "{out:?}\n{}", s.transcript());
    s.assert_sane();

    s.line("roam run python3 -c 'print(input(\"na\" + \"me? \").upper())'");
    s.expect("name? ");
    s.wait_raw();
    s.send("roam\r");
    s.expect("ROAM");
    s.prompt();
    let out = s.run("echo rc=$?");
    assert!(out.contains("rc=0"), "{out:?}\n{}", s.transcript());
    s.assert_sane();
}

/// `kill` of the proxy from the shell reaches the remote process; `kill -9`
/// of the proxy kills the remote process too.
#[test]
fn kill_the_proxy() {
    require_root!();
    let mut s = session(1, 24, 80);
    s.run("roam run sleep 100 &");
    s.wait_ps("sleep 100", "S");
    let out = s.run("kill $!; wait $!; echo rc=$?");
    assert!(out.contains("rc=143"), "{out:?}\n{}", s.transcript());
    s.wait_ps_gone("sleep 100");

    s.run("roam run sleep 101 &");
    s.wait_ps("sleep 101", "S");
    let out = s.run("kill -9 $!; wait $!; echo rc=$?");
    assert!(out.contains("rc=137"), "{out:?}\n{}", s.transcript());
    s.wait_ps_gone("sleep 101");
}

/// Exit codes and deaths by signal come through to the shell.
#[test]
fn exit_statuses() {
    require_root!();
    let mut s = session(1, 24, 80);
    let out = s.run("roam run sh -c 'exit 3'; echo rc=$?");
    assert!(out.contains("rc=3"), "{out:?}\n{}", s.transcript());
    let out = s.run("roam run sh -c 'kill -SEGV $$'; echo rc=$?");
    assert!(
        out.contains("Segmentation fault") && out.contains("rc=139"),
        "{out:?}\n{}",
        s.transcript()
    );
    let out = s.run("roam run sh -c 'kill -KILL $$'; echo rc=$?");
    assert!(
        out.contains("Killed") && out.contains("rc=137"),
        "{out:?}\n{}",
        s.transcript()
    );
}

/// A background job leaves the shell usable and its output still shows.
#[test]
fn background_job() {
    require_root!();
    let mut s = session(1, 24, 80);
    s.run("roam run sh -c 'sleep 1; echo done\"\"-bg' &");
    let out = s.run("echo al\"\"ive");
    assert!(
        out.contains("alive") && !out.contains("done-bg"),
        "{out:?}\n{}",
        s.transcript()
    );
    s.expect("done-bg");
    let out = s.run("wait; echo rc=$?");
    assert!(out.contains("rc=0"), "{out:?}\n{}", s.transcript());

    // A background job does not read the terminal (the shell gets what
    // is typed) until `fg` brings it to the foreground.
    s.run("roam run cat &");
    s.wait_ps("cat", "S");
    let out = s.run("echo st\"\"ill-mine");
    assert!(out.contains("still-mine"), "{out:?}\n{}", s.transcript());
    s.line("fg");
    s.expect("roam run cat");
    s.wait_raw();
    s.send("now-cats\r");
    s.expect("now-cats\r\nnow-cats\r\n");
    s.send("\x04");
    s.prompt();
    let out = s.run("echo rc=$?");
    assert!(out.contains("rc=0"), "{out:?}\n{}", s.transcript());
    s.assert_sane();
}

/// A proxy stopped (SIGSTOP, which it cannot catch) and continued in the
/// background keeps running, without taking the terminal from the shell,
/// and reads it again once brought back with `fg`.
#[test]
fn stopped_proxy_continues_in_background() {
    require_root!();
    let mut s = session(1, 24, 80);
    s.line("roam run cat");
    let cat = s.wait_ps("cat", "S");
    s.wait_raw();
    roam_sys::signal::kill(cat.home_pid as i32, libc::SIGSTOP).expect("SIGSTOP to the proxy");
    s.expect("Stopped");
    s.prompt();
    s.run("bg");
    let out = s.run("echo st\"\"ill-mine");
    assert!(out.contains("still-mine"), "{out:?}\n{}", s.transcript());
    let out = s.run("jobs");
    assert!(out.contains("Running"), "{out:?}\n{}", s.transcript());
    s.line("fg");
    s.expect("roam run cat");
    s.wait_raw();
    s.send("back-again\r");
    s.expect("back-again\r\nback-again\r\n");
    s.send("\x04");
    s.prompt();
    let out = s.run("echo rc=$?");
    assert!(out.contains("rc=0"), "{out:?}\n{}", s.transcript());
    s.assert_sane();
}

/// The terminal going away (the shell gets SIGHUP) ends the remote
/// processes of its jobs, foreground and background.
#[test]
fn hangup_ends_jobs() {
    require_root!();
    let mut s = session(1, 24, 80);
    s.run("roam run sleep 101 &");
    s.line("roam run sleep 100");
    s.wait_ps("sleep 100", "S");
    s.wait_ps("sleep 101", "S");
    s.wait_raw();
    roam_sys::signal::kill(s.pid as i32, libc::SIGHUP).expect("SIGHUP to the shell");
    s.wait_ps_gone("sleep 100");
    s.wait_ps_gone("sleep 101");
}

/// Remote programs in pipelines with local ones.
#[test]
fn pipelines() {
    require_root!();
    let mut s = session(2, 24, 80);
    let out = s.run("roam run sh -c 'seq 1 $((2*50000))' | tail -n 1");
    assert!(out.contains("100000"), "{out:?}\n{}", s.transcript());
    let out = s.run("echo st=${PIPESTATUS[*]}");
    assert!(out.contains("st=0 0"), "{out:?}\n{}", s.transcript());

    // `yes` must die by SIGPIPE once head is done, and promptly.
    let started = Instant::now();
    let out = s.run("roam run yes | head -n 3; echo st=${PIPESTATUS[*]}");
    let took = started.elapsed();
    assert_eq!(out.matches('y').count(), 3, "{out:?}\n{}", s.transcript());
    assert!(out.contains("st=141 0"), "{out:?}\n{}", s.transcript());
    assert!(took < Duration::from_secs(5), "took {took:?}");
    s.wait_ps_gone("yes");

    // Remote to remote, on both nodes.
    let out = s.run("roam run --node n1 seq 1 5 | roam run --node n2 tac | tr '\\n' ,");
    assert!(out.contains("5,4,3,2,1,"), "{out:?}\n{}", s.transcript());
}

/// Removes roam's binfmt_misc entries when dropped.
struct BinfmtEntries(PathBuf);

impl Drop for BinfmtEntries {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_roam"))
            .args(["binfmt", "remove"])
            .env("ROAM_SOCKET", &self.0)
            .output();
    }
}

/// A foreign program started from an interactive shell (through roam's
/// binfmt_misc entry) is a job like any other: the remote terminal, Ctrl-C
/// to its handler, Ctrl-Z, `jobs`, `fg`, `kill %1` and `$?`.
#[test]
fn foreign_program_from_the_shell_is_a_job() {
    require_root!();
    let sig =
        roam_testbed::foreign::build("aarch64", "sigtest", roam_testbed::foreign::Link::Static)
            .unwrap_or_else(|e| panic!("{e}"));
    let mut opts = TestbedOpts::new(1, roamd());
    opts.arch = vec![roam_elf::Arch::Aarch64];
    let tb = Testbed::up(opts).expect("testbed up");
    tb.wait_nodes_up(1, Duration::from_secs(20))
        .expect("node up");
    let install = Command::new(env!("CARGO_BIN_EXE_roam"))
        .args(["binfmt", "install", "--arch", "aarch64"])
        .env("ROAM_SOCKET", tb.socket())
        .output()
        .expect("roam binfmt install");
    let _entries = BinfmtEntries(tb.socket());
    assert!(
        install.status.success(),
        "{}",
        String::from_utf8_lossy(&install.stderr)
    );
    let mut s = Session {
        sh: Shell::start(&tb.socket(), 24, 80),
        tb,
    };
    let dir = sig.parent().unwrap().display().to_string();
    s.run(&format!("cd {dir}"));
    s.line("./sigtest");
    s.expect("ready");
    let p = s.wait_ps("./sigtest", "");
    assert_eq!(p.node, "n1");
    s.wait_raw();
    // Ctrl-C reaches the program's handler through the remote terminal.
    s.send("\x03");
    s.expect("got INT");
    s.send("\x1a");
    s.expect("Stopped");
    s.prompt();
    s.assert_sane();
    s.wait_ps("./sigtest", "T");
    let out = s.run("jobs");
    assert!(
        out.contains("Stopped") && out.contains("./sigtest"),
        "{out:?}\n{}",
        s.transcript()
    );
    s.line("fg");
    s.expect("./sigtest");
    s.wait_ps("./sigtest", "SR");
    s.wait_raw();
    s.send("\x03");
    s.expect_within("got INT", WAIT);
    s.send("\x1a");
    s.expect("Stopped");
    s.prompt();
    // bg, then kill %1: TERM reaches the program's handler, which exits 0.
    s.run("bg");
    s.wait_ps("./sigtest", "SR");
    let out = s.run("kill %1; wait %1; echo rc=$?");
    assert!(out.contains("rc=0"), "{out:?}\n{}", s.transcript());
    s.wait_ps_gone("./sigtest");
    let out = s.run("./sigtest exit 9; echo rc=$?");
    assert!(out.contains("rc=9"), "{out:?}\n{}", s.transcript());
}

/// A program reading the terminal moves to another node and back while
/// the user types: the line half typed when it left is finished on the
/// new node (no key lost, none echoed twice), the modes it set (echo off)
/// and the window size go with it, and Ctrl-Z and Ctrl-C still reach it
/// there as the foreground job.
#[test]
fn a_program_on_the_terminal_migrates_with_it() {
    require_root!();
    let mut s = session(2, 24, 80);
    let script = s.tb.dir().join("tty-move.py");
    std::fs::write(
        &script,
        r#"import os, sys, termios, time
print("first? ", end="", flush=True)
a = sys.stdin.readline().strip()
print("A=" + a.upper(), flush=True)
t = termios.tcgetattr(0)
t[3] &= ~termios.ECHO
termios.tcsetattr(0, termios.TCSANOW, t)
print("secret? ", end="", flush=True)
b = sys.stdin.readline().strip()
t[3] |= termios.ECHO
termios.tcsetattr(0, termios.TCSANOW, t)
size = os.get_terminal_size(0)
print("B=%s SIZE=%dx%d" % (b.upper(), size.lines, size.columns), flush=True)
print("sleeping", flush=True)
time.sleep(100)
"#,
    )
    .unwrap();
    let command = format!("python3 {}", script.display());
    s.line(&format!("roam run --node n1 {command}"));
    s.expect("first? ");
    let p = s.wait_ps(&command, "S");
    assert_eq!(p.node, "n1");
    s.wait_raw();
    // Half a line, echoed by n1's terminal; the rest typed on n2.
    s.send("hel");
    s.expect("hel");
    migrate(&s, p.home_pid, "n2");
    s.send("lo\r");
    let out = s.expect("A=HELLO");
    assert!(
        out.starts_with("lo\r\n"),
        "echoed once: {out:?}\n{}",
        s.transcript()
    );
    s.expect("secret? ");
    // Echo off, set on n2, holds on n1; the window size follows too.
    s.resize(30, 100);
    migrate(&s, p.home_pid, "n1");
    s.send("pw\r");
    let out = s.expect("B=PW SIZE=30x100");
    assert!(!out.contains("pw"), "echoed: {out:?}\n{}", s.transcript());
    s.expect("sleeping");
    migrate(&s, p.home_pid, "n2");
    // The foreground job of n2's terminal: Ctrl-Z stops it, Ctrl-C ends it.
    s.send("\x1a");
    s.expect("Stopped");
    s.prompt();
    s.wait_ps(&command, "T");
    s.line("fg");
    s.expect(&command);
    s.wait_ps(&command, "SR");
    s.interrupt(&command);
}

/// `roam migrate PID NODE`, run by the test; then `roam ps` shows it there.
fn migrate(s: &Session, home_pid: u32, node: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_roam"))
        .args(["migrate", &home_pid.to_string(), node])
        .env("ROAM_SOCKET", &s.socket)
        .output()
        .expect("run roam migrate");
    assert!(
        out.status.success(),
        "roam migrate failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.transcript()
    );
    let p = s.ps().into_iter().find(|p| p.home_pid == home_pid).unwrap();
    assert_eq!(p.node, node);
}
