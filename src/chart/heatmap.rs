//! RQ5's chart: a heat map of the pairwise client-visible divergence between servers (left)
//! and, per server, the share of the visible replies whose target it does not show (right).

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{ChartError, FONT_FAMILY, register_fonts};

/// Chart size in pixels.
pub const HEATMAP_SIZE: (u32, u32) = (1300, 720);

/// The data of the chart.
#[derive(Debug, Clone, PartialEq)]
pub struct DivergenceHeatMap {
    pub title: String,
    /// Server names, rows and columns in this order.
    pub servers: Vec<String>,
    /// `cells[i][j]`: divergence in [0, 1] (mean over the rooms both joined), `None` when they
    /// share no room.
    pub cells: Vec<Vec<Option<f64>>>,
    /// Per server (same order): the orphan-reply share in [0, 1], `None` without visible
    /// replies.
    pub orphan_reply_shares: Vec<Option<f64>>,
}

/// White (0) to dark red (the largest value, at least 1%).
fn colour(value: f64, max: f64) -> RGBColor {
    let t = (value / max).clamp(0.0, 1.0);
    let mix = |from: f64, to: f64| (from + (to - from) * t).round() as u8;
    RGBColor(mix(255.0, 165.0), mix(255.0, 15.0), mix(255.0, 21.0))
}

impl DivergenceHeatMap {
    /// Writes `svg_path` and `png_path` (each through a temporary file, then renamed).
    pub fn write(&self, svg_path: &Path, png_path: &Path) -> Result<(), ChartError> {
        register_fonts();
        let error = |path: &Path, message: String| ChartError {
            path: path.display().to_string(),
            message,
        };
        let mut svg = String::new();
        {
            let backend = SVGBackend::with_string(&mut svg, HEATMAP_SIZE);
            self.draw(backend.into_drawing_area())
                .map_err(|message| error(svg_path, message))?;
        }
        crate::metrics::write_atomic(svg_path, svg.as_bytes())
            .map_err(|io| error(svg_path, io.to_string()))?;
        let temporary = png_path.with_extension("tmp.png");
        {
            let backend = BitMapBackend::new(&temporary, HEATMAP_SIZE);
            self.draw(backend.into_drawing_area())
                .map_err(|message| error(png_path, message))?;
        }
        std::fs::rename(&temporary, png_path).map_err(|io| error(png_path, io.to_string()))
    }

    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<(), String> {
        let text = |error: DrawingAreaErrorKind<DB::ErrorType>| error.to_string();
        root.fill(&WHITE).map_err(text)?;
        let root = root.titled(&self.title, (FONT_FAMILY, 24)).map_err(text)?;
        let (left, right) = root.split_horizontally(HEATMAP_SIZE.0 * 62 / 100);
        let count = self.servers.len().max(1);
        let max = self
            .cells
            .iter()
            .flatten()
            .flatten()
            .copied()
            .fold(0.01, f64::max);
        let label_of = |segment: &SegmentValue<usize>| match segment {
            SegmentValue::CenterOf(index) => self
                .servers
                .get(*index)
                .map(|name| name.trim_end_matches(".example").to_owned())
                .unwrap_or_default(),
            _ => String::new(),
        };
        let mut heat = ChartBuilder::on(&left)
            .margin(15)
            .x_label_area_size(70)
            .y_label_area_size(80)
            .caption(
                format!(
                    "pairwise divergence |Vi Δ Vj| / |Vi ∪ Vj| (%), darkest = {:.1}%",
                    max * 100.0
                ),
                (FONT_FAMILY, 17),
            )
            .build_cartesian_2d(
                (0..count - 1).into_segmented(),
                (0..count - 1).into_segmented(),
            )
            .map_err(text)?;
        heat.configure_mesh()
            .disable_mesh()
            .x_labels(count)
            .y_labels(count)
            .x_label_formatter(&label_of)
            .y_label_formatter(&label_of)
            .x_desc("server")
            .y_desc("server")
            .label_style((FONT_FAMILY, 13))
            .axis_desc_style((FONT_FAMILY, 16))
            .draw()
            .map_err(text)?;
        let mut rectangles = Vec::new();
        for (row, cells) in self.cells.iter().enumerate() {
            for (column, cell) in cells.iter().enumerate() {
                let fill = match cell {
                    Some(value) => colour(*value, max).filled(),
                    None => RGBColor(200, 200, 200).filled(),
                };
                rectangles.push(Rectangle::new(
                    [
                        (SegmentValue::Exact(column), SegmentValue::Exact(row)),
                        (
                            SegmentValue::Exact(column + 1),
                            SegmentValue::Exact(row + 1),
                        ),
                    ],
                    fill,
                ));
            }
        }
        heat.draw_series(rectangles).map_err(text)?;
        let bars: Vec<(usize, f64)> = self
            .orphan_reply_shares
            .iter()
            .enumerate()
            .filter_map(|(index, share)| share.map(|share| (index, share * 100.0)))
            .collect();
        let bar_max = bars
            .iter()
            .map(|(_, value)| *value)
            .fold(1.0, f64::max)
            .min(100.0)
            * 1.1;
        let mut orphans = ChartBuilder::on(&right)
            .margin(15)
            .x_label_area_size(70)
            .y_label_area_size(80)
            .caption(
                "visible replies to a message not shown (%)",
                (FONT_FAMILY, 17),
            )
            .build_cartesian_2d(0.0..bar_max, (0..count - 1).into_segmented())
            .map_err(text)?;
        orphans
            .configure_mesh()
            .y_labels(count)
            .y_label_formatter(&label_of)
            .x_desc("orphan-reply share (%)")
            .label_style((FONT_FAMILY, 13))
            .axis_desc_style((FONT_FAMILY, 16))
            .draw()
            .map_err(text)?;
        orphans
            .draw_series(bars.iter().map(|(index, value)| {
                Rectangle::new(
                    [
                        (0.0, SegmentValue::Exact(*index)),
                        (*value, SegmentValue::Exact(index + 1)),
                    ],
                    RGBColor(0, 114, 178).filled(),
                )
            }))
            .map_err(text)?;
        root.present().map_err(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_an_svg_with_the_server_names_and_a_png() {
        let dir = std::env::temp_dir().join(format!("fedsim-heatmap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let chart = DivergenceHeatMap {
            title: "t".into(),
            servers: vec!["hs0.example".into(), "hs1.example".into()],
            cells: vec![vec![Some(0.0), Some(0.2)], vec![Some(0.2), None]],
            orphan_reply_shares: vec![Some(0.5), None],
        };
        chart.write(&dir.join("d.svg"), &dir.join("d.png")).unwrap();
        let svg = std::fs::read_to_string(dir.join("d.svg")).unwrap();
        assert!(svg.contains("hs1") && svg.contains("darkest = 20.0%"));
        assert!(
            std::fs::read(dir.join("d.png"))
                .unwrap()
                .starts_with(b"\x89PNG")
        );
        assert_eq!(colour(0.0, 0.2), RGBColor(255, 255, 255));
        assert_eq!(colour(0.2, 0.2), RGBColor(165, 15, 21));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
