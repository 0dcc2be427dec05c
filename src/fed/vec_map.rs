//! A small ordered map kept as two sorted vectors: the rooms of one homeserver.
//!
//! A server is in tens of rooms and looks one of them up several times per PDU it receives;
//! rooms are added when it joins and never removed one by one. A `BTreeMap` with the rooms'
//! large values stored inline costs two or three node visits (cache misses) per lookup; here
//! a lookup is a binary search over a few cache lines of keys and one index into the values.
//! Iteration is in key order, exactly as the `BTreeMap` it replaces, so nothing observable
//! changes.

/// An ordered map from `K` to `V` with `O(log n)` lookups and `O(n)` insertions.
#[derive(Debug, Clone)]
pub struct VecMap<K, V> {
    /// Ascending, no duplicates.
    keys: Vec<K>,
    /// `values[i]` belongs to `keys[i]`.
    values: Vec<V>,
}

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        VecMap {
            keys: Vec::new(),
            values: Vec::new(),
        }
    }
}

impl<K: Ord + Copy, V> VecMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    fn position(&self, key: &K) -> Result<usize, usize> {
        self.keys.binary_search(key)
    }

    /// The value of `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        let index = self.position(key).ok()?;
        Some(&self.values[index])
    }

    /// The value of `key`, mutably.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let index = self.position(key).ok()?;
        Some(&mut self.values[index])
    }

    /// Whether `key` has a value.
    pub fn contains_key(&self, key: &K) -> bool {
        self.position(key).is_ok()
    }

    /// Sets the value of `key`, returning the one it replaces.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.position(&key) {
            Ok(index) => Some(std::mem::replace(&mut self.values[index], value)),
            Err(index) => {
                self.keys.insert(index, key);
                self.values.insert(index, value);
                None
            }
        }
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.keys.clear();
        self.values.clear();
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.keys.iter().zip(&self.values)
    }

    /// The entries in key order, values mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        self.keys.iter().zip(&mut self.values)
    }

    /// The keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.keys.iter()
    }

    /// The values in key order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.values.iter()
    }
}

impl<K: Ord + Copy + std::fmt::Debug, V> std::ops::Index<&K> for VecMap<K, V> {
    type Output = V;

    /// The value of `key`; panics if there is none (as `BTreeMap`'s index does).
    fn index(&self, key: &K) -> &V {
        match self.get(key) {
            Some(value) => value,
            None => panic!("no entry for key {key:?}"),
        }
    }
}

impl<'a, K: Ord + Copy, V> IntoIterator for &'a VecMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::iter::Zip<std::slice::Iter<'a, K>, std::slice::Iter<'a, V>>;

    fn into_iter(self) -> Self::IntoIter {
        self.keys.iter().zip(&self.values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        /// Every answer and every listing is the `BTreeMap`'s.
        #[test]
        fn behaves_as_a_btree_map(
            operations in proptest::collection::vec((0u8..4, 0u32..40, any::<u16>()), 0..200)
        ) {
            let mut map = VecMap::new();
            let mut model = BTreeMap::new();
            for (operation, key, value) in operations {
                match operation {
                    0 | 1 => prop_assert_eq!(map.insert(key, value), model.insert(key, value)),
                    2 => {
                        if let Some(held) = map.get_mut(&key) {
                            *held = held.wrapping_add(value);
                        }
                        if let Some(held) = model.get_mut(&key) {
                            *held = held.wrapping_add(value);
                        }
                    }
                    _ => {
                        prop_assert_eq!(map.get(&key), model.get(&key));
                        if model.contains_key(&key) {
                            prop_assert_eq!(map[&key], model[&key]);
                        }
                        prop_assert_eq!(map.contains_key(&key), model.contains_key(&key));
                    }
                }
                prop_assert_eq!(map.len(), model.len());
            }
            let listed: Vec<(u32, u16)> = map.iter().map(|(k, v)| (*k, *v)).collect();
            let expected: Vec<(u32, u16)> = model.iter().map(|(k, v)| (*k, *v)).collect();
            prop_assert_eq!(&listed, &expected);
            let through_ref: Vec<(u32, u16)> = (&map).into_iter().map(|(k, v)| (*k, *v)).collect();
            prop_assert_eq!(&through_ref, &expected);
            prop_assert!(map.keys().copied().eq(model.keys().copied()));
            prop_assert!(map.values().copied().eq(model.values().copied()));
            map.clear();
            prop_assert!(map.is_empty());
        }
    }
}
