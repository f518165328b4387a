-- Every organization with usage, kept by the usage cockpit for the admin's directory, which
-- lists these with `view_orgs` (now only the organizations with a Keyring): the Keyring views
-- no longer read model calls at all, so a busy gateway never wakes their projector.
--
-- Seeded with every organization listed so far and every one with a call in the daily sums
-- (the cockpit may stand ahead of the directory): the directory lists what it listed before.
create table usage_orgs (
    org_id text primary key
);
insert into usage_orgs (org_id)
select org_id from view_orgs
union
select org_id from usage_daily;
