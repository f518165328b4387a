-- An organization's history (`GET /v1/orgs/{org}/events`) is its Keyring's events and its
-- monthly usage ledgers', in the global order. It was found by walking the global order and
-- keeping this organization's events, reading every other organization's on the way. This
-- index keeps each ledger's events in the global order, so each of the organization's ledgers
-- is read from the cursor on and the reads are merged. It holds usage events alone (a
-- Keyring's few events are read by the primary key): key commands write no more than before.
create index events_by_aggregate_in_global_order
    on events (aggregate_id, global_position)
    where aggregate_type = 'UsageLedger';
