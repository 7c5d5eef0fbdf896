//! Self-confinement of a worker: after its handshake, a worker that is
//! asked to (`Worker::confine`, or `ROAM_RPC_CONFINE=1` in its
//! environment) installs a seccomp filter on all its threads. (The
//! client's `confine = true` has the node confine its workers from their
//! exec on instead: `roam run --confine`.) From then on its functions
//! may compute, use memory and threads, and do file and network I/O (the
//! paper's minimal worker layer); any other call fails with EPERM
//! ("Operation not permitted"), which the function sees and reports. Refused, among others: running
//! programs (execve, execveat), ptrace, signals to other processes, mount,
//! changes of owner, mode, credentials or limits, and the calls of any
//! other system-call convention.

/// The environment variable that asks a worker to confine itself.
pub const ENV_CONFINE: &str = "ROAM_RPC_CONFINE";

/// Confines the calling process (all its threads) for good.
pub fn confine() -> std::io::Result<()> {
    let prog = roam_sys::confine::worker_filter(&[])
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::Unsupported, e.to_string()))?;
    roam_sys::seccomp::confine(&prog)
}
