//! Charts drawn with plotters, as SVG and PNG, from data already computed (never from a run in
//! progress), so `fedsim plot DIR` can redraw them from CSV files alone.
//!
//! - [`stats`]: means with 95% confidence intervals across seeds.
//! - [`line`]: a line chart of means with CI bands, one line per series, linear or log axes.
//! - [`sweep_charts`]: one chart per headline metric of a sweep directory (`runs.csv`).
//!
//! Text is rendered with DejaVu Sans embedded in the binary (assets/), because the PNG backend
//! draws glyphs itself and a CI machine may have no system fonts.

pub mod line;
pub mod stats;
pub mod sweep_charts;

use std::sync::Once;

/// The font family name charts use; registered by [`register_fonts`].
pub const FONT_FAMILY: &str = "sans-serif";

static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// Makes the embedded font available to plotters. Idempotent; call before drawing.
pub fn register_fonts() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        for style in [
            plotters::style::FontStyle::Normal,
            plotters::style::FontStyle::Bold,
        ] {
            plotters::style::register_font(FONT_FAMILY, style, DEJAVU_SANS)
                .unwrap_or_else(|_| panic!("the embedded DejaVu Sans font is a valid TTF"));
        }
    });
}
