//! Charts (SVG and PNG) drawn with plotters and an embedded font.
//!
//! plotters is built without system-font support; DejaVu Sans (assets/, Bitstream Vera licence,
//! redistributable) is compiled in and registered as "sans-serif", so a chart renders the same
//! on any machine, including ones without fonts installed.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

const DEJAVU_SANS: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// RQ4's bitrot chart (rq branch): shares of a newcomer's history verifiable and visible
/// against room age, per policy.
pub mod bitrot;
/// Key-level research-question charts (keyrq branch): containment CDFs of a sweep pooled over
/// seeds, and a plain x-y chart with step lines.
pub mod containment_cdf;
/// RQ5's heat map of pairwise divergence and orphan-reply shares (rq branch).
pub mod heatmap;
/// Sweep charts (added by the sweep branch): a generic line chart of means with 95% CIs, and
/// the charts of a sweep directory that `fedsim plot DIR` draws from `runs.csv`.
pub mod line;
pub mod stats;
pub mod sweep_charts;
pub mod xy;

/// The font family name the embedded font is registered under.
pub const FONT_FAMILY: &str = "sans-serif";

/// Makes the embedded font available to plotters; idempotent. For charts drawn in submodules.
pub fn register_fonts() {
    register_font();
}

fn register_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, DEJAVU_SANS)
            .unwrap_or_else(|_| panic!("the embedded DejaVu Sans font is valid"));
    });
}

/// One measured line: (known domains, requests per second) points.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub mean_points: Vec<(f64, f64)>,
    pub p99_points: Vec<(f64, f64)>,
}

/// The RQ1 chart's data.
#[derive(Debug, Clone)]
pub struct PollingLoadChart {
    pub title: String,
    pub series: Vec<Series>,
    /// Analytic N/L lines: (label, lifetime in seconds).
    pub analytic: Vec<(String, f64)>,
}

/// Chart errors (drawing or file writing).
#[derive(Debug, thiserror::Error)]
#[error("chart {path}: {message}")]
pub struct ChartError {
    pub path: String,
    pub message: String,
}

const WIDTH: u32 = 1280;
const HEIGHT: u32 = 820;

/// Draws the RQ1 chart to `svg_path` and `png_path` (each written through a temporary file
/// then renamed).
pub fn draw_polling_load(
    chart: &PollingLoadChart,
    svg_path: &Path,
    png_path: &Path,
) -> Result<(), ChartError> {
    register_font();
    let error = |path: &Path, message: String| ChartError {
        path: path.display().to_string(),
        message,
    };
    let mut svg = String::new();
    {
        let backend = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT));
        draw(chart, backend.into_drawing_area()).map_err(|message| error(svg_path, message))?;
    }
    crate::metrics::write_atomic(svg_path, svg.as_bytes())
        .map_err(|io| error(svg_path, io.to_string()))?;
    // The bitmap backend writes the file itself: draw into a temporary name, then rename.
    let temporary = png_path.with_extension("tmp.png");
    {
        let backend = BitMapBackend::new(&temporary, (WIDTH, HEIGHT));
        draw(chart, backend.into_drawing_area()).map_err(|message| error(png_path, message))?;
    }
    std::fs::rename(&temporary, png_path).map_err(|io| error(png_path, io.to_string()))?;
    Ok(())
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

fn draw<DB: DrawingBackend>(
    chart: &PollingLoadChart,
    area: DrawingArea<DB, plotters::coord::Shift>,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let to_string = |error: DrawingAreaErrorKind<DB::ErrorType>| error.to_string();
    area.fill(&WHITE).map_err(to_string)?;
    let all_points = chart
        .series
        .iter()
        .flat_map(|series| series.mean_points.iter().chain(series.p99_points.iter()));
    let (mut x_min, mut x_max, mut y_min, mut y_max) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in all_points {
        // Log axes: a zero (or negative) value has no place on them, and a range that
        // reaches zero never ends drawing its ticks.
        if *y > 0.0 {
            y_min = y_min.min(*y);
            y_max = y_max.max(*y);
        }
        if *x > 0.0 {
            x_min = x_min.min(*x);
            x_max = x_max.max(*x);
        }
    }
    if x_min > x_max {
        (x_min, x_max) = (1.0, 10.0);
    }
    if y_min > y_max {
        (y_min, y_max) = (1e-4, 1.0);
    }
    for (_, lifetime_s) in &chart.analytic {
        y_min = y_min.min(x_min / lifetime_s);
        y_max = y_max.max(x_max / lifetime_s);
    }
    let x_range = (x_min / 1.3)..(x_max * 1.3);
    let y_range = (y_min / 2.0)..(y_max * 3.0);
    let mut context = ChartBuilder::on(&area)
        .caption(&chart.title, ("sans-serif", 24))
        .margin(20)
        .x_label_area_size(60)
        .y_label_area_size(90)
        .build_cartesian_2d(x_range.log_scale(), y_range.log_scale())
        .map_err(to_string)?;
    context
        .configure_mesh()
        .x_desc("known remote domains N")
        .y_desc("outbound key requests per second (req/s)")
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .x_label_formatter(&|value| format!("{value:.0}"))
        .y_label_formatter(&|value| format!("{value:.0e}"))
        .draw()
        .map_err(to_string)?;
    for (index, series) in chart.series.iter().enumerate() {
        let color = PALETTE[index % PALETTE.len()];
        context
            .draw_series(LineSeries::new(
                series.mean_points.iter().copied(),
                color.stroke_width(3),
            ))
            .map_err(to_string)?
            .label(format!("{} (mean)", series.label))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
        context
            .draw_series(
                series
                    .mean_points
                    .iter()
                    .map(|point| Circle::new(*point, 4, color.filled())),
            )
            .map_err(to_string)?;
        let p99: Vec<(f64, f64)> = series
            .p99_points
            .iter()
            .copied()
            .filter(|(_, y)| *y > 0.0)
            .collect();
        if !p99.is_empty() {
            context
                .draw_series(DashedLineSeries::new(
                    p99.iter().copied(),
                    6,
                    4,
                    color.stroke_width(1),
                ))
                .map_err(to_string)?;
            context
                .draw_series(
                    p99.iter()
                        .map(|point| TriangleMarker::new(*point, 5, color)),
                )
                .map_err(to_string)?;
        }
    }
    for (index, (label, lifetime_s)) in chart.analytic.iter().enumerate() {
        let gray = if index % 2 == 0 {
            BLACK
        } else {
            RGBColor(100, 100, 100)
        };
        let points = [(x_min, x_min / lifetime_s), (x_max, x_max / lifetime_s)];
        context
            .draw_series(DashedLineSeries::new(points, 3, 5, gray.stroke_width(2)))
            .map_err(to_string)?
            .label(label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], gray.stroke_width(2))
            });
    }
    context
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(to_string)?;
    area.present().map_err(to_string)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_an_svg_and_a_png_with_text() {
        let directory =
            std::env::temp_dir().join(format!("fedsim-chart-test-{}", std::process::id()));
        let chart = PollingLoadChart {
            title: "test".into(),
            series: vec![Series {
                label: "P1".into(),
                mean_points: vec![(100.0, 0.001), (1000.0, 0.01)],
                p99_points: vec![(100.0, 0.0), (1000.0, 0.0333)],
            }],
            analytic: vec![("N/L, L=1d".into(), 86_400.0)],
        };
        let svg = directory.join("c.svg");
        let png = directory.join("c.png");
        draw_polling_load(&chart, &svg, &png).unwrap();
        let svg_text = std::fs::read_to_string(&svg).unwrap();
        assert!(svg_text.contains("known remote domains N"));
        assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
        std::fs::remove_dir_all(directory).unwrap();
    }
}
