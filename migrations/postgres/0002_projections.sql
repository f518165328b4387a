-- Read models: each projection's rows and its checkpoint, written in one transaction.

create table projection_checkpoints (
    name           text primary key,
    transaction_id bigint not null default 0,
    position       bigint not null default 0,
    updated_at     timestamptz not null default now()
);

create table view_keys (
    org_id               text not null,
    provider             text not null,
    masked               text not null,
    hint                 text not null,
    version              bigint not null,
    status               text not null,
    description          text,
    default_model        text,
    endpoint             text,
    created_at           timestamptz not null,
    rotated_at           timestamptz,
    verification_outcome text,
    verified_at          timestamptz,
    primary key (org_id, provider)
);

create table view_provider_order (
    org_id    text primary key,
    providers text not null
);

create table view_org_status (
    org_id      text primary key,
    plan        text not null,
    byok_access boolean not null
);

create table audit_log (
    org_id    text not null,
    seq       bigint not null,
    at        timestamptz not null,
    actor     text not null,
    action    text not null,
    summary   text not null,
    provider  text,
    details   text not null,
    prev_hash text not null,
    hash      text not null,
    position  bigint not null,
    primary key (org_id, seq)
);

create table usage_daily (
    org_id        text not null,
    provider      text not null,
    model         text not null,
    day           text not null,
    key_source    text not null,
    calls         bigint not null,
    input_tokens  bigint not null,
    output_tokens bigint not null,
    cost_micros   bigint not null,
    primary key (org_id, provider, model, day, key_source)
)
-- Every batch adds to the same rows; room on each page lets PostgreSQL update them in place
-- (HOT) instead of adding index entries for each new version.
with (fillfactor = 50);

-- Every call, for the recent-calls list. Indexed for that read, not keyed: a rebuild loads it
-- without the index and builds the index once at the end.
create table usage_calls (
    org_id        text not null,
    position      bigint not null,
    request_id    text not null,
    provider      text not null,
    model         text not null,
    key_source    text not null,
    key_version   bigint,
    input_tokens  bigint not null,
    output_tokens bigint not null,
    cost_micros   bigint not null,
    at            timestamptz not null
);

create index usage_calls_recent on usage_calls (org_id, position);
