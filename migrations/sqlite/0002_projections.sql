-- Read models: each projection's rows and its checkpoint, written in one transaction.

create table projection_checkpoints (
    name           text primary key,
    transaction_id integer not null default 0,
    position       integer not null default 0,
    updated_at     text not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

create table view_keys (
    org_id               text not null,
    provider             text not null,
    masked               text not null,
    hint                 text not null,
    version              integer not null,
    status               text not null,
    description          text,
    default_model        text,
    endpoint             text,
    created_at           text not null,
    rotated_at           text,
    verification_outcome text,
    verified_at          text,
    primary key (org_id, provider)
);

create table view_provider_order (
    org_id    text primary key,
    providers text not null
);

create table view_org_status (
    org_id      text primary key,
    plan        text not null,
    byok_access integer not null
);

create table audit_log (
    org_id    text not null,
    seq       integer not null,
    at        text not null,
    actor     text not null,
    action    text not null,
    summary   text not null,
    provider  text,
    details   text not null,
    prev_hash text not null,
    hash      text not null,
    position  integer not null,
    primary key (org_id, seq)
);

create table usage_daily (
    org_id        text not null,
    provider      text not null,
    model         text not null,
    day           text not null,
    key_source    text not null,
    calls         integer not null,
    input_tokens  integer not null,
    output_tokens integer not null,
    cost_micros   integer not null,
    primary key (org_id, provider, model, day, key_source)
);

-- Every call, for the recent-calls list. Indexed for that read, not keyed: a rebuild loads it
-- without the index and builds the index once at the end.
create table usage_calls (
    org_id        text not null,
    position      integer not null,
    request_id    text not null,
    provider      text not null,
    model         text not null,
    key_source    text not null,
    key_version   integer,
    input_tokens  integer not null,
    output_tokens integer not null,
    cost_micros   integer not null,
    at            text not null
);

create index usage_calls_recent on usage_calls (org_id, position);
