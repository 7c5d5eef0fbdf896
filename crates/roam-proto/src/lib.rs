//! roam's wire protocol: message types, framing and the protocol version.
//!
//! This crate does no I/O. Everything that crosses a socket between two roam
//! programs is defined here:
//!
//! - [`frame`]: the length-prefixed framing with its size limits, and the
//!   hello frame that opens every connection and carries the protocol version;
//! - [`fs`]: the remote file system's requests, replies and invalidations;
//! - [`link`]: messages between daemons (home ⇄ node), over an authenticated
//!   TLS link;
//! - [`local`]: messages between the `roam` CLI (or a proxy) and the local
//!   `roamd`, over a Unix socket;
//! - [`types`]: the values both use (signals, exit statuses, process and node
//!   descriptions, spawn specifications).
//!
//! # Encoding and compatibility
//!
//! Bodies are encoded with postcard (varint integers, length-prefixed byte
//! strings), so the encoding is the same whatever the byte order or word size
//! of either end. Signal numbers travel in the asm-generic Linux numbering
//! (see [`types::WireSignal`]); terminal modes as RFC 4254 opcodes.
//!
//! The compatibility rule is strict: two ends talk only if their
//! [`PROTOCOL_VERSION`] is equal. The hello frame's magic and version sit at
//! fixed offsets so that every future version can read them and refuse a peer
//! with a clear message instead of misreading its messages.

pub mod frame;
pub mod fs;
pub mod link;
pub mod local;
pub mod types;

pub use frame::{
    decode_body, decode_hello, encode_frame, encode_hello, FrameDecoder, ProtoError, HELLO_MAGIC,
    MAX_DATA_CHUNK, MAX_FRAME,
};

/// The protocol version. Bump it on any change to a message's encoding.
pub const PROTOCOL_VERSION: u32 = 15;

/// The default TCP port a home daemon listens on.
pub const DEFAULT_PORT: u16 = 7170;

/// The usual port of a node's peer listener (`peer_listen`).
pub const DEFAULT_PEER_PORT: u16 = 7171;
