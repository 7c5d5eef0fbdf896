//! The client–worker protocol: frames over TCP, and the handshake that
//! authenticates both ends.
//!
//! A frame is a u32 big-endian length (of what follows), a kind byte and a
//! body; no frame is longer than the limit the reader sets.
//!
//! The worker, a remote executable started by the client through roam,
//! connects back to the client (as Ninf-G's remote executables do) and
//! opens with `Hello`: magic, version, the id and a fresh nonce, and its
//! interface. Both ends hold a 32-byte key that the client made for this
//! worker and gave it in its environment (which travels over roam's
//! authenticated links and is readable only by the user and root). The
//! client answers with its own nonce and an HMAC-SHA256 over the worker's
//! nonce; the worker checks it, then answers with an HMAC over the
//! client's nonce and the whole Hello. Neither end acts on anything the
//! other sent before the MACs check out.

use std::io::{self, Read, Write};

use ring::hmac;

use crate::data::Order;

pub const MAGIC: &[u8; 4] = b"RRPC";
pub const VERSION: u16 = 1;
/// Default limit on a frame: arrays of up to this size in one call.
pub const DEFAULT_MAX_FRAME: usize = 1 << 30;
/// Limit on handshake frames.
pub const HANDSHAKE_MAX: usize = 1 << 20;

pub const HELLO: u8 = 1;
pub const AUTH: u8 = 2;
pub const AUTH_OK: u8 = 3;
pub const CALL: u8 = 4;
pub const REPLY: u8 = 5;
pub const BYE: u8 = 6;

/// Reply statuses.
pub const OK: u8 = 0;
/// The function failed; a message follows.
pub const FAILED: u8 = 1;
/// No such function; a message follows.
pub const NO_FUNCTION: u8 = 2;
/// The call's arguments did not decode; a message follows.
pub const BAD_ARGS: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("frame of {len} bytes is over the limit of {max}")]
    TooLong { len: usize, max: usize },
    #[error("empty frame")]
    Empty,
    #[error("expected message {want}, got {got}")]
    Unexpected { want: u8, got: u8 },
    #[error("not a roam-rpc peer (bad magic)")]
    Magic,
    #[error("protocol version {0}, this side speaks {VERSION}")]
    Version(u16),
    #[error("authentication failed: {0}")]
    Auth(&'static str),
    #[error("malformed {0}")]
    Malformed(&'static str),
}

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, kind: u8, body: &[u8]) -> io::Result<()> {
    write_frame_parts(w, kind, &[body])
}

/// Writes one frame whose body is `parts` one after the other: a small
/// frame in one write (one segment), large parts straight from where
/// they are, without a copy.
pub fn write_frame_parts(w: &mut impl Write, kind: u8, parts: &[&[u8]]) -> io::Result<()> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(total + 1)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame over 4 GiB"))?;
    let small = total < 64 * 1024;
    let mut head = Vec::with_capacity(if small { 5 + total } else { 5 + 256 });
    head.extend_from_slice(&len.to_be_bytes());
    head.push(kind);
    let mut rest = parts;
    // Small leading parts (a call's header) go with the frame's head.
    while let Some((p, more)) = rest.split_first() {
        if !small && p.len() > 256 {
            break;
        }
        head.extend_from_slice(p);
        rest = more;
    }
    w.write_all(&head)?;
    for p in rest {
        w.write_all(p)?;
    }
    Ok(())
}

/// Reads one frame's head: its kind and the length of its body, which
/// follows in the stream. `None` at a clean end of stream.
pub fn read_frame_head(r: &mut impl Read, max: usize) -> Result<Option<(u8, usize)>, ProtoError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 {
        return Err(ProtoError::Empty);
    }
    if len > max {
        return Err(ProtoError::TooLong { len, max });
    }
    let mut kind = [0u8; 1];
    r.read_exact(&mut kind)?;
    Ok(Some((kind[0], len - 1)))
}

/// Reads one frame: `None` at a clean end of stream.
pub fn read_frame(r: &mut impl Read, max: usize) -> Result<Option<(u8, Vec<u8>)>, ProtoError> {
    let Some((kind, len)) = read_frame_head(r, max)? else {
        return Ok(None);
    };
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(Some((kind, body)))
}

/// Reads a frame that must be there and of kind `want`.
pub fn expect_frame(r: &mut impl Read, want: u8, max: usize) -> Result<Vec<u8>, ProtoError> {
    match read_frame(r, max)? {
        None => Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
        Some((k, b)) if k == want => Ok(b),
        Some((k, _)) => Err(ProtoError::Unexpected { want, got: k }),
    }
}

/// What a worker says first.
#[derive(Debug, Clone, PartialEq)]
pub struct Hello {
    pub id: u32,
    pub nonce: [u8; 16],
    /// The worker's native byte order.
    pub order: Order,
    /// The worker's interface, as `Idl`'s display.
    pub interface: String,
}

impl Hello {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(26 + self.interface.len());
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&VERSION.to_be_bytes());
        b.extend_from_slice(&self.id.to_be_bytes());
        b.extend_from_slice(&self.nonce);
        b.push(self.order.code());
        b.extend_from_slice(self.interface.as_bytes());
        b
    }
    pub fn decode(b: &[u8]) -> Result<Hello, ProtoError> {
        if b.len() < 27 {
            return Err(ProtoError::Malformed("hello"));
        }
        if &b[..4] != MAGIC {
            return Err(ProtoError::Magic);
        }
        let version = u16::from_be_bytes([b[4], b[5]]);
        if version != VERSION {
            return Err(ProtoError::Version(version));
        }
        Ok(Hello {
            id: u32::from_be_bytes(b[6..10].try_into().expect("4 bytes")),
            nonce: b[10..26].try_into().expect("16 bytes"),
            order: Order::from_code(b[26]).ok_or(ProtoError::Malformed("hello"))?,
            interface: String::from_utf8(b[27..].to_vec())
                .map_err(|_| ProtoError::Malformed("hello"))?,
        })
    }
}

/// A random nonce.
pub fn nonce() -> [u8; 16] {
    rand::random()
}

fn mac(key: &[u8; 32], label: &[u8], parts: &[&[u8]]) -> hmac::Tag {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&k);
    ctx.update(label);
    for p in parts {
        ctx.update(p);
    }
    ctx.sign()
}

fn verify(key: &[u8; 32], label: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut msg = label.to_vec();
    for p in parts {
        msg.extend_from_slice(p);
    }
    hmac::verify(&k, &msg, tag).is_ok()
}

const CLIENT_LABEL: &[u8] = b"roam-rpc client v1";
const WORKER_LABEL: &[u8] = b"roam-rpc worker v1";

/// The client's answer to `hello`: its nonce, the byte order of the
/// connection's arrays, and its MAC over both ends' choices. Returns the
/// frame body and the nonce to check the worker's MAC with.
pub fn client_auth(key: &[u8; 32], hello: &Hello, order: Order) -> (Vec<u8>, [u8; 16]) {
    let ours = nonce();
    let o = [order.code()];
    let tag = mac(
        key,
        CLIENT_LABEL,
        &[&hello.nonce, &hello.id.to_be_bytes(), &o],
    );
    let mut b = ours.to_vec();
    b.push(o[0]);
    b.extend_from_slice(tag.as_ref());
    (b, ours)
}

/// The worker's check of the client's `Auth`; on success, the body of its
/// `AuthOk` and the connection's byte order.
pub fn worker_check(
    key: &[u8; 32],
    hello: &Hello,
    auth: &[u8],
) -> Result<(Vec<u8>, Order), ProtoError> {
    if auth.len() != 49 {
        return Err(ProtoError::Malformed("auth"));
    }
    if !verify(
        key,
        CLIENT_LABEL,
        &[&hello.nonce, &hello.id.to_be_bytes(), &auth[16..17]],
        &auth[17..],
    ) {
        return Err(ProtoError::Auth(
            "the client does not hold this worker's key",
        ));
    }
    let order = Order::from_code(auth[16]).ok_or(ProtoError::Malformed("auth"))?;
    let tag = mac(key, WORKER_LABEL, &[&auth[..16], &hello.encode()]);
    Ok((tag.as_ref().to_vec(), order))
}

/// The client's check of the worker's `AuthOk`.
pub fn client_check(
    key: &[u8; 32],
    ours: &[u8; 16],
    hello: &Hello,
    ok: &[u8],
) -> Result<(), ProtoError> {
    if verify(key, WORKER_LABEL, &[ours, &hello.encode()], ok) {
        Ok(())
    } else {
        Err(ProtoError::Auth("the worker does not hold its key"))
    }
}

/// The start of a call's body, before its encoded arguments.
pub fn call_head(id: u64, func: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(10 + func.len());
    b.extend_from_slice(&id.to_be_bytes());
    b.extend_from_slice(&(func.len() as u16).to_be_bytes());
    b.extend_from_slice(func.as_bytes());
    b
}

/// A reply's header: id and status; the values or a message follow.
pub fn reply_head(id: u64, status: u8) -> Vec<u8> {
    let mut b = Vec::with_capacity(9);
    b.extend_from_slice(&id.to_be_bytes());
    b.push(status);
    b
}

/// Hex of a key, for the environment.
pub fn key_hex(key: &[u8; 32]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn key_from_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut k = [0u8; 32];
    for (i, k) in k.iter_mut().enumerate() {
        *k = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_limits_hold() {
        let mut b = Vec::new();
        write_frame(&mut b, CALL, b"abc").unwrap();
        write_frame(&mut b, BYE, b"").unwrap();
        let mut r = &b[..];
        assert_eq!(
            read_frame(&mut r, 100).unwrap(),
            Some((CALL, b"abc".to_vec()))
        );
        assert_eq!(read_frame(&mut r, 100).unwrap(), Some((BYE, vec![])));
        assert!(read_frame(&mut r, 100).unwrap().is_none());
        let mut r = &b[..];
        assert!(matches!(
            read_frame(&mut r, 3),
            Err(ProtoError::TooLong { len: 4, max: 3 })
        ));
        let mut r = &b[..6];
        assert!(read_frame(&mut r, 100).is_err());
        let zero = [0u8; 4];
        assert!(matches!(
            read_frame(&mut &zero[..], 100),
            Err(ProtoError::Empty)
        ));
    }

    #[test]
    fn the_handshake_proves_both_ends_hold_the_key() {
        let key = [7u8; 32];
        let hello = Hello {
            id: 9,
            nonce: nonce(),
            order: Order::Little,
            interface: "Define f();".into(),
        };
        assert_eq!(Hello::decode(&hello.encode()).unwrap(), hello);
        let (auth, ours) = client_auth(&key, &hello, Order::Big);
        let (ok, order) = worker_check(&key, &hello, &auth).unwrap();
        assert_eq!(order, Order::Big);
        // The order cannot be changed in flight.
        let mut flipped = auth.clone();
        flipped[16] = Order::Little.code();
        assert!(matches!(
            worker_check(&key, &hello, &flipped),
            Err(ProtoError::Auth(_))
        ));
        client_check(&key, &ours, &hello, &ok).unwrap();
        // Another key on either side fails.
        let other = [8u8; 32];
        assert!(matches!(
            worker_check(&other, &hello, &auth),
            Err(ProtoError::Auth(_))
        ));
        assert!(client_check(&other, &ours, &hello, &ok).is_err());
        // A Hello changed in flight (its interface) fails the client's check.
        let mut forged = hello.clone();
        forged.interface = "Define g();".into();
        assert!(client_check(&key, &ours, &forged, &ok).is_err());
        // Bad magic and versions.
        let mut b = hello.encode();
        b[0] = b'X';
        assert!(matches!(Hello::decode(&b), Err(ProtoError::Magic)));
        let mut b = hello.encode();
        b[5] = 9;
        assert!(matches!(Hello::decode(&b), Err(ProtoError::Version(9))));
        assert!(Hello::decode(&b[..10]).is_err());
    }

    #[test]
    fn call_and_reply_heads_and_keys_encode() {
        let c = call_head(5, "dmmul");
        assert_eq!(&c[..8], &5u64.to_be_bytes());
        assert_eq!(&c[8..10], &5u16.to_be_bytes());
        assert_eq!(&c[10..], b"dmmul");
        let r = reply_head(6, OK);
        assert_eq!((&r[..8], r[8]), (&6u64.to_be_bytes()[..], OK));
        let k = [0xabu8; 32];
        assert_eq!(key_from_hex(&key_hex(&k)), Some(k));
        assert_eq!(key_from_hex("zz"), None);
    }
}
