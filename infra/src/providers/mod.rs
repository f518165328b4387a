//! How keyledger talks to each AI provider: where it lives, how a key is presented, and the
//! cheap authenticated call that verifies a key.

mod addresses;
mod client;
mod endpoint;
mod listing;
mod metering;
mod registry;
mod resolver;

pub use addresses::{is_global, is_internal};
pub use client::{read_bounded, Outgoing, ProviderClient, SendError};
pub use endpoint::{EndpointError, EndpointPolicy};
pub use listing::{parse_listing, ListedModel};
pub use metering::{asking_for_stream_usage, UsageFigures};
pub use registry::{default_base_url, Auth, ProviderSpec};
pub use resolver::AddressRefused;
