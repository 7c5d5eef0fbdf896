//! The numerical kernels of roam-rpc's demo: what the demo worker computes
//! remotely and the examples compute locally to check it.

/// C += A B, all n by n, row-major.
pub fn mmul_add(n: usize, a: &[f64], b: &[f64], c: &mut [f64]) {
    for i in 0..n {
        for k in 0..n {
            let aik = a[i * n + k];
            for j in 0..n {
                c[i * n + j] += aik * b[k * n + j];
            }
        }
    }
}

/// A complex number as (re, im).
pub type Complex = (f64, f64);

fn mul(a: Complex, b: Complex) -> Complex {
    (a.0 * b.0 - a.1 * b.1, a.0 * b.1 + a.1 * b.0)
}

fn div(a: Complex, b: Complex) -> Complex {
    let d = b.0 * b.0 + b.1 * b.1;
    ((a.0 * b.0 + a.1 * b.1) / d, (a.1 * b.0 - a.0 * b.1) / d)
}

/// The trace of (zI - A)^-1 for the real n-by-n matrix A (row-major):
/// Gauss-Jordan elimination of (zI - A | I) with partial pivoting. Fails
/// when z is (numerically) an eigenvalue.
pub fn ztrace(n: usize, a: &[f64], z: Complex) -> Result<Complex, String> {
    let w = 2 * n;
    let mut m = vec![(0.0, 0.0); n * w];
    for i in 0..n {
        for j in 0..n {
            m[i * w + j] = (-a[i * n + j], 0.0);
        }
        m[i * w + i].0 += z.0;
        m[i * w + i].1 += z.1;
        m[i * w + n + i] = (1.0, 0.0);
    }
    let abs = |c: Complex| c.0.hypot(c.1);
    for col in 0..n {
        let p = (col..n)
            .max_by(|&x, &y| abs(m[x * w + col]).total_cmp(&abs(m[y * w + col])))
            .expect("rows left");
        if abs(m[p * w + col]) < 1e-300 {
            return Err(format!("zI - A is singular at z = {}{:+}i", z.0, z.1));
        }
        if p != col {
            for j in 0..w {
                m.swap(p * w + j, col * w + j);
            }
        }
        let piv = m[col * w + col];
        for j in 0..w {
            m[col * w + j] = div(m[col * w + j], piv);
        }
        for r in 0..n {
            if r == col {
                continue;
            }
            let f = m[r * w + col];
            if f == (0.0, 0.0) {
                continue;
            }
            for j in 0..w {
                let t = mul(f, m[col * w + j]);
                m[r * w + j].0 -= t.0;
                m[r * w + j].1 -= t.1;
            }
        }
    }
    let mut t = (0.0, 0.0);
    for i in 0..n {
        t.0 += m[i * w + n + i].0;
        t.1 += m[i * w + n + i].1;
    }
    Ok(t)
}

/// Eigenvalues inside the circle (center `c`, radius `r`) of the matrix
/// whose resolvent traces `traces[j]` were taken at the `N` quadrature
/// points `c + r e^(2 pi i (j + 1/2) / N)`: the contour integrals
/// mu_k = (1/2 pi i) \oint ((z - c)/r)^k tr (zI - A)^-1 dz give the count
/// (mu_0) and the power sums of the scaled eigenvalues, whose polynomial's
/// roots (Durand-Kerner) are the eigenvalues. Good for a few eigenvalues
/// well inside the circle.
pub fn eigenvalues_inside(c: f64, r: f64, traces: &[Complex]) -> Result<Vec<f64>, String> {
    let n = traces.len();
    let point = |j: usize| {
        let th = 2.0 * std::f64::consts::PI * (j as f64 + 0.5) / n as f64;
        (th.cos(), th.sin())
    };
    // mu_k = sum_j (r e^{i th_j} / N) e^{i k th_j} tr_j / r^0, scaled.
    let moment = |k: usize| {
        let mut s = (0.0, 0.0);
        for (j, &t) in traces.iter().enumerate() {
            let e = point(j);
            let mut ek = (1.0, 0.0);
            for _ in 0..k {
                ek = mul(ek, e);
            }
            let term = mul(mul(e, ek), t);
            s.0 += term.0 * r / n as f64;
            s.1 += term.1 * r / n as f64;
        }
        s
    };
    let count = moment(0).0.round();
    if !(0.0..=8.0).contains(&count) {
        return Err(format!(
            "{count} eigenvalues inside: too many for this method"
        ));
    }
    let m = count as usize;
    // Power sums p_k of the scaled eigenvalues, then Newton's identities
    // for the polynomial's coefficients e_k.
    let p: Vec<f64> = (1..=m).map(|k| moment(k).0).collect();
    let mut e = vec![1.0];
    for k in 1..=m {
        let mut s = 0.0;
        for i in 1..=k {
            let sign = if i % 2 == 1 { 1.0 } else { -1.0 };
            s += sign * e[k - i] * p[i - 1];
        }
        e.push(s / k as f64);
    }
    // x^m - e1 x^(m-1) + e2 x^(m-2) - ... : Durand-Kerner on it.
    let coef: Vec<f64> = (0..=m)
        .map(|k| if k % 2 == 0 { e[k] } else { -e[k] })
        .collect();
    let eval = |x: Complex| {
        let mut v = (0.0, 0.0);
        for &a in &coef {
            v = mul(v, x);
            v.0 += a;
        }
        v
    };
    let mut roots: Vec<Complex> = (0..m)
        .map(|k| {
            let th = 0.4 + 2.0 * std::f64::consts::PI * k as f64 / m as f64;
            (0.9 * th.cos(), 0.9 * th.sin())
        })
        .collect();
    for _ in 0..500 {
        for i in 0..m {
            let mut den = (1.0, 0.0);
            for j in 0..m {
                if i != j {
                    den = mul(den, (roots[i].0 - roots[j].0, roots[i].1 - roots[j].1));
                }
            }
            let d = div(eval(roots[i]), den);
            roots[i].0 -= d.0;
            roots[i].1 -= d.1;
        }
    }
    let mut out: Vec<f64> = roots.iter().map(|z| c + r * z.0).collect();
    out.sort_by(f64::total_cmp);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contour_finds_the_laplacians_eigenvalues() {
        let n = 30;
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            a[i * n + i] = 2.0;
            if i + 1 < n {
                a[i * n + i + 1] = -1.0;
                a[(i + 1) * n + i] = -1.0;
            }
        }
        let exact: Vec<f64> = (1..=n)
            .map(|k| 2.0 - 2.0 * (k as f64 * std::f64::consts::PI / (n as f64 + 1.0)).cos())
            .collect();
        let (c, r) = (0.2, 0.13);
        let want: Vec<f64> = exact
            .iter()
            .copied()
            .filter(|l| (l - c).abs() < r)
            .collect();
        assert!(!want.is_empty());
        let points = 128;
        let traces: Vec<Complex> = (0..points)
            .map(|j| {
                let th = 2.0 * std::f64::consts::PI * (j as f64 + 0.5) / points as f64;
                ztrace(n, &a, (c + r * th.cos(), r * th.sin())).unwrap()
            })
            .collect();
        let got = eigenvalues_inside(c, r, &traces).unwrap();
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-8, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn a_product_is_a_product() {
        let mut c = vec![0.0; 4];
        mmul_add(2, &[1.0, 2.0, 3.0, 4.0], &[5.0, 6.0, 7.0, 8.0], &mut c);
        assert_eq!(c, [19.0, 22.0, 43.0, 50.0]);
    }
}
