//! Means and 95% confidence intervals across seeds.

/// Two-sided 95% quantiles of Student's t for 1..=30 degrees of freedom (the printed tables;
/// the expansion below is poor for the first few).
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

/// The 0.975 quantile of Student's t with `degrees_of_freedom` (at least 1). Above 30 it is
/// the Cornish–Fisher expansion about the normal quantile (Abramowitz & Stegun 26.7.5), exact
/// to 1e-6 there; the normal value 1.96 alone would make a 31-seed interval 4% too narrow.
fn t_975(degrees_of_freedom: usize) -> f64 {
    if let Some(&tabled) = T_975.get(degrees_of_freedom.wrapping_sub(1)) {
        return tabled;
    }
    const Z: f64 = 1.959_963_984_540_054;
    let nu = degrees_of_freedom as f64;
    let g1 = (Z.powi(3) + Z) / 4.0;
    let g2 = (5.0 * Z.powi(5) + 16.0 * Z.powi(3) + 3.0 * Z) / 96.0;
    let g3 = (3.0 * Z.powi(7) + 19.0 * Z.powi(5) + 17.0 * Z.powi(3) - 15.0 * Z) / 384.0;
    let g4 = (79.0 * Z.powi(9) + 776.0 * Z.powi(7) + 1482.0 * Z.powi(5)
        - 1920.0 * Z.powi(3)
        - 945.0 * Z)
        / 92160.0;
    Z + g1 / nu + g2 / nu.powi(2) + g3 / nu.powi(3) + g4 / nu.powi(4)
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
        let t = t_975(count - 1);
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
        assert!((large.half_width - 1.984_217 * standard_error).abs() < 1e-6 * standard_error);
    }

    #[test]
    fn quantile_above_the_table_matches_published_values() {
        // t(0.975, ν) from R's qt(0.975, ν).
        for (nu, published) in [
            (31, 2.039_513),
            (40, 2.021_075),
            (60, 2.000_298),
            (120, 1.979_930),
        ] {
            assert!(
                (t_975(nu) - published).abs() < 2e-6,
                "ν = {nu}: {}",
                t_975(nu)
            );
        }
        // The expansion and the table agree where they meet.
        assert!((t_975(31) - T_975[29]).abs() < 0.003);
        assert!(t_975(10_000) > 1.96 && t_975(10_000) < 1.9603);
    }
}
