//! Signed checkpoints of organizations' audit trails: kept by the audit view each time a
//! trail grows, signed on demand for the head, and checked against the live trail by
//! `audit verify --checkpoint`.

use std::sync::Arc;

use keyledger_domain::merkle::{self, Node, Subtrees as _};
use keyledger_infra::crypto::{verify_signature, AuditSigner};
use keyledger_projections::audit_tree::{self, Checkpoint, CheckpointSigner};
use keyledger_store::Database;

/// The audit view's signer: the configured audit signing key.
#[derive(Debug)]
pub struct ViewSigner(pub Arc<AuditSigner>);

impl CheckpointSigner for ViewSigner {
    fn key_id(&self) -> &str {
        self.0.key_id()
    }

    fn sign(&self, text: &str) -> String {
        self.0.sign(text.as_bytes())
    }
}

/// The checkpoint of `org`'s trail as it stands: the one kept for its size, else a new one,
/// signed now and kept. `None` while the trail is empty.
///
/// # Errors
/// The database's error.
pub async fn current(
    db: &Database,
    signer: &Arc<AuditSigner>,
    org: &str,
) -> Result<Option<Checkpoint>, sqlx::Error> {
    let size = audit_tree::size(db, org).await?;
    if size == 0 {
        return Ok(None);
    }
    if let Some(kept) = audit_tree::kept_at(db, org, size as i64).await? {
        return Ok(Some(kept));
    }
    let root = audit_tree::root(db, org, size).await?;
    let checkpoint = audit_tree::sign(&ViewSigner(Arc::clone(signer)), org, size, &root);
    audit_tree::keep(db, &checkpoint).await.map(Some)
}

/// What checking a saved checkpoint against the live trail found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The live trail's first `tree_size` entries are the history the checkpoint signed.
    Consistent { tree_size: u64, live_size: u64 },
    /// The signature does not verify with any key that has signed here (or the named key is
    /// unknown).
    BadSignature,
    /// The checkpoint is of another organization.
    OtherOrg(String),
    /// The trail is shorter than the checkpoint: entries were removed.
    Shortened { tree_size: u64, live_size: u64 },
    /// The history differs: `first` is the first entry that differs, or the first entries
    /// `between` holds it, when the evidence left cannot narrow it to one.
    Rewritten { first: Option<u64>, between: (u64, u64) },
}

/// Checks `saved` against `org`'s live trail: its signature with `keys` (key id, public key),
/// then that the live trail's first `tree_size` entries hash to its root. Where they do not,
/// finds the first entry that differs from the evidence that is left and can be trusted: the
/// kept tree's hashes if they still fold to the signed root, else the kept checkpoints whose
/// signatures verify.
///
/// # Errors
/// The database's error.
pub async fn check(
    db: &Database,
    org: &str,
    saved: &Checkpoint,
    keys: &[(String, String)],
) -> Result<Finding, sqlx::Error> {
    if saved.org != org {
        return Ok(Finding::OtherOrg(saved.org.clone()));
    }
    if !signed(saved, keys) {
        return Ok(Finding::BadSignature);
    }
    let tree_size = saved.tree_size.max(0) as u64;
    let live_size = audit_tree::size(db, org).await?;
    if live_size < tree_size {
        return Ok(Finding::Shortened { tree_size, live_size });
    }
    // The live trail's own leaves, not the kept tree: that could have been rewritten too.
    let live = audit_tree::leaves(db, org, live_size).await?;
    let signed_root = hex::encode(merkle::root(&live, tree_size));
    if signed_root == saved.root_hash {
        return Ok(Finding::Consistent { tree_size, live_size });
    }
    if let Some(first) = first_difference_by_kept_tree(db, org, saved, &live).await? {
        return Ok(Finding::Rewritten { first: Some(first), between: (first, first) });
    }
    // Bracket it between the kept checkpoints that still match and the first that does not.
    let mut low = 0;
    let mut high = tree_size;
    let mut after = 0;
    loop {
        let page = audit_tree::kept(db, org, after, 1_000).await?;
        let Some(last) = page.last() else { break };
        after = last.tree_size;
        for kept in page.iter().filter(|k| signed(k, keys)) {
            let size = kept.tree_size.max(0) as u64;
            if size > tree_size {
                continue;
            }
            if hex::encode(merkle::root(&live, size)) == kept.root_hash {
                low = low.max(size);
            } else {
                high = high.min(size);
            }
        }
    }
    let first = (high == low + 1).then_some(high);
    Ok(Finding::Rewritten { first, between: (low + 1, high) })
}

fn signed(checkpoint: &Checkpoint, keys: &[(String, String)]) -> bool {
    keys.iter().filter(|(id, _)| *id == checkpoint.key_id).any(|(_, public_key)| {
        verify_signature(public_key, checkpoint.signed_text().as_bytes(), &checkpoint.signature)
    })
}

/// The first entry (seq) where the live trail differs from the kept tree, when the kept
/// tree's hashes still fold to the checkpoint's signed root (only then do they testify):
/// walks down from the root, each step checked against its parent, to the first leaf that
/// differs.
async fn first_difference_by_kept_tree(
    db: &Database,
    org: &str,
    saved: &Checkpoint,
    live: &merkle::MemoryTree,
) -> Result<Option<u64>, sqlx::Error> {
    let size = saved.tree_size.max(0) as u64;
    let nodes = audit_tree::kept_subtrees(db, org, size).await?;
    let kept = |node: Node| nodes.get(&node).copied().unwrap_or_default();
    if hex::encode(merkle::root(&kept, size)) != saved.root_hash {
        return Ok(None);
    }
    // Complete subtrees left to right, as the root folds them: the first that differs holds
    // the first leaf that differs; inside it, the left child first.
    for top in merkle::frontier(size) {
        let mut node = top;
        if kept(node) == live.subtree(node) {
            continue;
        }
        while node.level > 0 {
            let left = Node { level: node.level - 1, index: node.index * 2 };
            let right = Node { level: node.level - 1, index: node.index * 2 + 1 };
            if merkle::node_hash(&kept(left), &kept(right)) != kept(node) {
                return Ok(None);
            }
            node = if kept(left) == live.subtree(left) { right } else { left };
        }
        return Ok(Some(node.index + 1));
    }
    Ok(None)
}
