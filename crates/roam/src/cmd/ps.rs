//! `roam ps`: the cluster's remote processes.

use std::process::ExitCode;

use anyhow::bail;
use roam_proto::local::LocalMsg;

use crate::util::{fmt_cpu, fmt_kib, request};

#[derive(clap::Args)]
pub struct Args {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let procs = match request("roam ps", LocalMsg::Ps)? {
        LocalMsg::ProcList(p) => p,
        other => bail!("unexpected answer from roamd: {other:?}"),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&procs)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>7} {:<10} {:>7} {:<10} {:1} {:>10} {:>7} {:>5} COMMAND",
        "PID", "NODE", "NPID", "USER", "S", "TIME", "RSS", "MOVES"
    );
    for p in procs {
        let user = roam_sys::cred::user_name(p.uid).unwrap_or_else(|| p.uid.to_string());
        println!(
            "{:>7} {:<10} {:>7} {:<10} {:1} {:>10} {:>7} {:>5} {}",
            p.home_pid,
            p.node,
            p.node_pid,
            user,
            p.state,
            fmt_cpu(p.cpu_ms),
            fmt_kib(p.rss_kib),
            p.moves,
            p.command
        );
    }
    Ok(ExitCode::SUCCESS)
}
