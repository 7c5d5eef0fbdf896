//! The sshfs peer of the files benchmark: a private sshd on the home (in
//! the host's namespaces, listening on the testbed's bridge address) that
//! serves the home's files over SFTP, and an sshfs mount of the home's `/`
//! inside a node's network and mount namespaces.
//!
//! The sshd runs `internal-sftp` (no login shell, so no rc file, between
//! sshfs and the files), as PID 1 of a PID namespace of its own, started
//! by `unshare --kill-child`: killing `unshare` kills sshd and, with it,
//! every session it forked. Its mount namespace is private with a tmpfs on
//! `/run` (for `/run/sshd`), so sshfs sees the home's tree except `/run`.
//! sshfs uses OpenSSH's defaults (cipher included) and
//! `no_contain_symlinks` (Debian's sshfs refuses absolute symbolic links
//! by default, which a chroot into the mount needs: `/lib64/ld-linux...`).

use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use roam_testbed::Testbed;

use crate::children;
use crate::ssh::{on_path, run_quiet, ssh_version};

const SSHD: &str = "/usr/sbin/sshd";
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a mount or unmount may take.
const MOUNT_LIMIT: Duration = Duration::from_secs(20);

/// Why the sshfs peer cannot be measured here, if it cannot.
pub fn unavailable() -> Option<String> {
    let missing: Vec<&str> = [SSHD, "ssh", "ssh-keygen", "sshfs", "unshare", "chroot"]
        .into_iter()
        .filter(|p| !on_path(p))
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "not installed: {} (apt-get install sshfs openssh-server openssh-client)",
            missing.join(", ")
        )
    })
}

/// A private sshd serving the home's files; stopped when dropped.
pub struct HomeSshd {
    /// `unshare`, whose death kills sshd and its sessions.
    child: Child,
    dir: PathBuf,
    addr: Ipv4Addr,
    port: u16,
}

/// A port on `addr` nobody listens on right now.
fn free_port(addr: Ipv4Addr) -> anyhow::Result<u16> {
    let l = TcpListener::bind((addr, 0)).with_context(|| format!("cannot bind {addr}:0"))?;
    Ok(l.local_addr()?.port())
}

impl HomeSshd {
    /// Starts sshd on `addr` (the home's address on the testbed's bridge)
    /// with keys and config in `dir/sshfs` (a directory the nodes see), and
    /// waits until it accepts connections.
    pub fn start(addr: Ipv4Addr, dir: &Path) -> anyhow::Result<HomeSshd> {
        let dir = dir.join("sshfs");
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
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
        let port = free_port(addr)?;
        let host_pub = fs::read_to_string(dir.join("host_key.pub"))?;
        let host_pub: Vec<&str> = host_pub.split_whitespace().take(2).collect();
        fs::write(
            dir.join("known_hosts"),
            format!("[{addr}]:{port} {}\n", host_pub.join(" ")),
        )?;
        let d = dir.display();
        let config = format!(
            "ListenAddress {addr}:{port}\n\
             HostKey {d}/host_key\n\
             AuthorizedKeysFile {d}/authorized_keys\n\
             StrictModes no\n\
             UsePAM no\n\
             PermitRootLogin prohibit-password\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UseDNS no\n\
             PidFile none\n\
             X11Forwarding no\n\
             Subsystem sftp internal-sftp\n"
        );
        let config_path = dir.join("sshd_config");
        fs::write(&config_path, config)?;
        let log_path = dir.join("sshd.log");
        let log = File::create(&log_path)?;
        let script = r#"mount -t tmpfs -o mode=755 roam-bench /run && mkdir -m 755 /run/sshd &&
            exec "$1" -D -e -f "$2""#;
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--pid", "--fork"])
            .args(["--kill-child", "--", "/bin/sh", "-c", script, "sh", SSHD])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start sshd")?;
        let mut sshd = HomeSshd {
            child,
            dir,
            addr,
            port,
        };
        sshd.wait_ready(&log_path)?;
        Ok(sshd)
    }

    fn wait_ready(&mut self, log: &Path) -> anyhow::Result<()> {
        let start = Instant::now();
        let target = SocketAddr::from((self.addr, self.port));
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

    /// The report's words on this peer.
    pub fn note(&self, node: &str, mnt: &str) -> String {
        format!(
            "sshfs peer: {} sshd on the home ({}:{}, internal-sftp, key auth as root), \
             mounted by {} at {mnt} inside {node}'s namespaces with ssh's default cipher ({})",
            ssh_version(),
            self.addr,
            self.port,
            sshfs_version(),
            default_cipher(),
        )
    }
}

impl Drop for HomeSshd {
    fn drop(&mut self) {
        // unshare's death SIGKILLs sshd, PID 1 of its PID namespace, and
        // the kernel then kills every session in that namespace.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sshfs_version() -> String {
    Command::new("sshfs")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map(|o| {
            let all = [o.stdout, o.stderr].concat();
            let v = String::from_utf8_lossy(&all);
            v.lines()
                .find_map(|l| l.strip_prefix("SSHFS version "))
                .map_or_else(|| "sshfs".into(), |v| format!("sshfs {}", v.trim()))
        })
        .unwrap_or_else(|_| "sshfs".into())
}

/// The cipher an OpenSSH client with no configuration offers first.
fn default_cipher() -> String {
    Command::new("ssh")
        .args(["-G", "-F", "/dev/null", "localhost"])
        .stdin(Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout).lines().find_map(|l| {
                l.strip_prefix("ciphers ")
                    .map(|c| c.split(',').next().unwrap_or("").to_string())
            })
        })
        .unwrap_or_else(|| "?".into())
}

/// Runs `cmd` to completion (killed after [`MOUNT_LIMIT`]), its output
/// to `log`, failing with that output if it fails.
fn run_limited(mut cmd: Command, what: &str, log: &Path) -> anyhow::Result<()> {
    let out = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    let child = children::spawn(&mut cmd, MOUNT_LIMIT);
    // The command keeps our descriptors of the log otherwise.
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let (status, overdue) = child
        .and_then(|mut c| children::wait(&mut c))
        .with_context(|| format!("cannot {what}"))?;
    let text = || {
        fs::read_to_string(log)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    if overdue {
        bail!("cannot {what}: killed after {MOUNT_LIMIT:?}: {}", text());
    }
    if !status.success() {
        bail!("cannot {what} ({status}): {}", text());
    }
    Ok(())
}

/// The home's `/` mounted with sshfs at `mnt` inside node `node`'s
/// namespaces; unmounted when dropped (sshfs then exits; the testbed's
/// teardown kills it if not).
pub struct SshfsMount<'a> {
    tb: &'a Testbed,
    node: String,
    mnt: String,
    sshd: &'a HomeSshd,
    mounted: bool,
}

impl<'a> SshfsMount<'a> {
    /// Mounts the home's `/` served by `sshd` at `mnt` (made if missing) in
    /// `node`.
    pub fn mount(
        tb: &'a Testbed,
        node: &str,
        mnt: &str,
        sshd: &'a HomeSshd,
    ) -> anyhow::Result<SshfsMount<'a>> {
        let mut m = SshfsMount {
            tb,
            node: node.into(),
            mnt: mnt.into(),
            sshd,
            mounted: false,
        };
        let mut mkdir = tb.command_in(node, "mkdir")?;
        mkdir.args(["-p", mnt]);
        run_limited(mkdir, &format!("make {mnt} in {node}"), &m.log())?;
        m.attach()?;
        Ok(m)
    }

    fn log(&self) -> PathBuf {
        self.sshd.dir.join("sshfs.log")
    }

    fn attach(&mut self) -> anyhow::Result<()> {
        let d = &self.sshd.dir;
        let mut cmd = self.tb.command_in(&self.node, "sshfs")?;
        cmd.args(["-F", "/dev/null", "-p", &self.sshd.port.to_string(), "-o"])
            .arg(format!(
                "no_contain_symlinks,IdentityFile={},UserKnownHostsFile={},\
                 GlobalKnownHostsFile=/dev/null,StrictHostKeyChecking=yes,\
                 BatchMode=yes,IdentitiesOnly=yes,LogLevel=ERROR",
                d.join("client_key").display(),
                d.join("known_hosts").display()
            ))
            .arg(format!("root@{}:/", self.sshd.addr))
            .arg(&self.mnt);
        // sshfs returns once mounted (its daemon stays behind).
        run_limited(
            cmd,
            &format!("mount sshfs at {} in {}", self.mnt, self.node),
            &self.log(),
        )?;
        self.mounted = true;
        Ok(())
    }

    fn detach(&mut self) -> anyhow::Result<()> {
        if !self.mounted {
            return Ok(());
        }
        let mut cmd = self.tb.command_in(&self.node, "umount")?;
        cmd.arg(&self.mnt);
        run_limited(
            cmd,
            &format!("unmount {} in {}", self.mnt, self.node),
            &self.log(),
        )?;
        self.mounted = false;
        Ok(())
    }

    /// Unmounts and mounts again: every cache of the mount (the kernel's
    /// and sshfs's own) starts empty.
    pub fn remount(&mut self) -> anyhow::Result<()> {
        self.detach()?;
        self.attach()
    }
}

impl Drop for SshfsMount<'_> {
    fn drop(&mut self) {
        if self.detach().is_err() && self.mounted {
            // Busy or hung: detach it lazily; sshfs exits when it is gone.
            if let Ok(mut cmd) = self.tb.command_in(&self.node, "umount") {
                let _ = cmd
                    .args(["-l", &self.mnt])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}
