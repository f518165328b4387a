-- The list of single calls may keep calls for a number of days only (KEYLEDGER_USAGE_CALLS_DAYS):
-- finding the old ones, like an export of a few days, goes by the time a call was made.
create index usage_calls_at on usage_calls (at);
