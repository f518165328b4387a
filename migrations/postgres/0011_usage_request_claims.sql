-- Usage calls may be stored many to an event (ModelCallsRecorded), which an index over the
-- payload cannot look into. Each call's request id is claimed instead in a narrow table, in the
-- transaction that writes its event, by a trigger: whatever writes a usage event (the group
-- commit, a single commit, a restore), a request id already recorded turns the whole
-- transaction away as a unique violation, as the index did. The table also says where the
-- first call is, so a repeated request can be answered with it.
create table usage_requests (
    org        text not null,
    request_id text not null,
    ledger     text not null,
    sequence   bigint not null,
    primary key (org, request_id)
);

insert into usage_requests (org, request_id, ledger, sequence)
select payload->'ModelCallRecorded'->>'org', payload->'ModelCallRecorded'->>'request_id',
       aggregate_id, sequence
from events
where aggregate_type = 'UsageLedger' and event_type = 'ModelCallRecorded';

-- The index parsed each usage event's JSON twice on insert: half the cost of writing a call.
drop index events_usage_request;

create function keyledger_claim_usage_requests() returns trigger language plpgsql as $$
begin
    insert into usage_requests (org, request_id, ledger, sequence)
    select e.payload->'ModelCallRecorded'->>'org', e.payload->'ModelCallRecorded'->>'request_id',
           e.aggregate_id, e.sequence
    from inserted e
    where e.aggregate_type = 'UsageLedger' and e.event_type = 'ModelCallRecorded';
    insert into usage_requests (org, request_id, ledger, sequence)
    select call->>'org', call->>'request_id', e.aggregate_id, e.sequence
    from inserted e
    cross join lateral json_array_elements(e.payload->'ModelCallsRecorded'->'calls') call
    where e.aggregate_type = 'UsageLedger' and e.event_type = 'ModelCallsRecorded';
    return null;
end;
$$;

create trigger events_claim_usage_requests after insert on events
    referencing new table as inserted
    for each statement execute function keyledger_claim_usage_requests();

-- Calls of one event share its log position; `slot` is a call's place within its event, so
-- (position, slot) orders calls and pages through them.
alter table usage_calls add column slot bigint not null default 0;
drop index usage_calls_position;
create index usage_calls_position on usage_calls (position, slot);
