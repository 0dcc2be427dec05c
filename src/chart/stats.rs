//! Means and 95% confidence intervals across seeds.

/// Two-sided 95% quantiles of Student's t for 1..=30 degrees of freedom; beyond 30 the normal
/// value 1.96 is within 2% and is used instead.
const T_975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// The mean of a sample and the half-width of its 95% confidence interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeanCi {
    pub mean: f64,
    /// `t(0.975, n-1) · s / √n`; 0 for a single value (no spread can be estimated).
    pub half_width: f64,
    pub count: usize,
}

impl MeanCi {
    /// Summarises `values` (summed in the order given, so the result is reproducible).
    /// `None` for an empty sample.
    pub fn of(values: &[f64]) -> Option<MeanCi> {
        let count = values.len();
        if count == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / count as f64;
        if count == 1 {
            return Some(MeanCi {
                mean,
                half_width: 0.0,
                count,
            });
        }
        let variance = values
            .iter()
            .map(|value| (value - mean).powi(2))
            .sum::<f64>()
            / (count - 1) as f64;
        let t = T_975.get(count - 2).copied().unwrap_or(1.96);
        Some(MeanCi {
            mean,
            half_width: t * variance.sqrt() / (count as f64).sqrt(),
            count,
        })
    }

    pub fn low(&self) -> f64 {
        self.mean - self.half_width
    }

    pub fn high(&self) -> f64 {
        self.mean + self.half_width
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_uses_student_t_for_small_samples() {
        let summary = MeanCi::of(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!(summary.mean, 2.0);
        assert!((summary.half_width - 4.303 / 3f64.sqrt()).abs() < 1e-12);
        let single = MeanCi::of(&[5.0]).unwrap();
        assert_eq!((single.low(), single.high()), (5.0, 5.0));
        assert!(MeanCi::of(&[]).is_none());
        let many: Vec<f64> = (0..100).map(f64::from).collect();
        let large = MeanCi::of(&many).unwrap();
        let standard_error =
            (many.iter().map(|v| (v - 49.5).powi(2)).sum::<f64>() / 99.0).sqrt() / 10.0;
        assert!((large.half_width - 1.96 * standard_error).abs() < 1e-9);
    }
}
