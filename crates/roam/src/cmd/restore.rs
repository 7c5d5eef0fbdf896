//! `roam restore DIR [--node NAME]`: rebuild a checkpointed process; this
//! process becomes its proxy (stdio, signals, exit status).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use roam_ckpt::local::Ended;

#[derive(clap::Args)]
pub struct Args {
    /// A directory `roam checkpoint` wrote.
    dir: PathBuf,
    /// The node to restore on (default: this machine, root only); the
    /// process there is a remote process whose proxy this command is.
    #[arg(long)]
    node: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(node) = &args.node {
        roam_core::proxy::run_restore_proxy(roam_core::proxy::RestoreOptions {
            socket: roam_core::client::socket_path(),
            image: args.dir.join(roam_ckpt::local::IMAGE_FILE),
            node: node.clone(),
        });
    }
    if !roam_sys::cred::is_root() {
        bail!("only root can restore a process (it takes the image's credentials)");
    }
    // Signals are caught before the process exists: none is lost.
    let caught = roam_sys::signal::catch_into_pipe(&roam_sys::signal::forwardable())
        .context("catch signals")?;
    let r = roam_ckpt::local::restore_here(&args.dir)
        .with_context(|| format!("restore of {}", args.dir.display()))?;
    match roam_ckpt::local::proxy(r.pid, &caught).context("wait for the restored process")? {
        Ended::Exited(code) => Ok(ExitCode::from(code as u8)),
        Ended::Killed(sig) => roam_sys::signal::die_by_signal(sig),
    }
}
