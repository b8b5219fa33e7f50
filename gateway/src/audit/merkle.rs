//! RFC 6962 / RFC 9162 Merkle tree hashing over the exchange log, pure (no I/O).
//!
//! Conventions (fixed by the published proto, so auditors' tools can recompute them):
//! - leaf `i` (0-based) is the record with `seq = i + 1`;
//! - leaf hash = SHA-256(0x00 ‖ record_hash), interior hash = SHA-256(0x01 ‖ left ‖ right);
//! - the root of the empty tree is SHA-256("").
//!
//! # Storage design
//!
//! The store keeps every completed node at level ≥ 1 (returned by [`Frontier::push`] as each leaf is
//! appended) and derives level-0 nodes (leaf hashes) from the records themselves. Every range `D[a:b]`
//! whose hash the RFC 6962 recursion asks for is aligned: it decomposes into O(log n) perfect, aligned
//! subtrees (a [`NodeId`] each), whose hashes folded right to left give `MTH(D[a:b])`. A proof therefore
//! needs at most O(log² n) stored nodes — in practice O(log n) — and never a scan of the log.
//!
//! Every proof is built in two steps so the store can fetch everything in one query:
//! 1. `*_nodes` lists exactly the [`NodeId`]s the assembly will read — no more, no fewer, no duplicates;
//! 2. the assembly function reads them from a map and returns the proof, byte-identical to RFC 6962
//!    `PATH` / `PROOF` (same elements, same order), or `None` if a node is missing.
//!
//! The proof shapes are planned once (a list of ranges, one per proof element) and both steps are
//! derived from the same plan, so they cannot drift apart.

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};

use super::Hash;

/// SHA-256(0x00 ‖ record_hash): the RFC 6962 leaf hash of a record.
pub fn leaf_hash(record_hash: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(record_hash);
    h.finalize().into()
}

/// SHA-256(0x01 ‖ left ‖ right): the RFC 6962 interior node hash.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// SHA-256(""): the root of the empty tree (RFC 6962 §2.1).
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The perfect subtree covering leaves [index·2^level, (index+1)·2^level).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    pub level: u8,
    pub index: u64,
}

/// Compact range of leaves [0, size): hashes of the perfect subtrees of size's binary decomposition,
/// left (largest) to right. This is all the writer needs in memory to append and to compute the root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// One hash per set bit of `size`, most significant bit first.
    hashes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// Number of leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash. Returns every node it completes at level >= 1 (NodeId, hash), lowest level
    /// first, which the store persists so proofs never need to rehash the log.
    ///
    /// A tree of 2^64 − 1 leaves cannot grow further; pushing onto it is a logic error (it panics
    /// in debug builds via the overflowing add), unreachable for a log whose leaves are database rows.
    pub fn push(&mut self, leaf: Hash) -> Vec<(NodeId, Hash)> {
        let index = self.size;
        let mut completed = Vec::new();
        let mut acc = leaf;
        let mut level: u8 = 0;
        // Each trailing 1-bit of the old size is a perfect subtree the new leaf completes a sibling of.
        while (index >> level) & 1 == 1 {
            let Some(left) = self.hashes.pop() else {
                // Unreachable: `hashes` has one entry per set bit of `size`.
                break;
            };
            acc = node_hash(&left, &acc);
            level += 1;
            completed.push((NodeId { level, index: index >> level }, acc));
        }
        self.hashes.push(acc);
        self.size = index + 1;
        completed
    }

    /// RFC 6962 MTH of the leaves so far (empty_root() for size 0).
    pub fn root(&self) -> Hash {
        fold_right(self.hashes.iter().copied()).unwrap_or_else(empty_root)
    }

    /// NodeIds making up the frontier of a tree of `size` (level 0 ids included where the decomposition
    /// has a single leaf), largest first — the order [`Frontier::from_nodes`] expects.
    pub fn node_ids(size: u64) -> Vec<NodeId> {
        decompose(0, size)
    }

    /// Rebuilds from the hashes of `node_ids(size)`, in that order. None if the count is wrong.
    pub fn from_nodes(size: u64, hashes: Vec<Hash>) -> Option<Frontier> {
        if hashes.len() != size.count_ones() as usize {
            return None;
        }
        Some(Frontier { size, hashes })
    }
}

/// The perfect aligned subtrees covering [start, end), left to right. For the aligned ranges the RFC
/// recursion produces this is the binary decomposition of `end - start`, largest first.
fn decompose(start: u64, end: u64) -> Vec<NodeId> {
    let mut out = Vec::new();
    let mut a = start;
    while a < end {
        let remaining = end - a;
        // Largest power of two that fits in the remaining length and to which `a` is aligned.
        let mut level = 63 - remaining.leading_zeros();
        if a != 0 {
            level = level.min(a.trailing_zeros());
        }
        out.push(NodeId { level: level as u8, index: a >> level });
        a += 1u64 << level;
    }
    out
}

/// MTH of consecutive perfect subtrees given left to right: h₁ ⊕ (h₂ ⊕ (… ⊕ hᵣ)). None if empty.
fn fold_right(hashes: impl DoubleEndedIterator<Item = Hash>) -> Option<Hash> {
    let mut it = hashes.rev();
    let last = it.next()?;
    Some(it.fold(last, |acc, left| node_hash(&left, &acc)))
}

/// Largest power of two strictly less than `n` (n >= 2), the RFC 6962 split point.
fn split(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

/// A leaf range [start, end) whose MTH is one proof element.
type Range = (u64, u64);

/// RFC 6962 §2.1.1 PATH(m, D[lo:hi]) as ranges, deepest first.
fn plan_path(m: u64, lo: u64, hi: u64, out: &mut Vec<Range>) {
    if hi - lo <= 1 {
        return;
    }
    let k = split(hi - lo);
    if m < lo + k {
        plan_path(m, lo, lo + k, out);
        out.push((lo + k, hi));
    } else {
        plan_path(m, lo + k, hi, out);
        out.push((lo, lo + k));
    }
}

/// RFC 6962 §2.1.2 SUBPROOF(m, D[lo:hi], b) as ranges (`m` absolute, lo < m <= hi).
fn plan_subproof(m: u64, lo: u64, hi: u64, complete: bool, out: &mut Vec<Range>) {
    if m == hi {
        if !complete {
            out.push((lo, hi));
        }
        return;
    }
    let k = split(hi - lo);
    if m <= lo + k {
        plan_subproof(m, lo, lo + k, complete, out);
        out.push((lo + k, hi));
    } else {
        plan_subproof(m, lo + k, hi, false, out);
        out.push((lo, lo + k));
    }
}

fn inclusion_plan(index: u64, size: u64) -> Option<Vec<Range>> {
    if index >= size {
        return None;
    }
    let mut out = Vec::new();
    plan_path(index, 0, size, &mut out);
    Some(out)
}

fn consistency_plan(first: u64, second: u64) -> Option<Vec<Range>> {
    if first > second {
        return None;
    }
    let mut out = Vec::new();
    // PROOF(0, ·) is undefined in RFC 6962 and PROOF(n, D[n]) is empty; both prove nothing beyond the
    // roots themselves, so both are empty proofs.
    if first > 0 && first < second {
        plan_subproof(first, 0, second, true, &mut out);
    }
    Some(out)
}

/// Every node the plan reads, in plan order, without duplicates.
fn plan_nodes(plan: &[Range]) -> Vec<NodeId> {
    let mut seen = HashSet::new();
    plan.iter().flat_map(|&(a, b)| decompose(a, b)).filter(|id| seen.insert(*id)).collect()
}

fn range_hash(start: u64, end: u64, nodes: &HashMap<NodeId, Hash>) -> Option<Hash> {
    let ids = decompose(start, end);
    let hashes: Option<Vec<Hash>> = ids.iter().map(|id| nodes.get(id).copied()).collect();
    fold_right(hashes?.into_iter())
}

fn assemble(plan: &[Range], nodes: &HashMap<NodeId, Hash>) -> Option<Vec<Hash>> {
    plan.iter().map(|&(a, b)| range_hash(a, b, nodes)).collect()
}

/// NodeIds (any level, level 0 = leaf hashes) whose hashes are needed to build the proof.
/// Empty when `index >= size` (there is no proof).
pub fn inclusion_proof_nodes(index: u64, size: u64) -> Vec<NodeId> {
    inclusion_plan(index, size).map(|p| plan_nodes(&p)).unwrap_or_default()
}

/// RFC 6962 PATH(index, D[0:size]). None if `index >= size` or a needed node is missing.
pub fn inclusion_proof(index: u64, size: u64, nodes: &HashMap<NodeId, Hash>) -> Option<Vec<Hash>> {
    assemble(&inclusion_plan(index, size)?, nodes)
}

/// NodeIds whose hashes are needed to build the consistency proof (empty when `first > second`, or
/// when the proof is empty: `first == 0` or `first == second`).
pub fn consistency_proof_nodes(first: u64, second: u64) -> Vec<NodeId> {
    consistency_plan(first, second).map(|p| plan_nodes(&p)).unwrap_or_default()
}

/// RFC 6962 PROOF(first, D[0:second]); the empty proof when `first == 0` or `first == second`.
/// None if `first > second` or a needed node is missing.
pub fn consistency_proof(first: u64, second: u64, nodes: &HashMap<NodeId, Hash>) -> Option<Vec<Hash>> {
    assemble(&consistency_plan(first, second)?, nodes)
}

/// MTH of [0,size) from stored perfect-subtree nodes (ids from `root_nodes(size)`), used to compute
/// the root at a past size (a checkpoint's) without the frontier of that time.
pub fn root_nodes(size: u64) -> Vec<NodeId> {
    decompose(0, size)
}

/// MTH of [0,size) from the nodes listed by [`root_nodes`]; `empty_root()` for size 0. None if a node is
/// missing.
pub fn root_from_nodes(size: u64, nodes: &HashMap<NodeId, Hash>) -> Option<Hash> {
    if size == 0 {
        return Some(empty_root());
    }
    range_hash(0, size, nodes)
}

/// RFC 9162 §2.1.3.2: does `path` prove that `leaf_hash` is leaf `index` of the tree of `size` with
/// `root`?
pub fn verify_inclusion(leaf_hash: &Hash, index: u64, size: u64, path: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf_hash;
    for p in path {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && r == *root
}

/// RFC 9162 §2.1.4.2: does `proof` show the tree of `second` leaves with `second_root` extends the tree
/// of `first` leaves with `first_root`?
///
/// Beyond the RFC (which covers 0 < first < second): `first == second` holds iff the proof is empty and
/// the roots are equal; `first == 0` holds iff the proof is empty and `first_root` is the empty root
/// (every tree extends the empty one); `first > second` never holds.
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> bool {
    if first > second {
        return false;
    }
    if first == 0 {
        return proof.is_empty() && *first_root == empty_root();
    }
    if first == second {
        return proof.is_empty() && first_root == second_root;
    }
    if proof.is_empty() {
        return false;
    }
    // Step 2: if `first` is a power of two its root is itself the first element of the path.
    let mut path: Vec<&Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(first_root);
    }
    path.extend(proof.iter());

    let (mut fnode, mut snode) = (first - 1, second - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let mut fr = *path[0];
    let mut sr = *path[0];
    for c in &path[1..] {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    fr == *first_root && sr == *second_root && snode == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // ---- naive reference: RFC 6962 §2.1 over in-memory leaf hashes ----

    fn k_of(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    fn mth(d: &[Hash]) -> Hash {
        match d.len() {
            0 => empty_root(),
            1 => d[0],
            n => {
                let k = k_of(n);
                node_hash(&mth(&d[..k]), &mth(&d[k..]))
            }
        }
    }

    fn path(m: usize, d: &[Hash]) -> Vec<Hash> {
        let n = d.len();
        if n <= 1 {
            return vec![];
        }
        let k = k_of(n);
        if m < k {
            let mut p = path(m, &d[..k]);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = path(m - k, &d[k..]);
            p.push(mth(&d[..k]));
            p
        }
    }

    fn subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
        let n = d.len();
        if m == n {
            return if b { vec![] } else { vec![mth(d)] };
        }
        let k = k_of(n);
        if m <= k {
            let mut p = subproof(m, &d[..k], b);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = subproof(m - k, &d[k..], false);
            p.push(mth(&d[..k]));
            p
        }
    }

    fn proof(m: usize, d: &[Hash]) -> Vec<Hash> {
        if m == 0 {
            return vec![];
        }
        subproof(m, d, true)
    }

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n as u64)
            .map(|i| {
                let mut record = [0u8; 32];
                record[..8].copy_from_slice(&i.to_be_bytes());
                record[31] = 0xa5;
                leaf_hash(&Sha256::digest(record).into())
            })
            .collect()
    }

    /// All nodes the store would hold for these leaves: level 0 from the leaves, level >= 1 from push.
    fn store(d: &[Hash]) -> (Frontier, HashMap<NodeId, Hash>) {
        let mut f = Frontier::new();
        let mut nodes = HashMap::new();
        for (i, l) in d.iter().enumerate() {
            nodes.insert(NodeId { level: 0, index: i as u64 }, *l);
            for (id, h) in f.push(*l) {
                assert!(id.level >= 1);
                assert!(nodes.insert(id, h).is_none(), "node {id:?} completed twice");
            }
        }
        (f, nodes)
    }

    fn only(nodes: &HashMap<NodeId, Hash>, ids: &[NodeId]) -> HashMap<NodeId, Hash> {
        ids.iter().map(|id| (*id, nodes[id])).collect()
    }

    fn flip(h: &Hash, byte: usize) -> Hash {
        let mut h = *h;
        h[byte] ^= 0x01;
        h
    }

    fn hd(s: &str) -> Hash {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// Checks PATH for one (index, size): equality with the reference, exact node list, verification.
    /// `d` must be `leaves(d.len())` (wrong-size checks extend it).
    fn check_inclusion(d: &[Hash], nodes: &HashMap<NodeId, Hash>, i: usize, strict_nodes: bool) {
        let n = d.len();
        let ids = inclusion_proof_nodes(i as u64, n as u64);
        let sub = only(nodes, &ids);
        let got = inclusion_proof(i as u64, n as u64, &sub).expect("proof from its own node list");
        let want = path(i, d);
        assert_eq!(got, want, "PATH({i}, D[{n}])");
        if strict_nodes {
            let unique: HashSet<_> = ids.iter().collect();
            assert_eq!(unique.len(), ids.len(), "duplicate node ids");
            for id in &ids {
                let mut less = sub.clone();
                less.remove(id);
                assert!(inclusion_proof(i as u64, n as u64, &less).is_none(), "{id:?} unused");
            }
        }
        let root = mth(d);
        assert!(verify_inclusion(&d[i], i as u64, n as u64, &got, &root));
        assert!(!verify_inclusion(&flip(&d[i], 0), i as u64, n as u64, &got, &root));
        assert!(!verify_inclusion(&d[i], i as u64, n as u64, &got, &flip(&root, 31)));
        for j in 0..got.len() {
            for byte in [0, 17, 31] {
                let mut bad = got.clone();
                bad[j] = flip(&bad[j], byte);
                assert!(!verify_inclusion(&d[i], i as u64, n as u64, &bad, &root));
            }
        }
        for wrong_i in [i.wrapping_sub(1), i + 1, i ^ 1, n] {
            if wrong_i != i && wrong_i < usize::MAX {
                // A different index can only verify if it's the same leaf position, which it isn't.
                assert!(!verify_inclusion(&d[i], wrong_i as u64, n as u64, &got, &root), "index {wrong_i}");
            }
        }
        // A wrong size is caught against the root of a tree of that size (the verifier takes both from
        // one signed checkpoint; the proof itself does not commit to the size).
        for wrong_n in [n - 1, n + 1, 2 * n] {
            if wrong_n != n && wrong_n > i {
                let wrong_root = mth(&leaves(wrong_n));
                assert!(
                    !verify_inclusion(&d[i], i as u64, wrong_n as u64, &got, &wrong_root),
                    "size {wrong_n}"
                );
            }
        }
        let mut longer = got.clone();
        longer.push(root);
        assert!(!verify_inclusion(&d[i], i as u64, n as u64, &longer, &root));
        if !got.is_empty() {
            assert!(!verify_inclusion(&d[i], i as u64, n as u64, &got[..got.len() - 1], &root));
        }
    }

    /// Checks PROOF for one (m, n) pair; `d` must be `leaves(d.len())`.
    fn check_consistency(d: &[Hash], nodes: &HashMap<NodeId, Hash>, m: usize, strict_nodes: bool) {
        let n = d.len();
        let ids = consistency_proof_nodes(m as u64, n as u64);
        let sub = only(nodes, &ids);
        let got = consistency_proof(m as u64, n as u64, &sub).expect("proof from its own node list");
        assert_eq!(got, proof(m, d), "PROOF({m}, D[{n}])");
        if strict_nodes {
            let unique: HashSet<_> = ids.iter().collect();
            assert_eq!(unique.len(), ids.len(), "duplicate node ids");
            for id in &ids {
                let mut less = sub.clone();
                less.remove(id);
                assert!(consistency_proof(m as u64, n as u64, &less).is_none(), "{id:?} unused");
            }
        }
        let (r1, r2) = (mth(&d[..m]), mth(d));
        assert!(verify_consistency(m as u64, n as u64, &r1, &r2, &got), "verify {m} -> {n}");
        assert!(!verify_consistency(m as u64, n as u64, &flip(&r1, 3), &r2, &got));
        if m == 0 {
            // The empty proof from the empty tree says nothing about the second root.
            assert!(!verify_consistency(0, n as u64, &r1, &r2, &[r2]));
            return;
        }
        assert!(!verify_consistency(m as u64, n as u64, &r1, &flip(&r2, 3), &got));
        for j in 0..got.len() {
            for byte in [0, 31] {
                let mut bad = got.clone();
                bad[j] = flip(&bad[j], byte);
                assert!(!verify_consistency(m as u64, n as u64, &r1, &r2, &bad), "flip {j}/{byte}");
            }
        }
        // Wrong sizes, each with the true root of a tree of that size (see check_inclusion).
        for wrong_m in [m - 1, m + 1] {
            // Every tree extends the empty one, so first = 0 is no wrong size.
            if wrong_m != 0 && wrong_m <= n {
                let wrong_r1 = mth(&d[..wrong_m]);
                assert!(
                    !verify_consistency(wrong_m as u64, n as u64, &wrong_r1, &r2, &got),
                    "first {wrong_m}"
                );
            }
        }
        for wrong_n in [n - 1, n + 1] {
            if wrong_n >= m {
                let wrong_r2 = mth(&leaves(wrong_n));
                assert!(
                    !verify_consistency(m as u64, wrong_n as u64, &r1, &wrong_r2, &got),
                    "second {wrong_n}"
                );
            }
        }
        let mut longer = got.clone();
        longer.push(r2);
        assert!(!verify_consistency(m as u64, n as u64, &r1, &r2, &longer));
        if !got.is_empty() {
            assert!(!verify_consistency(m as u64, n as u64, &r1, &r2, &got[..got.len() - 1]));
        }
    }

    #[test]
    fn hashing_primitives() {
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Frontier::new().root(), empty_root());
        assert_eq!(root_from_nodes(0, &HashMap::new()), Some(empty_root()));
        let r = [7u8; 32];
        let mut pre = vec![0u8];
        pre.extend_from_slice(&r);
        assert_eq!(leaf_hash(&r), <Hash>::from(Sha256::digest(&pre)));
        let mut pre = vec![1u8];
        pre.extend_from_slice(&r);
        pre.extend_from_slice(&[9u8; 32]);
        assert_eq!(node_hash(&r, &[9u8; 32]), <Hash>::from(Sha256::digest(&pre)));
    }

    /// The certificate-transparency RFC 6962 test data (the eight leaves of
    /// merkle_tree_test.cc, also in Go's transparency-dev/merkle testonly package).
    #[test]
    fn ct_test_vectors() {
        let data: [&[u8]; 8] = [
            b"",
            b"\x00",
            b"\x10",
            b"\x20\x21",
            b"\x30\x31",
            b"\x40\x41\x42\x43",
            b"\x50\x51\x52\x53\x54\x55\x56\x57",
            b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
        ];
        let roots = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        // The data are arbitrary byte strings, so the leaf hash is computed directly here.
        let d: Vec<Hash> = data
            .iter()
            .map(|x| {
                let mut h = Sha256::new();
                h.update([0u8]);
                h.update(x);
                h.finalize().into()
            })
            .collect();
        let mut f = Frontier::new();
        for (n, want) in roots.iter().enumerate() {
            f.push(d[n]);
            assert_eq!(hex::encode(f.root()), *want, "root of size {}", n + 1);
        }
        let (_, nodes) = store(&d);
        let paths: [(u64, u64, &[&str]); 3] = [
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
            (2, 3, &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
        ];
        for (i, n, want) in paths {
            let want: Vec<Hash> = want.iter().map(|s| hd(s)).collect();
            assert_eq!(inclusion_proof(i, n, &nodes).unwrap(), want, "PATH({i}, {n})");
            assert!(verify_inclusion(&d[i as usize], i, n, &want, &hd(roots[n as usize - 1])));
        }
        let proofs: [(u64, u64, &[&str]); 4] = [
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
        for (m, n, want) in proofs {
            let want: Vec<Hash> = want.iter().map(|s| hd(s)).collect();
            assert_eq!(consistency_proof(m, n, &nodes).unwrap(), want, "PROOF({m}, {n})");
            let (r1, r2) = (hd(roots[m as usize - 1]), hd(roots[n as usize - 1]));
            assert!(verify_consistency(m, n, &r1, &r2, &want));
        }
    }

    #[test]
    fn all_small_trees_match_reference() {
        let all = leaves(70);
        for n in 1..=70usize {
            let d = &all[..n];
            let (f, nodes) = store(d);
            let root = mth(d);
            assert_eq!(f.size(), n as u64);
            assert_eq!(f.root(), root, "root {n}");
            let rn = root_nodes(n as u64);
            assert_eq!(root_from_nodes(n as u64, &only(&nodes, &rn)), Some(root));
            for i in 0..n {
                check_inclusion(d, &nodes, i, true);
            }
            for m in 0..=n {
                check_consistency(d, &nodes, m, true);
            }
        }
    }

    #[test]
    fn push_completes_exactly_the_perfect_subtrees() {
        let d = leaves(70);
        let mut f = Frontier::new();
        for (i, l) in d.iter().enumerate() {
            let completed = f.push(*l);
            // Leaf i completes one node per trailing one bit of i.
            assert_eq!(completed.len(), (i as u64).trailing_ones() as usize);
            for (id, h) in completed {
                let start = (id.index << id.level) as usize;
                let end = start + (1usize << id.level);
                assert_eq!(end, i + 1, "{id:?} must end at the new leaf");
                assert_eq!(h, mth(&d[start..end]), "{id:?}");
            }
        }
    }

    #[test]
    fn frontier_round_trips_through_nodes() {
        let d = leaves(70);
        let (_, nodes) = store(&d);
        let mut f = Frontier::new();
        for n in 0..=70u64 {
            let ids = Frontier::node_ids(n);
            assert_eq!(ids.len(), n.count_ones() as usize);
            assert_eq!(ids, root_nodes(n));
            let hashes: Vec<Hash> = ids.iter().map(|id| nodes[id]).collect();
            let g = Frontier::from_nodes(n, hashes.clone()).unwrap();
            assert_eq!(g, f, "size {n}");
            assert_eq!(g.root(), mth(&d[..n as usize]));
            let mut short = hashes.clone();
            short.push(empty_root());
            assert!(Frontier::from_nodes(n, short).is_none());
            if !hashes.is_empty() {
                assert!(Frontier::from_nodes(n, hashes[1..].to_vec()).is_none());
            }
            // Keep appending to the rebuilt one and to the original: they stay equal.
            if (n as usize) < d.len() {
                let mut g = g;
                assert_eq!(g.push(d[n as usize]), f.push(d[n as usize]));
                assert_eq!(g, f);
            }
        }
    }

    #[test]
    fn edge_cases() {
        let nodes = HashMap::new();
        assert!(inclusion_proof(0, 0, &nodes).is_none());
        assert!(inclusion_proof(5, 5, &nodes).is_none());
        assert!(inclusion_proof_nodes(5, 5).is_empty());
        assert!(consistency_proof(6, 5, &nodes).is_none());
        assert!(consistency_proof_nodes(6, 5).is_empty());
        assert_eq!(consistency_proof(0, 5, &nodes), Some(vec![]));
        assert_eq!(consistency_proof(5, 5, &nodes), Some(vec![]));
        assert!(inclusion_proof(0, 2, &nodes).is_none(), "missing nodes give None");
        assert!(root_from_nodes(3, &nodes).is_none());
        let e = empty_root();
        assert!(verify_consistency(0, 0, &e, &e, &[]));
        assert!(verify_consistency(0, 9, &e, &[1; 32], &[]));
        assert!(!verify_consistency(0, 9, &[1; 32], &[1; 32], &[]));
        assert!(!verify_consistency(0, 9, &e, &[1; 32], &[e]));
        assert!(!verify_consistency(3, 3, &e, &[1; 32], &[]));
        assert!(!verify_consistency(4, 3, &e, &e, &[]));
        assert!(!verify_consistency(2, 3, &e, &e, &[]));
        assert!(!verify_inclusion(&e, 0, 0, &[], &e));
        assert!(verify_inclusion(&e, 0, 1, &[], &e));
        // Node ids near the top of the u64 range stay in range.
        assert!(!inclusion_proof_nodes(u64::MAX - 1, u64::MAX).is_empty());
        assert!(!consistency_proof_nodes(u64::MAX - 1, u64::MAX).is_empty());
        assert_eq!(root_nodes(u64::MAX).len(), 64);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn larger_trees_match_reference(n in 71usize..1200, seed in any::<u64>()) {
            let d = leaves(n);
            let (f, nodes) = store(&d);
            prop_assert_eq!(f.root(), mth(&d));
            let mut pick = seed;
            for _ in 0..4 {
                pick = pick.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let i = (pick >> 20) as usize % n;
                check_inclusion(&d, &nodes, i, false);
                check_consistency(&d, &nodes, i, false);
                check_consistency(&d, &nodes, i + 1, false);
            }
            check_inclusion(&d, &nodes, n - 1, true);
            check_consistency(&d, &nodes, n / 2 + 1, true);
        }

        #[test]
        fn proof_node_counts_are_logarithmic(size in 1u64..u64::MAX, a in any::<u64>()) {
            let i = a % size;
            let bound = 64 * 2;
            prop_assert!(inclusion_proof_nodes(i, size).len() <= bound);
            prop_assert!(consistency_proof_nodes(i, size).len() <= bound);
            // Every node is complete within the tree.
            for id in inclusion_proof_nodes(i, size).into_iter().chain(consistency_proof_nodes(i, size)) {
                let end = (id.index as u128 + 1) << id.level;
                prop_assert!(end <= size as u128);
            }
        }
    }
}
