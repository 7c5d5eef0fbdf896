//! Wiring: runs the roles a configuration asks for.

use std::sync::OnceLock;

use roam_net::tls::Identity;
use tokio::sync::watch;

use crate::config::Config;

static STOP: OnceLock<watch::Sender<bool>> = OnceLock::new();

fn stop_sender() -> &'static watch::Sender<bool> {
    STOP.get_or_init(|| watch::channel(false).0)
}

/// Asks the daemon to stop: a node leaves the cluster (it tells the home,
/// which ends that node's proxies at once) and `run` returns.
pub fn request_stop() {
    stop_sender().send_replace(true);
}

/// Resolves once a stop was requested.
pub async fn stopping() {
    let mut rx = stop_sender().subscribe();
    let _ = rx.wait_for(|s| *s).await;
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot load this daemon's TLS identity")]
    Identity(#[source] roam_net::tls::TlsError),
    #[error("certificate is for '{cert}' but the config names this node '{config}'")]
    NameMismatch { cert: String, config: String },
    #[error("home role failed")]
    Home(#[source] std::io::Error),
    #[error("node role failed")]
    Node(#[source] std::io::Error),
}

/// Runs the daemon until it fails or [`request_stop`] is called.
pub async fn run(cfg: Config) -> Result<(), DaemonError> {
    // Files and streams move in blocks of hundreds of KiB: reuse their
    // memory (see roam_sys::mem).
    if !roam_sys::mem::keep_large_blocks() {
        tracing::debug!("the allocator did not take the large-block settings");
    }
    let identity =
        Identity::load(&cfg.tls.ca, &cfg.tls.cert, &cfg.tls.key).map_err(DaemonError::Identity)?;
    if identity.name() != cfg.name {
        return Err(DaemonError::NameMismatch {
            cert: identity.name().to_owned(),
            config: cfg.name.clone(),
        });
    }
    let home = cfg.role.is_home().then(|| {
        let cfg = cfg.clone();
        let id = identity.clone();
        tokio::spawn(async move { crate::home::run(&cfg, id).await })
    });
    if cfg.role.is_node() {
        if home.is_some() {
            // Let the home bind before our node half connects to it.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        crate::node::run(&cfg, identity)
            .await
            .map_err(DaemonError::Node)?;
    }
    if let Some(h) = home {
        tokio::select! {
            r = h => match r {
                Ok(r) => r.map_err(DaemonError::Home)?,
                Err(e) => return Err(DaemonError::Home(std::io::Error::other(e))),
            },
            _ = stopping() => {}
        }
    }
    Ok(())
}
