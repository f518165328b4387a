-- The log partitioned by month for usage. A platform making 10,000 model calls a second adds
-- 864 million usage events a day to one table; vacuuming, indexing and archiving that as one
-- table gets slower every month. Usage ledgers are per organization and month (`org/YYYY-MM`),
-- so each month's usage events go to a partition of their own (`events_YYYY_MM`) that an
-- operator can detach and archive whole; everything else (Keyrings, organizations) stays in
-- `events_main`, and a usage month with no partition yet lands in `events_usage_default`.
--
-- The partition key, `log_month`, is a function of the aggregate (a CHECK says so), so the key
-- (aggregate_type, aggregate_id, sequence, log_month) is as unique as the old one: two writers
-- taking the same sequence of an aggregate still collide in one partition. A writer that does
-- not name the month (postgres-es, a restore, a hand-written insert) gets the `-infinity` of
-- everything else; events_main hands a usage event arriving that way on to its month.
--
-- PostgreSQL 15 has no identity columns on partitioned tables: the global order comes from a
-- sequence of its own, continuing where the old table's identity stood.

create function keyledger_log_month(ledger_id text) returns date
    language sql immutable strict parallel safe
    return make_date(substr(right(ledger_id, 7), 1, 4)::int, substr(right(ledger_id, 7), 6, 2)::int, 1);

create function keyledger_log_month_of(aggregate_type text, aggregate_id text) returns date
    language sql immutable strict parallel safe
    return case when aggregate_type = 'UsageLedger' then keyledger_log_month(aggregate_id)
                else '-infinity'::date end;

alter table events rename to events_unpartitioned;
alter index events_pkey rename to events_unpartitioned_pkey;
alter index events_global_position rename to events_unpartitioned_global_position;
alter index events_transaction_position rename to events_unpartitioned_transaction_position;
drop trigger events_notify on events_unpartitioned;
drop trigger events_claim_usage_requests on events_unpartitioned;

create sequence events_position_seq as bigint;
select setval('events_position_seq',
              coalesce((select max(global_position) from events_unpartitioned), 0) + 1, false);

create table events (
    aggregate_type  text not null,
    aggregate_id    text not null,
    sequence        bigint not null check (sequence >= 0),
    event_type      text not null,
    event_version   text not null,
    payload         json not null,
    metadata        json not null,
    global_position bigint not null default nextval('events_position_seq'),
    transaction_id  xid8 not null default pg_current_xact_id(),
    recorded_at     timestamptz not null default now(),
    log_month       date not null default '-infinity',
    primary key (aggregate_type, aggregate_id, sequence, log_month),
    constraint events_log_month check (log_month = keyledger_log_month_of(aggregate_type, aggregate_id))
) partition by range (log_month);

alter sequence events_position_seq owned by events.global_position;

create table events_main partition of events for values from (minvalue) to ('0001-01-01');
create table events_usage_default partition of events default;

-- Creates the partition of each month from `first` to `last` that does not exist yet, unless
-- events of that month already wait in events_usage_default (PostgreSQL refuses such a
-- partition; they stay correct where they are). Replicas take turns.
create function keyledger_create_log_months(first date, last date) returns void
    language plpgsql as $$
declare
    month date := date_trunc('month', first)::date;
    name text;
begin
    perform pg_advisory_xact_lock(hashtext('keyledger_create_log_months'));
    while month <= last loop
        name := 'events_' || to_char(month, 'YYYY_MM');
        if to_regclass(name) is null
           and not exists (select 1 from events_usage_default where log_month = month) then
            execute format('create table %I partition of events for values from (%L) to (%L)',
                           name, month, (month + interval '1 month')::date);
        end if;
        month := (month + interval '1 month')::date;
    end loop;
end;
$$;

select keyledger_create_log_months(month, month)
from (select distinct keyledger_log_month(aggregate_id) as month
      from events_unpartitioned where aggregate_type = 'UsageLedger') months;
select keyledger_create_log_months(current_date, (current_date + interval '2 months')::date);

insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload,
                    metadata, global_position, transaction_id, recorded_at, log_month)
select aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata,
       global_position, transaction_id, recorded_at,
       keyledger_log_month_of(aggregate_type, aggregate_id)
from events_unpartitioned
order by global_position;

drop table events_unpartitioned;

create index events_global_position on events (global_position);
create index events_transaction_position on events (transaction_id, global_position);

create trigger events_notify after insert on events
    referencing new table as inserted
    for each statement execute function keyledger_notify_events();

create trigger events_claim_usage_requests after insert on events
    referencing new table as inserted
    for each statement execute function keyledger_claim_usage_requests();

-- A usage event written without its month reaches events_main; it is written again, with its
-- month and the position it was given, by a statement of its own (whose triggers notify and
-- claim its request ids), and dropped here.
create function keyledger_route_usage_event() returns trigger language plpgsql as $$
begin
    if new.aggregate_type = 'UsageLedger' then
        insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                            payload, metadata, global_position, transaction_id, recorded_at,
                            log_month)
        values (new.aggregate_type, new.aggregate_id, new.sequence, new.event_type,
                new.event_version, new.payload, new.metadata, new.global_position,
                new.transaction_id, new.recorded_at, keyledger_log_month(new.aggregate_id));
        return null;
    end if;
    return new;
end;
$$;

create trigger events_main_route_usage before insert on events_main
    for each row execute function keyledger_route_usage_event();
