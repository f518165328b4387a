//! Which user-supplied endpoints keyledger will send a key to.
//!
//! An endpoint that resolves to loopback, private, link-local or otherwise internal addresses
//! would let an organization aim keyledger at the platform's own network (SSRF), so those are
//! refused unless the operator allows them.

use std::net::IpAddr;

use url::Url;

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

/// Whether `ip` is not a public internet address.
#[must_use]
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                // 100.64.0.0/10, carrier-grade NAT
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_unique_local()
                || v6.is_unicast_link_local()
                || v6.to_ipv4_mapped().is_some_and(|v4| is_internal(IpAddr::V4(v4)))
        }
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
    async fn malformed_endpoints_are_refused() {
        let policy = EndpointPolicy { allow_private: true };
        assert_eq!(policy.check("not a url").await, Err(EndpointError::NotAUrl));
        assert_eq!(policy.check("ftp://1.1.1.1").await, Err(EndpointError::NotAUrl));
        assert_eq!(policy.check("https://u:p@1.1.1.1").await, Err(EndpointError::ExtraParts));
        assert_eq!(policy.check("http://1.1.1.1").await, Err(EndpointError::PlainHttp));
    }
}
