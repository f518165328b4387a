-- An organization's history (`GET /v1/orgs/{org}/events`) is its Keyring's events and its
-- monthly usage ledgers', in the global order. It was found by walking the global order and
-- keeping this organization's events: every other organization's were read on the way, about
-- half a second in a log of a million events for an organization with a few hundred events or
-- none. This index keeps each ledger's events in the global order, so each of the
-- organization's ledgers is read from the cursor on and the reads are merged.
--
-- It holds usage events alone (a Keyring's few events are read by the primary key and sorted):
-- key commands write no more than before. Usage events carry up to a hundred calls each, so
-- it adds one entry per event, not per call. Its first column is the id: led by the type, which
-- every entry shares, it left PostgreSQL nothing to start a scan at once the type's condition
-- was dropped as implied, and one ledger's read walked the whole index.
--
-- On an existing large log this builds the index on every partition while writes wait;
-- docs/operations.md says how to build it beforehand without holding writes.
create index if not exists events_by_aggregate_in_global_order
    on events (aggregate_id, transaction_id, global_position)
    where aggregate_type = 'UsageLedger';
