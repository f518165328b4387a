//! How far the views trail the log, for `/readyz` and `/metrics`.

use super::{ProjectionError, Projector};
use crate::log::Cursor;
use keyledger_store::Arg;

/// How far the views trail the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lag {
    /// Events the projection furthest behind has yet to apply (counted up to a bound).
    pub events: i64,
    /// That projection, if any is behind.
    pub projection: Option<&'static str>,
}

impl Projector {
    /// How many events the projection furthest behind has yet to apply, counted up to `bound`,
    /// and its name. Events of types a projection does not consume are not its lag (it steps
    /// over them whenever it next wakes).
    ///
    /// # Errors
    /// The database's error.
    pub async fn lag(&self, bound: i64) -> Result<Lag, ProjectionError> {
        let checkpoints = self.checkpoints().await?;
        // Projections of one pipeline stand at one checkpoint over the same types: ask once.
        let mut asked: Vec<(Cursor, &[&'static str], i64)> = Vec::new();
        let mut furthest = Lag { events: 0, projection: None };
        for projection in self.projections.iter() {
            let Some((_, at)) = checkpoints.iter().find(|(name, _)| name == projection.name())
            else {
                continue;
            };
            let consumes = projection.consumes();
            let known = asked.iter().find(|(a, c, _)| a == at && *c == consumes).map(|q| q.2);
            let behind = match known {
                Some(behind) => behind,
                None => {
                    let behind = self.behind(*at, consumes, bound).await?;
                    asked.push((*at, consumes, behind));
                    behind
                }
            };
            if behind > furthest.events {
                furthest = Lag { events: behind, projection: Some(projection.name()) };
            }
        }
        Ok(furthest)
    }

    /// Events of `types` after `at`, counted up to `bound`.
    async fn behind(
        &self,
        at: Cursor,
        types: &[&'static str],
        bound: i64,
    ) -> Result<i64, ProjectionError> {
        // PostgreSQL orders the log by (transaction, position); SQLite by position alone.
        let (after, mut args) = if self.pool.is_postgres() {
            (
                "(transaction_id, global_position) > ($2::bigint::text::xid8, $3)",
                vec![Arg::Int(bound), Arg::Int(at.txid), Arg::Int(at.position)],
            )
        } else {
            ("global_position > $2", vec![Arg::Int(bound), Arg::Int(at.position)])
        };
        let first = args.len() + 1;
        let in_list =
            (first..first + types.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
        args.extend(types.iter().map(|t| Arg::Text((*t).to_owned())));
        let sql = format!(
            "select count(*) from (select 1 from events where {after} \
             and aggregate_type in ({in_list}) limit $1) behind"
        );
        let rows: Vec<(i64,)> = self.pool.fetch_all(&sql, &args).await?;
        Ok(rows.first().map_or(0, |(n,)| *n))
    }

    /// The projections that show events of `aggregate_type`.
    pub fn consumers_of(&self, aggregate_type: &str) -> Vec<&'static str> {
        self.projections
            .iter()
            .filter(|p| p.consumes().contains(&aggregate_type))
            .map(|p| p.name())
            .collect()
    }
}
