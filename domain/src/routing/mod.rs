//! Where a model call goes: which providers serve the model it names, in which order they are
//! tried, and which of their answers let the call move on to the next one.
//!
//! Everything here is a pure decision. The gateway in `infra` gathers what the rules need
//! (the organization's Keyring, the providers' model lists) and carries the decision out.

mod answer;
mod families;
mod model_ref;
mod plan;

pub use answer::{judge, Failure, Verdict};
pub use families::{ModelFamilies, UnknownFamilyProvider};
pub use model_ref::{ModelRef, ModelRefError};
pub use plan::{route, unlisted, RouteRequest, RoutingError, Serving, Surface, Target};
