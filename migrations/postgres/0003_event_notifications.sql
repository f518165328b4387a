-- Wake projectors in every replica when events are committed (delivered at commit).
create function keyledger_notify_events() returns trigger language plpgsql as $$
begin
    perform pg_notify('keyledger_events', '');
    return null;
end;
$$;

create trigger events_notify after insert on events
    for each statement execute function keyledger_notify_events();
