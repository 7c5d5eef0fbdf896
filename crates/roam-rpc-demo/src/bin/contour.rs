//! `contour`: a master/worker eigensolver in the spirit of the paper's
//! parallel one (a contour-integral method): the eigenvalues of the n-by-n
//! 1-D Laplacian inside a circle of the complex plane, from the traces of
//! its resolvent at quadrature points on the circle. Each point is one
//! remote call (`ztrace`), farmed out with a default handle over every
//! node that runs a build of the worker; the result is checked against
//! the same computation done here and against the exact eigenvalues.
//!
//!   contour CONFIG [N] [POINTS] [CENTER] [RADIUS]

use roam_rpc::{Client, Config, Data};
use roam_rpc_demo::{eigenvalues_inside, ztrace, Complex};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let usage = "usage: contour CONFIG [N] [POINTS] [CENTER] [RADIUS]";
    let cfg = Config::load(a.get(1).expect(usage).as_ref()).unwrap_or_else(|e| {
        eprintln!("contour: {e}");
        std::process::exit(2)
    });
    let arg = |i: usize, d: f64| a.get(i).map_or(d, |s| s.parse().expect(usage));
    let (n, points) = (arg(2, 30.0) as usize, arg(3, 128.0) as usize);
    let (c, r) = (arg(4, 0.2), arg(5, 0.13));
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        m[i * n + i] = 2.0;
        if i + 1 < n {
            m[i * n + i + 1] = -1.0;
            m[(i + 1) * n + i] = -1.0;
        }
    }
    let z = |j: usize| -> Complex {
        let th = 2.0 * std::f64::consts::PI * (j as f64 + 0.5) / points as f64;
        (c + r * th.cos(), r * th.sin())
    };
    let client = Client::new(cfg).expect("client");
    let h = client.handle("ztrace").unwrap_or_else(|e| {
        eprintln!("contour: {e}");
        std::process::exit(2)
    });
    let mut ids = Vec::with_capacity(points);
    for j in 0..points {
        let (zr, zi) = z(j);
        let args = vec![
            Data::from(n as i32),
            Data::from(m.clone()),
            Data::from(zr),
            Data::from(zi),
            Data::Double(vec![]),
        ];
        ids.push(h.call_async(args).unwrap_or_else(|e| {
            eprintln!("contour: point {j}: {e}");
            std::process::exit(1)
        }));
    }
    let mut remote = Vec::with_capacity(points);
    for (j, id) in ids.into_iter().enumerate() {
        match client.wait(id) {
            Ok(out) => match &out[0] {
                Data::Double(t) => remote.push((t[0], t[1])),
                other => panic!("point {j}: {other:?}"),
            },
            Err(e) => {
                eprintln!("contour: point {j}: {e}");
                std::process::exit(1)
            }
        }
    }
    let local: Vec<Complex> = (0..points)
        .map(|j| ztrace(n, &m, z(j)).expect("local solve"))
        .collect();
    let nodes = client.worker_nodes();
    client.shutdown();
    let exact: Vec<f64> = (1..=n)
        .map(|k| 2.0 - 2.0 * (k as f64 * std::f64::consts::PI / (n as f64 + 1.0)).cos())
        .filter(|l| (l - c).abs() < r)
        .collect();
    let got = eigenvalues_inside(c, r, &remote).expect("eigenvalues");
    let here = eigenvalues_inside(c, r, &local).expect("eigenvalues");
    println!("contour: {points} points on |z - {c}| = {r}, workers on {nodes:?}");
    println!("  remote: {got:?}");
    println!("  local:  {here:?}");
    println!("  exact:  {exact:?}");
    let close = |x: &[f64], y: &[f64]| {
        x.len() == y.len() && x.iter().zip(y).all(|(a, b)| (a - b).abs() < 1e-8)
    };
    // The remote traces are the local ones, whatever the worker's machine.
    let same = remote.iter().zip(&local).all(|(a, b)| {
        (a.0 - b.0).abs() <= 1e-9 * b.0.abs().max(1.0)
            && (a.1 - b.1).abs() <= 1e-9 * b.1.abs().max(1.0)
    });
    if close(&got, &exact) && close(&here, &exact) && same {
        println!("contour: PASS");
    } else {
        println!("contour: FAIL");
        std::process::exit(1);
    }
}
