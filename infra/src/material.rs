//! The key-material table: sealed key versions, kept outside the event log and destroyed
//! when a rotation or removal makes them obsolete.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::crypto::{Binding, SealedKey};
use keyledger_domain::keyring::MaterialId;
use keyledger_store::Database;

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

    /// Keeps `sealed` under a new id.
    ///
    /// # Errors
    /// [`MaterialError`] when the row cannot be written.
    pub async fn insert(
        &self,
        binding: Binding<'_>,
        sealed: &SealedKey,
    ) -> Result<MaterialId, MaterialError> {
        let id = Uuid::new_v4();
        let sql = "insert into key_material (material_id, org_id, provider, key_id, version, \
                   master_key_id, dek_nonce, wrapped_dek, key_nonce, ciphertext) \
                   values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
        macro_rules! bind_all {
            ($query:expr, $id:expr) => {
                $query
                    .bind($id)
                    .bind(binding.org.as_str())
                    .bind(binding.provider.as_str())
                    .bind(i64::from(binding.key_id))
                    .bind(i64::from(binding.version))
                    .bind(&sealed.master_key_id)
                    .bind(&sealed.dek_nonce)
                    .bind(&sealed.wrapped_dek)
                    .bind(&sealed.key_nonce)
                    .bind(&sealed.ciphertext)
            };
        }
        match &self.db {
            Database::Postgres(pool) => {
                bind_all!(sqlx::query(sql), id).execute(pool).await?;
            }
            Database::Sqlite(pool) => {
                bind_all!(sqlx::query(sql), id.to_string()).execute(pool).await?;
            }
        }
        Ok(MaterialId(id))
    }

    /// The sealed material `id`, if it still exists.
    ///
    /// # Errors
    /// [`MaterialError`] when the row cannot be read.
    pub async fn get(&self, id: MaterialId) -> Result<Option<SealedKey>, MaterialError> {
        let sql = "select master_key_id, dek_nonce, wrapped_dek, key_nonce, ciphertext \
                   from key_material where material_id = $1";
        let row: Option<Row> = match &self.db {
            Database::Postgres(pool) => sqlx::query_as(sql).bind(id.0).fetch_optional(pool).await?,
            Database::Sqlite(pool) => {
                sqlx::query_as(sql).bind(id.0.to_string()).fetch_optional(pool).await?
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

    /// Destroys material (crypto-shredding). Destroying what is already gone is not an error.
    ///
    /// # Errors
    /// [`MaterialError`] when the rows cannot be deleted.
    pub async fn destroy(&self, ids: &[MaterialId]) -> Result<u64, MaterialError> {
        let mut destroyed = 0;
        for id in ids {
            let sql = "delete from key_material where material_id = $1";
            destroyed += match &self.db {
                Database::Postgres(pool) => {
                    sqlx::query(sql).bind(id.0).execute(pool).await?.rows_affected()
                }
                Database::Sqlite(pool) => {
                    sqlx::query(sql).bind(id.0.to_string()).execute(pool).await?.rows_affected()
                }
            };
        }
        if destroyed > 0 {
            self.scrub_soon();
        }
        Ok(destroyed)
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

    /// Destroys material that committed events already released but that a crash left behind
    /// (the process died between committing a rotation or removal and shredding).
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
