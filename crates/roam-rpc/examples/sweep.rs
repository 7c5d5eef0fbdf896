//! A parameter sweep in Rust over the demo worker: matrix products of
//! scaled matrices farmed out with a default handle (async calls, results
//! taken as they complete), each checked against a local product.
//!
//!   sweep CONFIG [JOBS]

use roam_rpc::{Client, Config, Data};

fn product(n: usize, a: &[f64], b: &[f64]) -> Vec<f64> {
    let mut c = vec![0.0; n * n];
    for i in 0..n {
        for k in 0..n {
            for j in 0..n {
                c[i * n + j] += a[i * n + k] * b[k * n + j];
            }
        }
    }
    c
}

fn main() {
    let mut args = std::env::args().skip(1);
    let cfg = args.next().expect("usage: sweep CONFIG [JOBS]");
    let jobs: usize = args.next().map_or(16, |j| j.parse().expect("JOBS"));
    let client = Client::new(Config::load(cfg.as_ref()).unwrap_or_else(|e| {
        eprintln!("sweep: {e}");
        std::process::exit(2)
    }))
    .expect("client");
    let h = client.handle("dmmul").expect("handle");
    let n = 32usize;
    let b: Vec<f64> = (0..n * n).map(|i| (i % 5) as f64).collect();
    let mut inputs = std::collections::HashMap::new();
    for j in 0..jobs {
        let a: Vec<f64> = (0..n * n).map(|i| (i % 3) as f64 * j as f64).collect();
        let id = h
            .call_async(vec![
                Data::from(n as i32),
                Data::from(a.clone()),
                Data::from(b.clone()),
                Data::Double(Vec::new()),
            ])
            .expect("call");
        inputs.insert(id, (j, a));
    }
    let mut ok = 0;
    while let Some((id, result)) = client.wait_any().expect("wait") {
        let (j, a) = inputs.remove(&id).expect("our session");
        match result {
            Ok(outs) if outs[0] == Data::from(product(n, &a, &b)) => ok += 1,
            Ok(_) => eprintln!("job {j}: wrong product"),
            Err(e) => eprintln!("job {j}: {e}"),
        }
    }
    println!(
        "sweep: {ok}/{jobs} products right, workers on {:?}",
        client.worker_nodes()
    );
    client.shutdown();
    std::process::exit(if ok == jobs { 0 } else { 1 });
}
