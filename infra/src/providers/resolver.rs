//! Name resolution for calls to an organization's own endpoint: the addresses a connection may
//! reach are filtered where the connection is made, so a name that resolved to a public
//! address when it was checked cannot be pointed at the platform's own network for the call
//! (DNS rebinding).

use std::net::SocketAddr;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::addresses::is_internal;

/// Which addresses a connection to an endpoint may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reach {
    /// Public addresses only (an https endpoint on a server that allows no private ones).
    Public,
    /// Internal addresses only (a plain-http endpoint: a key never crosses the internet
    /// unencrypted).
    Internal,
    /// Any (an https endpoint where the operator allows private ones).
    Any,
}

impl Reach {
    pub(crate) fn allows(self, ip: std::net::IpAddr) -> bool {
        match self {
            Self::Public => !is_internal(ip),
            Self::Internal => is_internal(ip),
            Self::Any => true,
        }
    }
}

/// The endpoint's name resolves only to addresses the call may not reach.
#[derive(Debug, thiserror::Error)]
#[error("the endpoint resolves only to addresses this server does not send keys to")]
pub struct AddressRefused;

/// A resolver that keeps only the addresses its [`Reach`] allows.
#[derive(Debug)]
pub(crate) struct GuardedResolver(pub(crate) Reach);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let reach = self.0;
        Box::pin(async move {
            let found = tokio::net::lookup_host((name.as_str(), 0)).await?;
            let allowed: Vec<SocketAddr> = found.filter(|a| reach.allows(a.ip())).collect();
            if allowed.is_empty() {
                return Err(Box::new(AddressRefused) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Whether `error` (from a call) was a connection this resolver refused.
pub(crate) fn was_refused(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        if error.is::<AddressRefused>() {
            return true;
        }
        source = error.source();
    }
    false
}
