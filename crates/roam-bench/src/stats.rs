//! Order statistics of repeated measurements.

use serde::Serialize;

/// The summary of one series of measurements.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub p90: f64,
    pub min: f64,
    pub max: f64,
    pub samples: Vec<f64>,
}

impl Summary {
    /// Summarises `samples`, kept in their order (NaN figures if none).
    pub fn of(samples: &[f64]) -> Summary {
        let mut s = samples.to_vec();
        if s.is_empty() {
            s.push(f64::NAN);
        }
        s.sort_by(f64::total_cmp);
        Summary {
            n: samples.len(),
            median: quantile(&s, 0.5),
            p90: quantile(&s, 0.9),
            min: s[0],
            max: s[s.len() - 1],
            samples: samples.to_vec(),
        }
    }
}

/// The `q` quantile of sorted `s`, interpolated linearly between ranks.
fn quantile(s: &[f64], q: f64) -> f64 {
    let pos = q * (s.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<f64> {
        v.iter().map(|m| *m as f64 / 1000.0).collect()
    }

    #[test]
    fn median_and_p90() {
        let s = Summary::of(&ms(&[5, 1, 4, 2, 3]));
        assert_eq!((s.n, s.median, s.min, s.max), (5, 0.003, 0.001, 0.005));
        assert!((s.p90 - 0.0046).abs() < 1e-12);
        let even = Summary::of(&ms(&[1, 2, 3, 4]));
        assert!((even.median - 0.0025).abs() < 1e-12);
        let one = Summary::of(&ms(&[7]));
        assert_eq!((one.median, one.p90), (0.007, 0.007));
        let none = Summary::of(&[]);
        assert!(none.n == 0 && none.median.is_nan());
    }
}
