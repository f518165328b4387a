//! keyledger's read models: each view a pure fold of the event log. The durable projector and
//! its views arrive with the projections issue; until then the API reads aggregate state.
