-- Aggregate types get a notification channel each, `keyledger_events.<aggregate type>`, so a
-- projector pipeline listens only to the types it projects: a busy gateway's usage records no
-- longer wake the key views' pipeline (0005 sent one comma-separated payload on
-- keyledger_events that every pipeline had to wake up for and read). keyledger_watch is as
-- before: `keyring:<org>` for each organization whose Keyring changed.
create or replace function keyledger_notify_events() returns trigger language plpgsql as $$
declare
    written text;
begin
    for written in select distinct aggregate_type from inserted loop
        perform pg_notify('keyledger_events.' || written, '');
    end loop;
    for written in select distinct aggregate_id from inserted where aggregate_type = 'Keyring' loop
        perform pg_notify('keyledger_watch', 'keyring:' || written);
    end loop;
    return null;
end;
$$;
