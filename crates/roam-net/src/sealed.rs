//! A link's TLS 1.3 records sealed and opened here, after rustls's
//! handshake, instead of by rustls: for the links that carry a migration's
//! pages (node to node), where rustls's record handling cost more than the
//! cipher. rustls reads the socket 4 KiB at a time (its `READ_SIZE`) and
//! moves every record through its own buffers; here one read takes up to
//! 256 KiB of records, each opened in place, and one write sends up to
//! 1 MiB of them.
//!
//! The records are those of RFC 8446 section 5, under the keys and
//! sequence numbers the handshake agreed (rustls's
//! `dangerous_extract_secrets`, what the kernel's TLS takes): an
//! `application_data` header, the payload and its inner content type
//! sealed by the negotiated AEAD (AES-GCM or ChaCha20-Poly1305) with the
//! header as associated data, the nonce the traffic IV XOR the record's
//! sequence number. So the link is exactly as confidential and
//! authenticated as under rustls: a forged, altered, replayed, reordered
//! or truncated record fails to open and ends the link.
//!
//! What it does not do: post-handshake messages (no session tickets are
//! sent, see [`crate::tls`]; a `KeyUpdate` or any other handshake record
//! is refused) and key updates: after 2^24 records one way (256 GiB of
//! full records, under AES-GCM's limit of 2^24.5 per key), the link
//! refuses to seal more and ends; the next one has fresh keys. An alert
//! record ends the link too (`close_notify` as its end, any other as an
//! error).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A record's header: type, legacy version, length.
const HEADER: usize = 5;
/// The AEAD's tag.
const TAG: usize = 16;
/// Plaintext per record, at most (RFC 8446 section 5.1).
pub const MAX_PLAIN: usize = 1 << 14;
/// A record's protected length, at most (its length field, section 5.2).
const MAX_CIPHER: usize = MAX_PLAIN + 256;
const APPLICATION_DATA: u8 = 23;
const ALERT: u8 = 21;
const CLOSE_NOTIFY: u8 = 0;
/// Records one way under one key, at most.
pub const MAX_RECORDS: u64 = 1 << 24;
/// Bytes read from the socket at once, at most.
const READ_AT_ONCE: usize = 256 * 1024;
/// Plaintext sealed by one write, at most.
const SEAL_AT_ONCE: usize = 1 << 20;

/// Why a link's records cannot be sealed here, or a record is refused.
#[derive(Debug, Error)]
pub enum SealError {
    #[error("the handshake agreed on a cipher roam's record layer does not seal")]
    UnsupportedCipher,
    #[error("bad traffic key from the handshake")]
    BadKey,
    #[error("a record that is not application data in its header (type {0}) or of a bad version")]
    BadHeader(u8),
    #[error("a record of {0} bytes, out of what a record may hold (17 to {MAX_CIPHER})")]
    BadLength(usize),
    #[error("a record failed its authentication (corrupt, forged, replayed or out of order)")]
    Forged,
    #[error("a record with no content type")]
    NoContentType,
    #[error("a record of content type {0} (only application data is taken after the handshake)")]
    NotData(u8),
    #[error("the peer sent the TLS alert {0}")]
    Alert(u8),
    #[error(
        "the link's keys have sealed {MAX_RECORDS} records: it ends, and a new link has new keys"
    )]
    WornOut,
}

impl From<SealError> for io::Error {
    fn from(e: SealError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// One direction's key, IV and next sequence number.
struct Keys {
    key: LessSafeKey,
    iv: [u8; aead::NONCE_LEN],
    seq: u64,
}

impl Keys {
    fn new((seq, secrets): (u64, ConnectionTrafficSecrets)) -> Result<Keys, SealError> {
        let (alg, key, iv) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => return Err(SealError::UnsupportedCipher),
        };
        let key = UnboundKey::new(alg, key.as_ref()).map_err(|_| SealError::BadKey)?;
        Ok(Keys {
            key: LessSafeKey::new(key),
            iv: iv.as_ref().try_into().map_err(|_| SealError::BadKey)?,
            seq,
        })
    }

    /// The next record's nonce (section 5.3).
    fn nonce(&mut self) -> Result<Nonce, SealError> {
        if self.seq >= MAX_RECORDS {
            return Err(SealError::WornOut);
        }
        let mut n = self.iv;
        for (b, s) in n[aead::NONCE_LEN - 8..]
            .iter_mut()
            .zip(self.seq.to_be_bytes())
        {
            *b ^= s;
        }
        self.seq += 1;
        Ok(Nonce::assume_unique_for_key(n))
    }

    /// Appends `plain` to `out` as records.
    fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), SealError> {
        for chunk in plain.chunks(MAX_PLAIN) {
            let len = chunk.len() + 1 + TAG;
            let header = [APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8];
            out.extend_from_slice(&header);
            let at = out.len();
            out.extend_from_slice(chunk);
            out.push(APPLICATION_DATA);
            let nonce = self.nonce()?;
            let tag = self
                .key
                .seal_in_place_separate_tag(nonce, Aad::from(header), &mut out[at..])
                .map_err(|_| SealError::Forged)?;
            out.extend_from_slice(tag.as_ref());
        }
        Ok(())
    }

    /// Opens the record `rec` (header and body) in place: the range of
    /// its data in `rec`, or None for a `close_notify`.
    fn open(&mut self, rec: &mut [u8]) -> Result<Option<(usize, usize)>, SealError> {
        let header: [u8; HEADER] = rec[..HEADER].try_into().expect("a header");
        let nonce = self.nonce()?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(header), &mut rec[HEADER..])
            .map_err(|_| SealError::Forged)?;
        let at = plain
            .iter()
            .rposition(|&b| b != 0)
            .ok_or(SealError::NoContentType)?;
        match plain[at] {
            APPLICATION_DATA => Ok(Some((HEADER, HEADER + at))),
            ALERT if plain[..at].get(1) == Some(&CLOSE_NOTIFY) => Ok(None),
            ALERT => Err(SealError::Alert(plain[..at].get(1).copied().unwrap_or(0))),
            other => Err(SealError::NotData(other)),
        }
    }
}

/// The length of the record whose header starts `b`, checked.
fn record_len(b: &[u8]) -> Result<usize, SealError> {
    if b[0] != APPLICATION_DATA || b[1] != 3 || b[2] != 3 {
        return Err(SealError::BadHeader(b[0]));
    }
    let len = usize::from(u16::from_be_bytes([b[3], b[4]]));
    if !(TAG + 1..=MAX_CIPHER).contains(&len) {
        return Err(SealError::BadLength(len));
    }
    Ok(len)
}

/// Both halves of a link whose handshake is over (`secrets` from its
/// connection, nothing exchanged since: any record already read by rustls
/// would be lost), over the halves of its stream.
pub fn seal<R, W>(
    r: R,
    w: W,
    secrets: ExtractedSecrets,
) -> Result<(SealedReader<R>, SealedWriter<W>), SealError> {
    Ok((
        SealedReader {
            inner: r,
            keys: Keys::new(secrets.rx)?,
            buf: vec![0u8; READ_AT_ONCE + HEADER + MAX_CIPHER].into_boxed_slice(),
            start: 0,
            end: 0,
            plain: (0, 0),
            closed: false,
        },
        SealedWriter {
            inner: w,
            keys: Keys::new(secrets.tx)?,
            out: Vec::new(),
            sent: 0,
        },
    ))
}

/// The reading half: opens the records that come, in place.
pub struct SealedReader<R> {
    inner: R,
    keys: Keys,
    /// Records read: `buf[start..end]` not opened yet.
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Opened data not yet returned: `buf[plain.0..plain.1]`.
    plain: (usize, usize),
    /// The peer's `close_notify` came: the end.
    closed: bool,
}

impl<R: AsyncRead + Unpin> AsyncRead for SealedReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        loop {
            let (from, to) = me.plain;
            if from < to {
                let n = (to - from).min(out.remaining());
                out.put_slice(&me.buf[from..from + n]);
                me.plain.0 += n;
                return Poll::Ready(Ok(()));
            }
            if me.closed {
                return Poll::Ready(Ok(()));
            }
            if me.end - me.start >= HEADER {
                let len = record_len(&me.buf[me.start..me.start + HEADER])?;
                let whole = HEADER + len;
                if me.end - me.start >= whole {
                    let at = me.start;
                    me.start += whole;
                    match me.keys.open(&mut me.buf[at..at + whole])? {
                        Some((a, b)) => me.plain = (at + a, at + b),
                        None => me.closed = true,
                    }
                    continue;
                }
            }
            // Room for a whole record after `start` (what is left is part
            // of one; the data before it was all returned).
            if me.start == me.end {
                me.start = 0;
                me.end = 0;
            } else if me.buf.len() - me.start < HEADER + MAX_CIPHER {
                me.buf.copy_within(me.start..me.end, 0);
                me.end -= me.start;
                me.start = 0;
            }
            me.plain = (0, 0);
            let mut rb = ReadBuf::new(&mut me.buf[me.end..]);
            ready!(Pin::new(&mut me.inner).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            if n == 0 {
                return Poll::Ready(if me.start == me.end {
                    Ok(())
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the link ended in the middle of a record",
                    ))
                });
            }
            me.end += n;
        }
    }
}

/// The writing half: seals what is written into records, sent at once
/// or at the next write or flush.
pub struct SealedWriter<W> {
    inner: W,
    keys: Keys,
    /// Records sealed: `out[sent..]` not sent yet.
    out: Vec<u8>,
    sent: usize,
}

impl<W: AsyncWrite + Unpin> SealedWriter<W> {
    /// Sends the records sealed.
    fn push(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.out.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for SealedWriter<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        ready!(me.push(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let take = buf.len().min(SEAL_AT_ONCE);
        me.keys.seal(&buf[..take], &mut me.out)?;
        // Sent now if the socket takes them, otherwise by the next call
        // (which pushes first).
        if let Poll::Ready(Err(e)) = me.push(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(take))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        ready!(me.push(cx))?;
        Pin::new(&mut me.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        ready!(me.push(cx))?;
        Pin::new(&mut me.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::cipher::{AeadKey, Iv};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn secrets(seed: u8, seq: u64) -> ExtractedSecrets {
        let dir = |s: u8| {
            (
                seq,
                ConnectionTrafficSecrets::Aes256Gcm {
                    key: AeadKey::from([s; 32]),
                    iv: Iv::new([s.wrapping_add(1); 12]),
                },
            )
        };
        ExtractedSecrets {
            tx: dir(seed),
            rx: dir(seed.wrapping_add(50)),
        }
    }

    type End = (
        SealedReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>,
        SealedWriter<tokio::io::WriteHalf<tokio::io::DuplexStream>>,
    );

    /// Two ends of a link: what `a` seals, `b` opens, and back.
    fn pair() -> (End, End) {
        let (x, y) = tokio::io::duplex(64 * 1024);
        let (xr, xw) = tokio::io::split(x);
        let (yr, yw) = tokio::io::split(y);
        let a = seal(xr, xw, secrets(1, 0)).unwrap();
        let mut back = secrets(51, 0);
        back.rx.1 = secrets(1, 0).tx.1;
        let b = seal(yr, yw, back).unwrap();
        (a, b)
    }

    #[tokio::test]
    async fn what_one_end_seals_the_other_opens_whatever_the_sizes() {
        let ((_ar, mut aw), (mut br, _bw)) = pair();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 300) as u8).collect();
        let sizes = [
            0usize,
            1,
            16_383,
            16_384,
            16_385,
            100_000,
            1 << 20,
            1_500_000,
        ];
        let want = data.clone();
        let writer = tokio::spawn(async move {
            let mut at = 0;
            for n in sizes {
                let n = n.min(data.len() - at);
                aw.write_all(&data[at..at + n]).await.unwrap();
                at += n;
            }
            aw.write_all(&data[at..]).await.unwrap();
            aw.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        br.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got.len(), want.len());
        assert!(got == want);
    }

    #[tokio::test]
    async fn a_record_altered_replayed_or_cut_short_is_refused() {
        // The records of one message, sealed by hand.
        let mut keys = Keys::new(secrets(1, 0).tx).unwrap();
        let mut wire = Vec::new();
        keys.seal(b"first", &mut wire).unwrap();
        let one = wire.len();
        keys.seal(b"second", &mut wire).unwrap();
        let open = |bytes: Vec<u8>| async move {
            let (x, mut y) = tokio::io::duplex(1 << 16);
            y.write_all(&bytes).await.unwrap();
            drop(y);
            let (xr, xw) = tokio::io::split(x);
            let mut s = secrets(9, 0);
            s.rx = secrets(1, 0).tx;
            let (mut r, _w) = seal(xr, xw, s).unwrap();
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.map(|_| got)
        };
        assert_eq!(open(wire.clone()).await.unwrap(), b"firstsecond");
        // A bit flipped in the body, or in the header (associated data).
        for at in [HEADER + 1, 4] {
            let mut bad = wire.clone();
            bad[at] ^= 1;
            assert!(open(bad).await.is_err(), "flipped at {at}");
        }
        // The second record before the first, or the first twice.
        let mut swapped = wire[one..].to_vec();
        swapped.extend_from_slice(&wire[..one]);
        assert!(open(swapped).await.is_err());
        let mut twice = wire[..one].to_vec();
        twice.extend_from_slice(&wire[..one]);
        assert!(open(twice).await.is_err());
        // Cut in the middle of a record.
        let e = open(wire[..wire.len() - 3].to_vec()).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        // A header that claims too much, or is not application data.
        let mut long = wire.clone();
        long[3] = 0xff;
        assert!(open(long).await.is_err());
        let mut handshake = wire.clone();
        handshake[0] = 22;
        assert!(open(handshake).await.is_err());
    }

    #[test]
    fn keys_wear_out_after_their_records() {
        let mut keys = Keys::new(secrets(1, MAX_RECORDS - 1).tx).unwrap();
        let mut out = Vec::new();
        keys.seal(b"last", &mut out).unwrap();
        assert!(matches!(
            keys.seal(b"one more", &mut out),
            Err(SealError::WornOut)
        ));
    }

    #[test]
    fn the_inner_content_type_decides_what_a_record_is() {
        let s = || secrets(3, 0).tx;
        let sealed = |inner: &[u8]| {
            let mut k = Keys::new(s()).unwrap();
            let len = inner.len() + TAG;
            let header = [APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8];
            let mut rec = header.to_vec();
            rec.extend_from_slice(inner);
            let nonce = k.nonce().unwrap();
            let tag = k
                .key
                .seal_in_place_separate_tag(nonce, Aad::from(header), &mut rec[HEADER..])
                .unwrap();
            rec.extend_from_slice(tag.as_ref());
            rec
        };
        let open = |mut rec: Vec<u8>| Keys::new(s()).unwrap().open(&mut rec);
        // Data, with padding after its type.
        assert_eq!(
            open(sealed(b"abc\x17\0\0")).unwrap(),
            Some((HEADER, HEADER + 3))
        );
        // close_notify ends the link; another alert is an error.
        assert_eq!(open(sealed(b"\x01\x00\x15")).unwrap(), None);
        assert!(matches!(
            open(sealed(b"\x02\x28\x15")),
            Err(SealError::Alert(0x28))
        ));
        // A handshake message (a key update, a ticket), or no type at all.
        assert!(matches!(
            open(sealed(b"\x18\0\0\x01\x16")),
            Err(SealError::NotData(22))
        ));
        assert!(matches!(
            open(sealed(b"\0\0")),
            Err(SealError::NoContentType)
        ));
    }
}
