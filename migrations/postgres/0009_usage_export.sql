-- Exports of every organization's calls page through them in log order.
create index usage_calls_position on usage_calls (position);
