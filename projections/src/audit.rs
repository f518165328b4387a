//! The audit trail: one entry per Keyring event, with who, when, what and a summary people
//! read, hash-chained per organization.
//!
//! An entry's `seq` is its Keyring event's sequence, so the trail can be derived again from
//! the log at any time. Verification checks both the chain itself (an edited, deleted,
//! inserted or reordered entry breaks it) and the trail against a fresh derivation from the
//! log (which also catches a chain recomputed by whoever edited it).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::log::{EventLog, Fact, LoggedEvent};
use crate::projection::{Projection, ProjectionError};
use cqrs_es::Aggregate;
use keyledger_domain::keyring::{RemovalReason, SuspensionReason};
use keyledger_domain::{Keyring, KeyringEvent as E};
use keyledger_store::{Arg, Database, Tx};

/// The hash before an organization's first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AuditEntry {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub summary: String,
    pub provider: Option<String>,
    pub details: String,
    pub prev_hash: String,
    pub hash: String,
}

/// What an event says for the audit trail, before it is chained.
#[derive(Debug, Clone, PartialEq)]
struct Draft {
    action: &'static str,
    summary: String,
    provider: Option<String>,
    details: Value,
}

fn draft(event: &E) -> Draft {
    let (action, summary, details) = match event {
        E::KeyStored(e) => (
            "key.stored",
            "AI key stored".to_owned(),
            json!({"version": e.version, "masked": e.masked, "description": e.description, "endpoint": e.endpoint}),
        ),
        E::KeyRotated(e) => (
            "key.rotated",
            "AI key rotated".to_owned(),
            json!({"version": e.version, "masked": e.masked}),
        ),
        E::KeyDetailsChanged(e) => (
            "key.details_changed",
            "AI key details changed".to_owned(),
            json!({"description": e.description, "default_model": e.default_model}),
        ),
        E::KeyRemoved(e) => match e.reason {
            RemovalReason::Removed => (
                "key.removed",
                "AI key removed".to_owned(),
                json!({"version": e.version, "reason": "removed"}),
            ),
            RemovalReason::Replaced => (
                "key.removed",
                "AI key replaced by another provider's key".to_owned(),
                json!({"version": e.version, "reason": "replaced"}),
            ),
        },
        E::KeyVerified(e) => (
            "key.verified",
            "AI key verified".to_owned(),
            json!({"version": e.version, "outcome": e.outcome.as_str()}),
        ),
        E::KeyVerificationFailed(e) => (
            "key.verification_failed",
            "AI key verification failed".to_owned(),
            json!({"version": e.version, "outcome": e.outcome.as_str()}),
        ),
        E::KeySuspended(e) => {
            let reason = match e.reason {
                SuspensionReason::PlanWithoutByok => "plan_without_byok",
                SuspensionReason::PlanProviderLimit => "plan_provider_limit",
                SuspensionReason::ByokAccessWithdrawn => "byok_access_withdrawn",
            };
            ("key.suspended", "AI key suspended".to_owned(), json!({"reason": reason}))
        }
        E::KeyReinstated(_) => ("key.reinstated", "AI key reinstated".to_owned(), json!({})),
        E::ProviderOrderSet(e) => (
            "provider_order.set",
            "Provider order set".to_owned(),
            json!({"providers": e.providers}),
        ),
        E::PlanChanged(e) => (
            "plan.changed",
            format!("Plan changed from {} to {}", e.from, e.to),
            json!({"from": e.from, "to": e.to}),
        ),
        E::ByokAccessChanged(e) => (
            "byok_access.changed",
            if e.enabled { "BYOK access granted" } else { "BYOK access withdrawn" }.to_owned(),
            json!({"enabled": e.enabled}),
        ),
        E::OrganizationErased(e) => (
            "organization.erased",
            "Organization erased: every AI key destroyed".to_owned(),
            json!({"providers": e.providers}),
        ),
        E::KeyMaterialResealed(e) => (
            "key.resealed",
            format!("AI key material re-sealed under master key `{}`", e.master_key_id),
            json!({"version": e.version, "master_key_id": e.master_key_id}),
        ),
        E::OrganizationRestarted(e) => (
            "organization.restarted",
            "Organization starts afresh after its erasure".to_owned(),
            json!({"erased_at": e.erased_at}),
        ),
    };
    Draft { action, summary, provider: event.provider().map(|p| p.as_str().to_owned()), details }
}

/// The hash of an entry: SHA-256 over the previous hash and the entry's fields, in a fixed
/// encoding (JSON with a fixed field order; `at` to the microsecond, as stored).
#[must_use]
pub fn entry_hash(e: &AuditEntry) -> String {
    let canonical = json!([
        e.prev_hash,
        e.seq,
        e.at.to_rfc3339_opts(SecondsFormat::Micros, true),
        e.actor,
        e.action,
        e.summary,
        e.provider,
        e.details,
    ]);
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// The entry for a Keyring event, chained after `prev_hash`.
fn entry(event: &LoggedEvent, fact: &E, prev_hash: &str) -> AuditEntry {
    let d = draft(fact);
    let at = event.occurred_at().unwrap_or_default().trunc_subsecs(6);
    let mut entry = AuditEntry {
        seq: event.stored.sequence,
        at,
        actor: event.actor().to_owned(),
        action: d.action.to_owned(),
        summary: d.summary,
        provider: d.provider,
        details: d.details.to_string(),
        prev_hash: prev_hash.to_owned(),
        hash: String::new(),
    };
    entry.hash = entry_hash(&entry);
    entry
}

/// The columns of `audit_log` an entry is written to, in the order of its values.
pub const LOG_COLUMNS: [&str; 11] = [
    "org_id",
    "seq",
    "at",
    "actor",
    "action",
    "summary",
    "provider",
    "details",
    "prev_hash",
    "hash",
    "position",
];

/// `audit_log`, and the trail's Merkle tree in `audit_tree`; with a signer, a checkpoint kept
/// each time an organization's trail grows.
#[derive(Debug, Clone, Default)]
pub struct AuditLog {
    pub signer: Option<Arc<dyn crate::audit_tree::CheckpointSigner>>,
    pub frontiers: crate::audit_tree::KeptFrontiers,
}

#[async_trait]
impl Projection for AuditLog {
    fn name(&self) -> &'static str {
        "audit"
    }

    fn consumes(&self) -> &'static [&'static str] {
        &[<Keyring as Aggregate>::TYPE]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["audit_log", "audit_tree"]
    }

    async fn apply(&self, tx: &mut Tx, events: &[&LoggedEvent]) -> Result<(), ProjectionError> {
        let mut heads = chain_heads(tx, events).await?;
        // Each organization's new entries, in order, for its Merkle tree: (first seq, hashes).
        let mut appended: HashMap<String, crate::audit_tree::Appended> = HashMap::new();
        let mut rows: Vec<Vec<Arg>> = Vec::new();
        for event in events {
            let Fact::Keyring(fact) = &event.fact else { continue };
            let org = &event.stored.aggregate_id;
            let prev = heads.get(org).cloned().unwrap_or_else(|| GENESIS.to_owned());
            let e = entry(event, fact, &prev);
            let new = appended.entry(org.clone()).or_insert_with(|| crate::audit_tree::Appended {
                first_seq: e.seq,
                head_before: prev.clone(),
                hashes: Vec::new(),
            });
            new.hashes.push(e.hash.clone());
            heads.insert(org.clone(), e.hash.clone());
            rows.push(vec![
                Arg::Text(org.clone()),
                Arg::Int(e.seq),
                Arg::Time(e.at),
                Arg::Text(e.actor),
                Arg::Text(e.action),
                Arg::Text(e.summary),
                Arg::OptText(e.provider),
                Arg::Text(e.details),
                Arg::Text(e.prev_hash),
                Arg::Text(e.hash),
                Arg::Int(event.cursor.position),
            ]);
        }
        // One statement for the batch: reads of the trail wait for this step (read-your-writes),
        // and a statement an entry cost 200–280 µs of it on a busy machine.
        tx.upsert_rows("audit_log", &LOG_COLUMNS, &rows, "").await?;
        crate::audit_tree::append(tx, &appended, self.signer.as_ref(), &self.frontiers).await?;
        Ok(())
    }
}

/// Where the trail of each organization with Keyring events in `events` ends (its last entry's
/// hash, or the genesis hash): one statement for the batch, not one an organization. The
/// statement is the same whatever the number of organizations (their names go as one JSON
/// array), so it is prepared once.
async fn chain_heads(
    tx: &mut Tx,
    events: &[&LoggedEvent],
) -> Result<HashMap<String, String>, ProjectionError> {
    let mut orgs: Vec<&str> = events
        .iter()
        .filter(|e| matches!(e.fact, Fact::Keyring(_)))
        .map(|e| e.stored.aggregate_id.as_str())
        .collect();
    orgs.sort_unstable();
    orgs.dedup();
    if orgs.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = if tx.is_postgres() {
        "select org, (select hash from audit_log where org_id = org order by seq desc limit 1) \
         from json_array_elements_text($1::json) as asked(org)"
    } else {
        "select value, (select hash from audit_log where org_id = value order by seq desc limit 1) \
         from json_each($1)"
    };
    let names = serde_json::to_string(&orgs).unwrap_or_else(|_| "[]".to_owned());
    let rows: Vec<(String, Option<String>)> = tx.fetch_all(sql, &[Arg::Text(names)]).await?;
    Ok(rows
        .into_iter()
        .map(|(org, head)| (org, head.unwrap_or_else(|| GENESIS.to_owned())))
        .collect())
}

/// The result of verifying an organization's trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    pub ok: bool,
    pub entries: u64,
    pub head: String,
    pub first_bad_seq: Option<i64>,
}

const ENTRY_COLUMNS: &str = "seq, at, actor, action, summary, provider, details, prev_hash, hash";

/// The actions the trail records, for filtering.
pub const ACTIONS: &[&str] = &[
    "key.stored",
    "key.rotated",
    "key.details_changed",
    "key.removed",
    "key.verified",
    "key.verification_failed",
    "key.suspended",
    "key.reinstated",
    "provider_order.set",
    "plan.changed",
    "byok_access.changed",
    "key.resealed",
    "organization.erased",
    "organization.restarted",
];

/// Which entries of a trail a page shows: those of one action, one provider, or both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryFilter {
    pub action: Option<String>,
    pub provider: Option<String>,
}

/// A page of `org`'s trail: entries after `after` that `filter` lets through, at most `limit`.
///
/// # Errors
/// The database's error.
pub async fn page(
    pool: &Database,
    org: &str,
    after: i64,
    limit: i64,
    filter: &EntryFilter,
) -> Result<Vec<AuditEntry>, sqlx::Error> {
    pool.fetch_all(
        &format!(
            "select {ENTRY_COLUMNS} from audit_log where org_id = $1 and seq > $2 \
             and ($4 = '' or action = $4) and ($5 = '' or provider = $5) order by seq limit $3"
        ),
        &[
            Arg::Text(org.to_owned()),
            Arg::Int(after),
            Arg::Int(limit),
            Arg::Text(filter.action.clone().unwrap_or_default()),
            Arg::Text(filter.provider.clone().unwrap_or_default()),
        ],
    )
    .await
}

/// Verifies `org`'s trail: the chain must hold, and must match what the log says happened.
/// Entries the projector has not written yet are not counted against it.
///
/// # Errors
/// The database's error.
pub async fn verify(pool: &Database, org: &str) -> Result<ChainReport, sqlx::Error> {
    let stored: Vec<AuditEntry> = pool
        .fetch_all(
            &format!("select {ENTRY_COLUMNS} from audit_log where org_id = $1 order by seq"),
            &[Arg::Text(org.to_owned())],
        )
        .await?;

    let mut first_bad: Option<i64> = None;
    let mut prev = GENESIS.to_owned();
    for (index, e) in stored.iter().enumerate() {
        let expected_seq = index as i64 + 1;
        if e.seq != expected_seq || e.prev_hash != prev || entry_hash(e) != e.hash {
            first_bad = Some(expected_seq.min(e.seq));
            break;
        }
        prev = e.hash.clone();
    }

    // What the log says the trail must be, up to where the projector has got.
    let checkpoint: Option<crate::log::Cursor> = pool
        .fetch_all("select transaction_id as txid, position from projection_checkpoints where name = 'audit'", &[])
        .await?
        .into_iter()
        .next();
    let projected = checkpoint.unwrap_or_default();
    let log = EventLog::new(pool.clone());
    let mut derived: Vec<AuditEntry> = Vec::new();
    let mut must_exist = 0;
    let mut derived_prev = GENESIS.to_owned();
    // The trail is the organization's Keyring, read by its key: its usage ledgers (every model
    // call) say nothing the trail holds.
    let mut after = 0;
    loop {
        let events =
            log.read_aggregate_after(<Keyring as Aggregate>::TYPE, org, after, 5_000).await?;
        let Some(last) = events.last() else { break };
        after = last.stored.sequence;
        for event in &events {
            if let Fact::Keyring(fact) = &event.fact {
                let e = entry(event, fact, &derived_prev);
                derived_prev = e.hash.clone();
                derived.push(e);
                if event.cursor <= projected {
                    must_exist = derived.len();
                }
            }
        }
    }
    let mismatch = stored
        .iter()
        .zip(&derived)
        .find(|(s, d)| s != d)
        .map(|(s, d)| s.seq.min(d.seq))
        .or_else(|| (stored.len() > derived.len()).then(|| derived.len() as i64 + 1))
        .or_else(|| (stored.len() < must_exist).then(|| stored.len() as i64 + 1));
    let first_bad_seq = match (first_bad, mismatch) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Ok(ChainReport {
        ok: first_bad_seq.is_none(),
        entries: stored.len() as u64,
        head: stored.last().map_or_else(|| GENESIS.to_owned(), |e| e.hash.clone()),
        first_bad_seq,
    })
}
