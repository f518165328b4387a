-- Each organization's audit trail is also an RFC 6962 Merkle tree. `audit_tree` keeps the hash
-- of every complete subtree (level 0: an entry's leaf hash; level l, index i: leaves
-- i·2^l to (i+1)·2^l − 1), written with the entries, so a root or a proof reads a few dozen rows
-- whatever the trail's length. It is part of the audit view: a rebuild writes it again.
create table audit_tree (
    org_id text not null,
    level  integer not null,
    idx    integer not null,
    hash   text not null,
    primary key (org_id, level, idx)
);

-- Signed checkpoints (tree heads) kept for auditors. Not a view: a signature and the time it
-- was made cannot be derived again, so a rebuild leaves them alone.
create table audit_checkpoints (
    org_id    text not null,
    tree_size integer not null,
    root_hash text not null,
    at        text not null,
    key_id    text not null,
    signature text not null,
    primary key (org_id, tree_size)
);

-- Every key that has signed checkpoints, so old checkpoints still verify after the master key
-- (and with it the signing key) changes.
create table audit_signing_keys (
    key_id     text primary key,
    public_key text not null,
    since      text not null
);
