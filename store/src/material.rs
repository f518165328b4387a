//! The key-material table: sealed key versions, kept outside the event log and destroyed
//! when a rotation or removal makes them obsolete. Material comes and goes in the transaction
//! of the events that name it ([`SnapshottingStore::commit_with_material`]), so no command
//! leaves material behind that no event names, or an event naming material that is not there.
//!
//! [`SnapshottingStore::commit_with_material`]: crate::event_store::SnapshottingStore::commit_with_material

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::database::Database;
use crate::sql::{Arg, Tx};

/// A reference to a sealed key version.
pub type MaterialId = Uuid;

/// A sealed key version as it is kept: the data key wrapped under the organization's key, and
/// the API key under the data key.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedKey {
    pub master_key_id: String,
    pub dek_nonce: Vec<u8>,
    pub wrapped_dek: Vec<u8>,
    pub key_nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for SealedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedKey(master {}, {} bytes)", self.master_key_id, self.ciphertext.len())
    }
}

/// A sealed key version to keep, with what it is bound to.
#[derive(Debug, Clone)]
pub struct MaterialRow {
    pub id: MaterialId,
    pub org: String,
    pub provider: &'static str,
    pub key_id: u32,
    pub version: u32,
    pub sealed: SealedKey,
}

/// The key material that comes and goes with a command's events.
#[derive(Debug, Default, Clone)]
pub struct MaterialChanges {
    /// Sealed by the command.
    pub kept: Vec<MaterialRow>,
    /// Released by its events: destroyed as they commit (crypto-shredding).
    pub destroyed: Vec<MaterialId>,
}

impl MaterialChanges {
    /// Writes the changes in `tx`.
    pub(crate) async fn write(&self, tx: &mut Tx) -> Result<(), sqlx::Error> {
        for row in &self.kept {
            let sealed = &row.sealed;
            tx.execute(
                "insert into key_material (material_id, org_id, provider, key_id, version, \
                 master_key_id, dek_nonce, wrapped_dek, key_nonce, ciphertext) \
                 values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &[
                    Arg::Uuid(row.id),
                    Arg::Text(row.org.clone()),
                    Arg::Text(row.provider.to_owned()),
                    Arg::Int(i64::from(row.key_id)),
                    Arg::Int(i64::from(row.version)),
                    Arg::Text(sealed.master_key_id.clone()),
                    Arg::Bytes(sealed.dek_nonce.clone()),
                    Arg::Bytes(sealed.wrapped_dek.clone()),
                    Arg::Bytes(sealed.key_nonce.clone()),
                    Arg::Bytes(sealed.ciphertext.clone()),
                ],
            )
            .await?;
        }
        for id in &self.destroyed {
            tx.execute("delete from key_material where material_id = $1", &[Arg::Uuid(*id)])
                .await?;
        }
        Ok(())
    }
}

/// The least time between two scrubs of the database's files.
const SCRUB_SPACING: Duration = Duration::from_millis(50);

/// Sealed key versions by id.
#[derive(Debug, Clone)]
pub struct MaterialStore {
    db: Database,
    scrub: Arc<Scrub>,
}

/// A deleted row's bytes stay in the database's files until something overwrites them: on
/// SQLite in the write-ahead log (secure_delete zeroes the page itself), on PostgreSQL as a
/// dead tuple. After material is destroyed, one background task at a time scrubs them out:
/// SQLite checkpoints and truncates its log, PostgreSQL vacuums the table.
#[derive(Debug, Default)]
struct Scrub {
    pending: AtomicBool,
    running: AtomicBool,
}

/// A storage failure, described without secrets.
#[derive(Debug, thiserror::Error)]
#[error("key material store: {0}")]
pub struct MaterialError(#[from] sqlx::Error);

type Row = (String, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);

impl MaterialStore {
    /// The store in `db`.
    #[must_use]
    pub fn new(db: Database) -> Self {
        Self { db, scrub: Arc::default() }
    }

    /// The sealed material `id`, if it still exists.
    ///
    /// # Errors
    /// [`MaterialError`] when the row cannot be read.
    pub async fn get(&self, id: MaterialId) -> Result<Option<SealedKey>, MaterialError> {
        let sql = "select master_key_id, dek_nonce, wrapped_dek, key_nonce, ciphertext \
                   from key_material where material_id = $1";
        let row: Option<Row> = match &self.db {
            Database::Postgres(pool) => sqlx::query_as(sql).bind(id).fetch_optional(pool).await?,
            Database::Sqlite(pool) => {
                sqlx::query_as(sql).bind(id.to_string()).fetch_optional(pool).await?
            }
        };
        Ok(row.map(|(master_key_id, dek_nonce, wrapped_dek, key_nonce, ciphertext)| SealedKey {
            master_key_id,
            dek_nonce,
            wrapped_dek,
            key_nonce,
            ciphertext,
        }))
    }

    /// How many key versions are sealed under each master key id, by id.
    ///
    /// # Errors
    /// [`MaterialError`] when the table cannot be read.
    pub async fn versions_by_master_key(&self) -> Result<Vec<(String, i64)>, MaterialError> {
        let sql = "select master_key_id, count(*) from key_material group by master_key_id \
                   order by master_key_id";
        Ok(match &self.db {
            Database::Postgres(pool) => sqlx::query_as(sql).fetch_all(pool).await?,
            Database::Sqlite(pool) => sqlx::query_as(sql).fetch_all(pool).await?,
        })
    }

    /// Up to `limit` organizations, after `after` in id order, holding material sealed under a
    /// master key other than `active`: the next batch a re-seal works on.
    ///
    /// # Errors
    /// [`MaterialError`] when the table cannot be read.
    pub async fn orgs_sealed_elsewhere(
        &self,
        active: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<String>, MaterialError> {
        let sql = "select distinct org_id from key_material \
                   where master_key_id <> $1 and org_id > $2 order by org_id limit $3";
        let rows: Vec<(String,)> = match &self.db {
            Database::Postgres(pool) => {
                sqlx::query_as(sql).bind(active).bind(after).bind(limit).fetch_all(pool).await?
            }
            Database::Sqlite(pool) => {
                sqlx::query_as(sql).bind(active).bind(after).bind(limit).fetch_all(pool).await?
            }
        };
        Ok(rows.into_iter().map(|(org,)| org).collect())
    }

    /// Scrubs the database's files of material destroyed by a commit (see [`MaterialChanges`]);
    /// returns at once.
    pub fn destroyed(&self) {
        self.scrub_soon();
    }

    /// Asks for the files to be scrubbed of destroyed rows; returns at once.
    fn scrub_soon(&self) {
        self.scrub.pending.store(true, Ordering::Release);
        if self.scrub.running.swap(true, Ordering::AcqRel) {
            return; // The running scrub sees the request.
        }
        let (db, scrub) = (self.db.clone(), Arc::clone(&self.scrub));
        tokio::spawn(async move {
            loop {
                while scrub.pending.swap(false, Ordering::AcqRel) {
                    scrub_files(&db).await;
                    // Destructions that come while one scrub runs share the next, a little
                    // later: under a stream of rotations a vacuum per command kept the
                    // database busy vacuuming, while each row waits at most SCRUB_SPACING
                    // more this way.
                    if scrub.pending.load(Ordering::Acquire) {
                        tokio::time::sleep(SCRUB_SPACING).await;
                    }
                }
                scrub.running.store(false, Ordering::Release);
                // A request between the last look and stepping down is not left waiting.
                if !scrub.pending.load(Ordering::Acquire)
                    || scrub.running.swap(true, Ordering::AcqRel)
                {
                    break;
                }
            }
        });
    }

    /// Waits until no scrub is pending or running (tests; a stopping process).
    pub async fn scrubbed(&self) {
        while self.scrub.pending.load(Ordering::Acquire)
            || self.scrub.running.load(Ordering::Acquire)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Destroys material that committed events released but that is still there: what a
    /// version before material was destroyed with its events left when it died between the
    /// two. Nothing today leaves such rows; a database written by an older version may hold
    /// them.
    ///
    /// # Errors
    /// [`MaterialError`] when the sweep cannot run.
    pub async fn sweep_released(&self) -> Result<u64, MaterialError> {
        let result = match &self.db {
            Database::Postgres(pool) => {
                sqlx::query(
                    "delete from key_material m using events e \
                     where e.aggregate_type = 'Keyring' \
                       and e.event_type in ('KeyRotated', 'KeyRemoved') \
                       and m.material_id::text in (e.payload->'KeyRotated'->>'previous_material_id', \
                                                   e.payload->'KeyRemoved'->>'material_id')",
                )
                .execute(pool)
                .await?
                .rows_affected()
            }
            Database::Sqlite(pool) => {
                sqlx::query(
                    "delete from key_material where material_id in ( \
                       select coalesce(json_extract(payload, '$.KeyRotated.previous_material_id'), \
                                       json_extract(payload, '$.KeyRemoved.material_id')) \
                       from events where aggregate_type = 'Keyring' \
                         and event_type in ('KeyRotated', 'KeyRemoved'))",
                )
                .execute(pool)
                .await?
                .rows_affected()
            }
        };
        if result > 0 {
            self.scrub_soon();
        }
        Ok(result)
    }
}

/// Overwrites what the database's files keep of deleted rows.
async fn scrub_files(db: &Database) {
    match db {
        Database::Postgres(pool) => {
            if let Err(error) = sqlx::query("vacuum key_material").execute(pool).await {
                tracing::warn!(%error, "could not vacuum destroyed key material");
            }
        }
        Database::Sqlite(pool) => {
            // TRUNCATE copies the log into the main file (where secure_delete zeroed the rows)
            // and empties it; readers still inside an older snapshot make it wait, then retry.
            for _ in 0..50 {
                match sqlx::query_as::<_, (i64, i64, i64)>("pragma wal_checkpoint(truncate)")
                    .fetch_one(pool)
                    .await
                {
                    Ok((0, _, _)) => return,
                    Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    Err(error) => {
                        tracing::warn!(%error, "could not checkpoint after destroying key material");
                        return;
                    }
                }
            }
            tracing::warn!("the log still holds destroyed key material: readers kept it busy");
        }
    }
}
