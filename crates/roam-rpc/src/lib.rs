//! roam-rpc: GridRPC (the OGF standard of Ninf-G and OmniRPC) over roam.
//!
//! - [`idl`]: the interface language of remote executables;
//! - [`data`]: argument values and their byte-order-independent encoding;
//! - [`proto`]: the client–worker frames and authentication;
//! - [`worker`]: the library a remote executable serves calls with;
//! - [`confine`]: the seccomp confinement a worker can be asked for;
//! - [`client`]: the client engine (handles, sessions, the wait family);
//! - [`capi`]: the standard C API over the engine (`include/grpc.h`);
//! - [`capi_worker`]: the C API of workers (also in `grpc.h`).
//!
//! Without the default feature `client`, only the worker side builds (with
//! few dependencies, for any architecture). See docs/design/rpc.md.

#[cfg(feature = "client")]
pub mod capi;
pub mod capi_worker;
#[cfg(feature = "client")]
pub mod client;
pub mod confine;
pub mod data;
pub mod idl;
pub mod proto;
pub mod worker;

#[cfg(feature = "client")]
pub use client::{Client, Code, Config, Handle, RpcError};
pub use data::Data;
