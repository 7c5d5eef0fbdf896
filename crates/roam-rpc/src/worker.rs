//! The worker side: a remote executable registers its functions and
//! serves calls until its client hangs up.
//!
//! ```no_run
//! use roam_rpc::worker::{Args, Worker};
//! let mut w = Worker::new("Define add(IN int a, IN int b, OUT int c)").unwrap();
//! w.register("add", |a: &mut Args| {
//!     let c = a.int("a")? + a.int("b")?;
//!     a.set("c", c)
//! }).unwrap();
//! w.serve_env().unwrap();
//! ```
//!
//! Calls run one at a time, in order, on the serving thread: a function
//! keeps whatever state it likes between calls (the handle that started
//! the worker keeps it running).

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::data::{self, Body, Data, DataError, Dir, Order};
use crate::idl::{self, Function, Idl, IdlError};
use crate::proto::{self, Hello, ProtoError};

/// The environment a client gives a worker it starts.
pub const ENV_CONNECT: &str = "ROAM_RPC_CONNECT";
pub const ENV_KEY: &str = "ROAM_RPC_KEY";
pub const ENV_ID: &str = "ROAM_RPC_ID";

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("interface: {0}")]
    Idl(#[from] IdlError),
    #[error("{0} is not in the interface")]
    Unknown(String),
    #[error("not started by a roam-rpc client: {0} is not set or malformed")]
    Env(&'static str),
    #[error("cannot reach the client at {addrs}: {error}")]
    Connect {
        addrs: String,
        error: std::io::Error,
    },
    #[error("cannot confine the worker: {0}")]
    Confine(std::io::Error),
    #[error("talking to the client: {0}")]
    Proto(#[from] ProtoError),
}

/// What a function fails with: the message the caller gets.
pub type CallError = String;

type Handler = Box<dyn FnMut(&mut Args) -> Result<(), CallError> + Send>;

/// A call's arguments: one value per parameter; OUT ones arrive as zeros
/// of their size, for the function to fill.
pub struct Args<'f> {
    pub func: &'f Function,
    pub values: Vec<Data>,
}

impl Args<'_> {
    fn index(&self, name: &str) -> Result<usize, CallError> {
        self.func
            .params
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| format!("{} has no parameter {name}", self.func.name))
    }

    pub fn get(&self, name: &str) -> Result<&Data, CallError> {
        Ok(&self.values[self.index(name)?])
    }

    pub fn get_mut(&mut self, name: &str) -> Result<&mut Data, CallError> {
        let i = self.index(name)?;
        Ok(&mut self.values[i])
    }

    /// An integer scalar.
    pub fn int(&self, name: &str) -> Result<i64, CallError> {
        self.get(name)?
            .as_i64()
            .ok_or_else(|| format!("{name} is not an integer scalar"))
    }

    pub fn doubles(&self, name: &str) -> Result<&[f64], CallError> {
        match self.get(name)? {
            Data::Double(v) => Ok(v),
            _ => Err(format!("{name} is not double")),
        }
    }

    pub fn doubles_mut(&mut self, name: &str) -> Result<&mut [f64], CallError> {
        match self.get_mut(name)? {
            Data::Double(v) => Ok(v),
            _ => Err(format!("{name} is not double")),
        }
    }

    pub fn str(&self, name: &str) -> Result<String, CallError> {
        match self.get(name)? {
            Data::Str(s) => Ok(String::from_utf8_lossy(s).into_owned()),
            _ => Err(format!("{name} is not a string")),
        }
    }

    /// Sets an OUT or INOUT value; its type and size must be the
    /// interface's.
    pub fn set(&mut self, name: &str, value: impl Into<Data>) -> Result<(), CallError> {
        let value = value.into();
        let slot = self.get_mut(name)?;
        if slot.ty() != value.ty() || slot.len() != value.len() {
            return Err(format!(
                "{name} must be {} {:?}, not {} {:?}",
                slot.len(),
                slot.ty(),
                value.len(),
                value.ty()
            ));
        }
        *slot = value;
        Ok(())
    }
}

/// A remote executable's functions.
pub struct Worker {
    idl: Idl,
    handlers: HashMap<String, Handler>,
    max_frame: usize,
    confined: bool,
    /// The last call's values of each function, whose arrays the next
    /// call of the same sizes is read into.
    spare: HashMap<String, Vec<Data>>,
}

impl Worker {
    /// A worker with this interface (IDL text).
    pub fn new(idl_text: &str) -> Result<Worker, WorkerError> {
        Ok(Worker {
            idl: idl::parse(idl_text)?,
            handlers: HashMap::new(),
            max_frame: proto::DEFAULT_MAX_FRAME,
            confined: false,
            spare: HashMap::new(),
        })
    }

    pub fn idl(&self) -> &Idl {
        &self.idl
    }

    /// Confines the worker (see [`crate::confine`]) once it has
    /// authenticated its client, before any call; the client's
    /// configuration can also ask for it.
    pub fn confine(&mut self) -> &mut Worker {
        self.confined = true;
        self
    }

    /// Serves calls of `name` with `f`.
    pub fn register(
        &mut self,
        name: &str,
        f: impl FnMut(&mut Args) -> Result<(), CallError> + Send + 'static,
    ) -> Result<(), WorkerError> {
        if self.idl.function(name).is_none() {
            return Err(WorkerError::Unknown(name.into()));
        }
        self.handlers.insert(name.into(), Box::new(f));
        Ok(())
    }

    /// Connects to the client named in the environment and serves it
    /// until it hangs up or says goodbye.
    pub fn serve_env(&mut self) -> Result<(), WorkerError> {
        let addrs = std::env::var(ENV_CONNECT).map_err(|_| WorkerError::Env(ENV_CONNECT))?;
        let key = std::env::var(ENV_KEY)
            .ok()
            .and_then(|k| proto::key_from_hex(&k))
            .ok_or(WorkerError::Env(ENV_KEY))?;
        let id: u32 = std::env::var(ENV_ID)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(WorkerError::Env(ENV_ID))?;
        // The key is not for the program's children.
        std::env::remove_var(ENV_KEY);
        if std::env::var(crate::confine::ENV_CONFINE).is_ok_and(|v| v == "1") {
            self.confined = true;
        }
        let stream = connect_any(&addrs)?;
        self.serve(stream, id, &key)
    }

    /// Serves one client over `stream`.
    pub fn serve(&mut self, stream: TcpStream, id: u32, key: &[u8; 32]) -> Result<(), WorkerError> {
        let _ = stream.set_nodelay(true);
        let mut r =
            BufReader::with_capacity(256 * 1024, stream.try_clone().map_err(ProtoError::Io)?);
        let mut w = BufWriter::with_capacity(256 * 1024, stream);
        let hello = Hello {
            id,
            nonce: proto::nonce(),
            order: Order::native(),
            interface: self.idl.to_string(),
        };
        proto::write_frame(&mut w, proto::HELLO, &hello.encode()).map_err(ProtoError::Io)?;
        w.flush().map_err(ProtoError::Io)?;
        let auth = proto::expect_frame(&mut r, proto::AUTH, proto::HANDSHAKE_MAX)?;
        let (ok, order) = proto::worker_check(key, &hello, &auth)?;
        if self.confined {
            // Before anything the client sends runs.
            crate::confine::confine().map_err(WorkerError::Confine)?;
        }
        proto::write_frame(&mut w, proto::AUTH_OK, &ok).map_err(ProtoError::Io)?;
        w.flush().map_err(ProtoError::Io)?;
        loop {
            let Some((kind, len)) = proto::read_frame_head(&mut r, self.max_frame)? else {
                return Ok(());
            };
            match kind {
                proto::BYE => return Ok(()),
                proto::CALL => {
                    let mut body = Body::new(&mut r, len, "call");
                    self.call(&mut body, order, &mut w)?;
                    w.flush().map_err(ProtoError::Io)?;
                }
                other => {
                    return Err(ProtoError::Unexpected {
                        want: proto::CALL,
                        got: other,
                    }
                    .into())
                }
            }
        }
    }

    /// Runs one call, reading its arguments from `body`, and writes the
    /// reply.
    fn call<R: Read, W: Write>(
        &mut self,
        body: &mut Body<R>,
        order: Order,
        w: &mut W,
    ) -> Result<(), WorkerError> {
        let lost =
            |e: DataError| WorkerError::Proto(ProtoError::Io(std::io::Error::other(e.to_string())));
        let id = u64::from_be_bytes(body.take().map_err(lost)?);
        let n = u16::from_be_bytes(body.take().map_err(lost)?) as usize;
        if n > body.left() {
            return Err(ProtoError::Malformed("call").into());
        }
        let mut name = vec![0u8; n];
        body.fill(&mut name).map_err(lost)?;
        let name = String::from_utf8_lossy(&name).into_owned();
        let fail = |w: &mut W, status: u8, msg: &str| -> Result<(), WorkerError> {
            let head = proto::reply_head(id, status);
            proto::write_frame_parts(w, proto::REPLY, &[&head, msg.as_bytes()])
                .map_err(|e| ProtoError::Io(e).into())
        };
        let (Some(func), Some(handler)) = (self.idl.function(&name), self.handlers.get_mut(&name))
        else {
            body.skip_rest().map_err(lost)?;
            return fail(
                w,
                proto::NO_FUNCTION,
                &format!("this worker has no function {name}"),
            );
        };
        let spare = self.spare.remove(&name).unwrap_or_default();
        let values = match data::decode_call_reusing(func, body, order, spare) {
            Ok(v) => v,
            Err(e @ DataError::Io(..)) => return Err(lost(e)),
            Err(e) => {
                // Stay in step with the stream: the next frame comes next.
                body.skip_rest().map_err(lost)?;
                return fail(w, proto::BAD_ARGS, &e.to_string());
            }
        };
        let mut args = Args { func, values };
        if let Err(msg) = handler(&mut args) {
            return fail(w, proto::FAILED, &msg);
        }
        let pieces = match data::encode(func, &args.values, Dir::Reply, order) {
            Ok(p) => p,
            Err(e) => return fail(w, proto::FAILED, &e.to_string()),
        };
        let head = proto::reply_head(id, proto::OK);
        let mut parts: Vec<&[u8]> = vec![&head];
        parts.extend(pieces.iter().map(|p| p.bytes()));
        let sent = proto::write_frame_parts(w, proto::REPLY, &parts);
        drop(pieces);
        // Kept for the next call of this function, which is likely to have
        // the same sizes.
        self.spare.insert(name, args.values);
        sent.map_err(|e| ProtoError::Io(e).into())
    }
}

/// Connects to the first of `addrs` (comma-separated) that answers.
pub fn connect_any(addrs: &str) -> Result<TcpStream, WorkerError> {
    let mut last = std::io::Error::other("no address");
    for a in addrs.split(',').filter(|a| !a.is_empty()) {
        match a.parse::<SocketAddr>() {
            Ok(sa) => match TcpStream::connect_timeout(&sa, Duration::from_secs(5)) {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            },
            Err(_) => {
                last = std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("bad address {a}"),
                )
            }
        }
    }
    Err(WorkerError::Connect {
        addrs: addrs.into(),
        error: last,
    })
}
