//! `roam nodes`: the cluster's nodes and their load.

use std::process::ExitCode;

use anyhow::bail;
use roam_proto::local::LocalMsg;

#[derive(clap::Args)]
pub struct Args {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let nodes = match crate::util::request("roam nodes", LocalMsg::Nodes)? {
        LocalMsg::NodeList(n) => n,
        other => bail!("unexpected answer from roamd: {other:?}"),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&nodes)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>3} {:<12} {:<15} {:<18} {:<16} {:<11} {:>5} {:>5} {:>5} {:>9}",
        "#", "NAME", "ADDRESS", "ARCH", "RUNNERS", "STATE", "CPU%", "MEM%", "PROCS", "HEARTBEAT"
    );
    let mut problems = Vec::new();
    for n in &nodes {
        let arch = if n.arch.emulated {
            format!("{} (emulated)", n.arch.native)
        } else {
            n.arch.native.clone()
        };
        let runners = if n.arch.runners.is_empty() {
            "-".to_string()
        } else {
            n.arch.runners.join(",")
        };
        println!(
            "{:>3} {:<12} {:<15} {:<18} {:<16} {:<11} {:>5.1} {:>5.1} {:>5} {:>8.1}s",
            n.number,
            n.name,
            n.addr,
            arch,
            runners,
            n.state.to_string(),
            n.load.cpu_pct,
            n.load.mem_pct,
            n.load.procs,
            n.last_heartbeat_ms as f64 / 1000.0
        );
        problems.extend(n.arch.broken.iter().map(|b| format!("{}: {b}", n.name)));
    }
    for p in problems {
        eprintln!("warning: {p}");
    }
    Ok(ExitCode::SUCCESS)
}
