//! `roam run`: become the proxy of a remote process (or, with `-N`, start a
//! job of several, one proxy per rank).

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::{bail, Context};
use roam_core::proxy::{self, Outcome, RunOptions};
use roam_proto::local::LocalMsg;
use roam_proto::types::Mode;

#[derive(clap::Args)]
#[command(trailing_var_arg = true)]
pub struct Args {
    /// Run on this node.
    #[arg(long)]
    node: Option<String>,
    /// Placement mode for this run (parallel | balance).
    #[arg(long)]
    mode: Option<Mode>,
    /// Start COUNT instances at once on distinct nodes (ROAM_RANK and
    /// ROAM_SIZE tell each its place).
    #[arg(short = 'N', long = "count")]
    count: Option<u32>,
    /// Internal: a reservation slot for one rank of a -N job (TOKEN:INDEX).
    #[arg(long, hide = true)]
    reservation: Option<String>,
    /// Internal: RANK:SIZE of one rank of a -N job.
    #[arg(long, hide = true)]
    rank: Option<String>,
    /// The program and its arguments.
    #[arg(
        required = true,
        allow_hyphen_values = true,
        value_name = "PROG [ARGS]..."
    )]
    argv: Vec<OsString>,
}

fn pair<A: std::str::FromStr, B: std::str::FromStr>(s: &str, what: &str) -> anyhow::Result<(A, B)> {
    let (a, b) = s
        .split_once(':')
        .with_context(|| format!("bad {what} '{s}'"))?;
    match (a.parse(), b.parse()) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        _ => bail!("bad {what} '{s}'"),
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(n) = args.count {
        return run_job(&args, n);
    }
    let reservation = args
        .reservation
        .as_deref()
        .map(|s| pair::<u64, u32>(s, "reservation"))
        .transpose()?;
    let rank = args
        .rank
        .as_deref()
        .map(|s| pair::<u32, u32>(s, "rank"))
        .transpose()?;
    let opts = RunOptions {
        socket: roam_core::client::socket_path(),
        argv: args.argv,
        node: args.node,
        mode: args.mode,
        reservation,
        rank,
        stdin_null: rank.is_some_and(|(r, _)| r > 0),
    };
    proxy::run_proxy(opts)
}

/// `-N COUNT`: reserve COUNT distinct nodes, start one proxy per rank, and
/// end as the lowest failing rank ended (0 if all succeeded).
fn run_job(args: &Args, count: u32) -> anyhow::Result<ExitCode> {
    if count == 0 {
        bail!("-N needs at least 1");
    }
    if args.node.is_some() {
        bail!("-N and --node cannot be used together");
    }
    let (token, nodes) = match crate::util::request("roam run -N", LocalMsg::Reserve { count })? {
        LocalMsg::Reserved { token, nodes } => (token, nodes),
        other => bail!("unexpected answer from roamd: {other:?}"),
    };
    let exe = std::env::current_exe().context("cannot find the roam executable")?;
    let mut children = Vec::new();
    for (rank, _node) in nodes.iter().enumerate() {
        let mut cmd = std::process::Command::new(&exe);
        cmd.arg("run")
            .arg(format!("--reservation={token}:{rank}"))
            .arg(format!("--rank={rank}:{count}"))
            .arg("--")
            .args(&args.argv);
        if rank > 0 {
            cmd.stdin(std::process::Stdio::null());
        }
        children.push(cmd.spawn().context("cannot start a rank's proxy")?);
    }
    let mut outcome = Outcome::Exit(0);
    for mut c in children {
        let status = c.wait()?;
        if outcome == Outcome::Exit(0) {
            use std::os::unix::process::ExitStatusExt;
            if let Some(sig) = status.signal() {
                outcome = Outcome::Signal(sig);
            } else if let Some(code) = status.code().filter(|c| *c != 0) {
                outcome = Outcome::Exit(code);
            }
        }
    }
    proxy::finish(outcome)
}
