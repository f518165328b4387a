//! Merkle trees as RFC 6962 (Certificate Transparency) defines them, over an organization's
//! audit trail: leaf `i` is the `i + 1`th entry's hash, so a signed root of the first `n`
//! leaves pins that much history, and a consistency proof shows a later tree extends it.
//!
//! Trees here are append-only and kept as their *complete subtrees*: the hash of every
//! aligned run of `2^level` leaves, which never changes once its last leaf exists. Any tree
//! size's root and any proof need only `O(log n)` of them, so a store keeps them all and
//! fetches the few a question needs ([`needed`]); nothing recomputes from the leaves.

use std::cell::RefCell;
use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// A complete subtree: leaves `index * 2^level` up to, not including, `(index + 1) * 2^level`.
/// Level 0 is a leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Node {
    pub level: u32,
    pub index: u64,
}

/// The hash of a leaf: `SHA-256(0x00 ‖ data)`.
#[must_use]
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0u8]);
    hasher.update(data);
    hasher.finalize().into()
}

/// The hash of an interior node: `SHA-256(0x01 ‖ left ‖ right)`.
#[must_use]
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([1u8]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The root of the empty tree: SHA-256 of nothing.
#[must_use]
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Where a tree keeps its complete subtrees' hashes. Asked only for subtrees that exist.
pub trait Subtrees {
    fn subtree(&self, node: Node) -> Hash;
}

impl<F: Fn(Node) -> Hash> Subtrees for F {
    fn subtree(&self, node: Node) -> Hash {
        self(node)
    }
}

/// The largest power of two smaller than `n` (n ≥ 2): where RFC 6962 splits a tree.
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// The hash of leaves `start..end` as RFC 6962's MTH defines it (`end > start`). Every left
/// part the split makes is complete and aligned, so it is one stored subtree.
fn range(tree: &impl Subtrees, start: u64, end: u64) -> Hash {
    let n = end - start;
    if n.is_power_of_two() {
        let level = n.trailing_zeros();
        return tree.subtree(Node { level, index: start >> level });
    }
    let k = split(n);
    node_hash(&range(tree, start, start + k), &range(tree, start + k, end))
}

/// The root of the tree's first `size` leaves.
#[must_use]
pub fn root(tree: &impl Subtrees, size: u64) -> Hash {
    if size == 0 {
        return empty_root();
    }
    range(tree, 0, size)
}

/// The audit path of leaf `index` in the tree of `size` leaves (RFC 6962 §2.1.1), bottom up.
/// Empty when `index` is not in the tree.
#[must_use]
pub fn inclusion_proof(tree: &impl Subtrees, index: u64, size: u64) -> Vec<Hash> {
    let mut proof = Vec::new();
    if index < size {
        path(tree, index, 0, size, &mut proof);
    }
    proof
}

fn path(tree: &impl Subtrees, m: u64, start: u64, end: u64, proof: &mut Vec<Hash>) {
    let n = end - start;
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        path(tree, m, start, start + k, proof);
        proof.push(range(tree, start + k, end));
    } else {
        path(tree, m - k, start + k, end, proof);
        proof.push(range(tree, start, start + k));
    }
}

/// The proof that the tree of `to` leaves extends the tree of `from` (RFC 6962 §2.1.2).
/// Empty when there is nothing to prove (`from` is 0 or equals `to`) or `from > to`.
#[must_use]
pub fn consistency_proof(tree: &impl Subtrees, from: u64, to: u64) -> Vec<Hash> {
    let mut proof = Vec::new();
    if 0 < from && from < to {
        subproof(tree, from, 0, to, true, &mut proof);
    }
    proof
}

fn subproof(
    tree: &impl Subtrees,
    m: u64,
    start: u64,
    end: u64,
    whole: bool,
    proof: &mut Vec<Hash>,
) {
    let n = end - start;
    if m == n {
        if !whole {
            proof.push(range(tree, start, end));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(tree, m, start, start + k, whole, proof);
        proof.push(range(tree, start + k, end));
    } else {
        subproof(tree, m - k, start + k, end, false, proof);
        proof.push(range(tree, start, start + k));
    }
}

/// Whether `proof` shows the leaf with hash `leaf` at `index` in the tree of `size` leaves
/// whose root is `root` (RFC 9162 §2.1.3.2).
#[must_use]
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

/// Whether `proof` shows that the tree of `to` leaves with root `to_root` extends the tree of
/// `from` leaves with root `from_root` (RFC 9162 §2.1.4.2).
#[must_use]
pub fn verify_consistency(
    from: u64,
    to: u64,
    from_root: &Hash,
    to_root: &Hash,
    proof: &[Hash],
) -> bool {
    if from > to {
        return false;
    }
    if from == to {
        return proof.is_empty() && from_root == to_root;
    }
    if from == 0 {
        // Every tree extends the empty one.
        return proof.is_empty() && *from_root == empty_root();
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if from.is_power_of_two() {
        path.push(*from_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else { return false };
    let (mut f, mut s) = (from - 1, to - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    fr == *from_root && sr == *to_root && s == 0
}

/// The complete subtrees `answer` reads: run it against a tree that only takes note, so a
/// store can fetch exactly those (a few dozen for a million leaves) before answering for real.
pub fn needed<T>(answer: impl FnOnce(&dyn Fn(Node) -> Hash) -> T) -> Vec<Node> {
    let asked = RefCell::new(Vec::new());
    let note = |node: Node| {
        asked.borrow_mut().push(node);
        [0u8; 32]
    };
    let _ = answer(&note);
    let mut nodes = asked.into_inner();
    nodes.sort_unstable();
    nodes.dedup();
    nodes
}

/// The complete subtrees that appending to a tree of `size` leaves combines with: one per bit
/// of `size`, the largest first.
#[must_use]
pub fn frontier(size: u64) -> Vec<Node> {
    (0..64u32)
        .rev()
        .filter(|level| size & (1 << level) != 0)
        .map(|level| Node { level, index: (size >> level) - 1 })
        .collect()
}

/// Appends `leaf` (a leaf hash) as leaf number `size`: the complete subtrees it completes,
/// itself first. `known` must hold the [`frontier`] of `size`; it is kept up to date with the
/// new subtrees, so leaves can be appended one after another.
pub fn append(known: &mut HashMap<Node, Hash>, size: u64, leaf: Hash) -> Vec<(Node, Hash)> {
    let mut made = vec![(Node { level: 0, index: size }, leaf)];
    let (mut node, mut hash) = (Node { level: 0, index: size }, leaf);
    known.insert(node, hash);
    while node.index & 1 == 1 {
        let left = Node { level: node.level, index: node.index - 1 };
        let Some(left_hash) = known.get(&left) else { break };
        hash = node_hash(left_hash, &hash);
        node = Node { level: node.level + 1, index: node.index >> 1 };
        known.insert(node, hash);
        made.push((node, hash));
    }
    made
}

/// A tree held in memory, every complete subtree kept: for tests, the CLI's checks and
/// benchmarks.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    /// A tree of these leaf *data* (each hashed as a leaf).
    #[must_use]
    pub fn of(leaves: &[impl AsRef<[u8]>]) -> Self {
        let mut tree = Self::default();
        for data in leaves {
            tree.push(leaf_hash(data.as_ref()));
        }
        tree
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            self.levels[level].push(hash);
            let row = &self.levels[level];
            if row.len() % 2 == 1 {
                return;
            }
            hash = node_hash(&row[row.len() - 2], &row[row.len() - 1]);
            level += 1;
        }
    }

    /// How many leaves.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |leaves| leaves.len() as u64)
    }
}

impl Subtrees for MemoryTree {
    fn subtree(&self, node: Node) -> Hash {
        self.levels[node.level as usize][node.index as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn unhex(text: &str) -> Hash {
        data(text).try_into().expect("32 bytes")
    }

    /// RFC 6962's test tree: the leaf inputs the Certificate Transparency implementations share.
    fn rfc_tree() -> MemoryTree {
        let inputs = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657"];
        let mut leaves: Vec<Vec<u8>> = inputs.iter().map(|t| data(t)).collect();
        leaves.push(data("606162636465666768696a6b6c6d6e6f"));
        MemoryTree::of(&leaves)
    }

    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    #[test]
    fn roots_of_the_rfc_test_tree_for_every_size() {
        let tree = rfc_tree();
        for (size, expected) in ROOTS.iter().enumerate() {
            assert_eq!(root(&tree, size as u64), unhex(expected), "size {size}");
        }
    }

    #[test]
    fn inclusion_proofs_of_the_rfc_test_tree() {
        let tree = rfc_tree();
        let vectors: [(u64, u64, &[&str]); 7] = [
            (0, 1, &[]),
            (0, 2, &["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"]),
            (1, 2, &["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"]),
            (2, 3, &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
            (
                1,
                5,
                &[
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ];
        for (index, size, expected) in vectors {
            let proof = inclusion_proof(&tree, index, size);
            let expected: Vec<Hash> = expected.iter().map(|h| unhex(h)).collect();
            assert_eq!(proof, expected, "leaf {index} of {size}");
            let leaf = tree.subtree(Node { level: 0, index });
            assert!(verify_inclusion(&leaf, index, size, &proof, &unhex(ROOTS[size as usize])));
            assert!(!verify_inclusion(&leaf, index, size, &proof, &unhex(ROOTS[0])));
        }
    }

    #[test]
    fn consistency_proofs_of_the_rfc_test_tree() {
        let tree = rfc_tree();
        let vectors: [(u64, u64, &[&str]); 4] = [
            (1, 1, &[]),
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (from, to, expected) in vectors {
            let proof = consistency_proof(&tree, from, to);
            let expected: Vec<Hash> = expected.iter().map(|h| unhex(h)).collect();
            assert_eq!(proof, expected, "{from} to {to}");
            let (a, b) = (unhex(ROOTS[from as usize]), unhex(ROOTS[to as usize]));
            assert!(verify_consistency(from, to, &a, &b, &proof), "{from} to {to}");
        }
    }

    #[test]
    fn appending_by_the_frontier_makes_the_same_subtrees_as_the_whole_tree() {
        let leaves: Vec<Hash> = (0..300u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut whole = MemoryTree::default();
        let mut stored: HashMap<Node, Hash> = HashMap::new();
        for (size, leaf) in leaves.iter().enumerate() {
            // Only the frontier survives between appends, as a store would fetch it.
            let mut known: HashMap<Node, Hash> =
                frontier(size as u64).into_iter().map(|n| (n, stored[&n])).collect();
            for (node, hash) in append(&mut known, size as u64, *leaf) {
                stored.insert(node, hash);
            }
            whole.push(*leaf);
        }
        for (node, hash) in &stored {
            assert_eq!(whole.subtree(*node), *hash, "{node:?}");
        }
        assert_eq!(root(&|n| stored[&n], 300), root(&whole, 300));
    }

    #[test]
    fn a_question_needs_a_few_subtrees_whatever_the_size() {
        let size = 1_000_000;
        assert!(needed(|t| root(&t, size)).len() <= 20);
        assert!(needed(|t| inclusion_proof(&t, 123_456, size)).len() <= 40);
        assert!(needed(|t| consistency_proof(&t, 654_321, size)).len() <= 40);
        let tree = MemoryTree::of(&(0..1000u32).map(u32::to_be_bytes).collect::<Vec<_>>());
        let nodes = needed(|t| consistency_proof(&t, 333, 999));
        let fetched: HashMap<Node, Hash> = nodes.iter().map(|n| (*n, tree.subtree(*n))).collect();
        assert_eq!(
            consistency_proof(&|n: Node| fetched[&n], 333, 999),
            consistency_proof(&tree, 333, 999)
        );
    }

    proptest! {
        #[test]
        fn every_inclusion_proof_verifies_and_a_changed_one_does_not(
            size in 1u64..300,
            pick in any::<u64>(),
            flip in 0usize..32,
        ) {
            let tree = MemoryTree::of(&(0..size).map(u64::to_be_bytes).collect::<Vec<_>>());
            let top = root(&tree, size);
            let index = pick % size;
            let leaf = tree.subtree(Node { level: 0, index });
            let proof = inclusion_proof(&tree, index, size);
            prop_assert!(verify_inclusion(&leaf, index, size, &proof, &top));
            let mut changed_leaf = leaf;
            changed_leaf[flip] ^= 1;
            prop_assert!(!verify_inclusion(&changed_leaf, index, size, &proof, &top));
            if !proof.is_empty() {
                let mut changed = proof.clone();
                changed[pick as usize % proof.len()][flip] ^= 1;
                prop_assert!(!verify_inclusion(&leaf, index, size, &changed, &top));
            }
        }

        #[test]
        fn every_consistency_proof_verifies_and_a_changed_one_does_not(
            to in 1u64..300,
            pick in any::<u64>(),
            flip in 0usize..32,
        ) {
            let tree = MemoryTree::of(&(0..to).map(u64::to_be_bytes).collect::<Vec<_>>());
            let from = 1 + pick % to;
            let (old, new) = (root(&tree, from), root(&tree, to));
            let proof = consistency_proof(&tree, from, to);
            prop_assert!(verify_consistency(from, to, &old, &new, &proof));
            let mut changed_old = old;
            changed_old[flip] ^= 1;
            prop_assert!(!verify_consistency(from, to, &changed_old, &new, &proof));
            if !proof.is_empty() {
                let mut changed = proof.clone();
                changed[pick as usize % proof.len()][flip] ^= 1;
                prop_assert!(!verify_consistency(from, to, &old, &new, &changed));
            }
            // A rewritten leaf inside the old tree: the new tree no longer extends the old root.
            let mut leaves: Vec<Hash> = (0..to).map(|i| leaf_hash(&i.to_be_bytes())).collect();
            leaves[(pick % from) as usize][flip] ^= 1;
            let mut rewritten = MemoryTree::default();
            for leaf in leaves {
                rewritten.push(leaf);
            }
            let forged = consistency_proof(&rewritten, from, to);
            prop_assert!(!verify_consistency(from, to, &old, &root(&rewritten, to), &forged));
        }
    }
}
