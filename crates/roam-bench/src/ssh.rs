//! The ssh peer: a private sshd inside a node's namespaces, and ssh
//! commands to it, over a fresh connection or a reused ControlMaster one.
//!
//! The remote command runs the way sshd always runs one: the user's login
//! shell with `-c`. Debian's bash sources `~/.bashrc` when started by sshd,
//! and root's may run slow start-up code (pyenv, conda...), which would
//! measure that code, not ssh. So sshd runs in a mount namespace of its own
//! where the user's home is an empty directory: the shell starts clean. Its
//! `/run` is a private tmpfs too (for `/run/sshd`), so nothing of it shows
//! on the node or the host.

use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use roam_testbed::Testbed;

const SSHD: &str = "/usr/sbin/sshd";
const PORT: u16 = 2222;
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How an ssh command reaches the sshd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conn {
    /// A new TCP connection, key exchange and authentication every time.
    Fresh,
    /// Multiplexed over a persistent ControlMaster connection.
    Master,
}

/// A running private sshd; stopped (with its ControlMaster) when dropped.
pub struct Sshd {
    child: Child,
    dir: PathBuf,
    addr: Ipv4Addr,
    /// What the remote side runs, in words, for the report.
    pub shell_note: String,
}

/// Why the ssh peer cannot be measured here, if it cannot.
pub fn unavailable() -> Option<String> {
    let missing: Vec<&str> = [SSHD, "ssh", "ssh-keygen"]
        .into_iter()
        .filter(|p| !on_path(p))
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "not installed: {} (apt-get install openssh-server openssh-client)",
            missing.join(", ")
        )
    })
}

pub fn on_path(prog: &str) -> bool {
    if prog.contains('/') {
        return Path::new(prog).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
}

pub fn run_quiet(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Sshd {
    /// Starts sshd inside `node`'s namespaces, with keys and config in
    /// `dir/ssh` (a directory the node can see), and waits until it accepts
    /// connections.
    pub fn start(tb: &Testbed, node: &str, dir: &Path) -> anyhow::Result<Sshd> {
        let addr = tb
            .node_addr(node)
            .with_context(|| format!("no node {node}"))?;
        let dir = dir.join("ssh");
        let home = dir.join("empty-home");
        fs::create_dir_all(&home).with_context(|| format!("cannot create {}", home.display()))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        for key in ["host_key", "client_key"] {
            run_quiet(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-C"])
                    .args(["roam-bench", "-f"])
                    .arg(dir.join(key)),
            )?;
        }
        fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys"))?;
        let host_pub = fs::read_to_string(dir.join("host_key.pub"))?;
        let host_pub: Vec<&str> = host_pub.split_whitespace().take(2).collect();
        fs::write(
            dir.join("known_hosts"),
            format!("[{addr}]:{PORT} {}\n", host_pub.join(" ")),
        )?;
        let d = dir.display();
        let config = format!(
            "ListenAddress {addr}:{PORT}\n\
             HostKey {d}/host_key\n\
             AuthorizedKeysFile {d}/authorized_keys\n\
             StrictModes no\n\
             UsePAM no\n\
             PermitRootLogin prohibit-password\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PermitUserEnvironment no\n\
             UseDNS no\n\
             PidFile none\n\
             PrintMotd no\n\
             PrintLastLog no\n\
             X11Forwarding no\n\
             MaxStartups 100\n\
             MaxSessions 100\n"
        );
        let config_path = dir.join("sshd_config");
        fs::write(&config_path, config)?;

        let user = nix::unistd::User::from_uid(nix::unistd::geteuid())?
            .context("the current user has no passwd entry")?;
        let log_path = dir.join("sshd.log");
        let log = File::create(&log_path)?;
        // sh, not sshd, is what unshare execs: it mounts, then execs sshd.
        let script = r#"mount -t tmpfs -o mode=755 roam-bench /run && mkdir -m 755 /run/sshd &&
            { [ ! -d "$2" ] || mount --bind "$1" "$2"; } && exec "$3" -D -e -f "$4""#;
        let mut cmd = tb.command_in(node, "unshare")?;
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            script,
            "sh",
        ])
        .arg(&home)
        .arg(&user.dir)
        .arg(SSHD)
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
        let child = cmd.spawn().context("cannot start sshd")?;
        let rc = user.dir.join(".bashrc");
        let shell_note = format!(
            "{} sshd in {node} ({addr}:{PORT}), key auth as {}; the command runs as `{} -c /bin/true` \
             with {} hidden behind an empty directory, so no rc file is sourced{}",
            ssh_version(),
            user.name,
            user.shell.display(),
            user.dir.display(),
            if rc.exists() {
                format!(" (without this, sshd's shell would source {})", rc.display())
            } else {
                String::new()
            }
        );
        let mut sshd = Sshd {
            child,
            dir,
            addr,
            shell_note,
        };
        sshd.wait_ready(&log_path)?;
        Ok(sshd)
    }

    fn wait_ready(&mut self, log: &Path) -> anyhow::Result<()> {
        let start = Instant::now();
        let target = SocketAddr::from((self.addr, PORT));
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "sshd exited ({status}): {}",
                    fs::read_to_string(log).unwrap_or_default().trim()
                );
            }
            if TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if start.elapsed() > READY_TIMEOUT {
                bail!(
                    "sshd does not accept connections on {target} after {READY_TIMEOUT:?}: {}",
                    fs::read_to_string(log).unwrap_or_default().trim()
                );
            }
            sleep(Duration::from_millis(50));
        }
    }

    fn base(&self) -> Command {
        let d = &self.dir;
        let mut cmd = Command::new("ssh");
        cmd.args(["-F", "/dev/null", "-p", &PORT.to_string(), "-i"])
            .arg(d.join("client_key"))
            .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                d.join("known_hosts").display()
            ))
            .args([
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "LogLevel=ERROR",
            ]);
        cmd
    }

    fn control_path(&self) -> String {
        format!("ControlPath={}", self.dir.join("cm").display())
    }

    /// `ssh [options] root@node REMOTE...`.
    pub fn command(&self, conn: Conn, remote: &[&str]) -> Command {
        let mut cmd = self.base();
        match conn {
            Conn::Fresh => cmd.args(["-o", "ControlMaster=no", "-o", "ControlPath=none"]),
            Conn::Master => cmd
                .args(["-o", "ControlMaster=auto", "-o", "ControlPersist=60", "-o"])
                .arg(self.control_path()),
        };
        cmd.arg(format!("root@{}", self.addr)).args(remote);
        cmd
    }
}

pub fn ssh_version() -> String {
    Command::new("ssh")
        .arg("-V")
        .output()
        .map(|o| {
            let v = String::from_utf8_lossy(&o.stderr);
            v.split([',', ' ']).next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_default()
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // The ControlMaster (a daemon of its own) first, then sshd; the
        // testbed's teardown kills whatever else is left in the node.
        let _ = self
            .base()
            .arg("-o")
            .arg(self.control_path())
            .args(["-O", "exit"])
            .arg(format!("root@{}", self.addr))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
