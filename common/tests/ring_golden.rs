//! Golden vectors that freeze placement: the placement-key encoding, the seed,
//! the hash, the vnode layout and the ring rule. A failure here means existing
//! data would be found on the wrong cell; see docs/ring.md before changing it.

use common::ring::{
    key_hash, placement_key, vnode_point, HashRange, Ring, RING_SEED, VNODES_PER_WEIGHT,
};
use common::CellId;

/// (bucket, key, key_hash, cell on the 3-cell ring, cell on the 8-cell ring).
/// Values were produced once by this code and frozen; never regenerate them to
/// make a change pass.
const GOLDEN: &[(&str, &str, u64, u32, u32)] = &[
    ("photos", "", 0x4508b4dd99cc4af4, 2, 8),
    ("photos", "2024/01/cat.jpg", 0x32a5979ab3c04152, 1, 7),
    ("my-bucket", "key", 0x94b4e0b3f3ae7037, 3, 5),
    ("my-bucket", "key ", 0xdff09f037c8c47ed, 2, 5),
    ("my.bucket.example", "a/b/c/d/e/f", 0xa84f980f142b94b3, 1, 1),
    ("logs", "ключ/日本語/🦀", 0xf34bb74e2efc8efb, 3, 3),
    (BUCKET_63, "k", 0xa0df96aa357c9ba0, 2, 4),
    ("abc", "def", 0x7149ce40a43d0aca, 1, 6),
    ("abcd", "ef", 0xa5a2a3f1b0f36d85, 3, 7),
    ("", "", 0x19546154e577bd23, 2, 6),
    ("bucket-0", "\u{0}\u{7f}", 0x49454ec4d2de25e4, 3, 3),
];

/// A maximum-length (63-byte) bucket name.
const BUCKET_63: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// key_hash of (BUCKET_63, "x" * 1024): the longest valid (bucket, key).
const MAX_LEN_HASH: u64 = 0x3c46ad80919333dc;

fn ring3() -> Ring {
    Ring::new(&[(CellId(1), 1), (CellId(2), 1), (CellId(3), 1)]).expect("3-cell ring")
}

fn ring8() -> Ring {
    let cells: Vec<(CellId, u32)> = (1..=8).map(|i| (CellId(i), 1)).collect();
    Ring::new(&cells).expect("8-cell ring")
}

#[test]
fn constants_are_frozen() {
    assert_eq!(RING_SEED, 0x6365_6c6c_6b76_2d31);
    assert_eq!(&RING_SEED.to_be_bytes(), b"cellkv-1");
    assert_eq!(VNODES_PER_WEIGHT, 4096);
    assert_eq!(BUCKET_63.len(), 63);
}

#[test]
fn placement_key_encoding_is_frozen() {
    assert_eq!(placement_key("abc", "def"), b"\x03abcdef".to_vec());
    assert_eq!(placement_key("", ""), b"\x00".to_vec());
    let k = placement_key(BUCKET_63, "k");
    assert_eq!((k[0], k.len()), (63, 65));
}

#[test]
fn key_hashes_are_frozen() {
    for &(bucket, key, hash, _, _) in GOLDEN {
        assert_eq!(
            key_hash(bucket, key),
            hash,
            "key_hash({bucket:?}, {key:?}) changed"
        );
    }
    assert_eq!(key_hash(BUCKET_63, &"x".repeat(1024)), MAX_LEN_HASH);
}

#[test]
fn placements_are_frozen() {
    let (r3, r8) = (ring3(), ring8());
    for &(bucket, key, _, c3, c8) in GOLDEN {
        assert_eq!(
            r3.cell_for(bucket, key),
            CellId(c3),
            "3-cell ring: {bucket:?}/{key:?}"
        );
        assert_eq!(
            r8.cell_for(bucket, key),
            CellId(c8),
            "8-cell ring: {bucket:?}/{key:?}"
        );
    }
    let long_key = "x".repeat(1024);
    assert_eq!(r3.cell_for(BUCKET_63, &long_key), CellId(2));
    assert_eq!(r8.cell_for(BUCKET_63, &long_key), CellId(2));
}

#[test]
fn vnode_layout_is_frozen() {
    assert_eq!(vnode_point(CellId(7), 0), 0x36f1f476407b3647);
    assert_eq!(vnode_point(CellId(7), 1), 0xaa45bd8e76b807db);
    assert_eq!(vnode_point(CellId(7), 4095), 0xc2da2e6e4f0a4bc5);

    let ranges = ring3().ranges();
    assert_eq!(ranges.len(), 8272);
    assert_eq!(
        &ranges[..2],
        &[
            (
                HashRange {
                    start: 0,
                    end: 3936172959996808
                },
                CellId(3)
            ),
            (
                HashRange {
                    start: 3936172959996809,
                    end: 5284201390262320
                },
                CellId(1)
            ),
        ]
    );
    assert_eq!(
        ranges.last(),
        Some(&(
            HashRange {
                start: 18445537153443637367,
                end: u64::MAX
            },
            CellId(3)
        ))
    );
}
