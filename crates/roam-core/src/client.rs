//! A client of the local `roamd`: what the CLI and the proxy use.

use std::path::{Path, PathBuf};

use roam_net::framed::{FrameReader, FrameWriter, FramedError};
use roam_proto::local::{LocalHello, LocalHelloReply, LocalMsg};
use roam_proto::types::WireError;
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
        let sock = UnixStream::connect(path)
            .await
            .map_err(|source| ClientError::Connect {
                path: path.to_owned(),
                source,
            })?;
        let (r, w) = sock.into_split();
        let mut reader = FrameReader::new(r);
        let mut writer = FrameWriter::new(w);
        writer
            .write_hello(
                "local hello",
                &LocalHello {
                    client: client.to_owned(),
                },
            )
            .await?;
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
                path: path.to_owned(),
                reason,
            }),
            None => Err(ClientError::Closed),
        }
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
