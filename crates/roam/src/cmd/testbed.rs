//! `roam testbed up|down|status`: a cluster of network namespaces on this
//! machine, for trying roam and for its end-to-end tests.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
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
        /// The roamd binary (default: next to this roam).
        #[arg(long)]
        roamd: Option<PathBuf>,
    },
    /// Remove a testbed (all of them without --id).
    Down {
        #[arg(long)]
        id: Option<u32>,
    },
    /// List the testbeds.
    Status,
}

/// `roamd` next to the running `roam`, else on PATH.
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
        } => {
            let mut opts = TestbedOpts::new(nodes, roamd.unwrap_or_else(default_roamd));
            opts.heartbeat_ms = heartbeat_ms;
            opts.timeout_ms = timeout_ms;
            let tb = Testbed::up(opts).context("cannot build the testbed")?;
            tb.wait_nodes_up(nodes as usize, Duration::from_secs(20))?;
            println!("testbed {} is up: home + {} nodes", tb.id(), nodes);
            println!("state and logs: {}", tb.dir().display());
            println!("export ROAM_SOCKET={}", tb.socket().display());
            // The daemons outlive this command; `roam testbed down` removes them.
            std::mem::forget(tb);
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
                println!("testbed {id}: /run/roam-testbed/{id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
