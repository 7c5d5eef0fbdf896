//! The proxy: the process on the home node that stands for a remote process.
//!
//! `roam run PROG ARGS` becomes the proxy of PROG, one to one. It shows in
//! `ps` and `top` under PROG's name and arguments; it forwards every signal
//! it can catch; it streams its stdin to the process and the process's
//! stdout and stderr to its own; it stops when the process stops (so shell
//! job control works) and ends the way the process ended: the same exit
//! code, or death by the same signal.
//!
//! When the proxy's stdin is a terminal, the process gets a pseudo-terminal
//! on the node (on the descriptors that are terminals here), and the local
//! terminal is put in raw mode while the proxy is in the foreground, the way
//! ssh does, so interactive programs and Ctrl-C behave as they do locally.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use roam_proto::link::LinkMsg;
use roam_proto::local::LocalMsg;
use roam_proto::types::{Chan, ErrorCode, ExitStatus, Mode, SessionId, SpawnSpec, TtySpec};
use roam_proto::MAX_DATA_CHUNK;
use serde_bytes::ByteBuf;
use tokio::sync::mpsc;

use crate::client::{Client, ClientError, PendingClient};
use crate::error_chain;
use crate::locate::Located;
use crate::stream::{InStream, OutStream};

mod restore;
mod ship;
pub use restore::{run_restore_proxy, RestoreOptions};

/// Exit status of a proxy whose process was lost with its node, or that
/// could not reach roamd.
pub const EXIT_LOST: i32 = 255;
/// The program was not found on the node (as a shell says).
pub const EXIT_NOT_FOUND: i32 = 127;
/// The program could not be executed on the node.
pub const EXIT_CANNOT_EXEC: i32 = 126;

/// How long a proxy keeps trying to reach a restarting home daemon.
const REATTACH_LIMIT: Duration = Duration::from_secs(120);

/// What `roam run` asks for.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub socket: PathBuf,
    pub argv: Vec<OsString>,
    /// The file to run, when not argv[0] (binfmt_misc gives both).
    pub program: Option<OsString>,
    pub node: Option<String>,
    pub mode: Option<Mode>,
    pub reservation: Option<(u64, u32)>,
    pub rank: Option<(u32, u32)>,
    /// Read no stdin (ranks other than 0 of a `-N` job).
    pub stdin_null: bool,
    /// Ship the program to the node rather than run the file the node
    /// sees (docs/design/staging.md).
    pub ship: bool,
    /// Run it confined (`SpawnSpec::confine`).
    pub confine: bool,
}

/// How the proxy ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Exit(i32),
    Signal(i32),
}

/// Ends the calling process with `outcome`.
pub fn finish(outcome: Outcome) -> ! {
    let _ = std::io::stdout().flush();
    match outcome {
        Outcome::Exit(code) => std::process::exit(code),
        Outcome::Signal(sig) => roam_sys::signal::die_by_signal(sig),
    }
}

/// What the proxy set up before its runtime existed.
struct Early {
    pending: PendingClient,
    /// The spawn request, and the file to ship, for asking again after
    /// staging it.
    spawn: LocalMsg,
    ship: Option<ship::Ship>,
    tty: Option<TtySpec>,
    stdin_null: bool,
    /// Read end of the pipe the signal handlers write to.
    signals: Option<std::os::fd::OwnedFd>,
}

/// Runs the proxy; never returns.
///
/// The request goes out first, before anything else is set up: the home
/// and the node start the process while we take our title and build our
/// runtime, which a short run would otherwise wait for.
pub fn run_proxy(opts: RunOptions) -> ! {
    if opts.argv.is_empty() {
        eprintln!("roam: nothing to run");
        finish(Outcome::Exit(2));
    }
    let prog = opts.argv[0].to_string_lossy().into_owned();
    // The program's architecture decides where it can run.
    let file = opts.program.as_ref().unwrap_or(&opts.argv[0]);
    let located = match crate::locate::locate(file, std::env::var_os("PATH").as_deref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("roam: {e}");
            finish(Outcome::Exit(EXIT_CANNOT_EXEC));
        }
    };
    let ship = if opts.ship {
        let shipped = match &located {
            Some(l) if l.script.is_empty() => ship::Ship::of(&l.path).map_err(|e| e.to_string()),
            Some(_) => Err("--ship sends ELF programs only, not scripts".to_owned()),
            None => Err("--ship needs the program here, to send it".to_owned()),
        };
        match shipped {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("roam: {prog}: {e}");
                finish(Outcome::Exit(EXIT_CANNOT_EXEC));
            }
        }
    } else {
        None
    };
    let tty = if opts.stdin_null { None } else { tty_spec() };
    let mut spec = build_spec(&opts, tty.clone(), located.as_ref());
    spec.staged = ship.as_ref().map(|s| s.hash);
    let stdin_null = spec.null[0];
    let spawn = LocalMsg::Spawn {
        spec: Box::new(spec),
        node: opts.node.clone(),
        mode: opts.mode,
        reservation: opts.reservation,
    };
    let pending = match Client::start(&opts.socket, "proxy", Some(&spawn)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("roam: {}", error_chain(&e));
            finish(Outcome::Exit(EXIT_LOST));
        }
    };
    // Catch signals from now on. One arriving before this point has its
    // default action: if it kills us, the home sees our connection close
    // and kills the remote process too.
    let signals = match roam_sys::signal::catch_into_pipe(&roam_sys::signal::forwardable()) {
        Ok(fd) => Some(fd),
        Err(e) => {
            tracing::warn!("cannot catch signals: {e}");
            None
        }
    };
    // Look like the remote program to ps and top.
    let argv: Vec<Vec<u8>> = opts.argv.iter().map(|a| a.as_bytes().to_vec()).collect();
    let _ = roam_sys::title::set_cmdline(&argv);
    let base = argv[0].rsplit(|b| *b == b'/').next().unwrap_or(&argv[0]);
    let _ = roam_sys::title::set_comm(base);
    let rt = runtime();
    let early = Early {
        pending,
        spawn,
        ship,
        tty,
        stdin_null,
        signals,
    };
    let outcome = rt.block_on(proxy_main(opts, &prog, early));
    finish(outcome)
}

/// The proxy's single-threaded runtime, or the exit of a proxy that
/// cannot have one.
fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("roam: cannot start: {e}");
            finish(Outcome::Exit(EXIT_LOST));
        }
    }
}

fn build_spec(opts: &RunOptions, tty: Option<TtySpec>, located: Option<&Located>) -> SpawnSpec {
    let env = std::env::vars_os()
        .map(|(k, v)| {
            let mut e = k.as_bytes().to_vec();
            e.push(b'=');
            e.extend_from_slice(v.as_bytes());
            ByteBuf::from(e)
        })
        .collect();
    let cwd = std::env::current_dir()
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .unwrap_or_else(|_| b"/".to_vec());
    SpawnSpec {
        argv: opts
            .argv
            .iter()
            .map(|a| ByteBuf::from(a.as_bytes().to_vec()))
            .collect(),
        // The file the home read, when it found one.
        program: ByteBuf::from(match located {
            Some(l) => l.path.as_os_str().as_bytes().to_vec(),
            None => opts
                .program
                .as_ref()
                .unwrap_or(&opts.argv[0])
                .as_bytes()
                .to_vec(),
        }),
        env,
        cwd: ByteBuf::from(cwd),
        umask: roam_sys::cred::current_umask(),
        tty,
        rank: opts.rank,
        arch: located.map(|l| l.arch.to_string()),
        script: located
            .map(|l| l.script.iter().cloned().map(ByteBuf::from).collect())
            .unwrap_or_default(),
        null: null_stdio(opts),
        // Who the remote process is at home (identity forwarding).
        home_ppid: std::os::unix::process::parent_id(),
        home_host: roam_sys::procfs::hostname(),
        staged: None,
        confine: opts.confine,
    }
}

/// Which of our stdin, stdout, stderr are /dev/null (stdin counts as null
/// for ranks told to read none).
fn null_stdio(opts: &RunOptions) -> [bool; 3] {
    let null = |fd: std::os::fd::BorrowedFd<'_>| roam_sys::spawn::is_dev_null(fd);
    [
        opts.stdin_null || null(std::io::stdin().as_fd()),
        null(std::io::stdout().as_fd()),
        null(std::io::stderr().as_fd()),
    ]
}

fn tty_spec() -> Option<TtySpec> {
    let stdin = std::io::stdin();
    let fd0 = stdin.as_fd();
    if !roam_sys::pty::isatty(fd0) {
        return None;
    }
    let (rows, cols) = roam_sys::pty::get_winsize(fd0).unwrap_or((24, 80));
    let mut modes = roam_sys::pty::encode_modes(fd0).unwrap_or_default();
    if !roam_sys::pty::is_foreground(fd0) {
        // A background job starts while the shell's line editor already
        // holds the terminal in its own modes: give the process the
        // canonical input a terminal has when a job gets it (at `fg`).
        roam_sys::pty::cook_modes(&mut modes);
    }
    Some(TtySpec {
        stdin: true,
        stdout: roam_sys::pty::isatty(std::io::stdout().as_fd()),
        stderr: roam_sys::pty::isatty(std::io::stderr().as_fd()),
        rows,
        cols,
        modes,
    })
}

/// Signals that a terminal sends to a whole foreground process group; the
/// proxy sends them on to the remote process's group.
fn group_signal(native: i32) -> bool {
    matches!(
        native,
        libc::SIGINT | libc::SIGQUIT | libc::SIGTSTP | libc::SIGCONT
    )
}

fn exec_exit_code(e: &roam_proto::types::WireError) -> i32 {
    if e.code == ErrorCode::ExecFailed {
        if e.message.contains("No such file or directory") {
            EXIT_NOT_FOUND
        } else {
            EXIT_CANNOT_EXEC
        }
    } else {
        EXIT_LOST
    }
}

async fn proxy_main(opts: RunOptions, prog: &str, early: Early) -> Outcome {
    let (sig_tx, mut sig_rx) = mpsc::unbounded_channel::<i32>();
    if let Some(fd) = early.signals {
        forward_signals(fd, sig_tx);
    }
    // Start reading stdin while the node starts the process.
    let (stdin_tx, stdin_rx) = mpsc::channel::<Input>(4);
    if !early.stdin_null {
        start_stdin_reader(stdin_tx, early.tty.is_some());
    }
    let mut client = match early.pending.finish().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("roam: {}", error_chain(&e));
            return Outcome::Exit(EXIT_LOST);
        }
    };
    let mut answer = client.recv().await;
    if let (Ok(Some(LocalMsg::NotStaged { node })), Some(ship)) = (&answer, &early.ship) {
        answer = match ship.stage_then_spawn(&mut client, &early.spawn, node).await {
            Ok(m) => Ok(Some(m)),
            Err(restore::SendError::Client(e)) if !matches!(e, ClientError::Remote(_)) => Err(e),
            Err(e) => {
                eprintln!(
                    "roam: {prog}: cannot ship it to {node}: {}",
                    error_chain(&e)
                );
                return Outcome::Exit(EXIT_CANNOT_EXEC);
            }
        };
    }
    let answer = match answer {
        Ok(Some(LocalMsg::Error(e))) => Err(ClientError::Remote(e)),
        Ok(Some(m)) => Ok(m),
        Ok(None) => Err(ClientError::Closed),
        Err(e) => Err(e),
    };
    let (session, node) = match answer {
        Ok(LocalMsg::Spawned { session, node, .. }) => (session, node),
        Ok(LocalMsg::NodeLost { node, reason }) => {
            eprintln!("roam: {prog}: node {node} went down ({reason}) while starting it");
            return Outcome::Exit(EXIT_LOST);
        }
        Ok(other) => {
            eprintln!("roam: unexpected answer from roamd: {other:?}");
            return Outcome::Exit(EXIT_LOST);
        }
        Err(ClientError::Remote(e)) => {
            eprintln!("roam: {prog}: {e}");
            return Outcome::Exit(exec_exit_code(&e));
        }
        Err(e) => {
            eprintln!("roam: {}", error_chain(&e));
            return Outcome::Exit(EXIT_LOST);
        }
    };
    tracing::debug!("{prog} runs on {node} as session {session}");
    let mut p = Proxy::new(opts, early.tty.is_some(), session, node, prog.to_owned());
    p.stdin_null = early.stdin_null;
    p.run(client, &mut sig_rx, stdin_rx).await
}

/// Reads the signal pipe (see `roam_sys::signal::catch_into_pipe`: one
/// handler for every forwardable signal, cheaper at start-up than a tokio
/// signal stream per signal) into `tx`.
fn forward_signals(fd: std::os::fd::OwnedFd, tx: mpsc::UnboundedSender<i32>) {
    let pipe = match roam_sys::aio::async_file(fd) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("cannot watch signals: {e}");
            return;
        }
    };
    tokio::spawn(async move {
        let mut buf = [0u8; 64];
        loop {
            let Ok(mut ready) = pipe.readable().await else {
                return;
            };
            match ready.try_io(|f| f.get_ref().read(&mut buf)) {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(n)) => {
                    for &sig in &buf[..n] {
                        if tx.send(i32::from(sig)).is_err() {
                            return;
                        }
                    }
                }
                Err(_would_block) => {}
            }
        }
    });
}

/// Events from the helper threads.
enum Io {
    /// A writer thread wrote `n` bytes of stdout (0) or stderr (1).
    Wrote(usize, usize),
    /// A writer thread's descriptor is broken (EPIPE).
    Broken(usize),
}

enum Writer {
    NotStarted,
    Running(std::sync::mpsc::Sender<Vec<u8>>),
    /// Its descriptor broke, or it could not start.
    Gone,
}

/// Events from the connection task.
enum Conn {
    Msg(LocalMsg),
    /// The home daemon went away; reattaching.
    Lost,
    /// Reattached to a (restarted) home daemon.
    Back,
    /// Gave up reattaching.
    Gone(String),
}

struct Proxy {
    opts: RunOptions,
    tty: bool,
    session: SessionId,
    node: String,
    prog: String,
    stdin: OutStream,
    outs: [InStream; 2],
    /// The threads writing stdout (0) and stderr (1), started at the
    /// first output (a program that prints nothing costs no thread).
    writers: [Writer; 2],
    io_tx: Option<mpsc::UnboundedSender<Io>>,
    exit: Option<(ExitStatus, u64, u64)>,
    raw: Option<roam_sys::pty::RawMode>,
    remote_stopped: bool,
    pipe_broken: bool,
    /// Stdin is /dev/null (or not ours to read): nothing to send.
    stdin_null: bool,
}

impl Proxy {
    fn new(opts: RunOptions, tty: bool, session: SessionId, node: String, prog: String) -> Proxy {
        Proxy {
            opts,
            tty,
            session,
            node,
            prog,
            stdin: OutStream::default(),
            outs: Default::default(),
            writers: [Writer::NotStarted, Writer::NotStarted],
            io_tx: None,
            exit: None,
            raw: None,
            remote_stopped: false,
            pipe_broken: false,
            stdin_null: false,
        }
    }

    fn enter_raw(&mut self) {
        if !self.tty {
            return;
        }
        let stdin = std::io::stdin();
        if !roam_sys::pty::is_foreground(stdin.as_fd()) {
            return;
        }
        match self.raw.as_mut() {
            Some(r) => {
                let _ = r.reenter();
            }
            None => self.raw = roam_sys::pty::RawMode::enter(stdin.as_fd()).ok(),
        }
    }

    fn leave_raw(&mut self) {
        if let Some(r) = self.raw.as_mut() {
            r.restore();
        }
    }

    async fn run(
        &mut self,
        client: Client,
        sig_rx: &mut mpsc::UnboundedReceiver<i32>,
        mut stdin_rx: mpsc::Receiver<Input>,
    ) -> Outcome {
        let (io_tx, mut io_rx) = mpsc::unbounded_channel::<Io>();
        self.io_tx = Some(io_tx);
        if self.stdin_null {
            self.stdin.close_unsent();
        }
        let (conn_tx, mut conn_rx) = mpsc::unbounded_channel::<Conn>();
        let (out_tx, out_rx) = mpsc::unbounded_channel::<LocalMsg>();
        tokio::spawn(conn_task(
            client,
            self.opts.socket.clone(),
            self.session,
            conn_tx,
            out_rx,
        ));
        self.enter_raw();
        let mut stdin_open = !self.stdin_null;
        loop {
            if let Some(o) = self.pump(&out_tx) {
                self.leave_raw();
                return o;
            }
            let want_stdin = stdin_open && self.stdin.room() >= MAX_DATA_CHUNK;
            tokio::select! {
                ev = conn_rx.recv() => match ev {
                    Some(Conn::Msg(m)) => {
                        if let Some(o) = self.on_msg(m, &out_tx) {
                            self.leave_raw();
                            return o;
                        }
                    }
                    Some(Conn::Lost) => {
                        tracing::debug!("home daemon lost; reattaching");
                    }
                    Some(Conn::Back) => {}
                    Some(Conn::Gone(why)) => {
                        self.leave_raw();
                        eprintln!("roam: {}: lost contact with roamd: {why}", self.prog);
                        return Outcome::Exit(EXIT_LOST);
                    }
                    None => {
                        self.leave_raw();
                        eprintln!("roam: {}: lost contact with roamd", self.prog);
                        return Outcome::Exit(EXIT_LOST);
                    }
                },
                input = stdin_rx.recv(), if want_stdin => match input {
                    Some(Input::Data(c)) => self.stdin.push(&c),
                    Some(Input::Foreground(ack)) => {
                        self.enter_raw();
                        let _ = ack.send(());
                    }
                    Some(Input::End) | None => {
                        stdin_open = false;
                        self.stdin.set_eof();
                    }
                },
                ev = io_rx.recv() => match ev {
                    Some(Io::Wrote(i, n)) => self.outs[i].mark_delivered(n),
                    Some(Io::Broken(i)) => {
                        self.writers[i] = Writer::Gone;
                        // What the writer held is lost with the descriptor.
                        self.outs[i].mark_delivered(usize::MAX);
                        if i == 0 && !self.pipe_broken {
                            // As locally: writing to a closed pipe kills the writer.
                            self.pipe_broken = true;
                            self.signal(&out_tx, libc::SIGPIPE, false);
                        }
                    }
                    None => {}
                },
                sig = sig_rx.recv() => {
                    if let Some(sig) = sig {
                        self.on_signal(sig, &out_tx);
                    }
                }
            }
        }
    }

    /// The writer of stdout (0) or stderr (1), started if need be; `None`
    /// once its descriptor broke.
    fn writer(&mut self, i: usize) -> Option<&std::sync::mpsc::Sender<Vec<u8>>> {
        if matches!(self.writers[i], Writer::NotStarted) {
            self.writers[i] = self
                .io_tx
                .clone()
                .and_then(|tx| start_writer(i, i as i32 + 1, tx))
                .map_or(Writer::Gone, Writer::Running);
        }
        match &self.writers[i] {
            Writer::Running(w) => Some(w),
            _ => None,
        }
    }

    fn signal(&self, out: &mpsc::UnboundedSender<LocalMsg>, native: i32, group: bool) {
        if let Some(signal) = roam_sys::signal::to_wire(native) {
            let _ = out.send(LocalMsg::Stream(LinkMsg::Signal {
                session: self.session,
                signal,
                group,
            }));
        }
    }

    fn on_signal(&mut self, sig: i32, out: &mpsc::UnboundedSender<LocalMsg>) {
        if sig == libc::SIGWINCH {
            if self.tty {
                if let Some((rows, cols)) = roam_sys::pty::get_winsize(std::io::stdin().as_fd()) {
                    let _ = out.send(LocalMsg::Stream(LinkMsg::Resize {
                        session: self.session,
                        rows,
                        cols,
                    }));
                }
            }
            if !self.tty {
                self.signal(out, sig, false);
            }
            return;
        }
        if sig == libc::SIGCONT {
            self.remote_stopped = false;
            self.enter_raw();
        }
        self.signal(out, sig, group_signal(sig));
    }

    /// Sends what can be sent and hands output to the writers; the outcome
    /// once the process has ended and all its output is written.
    fn pump(&mut self, out: &mpsc::UnboundedSender<LocalMsg>) -> Option<Outcome> {
        while let Some((offset, data)) = self.stdin.next_chunk() {
            let _ = out.send(LocalMsg::Stream(LinkMsg::Data {
                session: self.session,
                chan: Chan::Stdin,
                offset,
                data,
            }));
        }
        if let Some(offset) = self.stdin.eof_to_send() {
            let _ = out.send(LocalMsg::Stream(LinkMsg::Eof {
                session: self.session,
                chan: Chan::Stdin,
                offset,
            }));
        }
        for (i, chan) in [(0, Chan::Stdout), (1, Chan::Stderr)] {
            while self.outs[i].pending() > 0 {
                let chunk = self.outs[i].take(MAX_DATA_CHUNK);
                let n = chunk.len();
                let sent = self.writer(i).is_some_and(|w| w.send(chunk).is_ok());
                if !sent {
                    self.outs[i].mark_delivered(n);
                }
            }
            if let Some(offset) = self.outs[i].ack_due() {
                let _ = out.send(LocalMsg::Stream(LinkMsg::Ack {
                    session: self.session,
                    chan,
                    offset,
                }));
            }
        }
        let (status, out_end, err_end) = self.exit?;
        if self.outs[0].delivered() < out_end || self.outs[1].delivered() < err_end {
            return None;
        }
        let _ = out.send(LocalMsg::Stream(LinkMsg::Done {
            session: self.session,
        }));
        Some(match status {
            ExitStatus::Exited(code) => Outcome::Exit(code),
            ExitStatus::Signaled { signal, .. } => match roam_sys::signal::to_native(signal) {
                Some(s) => Outcome::Signal(s),
                None => Outcome::Exit(128 + i32::from(signal.0)),
            },
        })
    }

    fn on_msg(&mut self, msg: LocalMsg, out: &mpsc::UnboundedSender<LocalMsg>) -> Option<Outcome> {
        match msg {
            LocalMsg::Stream(m) => self.on_stream(m, out),
            LocalMsg::NodeLost { node, reason } => {
                self.leave_raw();
                let pid = std::process::id();
                if node == "?" {
                    eprintln!("roam: {}: lost ({reason}); home pid {pid}", self.prog);
                } else {
                    eprintln!(
                        "roam: {}: node {node} is down ({reason}); the process (home pid {pid}) is lost",
                        self.prog
                    );
                }
                Some(Outcome::Exit(EXIT_LOST))
            }
            LocalMsg::Reattached { node, .. } => {
                self.node = node;
                None
            }
            LocalMsg::Error(e) => {
                self.leave_raw();
                eprintln!("roam: {}: {e}", self.prog);
                Some(Outcome::Exit(EXIT_LOST))
            }
            _ => None,
        }
    }

    fn on_stream(&mut self, m: LinkMsg, out: &mpsc::UnboundedSender<LocalMsg>) -> Option<Outcome> {
        match m {
            LinkMsg::Data {
                chan, offset, data, ..
            } => match chan {
                Chan::Stdout => self.outs[0].accept(offset, data),
                Chan::Stderr => self.outs[1].accept(offset, data),
                Chan::Stdin => {}
            },
            LinkMsg::Eof { chan, offset, .. } => match chan {
                Chan::Stdout => self.outs[0].set_eof(offset),
                Chan::Stderr => self.outs[1].set_eof(offset),
                Chan::Stdin => {}
            },
            LinkMsg::Ack {
                chan: Chan::Stdin,
                offset,
                ..
            } => self.stdin.ack(offset),
            LinkMsg::PathUp { .. } => {
                self.outs[0].reset_ack();
                self.outs[1].reset_ack();
                let _ = out.send(LocalMsg::Stream(LinkMsg::Resume {
                    session: self.session,
                    delivered: [0, self.outs[0].received(), self.outs[1].received()],
                }));
            }
            LinkMsg::Resume { delivered, .. } => self.stdin.rewind(delivered[0]),
            LinkMsg::Stopped { .. } => {
                // Mirror the stop so the shell sees the job stopped.
                self.remote_stopped = true;
                self.leave_raw();
                roam_sys::signal::stop_self();
            }
            LinkMsg::Continued { .. } => {
                self.remote_stopped = false;
            }
            LinkMsg::Exited {
                status,
                stdout_end,
                stderr_end,
                ..
            } => {
                self.exit = Some((status, stdout_end, stderr_end));
            }
            _ => {}
        }
        None
    }
}

/// What the stdin reader thread reports.
enum Input {
    Data(Vec<u8>),
    /// End of file, or an error.
    End,
    /// Our process group became the terminal's foreground group while we
    /// ran in the background (`fg` of a running job, which sends no
    /// SIGCONT): go raw, then answer, before the reader reads.
    Foreground(std::sync::mpsc::Sender<()>),
}

/// Reads stdin in a thread (a blocking read on a descriptor we share with
/// the shell: it must stay blocking). With a terminal, reads only while in
/// the foreground, as a local program would be stopped for reading it in
/// the background.
fn start_stdin_reader(tx: mpsc::Sender<Input>, tty: bool) {
    let fd = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => fd,
        Err(_) => {
            let _ = tx.blocking_send(Input::End);
            return;
        }
    };
    let _ = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut f = File::from(fd);
            let mut buf = vec![0u8; MAX_DATA_CHUNK];
            if tty {
                // A read cut short by a stop is restarted when we are
                // continued, perhaps in the background (`bg`): it must not
                // stop us again (SIGTTIN), but fail, so we wait below.
                if let Err(e) = roam_sys::pty::fail_background_reads() {
                    tracing::debug!("cannot block SIGTTIN: {e}");
                }
            }
            // Started in the foreground, the proxy goes raw by itself.
            let mut was_foreground = true;
            loop {
                if tty {
                    if !roam_sys::pty::is_foreground(f.as_fd()) {
                        was_foreground = false;
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                    if !was_foreground {
                        was_foreground = true;
                        let (ack_tx, ack_rx) = std::sync::mpsc::channel();
                        if tx.blocking_send(Input::Foreground(ack_tx)).is_err() {
                            return;
                        }
                        let _ = ack_rx.recv();
                    }
                }
                match f.read(&mut buf) {
                    Ok(0) => {
                        let _ = tx.blocking_send(Input::End);
                        return;
                    }
                    Ok(n) => {
                        if tx.blocking_send(Input::Data(buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) if tty && !roam_sys::pty::is_foreground(f.as_fd()) => {}
                    Err(_) => {
                        let _ = tx.blocking_send(Input::End);
                        return;
                    }
                }
            }
        });
}

/// Writes stdout or stderr in a thread, reporting progress.
fn start_writer(
    index: usize,
    fd: i32,
    events: mpsc::UnboundedSender<Io>,
) -> Option<std::sync::mpsc::Sender<Vec<u8>>> {
    let owned = match fd {
        1 => std::io::stdout().as_fd().try_clone_to_owned(),
        _ => std::io::stderr().as_fd().try_clone_to_owned(),
    }
    .ok()?;
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::Builder::new()
        .name(format!("out{}", owned.as_raw_fd()))
        .spawn(move || {
            let mut f = File::from(owned);
            for chunk in rx {
                match f.write_all(&chunk) {
                    Ok(()) => {
                        if events.send(Io::Wrote(index, chunk.len())).is_err() {
                            return;
                        }
                    }
                    Err(_) => {
                        let _ = events.send(Io::Broken(index));
                        return;
                    }
                }
            }
        })
        .ok()?;
    Some(tx)
}

/// Owns the connection to roamd: relays messages both ways and, when the
/// daemon goes away (a restart), reconnects and reattaches to the session.
async fn conn_task(
    client: Client,
    socket: PathBuf,
    session: SessionId,
    events: mpsc::UnboundedSender<Conn>,
    mut out: mpsc::UnboundedReceiver<LocalMsg>,
) {
    let mut client = Some(client);
    loop {
        let Some(c) = client.take() else { return };
        let (mut reader, mut writer) = c.into_parts();
        // Relay until the connection breaks.
        loop {
            tokio::select! {
                m = reader.read_msg::<LocalMsg>("local") => match m {
                    Ok(Some(m)) => {
                        if events.send(Conn::Msg(m)).is_err() {
                            return;
                        }
                    }
                    _ => break,
                },
                m = out.recv() => match m {
                    Some(m) => {
                        if writer.write_msg("local", &m).await.is_err() {
                            break;
                        }
                    }
                    None => return,
                },
            }
        }
        let _ = events.send(Conn::Lost);
        // Reattach. Signals sent meanwhile are kept; stream data is sent
        // again after the path is back (Resume).
        let started = Instant::now();
        let mut kept: Vec<LocalMsg> = Vec::new();
        loop {
            if started.elapsed() > REATTACH_LIMIT {
                let _ = events.send(Conn::Gone(format!(
                    "roamd did not come back within {}s",
                    REATTACH_LIMIT.as_secs()
                )));
                return;
            }
            tokio::select! {
                m = out.recv() => match m {
                    Some(m @ LocalMsg::Stream(LinkMsg::Signal { .. })) => kept.push(m),
                    Some(_) => {}
                    None => return,
                },
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    let Ok(mut c) = Client::connect(&socket, "proxy").await else { continue };
                    if c.send(&LocalMsg::Reattach { session }).await.is_err() {
                        continue;
                    }
                    for m in kept.drain(..) {
                        let _ = c.send(&m).await;
                    }
                    let _ = events.send(Conn::Back);
                    client = Some(c);
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_errors_map_to_shell_codes() {
        let nf = roam_proto::types::WireError::new(
            ErrorCode::ExecFailed,
            "cannot execute 'nope': No such file or directory (os error 2)",
        );
        assert_eq!(exec_exit_code(&nf), 127);
        let perm = roam_proto::types::WireError::new(
            ErrorCode::ExecFailed,
            "cannot execute '/etc/passwd': Permission denied (os error 13)",
        );
        assert_eq!(exec_exit_code(&perm), 126);
        let other = roam_proto::types::WireError::new(ErrorCode::NoCapacity, "full");
        assert_eq!(exec_exit_code(&other), EXIT_LOST);
    }

    #[test]
    fn terminal_signals_go_to_the_group() {
        assert!(group_signal(libc::SIGINT));
        assert!(group_signal(libc::SIGTSTP));
        assert!(!group_signal(libc::SIGTERM));
        assert!(!group_signal(libc::SIGUSR1));
    }

    #[test]
    fn spec_carries_caller_context() {
        let opts = RunOptions {
            socket: "/nonexistent".into(),
            argv: vec!["echo".into(), "hi".into()],
            program: None,
            node: None,
            mode: None,
            reservation: None,
            rank: Some((1, 4)),
            stdin_null: true,
            ship: false,
            confine: false,
        };
        let spec = build_spec(&opts, None, None);
        assert_eq!(spec.program.as_slice(), b"echo");
        assert_eq!(spec.argv.len(), 2);
        assert_eq!(spec.rank, Some((1, 4)));
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(spec.cwd.as_slice(), cwd.as_os_str().as_bytes());
        assert!(spec.env.iter().any(|e| e.starts_with(b"PATH=")));
    }
}
