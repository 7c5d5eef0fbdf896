//! Links, addresses and network namespaces, through the `ip` command.

use std::process::Command;

use crate::TestbedError;

/// Where `ip netns` keeps its named network namespaces.
pub(crate) const NETNS_DIR: &str = "/run/netns";

fn describe(args: &[&str]) -> String {
    let mut s = String::from("ip");
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

/// Runs `ip ARGS`; returns its stdout, or an error with its stderr.
pub(crate) fn ip(args: &[&str]) -> Result<String, TestbedError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| TestbedError::Spawn {
            command: describe(args),
            source,
        })?;
    if !out.status.success() {
        return Err(TestbedError::Command {
            command: describe(args),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs an `ip ... del ...` that may find nothing to delete: success then.
pub(crate) fn ip_del(args: &[&str]) -> Result<(), TestbedError> {
    match ip(args) {
        Ok(_) => Ok(()),
        Err(TestbedError::Command { ref stderr, .. })
            if stderr.contains("Cannot find device")
                || stderr.contains("No such file or directory")
                || stderr.contains("does not exist") =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Names of the links in our network namespace.
pub(crate) fn link_names() -> Result<Vec<String>, TestbedError> {
    let out = ip(&["-o", "link", "show"])?;
    Ok(out.lines().filter_map(link_name).collect())
}

/// The name in a line of `ip -o link show`: `7: rtb1-1@if2: <...> ...`.
fn link_name(line: &str) -> Option<String> {
    let name = line.split(": ").nth(1)?;
    Some(name.split('@').next()?.trim().to_string())
}

/// Names of the named network namespaces.
pub(crate) fn netns_names() -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect()
}

/// Whether a named network namespace exists.
pub(crate) fn netns_exists(name: &str) -> bool {
    std::path::Path::new(NETNS_DIR).join(name).exists()
}

/// Pids of the processes in a named network namespace.
pub(crate) fn netns_pids(name: &str) -> Result<Vec<u32>, TestbedError> {
    let out = ip(&["netns", "pids", name])?;
    Ok(out
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_from_ip_output() {
        assert_eq!(
            link_name("7: rtb1-1@if2: <BROADCAST,MULTICAST,UP> mtu 1500").as_deref(),
            Some("rtb1-1")
        );
        assert_eq!(
            link_name("1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536").as_deref(),
            Some("lo")
        );
        assert_eq!(link_name("garbage"), None);
    }

    #[test]
    fn failures_carry_the_command_and_stderr() {
        let e = ip(&["link", "show", "dev", "roam-no-such-link"]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("ip link show dev roam-no-such-link"), "{msg}");
        assert!(msg.contains("does not exist"), "{msg}");
        ip_del(&["link", "del", "roam-no-such-link"]).unwrap();
    }
}
