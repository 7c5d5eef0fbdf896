//! Helpers shared by the subcommands.

use roam_core::client::{Client, ClientError};
use roam_proto::local::LocalMsg;

/// Runs `f` on a small single-threaded runtime.
pub fn block_on<F: std::future::Future>(f: F) -> anyhow::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(rt.block_on(f))
}

/// One request to the local roamd, one answer.
pub fn request(what: &str, msg: LocalMsg) -> anyhow::Result<LocalMsg> {
    let path = roam_core::client::socket_path();
    let answer = block_on(async move {
        let mut c = Client::connect(&path, what).await?;
        c.request(&msg).await
    })?;
    answer.map_err(|e: ClientError| anyhow::anyhow!(e))
}

/// "1:05" style CPU time.
pub fn fmt_cpu(ms: u64) -> String {
    let s = ms / 1000;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}.{:02}", s / 60, s % 60, ms % 1000 / 10)
    }
}

/// "12.3M" style sizes from KiB.
pub fn fmt_kib(kib: u64) -> String {
    if kib >= 1 << 20 {
        format!("{:.1}G", kib as f64 / (1u64 << 20) as f64)
    } else if kib >= 1 << 10 {
        format!("{:.1}M", kib as f64 / 1024.0)
    } else {
        format!("{kib}K")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(fmt_cpu(61_230), "1:01.23");
        assert_eq!(fmt_cpu(3_700_000), "1:01:40");
        assert_eq!(fmt_kib(512), "512K");
        assert_eq!(fmt_kib(2048), "2.0M");
    }
}
