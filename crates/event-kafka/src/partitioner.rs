//! The Java client's default partitioner for keyed records, so every Kafka client agrees on
//! which partition holds a key: `toPositive(murmur2(key)) % partitions`, with `murmur2` exactly
//! as `org.apache.kafka.common.utils.Utils.murmur2`.

/// `Utils.murmur2` of the Java client: 32-bit MurmurHash2 with seed `0x9747b28c`, reading
/// the data in little-endian 4-byte blocks.
pub(crate) fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    // Java does this in `int` arithmetic, which wraps; `u32` with wrapping operations and an
    // unsigned shift (`>>>`) gives the same bits.
    let length = data.len();
    let mut h = SEED ^ (length as u32);
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let mut k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }

    // The tail: Java's switch falls through from case 3 to case 1; bytes are sign-extended
    // there (`data[i] & 0xff` masks them back), so only their low 8 bits count.
    let tail = blocks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }

    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition the Java client's default partitioner picks for a record with this key:
/// `Utils.toPositive(Utils.murmur2(key)) % partitions`.
///
/// `partitions` must be at least 1; 0 or less is treated as 1 rather than dividing by zero.
pub(crate) fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    // `toPositive` clears the sign bit; it is not `abs`, which differs for negative values.
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors of Kafka's own `UtilsTest.testMurmur2`.
    #[test]
    fn matches_kafka_utils_test_vectors() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(
                murmur2(key),
                expected,
                "murmur2({:?})",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn every_tail_length_and_high_bytes_are_hashed() {
        // Tails of 0..=3 bytes take different branches; bytes >= 0x80 are negative in Java.
        let data = [0xffu8, 0x80, 0x7f, 0x01, 0xfe, 0x00, 0xc3];
        let hashes: Vec<i32> = (0..=data.len()).map(|n| murmur2(&data[..n])).collect();
        let mut distinct = hashes.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), hashes.len(), "{hashes:?}");
    }

    #[test]
    fn partitions_are_in_range_and_positive() {
        for n in [1, 2, 3, 7, 100] {
            for key in ["", "a", "opp-123", "a-little-bit-longer-string"] {
                let p = partition_for_key(key.as_bytes(), n);
                assert!((0..n).contains(&p), "{key} -> {p} of {n}");
            }
        }
        // murmur2("21") is negative: toPositive masks the sign bit instead of negating.
        assert_eq!(
            partition_for_key(b"21", 1_000_000),
            (-973_932_308i32 & 0x7fff_ffff) % 1_000_000
        );
        assert_eq!(partition_for_key(b"anything", 0), 0);
    }
}
