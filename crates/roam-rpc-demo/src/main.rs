//! `demo_worker`, a remote executable for roam-rpc's demo, tests and
//! bench: serves the functions of `crates/roam-rpc/examples/demo.idl` to
//! the client that started it.

use roam_rpc::worker::{Args, Worker};
use roam_rpc::Data;

fn main() {
    let mut w = Worker::new(include_str!("../../roam-rpc/examples/demo.idl")).unwrap_or_else(|e| {
        eprintln!("demo_worker: {e}");
        std::process::exit(2)
    });
    let reg = |w: &mut Worker, name: &str, f: fn(&mut Args) -> Result<(), String>| {
        w.register(name, f).expect("in the interface");
    };
    reg(&mut w, "dmmul", |a| {
        let n = a.int("n")? as usize;
        let (x, y) = (a.doubles("A")?.to_vec(), a.doubles("B")?.to_vec());
        roam_rpc_demo::mmul_add(n, &x, &y, a.doubles_mut("C")?);
        Ok(())
    });
    reg(&mut w, "ztrace", |a| {
        let n = a.int("n")? as usize;
        let z = (a.get("zr")?.clone(), a.get("zi")?.clone());
        let (Data::Double(zr), Data::Double(zi)) = z else {
            return Err("zr and zi are doubles".into());
        };
        let t = roam_rpc_demo::ztrace(n, a.doubles("A")?, (zr[0], zi[0]))?;
        a.set("t", vec![t.0, t.1])
    });
    let mut total: i64 = 0;
    w.register("count", move |a: &mut Args| {
        total += a.int("add")?;
        a.set("total", total)
    })
    .expect("in the interface");
    reg(&mut w, "where", |a| {
        let mut name = std::env::var("ROAM_NODE").unwrap_or_default().into_bytes();
        name.resize(64, 0);
        a.set("node", Data::Char(name))
    });
    reg(&mut w, "nap", |a| {
        let ms = a.int("ms")?;
        std::thread::sleep(std::time::Duration::from_millis(ms.max(0) as u64));
        a.set("slept", ms as i32)
    });
    reg(&mut w, "fail", |a| Err(a.str("why")?));
    reg(&mut w, "crash", |a| {
        std::process::exit(a.int("code")? as i32)
    });
    reg(&mut w, "echo", |_| Ok(()));
    reg(&mut w, "spawn", |a| {
        let prog = a.str("prog")?;
        let status = std::process::Command::new(&prog)
            .status()
            .map_err(|e| format!("cannot run {prog}: {e}"))?;
        a.set("status", status.code().unwrap_or(-1))
    });
    reg(&mut w, "readfile", |a| {
        let path = a.str("path")?;
        let data = std::fs::read(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
        a.set("size", data.len() as i64)
    });
    reg(&mut w, "null", |_| Ok(()));
    if let Err(e) = w.serve_env() {
        eprintln!("demo_worker: {e}");
        std::process::exit(1);
    }
}
