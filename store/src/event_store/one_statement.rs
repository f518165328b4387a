//! Commits of aggregates' events on PostgreSQL as one statement: the events, snapshots, key
//! material kept and destroyed, and the notifications of the change, of one command or of a
//! group of commands on different aggregates, in one round trip and one transaction,
//! answering where each aggregate's last event stands in the global order.
//!
//! The same commit as a transaction of statements took six round trips (begin, events,
//! snapshot, material in, material out, commit), each a wake-up of both processes on a busy
//! machine, and went through the partitioned parent, whose statement triggers capture the rows
//! and loop over them in PL/pgSQL to notify. A command's events are of one aggregate, never a
//! usage ledger, so they go straight to `events_main`; the notifications the parent's trigger
//! would send (`keyledger_events.<type>`, and `keyledger_watch` for a Keyring) are sent here.
//! A Keyring's `keyring:<org>` comes right after `keyring@<sequence>:<org>`, the last sequence
//! committed, in that order (one transaction's notifications arrive together and in order): a
//! replica keeping that organization's Keyring as its own command left it knows whether it is
//! current, and a replica of an older version, which knows only the second, still drops it.
//! Commands grouped in one statement share its commit: see [`super::group_commit`].

use std::collections::HashMap;

use sqlx::PgPool;

use super::append::{sequence, SnapshotUpdate};
use super::global_order::Cursor;
use cqrs_es::persist::SerializedEvent;

use crate::material::MaterialChanges;

/// The statement. Every part is there every time, so its plan is prepared once a connection:
/// no snapshot and no material are empty arrays.
const COMMIT: &str = "\
with appended as (
    insert into events_main
        (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
    select $1, a, s, e, v, p::json, m::json
    from unnest($2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[])
         with ordinality as batch(a, s, e, v, p, m, n)
    order by n
    returning aggregate_id, transaction_id::text::bigint as txid, global_position as position
), snapshot as (
    insert into snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload)
    select $1, a, l, c, p::json
    from unnest($8::text[], $9::bigint[], $10::bigint[], $11::text[]) as taken(a, l, c, p)
    on conflict (aggregate_type, aggregate_id) do update
    set last_sequence = excluded.last_sequence, current_snapshot = excluded.current_snapshot,
        payload = excluded.payload
    where snapshots.last_sequence < excluded.last_sequence
), kept as (
    insert into key_material (material_id, org_id, provider, key_id, version, master_key_id,
                              dek_nonce, wrapped_dek, key_nonce, ciphertext)
    select * from unnest($12::uuid[], $13::text[], $14::text[], $15::bigint[], $16::bigint[],
                         $17::text[], $18::bytea[], $19::bytea[], $20::bytea[], $21::bytea[])
), destroyed as (
    delete from key_material where material_id = any($22::uuid[])
), notified as (
    select pg_notify('keyledger_events.' || $1, '') as events,
           (select count(pg_notify('keyledger_watch', said))
            from (select said
                  from (select org, max(s) as last
                        from unnest($2::text[], $3::bigint[]) as changed(org, s) group by org) as orgs
                  cross join lateral (values (1, 'keyring@' || last || ':' || org),
                                             (2, 'keyring:' || org)) as says(n, said)
                  where $1 = 'Keyring'
                  order by org, n) as in_order) as keyrings
)
select aggregate_id, max(txid) as txid, max(position) as position
from appended cross join notified
group by aggregate_id";

/// One command's commit: its events (of one aggregate, in sequence order, at least one), the
/// snapshot it takes and the key material it keeps and destroys.
#[derive(Debug)]
pub(super) struct CommandCommit {
    pub events: Vec<SerializedEvent>,
    pub snapshot: Option<SnapshotUpdate>,
    pub material: MaterialChanges,
}

impl CommandCommit {
    pub(super) fn aggregate_id(&self) -> &str {
        self.events.first().map_or("", |e| e.aggregate_id.as_str())
    }
}

/// Commits `commits` (of one aggregate type, each of a different aggregate) in one statement;
/// where each one's last event stands, in their order.
///
/// # Errors
/// The database's error; a unique violation when another writer took one of the sequences,
/// and then nothing of any of them is written.
pub(super) async fn commit(
    pool: &PgPool,
    commits: &[&CommandCommit],
) -> Result<Vec<Option<Cursor>>, sqlx::Error> {
    let Some(aggregate_type) =
        commits.iter().find_map(|c| c.events.first()).map(|e| e.aggregate_type.clone())
    else {
        return Ok(commits.iter().map(|_| None).collect());
    };
    let events: Vec<&SerializedEvent> = commits.iter().flat_map(|c| &c.events).collect();
    let snapshots: Vec<&SnapshotUpdate> =
        commits.iter().filter_map(|c| c.snapshot.as_ref()).collect();
    let kept: Vec<_> = commits.iter().flat_map(|c| &c.material.kept).collect();
    let destroyed: Vec<uuid::Uuid> =
        commits.iter().flat_map(|c| c.material.destroyed.iter().copied()).collect();
    let rows: Vec<(String, Option<i64>, Option<i64>)> = sqlx::query_as(COMMIT)
        .bind(aggregate_type)
        .bind(events.iter().map(|e| e.aggregate_id.clone()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| sequence(e.sequence)).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.event_type.clone()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.event_version.clone()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.payload.to_string()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.metadata.to_string()).collect::<Vec<_>>())
        .bind(snapshots.iter().map(|s| s.aggregate_id.clone()).collect::<Vec<_>>())
        .bind(snapshots.iter().map(|s| sequence(s.last_sequence)).collect::<Vec<_>>())
        .bind(snapshots.iter().map(|s| sequence(s.current_snapshot)).collect::<Vec<_>>())
        .bind(snapshots.iter().map(|s| s.payload.to_string()).collect::<Vec<_>>())
        .bind(kept.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(kept.iter().map(|r| r.org.clone()).collect::<Vec<_>>())
        .bind(kept.iter().map(|r| r.provider.to_owned()).collect::<Vec<_>>())
        .bind(kept.iter().map(|r| i64::from(r.key_id)).collect::<Vec<_>>())
        .bind(kept.iter().map(|r| i64::from(r.version)).collect::<Vec<_>>())
        .bind(kept.iter().map(|r| r.sealed.master_key_id.clone()).collect::<Vec<_>>())
        .bind(kept.iter().map(|r| r.sealed.dek_nonce.clone()).collect::<Vec<_>>())
        .bind(kept.iter().map(|r| r.sealed.wrapped_dek.clone()).collect::<Vec<_>>())
        .bind(kept.iter().map(|r| r.sealed.key_nonce.clone()).collect::<Vec<_>>())
        .bind(kept.iter().map(|r| r.sealed.ciphertext.clone()).collect::<Vec<_>>())
        .bind(&destroyed)
        .fetch_all(pool)
        .await?;
    let stands: HashMap<String, Cursor> = rows
        .into_iter()
        .filter_map(|(id, txid, position)| Some((id, Cursor { txid: txid?, position: position? })))
        .collect();
    Ok(commits.iter().map(|c| stands.get(c.aggregate_id()).copied()).collect())
}
