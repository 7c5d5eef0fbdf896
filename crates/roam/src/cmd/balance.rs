//! `roam balance [on|off]`: show the home's automatic balancer, or turn it
//! on or off (root); `--follow` prints its moves as they happen
//! (docs/design/migration.md, "The balancer").

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use roam_proto::local::LocalMsg;
use roam_proto::types::{BalanceMove, BalanceStatus, MoveOutcome};

#[derive(Clone, Copy, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(clap::Args)]
pub struct Args {
    /// Turn the balancer on or off (root only); without it, show its state.
    state: Option<OnOff>,
    /// Then print each move as it starts and ends, until interrupted.
    #[arg(short, long)]
    follow: bool,
    /// Print JSON instead of text.
    #[arg(long, conflicts_with = "follow")]
    json: bool,
}

fn status(msg: LocalMsg) -> anyhow::Result<BalanceStatus> {
    match crate::util::request("roam balance", msg)? {
        LocalMsg::BalanceIs(s) => Ok(*s),
        other => bail!("unexpected answer from roamd: {other:?}"),
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let s = status(match args.state {
        Some(s) => LocalMsg::SetBalance {
            on: matches!(s, OnOff::On),
        },
        None => LocalMsg::GetBalance,
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(ExitCode::SUCCESS);
    }
    if args.state.is_some() && !args.follow {
        println!("{}", summary(&s));
    } else if !args.follow {
        show(&s);
    } else {
        follow(s)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// "balancer on: every 2.0 s, ..." on one line.
fn summary(s: &BalanceStatus) -> String {
    format!(
        "balancer {}: every {:.1} s, moves work from a node above {}% CPU to one below {}% once both held {} samples in a row, if the destination with it stays {} points below the source; a moved process stays {} s",
        if s.enabled { "on" } else { "off" },
        s.interval_ms as f64 / 1e3,
        s.high_pct,
        s.low_pct,
        s.sustain,
        s.min_gap_pct,
        s.cooldown_ms / 1000
    )
}

fn describe(m: &BalanceMove) -> String {
    format!(
        "#{} {} ({}) {} -> {} at {:.0}% CPU: {}",
        m.seq, m.home_pid, m.command, m.from, m.to, m.cpu_pct, m.outcome
    )
}

fn show(s: &BalanceStatus) {
    println!("{}", summary(s));
    if !s.nodes.is_empty() {
        println!("{:<12} {:>7} {:>6} {:>6}", "NODE", "CPU%", "ABOVE", "BELOW");
        for n in &s.nodes {
            println!(
                "{:<12} {:>7.1} {:>6} {:>6}",
                n.name, n.cpu_pct, n.above, n.below
            );
        }
    }
    if s.moves.is_empty() {
        println!("no moves yet");
    } else {
        println!("moves, the latest last:");
        for m in &s.moves {
            println!("  {} s ago: {}", m.ago_ms / 1000, describe(m));
        }
    }
}

/// Prints each move the balancer starts or ends from now on.
fn follow(first: BalanceStatus) -> anyhow::Result<()> {
    println!("{}", summary(&first));
    // Moves already over are history; one under way is shown.
    let mut seen: Vec<(u64, MoveOutcome)> = first
        .moves
        .iter()
        .filter(|m| m.outcome != MoveOutcome::Moving)
        .map(|m| (m.seq, m.outcome.clone()))
        .collect();
    let mut enabled = first.enabled;
    loop {
        let s = status(LocalMsg::GetBalance)?;
        if s.enabled != enabled {
            enabled = s.enabled;
            println!("balancer {}", if enabled { "on" } else { "off" });
        }
        for m in &s.moves {
            let known = seen.iter_mut().find(|(seq, _)| *seq == m.seq);
            match known {
                Some((_, o)) if *o == m.outcome => continue,
                Some((_, o)) => *o = m.outcome.clone(),
                None => seen.push((m.seq, m.outcome.clone())),
            }
            println!("{}", describe(m));
        }
        if seen.len() > 256 {
            seen.drain(..128);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
