//! A line chart of means with 95% confidence-interval error bars, one line per series, written
//! as SVG and PNG. The y axis turns logarithmic by itself when the data spans two decades or more.

use super::stats::MeanCi;
use super::{FONT_FAMILY, register_fonts};
use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// Chart size in pixels (the SVG uses the same units).
pub const CHART_SIZE: (u32, u32) = (900, 560);

/// Colours for series, in order (colour-blind-safe Okabe–Ito, then greys).
const SERIES_COLOURS: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(120, 120, 120),
    RGBColor(0, 0, 0),
];

/// One point: a position on the x axis and the summary of the runs there.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub x: f64,
    pub summary: MeanCi,
}

/// One line of the chart (e.g. one policy), named in the legend.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<Point>,
}

/// What the x axis shows.
#[derive(Debug, Clone, PartialEq)]
pub enum XAxis {
    /// Numeric values, drawn on a log scale when `log`.
    Numeric { log: bool },
    /// Named values at positions 0, 1, 2, ... (points' `x` are those positions).
    Categories(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_axis: XAxis,
    pub series: Vec<Series>,
}

/// Whether positive values spanning `min..=max` are better read on a log axis (two decades).
pub fn spans_decades(min: f64, max: f64) -> bool {
    min > 0.0 && max / min >= 100.0
}

impl LineChart {
    fn points(&self) -> impl Iterator<Item = &Point> {
        self.series.iter().flat_map(|series| series.points.iter())
    }

    /// Whether the y axis is logarithmic: every mean positive and the means span two decades.
    pub fn y_log(&self) -> bool {
        let means: Vec<f64> = self.points().map(|point| point.summary.mean).collect();
        let min = means.iter().copied().fold(f64::INFINITY, f64::min);
        let max = means.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        !means.is_empty() && spans_decades(min, max)
    }

    /// Writes `<stem>.svg` and `<stem>.png`; returns their paths.
    pub fn write(&self, stem: &Path) -> Result<Vec<PathBuf>, String> {
        register_fonts();
        // Appended, not `with_extension`: metric names contain dots ("p1.n100.rate") and
        // `with_extension` would cut their last part, making charts overwrite each other.
        let with = |extension: &str| {
            let mut name = stem.as_os_str().to_owned();
            name.push(".");
            name.push(extension);
            PathBuf::from(name)
        };
        let svg = with("svg");
        let png = with("png");
        self.draw(SVGBackend::new(&svg, CHART_SIZE).into_drawing_area())
            .map_err(|error| format!("{}: {error}", svg.display()))?;
        self.draw(BitMapBackend::new(&png, CHART_SIZE).into_drawing_area())
            .map_err(|error| format!("{}: {error}", png.display()))?;
        Ok(vec![svg, png])
    }

    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<(), String> {
        let (x_min, x_max) = self.x_range();
        let y_log = self.y_log();
        let (y_min, y_max) = self.y_range(y_log);
        let x_log = matches!(self.x_axis, XAxis::Numeric { log: true });
        match (x_log, y_log) {
            (false, false) => self.draw_in(&root, x_min..x_max, y_min..y_max),
            (true, false) => self.draw_in(&root, (x_min..x_max).log_scale(), y_min..y_max),
            (false, true) => self.draw_in(&root, x_min..x_max, (y_min..y_max).log_scale()),
            (true, true) => self.draw_in(
                &root,
                (x_min..x_max).log_scale(),
                (y_min..y_max).log_scale(),
            ),
        }?;
        root.present().map_err(|error| error.to_string())
    }

    fn x_range(&self) -> (f64, f64) {
        if let XAxis::Categories(names) = &self.x_axis {
            return (-0.5, names.len() as f64 - 0.5);
        }
        let xs: Vec<f64> = self.points().map(|point| point.x).collect();
        let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        pad_range(
            min,
            max,
            matches!(self.x_axis, XAxis::Numeric { log: true }),
        )
    }

    fn y_range(&self, log: bool) -> (f64, f64) {
        let mut min = f64::INFINITY;
        let mut max = f64::NEG_INFINITY;
        for point in self.points() {
            let low = point.summary.low();
            // On a log axis an interval reaching zero or below is cut at the smallest mean.
            if !log || low > 0.0 {
                min = min.min(low);
            }
            min = min.min(point.summary.mean);
            max = max.max(point.summary.high());
        }
        pad_range(min, max, log)
    }

    fn draw_in<DB, X, Y>(&self, root: &DrawingArea<DB, Shift>, x: X, y: Y) -> Result<(), String>
    where
        DB: DrawingBackend,
        X: AsRangedCoord<Value = f64>,
        Y: AsRangedCoord<Value = f64>,
        X::CoordDescType: ValueFormatter<f64>,
        Y::CoordDescType: ValueFormatter<f64>,
    {
        let error = |error: DrawingAreaErrorKind<DB::ErrorType>| error.to_string();
        root.fill(&WHITE).map_err(error)?;
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FONT_FAMILY, 22))
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(x, y)
            .map_err(error)?;
        let categories = match &self.x_axis {
            XAxis::Categories(names) => Some(names.clone()),
            XAxis::Numeric { .. } => None,
        };
        let category_label = |value: &f64| -> String {
            let position = value.round();
            match &categories {
                Some(names) if (value - position).abs() < 1e-6 && position >= 0.0 => {
                    names.get(position as usize).cloned().unwrap_or_default()
                }
                Some(_) => String::new(),
                None => format_number(*value),
            }
        };
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .label_style((FONT_FAMILY, 14))
            .axis_desc_style((FONT_FAMILY, 16))
            .y_label_formatter(&|value| format_number(*value))
            .light_line_style(WHITE.mix(0.0));
        if let Some(names) = &categories {
            mesh.x_labels(names.len() * 2 + 1);
        }
        mesh.x_label_formatter(&category_label)
            .draw()
            .map_err(error)?;

        let series_count = self.series.len();
        for (index, series) in self.series.iter().enumerate() {
            let colour = SERIES_COLOURS[index % SERIES_COLOURS.len()];
            // Side by side on a category axis, so error bars of different series do not overlap.
            let offset = if categories.is_some() && series_count > 1 {
                (index as f64 - (series_count - 1) as f64 / 2.0) * (0.3 / series_count as f64)
            } else {
                0.0
            };
            let points: Vec<(f64, &MeanCi)> = series
                .points
                .iter()
                .map(|point| (point.x + offset, &point.summary))
                .collect();
            let line = chart
                .draw_series(LineSeries::new(
                    points.iter().map(|(x, summary)| (*x, summary.mean)),
                    colour.stroke_width(2),
                ))
                .map_err(error)?;
            if !series.name.is_empty() {
                line.label(&series.name).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
            }
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|(x, summary)| Circle::new((*x, summary.mean), 3, colour.filled())),
                )
                .map_err(error)?;
            for (x, summary) in &points {
                if summary.half_width <= 0.0 {
                    continue;
                }
                let (low, high) = (summary.low(), summary.high());
                let style = colour.stroke_width(1);
                let cap = |value: f64| {
                    EmptyElement::at((*x, value)) + PathElement::new(vec![(-5, 0), (5, 0)], style)
                };
                chart
                    .draw_series([PathElement::new(vec![(*x, low), (*x, high)], style)])
                    .map_err(error)?;
                chart.draw_series([cap(low), cap(high)]).map_err(error)?;
            }
        }
        if self.series.iter().any(|series| !series.name.is_empty()) {
            chart
                .configure_series_labels()
                .label_font((FONT_FAMILY, 14))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(error)?;
        }
        Ok(())
    }
}

/// Widens a range so points do not sit on the frame, and a single value still has a span.
fn pad_range(min: f64, max: f64, log: bool) -> (f64, f64) {
    if !min.is_finite() || !max.is_finite() {
        return if log { (1.0, 10.0) } else { (0.0, 1.0) };
    }
    if log {
        let min = if min > 0.0 { min } else { max.max(1.0) / 10.0 };
        return (min / 1.5, max.max(min) * 1.5);
    }
    if max - min <= f64::EPSILON * max.abs().max(1.0) {
        let pad = (min.abs() * 0.1).max(1.0);
        return (min - pad, max + pad);
    }
    let pad = (max - min) * 0.05;
    (min - pad, max + pad)
}

/// Axis numbers: no trailing noise (`0.30000000000000004` → `0.3`), thousands as `12k`,
/// tiny and huge values in scientific notation.
pub fn format_number(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude == 0.0 {
        return "0".into();
    }
    if !(1e-3..1e7).contains(&magnitude) {
        return format!("{value:.1e}");
    }
    if magnitude >= 1e4 && (value / 1e3).fract().abs() < 1e-9 {
        return format!("{}k", value / 1e3);
    }
    let text = format!("{value:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_short() {
        assert_eq!(format_number(0.30000000000000004), "0.3");
        assert_eq!(format_number(12000.0), "12k");
        assert_eq!(format_number(2.5), "2.5");
        assert_eq!(format_number(100.0), "100");
        assert_eq!(format_number(3e-7), "3.0e-7");
        assert_eq!(format_number(0.0), "0");
    }

    #[test]
    fn log_axis_only_for_positive_data_spanning_decades() {
        assert!(spans_decades(1.0, 100.0));
        assert!(!spans_decades(1.0, 99.0));
        assert!(!spans_decades(0.0, 1e6));
        assert_eq!(pad_range(5.0, 5.0, false), (4.0, 6.0));
        let (low, high) = pad_range(1.0, 1000.0, true);
        assert!(low > 0.0 && low < 1.0 && high > 1000.0);
    }
}
