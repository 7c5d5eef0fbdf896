//! `roam binfmt install|status|remove`: transparent exec of foreign
//! programs from any shell on the home node (see `roam_core::binfmt`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use roam_core::binfmt::{self, Entry, BINFMT_DIR, PREFIX};
use roam_core::client::Client;
use roam_elf::Arch;
use roam_proto::local::LocalMsg;

#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Register roam-binfmt for each foreign architecture the cluster runs
    /// (root). Run it again after anything else registers entries.
    Install {
        /// These architectures instead of the cluster's (e.g. aarch64,s390x).
        #[arg(long, value_delimiter = ',')]
        arch: Vec<Arch>,
    },
    /// Show roam's entries and the other entries that claim the same files.
    Status,
    /// Remove roam's entries (root); other entries, such as qemu's, stay.
    Remove,
}

pub fn run(cmd: Cmd) -> anyhow::Result<ExitCode> {
    let dir = Path::new(BINFMT_DIR);
    match cmd {
        Cmd::Install { arch } => {
            let archs = if arch.is_empty() {
                cluster_archs()?
            } else {
                arch
            };
            if archs.is_empty() {
                println!(
                    "the cluster runs no architecture but this machine's ({}): nothing to register",
                    Arch::native()
                );
                return Ok(ExitCode::SUCCESS);
            }
            let interp = interpreter()?;
            let names = binfmt::install(dir, &archs, &interp)?;
            for (name, a) in names.iter().zip(&archs) {
                println!("{name}: {a} programs run through {}", interp.display());
            }
            print_others(&binfmt::entries(dir)?, &archs);
        }
        Cmd::Status => {
            let all = binfmt::entries(dir)?;
            if !dir.join("register").exists() {
                println!("binfmt_misc is not mounted on {BINFMT_DIR}: no entries");
                return Ok(ExitCode::SUCCESS);
            }
            let ours: Vec<&Entry> = all.iter().filter(|e| e.name.starts_with(PREFIX)).collect();
            if ours.is_empty() {
                println!("no roam entries (roam binfmt install adds them)");
            }
            let mut archs = Vec::new();
            for e in &ours {
                let arch = e.name[PREFIX.len()..].parse::<Arch>().ok();
                archs.extend(arch);
                let state = if e.enabled { "enabled" } else { "disabled" };
                let missing = if Path::new(&e.interpreter).exists() {
                    ""
                } else {
                    " (interpreter missing!)"
                };
                println!(
                    "{}: {state}, interpreter {}{missing}, flags {}",
                    e.name, e.interpreter, e.flags
                );
            }
            print_others(&all, &archs);
        }
        Cmd::Remove => {
            let removed = binfmt::remove(dir)?;
            if removed.is_empty() {
                println!("no roam entries to remove");
            }
            for n in removed {
                println!("removed {n}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `roam-binfmt` beside this program.
fn interpreter() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this program")?;
    let p = exe.with_file_name("roam-binfmt");
    std::fs::canonicalize(&p)
        .with_context(|| format!("{} not found: install roam-binfmt beside roam", p.display()))
}

/// The foreign architectures the cluster's nodes run.
fn cluster_archs() -> anyhow::Result<Vec<Arch>> {
    let path = roam_core::client::socket_path();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answer = rt.block_on(async {
        let mut c = Client::connect(&path, "roam binfmt").await?;
        c.request(&LocalMsg::Nodes).await
    })?;
    let LocalMsg::NodeList(nodes) = answer else {
        bail!("unexpected answer from roamd: {answer:?}");
    };
    let mut archs: Vec<Arch> = Vec::new();
    for n in &nodes {
        for a in n.arch.all() {
            match a.parse::<Arch>() {
                Ok(a) if a != Arch::native() && !archs.contains(&a) => archs.push(a),
                Ok(_) => {}
                Err(e) => eprintln!("roam: node {}: {e}", n.name),
            }
        }
    }
    archs.retain(|a| {
        let known = a.binfmt_pattern().is_some();
        if !known {
            eprintln!("roam: no ELF pattern for {a}: not registered");
        }
        known
    });
    Ok(archs)
}

/// Notes the other entries that claim the same files as roam's.
fn print_others(all: &[Entry], archs: &[Arch]) {
    for e in all
        .iter()
        .filter(|e| !e.name.starts_with(PREFIX) && e.enabled)
    {
        for a in archs.iter().filter(|a| e.claims(**a)) {
            println!(
                "note: {} ({}) also claims {a} programs; binfmt_misc tries the newest entry first, so roam's wins until {} is registered again",
                e.name, e.interpreter, e.name
            );
        }
    }
}
