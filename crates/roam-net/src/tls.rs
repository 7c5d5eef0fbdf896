//! Mutually authenticated TLS links between daemons.
//!
//! Every link is TLS 1.3 with a certificate on both sides, each checked
//! against the cluster CA and nothing else:
//!
//! - the server ([`accept`]) requires a client certificate that chains to the
//!   cluster CA; a peer without one fails the handshake and is dropped before
//!   a single application byte is read. The peer's node name is taken from
//!   its (now verified) certificate, so it cannot be claimed falsely.
//! - the client ([`connect`]) verifies the server's certificate against the
//!   cluster CA and the node name it expects to reach.
//!
//! Both sides bound the handshake with a timeout, so a silent or slow peer
//! cannot hold a connection (or a task) forever.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::creds::valid_node_name;
use crate::der;
use crate::sealed::{SealedReader, SealedWriter};

/// Encrypted bytes a connection may hold before a write waits for the
/// socket (rustls's default, 64 KiB, made a write system call of 4 records).
const SEND_BUFFER: usize = 1 << 20;

/// The server side of a link.
pub type ServerStream = tokio_rustls::server::TlsStream<TcpStream>;
/// The client side of a link.
pub type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;

/// Errors from loading an identity or establishing a link.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot load certificate {}", path.display())]
    LoadCert {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no certificate in {}", path.display())]
    NoCert { path: PathBuf },
    #[error("cannot load private key {}", path.display())]
    LoadKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no private key in {}", path.display())]
    NoKey { path: PathBuf },
    #[error("certificate {} has no node name (no valid DNS subject alternative name)", path.display())]
    NoOwnName { path: PathBuf },
    #[error("certificate {} does not verify against the cluster CA {}", cert.display(), ca.display())]
    NotValidForCa {
        cert: PathBuf,
        ca: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot use {} as the cluster CA", path.display())]
    BadCa {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot use the certificate {} with the key {}", cert.display(), key.display())]
    BadCertOrKey {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("invalid node name '{name}' for a tls peer")]
    BadServerName { name: String },
    #[error("cannot connect to {peer}")]
    Connect {
        peer: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("tls handshake with {peer} failed")]
    Handshake {
        peer: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tls handshake with {peer} timed out after {after:?}")]
    Timeout { peer: String, after: Duration },
    #[error("peer certificate of {peer} has no node name")]
    NoPeerName { peer: String },
    #[error("cannot seal the records of the link with {peer}")]
    Sealed {
        peer: String,
        #[source]
        source: std::io::Error,
    },
}

/// A daemon's identity: the cluster CA, its own certificate and key, and the
/// TLS configurations built from them (once; cloning is cheap).
#[derive(Clone)]
pub struct Identity {
    name: Arc<str>,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// ring's provider, TLS 1.3 only, with AES-128-GCM first: links carry bulk
/// data (streams, files), and AES-128 takes 10 rounds where AES-256 takes
/// 14, for a security margin TLS 1.3 deems enough (it is its one
/// mandatory suite). Both ends use this order, so it is what they agree.
fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite;
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..rustls::crypto::ring::default_provider()
    })
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let load_err = |source| TlsError::LoadCert {
        path: path.to_path_buf(),
        source,
    };
    let bytes = std::fs::read(path).map_err(load_err)?;
    let certs = rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(load_err)?;
    if certs.is_empty() {
        return Err(TlsError::NoCert {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let load_err = |source| TlsError::LoadKey {
        path: path.to_path_buf(),
        source,
    };
    let bytes = std::fs::read(path).map_err(load_err)?;
    rustls_pemfile::private_key(&mut bytes.as_slice())
        .map_err(load_err)?
        .ok_or_else(|| TlsError::NoKey {
            path: path.to_path_buf(),
        })
}

/// The node name in a certificate: its first DNS subject alternative name,
/// if that is a valid node name.
pub fn cert_node_name(cert: &[u8]) -> Option<String> {
    let info = der::parse_cert(cert)?;
    let first = *info.dns_names.first()?;
    valid_node_name(first).then(|| first.to_string())
}

impl Identity {
    /// Loads the cluster CA certificate, our certificate (optionally followed
    /// by intermediates) and our private key, all PEM, and checks that our
    /// certificate chains to the CA and carries a node name.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Identity, TlsError> {
        let ca_certs = load_certs(ca)?;
        let chain = load_certs(cert)?;
        let key_der = load_key(key)?;
        let name = cert_node_name(&chain[0]).ok_or_else(|| TlsError::NoOwnName {
            path: cert.to_path_buf(),
        })?;

        let bad_ca = |source: Box<dyn std::error::Error + Send + Sync>| TlsError::BadCa {
            path: ca.to_path_buf(),
            source,
        };
        let mut roots = RootCertStore::empty();
        for c in ca_certs {
            roots.add(c).map_err(|e| bad_ca(Box::new(e)))?;
        }
        let roots = Arc::new(roots);
        let provider = provider();

        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| bad_ca(Box::new(e)))?;
        // Our own certificate must be one our peers accept: catch a
        // certificate of another cluster at start-up, not at every handshake.
        client_verifier
            .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
            .map_err(|source| TlsError::NotValidForCa {
                cert: cert.to_path_buf(),
                ca: ca.to_path_buf(),
                source,
            })?;
        let server_verifier =
            WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| bad_ca(Box::new(e)))?;

        let bad_pair = |source| TlsError::BadCertOrKey {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            source,
        };
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(bad_pair)?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key_der.clone_key())
            .map_err(bad_pair)?;
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(bad_pair)?
            .with_webpki_verifier(server_verifier)
            .with_client_auth_cert(chain, key_der)
            .map_err(bad_pair)?;
        // Links are long-lived and few: no session resumption. Not sending
        // TLS 1.3 session tickets also matters for correctness: a client
        // that only writes would never read them, and closing a socket with
        // unread data makes the kernel send a reset, which can destroy data
        // the server has not read yet.
        server.send_tls13_tickets = 0;
        client.resumption = rustls::client::Resumption::disabled();
        // The peer links seal their records themselves (`crate::sealed`),
        // with the keys of their handshake.
        server.enable_secret_extraction = true;
        client.enable_secret_extraction = true;

        Ok(Identity {
            name: name.into(),
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }

    /// The node name in our own certificate (its first DNS SAN).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The TLS server configuration (client certificates required).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// The TLS client configuration (presents our certificate).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client.clone()
    }
}

fn peer_string(tcp: &TcpStream) -> String {
    match tcp.peer_addr() {
        Ok(a) => a.to_string(),
        Err(_) => "an unknown peer".to_string(),
    }
}

/// Server side of a link: TLS accept with a required client certificate of
/// the cluster. Returns the stream and the peer's node name (the first DNS
/// SAN of its certificate).
///
/// Fails, dropping the connection, if the handshake fails (no certificate,
/// one of another CA, not TLS at all) or does not finish within `timeout`.
pub async fn accept(
    id: &Identity,
    tcp: TcpStream,
    timeout: Duration,
) -> Result<(ServerStream, String), TlsError> {
    let peer = peer_string(&tcp);
    let _ = tcp.set_nodelay(true);
    let acceptor = TlsAcceptor::from(id.server.clone());
    let mut stream = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => return Err(TlsError::Handshake { peer, source }),
        Err(_) => {
            return Err(TlsError::Timeout {
                peer,
                after: timeout,
            })
        }
    };
    stream.get_mut().1.set_buffer_limit(Some(SEND_BUFFER));
    let name = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| cert_node_name(c));
    match name {
        Some(name) => Ok((stream, name)),
        None => Err(TlsError::NoPeerName { peer }),
    }
}

/// Client side of a link: connects to `addr` and runs a TLS handshake that
/// presents our certificate and accepts only a server certificate of the
/// cluster CA for the node name `expected_name`. `timeout` bounds the TCP
/// connect and the handshake together.
pub async fn connect(
    id: &Identity,
    addr: SocketAddr,
    expected_name: &str,
    timeout: Duration,
) -> Result<ClientStream, TlsError> {
    let bad_name = || TlsError::BadServerName {
        name: expected_name.to_string(),
    };
    if !valid_node_name(expected_name) {
        return Err(bad_name());
    }
    let server_name = ServerName::try_from(expected_name.to_string()).map_err(|_| bad_name())?;
    let connector = TlsConnector::from(id.client.clone());
    let work = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| TlsError::Connect { peer: addr, source })?;
        let _ = tcp.set_nodelay(true);
        let mut stream = connector
            .connect(server_name, tcp)
            .await
            .map_err(|source| TlsError::Handshake {
                peer: addr.to_string(),
                source,
            })?;
        stream.get_mut().1.set_buffer_limit(Some(SEND_BUFFER));
        Ok(stream)
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(res) => res,
        Err(_) => Err(TlsError::Timeout {
            peer: addr.to_string(),
            after: timeout,
        }),
    }
}

/// A link whose records roam seals itself ([`crate::sealed`]), over its
/// TCP stream's halves.
pub type SealedLink = (
    SealedReader<tokio::net::tcp::OwnedReadHalf>,
    SealedWriter<tokio::net::tcp::OwnedWriteHalf>,
);

/// What the accepting end of a sealed link sends first, sealed. The
/// connecting end sends nothing before it has opened it: a record of its
/// that came early could be in rustls's buffers, which the switch to
/// roam's records leaves behind.
const SEALED_READY: &[u8; 8] = b"ROAMSEAL";

/// The records of a handshaken link, sealed by roam from now on.
fn into_sealed(
    tcp: TcpStream,
    secrets: Result<rustls::ExtractedSecrets, rustls::Error>,
    peer: &str,
) -> Result<SealedLink, TlsError> {
    let bad = |source: std::io::Error| TlsError::Sealed {
        peer: peer.to_owned(),
        source,
    };
    let secrets = secrets.map_err(|e| bad(std::io::Error::other(e)))?;
    let (r, w) = tcp.into_split();
    crate::sealed::seal(r, w, secrets).map_err(|e| bad(e.into()))
}

/// [`accept`], then the link's records sealed by roam
/// ([`crate::sealed`]): for links that carry bulk data.
pub async fn accept_sealed(
    id: &Identity,
    tcp: TcpStream,
    timeout: Duration,
) -> Result<(SealedLink, String), TlsError> {
    let (stream, name) = accept(id, tcp, timeout).await?;
    let (tcp, conn) = stream.into_inner();
    let (r, mut w) = into_sealed(tcp, conn.dangerous_extract_secrets(), &name)?;
    let ready = async {
        w.write_all(SEALED_READY).await?;
        w.flush().await
    };
    match tokio::time::timeout(timeout, ready).await {
        Ok(Ok(())) => Ok(((r, w), name)),
        Ok(Err(source)) => Err(TlsError::Sealed { peer: name, source }),
        Err(_) => Err(TlsError::Timeout {
            peer: name,
            after: timeout,
        }),
    }
}

/// [`connect`], then the link's records sealed by roam
/// ([`crate::sealed`]); the accepting end must use [`accept_sealed`].
pub async fn connect_sealed(
    id: &Identity,
    addr: SocketAddr,
    expected_name: &str,
    timeout: Duration,
) -> Result<SealedLink, TlsError> {
    let stream = connect(id, addr, expected_name, timeout).await?;
    let (tcp, conn) = stream.into_inner();
    let peer = addr.to_string();
    let (mut r, w) = into_sealed(tcp, conn.dangerous_extract_secrets(), &peer)?;
    let mut got = [0u8; SEALED_READY.len()];
    match tokio::time::timeout(timeout, r.read_exact(&mut got)).await {
        Ok(Ok(_)) if &got == SEALED_READY => Ok((r, w)),
        Ok(Ok(_)) => Err(TlsError::Sealed {
            peer,
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the peer does not seal its records as roam does",
            ),
        }),
        Ok(Err(source)) => Err(TlsError::Sealed { peer, source }),
        Err(_) => Err(TlsError::Timeout {
            peer,
            after: timeout,
        }),
    }
}
