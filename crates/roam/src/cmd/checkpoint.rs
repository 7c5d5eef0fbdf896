//! `roam checkpoint PID -o DIR [--leave-running]`: capture a process into
//! an image (docs/design/checkpoint.md).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use roam_proto::local::LocalMsg;

#[derive(clap::Args)]
pub struct Args {
    /// The process: the home pid of a remote process (yours, or any for
    /// root), or a local pid (root only).
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
            return remote(&args, Some(&p.node));
        }
    }
    if !roam_sys::cred::is_root() {
        // Not one of ours: the home says whose it is, or that it is none.
        return remote(&args, None);
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

fn remote(args: &Args, node: Option<&str>) -> anyhow::Result<ExitCode> {
    let on = node.map(|n| format!(" (on {n})")).unwrap_or_default();
    let socket = roam_core::client::socket_path();
    let mut shown = 0u64;
    let report = crate::util::block_on(roam_core::ckpt_client::checkpoint(
        &socket,
        args.pid as u32,
        &args.dir,
        args.leave_running,
        |got| {
            if got >> 24 != shown >> 24 {
                eprint!("\rroam: receiving the image: {} MiB", got >> 20);
                shown = got;
            }
        },
    ))?;
    if shown != 0 {
        eprintln!();
    }
    let report = report.with_context(|| format!("checkpoint of {}{on}", args.pid))?;
    let s = report.summary;
    eprintln!(
        "roam: checkpoint of {}{on} in {}: {:.1} MiB of memory, image {:.1} MiB, captured in {:.1} ms, {:.1} ms in all{}",
        args.pid,
        args.dir.display(),
        s.stored as f64 / 1048576.0,
        s.len as f64 / 1048576.0,
        s.frozen_us as f64 / 1e3,
        report.total.as_secs_f64() * 1e3,
        if args.leave_running { "; left running" } else { "; the process ended" }
    );
    Ok(ExitCode::SUCCESS)
}
