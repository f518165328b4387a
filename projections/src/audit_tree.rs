//! The audit trail as an RFC 6962 Merkle tree, and the signed checkpoints kept over it.
//!
//! Leaf `i` of an organization's tree is its entry with `seq = i + 1`, the leaf data that
//! entry's 32-byte hash. The audit view writes the hash of every complete subtree next to the
//! entries (`audit_tree`), so a root or a proof reads a few dozen rows however long the trail.
//! Checkpoints (`audit_checkpoints`) are not part of the view: they are signed when asked for
//! and kept, and a rebuild leaves them alone, which is what lets them testify against a
//! rewritten history.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hashlink::LruCache;

use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::projection::ProjectionError;
use keyledger_domain::merkle::{self, Hash, MemoryTree, Node};
use keyledger_store::{Arg, Database, Tx};

/// The leaf hash of an entry whose hash (hex) is `entry_hash`. A hash that is not 32 bytes of
/// hex (only an edit of the table makes one) is hashed as the text it is.
fn leaf(entry_hash: &str) -> Hash {
    match hex::decode(entry_hash) {
        Ok(bytes) if bytes.len() == 32 => merkle::leaf_hash(&bytes),
        _ => merkle::leaf_hash(entry_hash.as_bytes()),
    }
}

fn unhex(text: &str) -> Hash {
    let mut hash = [0u8; 32];
    if hex::decode_to_slice(text, &mut hash).is_err() {
        // Unreadable, so it matches nothing a proof or a root could need.
        hash = merkle::leaf_hash(text.as_bytes());
    }
    hash
}

/// `(level, idx) in ((…), …)` for `nodes`: their numbers are the tree's own, written inline.
fn node_list(nodes: &[Node]) -> String {
    let pairs: Vec<String> = nodes.iter().map(|n| format!("({}, {})", n.level, n.index)).collect();
    format!("(level, idx) in ({})", pairs.join(", "))
}

fn found(rows: Vec<(i64, i64, String)>) -> HashMap<Node, Hash> {
    rows.into_iter()
        .map(|(level, idx, hash)| (Node { level: level as u32, index: idx as u64 }, unhex(&hash)))
        .collect()
}

/// Signs checkpoints: the audit view keeps one each time an organization's trail grows.
pub trait CheckpointSigner: Send + Sync + std::fmt::Debug {
    /// The signing key's id.
    fn key_id(&self) -> &str;
    /// The signature of `text`, base64.
    fn sign(&self, text: &str) -> String;
}

/// A checkpoint of `org`'s tree of `tree_size` entries with `root`, signed now.
#[must_use]
pub fn sign(signer: &dyn CheckpointSigner, org: &str, tree_size: u64, root: &Hash) -> Checkpoint {
    let (tree_size, root_hash) = (tree_size as i64, hex::encode(root));
    let at = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    let signature = signer.sign(&signed_text(org, tree_size, &root_hash, &at));
    Checkpoint {
        org: org.to_owned(),
        tree_size,
        root_hash,
        at,
        key_id: signer.key_id().to_owned(),
        signature,
    }
}

/// New entries of one organization's trail, for its tree: the first one's seq, and the
/// hashes of it and those after it, in order.
#[derive(Debug, Default)]
pub(crate) struct Appended {
    pub first_seq: i64,
    /// The hash of the trail's last entry before these (the genesis hash for none).
    pub head_before: String,
    pub hashes: Vec<String>,
}

/// Organizations whose tree frontier the audit view keeps between steps, at most: a few
/// hundred bytes each.
const FRONTIERS_KEPT: usize = 10_000;

/// The frontier of each organization's tree as this projector's last step left it, so the next
/// step need not read it back (reading them was the costliest statement of a step of key
/// commands: 1.5 ms of PostgreSQL's time for 65 organizations). An entry is used only when the
/// trail, read at the start of the step, still ends in the entry it was kept for: the hash
/// chain then vouches for every entry before it, so for the tree too, whoever wrote since (a
/// rebuild, another replica's projector) and whether the step that kept it committed.
#[derive(Debug, Clone)]
pub struct KeptFrontiers(Arc<Mutex<LruCache<String, KeptFrontier>>>);

#[derive(Debug)]
struct KeptFrontier {
    size: u64,
    /// The hash of entry `size`, the trail's last then.
    head: String,
    frontier: HashMap<Node, Hash>,
}

impl Default for KeptFrontiers {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(LruCache::new(FRONTIERS_KEPT))))
    }
}

impl KeptFrontiers {
    /// The kept frontier of `org`'s tree, taken out, if its trail still ends where it was kept.
    fn take(&self, org: &str, new: &Appended) -> Option<HashMap<Node, Hash>> {
        let mut kept = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = kept.remove(org)?;
        let size = (new.first_seq - 1).max(0) as u64;
        (entry.size == size && entry.head == new.head_before).then_some(entry.frontier)
    }

    /// Keeps the frontier of `org`'s tree of `size` entries, the last one `head`, out of
    /// `known` (which holds it and more).
    fn keep(&self, org: &str, size: u64, head: &str, known: &HashMap<Node, Hash>) {
        let nodes = merkle::frontier(size);
        let frontier: HashMap<Node, Hash> =
            nodes.iter().filter_map(|node| known.get(node).map(|hash| (*node, *hash))).collect();
        if frontier.len() != nodes.len() {
            return;
        }
        let mut kept = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        kept.insert(org.to_owned(), KeptFrontier { size, head: head.to_owned(), frontier });
    }
}

/// Appends each organization's new entries to its tree, in the transaction that writes them to
/// the trail: one statement reads the frontiers not `kept`, one writes every new subtree and
/// one keeps every checkpoint, however many organizations the step holds. With a `signer`,
/// keeps a checkpoint of each size a tree grows through. A checkpoint kept for that size
/// already stays: after a rebuild over a log someone rewrote, the old one is what testifies to
/// the history as it was.
pub(crate) async fn append(
    tx: &mut Tx,
    appended: &HashMap<String, Appended>,
    signer: Option<&Arc<dyn CheckpointSigner>>,
    kept: &KeptFrontiers,
) -> Result<(), ProjectionError> {
    let mut known: HashMap<String, HashMap<Node, Hash>> = HashMap::new();
    let mut unknown: Vec<(&str, i64)> = Vec::new();
    for (org, new) in appended {
        match kept.take(org, new) {
            Some(frontier) => {
                known.insert(org.clone(), frontier);
            }
            None => unknown.push((org.as_str(), new.first_seq)),
        }
    }
    known.extend(frontiers(tx, &unknown).await?);
    let mut nodes: Vec<Vec<Arg>> = Vec::new();
    let mut checkpoints: Vec<Vec<Arg>> = Vec::new();
    for (org, new) in appended {
        let mut size = (new.first_seq - 1).max(0) as u64;
        let known = known.entry(org.clone()).or_default();
        let mut made: Vec<(Node, Hash)> = Vec::new();
        if known.len() < merkle::frontier(size).len() {
            // A trail written before its tree was kept: the tree of what is there first.
            size = rebuild_tree(tx, org, size, known, &mut made).await?;
        }
        for hash in &new.hashes {
            made.extend(merkle::append(known, size, leaf(hash)));
            size += 1;
            // One for every size the trail passes through, however many entries a step
            // brings: each is evidence that narrows where a later rewrite began.
            if let Some(signer) = signer {
                let root =
                    merkle::root(&|node| known.get(&node).copied().unwrap_or_default(), size);
                checkpoints.push(checkpoint_args(&sign(signer.as_ref(), org, size, &root)).into());
            }
        }
        if let Some(head) = new.hashes.last() {
            kept.keep(org, size, head, known);
        }
        nodes.extend(made.into_iter().map(|(node, hash)| {
            vec![
                Arg::Text(org.clone()),
                Arg::Int(i64::from(node.level)),
                Arg::Int(node.index as i64),
                Arg::Text(hex::encode(hash)),
            ]
        }));
    }
    tx.insert_rows("audit_tree", &["org_id", "level", "idx", "hash"], &nodes).await?;
    // One statement however many (on PostgreSQL, the same one every step, so prepared once).
    tx.upsert_rows(
        "audit_checkpoints",
        &CHECKPOINT_TABLE_COLUMNS,
        &checkpoints,
        "on conflict (org_id, tree_size) do nothing",
    )
    .await?;
    Ok(())
}

/// The frontier subtrees asked for (a JSON array of `{"o": org, "l": level, "i": index}`), each
/// looked up by its key. Written as a join, a plan made while the tree was still small (a
/// prepared statement's generic plan outlives it until the table is next analyzed) hashed the
/// array and scanned the whole tree on every projector step: 6,000 rows a step on average
/// within the first 20 seconds of a benchmark, and growing with every entry. One lookup per
/// subtree, each limited to one row, leaves the planner only the primary key.
pub const FRONTIERS_ON_POSTGRES: &str = "select t.org_id, t.level, t.idx, t.hash \
    from json_to_recordset($1::json) as w(o text, l bigint, i bigint) \
    cross join lateral (select org_id, level, idx, hash from audit_tree \
        where org_id = w.o and level = w.l and idx = w.i limit 1) as t";

/// The frontier subtrees of each organization in `orgs` before entry `first_seq` (those
/// appending needs), read in one statement that is the same whatever the number of
/// organizations (the wanted subtrees go as one JSON array), so it is prepared once.
async fn frontiers(
    tx: &mut Tx,
    orgs: &[(&str, i64)],
) -> Result<HashMap<String, HashMap<Node, Hash>>, ProjectionError> {
    let wanted: Vec<(&str, u32, u64)> = orgs
        .iter()
        .flat_map(|&(org, first_seq)| {
            merkle::frontier((first_seq - 1).max(0) as u64)
                .into_iter()
                .map(move |node| (org, node.level, node.index))
        })
        .collect();
    let mut known: HashMap<String, HashMap<Node, Hash>> = HashMap::new();
    if wanted.is_empty() {
        return Ok(known);
    }
    let sql = if tx.is_postgres() {
        FRONTIERS_ON_POSTGRES
    } else {
        "select t.org_id, t.level, t.idx, t.hash from json_each($1) w \
         join audit_tree t on t.org_id = json_extract(w.value, '$.o') \
          and t.level = json_extract(w.value, '$.l') and t.idx = json_extract(w.value, '$.i')"
    };
    let wanted: Vec<serde_json::Value> =
        wanted.iter().map(|(o, l, i)| serde_json::json!({"o": o, "l": l, "i": i})).collect();
    let wanted = serde_json::to_string(&wanted).unwrap_or_else(|_| "[]".to_owned());
    let rows: Vec<(String, i64, i64, String)> = tx.fetch_all(sql, &[Arg::Text(wanted)]).await?;
    for (org, level, idx, hash) in rows {
        let node = Node { level: level as u32, index: idx as u64 };
        known.entry(org).or_default().insert(node, unhex(&hash));
    }
    Ok(known)
}

/// Writes `org`'s tree again from its first `size` entries (their subtrees into `made`, the
/// frontier into `known`); the size it found.
async fn rebuild_tree(
    tx: &mut Tx,
    org: &str,
    size: u64,
    known: &mut HashMap<Node, Hash>,
    made: &mut Vec<(Node, Hash)>,
) -> Result<u64, ProjectionError> {
    let hashes: Vec<(String,)> = tx
        .fetch_all(
            "select hash from audit_log where org_id = $1 and seq <= $2 order by seq",
            &[Arg::Text(org.to_owned()), Arg::Int(size as i64)],
        )
        .await?;
    tx.execute("delete from audit_tree where org_id = $1", &[Arg::Text(org.to_owned())]).await?;
    known.clear();
    for (at, (hash,)) in hashes.iter().enumerate() {
        made.extend(merkle::append(known, at as u64, leaf(hash)));
    }
    Ok(hashes.len() as u64)
}

/// How many entries `org`'s trail has: its tree's size.
///
/// # Errors
/// The database's error.
pub async fn size(db: &Database, org: &str) -> Result<u64, sqlx::Error> {
    let rows: Vec<(Option<i64>,)> = db
        .fetch_all("select max(seq) from audit_log where org_id = $1", &[Arg::Text(org.to_owned())])
        .await?;
    Ok(rows.first().and_then(|r| r.0).unwrap_or(0).max(0) as u64)
}

/// Answers `question` about `org`'s tree from the complete subtrees it needs, fetched in one
/// statement; from the trail's leaves if the tree lacks some (a trail written before trees
/// were kept, not yet appended to since).
async fn answer<T>(
    db: &Database,
    org: &str,
    size: u64,
    question: impl Fn(&dyn Fn(Node) -> Hash) -> T,
) -> Result<T, sqlx::Error> {
    let nodes = merkle::needed(|tree| question(tree));
    if nodes.is_empty() {
        return Ok(question(&|_| [0u8; 32]));
    }
    let rows = db
        .fetch_all(
            &format!(
                "select level, idx, hash from audit_tree where org_id = $1 and {}",
                node_list(&nodes)
            ),
            &[Arg::Text(org.to_owned())],
        )
        .await?;
    let known = found(rows);
    if known.len() == nodes.len() {
        return Ok(question(&|node| known[&node]));
    }
    let tree = leaves(db, org, size).await?;
    Ok(question(&|node| merkle::Subtrees::subtree(&tree, node)))
}

/// The tree of `org`'s first `size` entries, from the trail.
///
/// # Errors
/// The database's error.
pub async fn leaves(db: &Database, org: &str, size: u64) -> Result<MemoryTree, sqlx::Error> {
    let hashes: Vec<(String,)> = db
        .fetch_all(
            "select hash from audit_log where org_id = $1 and seq <= $2 order by seq",
            &[Arg::Text(org.to_owned()), Arg::Int(size as i64)],
        )
        .await?;
    let mut tree = MemoryTree::default();
    for (hash,) in hashes {
        tree.push(leaf(&hash));
    }
    Ok(tree)
}

/// Every complete subtree kept for `org` within its first `size` entries, as they are now.
///
/// # Errors
/// The database's error.
pub async fn kept_subtrees(
    db: &Database,
    org: &str,
    size: u64,
) -> Result<HashMap<Node, Hash>, sqlx::Error> {
    let rows = db
        .fetch_all(
            "select level, idx, hash from audit_tree where org_id = $1 and ((idx + 1) << cast(level as integer)) <= $2",
            &[Arg::Text(org.to_owned()), Arg::Int(size as i64)],
        )
        .await?;
    Ok(found(rows))
}

/// The root of `org`'s tree of `size` entries (`size` at most the trail's length).
///
/// # Errors
/// The database's error.
pub async fn root(db: &Database, org: &str, size: u64) -> Result<Hash, sqlx::Error> {
    answer(db, org, size, |tree| merkle::root(&tree, size)).await
}

/// The inclusion proof of entry `seq` in `org`'s tree of `size` entries.
///
/// # Errors
/// The database's error.
pub async fn inclusion(
    db: &Database,
    org: &str,
    seq: u64,
    size: u64,
) -> Result<Vec<Hash>, sqlx::Error> {
    answer(db, org, size, |tree| merkle::inclusion_proof(&tree, seq - 1, size)).await
}

/// The proof that `org`'s tree of `to` entries extends its tree of `from`.
///
/// # Errors
/// The database's error.
pub async fn consistency(
    db: &Database,
    org: &str,
    from: u64,
    to: u64,
) -> Result<Vec<Hash>, sqlx::Error> {
    answer(db, org, to, |tree| merkle::consistency_proof(&tree, from, to)).await
}

/// A signed tree head: `org`'s trail of `tree_size` entries had this root at `at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Checkpoint {
    pub org: String,
    pub tree_size: i64,
    /// Hex.
    pub root_hash: String,
    /// RFC 3339, as signed.
    pub at: String,
    pub key_id: String,
    /// Base64 of the Ed25519 signature over [`Checkpoint::signed_text`].
    pub signature: String,
}

impl Checkpoint {
    /// What the signature is over.
    #[must_use]
    pub fn signed_text(&self) -> String {
        signed_text(&self.org, self.tree_size, &self.root_hash, &self.at)
    }
}

/// The text a checkpoint's signature is over.
#[must_use]
pub fn signed_text(org: &str, tree_size: i64, root_hash: &str, at: &str) -> String {
    format!("keyledger-checkpoint/v1\n{org}\n{tree_size}\n{root_hash}\n{at}\n")
}

const INSERT_CHECKPOINTS: &str =
    "insert into audit_checkpoints (org_id, tree_size, root_hash, at, key_id, signature) values";

const CHECKPOINT_TABLE_COLUMNS: [&str; 6] =
    ["org_id", "tree_size", "root_hash", "at", "key_id", "signature"];

fn checkpoint_args(checkpoint: &Checkpoint) -> [Arg; 6] {
    [
        Arg::Text(checkpoint.org.clone()),
        Arg::Int(checkpoint.tree_size),
        Arg::Text(checkpoint.root_hash.clone()),
        Arg::Text(checkpoint.at.clone()),
        Arg::Text(checkpoint.key_id.clone()),
        Arg::Text(checkpoint.signature.clone()),
    ]
}

const CHECKPOINT_COLUMNS: &str = "org_id as org, tree_size, root_hash, at, key_id, signature";

/// The checkpoint kept for `org` at `tree_size`, if one is.
///
/// # Errors
/// The database's error.
pub async fn kept_at(
    db: &Database,
    org: &str,
    tree_size: i64,
) -> Result<Option<Checkpoint>, sqlx::Error> {
    let rows: Vec<Checkpoint> = db
        .fetch_all(
            &format!(
                "select {CHECKPOINT_COLUMNS} from audit_checkpoints where org_id = $1 and tree_size = $2"
            ),
            &[Arg::Text(org.to_owned()), Arg::Int(tree_size)],
        )
        .await?;
    Ok(rows.into_iter().next())
}

/// Keeps `checkpoint`; if one for that size is kept already (signed meanwhile by another
/// request or replica), that one stays and is returned.
///
/// # Errors
/// The database's error.
pub async fn keep(db: &Database, checkpoint: &Checkpoint) -> Result<Checkpoint, sqlx::Error> {
    db.execute(
        &format!(
            "{INSERT_CHECKPOINTS} ($1, $2, $3, $4, $5, $6) on conflict (org_id, tree_size) do nothing"
        ),
        &checkpoint_args(checkpoint),
    )
    .await?;
    Ok(kept_at(db, &checkpoint.org, checkpoint.tree_size)
        .await?
        .unwrap_or_else(|| checkpoint.clone()))
}

/// `org`'s kept checkpoints for trees larger than `after`, smallest first, at most `limit`.
///
/// # Errors
/// The database's error.
pub async fn kept(
    db: &Database,
    org: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<Checkpoint>, sqlx::Error> {
    db.fetch_all(
        &format!(
            "select {CHECKPOINT_COLUMNS} from audit_checkpoints where org_id = $1 and tree_size > $2 \
             order by tree_size limit $3"
        ),
        &[Arg::Text(org.to_owned()), Arg::Int(after), Arg::Int(limit)],
    )
    .await
}

/// A key that signs, or has signed, checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct SigningKey {
    pub key_id: String,
    /// Base64 of the 32-byte Ed25519 public key.
    pub public_key: String,
}

/// Every key that has signed checkpoints here, the oldest first.
///
/// # Errors
/// The database's error.
pub async fn signing_keys(db: &Database) -> Result<Vec<SigningKey>, sqlx::Error> {
    db.fetch_all("select key_id, public_key from audit_signing_keys order by since, key_id", &[])
        .await
}

/// Lists `key` among the signing keys (from `since`, RFC 3339), if it is not yet.
///
/// # Errors
/// The database's error.
pub async fn remember_signing_key(
    db: &Database,
    key: &SigningKey,
    since: &str,
) -> Result<(), sqlx::Error> {
    db.execute(
        "insert into audit_signing_keys (key_id, public_key, since) values ($1, $2, $3) \
         on conflict (key_id) do nothing",
        &[
            Arg::Text(key.key_id.clone()),
            Arg::Text(key.public_key.clone()),
            Arg::Text(since.to_owned()),
        ],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grown(leaves: u64) -> HashMap<Node, Hash> {
        let mut known = HashMap::new();
        for i in 0..leaves {
            merkle::append(&mut known, i, merkle::leaf_hash(&i.to_be_bytes()));
        }
        known
    }

    fn next(first_seq: i64, head_before: &str) -> Appended {
        Appended { first_seq, head_before: head_before.to_owned(), hashes: vec![] }
    }

    #[test]
    fn a_kept_frontier_serves_only_the_trail_that_still_ends_where_it_was_kept() {
        let kept = KeptFrontiers::default();
        kept.keep("acme", 6, "h6", &grown(6));
        assert_eq!(kept.take("acme", &next(7, "rewritten")), None, "another head at that size");
        assert_eq!(kept.take("acme", &next(7, "h6")), None, "taken out once, even when refused");

        kept.keep("acme", 6, "h6", &grown(6));
        assert_eq!(kept.take("acme", &next(9, "h8")), None, "entries written elsewhere since");
        kept.keep("acme", 6, "h6", &grown(6));
        let frontier = kept.take("acme", &next(7, "h6")).expect("the trail as it was kept");
        let nodes: Vec<Node> = merkle::frontier(6);
        assert_eq!(frontier.len(), nodes.len());
        assert!(nodes.iter().all(|n| frontier.get(n) == grown(6).get(n)), "only the frontier");
    }

    #[test]
    fn a_frontier_not_whole_is_not_kept() {
        let kept = KeptFrontiers::default();
        kept.keep("acme", 6, "h6", &grown(4));
        assert_eq!(kept.take("acme", &next(7, "h6")), None);
    }
}
