//! `roam checkpoint PID -o DIR [--leave-running]`: capture a process into
//! an image (docs/design/checkpoint.md).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use roam_proto::local::LocalMsg;

#[derive(clap::Args)]
pub struct Args {
    /// The process: a local pid (root only).
    pid: i32,
    /// The directory the image is written to (created if missing).
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    dir: PathBuf,
    /// Let the process run on after the checkpoint (default: it ends).
    #[arg(long)]
    leave_running: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // A home pid of a remote process is the node's to capture.
    if let Ok(LocalMsg::ProcList(procs)) = crate::util::request("roam checkpoint", LocalMsg::Ps) {
        if let Some(p) = procs.iter().find(|p| p.home_pid == args.pid as u32) {
            bail!(
                "{} is the proxy of a process running on {}: checkpointing remote \
                 processes is not supported yet (docs/design/checkpoint.md)",
                args.pid,
                p.node
            );
        }
    }
    if !roam_sys::cred::is_root() {
        bail!("only root can checkpoint a local process");
    }
    let report = roam_ckpt::local::checkpoint(args.pid, &args.dir, args.leave_running, |d, t| {
        eprint!("\rroam: writing the image: {} of {} MiB", d >> 20, t >> 20);
        if d == t {
            eprintln!();
        }
    })
    .with_context(|| format!("checkpoint of {}", args.pid))?;
    eprintln!(
        "roam: checkpoint of {} in {}: {:.1} MiB of memory, image {:.1} MiB, frozen {:.1} ms, {:.1} ms in all{}",
        args.pid,
        args.dir.display(),
        report.stored as f64 / 1048576.0,
        report.image as f64 / 1048576.0,
        report.frozen.as_secs_f64() * 1e3,
        report.total.as_secs_f64() * 1e3,
        if args.leave_running { "; left running" } else { "; the process ended" }
    );
    Ok(ExitCode::SUCCESS)
}
