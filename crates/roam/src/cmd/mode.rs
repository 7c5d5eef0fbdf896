//! `roam mode [parallel|balance]`: show or change the placement mode.

use std::process::ExitCode;

use anyhow::bail;
use roam_proto::local::LocalMsg;
use roam_proto::types::Mode;

#[derive(clap::Args)]
pub struct Args {
    /// The new mode (root only); without it, show the current one.
    mode: Option<Mode>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let req = match args.mode {
        Some(mode) => LocalMsg::SetMode { mode },
        None => LocalMsg::GetMode,
    };
    match crate::util::request("roam mode", req)? {
        LocalMsg::ModeIs(m) => println!("{m}"),
        other => bail!("unexpected answer from roamd: {other:?}"),
    }
    Ok(ExitCode::SUCCESS)
}
