//! The node's cache of staged executables: files shipped from the home
//! (`roam run --ship`, the GridRPC client's executables) and kept under
//! their SHA-256, so that the second run of the same file ships nothing.
//! See docs/design/staging.md.
//!
//! A file comes in as an image transfer (`Stage`, then `Image`s and
//! `ImageEnd`), is written to a temporary file in the cache directory as
//! it arrives, hashed on the way, and takes its name only if its length
//! and hash are the ones announced: what is in the cache under a name is
//! that name's content. The directory is root's alone (0700); the files
//! are 0555, opened by the daemon and executed by the process through
//! their descriptor.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use roam_proto::link::LinkMsg;
use roam_proto::types::{ErrorCode, StageHash, WireError};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::NodeShared;

/// How long a transfer may pause before the node gives up on it.
const IDLE: Duration = Duration::from_secs(60);

/// Prefix of files still coming in.
const PART: &str = ".part-";

/// The cache, from the node's configuration.
pub(super) struct StageCache {
    dir: PathBuf,
    max: u64,
    cap: u64,
}

fn err(code: ErrorCode, msg: impl Into<String>) -> WireError {
    WireError::new(code, msg)
}

impl StageCache {
    /// The cache in `dir`; files of at most `max_mib`, `cap_mib` in all.
    /// Removes what a daemon that died left half-written.
    pub(super) fn new(dir: &Path, max_mib: u64, cap_mib: u64) -> StageCache {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(PART) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        StageCache {
            dir: dir.to_owned(),
            max: max_mib.saturating_mul(1 << 20),
            cap: cap_mib.saturating_mul(1 << 20),
        }
    }

    fn path(&self, hash: &StageHash) -> PathBuf {
        self.dir.join(hash.hex())
    }

    /// The staged file of `hash`, opened (close-on-exec), and marked as
    /// just used; None if the cache has none.
    pub(super) fn open(&self, hash: &StageHash) -> std::io::Result<Option<File>> {
        match File::open(self.path(hash)) {
            Ok(f) => {
                // Least recently used goes first: this one is used now.
                let _ = f.set_modified(SystemTime::now());
                Ok(Some(f))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn prepare_dir(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
    }

    /// Removes the least recently used files until the cache holds at
    /// most its size, never `keep`. A process started from a removed file
    /// runs on (its descriptor holds the file).
    fn evict(&self, keep: &Path) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(SystemTime, u64, PathBuf)> = entries
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with(PART))
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().ok()?, m.len(), e.path()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        files.sort();
        for (_, len, path) in files {
            if total <= self.cap {
                break;
            }
            if path != keep && std::fs::remove_file(&path).is_ok() {
                tracing::info!("staged file {} evicted", path.display());
                total -= len;
            }
        }
    }
}

/// `Stage` `req`: receives the file of `len` bytes that should hash to
/// `hash`, and keeps it in the cache.
pub(super) async fn receive(
    shared: &NodeShared,
    req: u64,
    hash: StageHash,
    len: u64,
    mut rx: mpsc::UnboundedReceiver<LinkMsg>,
) -> Result<(), WireError> {
    let cache = &shared.stage;
    if len > cache.max {
        return Err(err(
            ErrorCode::NoCapacity,
            format!(
                "node {} takes staged files of at most {} MiB; this one has {len} bytes",
                shared.name,
                cache.max >> 20
            ),
        ));
    }
    let present = cache
        .open(&hash)
        .map_err(|e| err(ErrorCode::Internal, format!("{}: {e}", cache.dir.display())))?;
    if present.is_some() {
        return Ok(());
    }
    cache
        .prepare_dir()
        .map_err(|e| err(ErrorCode::Internal, format!("{}: {e}", cache.dir.display())))?;
    let part = cache.dir.join(format!("{PART}{}-{req}", hash.hex()));
    let result = write_part(shared, req, &hash, len, &part, &mut rx).await;
    match result {
        Ok(()) => {
            let final_path = cache.path(&hash);
            std::fs::rename(&part, &final_path).map_err(|e| {
                err(
                    ErrorCode::Internal,
                    format!("cannot keep {}: {e}", final_path.display()),
                )
            })?;
            tracing::info!("staged {hash} ({len} bytes)");
            cache.evict(&final_path);
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            tracing::warn!("staging of {hash} failed: {e}");
            Err(e)
        }
    }
}

/// Writes the transfer to `part`, checks its length and hash, and makes
/// it read-only and durable.
async fn write_part(
    shared: &NodeShared,
    req: u64,
    hash: &StageHash,
    len: u64,
    part: &Path,
    rx: &mut mpsc::UnboundedReceiver<LinkMsg>,
) -> Result<(), WireError> {
    let io = |e: std::io::Error| err(ErrorCode::Internal, format!("{}: {e}", part.display()));
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o500)
        .open(part)
        .await
        .map_err(io)?;
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut got: u64 = 0;
    loop {
        let msg = tokio::time::timeout(IDLE, rx.recv())
            .await
            .ok()
            .flatten()
            .ok_or_else(|| err(ErrorCode::Unavailable, "the staged file stopped coming"))?;
        match msg {
            LinkMsg::Image { offset, data, .. } => {
                if offset != got || got.saturating_add(data.len() as u64) > len {
                    return Err(err(
                        ErrorCode::BadRequest,
                        format!(
                            "staged data at {offset} (+{}) where {got} of {len} bytes were expected",
                            data.len()
                        ),
                    ));
                }
                digest.update(&data);
                file.write_all(&data).await.map_err(io)?;
                got += data.len() as u64;
                shared.ack(req, got);
            }
            LinkMsg::ImageEnd { result: Ok(s), .. } => {
                if s.len != len || got != len {
                    return Err(err(
                        ErrorCode::BadRequest,
                        format!("the staged file ended at {got} bytes of {len}"),
                    ));
                }
                break;
            }
            LinkMsg::ImageEnd { result: Err(e), .. } => return Err(e),
            _ => {}
        }
    }
    let sum = digest.finish();
    if sum.as_ref() != hash.0 {
        let mut got = StageHash([0; 32]);
        got.0.copy_from_slice(sum.as_ref());
        return Err(err(
            ErrorCode::BadRequest,
            format!("the staged file's hash is {got}, not the {hash} it was sent as"),
        ));
    }
    // Root's; anyone may execute it (through the daemon's descriptor:
    // the directory is root's alone).
    file.set_permissions(std::fs::Permissions::from_mode(0o555))
        .await
        .map_err(io)?;
    file.sync_all().await.map_err(io)?;
    Ok(())
}
