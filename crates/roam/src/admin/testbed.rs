//! `roam testbed up|down|status`: a cluster of network namespaces on this
//! machine, for trying roam and for its end-to-end tests.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use roam_elf::Arch;
use roam_testbed::{Testbed, TestbedOpts};

#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Build a cluster: this machine is the home, each node a network
    /// namespace with its own roamd.
    Up {
        /// Number of compute nodes.
        #[arg(long, default_value_t = 3)]
        nodes: u32,
        /// Heartbeat interval.
        #[arg(long, default_value_t = 1000)]
        heartbeat_ms: u64,
        /// Heartbeats missed this long declare a node down.
        #[arg(long, default_value_t = 4000)]
        timeout_ms: u64,
        /// The roamd binary (default: next to roam).
        #[arg(long)]
        roamd: Option<PathBuf>,
        /// Emulated nodes: n1 runs the first architecture (and only it)
        /// through qemu-user, n2 the second... (e.g. aarch64,s390x).
        #[arg(long, value_delimiter = ',')]
        arch: Vec<Arch>,
        /// Architectures the other nodes also run through qemu-user.
        #[arg(long, value_delimiter = ',')]
        runners: Vec<Arch>,
        /// Remote processes see this machine's files (the remote file
        /// system) instead of their node's own tree.
        #[arg(long)]
        home_files: bool,
    },
    /// Remove a testbed (all of them without --id).
    Down {
        #[arg(long)]
        id: Option<u32>,
    },
    /// List the testbeds.
    Status,
    /// Kill a daemon (home or a node) with SIGKILL, as a crash would.
    Kill(Target),
    /// Start a daemon again (after kill).
    Start(Target),
    /// Take a node's network link down.
    Cut(Target),
    /// Bring a node's network link back up.
    Heal(Target),
}

#[derive(clap::Args)]
pub struct Target {
    /// "home" or a node name (n1, n2...).
    name: String,
    /// The testbed (default: the only one).
    #[arg(long)]
    id: Option<u32>,
}

fn open(id: Option<u32>) -> anyhow::Result<Testbed> {
    let id = match id {
        Some(id) => id,
        None => match roam_testbed::list().as_slice() {
            [one] => *one,
            [] => anyhow::bail!("no testbed is up (roam testbed up)"),
            many => anyhow::bail!("several testbeds are up ({many:?}): choose one with --id"),
        },
    };
    Ok(Testbed::open(id)?)
}

/// `roamd` next to the running `roam-admin`, else on PATH.
pub fn default_roamd() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("roamd")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("roamd"))
}

pub fn run(cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::Up {
            nodes,
            heartbeat_ms,
            timeout_ms,
            roamd,
            arch,
            runners,
            home_files,
        } => {
            let mut opts = TestbedOpts::new(nodes, roamd.unwrap_or_else(default_roamd));
            opts.heartbeat_ms = heartbeat_ms;
            opts.timeout_ms = timeout_ms;
            opts.arch = arch;
            opts.runners = runners;
            opts.home_files = home_files;
            let tb = Testbed::up(opts).context("cannot build the testbed")?;
            tb.wait_nodes_up(nodes as usize, Duration::from_secs(20))?;
            println!("testbed {} is up: home + {} nodes", tb.id(), nodes);
            println!("state and logs: {}", tb.dir().display());
            println!("export ROAM_SOCKET={}", tb.socket().display());
            // The daemons outlive this command; `roam testbed down` removes them.
            tb.keep();
        }
        Cmd::Down { id } => match id {
            Some(id) => {
                roam_testbed::down_id(id)?;
                println!("testbed {id} removed");
            }
            None => {
                let ids = roam_testbed::down_all()?;
                println!("removed {} testbed(s)", ids.len());
            }
        },
        Cmd::Status => {
            for id in roam_testbed::list() {
                let tb = Testbed::open(id)?;
                println!(
                    "testbed {id}: nodes {} (ROAM_SOCKET={})",
                    tb.node_names().join(" "),
                    tb.socket().display()
                );
            }
        }
        Cmd::Kill(t) => open(t.id)?.kill_daemon(&t.name)?,
        Cmd::Start(t) => open(t.id)?.start_daemon(&t.name)?,
        Cmd::Cut(t) => open(t.id)?.cut_link(&t.name)?,
        Cmd::Heal(t) => open(t.id)?.heal_link(&t.name)?,
    }
    Ok(ExitCode::SUCCESS)
}
