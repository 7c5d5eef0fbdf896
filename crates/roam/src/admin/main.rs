//! `roam-admin`: the administrative subcommands of `roam` (`roam cluster`,
//! `roam testbed`, `roam binfmt`), which `roam` runs by exec. They live in their own
//! binary so that `roam` stays small: every remote run starts a `roam`
//! process, and its start-up cost grows with the binary (relocations and
//! page faults of code and data it never uses).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod binfmt;
mod cluster;
mod testbed;

#[derive(Parser)]
#[command(name = "roam", bin_name = "roam", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create cluster credentials.
    #[command(subcommand)]
    Cluster(cluster::Cmd),
    /// A local test cluster of network namespaces on this machine.
    #[command(subcommand)]
    Testbed(testbed::Cmd),
    /// Run foreign programs from any shell through roam (binfmt_misc).
    #[command(subcommand)]
    Binfmt(binfmt::Cmd),
}

fn main() -> ExitCode {
    let result = match Cli::parse().cmd {
        Cmd::Cluster(c) => cluster::run(c),
        Cmd::Testbed(c) => testbed::run(c),
        Cmd::Binfmt(c) => binfmt::run(c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("roam: {e:#}");
            ExitCode::FAILURE
        }
    }
}
