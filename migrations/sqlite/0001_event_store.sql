-- The append-only event log (the columns sqlite-es writes, plus a global order) and the
-- aggregate snapshots.
--
-- SQLite runs one write transaction at a time, so numbering at insert time gives commit
-- order. The number is a column of its own rather than the rowid, which VACUUM may change.
create table events (
    aggregate_type  text not null,
    aggregate_id    text not null,
    sequence        integer not null check (sequence >= 0),
    event_type      text not null,
    event_version   text not null,
    payload         text not null,
    metadata        text not null,
    global_position integer,
    recorded_at     text not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    primary key (aggregate_type, aggregate_id, sequence)
) strict;

create unique index events_global_position on events (global_position);

create trigger events_number_globally after insert on events
begin
    update events
       set global_position = (select coalesce(max(global_position), 0) + 1 from events)
     where rowid = new.rowid;
end;

create table snapshots (
    aggregate_type   text not null,
    aggregate_id     text not null,
    last_sequence    integer not null check (last_sequence >= 0),
    current_snapshot integer not null check (current_snapshot >= 0),
    payload          text not null,
    primary key (aggregate_type, aggregate_id)
) strict;

-- Sealed key versions, outside the event log so that destroying a row shreds the secret
-- while the history stays complete.
create table key_material (
    material_id   text primary key,
    org_id        text not null,
    provider      text not null,
    key_id        integer not null,
    version       integer not null,
    master_key_id text not null,
    dek_nonce     blob not null,
    wrapped_dek   blob not null,
    key_nonce     blob not null,
    ciphertext    blob not null,
    created_at    text not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) strict;

create index key_material_org on key_material (org_id, provider);
