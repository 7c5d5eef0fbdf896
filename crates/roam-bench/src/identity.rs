//! The cost of a forwarded identity call (issue 4): `getpid` answered by a
//! node's seccomp supervisor with the home pid, against `getpid` here.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use crate::report::{Row, Section};
use crate::{check_interrupted, children, progress, Ctx, SPAWN_LIMIT};

/// getpid calls per run of the loop program.
const CALLS: u32 = 100_000;

/// Runs `getpid_loop` (tests/programs/getpid_loop.c, built for this
/// machine) through `roam run` on the node and here, interleaved, `rounds`
/// times; each run reports its nanoseconds per call. Rows in microseconds.
pub fn forwarded_call(ctx: &mut Ctx, binary: &Path, rounds: usize) -> anyhow::Result<Section> {
    let bin = binary.to_str().context("a non-UTF-8 path")?;
    let n = CALLS.to_string();
    let mut variants: Vec<(String, Command)> = vec![
        (
            format!(
                "getpid forwarded: roam run --node {} getpid_loop",
                crate::NODE
            ),
            ctx.roam_run(&[bin, &n]),
        ),
        ("getpid here".into(), crate::cmd(bin, &[&n])),
    ];
    progress(&format!(
        "forwarded identity calls: {rounds} rounds of {CALLS}..."
    ));
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for round in 0..rounds {
        check_interrupted()?;
        for j in 0..variants.len() {
            let i = (round + j) % variants.len();
            samples[i].push(ns_per_call(&mut variants[i].1)?);
        }
    }
    let rows = variants
        .iter()
        .zip(&samples)
        .map(|((label, _), v)| Row::values(label.clone(), "us", 1e3, v))
        .collect();
    Ok(Section::with_ratios(
        format!("one getpid, {CALLS} in a loop: a node's supervisor answering with the home pid"),
        "time/here's",
        1,
        rows,
    ))
}

/// One run of the loop program: the nanoseconds per call it prints.
fn ns_per_call(cmd: &mut Command) -> anyhow::Result<f64> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = children::spawn(cmd, SPAWN_LIMIT).context("cannot run getpid_loop")?;
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        o.read_to_string(&mut out)?;
    }
    let (status, overdue) = children::wait(&mut child)?;
    if overdue || !status.success() {
        bail!(
            "getpid_loop failed ({status}{})",
            if overdue { ", killed" } else { "" }
        );
    }
    out.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("unexpected getpid_loop output {out:?}"))
}
