//! GridRPC over roam against raw TCP between the same two namespaces, in
//! one run: null-call round trip on a bound handle, many small async
//! calls, and a large INOUT array there and back; with `--ray`, Ray in the
//! same run (`scripts/rpc_ray_bench.py`: a local Ray instance).
//!
//!   rpc_bench CONFIG NODE [ROUNDS] [--ray scripts/rpc_ray_bench.py]
//!
//! The raw TCP peer is this program again, run on NODE through roam
//! (`rpc_bench --raw-echo ADDRS`): it connects back the way workers do
//! and echoes length-prefixed messages.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use roam_rpc::{Client, Config, Data};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The raw peer: echoes each length-prefixed message back.
fn raw_echo(addrs: &str) -> ! {
    let mut s = roam_rpc::worker::connect_any(addrs).unwrap_or_else(|e| {
        eprintln!("rpc_bench --raw-echo: {e}");
        std::process::exit(1)
    });
    let _ = s.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        let mut len = [0u8; 8];
        if s.read_exact(&mut len).is_err() {
            std::process::exit(0);
        }
        buf.resize(u64::from_be_bytes(len) as usize, 0);
        if s.read_exact(&mut buf).is_err() || s.write_all(&buf).is_err() {
            std::process::exit(1);
        }
    }
}

/// A table row: its name, the figure it shows, the target.
type Row = (&'static str, fn(&Figures) -> f64, &'static str);

struct Figures {
    null_us: f64,
    calls_per_s: f64,
    mb_per_s: f64,
    /// Seconds for a farm of FARM jobs of FARM_MS each.
    farm_s: f64,
}

/// The farm: this many jobs of this many milliseconds, on every worker the
/// default handle starts (one per node).
const FARM: usize = 100;
const FARM_MS: i32 = 10;

const ARRAY: usize = 8 << 20; // doubles: 64 MiB

fn raw(cfg: &Config, client: &Client, node: &str, rounds: usize) -> Figures {
    let l = TcpListener::bind("0.0.0.0:0").expect("listen");
    let addrs = client
        .callback_addresses(l.local_addr().expect("port").port())
        .expect("addresses");
    let mut cmd = Command::new(&cfg.roam);
    cmd.args(["run", "--node", node, "--"])
        .arg(std::env::current_exe().expect("own path"))
        .args(["--raw-echo", &addrs])
        .stdin(Stdio::null());
    if let Some(s) = &cfg.socket {
        cmd.env("ROAM_SOCKET", s);
    }
    let mut child = cmd.spawn().expect("roam run");
    l.set_nonblocking(true).expect("nonblocking");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut s = loop {
        match l.accept() {
            Ok((s, _)) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("the raw peer never connected: {e}"),
        }
    };
    s.set_nonblocking(false).expect("blocking");
    let _ = s.set_nodelay(true);
    let mut one = [0u8; 9];
    one[..8].copy_from_slice(&1u64.to_be_bytes());
    let mut back = [0u8; 1];
    let mut t = Vec::with_capacity(rounds);
    for i in 0..rounds + 100 {
        let a = Instant::now();
        s.write_all(&one).expect("write");
        s.read_exact(&mut back).expect("read");
        if i >= 100 {
            t.push(a.elapsed().as_secs_f64() * 1e6);
        }
    }
    let null_us = median(t);
    // Pipelined: all the messages out (from another thread), then back.
    let a = Instant::now();
    let mut w = s.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        let all: Vec<u8> = (0..rounds).flat_map(|_| one).collect();
        w.write_all(&all).expect("write");
    });
    let mut all = vec![0u8; rounds];
    s.read_exact(&mut all).expect("read");
    writer.join().expect("writer");
    let calls_per_s = rounds as f64 / a.elapsed().as_secs_f64();
    let msg = vec![7u8; ARRAY * 8];
    let mut echo = vec![0u8; ARRAY * 8];
    let mut t = Vec::new();
    for _ in 0..5 {
        let a = Instant::now();
        s.write_all(&(msg.len() as u64).to_be_bytes())
            .expect("write");
        s.write_all(&msg).expect("write");
        s.read_exact(&mut echo).expect("read");
        t.push(a.elapsed().as_secs_f64());
    }
    drop(s);
    let _ = child.wait();
    Figures {
        null_us,
        calls_per_s,
        mb_per_s: (2 * ARRAY * 8) as f64 / median(t) / 1e6,
        farm_s: f64::NAN,
    }
}

fn rpc(client: &Client, node: &str, rounds: usize) -> Figures {
    let null = client.handle_on(node, "null").expect("handle");
    for _ in 0..100 {
        null.call(vec![]).expect("warm-up");
    }
    let mut t = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let a = Instant::now();
        null.call(vec![]).expect("null call");
        t.push(a.elapsed().as_secs_f64() * 1e6);
    }
    let null_us = median(t);
    let a = Instant::now();
    let ids: Vec<i32> = (0..rounds)
        .map(|_| null.call_async(vec![]).expect("async call"))
        .collect();
    for id in ids {
        client.wait(id).expect("wait");
    }
    let calls_per_s = rounds as f64 / a.elapsed().as_secs_f64();
    let echo = client.handle_on(node, "echo").expect("handle");
    let x = vec![0.5f64; ARRAY];
    let mut t = Vec::new();
    for _ in 0..5 {
        let args = vec![Data::Long(vec![ARRAY as i64]), Data::from(x.clone())];
        let a = Instant::now();
        let out = echo.call(args).expect("echo");
        t.push(a.elapsed().as_secs_f64());
        assert_eq!(out[0].len(), ARRAY);
    }
    // The farm, on a default handle: its workers start on the first calls.
    let nap = client.handle("nap").expect("handle");
    let a = Instant::now();
    let ids: Vec<i32> = (0..FARM)
        .map(|_| {
            nap.call_async(vec![Data::from(FARM_MS), Data::Int(vec![])])
                .expect("farm call")
        })
        .collect();
    for id in ids {
        client.wait(id).expect("farm job");
    }
    let farm_s = a.elapsed().as_secs_f64();
    Figures {
        null_us,
        calls_per_s,
        mb_per_s: (2 * ARRAY * 8) as f64 / median(t) / 1e6,
        farm_s,
    }
}

/// Ray's figures from `script` (scripts/rpc_ray_bench.py), or None with
/// why on stderr.
fn ray_figures(script: &str, rounds: usize) -> Option<Figures> {
    let out = Command::new("python3")
        .arg(script)
        .arg(rounds.to_string())
        .stdin(Stdio::null())
        .output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            eprintln!(
                "rpc_bench: the Ray bench failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            return None;
        }
        Err(e) => {
            eprintln!("rpc_bench: cannot run python3: {e}");
            return None;
        }
    };
    let v: serde_json::Value = serde_json::from_slice(out.stdout.trim_ascii()).ok()?;
    Some(Figures {
        null_us: v["null_us"].as_f64()?,
        calls_per_s: v["calls_per_s"].as_f64()?,
        mb_per_s: v["mb_per_s"].as_f64()?,
        farm_s: v["farm_s"].as_f64()?,
    })
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--raw-echo") {
        raw_echo(argv.get(2).map_or("", String::as_str));
    }
    let usage = "usage: rpc_bench CONFIG NODE [ROUNDS] [--ray SCRIPT]";
    let ray_script = argv
        .iter()
        .position(|a| a == "--ray")
        .and_then(|i| argv.get(i + 1))
        .cloned();
    let argv: Vec<String> = match argv.iter().position(|a| a == "--ray") {
        Some(i) => argv[..i].to_vec(),
        None => argv,
    };
    let cfg = Config::load(argv.get(1).expect(usage).as_ref()).expect("config");
    let node = argv.get(2).expect(usage).clone();
    let rounds: usize = argv.get(3).map_or(2000, |r| r.parse().expect("ROUNDS"));
    let client = Client::new(cfg.clone()).expect("client");
    // Interleaved: raw, rpc, raw, rpc...
    let (mut r, mut g) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        r.push(raw(&cfg, &client, &node, rounds));
        g.push(rpc(&client, &node, rounds));
    }
    let ray = ray_script.and_then(|script| ray_figures(&script, rounds));
    let med = |v: &[Figures], f: fn(&Figures) -> f64| median(v.iter().map(f).collect());
    let rows: [Row; 4] = [
        ("null call round trip (us)", |f| f.null_us, "< 200 us"),
        (
            "small async calls (calls/s)",
            |f| f.calls_per_s,
            ">= 2x Ray",
        ),
        (
            "64 MiB array there and back (MB/s)",
            |f| f.mb_per_s,
            ">= 80% of raw TCP",
        ),
        (
            "farm: 100 jobs of 10 ms, 2 workers (s)",
            |f| f.farm_s,
            "ideal 0.5 s",
        ),
    ];
    println!(
        "{:<38} {:>10} {:>10} {:>10} {:>9} {:>9}   target",
        "medians of 5 interleaved runs", "roam-rpc", "raw TCP", "Ray", "/raw", "/Ray"
    );
    for (name, f, target) in rows {
        let (a, b) = (med(&g, f), med(&r, f));
        let (c, vs_ray) = match &ray {
            Some(ray) => (format!("{:.2}", f(ray)), format!("{:.2}x", a / f(ray))),
            None => ("-".into(), "-".into()),
        };
        // The farm has no raw TCP counterpart.
        let (b, vs_raw) = if b.is_nan() {
            ("-".to_string(), "-".to_string())
        } else {
            (format!("{b:.1}"), format!("{:.2}x", a / b))
        };
        println!("{name:<38} {a:>10.2} {b:>10} {c:>10} {vs_raw:>9} {vs_ray:>9}   {target}");
    }
    if ray.is_none() {
        println!(
            "(Ray left out: give --ray scripts/rpc_ray_bench.py, with ray and numpy installed)"
        );
    }
    client.shutdown();
}
