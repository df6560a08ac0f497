//! Shards: how N routewatch instances with the same config split the (monitor, route) pairs.
//!
//! Instance I of N probes the pairs whose [`pair_hash`] modulo N equals I, so N instances
//! cover every pair exactly once. The hash is FNV-1a 64-bit over the UTF-8 bytes of the
//! monitor name, one 0x00 byte, then the route name. It depends only on the two names, so a
//! pair stays on its shard across restarts, versions and machines. Adding a monitor or route
//! moves no other pair, but changing N moves most of them.
//!
//! This Python computes the same value, for checking where a pair lands:
//!
//! ```python
//! def pair_hash(monitor: str, route: str) -> int:
//!     h = 0xCBF29CE484222325
//!     for byte in monitor.encode() + b"\x00" + route.encode():
//!         h = ((h ^ byte) * 0x100000001B3) % 2**64
//!     return h
//!
//! pair_hash("openai", "direct") % 2  # 0: shard 0/2 probes it
//! ```
//!
//! This module only decides membership. The scheduler drops the pairs of other shards, and
//! metrics report the split.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// FNV-1a 64-bit offset basis.
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Shard counts up to this one list every valid index in the error message.
const MAX_LISTED_INDEXES: u64 = 4;

/// An invalid shard value, as written on the command line or in the config.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ShardError {
    /// The text is not two integers separated by `/`.
    #[error("expected INDEX/COUNT with whole numbers, such as 0/2")]
    Syntax,
    /// The count is 0.
    #[error("shard count must be at least 1 (use 0/1 to run unsharded)")]
    ZeroCount,
    /// The index is not below the count.
    #[error("shard index must be below the shard count (use {})", valid_indexes(*count))]
    IndexTooHigh {
        /// The index as written.
        index: u64,
        /// The count as written.
        count: u64,
    },
}

/// The part of the pairs this instance probes: index `I` of `N` shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    index: u64,
    count: u64,
}

impl Shard {
    /// The whole set of pairs: shard 0 of 1.
    pub const UNSHARDED: Shard = Shard { index: 0, count: 1 };

    /// Returns shard `index` of `count`.
    ///
    /// # Errors
    /// [`ShardError::ZeroCount`] when `count` is 0, [`ShardError::IndexTooHigh`] when
    /// `index >= count`.
    pub fn new(index: u64, count: u64) -> Result<Shard, ShardError> {
        if count == 0 {
            return Err(ShardError::ZeroCount);
        }
        if index >= count {
            return Err(ShardError::IndexTooHigh { index, count });
        }
        Ok(Shard { index, count })
    }

    /// Returns the index, below [`Shard::count`].
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Returns the number of shards, at least 1.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Returns true when this shard probes the pair (monitor, route).
    pub fn contains(&self, monitor: &str, route: &str) -> bool {
        pair_hash(monitor, route) % self.count == self.index
    }
}

impl Default for Shard {
    fn default() -> Self {
        Shard::UNSHARDED
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = ShardError;

    /// Parses `I/N`, such as `0/2`; spaces around either number are allowed.
    fn from_str(text: &str) -> Result<Shard, ShardError> {
        let (index, count) = text.split_once('/').ok_or(ShardError::Syntax)?;
        let parse = |number: &str| number.trim().parse::<u64>().map_err(|_| ShardError::Syntax);
        Shard::new(parse(index)?, parse(count)?)
    }
}

/// Returns the FNV-1a 64-bit hash of the monitor name, a 0x00 byte and the route name.
///
/// The 0x00 byte keeps ("ab", "c") and ("a", "bc") apart; names cannot contain it.
pub fn pair_hash(monitor: &str, route: &str) -> u64 {
    let bytes = monitor
        .bytes()
        .chain(std::iter::once(0u8))
        .chain(route.bytes());
    bytes.fold(FNV_OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    })
}

/// Lists the valid shards of `count` for an error message: `0/2 or 1/2`, or a range.
fn valid_indexes(count: u64) -> String {
    if count > MAX_LISTED_INDEXES {
        return format!("0/{count} to {}/{count}", count - 1);
    }
    let shards: Vec<String> = (0..count).map(|index| format!("{index}/{count}")).collect();
    match shards.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => shards.join(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pair_hash_known_values() {
        // The empty pair hashes the single byte 0x00: the published FNV-1a 64 value.
        assert_eq!(pair_hash("", ""), 0xaf63_bd4c_8601_b7df);
        assert_eq!(pair_hash("openai", "direct"), 0xcb8b_af9e_d35e_66f8);
        assert_eq!(pair_hash("groq", "hk-socks"), 0x16e2_da71_4e6d_85c5);
        assert_eq!(pair_hash("anthropic", "office-2"), 0x0e38_59e7_f335_8c2e);
        assert_eq!(pair_hash("gemini", "direct"), 0xb1a3_376c_afb3_c5db);
    }

    #[test]
    fn pair_hash_separates_names() {
        assert_ne!(pair_hash("ab", "c"), pair_hash("a", "bc"));
        assert_ne!(pair_hash("a", "b"), pair_hash("b", "a"));
    }

    #[test]
    fn contains_known_pairs() {
        let half = |index| Shard::new(index, 2).unwrap();
        assert!(half(0).contains("openai", "direct"));
        assert!(!half(1).contains("openai", "direct"));
        assert!(half(1).contains("groq", "hk-socks"));
        assert!(half(0).contains("anthropic", "office-2"));
        assert!(Shard::new(2, 3).unwrap().contains("anthropic", "office-2"));
    }

    #[test]
    fn unsharded_contains_everything() {
        assert!(Shard::UNSHARDED.contains("openai", "direct"));
        assert!(Shard::UNSHARDED.contains("", ""));
        assert_eq!(Shard::default(), Shard::UNSHARDED);
    }

    #[test]
    fn parse_valid_values() {
        assert_eq!("0/1".parse::<Shard>(), Ok(Shard::UNSHARDED));
        assert_eq!("1/2".parse::<Shard>(), Ok(Shard { index: 1, count: 2 }));
        assert_eq!(" 3 / 8 ".parse::<Shard>(), Ok(Shard { index: 3, count: 8 }));
        assert_eq!(Shard::new(3, 8).unwrap().to_string(), "3/8");
    }

    #[test]
    fn parse_invalid_values() {
        for text in ["", "1", "1/", "/2", "a/2", "1/b", "-1/2", "1/2/3", "1.0/2"] {
            assert_eq!(text.parse::<Shard>(), Err(ShardError::Syntax), "{text:?}");
        }
        assert_eq!("0/0".parse::<Shard>(), Err(ShardError::ZeroCount));
        assert_eq!(
            "3/2".parse::<Shard>(),
            Err(ShardError::IndexTooHigh { index: 3, count: 2 })
        );
    }

    #[test]
    fn error_messages() {
        let message = |text: &str| text.parse::<Shard>().unwrap_err().to_string();
        assert_eq!(
            message("x"),
            "expected INDEX/COUNT with whole numbers, such as 0/2"
        );
        assert_eq!(
            message("0/0"),
            "shard count must be at least 1 (use 0/1 to run unsharded)"
        );
        assert_eq!(
            message("1/1"),
            "shard index must be below the shard count (use 0/1)"
        );
        assert_eq!(
            message("3/2"),
            "shard index must be below the shard count (use 0/2 or 1/2)"
        );
        assert_eq!(
            message("4/3"),
            "shard index must be below the shard count (use 0/3, 1/3 or 2/3)"
        );
        assert_eq!(
            message("9/5"),
            "shard index must be below the shard count (use 0/5 to 4/5)"
        );
    }

    proptest! {
        #[test]
        fn shards_cover_each_pair_once(
            pairs in proptest::collection::vec(("[a-z0-9-]{1,12}", "[a-z0-9-]{1,12}"), 1..40),
            count in 1u64..9,
        ) {
            for (monitor, route) in &pairs {
                let owners = (0..count)
                    .filter(|index| Shard::new(*index, count).unwrap().contains(monitor, route))
                    .count();
                prop_assert_eq!(owners, 1, "({}, {}) in {} shards", monitor, route, count);
            }
        }
    }
}
