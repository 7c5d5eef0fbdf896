//! Reading and writing roam frames (see [`roam_proto::frame`]) on any byte
//! stream: a TLS link, a Unix socket, a pipe, an in-memory duplex.

use roam_proto::{decode_body, decode_hello, encode_hello, ProtoError, MAX_FRAME};
use serde::{de::DeserializeOwned, Serialize};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Size of a [`FrameReader`]'s read buffer.
pub const READ_BUF: usize = 256 * 1024;

/// Errors from reading or writing frames.
#[derive(Debug, Error)]
pub enum FramedError {
    #[error("i/o error on the connection")]
    Io(#[source] std::io::Error),
    #[error(transparent)]
    Proto(#[from] roam_proto::ProtoError),
    #[error("connection closed in the middle of a frame")]
    Truncated,
}

/// Frames at least this large are read straight into their own buffer
/// instead of through the read buffer (one copy less on the data path).
const DIRECT_MIN: usize = 64 * 1024;

/// Reads frames from a byte stream, refusing any frame larger than the limit
/// ([`MAX_FRAME`] by default) before buffering it.
///
/// Small frames are read through a 256 KiB buffer, allocated once, so that
/// one read from the stream yields many of them. A large frame (such as a
/// 256 KiB data frame) has the rest of its body read directly into a second
/// buffer, which [`read_msg`](Self::read_msg) decodes in place and keeps for
/// the next large frame, and [`read_frame`](Self::read_frame) hands over.
/// The framing rules are those of [`roam_proto::FrameDecoder`].
///
/// The read methods are cancel-safe: if a read is dropped before it
/// completes (e.g. the other branch of a `tokio::select!` won), no byte is
/// lost, and the next call continues where it stopped.
pub struct FrameReader<R> {
    inner: R,
    /// Read buffer; `buf[start..end]` holds bytes not yet returned.
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// The body of a large frame, read directly.
    big: Vec<u8>,
    /// The length of the large frame being read into `big`, if one is.
    big_len: Option<usize>,
    limit: usize,
}

/// Where [`FrameReader::next_body`] left a complete frame body.
enum Body {
    /// `buf[at..at + len]`
    Small { at: usize, len: usize },
    /// `big`
    Big,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader over `r` with the default limit of [`MAX_FRAME`].
    pub fn new(r: R) -> Self {
        Self::with_limit(r, MAX_FRAME)
    }

    /// A reader over `r` refusing frames larger than `limit` bytes.
    pub fn with_limit(r: R, limit: usize) -> Self {
        Self {
            inner: r,
            buf: vec![0u8; READ_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            big: Vec::new(),
            big_len: None,
            limit,
        }
    }

    /// Reads until a whole frame is buffered and marks it consumed; its body
    /// stays where the result says until the next call.
    async fn next_body(&mut self) -> Result<Option<Body>, FramedError> {
        // Cancel safety: every await below is a single read whose bytes are
        // recorded in `self` before the next await, and a read that is
        // dropped has consumed nothing.
        loop {
            if let Some(len) = self.big_len {
                let want = len - self.big.len();
                if want == 0 {
                    self.big_len = None;
                    return Ok(Some(Body::Big));
                }
                let n = (&mut self.inner)
                    .take(want as u64)
                    .read_buf(&mut self.big)
                    .await
                    .map_err(FramedError::Io)?;
                if n == 0 {
                    return Err(FramedError::Truncated);
                }
                continue;
            }

            let avail = self.end - self.start;
            if avail >= 4 {
                let h = &self.buf[self.start..self.start + 4];
                let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
                if len > self.limit {
                    return Err(ProtoError::FrameTooLarge {
                        len,
                        limit: self.limit,
                    }
                    .into());
                }
                if avail - 4 >= len {
                    let at = self.start + 4;
                    self.start = at + len;
                    return Ok(Some(Body::Small { at, len }));
                }
                if len >= DIRECT_MIN {
                    // Everything buffered belongs to this frame.
                    self.big.clear();
                    self.big.reserve(len);
                    self.big
                        .extend_from_slice(&self.buf[self.start + 4..self.end]);
                    self.start = 0;
                    self.end = 0;
                    self.big_len = Some(len);
                    continue;
                }
            }

            // The frame at `start` is incomplete and smaller than
            // DIRECT_MIN: make sure it fits in the buffer after `start`.
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            } else if self.buf.len() - self.start < DIRECT_MIN + 4 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let n = self
                .inner
                .read(&mut self.buf[self.end..])
                .await
                .map_err(FramedError::Io)?;
            if n == 0 {
                return if avail == 0 {
                    Ok(None)
                } else {
                    Err(FramedError::Truncated)
                };
            }
            self.end += n;
        }
    }

    fn body(&self, at: Body) -> &[u8] {
        match at {
            Body::Small { at, len } => &self.buf[at..at + len],
            Body::Big => &self.big,
        }
    }

    /// The next frame body. `Ok(None)` on a clean end of stream at a frame
    /// boundary; [`FramedError::Truncated`] if the stream ends inside a frame.
    pub async fn read_frame(&mut self) -> Result<Option<Vec<u8>>, FramedError> {
        Ok(match self.next_body().await? {
            None => None,
            Some(Body::Big) => Some(std::mem::take(&mut self.big)),
            Some(small) => Some(self.body(small).to_vec()),
        })
    }

    /// The next frame decoded as a `T` (`what` names it in errors), decoded
    /// straight from the read buffers.
    pub async fn read_msg<T: DeserializeOwned>(
        &mut self,
        what: &'static str,
    ) -> Result<Option<T>, FramedError> {
        match self.next_body().await? {
            Some(at) => Ok(Some(decode_body(what, self.body(at))?)),
            None => Ok(None),
        }
    }

    /// The next frame decoded as a hello: magic and protocol version are
    /// checked first ([`roam_proto::ProtoError::VersionMismatch`],
    /// [`roam_proto::ProtoError::BadMagic`]), then the body is decoded as a `T`.
    pub async fn read_hello<T: DeserializeOwned>(
        &mut self,
        what: &'static str,
    ) -> Result<Option<T>, FramedError> {
        match self.next_body().await? {
            Some(at) => Ok(Some(decode_hello(what, self.body(at))?)),
            None => Ok(None),
        }
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The underlying stream, mutably (reading from it directly would
    /// desynchronise the framing).
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Bytes read from the stream and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start + self.big_len.map_or(0, |_| self.big.len())
    }

    /// The underlying stream. Bytes already read but not yet returned as
    /// frames are lost.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// Writes frames to a byte stream. Every write is flushed, so messages are
/// not held back in a TLS or buffered writer.
///
/// Messages are encoded into a buffer kept from one message to the next, so
/// the data path does not allocate (and fault in) a fresh frame each time.
pub struct FrameWriter<W> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(w: W) -> Self {
        Self {
            inner: w,
            buf: Vec::new(),
        }
    }

    /// Encodes `msg` as one frame (exactly as [`roam_proto::encode_frame`]
    /// does), writes and flushes it.
    ///
    /// Not cancel-safe: a write dropped midway leaves a partial frame.
    pub async fn write_msg<T: Serialize>(
        &mut self,
        what: &'static str,
        msg: &T,
    ) -> Result<(), FramedError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.extend_from_slice(&[0u8; 4]);
        let mut buf =
            postcard::to_extend(msg, buf).map_err(|source| ProtoError::Encode { what, source })?;
        let len = buf.len() - 4;
        if len > MAX_FRAME {
            return Err(ProtoError::FrameTooLarge {
                len,
                limit: MAX_FRAME,
            }
            .into());
        }
        buf[..4].copy_from_slice(&(len as u32).to_le_bytes());
        let res = self.write_raw(&buf).await;
        self.buf = buf;
        res
    }

    /// Encodes `msg` as a hello frame (magic, our protocol version, body),
    /// writes and flushes it.
    pub async fn write_hello<T: Serialize>(
        &mut self,
        what: &'static str,
        msg: &T,
    ) -> Result<(), FramedError> {
        let frame = encode_hello(what, msg)?;
        self.write_raw(&frame).await
    }

    /// Writes an already encoded frame (length prefix included, as made by
    /// [`roam_proto::encode_frame`]) and flushes it.
    ///
    /// Not cancel-safe: a write dropped midway leaves a partial frame.
    pub async fn write_raw(&mut self, frame: &[u8]) -> Result<(), FramedError> {
        self.inner.write_all(frame).await.map_err(FramedError::Io)?;
        self.flush().await
    }

    pub async fn flush(&mut self) -> Result<(), FramedError> {
        self.inner.flush().await.map_err(FramedError::Io)
    }

    /// Flushes and shuts the write side down (a TLS close_notify, then FIN).
    pub async fn shutdown(&mut self) -> Result<(), FramedError> {
        self.inner.shutdown().await.map_err(FramedError::Io)
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roam_proto::link::LinkMsg;
    use roam_proto::types::{Chan, SessionId};

    #[tokio::test]
    async fn write_msg_encodes_like_encode_frame() {
        let msgs = [
            LinkMsg::Ping { seq: 3 },
            LinkMsg::Data {
                session: SessionId(9),
                chan: Chan::Stdin,
                offset: 1 << 40,
                data: vec![7; 300_000],
            },
            LinkMsg::Pong { seq: u64::MAX },
        ];
        let mut w = FrameWriter::new(Vec::new());
        let mut want = Vec::new();
        for m in &msgs {
            w.write_msg("link", m).await.unwrap();
            want.extend(roam_proto::encode_frame("link", m).unwrap());
        }
        assert_eq!(w.into_inner(), want);

        let mut w = FrameWriter::new(Vec::new());
        let big = LinkMsg::Data {
            session: SessionId(9),
            chan: Chan::Stdin,
            offset: 0,
            data: vec![7; MAX_FRAME],
        };
        let err = w.write_msg("link", &big).await.unwrap_err();
        assert!(matches!(
            err,
            FramedError::Proto(ProtoError::FrameTooLarge { .. })
        ));
        assert!(w.into_inner().is_empty());
    }
}
