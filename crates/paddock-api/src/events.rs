//! The event log's entries, as `GET /events` and the WebSocket send them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::enums::EventType;
use crate::ids::EventId;

/// `{id, type, subject_id, occurred_at, payload}`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    pub id: EventId,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub subject_id: Uuid,
    pub occurred_at: DateTime<Utc>,
    /// Kept as the JSON text it was stored as: relayed without being parsed.
    #[schema(value_type = Object)]
    pub payload: Box<RawValue>,
}
