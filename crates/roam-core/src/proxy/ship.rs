//! `roam run --ship`: the program goes to the node with the request, as
//! the node's staged copy of it, rather than the file the node sees
//! (docs/design/staging.md). The spawn names the file by its SHA-256; a
//! node without it answers `NotStaged`, and the proxy sends the file
//! there and asks again. The second run of the same file on that node
//! ships nothing.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use roam_proto::local::LocalMsg;
use roam_proto::types::StageHash;

use super::restore::{send_image, SendError};
use crate::client::{Client, ClientError};

/// The file a proxy ships, and what names it.
#[derive(Debug, Clone)]
pub(super) struct Ship {
    pub path: PathBuf,
    pub hash: StageHash,
    pub len: u64,
}

/// Why a file cannot be shipped.
#[derive(Debug, thiserror::Error)]
pub(super) enum ShipError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Ship {
    /// Reads `path` for its hash and length.
    pub(super) fn of(path: &Path) -> Result<Ship, ShipError> {
        let read = |source| ShipError::Read {
            path: path.to_owned(),
            source,
        };
        let mut f = File::open(path).map_err(read)?;
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; 1 << 20];
        let mut len = 0u64;
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    digest.update(&buf[..n]);
                    len += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(read(e)),
            }
        }
        let mut hash = StageHash([0; 32]);
        hash.0.copy_from_slice(digest.finish().as_ref());
        Ok(Ship {
            path: path.to_owned(),
            hash,
            len,
        })
    }

    /// Stages the file on `node`, then sends `spawn` again, for that node;
    /// returns the home's answer to it.
    pub(super) async fn stage_then_spawn(
        &self,
        client: &mut Client,
        spawn: &LocalMsg,
        node: &str,
    ) -> Result<LocalMsg, SendError> {
        let stage = LocalMsg::Stage {
            node: node.to_owned(),
            hash: self.hash,
            len: self.len,
        };
        match send_image(client, &stage, &self.path, self.len).await? {
            LocalMsg::Ok => {}
            other => return Err(ClientError::Unexpected(format!("{other:?}")).into()),
        }
        tracing::debug!("{} staged on {node} as {}", self.path.display(), self.hash);
        let mut again = spawn.clone();
        if let LocalMsg::Spawn { node: n, .. } = &mut again {
            *n = Some(node.to_owned());
        }
        client.send(&again).await?;
        client
            .recv()
            .await?
            .ok_or(ClientError::Closed)
            .map_err(SendError::Client)
    }
}
