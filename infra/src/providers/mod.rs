//! How keyledger talks to each AI provider: where it lives, how a key is presented, and the
//! cheap authenticated call that verifies a key.

mod client;
mod endpoint;
mod listing;
mod metering;
mod registry;

pub use client::{read_bounded, Outgoing, ProviderClient};
pub use endpoint::{is_internal, EndpointError, EndpointPolicy};
pub use listing::{parse_listing, ListedModel};
pub use metering::asking_for_stream_usage;
pub use registry::{default_base_url, Auth, ProviderSpec};
