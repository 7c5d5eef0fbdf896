//! Small pieces shared by the daemons' connection handling: a queue of
//! encoded frames drained by one writer task, with batching.

use roam_proto::encode_frame;
use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// The sending side of a connection: frames are encoded by the caller and
/// written in order by the connection's writer task. Cloning is cheap.
#[derive(Debug, Clone)]
pub struct FrameTx {
    tx: mpsc::UnboundedSender<Vec<u8>>,
}

/// The receiving side, owned by the writer task.
pub type FrameRx = mpsc::UnboundedReceiver<Vec<u8>>;

impl FrameTx {
    pub fn new() -> (FrameTx, FrameRx) {
        let (tx, rx) = mpsc::unbounded_channel();
        (FrameTx { tx }, rx)
    }

    /// Queues `msg`; false if the connection is gone.
    pub fn send<T: Serialize>(&self, what: &'static str, msg: &T) -> bool {
        match encode_frame(what, msg) {
            Ok(frame) => self.tx.send(frame).is_ok(),
            Err(e) => {
                tracing::error!("cannot encode {what} message: {e}");
                false
            }
        }
    }

    /// Whether both handles lead to the same connection.
    pub fn same(&self, other: &FrameTx) -> bool {
        self.tx.same_channel(&other.tx)
    }
}

/// Writes queued frames until the queue closes or a write fails, batching
/// whatever is queued into one write and one flush.
pub async fn writer_loop<W: AsyncWrite + Unpin>(mut w: W, mut rx: FrameRx) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    while let Some(first) = rx.recv().await {
        if rx.is_empty() {
            w.write_all(&first).await?;
        } else {
            buf.clear();
            buf.extend_from_slice(&first);
            while buf.len() < (1 << 20) {
                match rx.try_recv() {
                    Ok(f) => buf.extend_from_slice(&f),
                    Err(_) => break,
                }
            }
            w.write_all(&buf).await?;
        }
        if rx.is_empty() {
            w.flush().await?;
        }
    }
    let _ = w.shutdown().await;
    Ok(())
}
