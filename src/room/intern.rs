//! Interned strings: one shared `Arc<str>` per distinct string (member keys, domains, key IDs,
//! event IDs in link histories), so that the thousands of link tables of a large world hold
//! 16-byte handles instead of their own copies of the same 44-character keys.
//!
//! Interning changes no result: the strings compare, hash and order by their contents. The
//! table is lookup-only (never iterated into anything observable) and drops strings nobody else
//! holds any more whenever it has doubled since the last sweep, so it stays proportional to the
//! strings in use.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};

use crate::matrix::dag::IdHasher;

struct Table {
    strings: HashSet<Arc<str>, IdHasher>,
    sweep_at: usize,
}

fn table() -> &'static Mutex<Table> {
    static TABLE: OnceLock<Mutex<Table>> = OnceLock::new();
    TABLE.get_or_init(|| {
        Mutex::new(Table {
            strings: HashSet::with_hasher(IdHasher::default()),
            sweep_at: 1 << 16,
        })
    })
}

/// The shared copy of `text`.
pub fn intern(text: &str) -> Arc<str> {
    let mut table = table()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(found) = table.strings.get(text) {
        return Arc::clone(found);
    }
    if table.strings.len() >= table.sweep_at {
        table.strings.retain(|held| Arc::strong_count(held) > 1);
        table.sweep_at = (table.strings.len() * 2).max(1 << 16);
    }
    let shared: Arc<str> = Arc::from(text);
    table.strings.insert(Arc::clone(&shared));
    shared
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_strings_share_one_copy() {
        let first = intern("@member:example.org");
        let second = intern(&String::from("@member:example.org"));
        assert!(Arc::ptr_eq(&first, &second));
        assert_ne!(&*intern("other"), &*first);
    }
}
