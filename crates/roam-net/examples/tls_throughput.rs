//! Pushes 1 GiB of 256 KiB `LinkMsg::Data` frames over a mutually
//! authenticated TLS link on loopback and prints the throughput.
//!
//! `cargo run --release -p roam-net --example tls_throughput [MiB]`

use std::time::{Duration, Instant};

use roam_net::creds::{init_cluster, issue_node};
use roam_net::framed::{FrameReader, FrameWriter};
use roam_net::tls::{accept, connect, Identity};
use roam_proto::link::LinkMsg;
use roam_proto::types::{Chan, SessionId};
use roam_proto::MAX_DATA_CHUNK;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("size in MiB"))
        .unwrap_or(1024);
    let frames = mib * (1 << 20) / MAX_DATA_CHUNK;

    let dir = std::env::temp_dir().join(format!("roam-tls-throughput-{}", std::process::id()));
    init_cluster(&dir).unwrap();
    let load = |name: &str| {
        let (cert, key) = issue_node(&dir, name).unwrap();
        Identity::load(&dir.join("ca.pem"), &cert, &key).unwrap()
    };
    let home = load("home");
    let node = load("node-1");
    std::fs::remove_dir_all(&dir).unwrap();

    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let timeout = Duration::from_secs(5);
    let receiver = tokio::spawn(async move {
        let (tcp, _) = l.accept().await.unwrap();
        let (tls, _) = accept(&home, tcp, timeout).await.unwrap();
        let mut r = FrameReader::new(tls);
        let mut bytes = 0usize;
        while let Some(m) = r.read_msg::<LinkMsg>("link").await.unwrap() {
            if let LinkMsg::Data { data, .. } = m {
                bytes += data.len();
            }
        }
        bytes
    });

    let tls = connect(&node, addr, "home", timeout).await.unwrap();
    let start = Instant::now();
    // Both ends are tasks of the (multi-threaded) runtime, as in roamd.
    let sender = tokio::spawn(async move {
        let mut w = FrameWriter::new(tls);
        let chunk: Vec<u8> = (0..MAX_DATA_CHUNK).map(|i| (i * 31) as u8).collect();
        for i in 0..frames {
            // A fresh vector per frame, as when reading from a pipe.
            let msg = LinkMsg::Data {
                session: SessionId(1),
                chan: Chan::Stdout,
                offset: (i * MAX_DATA_CHUNK) as u64,
                data: chunk.clone(),
            };
            w.write_msg("link", &msg).await.unwrap();
        }
        w.shutdown().await.unwrap();
    });
    sender.await.unwrap();
    let bytes = receiver.await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(bytes, frames * MAX_DATA_CHUNK);
    println!(
        "{} MiB in {frames} frames of {} KiB over TLS: {:.3} s, {:.0} MB/s ({:.0} MiB/s)",
        bytes >> 20,
        MAX_DATA_CHUNK / 1024,
        secs,
        bytes as f64 / secs / 1e6,
        bytes as f64 / secs / (1 << 20) as f64,
    );
}
