//! One id value: splitting a multi-valued cell, reading an integer id, hashing a string id.

use super::ID_VALUES;
use lockstep_tensor::sparse::mix64;

/// The values of a cell: split at `sep` (empty values dropped), or the cell itself.
pub(super) fn split<'a>(
    cell: &'a str,
    sep: Option<&'a str>,
) -> Box<dyn Iterator<Item = &'a str> + 'a> {
    match sep {
        Some(sep) => Box::new(cell.split(sep).filter(|t| !t.is_empty())),
        None => Box::new(std::iter::once(cell)),
    }
}

/// `token` as an integer id: ASCII digits only, below 2^24.
pub fn parse_integer(token: &str) -> Option<u64> {
    if token.is_empty() || token.len() > 8 || !token.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    token.parse::<u64>().ok().filter(|&v| v < ID_VALUES)
}

/// A string id's 24-bit hash: FNV-1a over its UTF-8 bytes, then SplitMix64's finaliser.
pub fn hash_string(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h) % ID_VALUES
}
