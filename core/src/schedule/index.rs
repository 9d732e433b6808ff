//! Id index of the wheel: a `hashbrown::HashTable` of (node index, 32 hash bits), 9 bytes a bucket.
//!
//! Keeping 32 bits of the id's hash in the bucket means growing the table and
//! rejecting most probe candidates never touch the nodes (no random reads of
//! the node array), and that the index costs 9 bytes a bucket with hashbrown's
//! control byte: 8 bytes x (8/7 .. 16/7) of load = 10.3 .. 20.6 bytes an entry.
//!
//! (A hand-written linear-probing table with bucket and tag in one cache line was
//! tried and measured slower than hashbrown here, growth included.)

use hashbrown::hash_table::{Entry, HashTable};

#[derive(Clone, Copy, Debug)]
struct Bucket {
    node: u32,
    hash: u32,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Index {
    table: HashTable<Bucket>,
}

/// Where a lookup for insertion ended.
pub(crate) enum Slot {
    /// The id is present, at this node.
    Found(u32),
    /// The id is absent; it was inserted.
    Inserted,
}

/// The table's 64-bit hash from the stored 32 bits: hashbrown takes the bucket
/// from the low bits and its 7-bit tag from the top bits.
#[inline]
fn table_hash(hash: u32) -> u64 {
    (u64::from(hash) << 32) | u64::from(hash)
}

impl Index {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Index { table: HashTable::with_capacity(capacity) }
    }

    /// The node stored under `hash` for which `eq(node)` holds.
    #[inline]
    pub(crate) fn find(&self, hash: u32, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        self.table.find(table_hash(hash), |b| b.hash == hash && eq(b.node)).map(|b| b.node)
    }

    /// Finds the node under `hash` for which `eq` holds, or inserts `node`.
    #[inline]
    pub(crate) fn find_or_insert(&mut self, hash: u32, node: u32, mut eq: impl FnMut(u32) -> bool) -> Slot {
        match self.table.entry(table_hash(hash), |b| b.hash == hash && eq(b.node), |b| table_hash(b.hash)) {
            Entry::Occupied(occupied) => Slot::Found(occupied.get().node),
            Entry::Vacant(vacant) => {
                vacant.insert(Bucket { node, hash });
                Slot::Inserted
            }
        }
    }

    /// Removes and returns the node under `hash` for which `eq` holds.
    #[inline]
    pub(crate) fn remove(&mut self, hash: u32, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let entry = self.table.find_entry(table_hash(hash), |b| b.hash == hash && eq(b.node)).ok()?;
        Some(entry.remove().0.node)
    }

    /// Repoints the entry `(hash, old)` to `new`.
    #[inline]
    pub(crate) fn replace(&mut self, hash: u32, old: u32, new: u32) {
        if let Some(b) = self.table.find_mut(table_hash(hash), |b| b.hash == hash && b.node == old) {
            b.node = new;
        }
    }

    /// Frees spare buckets.
    pub(crate) fn shrink_to_fit(&mut self) {
        self.table.shrink_to_fit(|b| table_hash(b.hash));
    }
}
