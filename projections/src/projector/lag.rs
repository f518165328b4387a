//! How far the views trail the log, for `/readyz` and `/metrics`.

use super::{ProjectionError, Projector};
use crate::log::Cursor;
use keyledger_store::event_store::GlobalOrder;

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
                    let order = GlobalOrder::new(self.pool.clone());
                    let behind = order.count_after(*at, consumes, bound).await?;
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

    /// The projections that show events of `aggregate_type`.
    pub fn consumers_of(&self, aggregate_type: &str) -> Vec<&'static str> {
        self.projections
            .iter()
            .filter(|p| p.consumes().contains(&aggregate_type))
            .map(|p| p.name())
            .collect()
    }
}
