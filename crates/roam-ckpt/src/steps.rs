//! The time each step of a capture or a restore took, for the logs: where
//! a migration's frozen milliseconds go.

use std::time::{Duration, Instant};

/// Marks taken at the end of each step.
#[derive(Debug, Clone)]
pub struct Steps {
    marks: Vec<(&'static str, Instant)>,
}

impl Steps {
    /// Steps timed from `start`.
    pub fn since(start: Instant) -> Steps {
        Steps {
            marks: vec![("", start)],
        }
    }

    /// Notes the end of `step` (begun at the previous mark).
    pub fn mark(&mut self, step: &'static str) {
        self.marks.push((step, Instant::now()));
    }

    /// Each step with its length, in order.
    pub fn lengths(&self) -> Vec<(&'static str, Duration)> {
        self.marks
            .windows(2)
            .map(|w| (w[1].0, w[1].1 - w[0].1))
            .collect()
    }
}

/// `steps` as "name 0.12, name 0.34" (milliseconds), for a log line.
pub fn describe(steps: &[(&'static str, Duration)]) -> String {
    steps
        .iter()
        .map(|(step, d)| format!("{step} {:.2}", d.as_secs_f64() * 1e3))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_follow_the_marks() {
        let t0 = Instant::now();
        let mut s = Steps::since(t0);
        s.mark("one");
        s.mark("two");
        let l = s.lengths();
        assert_eq!(
            l.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            ["one", "two"]
        );
        let total: Duration = l.iter().map(|(_, d)| *d).sum();
        assert!(total <= t0.elapsed());
        assert_eq!(
            describe(&[("a", Duration::from_micros(1500)), ("b", Duration::ZERO)]),
            "a 1.50, b 0.00"
        );
    }
}
