//! First figures of GridRPC over roam (the peers of issue 5, Ray and raw
//! TCP, are not in it yet): null-call round trip on a bound handle, the
//! throughput of many small async calls, and the bandwidth of a large
//! INOUT array.
//!
//!   rpc_bench CONFIG NODE [ROUNDS]

use std::time::Instant;

use roam_rpc::{Client, Config, Data};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let cfg = args.next().expect("usage: rpc_bench CONFIG NODE [ROUNDS]");
    let node = args.next().expect("usage: rpc_bench CONFIG NODE [ROUNDS]");
    let rounds: usize = args.next().map_or(2000, |r| r.parse().expect("ROUNDS"));
    let client = Client::new(Config::load(cfg.as_ref()).expect("config")).expect("client");
    let null = client.handle_on(&node, "null").expect("handle");
    for _ in 0..100 {
        null.call(&[]).expect("warm-up");
    }
    let mut t = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let a = Instant::now();
        null.call(&[]).expect("null call");
        t.push(a.elapsed().as_secs_f64() * 1e6);
    }
    println!(
        "null call round trip, median of {rounds}: {:.1} us",
        median(t)
    );

    let a = Instant::now();
    let ids: Vec<i32> = (0..rounds)
        .map(|_| null.call_async(&[]).expect("async call"))
        .collect();
    for id in ids {
        client.wait(id).expect("wait");
    }
    let secs = a.elapsed().as_secs_f64();
    println!(
        "async null calls: {rounds} in {:.1} ms, {:.0} calls/s",
        secs * 1e3,
        rounds as f64 / secs
    );

    // A 64 MiB array there and back.
    let echo = client.handle_on(&node, "echo").expect("handle");
    let n = 8usize << 20;
    let x = vec![0.5f64; n];
    let mut t = Vec::new();
    for _ in 0..5 {
        let a = Instant::now();
        let out = echo
            .call(&[Data::Long(vec![n as i64]), Data::from(x.clone())])
            .expect("echo");
        t.push(a.elapsed().as_secs_f64());
        assert_eq!(out[0].len(), n);
    }
    let bytes = (2 * n * 8) as f64;
    println!(
        "echo of {} MiB there and back, median {:.1} ms: {:.0} MB/s",
        (n * 8) >> 20,
        median(t.clone()) * 1e3,
        bytes / median(t) / 1e6
    );
    client.shutdown();
}
