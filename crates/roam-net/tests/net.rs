//! Integration tests of roam-net: credentials on disk, TLS links on
//! loopback, framing over in-memory streams.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use roam_net::creds::{init_cluster, issue_node, valid_node_name, CredsError};
use roam_net::framed::{FrameReader, FrameWriter, FramedError};
use roam_net::tls::{accept, connect, Identity, TlsError};
use roam_proto::frame::encode_hello_version;
use roam_proto::link::LinkMsg;
use roam_proto::types::{Chan, SessionId};
use roam_proto::{encode_frame, ProtoError, MAX_FRAME};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HANDSHAKE: Duration = Duration::from_secs(5);

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "roam-net-test-{}-{}-{}",
            std::process::id(),
            tag,
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// A cluster in a temp dir (the dir is `creds/` inside it, so init creates it).
fn cluster(tag: &str) -> (TempDir, PathBuf) {
    let t = TempDir::new(tag);
    let dir = t.path().join("creds");
    init_cluster(&dir).unwrap();
    (t, dir)
}

fn identity(dir: &Path, name: &str) -> Identity {
    let (cert, key) = issue_node(dir, name).unwrap();
    Identity::load(&dir.join("ca.pem"), &cert, &key).unwrap()
}

async fn listener() -> (TcpListener, std::net::SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

#[test]
fn init_issue_load() {
    let (_t, dir) = cluster("init");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("ca.key")), 0o600);
    let ca = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));

    let (cert, key) = issue_node(&dir, "node-1").unwrap();
    assert_eq!(cert, dir.join("node-1.pem"));
    assert_eq!(key, dir.join("node-1.key"));
    assert_eq!(mode(&key), 0o600);
    let pem = std::fs::read_to_string(&cert).unwrap();
    assert_eq!(pem.matches("BEGIN").count(), 1, "the certificate alone");
    let id = Identity::load(&dir.join("ca.pem"), &cert, &key).unwrap();
    assert_eq!(id.name(), "node-1");
    assert!(format!("{id:?}").contains("node-1"));

    // Re-issue replaces both files.
    let old_key = std::fs::read(&key).unwrap();
    issue_node(&dir, "node-1").unwrap();
    assert_ne!(std::fs::read(&key).unwrap(), old_key);
    assert_eq!(mode(&key), 0o600);
    Identity::load(&dir.join("ca.pem"), &cert, &key).unwrap();
    // A key that is not the certificate's is refused.
    let (_, other_key) = issue_node(&dir, "other").unwrap();
    let err = Identity::load(&dir.join("ca.pem"), &cert, &other_key).unwrap_err();
    assert!(matches!(err, TlsError::BadCertOrKey { .. }), "{err}");

    let err = issue_node(&dir, "a b").unwrap_err();
    assert!(matches!(err, CredsError::InvalidName { .. }));
    assert!(
        err.to_string().starts_with("invalid node name 'a b': "),
        "{err}"
    );
    assert!(matches!(
        issue_node(&dir, "ca").unwrap_err(),
        CredsError::ReservedName { .. }
    ));

    let empty = TempDir::new("empty");
    let err = issue_node(empty.path(), "n1").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "no cluster CA in {}: run `roam cluster init` first",
            empty.path().display()
        )
    );

    let err = Identity::load(&dir.join("nope.pem"), &cert, &key).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("cannot load certificate {}", dir.join("nope.pem").display())
    );
}

#[test]
fn init_refuses_overwrite() {
    let (_t, dir) = cluster("refuse");
    let key = std::fs::read(dir.join("ca.key")).unwrap();
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    let err = init_cluster(&dir).unwrap_err();
    assert!(matches!(err, CredsError::AlreadyExists { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "cluster credentials already exist in {} (refusing to overwrite)",
            dir.display()
        )
    );
    assert_eq!(std::fs::read(dir.join("ca.key")).unwrap(), key);
    assert_eq!(std::fs::read(dir.join("ca.pem")).unwrap(), ca);
}

#[test]
fn node_names() {
    for ok in [
        "a",
        "node-1",
        "node_2",
        "Z",
        "_",
        "1a",
        "a1",
        &"x".repeat(63),
    ] {
        assert!(valid_node_name(ok), "{ok}");
    }
    for bad in [
        "",
        "a b",
        "a.b",
        "-a",
        "a-",
        "123",
        "é",
        "a/b",
        &"x".repeat(64),
    ] {
        assert!(!valid_node_name(bad), "{bad}");
    }
}

#[test]
fn certificate_of_another_cluster_refused_at_load() {
    let (_t1, dir1) = cluster("load1");
    let (_t2, dir2) = cluster("load2");
    let (cert, key) = issue_node(&dir2, "n1").unwrap();
    let err = Identity::load(&dir1.join("ca.pem"), &cert, &key).unwrap_err();
    assert!(matches!(err, TlsError::NotValidForCa { .. }), "{err}");
}

#[tokio::test]
async fn mutual_tls_link() {
    let (_t, dir) = cluster("link");
    let home = identity(&dir, "home");
    // An underscore is a valid node name, so it must work as a TLS name.
    let node = identity(&dir, "node_1");
    let (l, addr) = listener().await;

    let server = tokio::spawn(async move {
        let (tcp, _) = l.accept().await.unwrap();
        let (tls, peer) = accept(&home, tcp, HANDSHAKE).await.unwrap();
        let (r, w) = tokio::io::split(tls);
        let mut r = FrameReader::new(r);
        let mut w = FrameWriter::new(w);
        let seq: u64 = r.read_hello("hello").await.unwrap().unwrap();
        w.write_hello("hello", &(seq + 1)).await.unwrap();
        while let Some(m) = r.read_msg::<LinkMsg>("link").await.unwrap() {
            match m {
                LinkMsg::Ping { seq } => w.write_msg("link", &LinkMsg::Pong { seq }).await.unwrap(),
                other => w.write_msg("link", &other).await.unwrap(),
            }
        }
        w.shutdown().await.unwrap();
        peer
    });

    let tls = connect(&node, addr, "home", HANDSHAKE).await.unwrap();
    // TLS 1.3 with AES-128-GCM, the suite both ends prefer for bulk data.
    let conn = tls.get_ref().1;
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(
        conn.negotiated_cipher_suite().map(|c| c.suite()),
        Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
    );
    let (r, w) = tokio::io::split(tls);
    let mut r = FrameReader::new(r);
    let mut w = FrameWriter::new(w);
    w.write_hello("hello", &41u64).await.unwrap();
    assert_eq!(r.read_hello::<u64>("hello").await.unwrap(), Some(42));
    for seq in 0..100 {
        w.write_msg("link", &LinkMsg::Ping { seq }).await.unwrap();
        assert_eq!(
            r.read_msg::<LinkMsg>("link").await.unwrap(),
            Some(LinkMsg::Pong { seq })
        );
    }
    let data = LinkMsg::Data {
        session: SessionId(3),
        chan: Chan::Stdout,
        offset: 0,
        data: (0..roam_proto::MAX_DATA_CHUNK).map(|i| i as u8).collect(),
    };
    w.write_msg("link", &data).await.unwrap();
    assert_eq!(r.read_msg::<LinkMsg>("link").await.unwrap(), Some(data));
    w.shutdown().await.unwrap();
    assert_eq!(r.read_msg::<LinkMsg>("link").await.unwrap(), None);
    assert_eq!(server.await.unwrap(), "node_1");
}

/// A TLS client that trusts `ca` (so it accepts the server) but presents
/// `cert`/`key`, which may come from anywhere. `Identity::load` would refuse
/// such a mix; an attacker would not use it.
async fn raw_client(
    ca: &Path,
    cert: &Path,
    key: &Path,
    addr: std::net::SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    use std::sync::Arc;
    let pem = |p: &Path| std::fs::read(p).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pem(ca).as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let chain = rustls_pemfile::certs(&mut pem(cert).as_slice())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut pem(key).as_slice())
        .unwrap()
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("home").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// A client that sends, shuts down and closes at once must not lose data:
/// nothing unread may be left in its socket (such as TLS session tickets),
/// or its close turns into a reset that discards what it has not sent yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_then_close_loses_nothing() {
    let (_t, dir) = cluster("close");
    let home = identity(&dir, "home");
    let node = identity(&dir, "node-1");
    let (l, addr) = listener().await;
    let frames = 64u64;
    let data = |i: u64| LinkMsg::Data {
        session: SessionId(i),
        chan: Chan::Stdout,
        offset: i,
        data: vec![i as u8; roam_proto::MAX_DATA_CHUNK],
    };
    let server = tokio::spawn(async move {
        let (tcp, _) = l.accept().await.unwrap();
        let (tls, _) = accept(&home, tcp, HANDSHAKE).await.unwrap();
        let mut r = FrameReader::new(tls);
        let mut n = 0u64;
        // A slow reader: the client is done writing (and closes) while
        // much of the data is still in its socket.
        while let Some(m) = r.read_msg::<LinkMsg>("link").await.unwrap() {
            assert_eq!(m, data(n));
            n += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        n
    });
    let tls = connect(&node, addr, "home", HANDSHAKE).await.unwrap();
    let mut w = FrameWriter::new(tls);
    for i in 0..frames {
        w.write_msg("link", &data(i)).await.unwrap();
    }
    w.shutdown().await.unwrap();
    drop(w);
    assert_eq!(server.await.unwrap(), frames);
}

#[tokio::test]
async fn client_of_another_cluster_is_rejected() {
    let (_t1, dir1) = cluster("ours");
    let (_t2, dir2) = cluster("theirs");
    let home = identity(&dir1, "home");
    // Same node name and same CA name, certificate of another CA.
    let (cert, key) = issue_node(&dir2, "node-1").unwrap();
    let (l, addr) = listener().await;

    let server = tokio::spawn(async move {
        let mut out = Vec::new();
        for _ in 0..2 {
            let (tcp, _) = l.accept().await.unwrap();
            out.push(accept(&home, tcp, HANDSHAKE).await.map(|(_, n)| n));
        }
        out
    });
    // In TLS 1.3 the client may finish its side before the server has
    // checked its certificate; then its first read sees the refusal.
    let ca1 = dir1.join("ca.pem");
    if let Ok(mut tls) = raw_client(&ca1, &cert, &key, addr).await {
        let _ = tls.write_all(b"anything").await;
        let mut buf = [0u8; 16];
        let r = tls.read(&mut buf).await;
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    }
    // The same without any client certificate.
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates({
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(&ca1).unwrap();
        for c in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(c.unwrap()).unwrap();
        }
        roots
    })
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("home").unwrap();
    if let Ok(mut tls) = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
    {
        let mut buf = [0u8; 16];
        let r = tls.read(&mut buf).await;
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    }

    let out = server.await.unwrap();
    let err = out[0].as_ref().unwrap_err();
    assert!(matches!(err, TlsError::Handshake { .. }), "{err}");
    let chain = format!("{:?}", std::error::Error::source(err));
    assert!(chain.contains("InvalidCertificate"), "{chain}");
    let err = out[1].as_ref().unwrap_err();
    assert!(matches!(err, TlsError::Handshake { .. }), "{err}");
    let chain = format!("{:?}", std::error::Error::source(err));
    assert!(chain.contains("NoCertificatesPresented"), "{chain}");

    // And an identity of the other cluster altogether fails too.
    let intruder = identity(&dir2, "node-2");
    let (l, addr) = listener().await;
    let home = identity(&dir1, "home");
    let server = tokio::spawn(async move {
        let (tcp, _) = l.accept().await.unwrap();
        accept(&home, tcp, HANDSHAKE).await.map(|(_, n)| n)
    });
    assert!(connect(&intruder, addr, "home", HANDSHAKE).await.is_err());
    assert!(server.await.unwrap().is_err());
}

#[tokio::test]
async fn server_of_another_cluster_is_rejected() {
    let (_t1, dir1) = cluster("ours-s");
    let (_t2, dir2) = cluster("theirs-s");
    let node = identity(&dir1, "node-1");
    let fake_home = identity(&dir2, "home");
    let (l, addr) = listener().await;
    let server = tokio::spawn(async move {
        let (tcp, _) = l.accept().await.unwrap();
        accept(&fake_home, tcp, HANDSHAKE).await.map(|(_, n)| n)
    });
    let err = connect(&node, addr, "home", HANDSHAKE).await.unwrap_err();
    assert!(matches!(err, TlsError::Handshake { .. }), "{err}");
    assert!(server.await.unwrap().is_err());
}

#[tokio::test]
async fn plain_tcp_peers_are_dropped() {
    let (_t, dir) = cluster("plain");
    let home = identity(&dir, "home");
    let (l, addr) = listener().await;
    let server = tokio::spawn(async move {
        let mut out = Vec::new();
        for _ in 0..2 {
            let (tcp, _) = l.accept().await.unwrap();
            let t0 = Instant::now();
            let r = accept(&home, tcp, Duration::from_millis(300)).await;
            out.push((r.map(|(_, n)| n), t0.elapsed()));
        }
        out
    });

    // Garbage: refused at once, and the connection is closed.
    let mut garbage = TcpStream::connect(addr).await.unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), garbage.read_to_end(&mut buf))
        .await
        .expect("the server closes a garbage connection");
    // Silence: refused after the timeout.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut buf))
        .await
        .expect("the server closes a silent connection");

    let out = server.await.unwrap();
    let (garbage_res, garbage_time) = &out[0];
    let err = garbage_res.as_ref().unwrap_err();
    assert!(matches!(err, TlsError::Handshake { .. }), "{err}");
    assert!(*garbage_time < Duration::from_millis(300));
    let (silent_res, silent_time) = &out[1];
    let err = silent_res.as_ref().unwrap_err();
    assert!(matches!(err, TlsError::Timeout { .. }), "{err}");
    assert!(err.to_string().ends_with("timed out after 300ms"), "{err}");
    assert!(*silent_time >= Duration::from_millis(300));
}

#[tokio::test]
async fn wrong_server_name_fails() {
    let (_t, dir) = cluster("name");
    let home = identity(&dir, "home");
    let node = identity(&dir, "node-1");
    let (l, addr) = listener().await;
    let server = tokio::spawn(async move {
        let (tcp, _) = l.accept().await.unwrap();
        accept(&home, tcp, HANDSHAKE).await.map(|(_, n)| n)
    });
    let err = connect(&node, addr, "node-2", HANDSHAKE).await.unwrap_err();
    assert!(matches!(err, TlsError::Handshake { .. }), "{err}");
    assert_eq!(err.to_string(), format!("tls handshake with {addr} failed"));
    assert!(server.await.unwrap().is_err());

    let err = connect(&node, addr, "not a name", HANDSHAKE)
        .await
        .unwrap_err();
    assert!(matches!(err, TlsError::BadServerName { .. }), "{err}");
}

#[tokio::test]
async fn connect_times_out_on_silent_server() {
    let (_t, dir) = cluster("silent-srv");
    let node = identity(&dir, "node-1");
    // Accepts TCP (backlog) but never speaks TLS.
    let (_l, addr) = listener().await;
    let err = connect(&node, addr, "home", Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(err, TlsError::Timeout { .. }), "{err}");
}

fn sample(i: u64) -> LinkMsg {
    match i % 3 {
        0 => LinkMsg::Ping { seq: i },
        1 => LinkMsg::Data {
            session: SessionId(i),
            chan: Chan::Stderr,
            offset: i * 7,
            data: vec![i as u8; (i as usize * 37) % 70_000],
        },
        _ => LinkMsg::Pong { seq: u64::MAX - i },
    }
}

#[tokio::test]
async fn framed_round_trip_over_duplex() {
    // A small pipe so that frames are split across many reads.
    let (a, b) = tokio::io::duplex(1000);
    let writer = tokio::spawn(async move {
        let mut w = FrameWriter::new(a);
        w.write_hello("hello", &"hi".to_string()).await.unwrap();
        for i in 0..2000 {
            w.write_msg("link", &sample(i)).await.unwrap();
        }
        let raw = encode_frame("link", &LinkMsg::Ping { seq: 7 }).unwrap();
        w.write_raw(&raw).await.unwrap();
        w.flush().await.unwrap();
    });
    let mut r = FrameReader::new(b);
    assert_eq!(
        r.read_hello::<String>("hello").await.unwrap().as_deref(),
        Some("hi")
    );
    for i in 0..2000 {
        assert_eq!(
            r.read_msg::<LinkMsg>("link").await.unwrap(),
            Some(sample(i))
        );
    }
    assert_eq!(
        r.read_msg::<LinkMsg>("link").await.unwrap(),
        Some(LinkMsg::Ping { seq: 7 })
    );
    writer.await.unwrap();
    assert_eq!(r.read_msg::<LinkMsg>("link").await.unwrap(), None);
    assert_eq!(r.buffered(), 0);
}

#[tokio::test]
async fn oversized_frame_is_an_error() {
    let (mut a, b) = tokio::io::duplex(64);
    a.write_all(&((MAX_FRAME + 1) as u32).to_le_bytes())
        .await
        .unwrap();
    let mut r = FrameReader::new(b);
    let err = r.read_frame().await.unwrap_err();
    assert!(
        matches!(err, FramedError::Proto(ProtoError::FrameTooLarge { .. })),
        "{err}"
    );
    // A writer refuses to produce one too.
    let big = vec![0u8; MAX_FRAME + 1];
    assert!(matches!(
        encode_frame("big", &serde_bytes::ByteBuf::from(big)),
        Err(ProtoError::FrameTooLarge { .. })
    ));
}

#[tokio::test]
async fn truncated_frame_is_an_error() {
    let (mut a, b) = tokio::io::duplex(4096);
    let whole = encode_frame("link", &LinkMsg::Ping { seq: 1 }).unwrap();
    let cut = encode_frame("link", &sample(1)).unwrap();
    a.write_all(&whole).await.unwrap();
    a.write_all(&cut[..cut.len() / 2]).await.unwrap();
    drop(a);
    let mut r = FrameReader::new(b);
    assert!(r.read_frame().await.unwrap().is_some());
    let err = r.read_frame().await.unwrap_err();
    assert!(matches!(err, FramedError::Truncated), "{err}");
    assert_eq!(
        err.to_string(),
        "connection closed in the middle of a frame"
    );

    // A large frame (read directly into its own buffer), cut.
    let (mut a, b) = tokio::io::duplex(1 << 16);
    let big = encode_frame("link", &sample(1801)).unwrap();
    assert!(big.len() > 64 * 1024);
    let mut r = FrameReader::new(b);
    let sent = big.clone();
    let writer = tokio::spawn(async move {
        a.write_all(&sent).await.unwrap();
        a.write_all(&sent[..sent.len() - 1]).await.unwrap();
    });
    assert_eq!(r.read_frame().await.unwrap().unwrap(), big[4..]);
    let err = r.read_frame().await.unwrap_err();
    assert!(matches!(err, FramedError::Truncated), "{err}");
    writer.await.unwrap();

    // Only a length prefix, cut.
    let (mut a, b) = tokio::io::duplex(64);
    a.write_all(&[5, 0]).await.unwrap();
    drop(a);
    let err = FrameReader::new(b).read_frame().await.unwrap_err();
    assert!(matches!(err, FramedError::Truncated), "{err}");
}

#[tokio::test]
async fn version_mismatch_in_hello() {
    let (mut a, b) = tokio::io::duplex(4096);
    let hello = encode_hello_version("hello", 99, &"future".to_string()).unwrap();
    a.write_all(&hello).await.unwrap();
    let mut r = FrameReader::new(b);
    let err = r.read_hello::<String>("hello").await.unwrap_err();
    assert!(
        matches!(
            err,
            FramedError::Proto(ProtoError::VersionMismatch { theirs: 99, .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("version 99"), "{err}");
}

#[tokio::test]
async fn read_is_cancel_safe() {
    let (mut a, b) = tokio::io::duplex(1 << 20);
    let frame = encode_frame("link", &sample(4)).unwrap();
    let mut r = FrameReader::new(b);
    a.write_all(&frame[..frame.len() / 3]).await.unwrap();
    // The read is abandoned with a third of a frame buffered.
    let t = tokio::time::timeout(Duration::from_millis(50), r.read_frame()).await;
    assert!(t.is_err());
    a.write_all(&frame[frame.len() / 3..]).await.unwrap();
    assert_eq!(
        r.read_msg::<LinkMsg>("link").await.unwrap(),
        Some(sample(4))
    );
}

/// A sealed link (records sealed by roam after the handshake): frames of
/// every size both ways, and its end.
#[tokio::test]
async fn sealed_link_carries_frames_both_ways() {
    let (_t, dir) = cluster("sealed");
    let a = identity(&dir, "n1");
    let b = identity(&dir, "n2");
    let (l, addr) = listener().await;
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 13 + i / 7) as u8).collect();
    let want = big.clone();
    let server = tokio::spawn(async move {
        let (tcp, _) = l.accept().await.unwrap();
        let ((r, w), peer) = roam_net::tls::accept_sealed(&b, tcp, HANDSHAKE)
            .await
            .unwrap();
        let mut r = FrameReader::new(r);
        let mut w = FrameWriter::new(w);
        while let Some(m) = r.read_msg::<LinkMsg>("peer").await.unwrap() {
            w.write_msg("peer", &m).await.unwrap();
        }
        w.shutdown().await.unwrap();
        peer
    });
    let (r, w) = roam_net::tls::connect_sealed(&a, addr, "n2", HANDSHAKE)
        .await
        .unwrap();
    let mut r = FrameReader::new(r);
    let mut w = FrameWriter::new(w);
    for seq in 0..50 {
        w.write_msg("peer", &LinkMsg::Ping { seq }).await.unwrap();
        assert_eq!(
            r.read_msg::<LinkMsg>("peer").await.unwrap(),
            Some(LinkMsg::Ping { seq })
        );
    }
    for (i, chunk) in big.chunks(roam_proto::MAX_DATA_CHUNK).enumerate() {
        let msg = LinkMsg::Image {
            req: 7,
            offset: (i * roam_proto::MAX_DATA_CHUNK) as u64,
            data: chunk.to_vec(),
        };
        w.write_msg("peer", &msg).await.unwrap();
        assert_eq!(r.read_msg::<LinkMsg>("peer").await.unwrap(), Some(msg));
    }
    w.shutdown().await.unwrap();
    assert_eq!(r.read_msg::<LinkMsg>("peer").await.unwrap(), None);
    assert_eq!(server.await.unwrap(), "n1");
    assert_eq!(big, want);
}

/// roam's records are TLS 1.3's: a rustls end reads what a sealed end
/// wrote, and the sealed end opens what rustls wrote.
#[tokio::test]
async fn sealed_records_are_tls_records_rustls_reads_and_writes() {
    let (_t, dir) = cluster("sealed-rustls");
    let a = identity(&dir, "n1");
    let b = identity(&dir, "n2");
    let (l, addr) = listener().await;
    let server = tokio::spawn(async move {
        let (tcp, _) = l.accept().await.unwrap();
        let ((mut r, mut w), _) = roam_net::tls::accept_sealed(&b, tcp, HANDSHAKE)
            .await
            .unwrap();
        let mut got = vec![0u8; 100_000];
        r.read_exact(&mut got).await.unwrap();
        w.write_all(&got).await.unwrap();
        w.shutdown().await.unwrap();
    });
    // A plain rustls client: the acceptor's first record is its "ready".
    let mut tls = connect(&a, addr, "n2", HANDSHAKE).await.unwrap();
    let mut ready = [0u8; 8];
    tls.read_exact(&mut ready).await.unwrap();
    assert_eq!(&ready, b"ROAMSEAL");
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    tls.write_all(&data).await.unwrap();
    tls.flush().await.unwrap();
    let mut back = Vec::new();
    let _ = tls.read_to_end(&mut back).await;
    assert_eq!(back, data);
    server.await.unwrap();
}
