-- Notifications say what a commit wrote:
-- - on keyledger_events, the aggregate types (comma-separated), so a projector pipeline wakes
--   only for events it projects;
-- - on keyledger_watch, `keyring:<org>` for each organization whose Keyring changed, in the
--   committing transaction, so every replica drops its cached state (see infra's keyring watch).
create or replace function keyledger_notify_events() returns trigger language plpgsql as $$
declare
    org text;
begin
    perform pg_notify(
        'keyledger_events',
        coalesce((select string_agg(distinct aggregate_type, ',') from inserted), '')
    );
    for org in select distinct aggregate_id from inserted where aggregate_type = 'Keyring' loop
        perform pg_notify('keyledger_watch', 'keyring:' || org);
    end loop;
    return null;
end;
$$;

drop trigger events_notify on events;

create trigger events_notify after insert on events
    referencing new table as inserted
    for each statement execute function keyledger_notify_events();

-- Replicas whose cached Keyrings commands wait for: each renews its lease while it hears the
-- log's notifications.
create table keyledger_replicas (
    id         text primary key,
    expires_at timestamptz not null
);
