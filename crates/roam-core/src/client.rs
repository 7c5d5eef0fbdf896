//! A client of the local `roamd`: what the CLI and the proxy use.

use std::path::{Path, PathBuf};

use roam_net::framed::{FrameReader, FrameWriter, FramedError};
use roam_proto::local::{LocalHello, LocalHelloReply, LocalMsg};
use roam_proto::types::WireError;
use roam_proto::{encode_frame, encode_hello};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use crate::config::DEFAULT_SOCKET;

/// The socket to use: `$ROAM_SOCKET`, else the default path.
pub fn socket_path() -> PathBuf {
    std::env::var_os("ROAM_SOCKET")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to roamd at {path} (is roamd running? set ROAM_SOCKET to its socket)")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("roamd at {path} refused us: {reason}")]
    Refused { path: PathBuf, reason: String },
    #[error(transparent)]
    Framed(#[from] FramedError),
    #[error("roamd closed the connection")]
    Closed,
    #[error("{0}")]
    Remote(WireError),
    #[error("unexpected answer from roamd: {0}")]
    Unexpected(String),
}

/// A connection to the local daemon.
pub struct Client {
    reader: FrameReader<OwnedReadHalf>,
    writer: FrameWriter<OwnedWriteHalf>,
    pub node_name: String,
    pub is_home: bool,
}

impl Client {
    /// Connects and exchanges hellos. `client` names us in the daemon's log.
    pub async fn connect(path: &Path, client: &str) -> Result<Client, ClientError> {
        Client::start(path, client, None)?.finish().await
    }

    /// Connects and sends our hello and then `first` in the same write,
    /// blocking and outside any runtime, so the daemon works on them while
    /// we set up the rest (the proxy builds its runtime meanwhile): one
    /// round trip less for a client with a request ready (the proxy's
    /// Spawn). [`PendingClient::finish`] reads the reply; if the daemon
    /// refuses us, it never reads `first`.
    pub fn start(
        path: &Path,
        client: &str,
        first: Option<&LocalMsg>,
    ) -> Result<PendingClient, ClientError> {
        use std::io::Write;
        let connect_err = |source| ClientError::Connect {
            path: path.to_owned(),
            source,
        };
        let mut sock = std::os::unix::net::UnixStream::connect(path).map_err(connect_err)?;
        let mut out = encode_hello(
            "local hello",
            &LocalHello {
                client: client.to_owned(),
            },
        )
        .map_err(FramedError::from)?;
        if let Some(m) = first {
            out.extend_from_slice(&encode_frame("local", m).map_err(FramedError::from)?);
        }
        sock.write_all(&out)
            .map_err(|e| ClientError::Framed(FramedError::Io(e)))?;
        Ok(PendingClient {
            sock,
            path: path.to_owned(),
        })
    }

    pub async fn send(&mut self, msg: &LocalMsg) -> Result<(), ClientError> {
        self.writer.write_msg("local", msg).await?;
        Ok(())
    }

    /// The next message; `None` when the daemon closed the connection.
    pub async fn recv(&mut self) -> Result<Option<LocalMsg>, ClientError> {
        Ok(self.reader.read_msg("local").await?)
    }

    /// Sends a request and reads its answer; an error answer becomes `Err`.
    pub async fn request(&mut self, msg: &LocalMsg) -> Result<LocalMsg, ClientError> {
        self.send(msg).await?;
        match self.recv().await? {
            Some(LocalMsg::Error(e)) => Err(ClientError::Remote(e)),
            Some(m) => Ok(m),
            None => Err(ClientError::Closed),
        }
    }

    pub fn into_parts(self) -> (FrameReader<OwnedReadHalf>, FrameWriter<OwnedWriteHalf>) {
        (self.reader, self.writer)
    }
}

/// A connection whose hello is sent but not yet answered.
pub struct PendingClient {
    sock: std::os::unix::net::UnixStream,
    path: PathBuf,
}

impl PendingClient {
    /// Reads the daemon's hello reply (in a tokio runtime).
    pub async fn finish(self) -> Result<Client, ClientError> {
        let io = |e| ClientError::Framed(FramedError::Io(e));
        self.sock.set_nonblocking(true).map_err(io)?;
        let sock = UnixStream::from_std(self.sock).map_err(io)?;
        let (r, w) = sock.into_split();
        let mut reader = FrameReader::new(r);
        let writer = FrameWriter::new(w);
        match reader
            .read_hello::<LocalHelloReply>("local hello reply")
            .await?
        {
            Some(LocalHelloReply::Welcome { node_name, is_home }) => Ok(Client {
                reader,
                writer,
                node_name,
                is_home,
            }),
            Some(LocalHelloReply::Refused { reason }) => Err(ClientError::Refused {
                path: self.path,
                reason,
            }),
            None => Err(ClientError::Closed),
        }
    }
}

/// Moves the remote process of `home_pid` to `node` (the placement's
/// choice if None), moving its memory as `mode` says, calling
/// `progress(sent, total)` as the pages and the image go;
/// returns how it went. See docs/design/migration.md.
pub async fn migrate(
    path: &Path,
    home_pid: u32,
    node: Option<String>,
    mode: roam_proto::types::MigrateMode,
    mut progress: impl FnMut(u64, u64),
) -> Result<roam_proto::types::MigrateReport, ClientError> {
    let mut c = Client::connect(path, "roam migrate").await?;
    c.send(&LocalMsg::Migrate {
        home_pid,
        node,
        mode,
    })
    .await?;
    loop {
        match c.recv().await? {
            Some(LocalMsg::MigrateProgress { sent, total }) => progress(sent, total),
            Some(LocalMsg::Migrated(r)) => return r.map_err(ClientError::Remote),
            Some(LocalMsg::Error(e)) => return Err(ClientError::Remote(e)),
            Some(other) => return Err(ClientError::Unexpected(format!("{other:?}"))),
            None => return Err(ClientError::Closed),
        }
    }
}
