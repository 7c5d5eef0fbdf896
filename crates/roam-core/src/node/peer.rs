//! Peer links: a migration's pages straight from the old node to the new
//! one, not through the home (docs/design/migration.md, "Direct
//! transfer").
//!
//! A node with `peer_listen` takes TLS connections there, with the
//! cluster's certificates both ways, as every link; after the handshake
//! the link's records are sealed and opened by roam (`roam_net::sealed`:
//! TLS 1.3's records under the handshake's keys, read 256 KiB at a time),
//! not by rustls. The home names the
//! new node's listener in `MigrateOut` and tells the new node first which
//! node the migration comes from (`Expect`), with the migration's
//! `Restore` sent ahead. The old node connects (or reuses its link to that
//! node: one per pair of nodes, kept open), then sends the migration's
//! `PreCopy`, `Captured` (which completes the `Restore`: the image's
//! length, the streams' handover), `Image` and `ImageEnd` messages there;
//! the new node acknowledges (`ImageAck`) the same way, and to the home
//! for progress. The home hears `PreCopy`, `Captured` and `ImageEnd` too;
//! `Spawned` and the verdict still go through the home, which decides.
//!
//! A message of a migration the home did not announce from the link's
//! node (its certificate's name) closes the link.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use roam_net::framed::{FrameReader, FrameWriter};
use roam_net::tls;
use roam_proto::link::{LinkMsg, PeerHello, PeerPath};
use roam_proto::types::{ErrorCode, WireError};
use tokio::net::TcpListener;

use super::ckpt::LazyMsg;
use super::{NodeShared, HANDSHAKE_TIMEOUT};
use crate::wire::{writer_loop, FrameTx};

/// How long a message of a migration waits for the home's word about it
/// (`Expect`, or the `Restore` that opens its transfer), which comes over
/// another link and may come a little later.
const ANNOUNCED_WITHIN: Duration = Duration::from_secs(10);

fn unavailable(m: String) -> WireError {
    WireError::new(ErrorCode::Unavailable, m)
}

/// The old node's end: the link to the new node of `path` (the one open,
/// or a new one). Acknowledgements that come back go to their transfers'
/// queues.
pub(super) async fn open(shared: &Arc<NodeShared>, path: &PeerPath) -> Result<FrameTx, WireError> {
    if let Some(tx) = shared.peers.lock().unwrap().get(&path.node) {
        if !tx.is_closed() {
            return Ok(tx.clone());
        }
    }
    let cant = |e: String| {
        unavailable(format!(
            "node {}: cannot reach node {} at {}: {e}",
            shared.name, path.node, path.addr
        ))
    };
    let (r, w) = tls::connect_sealed(&shared.tls, path.addr, &path.node, HANDSHAKE_TIMEOUT)
        .await
        .map_err(|e| cant(crate::error_chain(&e)))?;
    let mut writer = FrameWriter::new(w);
    writer
        .write_hello("peer hello", &PeerHello { flags: 0 })
        .await
        .map_err(|e| cant(e.to_string()))?;
    let (tx, rx) = FrameTx::new();
    tokio::spawn(writer_loop(writer.into_inner(), rx));
    shared
        .peers
        .lock()
        .unwrap()
        .insert(path.node.clone(), tx.clone());
    let shared = shared.clone();
    let to = path.node.clone();
    let ours = tx.clone();
    tokio::spawn(async move {
        let why = acks(&shared, FrameReader::new(r)).await;
        tracing::debug!("peer link to {to}: {why}");
        let mut peers = shared.peers.lock().unwrap();
        if peers.get(&to).is_some_and(|t| t.same(&ours)) {
            peers.remove(&to);
        }
    });
    Ok(tx)
}

/// Drops the link to `node` kept for later migrations: after a failed
/// one, it may be the reason (a link cut without a word looks open), and
/// the next migration there opens a new one.
pub(super) fn forget(shared: &NodeShared, node: &str) {
    shared.peers.lock().unwrap().remove(node);
}

/// Takes the acknowledgements of a link to a new node until it ends;
/// why it did.
async fn acks<R: tokio::io::AsyncRead + Unpin>(
    shared: &NodeShared,
    mut reader: FrameReader<R>,
) -> String {
    loop {
        let frame = match reader.read_frame().await {
            Ok(Some(f)) => f,
            Ok(None) => return "closed".into(),
            Err(e) => return e.to_string(),
        };
        match roam_proto::decode_body::<LinkMsg>("peer", &frame) {
            Ok(
                msg @ (LinkMsg::ImageAck { req, .. }
                | LinkMsg::LazyWant { req, .. }
                | LinkMsg::LazyDone { req, .. }),
            ) => {
                if let Some(q) = shared.transfers.lock().unwrap().get(&req) {
                    let _ = q.send(msg);
                }
            }
            Ok(other) => return format!("unexpected {other:?}"),
            Err(e) => return format!("malformed message ({e})"),
        }
    }
}

/// The new node's end: takes peer links until the daemon stops.
pub(super) async fn listen(shared: Arc<NodeShared>, listener: TcpListener) {
    loop {
        let (sock, addr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("peer listener: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(&shared, sock).await {
                tracing::warn!("peer link from {addr}: {e}");
            }
        });
    }
}

/// One peer link: hands the messages of each migration the home announced
/// from its node to that migration.
async fn serve(shared: &Arc<NodeShared>, sock: tokio::net::TcpStream) -> Result<(), String> {
    let ((r, w), name) = tls::accept_sealed(&shared.tls, sock, HANDSHAKE_TIMEOUT)
        .await
        .map_err(|e| crate::error_chain(&e))?;
    let mut reader = FrameReader::new(r);
    let _: PeerHello = tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.read_hello("peer hello"))
        .await
        .map_err(|_| format!("node {name} said nothing"))?
        .map_err(|e| format!("node {name}: {e}"))?
        .ok_or_else(|| format!("node {name} closed the link at once"))?;
    let (tx, rx) = FrameTx::new();
    let writer = tokio::spawn(writer_loop(w, rx));
    // Migrations under way on this link.
    let mut open: HashSet<u64> = HashSet::new();
    let result = relay(shared, &name, &tx, &mut reader, &mut open).await;
    // Post-copies from that node hear it (their queue closes).
    shared
        .lazy_in
        .lock()
        .unwrap()
        .retain(|_, (from, _)| *from != name);
    // Those the link left unfinished hear that their image will not come.
    for req in open {
        shared.peer_acks.lock().unwrap().remove(&req);
        shared.expected.lock().unwrap().remove(&req);
        let end = LinkMsg::ImageEnd {
            req,
            result: Err(unavailable(format!(
                "the peer link from node {name} broke before the image's end"
            ))),
        };
        if let Some(q) = shared.transfers.lock().unwrap().get(&req) {
            let _ = q.send(end);
        }
    }
    drop(tx);
    // The acknowledgements queued go out before the link closes.
    let _ = writer.await;
    result
}

/// Hands the messages coming from node `name` to their migrations until
/// the link ends.
async fn relay<R: tokio::io::AsyncRead + Unpin>(
    shared: &Arc<NodeShared>,
    name: &str,
    tx: &FrameTx,
    reader: &mut FrameReader<R>,
    open: &mut HashSet<u64>,
) -> Result<(), String> {
    loop {
        let frame = match reader.read_frame().await {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(()),
            Err(e) => return Err(format!("node {name}: {e}")),
        };
        // The bulk of a move: its pages go on in the frame they came in.
        if let Some((req, addr, at)) = roam_proto::link::lazy_pages_of(&frame) {
            lazy(shared, name, req, LazyMsg::Pages { addr, frame, at }).await;
            continue;
        }
        let msg = roam_proto::decode_body::<LinkMsg>("peer", &frame)
            .map_err(|e| format!("node {name} sent a malformed message ({e})"))?;
        let req = match &msg {
            LinkMsg::PreCopy { req, .. }
            | LinkMsg::Captured { req, .. }
            | LinkMsg::Image { req, .. }
            | LinkMsg::ImageEnd { req, .. } => *req,
            LinkMsg::LazyEnd { req } => {
                lazy(shared, name, *req, LazyMsg::End).await;
                continue;
            }
            other => return Err(format!("node {name} sent {other:?} on a peer link")),
        };
        if !open.contains(&req) {
            let announced = wait_for(shared, || {
                shared
                    .expected
                    .lock()
                    .unwrap()
                    .get(&req)
                    .is_some_and(|from| from == name)
            })
            .await;
            if !announced {
                return Err(format!(
                    "node {name} sends migration {req}, which the home did not announce from it"
                ));
            }
            open.insert(req);
            shared.peer_acks.lock().unwrap().insert(req, tx.clone());
        }
        match msg {
            LinkMsg::PreCopy { .. } => shared.migration_in(req, msg),
            _ => {
                let end = matches!(
                    msg,
                    LinkMsg::ImageEnd { .. } | LinkMsg::Captured { result: Err(_), .. }
                );
                // The image may come before the home's `Restore` opens its
                // transfer: it waits for it (the sender, for acks).
                let mut queue = None;
                wait_for(shared, || {
                    queue = shared.transfers.lock().unwrap().get(&req).cloned();
                    queue.is_some()
                })
                .await;
                match queue {
                    Some(q) => {
                        let _ = q.send(msg);
                    }
                    None => tracing::warn!("migration {req}: no restore took its image"),
                }
                // The rest goes when the restore ends (a post-copy answers
                // over the link after the image's end).
                if end {
                    open.remove(&req);
                }
            }
        }
    }
}

/// A post-copy's message from node `name`: to the post-copy of `req`, once
/// its restore has started it if the migration is still announced; dropped
/// otherwise (the post-copy is over: pages sent before the old node heard).
async fn lazy(shared: &NodeShared, name: &str, req: u64, msg: LazyMsg) {
    let mut queue = None;
    wait_for(shared, || {
        queue = shared
            .lazy_in
            .lock()
            .unwrap()
            .get(&req)
            .filter(|(from, _)| from == name)
            .map(|(_, q)| q.clone());
        queue.is_some()
            || shared
                .expected
                .lock()
                .unwrap()
                .get(&req)
                .is_none_or(|from| from != name)
    })
    .await;
    match queue {
        Some(q) => {
            let _ = q.send(msg);
        }
        None => tracing::debug!("migration {req}: post-copy pages from {name} dropped"),
    }
}

/// Waits until `ready` holds, for a while (woken when a transfer opens or
/// a migration is announced); whether it did.
async fn wait_for(shared: &NodeShared, mut ready: impl FnMut() -> bool) -> bool {
    let until = tokio::time::Instant::now() + ANNOUNCED_WITHIN;
    loop {
        let opened = shared.opened.notified();
        tokio::pin!(opened);
        // Registered before the check: a change right after it wakes us.
        opened.as_mut().enable();
        if ready() {
            return true;
        }
        if tokio::time::timeout_at(until, opened).await.is_err() {
            return ready();
        }
    }
}
