//! `roam`: the command-line interface. One file per subcommand in `cmd/`;
//! the logic lives in `roam-core` and the other libraries.

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
    /// Create cluster credentials.
    #[command(subcommand)]
    Cluster(cmd::cluster::Cmd),
    /// A local test cluster of network namespaces on this machine.
    #[command(subcommand)]
    Testbed(cmd::testbed::Cmd),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Run(a) => cmd::run::run(a),
        Cmd::Ps(a) => cmd::ps::run(a),
        Cmd::Kill(a) => cmd::kill::run(a),
        Cmd::Nodes(a) => cmd::nodes::run(a),
        Cmd::Mode(a) => cmd::mode::run(a),
        Cmd::Cluster(c) => cmd::cluster::run(c),
        Cmd::Testbed(c) => cmd::testbed::run(c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("roam: {e:#}");
            ExitCode::FAILURE
        }
    }
}
