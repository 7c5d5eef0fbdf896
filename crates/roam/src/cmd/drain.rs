//! `roam drain NODE`: stop placing processes on a node and move every
//! process off it, for maintenance; `--undo` places on it again.

use std::process::ExitCode;

use roam_proto::local::LocalMsg;
use roam_proto::types::MigrateMode;

#[derive(clap::Args)]
pub struct Args {
    /// The node to drain.
    node: String,
    /// Place processes on the node again (its processes stay where they
    /// went).
    #[arg(long)]
    undo: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    crate::util::request(
        "roam drain",
        LocalMsg::SetDraining {
            node: args.node.clone(),
            on: !args.undo,
        },
    )?;
    if args.undo {
        eprintln!("roam: {} takes processes again", args.node);
        return Ok(ExitCode::SUCCESS);
    }
    let LocalMsg::ProcList(procs) = crate::util::request("roam drain", LocalMsg::Ps)? else {
        anyhow::bail!("unexpected answer to ps");
    };
    let mut pids: Vec<u32> = procs
        .iter()
        .filter(|p| p.node == args.node)
        .map(|p| p.home_pid)
        .collect();
    pids.sort_unstable();
    let mut failed = 0;
    for pid in &pids {
        match super::migrate::migrate(*pid, None, MigrateMode::Auto, false) {
            Ok(r) => eprintln!("roam: {}", super::migrate::describe(&r)),
            Err(e) => {
                // It may have ended meanwhile: only a live one counts.
                eprintln!("roam: {e:#}");
                failed += 1;
            }
        }
    }
    eprintln!(
        "roam: {}: {} of {} processes moved; nothing more is placed on it (roam drain --undo {} to place on it again)",
        args.node,
        pids.len() - failed,
        pids.len(),
        args.node
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
