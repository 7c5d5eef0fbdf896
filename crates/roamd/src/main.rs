//! `roamd`: the roam daemon. Reads its config, runs its roles, stops on
//! SIGTERM or SIGINT. All logic lives in `roam-core`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use roam_core::config::{Config, Role};

/// The roam daemon (home role, node role, or both, from its config file).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The configuration file (TOML).
    #[arg(long, short, default_value = "/etc/roam/roamd.toml")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ROAM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roamd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let cfg = Config::load(&args.config)?;
    // A compute node runs on one thread: fewer wakeups (less OS noise for
    // the programs it hosts, the first paper's concern). The home, which
    // relays every session's streams, gets two.
    let rt = match cfg.role {
        Role::Node => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        Role::Home | Role::Both => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?,
    };
    rt.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let daemon = roam_core::daemon::run(cfg);
        tokio::pin!(daemon);
        tokio::select! {
            r = &mut daemon => return r.map_err(anyhow::Error::from),
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
        }
        // Leave the cluster cleanly, but not for long.
        roam_core::daemon::request_stop();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), daemon).await;
        anyhow::Ok(())
    })?;
    // Do not wait for blocking threads (the spawner) to finish.
    std::process::exit(0);
}
