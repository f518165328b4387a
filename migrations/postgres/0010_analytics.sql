-- A read-only schema for BI tools (Metabase, Grafana): views over the usage cockpit, and a role
-- that may read those views and nothing else (not the event log, not the key material). The
-- views run with their owner's rights, so the role needs no right on the tables beneath them.
-- Grant it to a login role of your own: `grant keyledger_analytics to metabase;`.
create schema if not exists analytics;

create or replace view analytics.calls as
select org_id, request_id, provider, model, key_source, key_version,
       input_tokens, output_tokens, cost_micros / 1000000.0 as cost_usd, at
from public.usage_calls;

create or replace view analytics.daily as
select org_id, day, provider, model, key_source, calls, input_tokens, output_tokens,
       cost_micros / 1000000.0 as cost_usd
from public.usage_daily;

-- Roles belong to the whole server: another database's migration may have made it already,
-- even at the same moment.
do $$
begin
    create role keyledger_analytics nologin;
exception when duplicate_object or unique_violation then
    null;
end
$$;

grant usage on schema analytics to keyledger_analytics;
grant select on analytics.calls, analytics.daily to keyledger_analytics;
