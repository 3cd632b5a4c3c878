//! `SparseRows`: the rows of a table that one batch touched, as sorted unique ids and one
//! `dim`-wide row of values per id. It is what backprop produces per embedding table, what a
//! worker pushes to the parameter servers, and what a server sums.
//!
//! Why sorted and unique: duplicates inside a batch are combined once, where they arise, so
//! nothing downstream sends or adds an id twice; and two sorted lists merge in one pass with
//! a fixed order of additions. [`tree_sum`] fixes that order for many parts (micro-batches,
//! workers): a balanced binary tree over the part index, the same rule the dense gradient's
//! reproducible mode uses, so the sum of a row does not depend on how the parts were grouped
//! as long as each group is an aligned power-of-two block of parts.

/// SplitMix64's finaliser: a well-mixed 64-bit hash of `x`. Embedding tables use it to hash
/// ids into buckets, to seed a row's initial values and to assign rows to shards
/// (`mix64(id) % shards`).
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Sorted unique ids and their rows (`ids.len() * dim` values, row-major).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SparseRows {
    /// Row width.
    pub dim: usize,
    /// Ids, strictly ascending.
    pub ids: Vec<u64>,
    /// One row of `dim` values per id.
    pub values: Vec<f32>,
}

impl SparseRows {
    /// No rows of width `dim`.
    pub fn empty(dim: usize) -> Self {
        SparseRows {
            dim,
            ids: Vec::new(),
            values: Vec::new(),
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when no row is held.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The row of the `i`-th id.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.dim..(i + 1) * self.dim]
    }

    /// True when ids ascend strictly and the values fit them.
    pub fn is_valid(&self) -> bool {
        self.values.len() == self.ids.len() * self.dim && self.ids.windows(2).all(|w| w[0] < w[1])
    }

    /// `a + b`: ids of both, in order; an id in both gets `a`'s row plus `b`'s row (in that
    /// order), an id in one keeps its row unchanged.
    ///
    /// # Panics
    /// If the widths differ (callers pass rows of one table).
    pub fn merge_add(a: &SparseRows, b: &SparseRows) -> SparseRows {
        assert_eq!(a.dim, b.dim, "merging rows of different widths");
        let dim = a.dim;
        let mut out = SparseRows {
            dim,
            ids: Vec::with_capacity(a.len() + b.len()),
            values: Vec::with_capacity((a.len() + b.len()) * dim),
        };
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            let take_a = j == b.len() || (i < a.len() && a.ids[i] <= b.ids[j]);
            let take_b = i == a.len() || (j < b.len() && b.ids[j] <= a.ids[i]);
            if take_a && take_b {
                out.ids.push(a.ids[i]);
                out.values
                    .extend(a.row(i).iter().zip(b.row(j)).map(|(x, y)| x + y));
                i += 1;
                j += 1;
            } else if take_a {
                out.ids.push(a.ids[i]);
                out.values.extend_from_slice(a.row(i));
                i += 1;
            } else {
                out.ids.push(b.ids[j]);
                out.values.extend_from_slice(b.row(j));
                j += 1;
            }
        }
        out
    }

    /// Multiply every value by `s`.
    pub fn scale(&mut self, s: f32) {
        self.values.iter_mut().for_each(|v| *v *= s);
    }
}

/// The sum of `parts` in a balanced binary tree over their index (`[0, n/2)` and `[n/2, n)`,
/// recursively); `None` for no parts.
///
/// # Panics
/// If the widths differ.
pub fn tree_sum(parts: &[SparseRows]) -> Option<SparseRows> {
    match parts.len() {
        0 => None,
        1 => Some(parts[0].clone()),
        n => {
            let mid = n / 2;
            let (l, r) = (tree_sum(&parts[..mid])?, tree_sum(&parts[mid..])?);
            Some(SparseRows::merge_add(&l, &r))
        }
    }
}

/// Sort `ids` and drop duplicates; also returns, for each input position, the index of its id in
/// the unique list (so per-row work can be scattered into the unique rows).
pub fn unique_sorted(ids: &[u64]) -> (Vec<u64>, Vec<u32>) {
    let mut uniq = ids.to_vec();
    uniq.sort_unstable();
    uniq.dedup();
    let index = ids
        .iter()
        .map(|id| uniq.binary_search(id).unwrap_or(0) as u32)
        .collect();
    (uniq, index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(ids: &[u64], v: &[f32]) -> SparseRows {
        SparseRows {
            dim: 2,
            ids: ids.to_vec(),
            values: v.to_vec(),
        }
    }

    #[test]
    fn merge_adds_common_ids_and_keeps_the_rest() {
        let a = rows(&[1, 4], &[1.0, 2.0, 3.0, 4.0]);
        let b = rows(&[2, 4, 9], &[5.0, 6.0, 7.0, 8.0, 9.0, 10.0]);
        let m = SparseRows::merge_add(&a, &b);
        assert_eq!(m.ids, vec![1, 2, 4, 9]);
        assert_eq!(m.values, vec![1.0, 2.0, 5.0, 6.0, 10.0, 12.0, 9.0, 10.0]);
        assert!(m.is_valid());
    }

    #[test]
    fn tree_sum_of_aligned_groups_equals_the_flat_tree() {
        // Four parts summed as ((0+1)+(2+3)) whether grouped in pairs first or not.
        let parts: Vec<SparseRows> = (0..4u64)
            .map(|k| {
                rows(
                    &[k % 2, 7],
                    &[0.1 * k as f32, 1e7, 0.3, 1.0 + k as f32 * 1e-7],
                )
            })
            .collect();
        let flat = tree_sum(&parts).unwrap();
        let pairs = [
            tree_sum(&parts[..2]).unwrap(),
            tree_sum(&parts[2..]).unwrap(),
        ];
        let grouped = tree_sum(&pairs).unwrap();
        assert_eq!(flat, grouped);
        assert!(tree_sum(&[]).is_none());
    }

    #[test]
    fn unique_sorted_maps_every_position() {
        let (u, idx) = unique_sorted(&[5, 3, 5, 9, 3]);
        assert_eq!(u, vec![3, 5, 9]);
        assert_eq!(idx, vec![1, 0, 1, 2, 0]);
    }
}
