-- The log-month functions of 0014 were declared STRICT. PostgreSQL does not inline a STRICT SQL
-- function whose body is not strict itself (the CASE of keyledger_log_month_of is not), so
-- every insert ran them through the SQL-function executor, planning their bodies per statement
-- and calling them per row in the events_log_month check: 7-8 % of the database's time under
-- key commands. Without STRICT they are inlined as plain expressions. The columns they are
-- given are NOT NULL, so what they return is unchanged.

create or replace function keyledger_log_month(ledger_id text) returns date
    language sql immutable parallel safe
    return make_date(substr(right(ledger_id, 7), 1, 4)::int, substr(right(ledger_id, 7), 6, 2)::int, 1);

create or replace function keyledger_log_month_of(aggregate_type text, aggregate_id text) returns date
    language sql immutable parallel safe
    return case when aggregate_type = 'UsageLedger' then keyledger_log_month(aggregate_id)
                else '-infinity'::date end;

-- events_main hands on only usage events; every other event it keeps skipped the trigger's
-- PL/pgSQL call only after making it. The condition now decides before the call.
drop trigger events_main_route_usage on events_main;
create trigger events_main_route_usage before insert on events_main
    for each row when (new.aggregate_type = 'UsageLedger')
    execute function keyledger_route_usage_event();
