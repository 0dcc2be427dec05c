//! Result files: atomic writes (temporary file, then rename), CSV tables and JSON documents,
//! and the summary statistics the runs report.
//!
//! A run interrupted at any moment leaves either the previous complete file or the new complete
//! file, never half of one.

pub mod raw_crypto;

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, flushed and
/// synced, then renamed over the target.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let directory = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(directory)?;
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".to_owned());
    let temporary: PathBuf = directory.join(format!(".{file_name}.tmp-{}", std::process::id()));
    {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, path)
}

/// Writes a JSON value, pretty-printed with a final newline, atomically.
pub fn write_json(path: &Path, value: &serde_json::Value) -> std::io::Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// A CSV table built in memory with a fixed header, then written atomically.
pub struct CsvTable {
    writer: csv::Writer<Vec<u8>>,
    columns: usize,
}

impl CsvTable {
    /// A table with these column names.
    pub fn new(header: &[&str]) -> CsvTable {
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer
            .write_record(header)
            .expect("writing to memory cannot fail");
        CsvTable {
            writer,
            columns: header.len(),
        }
    }

    /// Appends a row; it must have one field per column.
    pub fn row(&mut self, fields: &[String]) {
        assert_eq!(
            fields.len(),
            self.columns,
            "CSV row width differs from header"
        );
        self.writer
            .write_record(fields)
            .expect("writing to memory cannot fail");
    }

    /// Writes the table to `path` atomically.
    pub fn write(self, path: &Path) -> std::io::Result<()> {
        let bytes = self.writer.into_inner().map_err(std::io::Error::other)?;
        write_atomic(path, &bytes)
    }
}

/// Formats a float with a fixed number of decimals, so CSV and JSON bytes are stable.
pub fn fixed(value: f64, decimals: usize) -> String {
    format!("{value:.decimals$}")
}

/// A float rounded to 9 significant decimals for JSON (stable across runs, readable).
pub fn rounded(value: f64) -> serde_json::Value {
    let rounded = (value * 1e9).round() / 1e9;
    serde_json::Number::from_f64(rounded)
        .map(serde_json::Value::Number)
        .unwrap_or(serde_json::Value::Null)
}

/// The `percentile` (0-100) of `values` by the nearest-rank method.
pub fn percentile(values: &[u32], percentile: f64) -> u32 {
    if values.is_empty() {
        return 0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = ((percentile / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_leave_no_temporary_file() {
        let directory = std::env::temp_dir().join(format!("fedsim-metrics-{}", std::process::id()));
        let path = directory.join("a.csv");
        let mut table = CsvTable::new(&["x", "y"]);
        table.row(&["1".into(), "2".into()]);
        table.write(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "x,y\n1,2\n");
        let names: Vec<_> = std::fs::read_dir(&directory)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        std::fs::remove_dir_all(directory).unwrap();
    }

    #[test]
    fn percentile_uses_nearest_rank() {
        let values: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&values, 99.0), 99);
        assert_eq!(percentile(&values, 100.0), 100);
        assert_eq!(percentile(&[0, 0, 5], 50.0), 0);
        assert_eq!(percentile(&[], 99.0), 0);
    }
}
