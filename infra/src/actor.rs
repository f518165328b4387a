//! Who caused an event, and the metadata every event they cause carries: Keyring commands and
//! usage records alike.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

/// Who asked for a command, recorded as event metadata.
#[derive(Debug, Clone)]
pub struct Actor {
    pub sub: String,
    pub role: String,
    pub request_id: String,
}

impl Actor {
    /// The metadata every event this actor causes carries: who, in what role, under which
    /// request, and when.
    pub(crate) fn metadata(&self, at: DateTime<Utc>) -> HashMap<String, String> {
        HashMap::from([
            ("actor".to_owned(), self.sub.clone()),
            ("role".to_owned(), self.role.clone()),
            ("request_id".to_owned(), self.request_id.clone()),
            ("occurred_at".to_owned(), at.to_rfc3339()),
        ])
    }
}
