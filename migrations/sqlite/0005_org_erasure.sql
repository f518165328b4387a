-- When an organization was erased (the right to erasure), until it starts afresh.
alter table view_org_status add column erased_at text;
