//! A command's commit on PostgreSQL as one statement: its events, its snapshot, the key
//! material it keeps and destroys, and the notifications of the change, in one round trip and
//! one transaction, answering where its last event stands in the global order.
//!
//! The same commit as a transaction of statements took six round trips (begin, events,
//! snapshot, material in, material out, commit), each a wake-up of both processes on a busy
//! machine, and went through the partitioned parent, whose statement triggers capture the rows
//! and loop over them in PL/pgSQL to notify. A command's events are of one aggregate, never a
//! usage ledger, so they go straight to `events_main`; the notifications the parent's trigger
//! would send (`keyledger_events.<type>`, and `keyledger_watch` for a Keyring) are sent here.

use sqlx::PgPool;

use super::append::{sequence, SnapshotUpdate};
use super::global_order::Cursor;
use cqrs_es::persist::SerializedEvent;

use crate::material::MaterialChanges;

/// The statement. Every part is there every time, so its plan is prepared once a connection:
/// no snapshot is a snapshot row filtered out, no material is an empty array.
const COMMIT: &str = "\
with appended as (
    insert into events_main
        (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
    select $1, $2, s, e, v, p::json, m::json
    from unnest($3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[])
         with ordinality as batch(s, e, v, p, m, n)
    order by n
    returning transaction_id::text::bigint as txid, global_position as position
), snapshot as (
    insert into snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload)
    select $1, $2, $8, $9, $10::json where $8::bigint is not null
    on conflict (aggregate_type, aggregate_id) do update
    set last_sequence = excluded.last_sequence, current_snapshot = excluded.current_snapshot,
        payload = excluded.payload
    where snapshots.last_sequence < excluded.last_sequence
), kept as (
    insert into key_material (material_id, org_id, provider, key_id, version, master_key_id,
                              dek_nonce, wrapped_dek, key_nonce, ciphertext)
    select * from unnest($11::uuid[], $12::text[], $13::text[], $14::bigint[], $15::bigint[],
                         $16::text[], $17::bytea[], $18::bytea[], $19::bytea[], $20::bytea[])
), destroyed as (
    delete from key_material where material_id = any($21::uuid[])
), notified as (
    select pg_notify('keyledger_events.' || $1, ''),
           case when $1 = 'Keyring' then pg_notify('keyledger_watch', 'keyring:' || $2) end
)
select max(txid) as txid, max(position) as position from appended cross join notified";

/// Commits `events` (all of one aggregate, in sequence order, at least one) with `snapshot`
/// and `material`; where the last event stands.
///
/// # Errors
/// The database's error; a unique violation when another writer took one of the sequences,
/// and then nothing is written.
pub(super) async fn commit(
    pool: &PgPool,
    events: &[SerializedEvent],
    snapshot: Option<&SnapshotUpdate>,
    material: &MaterialChanges,
) -> Result<Option<Cursor>, sqlx::Error> {
    let Some(first) = events.first() else {
        return Ok(None);
    };
    // `notified` is joined to the events so it runs; a command always has some.
    let kept = &material.kept;
    let (txid, position): (Option<i64>, Option<i64>) = sqlx::query_as(COMMIT)
        .bind(&first.aggregate_type)
        .bind(&first.aggregate_id)
        .bind(events.iter().map(|e| sequence(e.sequence)).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.event_type.clone()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.event_version.clone()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.payload.to_string()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.metadata.to_string()).collect::<Vec<_>>())
        .bind(snapshot.map(|s| sequence(s.last_sequence)))
        .bind(snapshot.map(|s| sequence(s.current_snapshot)))
        .bind(snapshot.map(|s| s.payload.to_string()))
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
        .bind(&material.destroyed)
        .fetch_one(pool)
        .await?;
    Ok(txid.zip(position).map(|(txid, position)| Cursor { txid, position }))
}
