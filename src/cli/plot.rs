//! `fedsim plot DIR`: redraw a sweep's charts from its `runs.csv`, without re-running anything.

use super::CliError;
use std::path::PathBuf;

/// `fedsim plot DIR [--out CHART_DIR]`
#[derive(clap::Args, Debug, Clone)]
pub struct PlotArgs {
    /// A sweep directory (written by `fedsim sweep` or `fedsim merge`).
    pub dir: PathBuf,
    /// Where to write the charts (default: DIR/charts).
    #[arg(long, short, value_name = "CHART_DIR")]
    pub out: Option<PathBuf>,
    /// Draw only metrics whose name contains this text (repeatable; default: every metric).
    #[arg(long = "metric", value_name = "TEXT")]
    pub metrics: Vec<String>,
}

pub fn run(args: &PlotArgs) -> Result<(), CliError> {
    let table = args.dir.join(crate::sweep::store::TABLE_FILE);
    if !table.is_file() {
        return Err(CliError::input(format!(
            "{}: no such file; DIR must be a sweep directory",
            table.display()
        )));
    }
    let chart_dir = args.out.clone().unwrap_or_else(|| args.dir.join("charts"));
    let written = crate::chart::sweep_charts::plot_sweep_dir(&args.dir, &chart_dir, &args.metrics)
        .map_err(CliError::input)?;
    // Piped, every path (for scripts); on a terminal a sweep with many metrics would print
    // hundreds of lines, so the first few and a count.
    use std::io::IsTerminal;
    const SHOWN_ON_A_TERMINAL: usize = 8;
    let shown = if std::io::stdout().is_terminal() {
        SHOWN_ON_A_TERMINAL
    } else {
        usize::MAX
    };
    for path in written.iter().take(shown) {
        println!("{}", path.display());
    }
    if written.len() > shown {
        println!(
            "... and {} more: {} files in {} (SVG and PNG per chart; --metric TEXT draws fewer)",
            written.len() - shown,
            written.len(),
            chart_dir.display()
        );
    }
    Ok(())
}
