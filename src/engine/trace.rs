//! The run's event trace: a running hash of every processed event, and optionally one JSON line
//! per event.
//!
//! The hash is always kept (it is cheap: FNV-1a over a few integers per event) and lets two runs
//! be compared without writing a trace. It is the same whether a trace file is written or not
//! (the lines are not folded in), so a run with `outputs.trace = true` can be compared with one
//! without.

use std::io::Write;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A running hash of processed events, with an optional JSON-lines sink.
pub struct Trace {
    hash: u64,
    sink: Option<Box<dyn Write + Send>>,
    lines_written: u64,
}

impl Default for Trace {
    fn default() -> Self {
        Trace::new(None)
    }
}

impl Trace {
    /// A trace that only hashes (`sink = None`) or also writes JSON lines.
    pub fn new(sink: Option<Box<dyn Write + Send>>) -> Trace {
        Trace {
            hash: FNV_OFFSET,
            sink,
            lines_written: 0,
        }
    }

    /// Whether JSON lines are being written (callers skip formatting when not).
    pub fn writes_lines(&self) -> bool {
        self.sink.is_some()
    }

    /// Folds one processed event into the hash: its time, kind and entity.
    #[inline]
    pub fn record(&mut self, at_ms: u64, kind: u32, entity: u64) {
        self.fold(at_ms);
        self.fold(u64::from(kind));
        self.fold(entity);
    }

    /// Writes one JSON line (already formatted, without the newline); the hash is left alone.
    pub fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        if let Some(sink) = self.sink.as_mut() {
            sink.write_all(line.as_bytes())?;
            sink.write_all(b"\n")?;
            self.lines_written += 1;
        }
        Ok(())
    }

    /// Flushes the sink.
    pub fn flush(&mut self) -> std::io::Result<()> {
        match self.sink.as_mut() {
            Some(sink) => sink.flush(),
            None => Ok(()),
        }
    }

    /// Flushes and closes the sink; the hash is kept.
    pub fn close_sink(&mut self) -> std::io::Result<()> {
        self.flush()?;
        self.sink = None;
        Ok(())
    }

    /// The running hash so far, as 16 hex digits.
    pub fn hash_hex(&self) -> String {
        format!("{:016x}", self.hash)
    }

    /// JSON lines written.
    pub fn lines_written(&self) -> u64 {
        self.lines_written
    }

    #[inline]
    fn fold(&mut self, value: u64) {
        for byte in value.to_le_bytes() {
            self.hash ^= u64::from(byte);
            self.hash = self.hash.wrapping_mul(FNV_PRIME);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_every_field_and_on_order() {
        let mut first = Trace::default();
        first.record(1, 2, 3);
        first.record(4, 5, 6);
        let mut same = Trace::default();
        same.record(1, 2, 3);
        same.record(4, 5, 6);
        assert_eq!(first.hash_hex(), same.hash_hex());
        let mut swapped = Trace::default();
        swapped.record(4, 5, 6);
        swapped.record(1, 2, 3);
        assert_ne!(first.hash_hex(), swapped.hash_hex());
        let mut other_kind = Trace::default();
        other_kind.record(1, 9, 3);
        other_kind.record(4, 5, 6);
        assert_ne!(first.hash_hex(), other_kind.hash_hex());
    }

    #[test]
    fn lines_go_to_the_sink_and_not_into_the_hash() {
        let mut written = Trace::new(Some(Box::new(Vec::new())));
        let mut hashed_only = Trace::new(None);
        for trace in [&mut written, &mut hashed_only] {
            trace.record(5, 2, 7);
        }
        written.write_line("{\"t\":5}").unwrap();
        assert_eq!(written.lines_written(), 1);
        // A run with a trace file has the same event hash as one without.
        assert_eq!(written.hash_hex(), hashed_only.hash_hex());
    }
}
