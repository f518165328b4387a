//! What every event carries besides its payload: who caused it, in what role, under which
//! request, and when. Written and read here only, under the names the log has always used.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// Who asked for a command or a call: what its events record of them.
#[derive(Debug, Clone)]
pub struct Actor {
    pub sub: String,
    pub role: String,
    pub request_id: String,
}

impl Actor {
    /// The metadata of an event this actor causes at `at`.
    #[must_use]
    pub fn metadata(&self, at: DateTime<Utc>) -> EventMetadata {
        EventMetadata {
            actor: Some(self.sub.clone()),
            role: Some(self.role.clone()),
            request_id: Some(self.request_id.clone()),
            occurred_at: Some(at),
        }
    }
}

/// An event's metadata, typed. Each part may be missing from an event written by hand or by an
/// older version; readers say what they assume then.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventMetadata {
    pub actor: Option<String>,
    pub role: Option<String>,
    pub request_id: Option<String>,
    pub occurred_at: Option<DateTime<Utc>>,
}

/// The stored shape: an object of strings.
#[derive(Deserialize)]
struct Stored {
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    occurred_at: Option<String>,
}

impl EventMetadata {
    /// As cqrs-es carries metadata: a map of strings.
    #[must_use]
    pub fn into_map(self) -> HashMap<String, String> {
        let parts = [
            ("actor", self.actor),
            ("role", self.role),
            ("request_id", self.request_id),
            ("occurred_at", self.occurred_at.map(|at| at.to_rfc3339())),
        ];
        parts.into_iter().filter_map(|(name, value)| Some((name.to_owned(), value?))).collect()
    }

    /// Read from cqrs-es's map; what is missing or unreadable stays `None`.
    #[must_use]
    pub fn from_map(map: &HashMap<String, String>) -> Self {
        Self::from_stored(Stored {
            actor: map.get("actor").cloned(),
            role: map.get("role").cloned(),
            request_id: map.get("request_id").cloned(),
            occurred_at: map.get("occurred_at").cloned(),
        })
    }

    /// Read from the log's JSON text; anything unreadable reads as no metadata.
    #[must_use]
    pub fn from_json(text: &str) -> Self {
        serde_json::from_str(text).map(Self::from_stored).unwrap_or_default()
    }

    fn from_stored(stored: Stored) -> Self {
        Self {
            actor: stored.actor,
            role: stored.role,
            request_id: stored.request_id,
            occurred_at: stored
                .occurred_at
                .as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_reads_back_as_written_through_either_form() {
        let at = DateTime::parse_from_rfc3339("2026-12-01T08:00:00.123456Z")
            .expect("instant")
            .with_timezone(&Utc);
        let actor = Actor { sub: "ana".into(), role: "owner".into(), request_id: "r-1".into() };
        let written = actor.metadata(at);
        let map = written.clone().into_map();
        assert_eq!(map["occurred_at"], "2026-12-01T08:00:00.123456+00:00", "the log's format");
        assert_eq!(EventMetadata::from_map(&map), written);
        let text = serde_json::to_string(&map).expect("json");
        assert_eq!(EventMetadata::from_json(&text), written);
    }

    #[test]
    fn missing_or_unreadable_parts_read_as_none() {
        let read = EventMetadata::from_json(r#"{"actor": "ana", "occurred_at": "yesterday"}"#);
        assert_eq!(read.actor.as_deref(), Some("ana"));
        assert_eq!(read.occurred_at, None);
        assert_eq!(EventMetadata::from_json("not json"), EventMetadata::default());
    }
}
