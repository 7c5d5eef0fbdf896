//! roam's transport.
//!
//! - [`creds`]: the cluster CA and node certificates (`roam cluster ...`);
//! - [`tls`]: mutually authenticated TLS links between daemons;
//! - [`framed`]: reading and writing length-prefixed frames on any stream.

pub mod creds;
mod der;
pub mod framed;
pub mod tls;
