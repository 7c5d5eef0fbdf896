//! The rate of a link on loopback, rustls's records against roam's sealed
//! ones (`roam_net::sealed`), side by side: 256 KiB frames one way, as a
//! migration's pages go, read with a `FrameReader`. Medians of the runs.
//!
//! `cargo run --release -p roam-net --example link_rate [MiB] [runs]`

use std::time::{Duration, Instant};

use roam_net::creds::{init_cluster, issue_node};
use roam_net::framed::FrameReader;
use roam_net::tls::{self, Identity};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

const T: Duration = Duration::from_secs(5);
const FRAME: usize = 256 * 1024;

async fn pump<W, R>(mut w: W, r: R, mib: usize) -> f64
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin + Send + 'static,
{
    let frame = vec![7u8; FRAME];
    let frames = mib * 4;
    let reader = tokio::spawn(async move {
        let mut r = FrameReader::new(r);
        let mut n = 0;
        while r.read_frame().await.unwrap().is_some() {
            n += 1;
        }
        n
    });
    let t = Instant::now();
    let mut f = (FRAME as u32 - 4).to_le_bytes().to_vec();
    f.extend_from_slice(&frame[4..]);
    for _ in 0..frames {
        w.write_all(&f).await.unwrap();
    }
    w.shutdown().await.unwrap();
    assert_eq!(reader.await.unwrap(), frames);
    (mib as f64 / 1024.0) / t.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(512);
    let runs: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let dir = std::env::temp_dir().join(format!("roam-link-rate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    init_cluster(&dir).unwrap();
    let id = |n: &str| {
        let (c, k) = issue_node(&dir, n).unwrap();
        Identity::load(&dir.join("ca.pem"), &c, &k).unwrap()
    };
    let (a, b) = (id("n1"), id("n2"));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (mut plain, mut sealed) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        // rustls's records.
        let b2 = &b;
        let server = async {
            tls::accept(b2, l.accept().await.unwrap().0, T)
                .await
                .unwrap()
        };
        let (s, c) = tokio::join!(server, tls::connect(&a, addr, "n2", T));
        let (sr, _sw) = tokio::io::split(s.0);
        let (_cr, cw) = tokio::io::split(c.unwrap());
        plain.push(pump(cw, sr, mib).await);
        // roam's.
        let server = async {
            tls::accept_sealed(b2, l.accept().await.unwrap().0, T)
                .await
                .unwrap()
        };
        let (s, c) = tokio::join!(server, tls::connect_sealed(&a, addr, "n2", T));
        let ((sr, _sw), _) = s;
        let (_cr, cw) = c.unwrap();
        sealed.push(pump(cw, sr, mib).await);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (p, s) = (median(plain), median(sealed));
    println!("{mib} MiB in 256 KiB frames over loopback TLS, medians of {runs}:");
    println!("  rustls records: {p:.2} GiB/s");
    println!("  roam's sealed records: {s:.2} GiB/s ({:.2}x)", s / p);
}
