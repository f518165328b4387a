-- The usage writer's appender claims the request ids of the calls it writes in the statement
-- that writes them, from the payloads it binds, and says so for its transaction alone with
-- `keyledger.usage_requests_claimed`. The trigger then has nothing to do: parsing every
-- payload again (three times a call) was a sixth of a usage batch's time. Any other writer of
-- a usage event (a single command, a restore, an insert by hand) sets nothing, and is claimed
-- for here as before.
create or replace function keyledger_claim_usage_requests() returns trigger language plpgsql as $$
begin
    if current_setting('keyledger.usage_requests_claimed', true) = 'on' then
        return null;
    end if;
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
