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
    /// Send the program (an ELF file here) to the node, which keeps it in
    /// its cache by content hash, rather than run the file the node sees.
    #[arg(long)]
    ship: bool,
    /// Run the program confined: computing, memory, threads, file and
    /// network I/O only; other system calls, and any exec, fail with EPERM.
    #[arg(long)]
    confine: bool,
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

impl Args {
    /// Parses `roam run`'s arguments (those after `run`) without clap, for
    /// start-up speed: a remote run is often a few milliseconds in all, and
    /// clap's parser, run or not, is most of the code `roam` would touch.
    /// `None` for anything but the plain forms (help, version, errors...):
    /// clap then parses them and says what is wrong.
    pub fn parse_fast(args: &[OsString]) -> Option<Args> {
        let mut a = Args {
            node: None,
            mode: None,
            count: None,
            reservation: None,
            rank: None,
            ship: false,
            confine: false,
            argv: Vec::new(),
        };
        let mut i = 0;
        while i < args.len() {
            let arg = args[i].to_str();
            let Some(arg) = arg.filter(|s| s.starts_with('-')) else {
                break;
            };
            i += 1;
            if arg == "--" {
                break;
            }
            match arg {
                "--ship" => {
                    a.ship = true;
                    continue;
                }
                "--confine" => {
                    a.confine = true;
                    continue;
                }
                _ => {}
            }
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n, Some(v.to_owned())),
                _ => match arg.strip_prefix("-N").filter(|v| !v.is_empty()) {
                    Some(v) => ("-N", Some(v.to_owned())),
                    None => (arg, None),
                },
            };
            let value = match inline {
                Some(v) => v,
                None => {
                    let v = args.get(i)?.to_str()?.to_owned();
                    i += 1;
                    v
                }
            };
            match name {
                "--node" => a.node = Some(value),
                "--mode" => a.mode = Some(value.parse().ok()?),
                "-N" | "--count" => a.count = Some(value.parse().ok()?),
                "--reservation" => a.reservation = Some(value),
                "--rank" => a.rank = Some(value),
                _ => return None,
            }
        }
        a.argv = args[i..].to_vec();
        (!a.argv.is_empty()).then_some(a)
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
        program: None,
        node: args.node,
        mode: args.mode,
        reservation,
        rank,
        stdin_null: rank.is_some_and(|(r, _)| r > 0),
        ship: args.ship,
        confine: args.confine,
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
    // Only nodes that run the program's architecture.
    let arch = roam_core::locate::locate(&args.argv[0], std::env::var_os("PATH").as_deref())?
        .map(|l| l.arch.to_string());
    let (token, nodes) =
        match crate::util::request("roam run -N", LocalMsg::Reserve { count, arch })? {
            LocalMsg::Reserved { token, nodes } => (token, nodes),
            other => bail!("unexpected answer from roamd: {other:?}"),
        };
    let exe = std::env::current_exe().context("cannot find the roam executable")?;
    let mut children = Vec::new();
    for (rank, _node) in nodes.iter().enumerate() {
        let mut cmd = std::process::Command::new(&exe);
        cmd.arg("run")
            .arg(format!("--reservation={token}:{rank}"))
            .arg(format!("--rank={rank}:{count}"));
        if args.ship {
            cmd.arg("--ship");
        }
        if args.confine {
            cmd.arg("--confine");
        }
        cmd.arg("--").args(&args.argv);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fast(args: &[&str]) -> Option<Args> {
        let v: Vec<OsString> = args.iter().map(OsString::from).collect();
        Args::parse_fast(&v)
    }

    #[test]
    fn fast_parse_of_plain_forms() {
        let a = fast(&["--node", "n1", "ls", "-l", "--node", "x"]).unwrap();
        assert_eq!(a.node.as_deref(), Some("n1"));
        assert_eq!(a.argv, ["ls", "-l", "--node", "x"]);
        let a = fast(&["--mode=balance", "-N3", "--", "-weird"]).unwrap();
        assert_eq!(a.mode, Some(Mode::Balance));
        assert_eq!(a.count, Some(3));
        assert_eq!(a.argv, ["-weird"]);
        let a = fast(&["--count", "2", "--rank=1:2", "--reservation=7:1", "true"]).unwrap();
        assert_eq!(a.count, Some(2));
        assert_eq!(a.rank.as_deref(), Some("1:2"));
        assert_eq!(a.reservation.as_deref(), Some("7:1"));
        let a = fast(&["--ship", "--node=n2", "--confine", "w", "--ship"]).unwrap();
        assert!(a.ship && a.confine);
        assert_eq!(a.argv, ["w", "--ship"]);
    }

    #[test]
    fn fast_parse_leaves_the_rest_to_clap() {
        for args in [
            &["--help"][..],
            &["-h", "x"],
            &["--version"],
            &["--node"],
            &["--mode", "fast", "x"],
            &["-N", "many", "x"],
            &["--bogus", "x"],
            &["--node", "n1"],
            &[],
        ] {
            assert!(fast(args).is_none(), "{args:?}");
        }
    }
}
