-- The append-only event log (the columns postgres-es writes, plus a global order) and the
-- aggregate snapshots.
--
-- global_position orders events across aggregates; transaction_id lets a catch-up reader
-- hold back events of transactions still in flight (see infra's event log reader).
create table events (
    aggregate_type  text not null,
    aggregate_id    text not null,
    sequence        bigint not null check (sequence >= 0),
    event_type      text not null,
    event_version   text not null,
    payload         json not null,
    metadata        json not null,
    global_position bigint generated always as identity,
    transaction_id  xid8 not null default pg_current_xact_id(),
    recorded_at     timestamptz not null default now(),
    primary key (aggregate_type, aggregate_id, sequence)
);

create unique index events_global_position on events (global_position);
create index events_transaction_position on events (transaction_id, global_position);

create table snapshots (
    aggregate_type   text not null,
    aggregate_id     text not null,
    last_sequence    bigint not null check (last_sequence >= 0),
    current_snapshot bigint not null check (current_snapshot >= 0),
    payload          json not null,
    primary key (aggregate_type, aggregate_id)
);

-- Sealed key versions, outside the event log so that destroying a row shreds the secret
-- while the history stays complete.
create table key_material (
    material_id   uuid primary key,
    org_id        text not null,
    provider      text not null,
    key_id        bigint not null,
    version       bigint not null,
    master_key_id text not null,
    dek_nonce     bytea not null,
    wrapped_dek   bytea not null,
    key_nonce     bytea not null,
    ciphertext    bytea not null,
    created_at    timestamptz not null default now()
);

create index key_material_org on key_material (org_id, provider);
