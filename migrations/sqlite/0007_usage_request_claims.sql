-- Usage calls may be stored many to an event (ModelCallsRecorded), which an index over the
-- payload cannot look into. Each call's request id is claimed instead in a narrow table, in the
-- transaction that writes its event, by a trigger: whatever writes a usage event, a request id
-- already recorded turns the whole statement away as a unique violation, as the index did. The
-- table also says where the first call is, so a repeated request can be answered with it.
create table usage_requests (
    org        text not null,
    request_id text not null,
    ledger     text not null,
    sequence   integer not null,
    primary key (org, request_id)
) strict, without rowid;

insert into usage_requests (org, request_id, ledger, sequence)
select json_extract(payload, '$.ModelCallRecorded.org'),
       json_extract(payload, '$.ModelCallRecorded.request_id'), aggregate_id, sequence
from events
where aggregate_type = 'UsageLedger' and event_type = 'ModelCallRecorded';

drop index events_usage_request;

create trigger events_claim_usage_request after insert on events
when new.aggregate_type = 'UsageLedger' and new.event_type = 'ModelCallRecorded'
begin
    insert into usage_requests (org, request_id, ledger, sequence)
    values (json_extract(new.payload, '$.ModelCallRecorded.org'),
            json_extract(new.payload, '$.ModelCallRecorded.request_id'),
            new.aggregate_id, new.sequence);
end;

create trigger events_claim_usage_requests after insert on events
when new.aggregate_type = 'UsageLedger' and new.event_type = 'ModelCallsRecorded'
begin
    insert into usage_requests (org, request_id, ledger, sequence)
    select json_extract(value, '$.org'), json_extract(value, '$.request_id'),
           new.aggregate_id, new.sequence
    from json_each(new.payload, '$.ModelCallsRecorded.calls');
end;

-- Calls of one event share its log position; `slot` is a call's place within its event, so
-- (position, slot) orders calls and pages through them.
alter table usage_calls add column slot integer not null default 0;
drop index usage_calls_position;
create index usage_calls_position on usage_calls (position, slot);
