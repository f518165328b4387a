-- Every organization the log has an event of, for the platform admin's list.
create table view_orgs (
    org_id text primary key
);
