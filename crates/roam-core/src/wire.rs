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

    /// Queues a frame already encoded; false if the connection is gone.
    pub fn send_frame(&self, frame: Vec<u8>) -> bool {
        self.tx.send(frame).is_ok()
    }

    /// Whether the connection is gone (its writer ended).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Whether both handles lead to the same connection.
    pub fn same(&self, other: &FrameTx) -> bool {
        self.tx.same_channel(&other.tx)
    }
}

/// Frames at least this long are written as they are, not copied into a
/// batch (the copy would cost more than the write it saves).
const WRITE_ALONE: usize = 64 << 10;

/// Writes queued frames until the queue closes or a write fails, batching
/// small frames queued together into one write; one flush when the queue
/// is empty.
pub async fn writer_loop<W: AsyncWrite + Unpin>(mut w: W, mut rx: FrameRx) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut next: Option<Vec<u8>> = None;
    loop {
        let first = match next.take() {
            Some(f) => f,
            None => match rx.recv().await {
                Some(f) => f,
                None => break,
            },
        };
        if rx.is_empty() || first.len() >= WRITE_ALONE {
            w.write_all(&first).await?;
        } else {
            buf.clear();
            buf.extend_from_slice(&first);
            while buf.len() < (1 << 20) {
                match rx.try_recv() {
                    Ok(f) if f.len() >= WRITE_ALONE => {
                        next = Some(f);
                        break;
                    }
                    Ok(f) => buf.extend_from_slice(&f),
                    Err(_) => break,
                }
            }
            w.write_all(&buf).await?;
        }
        if next.is_some() {
            continue;
        }
        if rx.is_empty() {
            w.flush().await?;
        }
    }
    let _ = w.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_are_written_in_order_whatever_their_sizes() {
        let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let sizes = [10usize, 200_000, 3, 5, 70_000, 1, 2_000_000, 7];
        let frames: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| vec![i as u8; n])
            .collect();
        for f in &frames {
            tx.send(f.clone()).unwrap();
        }
        drop(tx);
        let mut out: Vec<u8> = Vec::new();
        writer_loop(&mut out, rx).await.unwrap();
        assert_eq!(out, frames.concat());
    }
}
