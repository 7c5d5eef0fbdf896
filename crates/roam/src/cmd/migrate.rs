//! `roam migrate PID [NODE] [--eager | --precopy | --post-copy]`: move a running remote
//! process to another node; its proxy, pipes and exit status stay
//! (docs/design/migration.md).

use std::process::ExitCode;

use anyhow::Context;
use roam_proto::types::{MigrateMode, MigrateReport};

#[derive(clap::Args)]
pub struct Args {
    /// The home pid of the process (yours; any for root).
    pid: u32,
    /// The node to move it to (default: the placement's choice among the
    /// other nodes of its architecture).
    node: Option<String>,
    /// Move all the memory while the process is frozen (the default
    /// pre-copies a process of more than 16 MiB resident).
    #[arg(long, conflicts_with_all = ["precopy", "post_copy"])]
    eager: bool,
    /// Send the memory in rounds while the process runs, then freeze it
    /// for the pages written meanwhile, whatever its size.
    #[arg(long, conflicts_with = "post_copy")]
    precopy: bool,
    /// Start the process on the new node at once, with the memory of its
    /// large mappings to follow: fetched when it touches a page, pushed in
    /// the background. Until every page is there, the process needs both
    /// nodes (docs/design/migration.md).
    #[arg(long)]
    post_copy: bool,
    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mode = match (args.eager, args.precopy, args.post_copy) {
        (true, _, _) => MigrateMode::Eager,
        (_, true, _) => MigrateMode::PreCopy,
        (_, _, true) => MigrateMode::PostCopy,
        _ => MigrateMode::Auto,
    };
    let r = migrate(args.pid, args.node, mode, args.quiet)?;
    if !args.quiet {
        eprintln!("roam: {}", describe(&r));
    }
    Ok(ExitCode::SUCCESS)
}

/// Migrates one process, showing progress on stderr for large images.
pub fn migrate(
    pid: u32,
    node: Option<String>,
    mode: MigrateMode,
    quiet: bool,
) -> anyhow::Result<MigrateReport> {
    let socket = roam_core::client::socket_path();
    let mut shown = false;
    let r = crate::util::block_on(roam_core::client::migrate(
        &socket,
        pid,
        node,
        mode,
        |sent, total| {
            if !quiet && total >= 32 << 20 {
                eprint!(
                    "\rroam: moving {pid}: {} of {} MiB",
                    sent >> 20,
                    total >> 20
                );
                shown = true;
            }
        },
    ))?;
    if shown {
        eprintln!();
    }
    r.with_context(|| format!("migration of {pid}"))
}

/// "moved 1234 from n1 to n2 (pid 77): ..." for a report.
pub fn describe(r: &MigrateReport) -> String {
    let pre = if r.rounds > 0 {
        format!(
            "{:.1} MiB pre-copied in {} rounds, then ",
            r.precopied as f64 / 1048576.0,
            r.rounds
        )
    } else {
        String::new()
    };
    let post = if r.postcopied > 0 {
        format!(
            ", then {:.1} MiB followed in {:.1} ms",
            r.postcopied as f64 / 1048576.0,
            r.postcopy_us as f64 / 1e3
        )
    } else {
        String::new()
    };
    format!(
        "moved {} from {} to {} (pid {} there): {pre}{:.1} MiB while frozen{post}; frozen {:.1} ms, {:.1} ms in all",
        r.home_pid,
        r.from,
        r.to,
        r.node_pid,
        r.stored as f64 / 1048576.0,
        r.frozen_us as f64 / 1e3,
        r.total_us as f64 / 1e3
    )
}
