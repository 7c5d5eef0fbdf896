//! `roam checkpoint HOME_PID -o DIR`: the command's side of the checkpoint
//! of a remote process. The home asks the process's node, whose image
//! comes back through the home; it is written to `DIR/roam.img`
//! atomically, and only once it is safely there does the node kill the
//! process (without `--leave-running`). See docs/design/checkpoint.md.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use roam_ckpt::image::AtomicFile;
use roam_proto::link::LinkMsg;
use roam_proto::local::LocalMsg;
use roam_proto::types::{ImageSummary, WireError};

use crate::client::{Client, ClientError};

/// Images above this size show progress as they arrive.
const PROGRESS_ABOVE: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Remote(WireError),
    #[error("cannot write the image {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("node {node} went down ({reason})")]
    NodeLost { node: String, reason: String },
    #[error("the node sent a broken image: {0}")]
    Broken(String),
}

/// What a checkpoint of a remote process measured.
#[derive(Debug, Clone, Copy)]
pub struct RemoteReport {
    pub summary: ImageSummary,
    /// The whole checkpoint, image written and synced.
    pub total: Duration,
}

/// Checkpoints the remote process with home pid `home_pid` into
/// `dir`/roam.img; `progress(bytes)` is called as a large image arrives
/// (its size is known only at its end).
pub async fn checkpoint(
    socket: &Path,
    home_pid: u32,
    dir: &Path,
    leave_running: bool,
    mut progress: impl FnMut(u64),
) -> Result<RemoteReport, CheckpointError> {
    let t0 = Instant::now();
    let path = dir.join(roam_ckpt::local::IMAGE_FILE);
    let werr = |source| CheckpointError::Write {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(werr)?;
    let mut c = Client::connect(socket, "roam checkpoint").await?;
    c.send(&LocalMsg::Checkpoint {
        home_pid,
        leave_running,
    })
    .await?;
    let mut file: Option<AtomicFile> = None;
    let mut got = 0u64;
    let mut summary = None;
    loop {
        let msg = match c.recv().await? {
            Some(LocalMsg::Transfer(m)) => m,
            Some(LocalMsg::Error(e)) => return Err(CheckpointError::Remote(e)),
            Some(LocalMsg::NodeLost { node, reason }) => {
                return Err(CheckpointError::NodeLost { node, reason })
            }
            Some(other) => return Err(ClientError::Unexpected(format!("{other:?}")).into()),
            None => return Err(ClientError::Closed.into()),
        };
        match msg {
            LinkMsg::Image { offset, data, .. } => {
                if offset != got {
                    return Err(CheckpointError::Broken(format!(
                        "data at {offset} where {got} was expected"
                    )));
                }
                let f = match &mut file {
                    Some(f) => f,
                    None => file.insert(AtomicFile::create(&path).map_err(werr)?),
                };
                // On a write error the connection closes: the node lets
                // the process run on.
                f.write_all(&data).map_err(werr)?;
                got += data.len() as u64;
                c.send(&LocalMsg::Transfer(LinkMsg::ImageAck {
                    req: 0,
                    offset: got,
                }))
                .await?;
            }
            LinkMsg::ImageEnd { result: Ok(s), .. } => {
                if s.len != got {
                    return Err(CheckpointError::Broken(format!(
                        "it ended at {got} bytes of {}",
                        s.len
                    )));
                }
                let f = match file.take() {
                    Some(f) => f,
                    None => AtomicFile::create(&path).map_err(werr)?,
                };
                let saved = f.commit();
                c.send(&LocalMsg::Transfer(LinkMsg::ImageSaved {
                    req: 0,
                    ok: saved.is_ok(),
                }))
                .await?;
                saved.map_err(werr)?;
                summary = Some(s);
            }
            // The failure itself comes with `Checkpointed`.
            LinkMsg::ImageEnd { result: Err(_), .. } => file = None,
            LinkMsg::Checkpointed { result, .. } => {
                result.map_err(CheckpointError::Remote)?;
                let summary = summary
                    .ok_or_else(|| CheckpointError::Broken("it ended without an image".into()))?;
                return Ok(RemoteReport {
                    summary,
                    total: t0.elapsed(),
                });
            }
            _ => {}
        }
        if got > PROGRESS_ABOVE {
            progress(got);
        }
    }
}
