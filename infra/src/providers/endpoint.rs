//! Which user-supplied endpoints keyledger will send a key to.
//!
//! An endpoint that resolves to loopback, private, link-local or otherwise internal addresses
//! would let an organization aim keyledger at the platform's own network (SSRF), so those are
//! refused unless the operator allows them.

use std::net::IpAddr;

use url::Url;

use super::addresses::is_internal;
use super::resolver::Reach;

/// The operator's rule for user-supplied endpoints.
#[derive(Debug, Clone, Copy)]
pub struct EndpointPolicy {
    pub allow_private: bool,
}

/// Why an endpoint is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("the endpoint is not an absolute http(s) URL")]
    NotAUrl,
    #[error("the endpoint must not carry credentials, a query or a fragment")]
    ExtraParts,
    #[error("the endpoint's host does not resolve")]
    DoesNotResolve,
    #[error(
        "the endpoint resolves to a loopback or private address, which this server does not allow"
    )]
    PrivateAddress,
    #[error("plain http is only allowed to private endpoints the operator allows; use https")]
    PlainHttp,
}

impl EndpointPolicy {
    /// Which addresses a call to an endpoint of `scheme` may reach; `None` where no call may
    /// go (plain http to a server that allows no private endpoints).
    pub(crate) fn reach(self, scheme: &str) -> Option<Reach> {
        match (scheme, self.allow_private) {
            ("https", false) => Some(Reach::Public),
            ("https", true) => Some(Reach::Any),
            ("http", true) => Some(Reach::Internal),
            _ => None,
        }
    }

    /// Checks, right before a call, the endpoint it goes to: an IP literal is never resolved,
    /// so its address is judged here; a name is judged by the resolver as it connects.
    ///
    /// # Errors
    /// [`EndpointError`] when no call may go there.
    pub(crate) fn reach_of(self, endpoint: &str) -> Result<Reach, EndpointError> {
        let url = Url::parse(endpoint).map_err(|_| EndpointError::NotAUrl)?;
        let reach = self.reach(url.scheme()).ok_or(EndpointError::PlainHttp)?;
        let literal = match url.host() {
            Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            Some(url::Host::Domain(_)) => None,
            None => return Err(EndpointError::NotAUrl),
        };
        match literal {
            Some(ip) if !reach.allows(ip) => Err(if is_internal(ip) {
                EndpointError::PrivateAddress
            } else {
                EndpointError::PlainHttp
            }),
            _ => Ok(reach),
        }
    }

    /// Checks `endpoint` and returns it normalized (no trailing slash).
    ///
    /// # Errors
    /// [`EndpointError`] saying why keyledger will not send keys there.
    pub async fn check(&self, endpoint: &str) -> Result<String, EndpointError> {
        let url = Url::parse(endpoint).map_err(|_| EndpointError::NotAUrl)?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(EndpointError::NotAUrl);
        }
        if !url.username().is_empty()
            || url.password().is_some()
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(EndpointError::ExtraParts);
        }
        let host = url.host_str().ok_or(EndpointError::NotAUrl)?;
        let port = url.port_or_known_default().ok_or(EndpointError::NotAUrl)?;
        let addresses: Vec<IpAddr> = match host.trim_matches(['[', ']']).parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|_| EndpointError::DoesNotResolve)?
                .map(|a| a.ip())
                .collect(),
        };
        if addresses.is_empty() {
            return Err(EndpointError::DoesNotResolve);
        }
        let internal = addresses.iter().any(|ip| is_internal(*ip));
        if internal && !self.allow_private {
            return Err(EndpointError::PrivateAddress);
        }
        if url.scheme() == "http" && !internal {
            return Err(EndpointError::PlainHttp);
        }
        Ok(url.as_str().trim_end_matches('/').to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loopback_and_private_endpoints_are_refused_by_default() {
        let policy = EndpointPolicy { allow_private: false };
        for endpoint in [
            "http://127.0.0.1:11434",
            "https://10.1.2.3",
            "https://[::1]:8080",
            "https://169.254.169.254",
        ] {
            assert_eq!(
                policy.check(endpoint).await,
                Err(EndpointError::PrivateAddress),
                "{endpoint}"
            );
        }
    }

    #[tokio::test]
    async fn the_operator_may_allow_private_endpoints() {
        let policy = EndpointPolicy { allow_private: true };
        assert_eq!(
            policy.check("http://127.0.0.1:11434/").await,
            Ok("http://127.0.0.1:11434".to_owned())
        );
    }

    #[tokio::test]
    async fn addresses_an_ipv4_address_hides_in_are_judged_by_it() {
        let policy = EndpointPolicy { allow_private: false };
        for endpoint in [
            "https://[::ffff:127.0.0.1]",
            "https://[::ffff:a9fe:a9fe]",
            "https://[64:ff9b::7f00:1]",
            "https://[2002:7f00:1::1]",
            "https://[fec0::1]",
            "https://[ff02::1]",
            "https://0.0.0.0",
            "https://198.18.0.1",
            "https://240.0.0.1",
            "https://192.0.0.1",
        ] {
            assert_eq!(
                policy.check(endpoint).await,
                Err(EndpointError::PrivateAddress),
                "{endpoint}"
            );
            assert!(policy.reach_of(endpoint).is_err(), "{endpoint} at call time");
        }
    }

    #[test]
    fn a_call_may_reach_only_what_the_scheme_and_the_operator_allow() {
        let strict = EndpointPolicy { allow_private: false };
        assert_eq!(strict.reach_of("https://example.com"), Ok(Reach::Public));
        assert_eq!(strict.reach_of("http://example.com"), Err(EndpointError::PlainHttp));
        let open = EndpointPolicy { allow_private: true };
        assert_eq!(open.reach_of("http://10.0.0.1:11434"), Ok(Reach::Internal));
        assert_eq!(
            open.reach_of("http://8.8.8.8"),
            Err(EndpointError::PlainHttp),
            "no key in clear over the internet"
        );
        assert_eq!(open.reach_of("https://10.0.0.1"), Ok(Reach::Any));
    }

    proptest::proptest! {
        #[test]
        fn any_endpoint_text_is_judged_without_panicking(raw in "(https?://)?[\\[\\]a-z0-9.:@/%?#-]{0,60}", open: bool) {
            let policy = EndpointPolicy { allow_private: open };
            if let Ok(reach) = policy.reach_of(&raw) {
                proptest::prop_assert!(open || reach == Reach::Public);
            }
        }
    }

    #[tokio::test]
    async fn malformed_endpoints_are_refused() {
        let policy = EndpointPolicy { allow_private: true };
        assert_eq!(policy.check("not a url").await, Err(EndpointError::NotAUrl));
        assert_eq!(policy.check("ftp://1.1.1.1").await, Err(EndpointError::NotAUrl));
        assert_eq!(policy.check("https://u:p@1.1.1.1").await, Err(EndpointError::ExtraParts));
        assert_eq!(policy.check("http://1.1.1.1").await, Err(EndpointError::PlainHttp));
    }
}
