//! `roam kill [-SIGNAL] PID...`: signal remote processes by home pid.

use std::process::ExitCode;

use anyhow::{bail, Context};
use roam_proto::local::LocalMsg;
use roam_proto::types::WireSignal;

#[derive(clap::Args)]
pub struct Args {
    /// `-SIGNAL` (name or number, default TERM) then one or more home pids.
    #[arg(
        required = true,
        allow_hyphen_values = true,
        value_name = "[-SIGNAL] PID"
    )]
    args: Vec<String>,
}

/// Splits `[-SIGNAL] PID...` into the signal and the pids.
pub fn parse(args: &[String]) -> anyhow::Result<(WireSignal, Vec<u32>)> {
    let mut rest = args;
    let mut signal = roam_sys::signal::parse("TERM").expect("TERM exists");
    if let Some(first) = args.first() {
        if let Some(s) = first.strip_prefix('-') {
            signal = roam_sys::signal::parse(s).with_context(|| format!("unknown signal '{s}'"))?;
            rest = &args[1..];
        }
    }
    if rest.is_empty() {
        bail!("no pid given");
    }
    let pids = rest
        .iter()
        .map(|p| {
            p.parse::<u32>()
                .with_context(|| format!("'{p}' is not a pid"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((signal, pids))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (signal, pids) = parse(&args.args)?;
    let mut code = ExitCode::SUCCESS;
    for pid in pids {
        if let Err(e) = crate::util::request(
            "roam kill",
            LocalMsg::Kill {
                home_pid: pid,
                signal,
            },
        ) {
            eprintln!("roam: kill {pid}: {e:#}");
            code = ExitCode::FAILURE;
        }
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_signal_forms() {
        assert_eq!(parse(&s(&["12"])).unwrap(), (WireSignal(15), vec![12]));
        assert_eq!(
            parse(&s(&["-9", "1", "2"])).unwrap(),
            (WireSignal(9), vec![1, 2])
        );
        assert_eq!(parse(&s(&["-KILL", "3"])).unwrap().0, WireSignal(9));
        assert_eq!(parse(&s(&["-SIGUSR1", "3"])).unwrap().0, WireSignal(10));
        assert!(parse(&s(&["-BOGUS", "3"])).is_err());
        assert!(parse(&s(&["-9"])).is_err());
        assert!(parse(&s(&["x"])).is_err());
    }
}
