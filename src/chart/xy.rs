//! A plain x–y chart for the key-level research questions: one line per series (a step line for
//! CDFs), optional horizontal reference lines (a budget), linear or log axes, SVG and PNG written
//! atomically. Used by the RQ2 containment CDF, the RQ6 link-hours chart and the RQ12 wake-up
//! chart.

use std::path::Path;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

use super::line::format_number;
use super::{ChartError, FONT_FAMILY, register_fonts};

/// Chart size in pixels.
pub const XY_SIZE: (u32, u32) = (1100, 700);

const COLOURS: [RGBColor; 10] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(120, 120, 120),
    RGBColor(0, 0, 0),
    RGBColor(170, 60, 60),
    RGBColor(90, 60, 170),
];

/// One series.
#[derive(Debug, Clone, PartialEq)]
pub struct XyLine {
    pub label: String,
    /// Points in x order.
    pub points: Vec<(f64, f64)>,
    /// Draw as a step function (a CDF): horizontal then vertical.
    pub step: bool,
    /// Dashed (a variant of another line, e.g. partitioned observers).
    pub dashed: bool,
    /// Index into the palette (variants share their base line's colour).
    pub colour: usize,
}

/// The chart.
#[derive(Debug, Clone, PartialEq)]
pub struct XyChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_log: bool,
    pub y_log: bool,
    pub lines: Vec<XyLine>,
    /// Horizontal reference lines: (label, y).
    pub reference_lines: Vec<(String, f64)>,
    /// Fixed y range (e.g. 0–100 % for a CDF); otherwise from the data.
    pub y_range: Option<(f64, f64)>,
}

impl XyChart {
    fn range(&self, axis: usize, log: bool) -> (f64, f64) {
        let mut values: Vec<f64> = self
            .lines
            .iter()
            .flat_map(|line| line.points.iter())
            .map(|point| if axis == 0 { point.0 } else { point.1 })
            .filter(|value| value.is_finite() && (!log || *value > 0.0))
            .collect();
        if axis == 1 {
            values.extend(self.reference_lines.iter().map(|(_, y)| *y));
        }
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if !min.is_finite() {
            return if log { (1.0, 10.0) } else { (0.0, 1.0) };
        }
        if log {
            (min / 1.6, max * 1.6)
        } else if max - min < 1e-12 {
            (min - 1.0, max + 1.0)
        } else {
            let pad = (max - min) * 0.05;
            (
                (min - pad).min(if min >= 0.0 { 0.0 } else { min }),
                max + pad,
            )
        }
    }

    /// Writes `svg_path` and `png_path` (each through a temporary file, then renamed).
    pub fn write(&self, svg_path: &Path, png_path: &Path) -> Result<(), ChartError> {
        register_fonts();
        let error = |path: &Path, message: String| ChartError {
            path: path.display().to_string(),
            message,
        };
        let mut svg = String::new();
        {
            let backend = SVGBackend::with_string(&mut svg, XY_SIZE);
            self.draw(backend.into_drawing_area())
                .map_err(|message| error(svg_path, message))?;
        }
        crate::metrics::write_atomic(svg_path, svg.as_bytes())
            .map_err(|io| error(svg_path, io.to_string()))?;
        let temporary = png_path.with_extension("tmp.png");
        {
            let backend = BitMapBackend::new(&temporary, XY_SIZE);
            self.draw(backend.into_drawing_area())
                .map_err(|message| error(png_path, message))?;
        }
        std::fs::rename(&temporary, png_path).map_err(|io| error(png_path, io.to_string()))
    }

    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<(), String> {
        let (x_min, x_max) = self.range(0, self.x_log);
        let (y_min, y_max) = self.y_range.unwrap_or_else(|| self.range(1, self.y_log));
        match (self.x_log, self.y_log) {
            (false, false) => self.draw_in(&root, x_min..x_max, y_min..y_max, (x_min, x_max)),
            (true, false) => self.draw_in(
                &root,
                (x_min..x_max).log_scale(),
                y_min..y_max,
                (x_min, x_max),
            ),
            (false, true) => self.draw_in(
                &root,
                x_min..x_max,
                (y_min..y_max).log_scale(),
                (x_min, x_max),
            ),
            (true, true) => self.draw_in(
                &root,
                (x_min..x_max).log_scale(),
                (y_min..y_max).log_scale(),
                (x_min, x_max),
            ),
        }?;
        root.present().map_err(|error| error.to_string())
    }

    fn draw_in<DB, X, Y>(
        &self,
        root: &DrawingArea<DB, Shift>,
        x: X,
        y: Y,
        (x_min, x_max): (f64, f64),
    ) -> Result<(), String>
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
            .caption(&self.title, (FONT_FAMILY, 20))
            .margin(16)
            .x_label_area_size(55)
            .y_label_area_size(85)
            .build_cartesian_2d(x, y)
            .map_err(error)?;
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .label_style((FONT_FAMILY, 14))
            .axis_desc_style((FONT_FAMILY, 16))
            .x_label_formatter(&|value| format_number(*value))
            .y_label_formatter(&|value| format_number(*value))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(error)?;
        for line in &self.lines {
            let colour = COLOURS[line.colour % COLOURS.len()];
            let points: Vec<(f64, f64)> = line
                .points
                .iter()
                .copied()
                .filter(|(x, y)| {
                    (!self.x_log || *x > 0.0) && (!self.y_log || *y > 0.0) && x.is_finite()
                })
                .collect();
            let drawn: Vec<(f64, f64)> = if line.step {
                let mut stepped = Vec::new();
                for (index, point) in points.iter().enumerate() {
                    if index > 0 {
                        stepped.push((point.0, points[index - 1].1));
                    }
                    stepped.push(*point);
                }
                stepped
            } else {
                points.clone()
            };
            let style = colour.stroke_width(if line.dashed { 2 } else { 3 });
            let legend_style = style;
            let dashed = line.dashed;
            let element = if line.dashed {
                chart
                    .draw_series(DashedLineSeries::new(drawn, 8, 5, style))
                    .map_err(error)?
            } else {
                chart
                    .draw_series(LineSeries::new(drawn, style))
                    .map_err(error)?
            };
            element.label(&line.label).legend(move |(x, y)| {
                if dashed {
                    PathElement::new(vec![(x, y), (x + 8, y)], legend_style)
                } else {
                    PathElement::new(vec![(x, y), (x + 20, y)], legend_style)
                }
            });
            if !line.step && !line.dashed {
                chart
                    .draw_series(
                        points
                            .iter()
                            .map(|point| Circle::new(*point, 3, colour.filled())),
                    )
                    .map_err(error)?;
            }
        }
        for (label, y_value) in &self.reference_lines {
            let style = RGBColor(200, 0, 0).stroke_width(2);
            chart
                .draw_series(DashedLineSeries::new(
                    [(x_min, *y_value), (x_max, *y_value)],
                    4,
                    4,
                    style,
                ))
                .map_err(error)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
        chart
            .configure_series_labels()
            .label_font((FONT_FAMILY, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(error)?;
        Ok(())
    }
}

/// The points of an empirical CDF in percent: for each known value in order, the share of all
/// samples (including the unknown ones, which never arrive) at or below it; starts at
/// (`x_floor`, share already at or below the floor).
pub fn cdf_points(values: &[Option<f64>], x_floor: f64) -> Vec<(f64, f64)> {
    let total = values.len() as f64;
    if total == 0.0 {
        return Vec::new();
    }
    let mut known: Vec<f64> = values.iter().flatten().map(|v| v.max(x_floor)).collect();
    known.sort_by(f64::total_cmp);
    let mut points = vec![(x_floor, 0.0)];
    for (index, value) in known.iter().enumerate() {
        let share = 100.0 * (index + 1) as f64 / total;
        if points.len() > 1
            && let Some(last) = points.last_mut()
            && last.0 == *value
        {
            last.1 = share;
            continue;
        }
        points.push((*value, share));
    }
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdf_counts_unknown_values_in_the_total() {
        let points = cdf_points(&[Some(2.0), None, Some(0.0), Some(2.0)], 1.0);
        assert_eq!(points, vec![(1.0, 0.0), (1.0, 25.0), (2.0, 75.0)]);
    }

    #[test]
    fn draws_both_files_with_labels() {
        let directory = std::env::temp_dir().join(format!("fedsim-xy-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let chart = XyChart {
            title: "t".into(),
            x_label: "hours after t0 (h)".into(),
            y_label: "share (%)".into(),
            x_log: true,
            y_log: false,
            lines: vec![XyLine {
                label: "P1".into(),
                points: cdf_points(&[Some(0.5), Some(3.0)], 0.01),
                step: true,
                dashed: false,
                colour: 0,
            }],
            reference_lines: vec![("budget".into(), 50.0)],
            y_range: Some((0.0, 100.0)),
        };
        let (svg, png) = (directory.join("a.svg"), directory.join("a.png"));
        chart.write(&svg, &png).unwrap();
        assert!(
            std::fs::read_to_string(&svg)
                .unwrap()
                .contains("hours after t0")
        );
        assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
        std::fs::remove_dir_all(directory).unwrap();
    }
}
