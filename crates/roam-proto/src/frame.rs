//! Framing: every message is a frame of `u32` little-endian length followed by
//! that many bytes of postcard-encoded body.
//!
//! The first frame in each direction of every connection is a *hello*: four
//! magic bytes `ROAM`, the sender's protocol version as `u32` little-endian,
//! then a postcard body whose type depends on the connection kind. The
//! receiver checks magic and version before it decodes anything else.

use serde::{de::DeserializeOwned, Serialize};
use thiserror::Error;

use crate::PROTOCOL_VERSION;

/// The largest frame body accepted from a peer (1 MiB + a little for headers).
pub const MAX_FRAME: usize = (1 << 20) + 4096;

/// The largest chunk of stream data put in one frame.
pub const MAX_DATA_CHUNK: usize = 256 * 1024;

/// Magic bytes at the start of every hello frame.
pub const HELLO_MAGIC: [u8; 4] = *b"ROAM";

/// Errors from decoding frames and messages.
#[derive(Debug, Error)]
pub enum ProtoError {
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge { len: usize, limit: usize },
    #[error("malformed {what} message")]
    Malformed {
        what: &'static str,
        #[source]
        source: postcard::Error,
    },
    #[error("could not encode {what} message")]
    Encode {
        what: &'static str,
        #[source]
        source: postcard::Error,
    },
    #[error("not a roam peer: hello frame has no ROAM magic")]
    BadMagic,
    #[error("hello frame truncated ({len} bytes)")]
    ShortHello { len: usize },
    #[error(
        "protocol version mismatch: we speak version {ours}, the peer speaks version {theirs}"
    )]
    VersionMismatch { ours: u32, theirs: u32 },
}

/// Encodes `msg` as one frame (length prefix included).
pub fn encode_frame<T: Serialize>(what: &'static str, msg: &T) -> Result<Vec<u8>, ProtoError> {
    let out = postcard::to_extend(msg, vec![0u8; 4])
        .map_err(|source| ProtoError::Encode { what, source })?;
    finish_frame(out)
}

pub(crate) fn finish_frame(mut out: Vec<u8>) -> Result<Vec<u8>, ProtoError> {
    let len = out.len() - 4;
    if len > MAX_FRAME {
        return Err(ProtoError::FrameTooLarge {
            len,
            limit: MAX_FRAME,
        });
    }
    out[..4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(out)
}

/// Decodes a frame body (without its length prefix) as a `T`.
pub fn decode_body<T: DeserializeOwned>(what: &'static str, body: &[u8]) -> Result<T, ProtoError> {
    postcard::from_bytes(body).map_err(|source| ProtoError::Malformed { what, source })
}

/// Encodes a hello frame carrying our [`PROTOCOL_VERSION`] and `body`.
pub fn encode_hello<T: Serialize>(what: &'static str, body: &T) -> Result<Vec<u8>, ProtoError> {
    encode_hello_version(what, PROTOCOL_VERSION, body)
}

/// Encodes a hello frame with an explicit version (tests use it to play a
/// peer of another version).
pub fn encode_hello_version<T: Serialize>(
    what: &'static str,
    version: u32,
    body: &T,
) -> Result<Vec<u8>, ProtoError> {
    let mut out = vec![0u8; 4];
    out.extend_from_slice(&HELLO_MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    let out =
        postcard::to_extend(body, out).map_err(|source| ProtoError::Encode { what, source })?;
    finish_frame(out)
}

/// Checks a hello frame's magic and version and decodes its body.
///
/// A version mismatch is reported as [`ProtoError::VersionMismatch`] before
/// the body is looked at, so any two versions can tell each other apart.
pub fn decode_hello<T: DeserializeOwned>(
    what: &'static str,
    frame: &[u8],
) -> Result<T, ProtoError> {
    let theirs = peek_hello_version(frame)?;
    if theirs != PROTOCOL_VERSION {
        return Err(ProtoError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs,
        });
    }
    decode_body(what, &frame[8..])
}

/// Reads the version of a hello frame without decoding its body.
pub fn peek_hello_version(frame: &[u8]) -> Result<u32, ProtoError> {
    if frame.len() < 8 {
        if frame.len() >= 4 && frame[..4] != HELLO_MAGIC {
            return Err(ProtoError::BadMagic);
        }
        return Err(ProtoError::ShortHello { len: frame.len() });
    }
    if frame[..4] != HELLO_MAGIC {
        return Err(ProtoError::BadMagic);
    }
    Ok(u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]))
}

/// Accumulates bytes read from a stream and splits them into frame bodies,
/// refusing any frame larger than the limit before buffering it.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
    limit: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(MAX_FRAME)
    }
}

impl FrameDecoder {
    /// A decoder that refuses frames larger than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            limit,
        }
    }

    /// Appends bytes read from the stream.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete frame body, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, ProtoError> {
        let avail = &self.buf[self.start..];
        if avail.len() < 4 {
            self.compact();
            return Ok(None);
        }
        let len = u32::from_le_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
        if len > self.limit {
            return Err(ProtoError::FrameTooLarge {
                len,
                limit: self.limit,
            });
        }
        if avail.len() < 4 + len {
            self.compact();
            return Ok(None);
        }
        let body = avail[4..4 + len].to_vec();
        self.start += 4 + len;
        Ok(Some(body))
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::LinkMsg;
    use crate::types::{Chan, SessionId};

    #[test]
    fn frame_round_trip_split_anywhere() {
        let msg = LinkMsg::Data {
            session: SessionId(7),
            chan: Chan::Stdout,
            offset: 42,
            data: vec![1, 2, 3, 255, 0],
        };
        let f1 = encode_frame("link", &msg).unwrap();
        let f2 = encode_frame("link", &LinkMsg::Ping { seq: 9 }).unwrap();
        let all: Vec<u8> = f1.iter().chain(f2.iter()).copied().collect();
        for cut in 0..all.len() {
            let mut d = FrameDecoder::default();
            d.extend(&all[..cut]);
            let mut got = Vec::new();
            while let Some(b) = d.next_frame().unwrap() {
                got.push(b);
            }
            d.extend(&all[cut..]);
            while let Some(b) = d.next_frame().unwrap() {
                got.push(b);
            }
            assert_eq!(got.len(), 2);
            let m: LinkMsg = decode_body("link", &got[0]).unwrap();
            assert_eq!(m, msg);
        }
    }

    #[test]
    fn oversized_frame_refused_before_buffering() {
        let mut d = FrameDecoder::new(100);
        d.extend(&1000u32.to_le_bytes());
        assert!(matches!(
            d.next_frame(),
            Err(ProtoError::FrameTooLarge { len: 1000, .. })
        ));
    }

    #[test]
    fn hello_version_checked_first() {
        let f = encode_hello_version("hello", 99, &"anything".to_string()).unwrap();
        let err = decode_hello::<String>("hello", &f[4..]).unwrap_err();
        assert!(matches!(
            err,
            ProtoError::VersionMismatch {
                ours: crate::PROTOCOL_VERSION,
                theirs: 99
            }
        ));
        assert!(err.to_string().contains("version 99"));
        let f = encode_hello("hello", &"x".to_string()).unwrap();
        assert_eq!(decode_hello::<String>("hello", &f[4..]).unwrap(), "x");
        assert!(matches!(
            decode_hello::<String>("hello", b"GET / HTTP/1.1"),
            Err(ProtoError::BadMagic)
        ));
        assert!(matches!(
            decode_hello::<String>("hello", b"RO"),
            Err(ProtoError::ShortHello { .. })
        ));
    }

    /// Valid messages of every shape, mutated: flipped bits, truncations,
    /// inflated length prefixes. Decoding must fail cleanly or succeed,
    /// never panic or allocate without bound.
    #[test]
    fn mutated_messages_never_panic() {
        use crate::local::LocalMsg;
        use crate::types::*;
        let spec = SpawnSpec {
            argv: vec![serde_bytes::ByteBuf::from(b"prog".to_vec())],
            program: serde_bytes::ByteBuf::from(b"prog".to_vec()),
            env: vec![serde_bytes::ByteBuf::from(b"A=b".to_vec())],
            cwd: serde_bytes::ByteBuf::from(b"/".to_vec()),
            umask: 0o22,
            tty: Some(TtySpec {
                stdin: true,
                stdout: true,
                stderr: false,
                rows: 24,
                cols: 80,
                modes: vec![(1, 3), (128, 38400)],
            }),
            rank: Some((1, 2)),
            arch: Some("aarch64".into()),
            script: vec![serde_bytes::ByteBuf::from(b"/bin/sh".to_vec())],
            null: [true, false, false],
            home_ppid: 77,
            home_host: "home".into(),
            staged: Some(StageHash([9; 32])),
            confine: true,
        };
        let samples: Vec<Vec<u8>> = vec![
            postcard::to_stdvec(&LinkMsg::Data {
                session: SessionId(1),
                chan: Chan::Stdin,
                offset: 9,
                data: vec![7; 40],
            })
            .unwrap(),
            postcard::to_stdvec(&LinkMsg::Spawn {
                req: 3,
                session: SessionId(4),
                home_pid: 5,
                cred: Cred {
                    uid: 1,
                    gid: 2,
                    groups: vec![3, 4],
                },
                spec: Box::new(spec.clone()),
            })
            .unwrap(),
            postcard::to_stdvec(&LinkMsg::Kill {
                req: 9,
                session: SessionId(4),
                from_uid: 1000,
                pid: 4321,
                group: true,
                signal: WireSignal(10),
                value: Some(u64::MAX),
            })
            .unwrap(),
            postcard::to_stdvec(&LinkMsg::KillReply {
                req: 9,
                result: Err(KillRefusal::NotPermitted),
            })
            .unwrap(),
            postcard::to_stdvec(&LocalMsg::Spawn {
                spec: Box::new(spec),
                node: Some("n1".into()),
                mode: Some(Mode::Parallel),
                reservation: Some((1, 0)),
            })
            .unwrap(),
            postcard::to_stdvec(&LinkMsg::Stage {
                req: 11,
                hash: StageHash([0xab; 32]),
                len: 1 << 20,
            })
            .unwrap(),
            postcard::to_stdvec(&LinkMsg::Staged {
                req: 11,
                result: Err(WireError::new(ErrorCode::NotStaged, "no")),
            })
            .unwrap(),
            postcard::to_stdvec(&LocalMsg::ProcList(vec![ProcInfo {
                home_pid: 1,
                session: SessionId(2),
                node: "n".into(),
                node_pid: 3,
                uid: 0,
                state: 'S',
                cpu_ms: 4,
                rss_kib: 5,
                command: "c".into(),
                elapsed_s: 6,
                moves: 1,
            }]))
            .unwrap(),
        ];
        let mut x: u64 = 0x2545f4914f6cdd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for base in &samples {
            for _ in 0..5000 {
                let mut m = base.clone();
                match next() % 4 {
                    0 => {
                        let i = (next() as usize) % m.len();
                        m[i] ^= 1 << (next() % 8);
                    }
                    1 => {
                        let i = (next() as usize) % m.len();
                        m.truncate(i);
                    }
                    2 => {
                        // A huge varint where a length may be.
                        let i = (next() as usize) % m.len();
                        m.splice(i..i, [0xff, 0xff, 0xff, 0xff, 0x0f]);
                    }
                    _ => {
                        let i = (next() as usize) % m.len();
                        m[i] = next() as u8;
                    }
                }
                let _ = decode_body::<LinkMsg>("link", &m);
                let _ = decode_body::<LocalMsg>("local", &m);
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        // A cheap deterministic fuzz: every decoder path on pseudo-random input.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for round in 0..20_000 {
            let len = (round % 64) + 1;
            let mut bytes = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                bytes.push(x as u8);
            }
            let _ = decode_body::<LinkMsg>("link", &bytes);
            let _ = decode_body::<crate::local::LocalMsg>("local", &bytes);
            let _ = decode_hello::<crate::link::LinkHello>("hello", &bytes);
            let mut d = FrameDecoder::new(1024);
            d.extend(&bytes);
            while let Ok(Some(_)) = d.next_frame() {}
        }
    }
}
