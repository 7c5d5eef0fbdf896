//! `roam`: the command-line interface. One file per subcommand in `cmd/`;
//! the logic lives in `roam-core` and the other libraries. The
//! administrative subcommands (`cluster`, `testbed`) are in `roam-admin`,
//! which `roam` execs: see `admin/main.rs` for why.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;
mod util;

/// roam: run programs of this node on the cluster's nodes, as if they ran here.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a program on a node; this process stays here as its proxy.
    Run(cmd::run::Args),
    /// List remote processes (yours; everyone's for root).
    Ps(cmd::ps::Args),
    /// Send a signal to remote processes by home pid.
    Kill(cmd::kill::Args),
    /// List the cluster's nodes.
    Nodes(cmd::nodes::Args),
    /// Show or set the placement mode (parallel | balance).
    Mode(cmd::mode::Args),
    /// Capture a running process into an image directory.
    Checkpoint(cmd::checkpoint::Args),
    /// Rebuild a checkpointed process; this process becomes its proxy.
    Restore(cmd::restore::Args),
    /// Move a running remote process to another node.
    Migrate(cmd::migrate::Args),
    /// Move every process off a node and place nothing more on it.
    Drain(cmd::drain::Args),
    /// Show the automatic balancer, or turn it on or off (on | off).
    Balance(cmd::balance::Args),
    /// Create cluster credentials (init, issue).
    #[command(disable_help_flag = true)]
    Cluster(AdminArgs),
    /// A local test cluster of network namespaces on this machine (up,
    /// down, status, kill, start, cut, heal).
    #[command(disable_help_flag = true)]
    Testbed(AdminArgs),
    /// Run foreign programs from any shell through roam: binfmt_misc
    /// entries (install, status, remove).
    #[command(disable_help_flag = true)]
    Binfmt(AdminArgs),
}

/// The arguments of a subcommand that `roam-admin` parses.
#[derive(clap::Args)]
struct AdminArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

/// `roam run` alone, for what `Args::parse_fast` leaves to clap (help,
/// errors): they then read `roam run`, not `roam`.
#[derive(Parser)]
#[command(
    name = "roam run",
    bin_name = "roam run",
    version,
    about = "Run a program on a node; this process stays here as its proxy."
)]
struct RunCli {
    #[command(flatten)]
    args: cmd::run::Args,
}

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let result = if argv.get(1).is_some_and(|a| a == "run") {
        let args = cmd::run::Args::parse_fast(&argv[2..]).unwrap_or_else(|| {
            let first = argv[0].clone();
            RunCli::parse_from(std::iter::once(first).chain(argv[2..].iter().cloned())).args
        });
        cmd::run::run(args)
    } else {
        dispatch(Cli::parse())
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("roam: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Run(a) => cmd::run::run(a),
        Cmd::Ps(a) => cmd::ps::run(a),
        Cmd::Kill(a) => cmd::kill::run(a),
        Cmd::Nodes(a) => cmd::nodes::run(a),
        Cmd::Mode(a) => cmd::mode::run(a),
        Cmd::Checkpoint(a) => cmd::checkpoint::run(a),
        Cmd::Restore(a) => cmd::restore::run(a),
        Cmd::Migrate(a) => cmd::migrate::run(a),
        Cmd::Drain(a) => cmd::drain::run(a),
        Cmd::Balance(a) => cmd::balance::run(a),
        Cmd::Cluster(a) => exec_admin("cluster", a.args),
        Cmd::Testbed(a) => exec_admin("testbed", a.args),
        Cmd::Binfmt(a) => exec_admin("binfmt", a.args),
    }
}

/// `roam-admin` next to the running `roam`, else on PATH.
fn admin_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("roam-admin")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("roam-admin"))
}

/// Replaces this process with `roam-admin SUB ARGS...`.
fn exec_admin(sub: &str, args: Vec<OsString>) -> anyhow::Result<ExitCode> {
    let bin = admin_binary();
    let err = std::process::Command::new(&bin).arg(sub).args(args).exec();
    anyhow::bail!(
        "cannot run {} for `roam {sub}`: {err} (install roam-admin beside roam)",
        bin.display()
    )
}
