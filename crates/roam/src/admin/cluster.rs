//! `roam cluster init|issue`: the cluster's credentials.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Create the cluster CA (ca.pem, ca.key) in DIR.
    Init {
        #[arg(long, default_value = "/etc/roam")]
        dir: PathBuf,
    },
    /// Issue a certificate for a node (NAME.pem, NAME.key in DIR).
    Issue {
        name: String,
        #[arg(long, default_value = "/etc/roam")]
        dir: PathBuf,
    },
}

pub fn run(cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::Init { dir } => {
            roam_net::creds::init_cluster(&dir)?;
            println!("cluster CA created in {}", dir.display());
            println!(
                "next: roam cluster issue NAME --dir {} for each node",
                dir.display()
            );
        }
        Cmd::Issue { name, dir } => {
            let (cert, key) = roam_net::creds::issue_node(&dir, &name)?;
            println!("{}\n{}", cert.display(), key.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
