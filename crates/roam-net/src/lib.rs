//! roam's transport.
//!
//! - [`creds`]: the cluster CA and node certificates (`roam cluster ...`);
//! - [`tls`]: mutually authenticated TLS links between daemons;
//! - [`framed`]: reading and writing length-prefixed frames on any stream;
//! - [`sealed`]: a link's TLS records sealed and opened by roam after
//!   rustls's handshake (the peer links that carry migrations' pages).

pub mod creds;
mod der;
pub mod framed;
pub mod sealed;
pub mod tls;
