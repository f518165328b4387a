//! Which IP addresses are on the public internet. Everything the IANA special-purpose address
//! registries (RFC 6890 and successors) mark as not globally reachable counts as internal; an
//! IPv4 address carried inside an IPv6 one (mapped, compatible, NAT64, 6to4) is judged as the
//! IPv4 address it reaches.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether `ip` is a globally reachable address.
#[must_use]
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => is_global_v6(v6),
    }
}

/// Whether `ip` is anything but a globally reachable address (loopback, private, link-local,
/// shared, reserved, documentation, multicast…).
#[must_use]
pub fn is_internal(ip: IpAddr) -> bool {
    !is_global(ip)
}

/// `(network, prefix length)` of the IPv4 special-purpose blocks that are not globally
/// reachable.
const V4_NOT_GLOBAL: [([u8; 4], u8); 17] = [
    ([0, 0, 0, 0], 8),          // "this network"
    ([10, 0, 0, 0], 8),         // private
    ([100, 64, 0, 0], 10),      // shared address space (carrier-grade NAT)
    ([127, 0, 0, 0], 8),        // loopback
    ([169, 254, 0, 0], 16),     // link-local (cloud metadata services live here)
    ([172, 16, 0, 0], 12),      // private
    ([192, 0, 0, 0], 24),       // IETF protocol assignments (but see V4_GLOBAL_EXCEPTIONS)
    ([192, 0, 2, 0], 24),       // documentation
    ([192, 88, 99, 0], 24),     // deprecated 6to4 relay anycast
    ([192, 168, 0, 0], 16),     // private
    ([198, 18, 0, 0], 15),      // benchmarking
    ([198, 51, 100, 0], 24),    // documentation
    ([203, 0, 113, 0], 24),     // documentation
    ([224, 0, 0, 0], 4),        // multicast
    ([240, 0, 0, 0], 4),        // reserved
    ([255, 255, 255, 255], 32), // limited broadcast
    ([192, 0, 0, 170], 31),     // NAT64 discovery (inside 192.0.0.0/24 too)
];

/// Addresses inside a not-global block that the registry marks globally reachable.
const V4_GLOBAL_EXCEPTIONS: [[u8; 4]; 2] = [
    [192, 0, 0, 9],  // port control protocol anycast
    [192, 0, 0, 10], // traversal using relays around NAT anycast
];

fn in_v4(ip: Ipv4Addr, network: [u8; 4], prefix: u8) -> bool {
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(network)) & mask
}

fn is_global_v4(ip: Ipv4Addr) -> bool {
    if V4_GLOBAL_EXCEPTIONS.contains(&ip.octets()) {
        return true;
    }
    !V4_NOT_GLOBAL.iter().any(|(network, prefix)| in_v4(ip, *network, *prefix))
}

fn in_v6(ip: Ipv6Addr, network: [u16; 8], prefix: u8) -> bool {
    let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix)) };
    u128::from(ip) & mask == u128::from(Ipv6Addr::from(network)) & mask
}

/// The IPv4 address an IPv6 one stands for, where it carries one.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    let low32 = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    if in_v6(ip, [0, 0, 0, 0, 0, 0xffff, 0, 0], 96)          // IPv4-mapped
        || in_v6(ip, [0, 0, 0, 0, 0, 0, 0, 0], 96)           // IPv4-compatible (deprecated)
        || in_v6(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96)
    // NAT64 well-known prefix
    {
        return Some(low32);
    }
    if in_v6(ip, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        // 6to4: the IPv4 address is bits 16..48.
        return Some(Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32));
    }
    None
}

/// `(network, prefix length)` of the IPv6 special-purpose blocks that are not globally
/// reachable (the blocks carrying an IPv4 address are judged by that address instead).
const V6_NOT_GLOBAL: [([u16; 8], u8); 10] = [
    ([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), // local-use IPv4/IPv6 translation
    ([0x100, 0, 0, 0, 0, 0, 0, 0], 64),     // discard-only
    ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),    // IETF protocol assignments (Teredo included)
    ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), // documentation
    ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),    // documentation
    ([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16),    // segment routing SIDs
    ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),     // unique local
    ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),    // link-local
    ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),    // site-local (deprecated)
    ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),     // multicast
];

/// Addresses inside 2001::/23 that the registry marks globally reachable.
const V6_GLOBAL_EXCEPTIONS: [([u16; 8], u8); 6] = [
    ([0x2001, 1, 0, 0, 0, 0, 0, 1], 128), // port control protocol anycast
    ([0x2001, 1, 0, 0, 0, 0, 0, 2], 128), // traversal using relays around NAT anycast
    ([0x2001, 3, 0, 0, 0, 0, 0, 0], 32),  // AMT
    ([0x2001, 4, 0x112, 0, 0, 0, 0, 0], 48), // AS112-v6
    ([0x2001, 0x20, 0, 0, 0, 0, 0, 0], 28), // ORCHIDv2
    ([0x2001, 0x30, 0, 0, 0, 0, 0, 0], 28), // drone remote ID
];

fn is_global_v6(ip: Ipv6Addr) -> bool {
    if ip.is_unspecified() || ip.is_loopback() {
        return false;
    }
    if let Some(v4) = embedded_v4(ip) {
        return is_global_v4(v4);
    }
    if V6_GLOBAL_EXCEPTIONS.iter().any(|(network, prefix)| in_v6(ip, *network, *prefix)) {
        return true;
    }
    !V6_NOT_GLOBAL.iter().any(|(network, prefix)| in_v6(ip, *network, *prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    /// One address from every IANA special-purpose block that is not globally reachable, in
    /// each form an IPv4 address can hide in.
    #[test]
    fn every_special_purpose_block_is_internal() {
        let internal = [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.1.2.3",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.1",
            "192.0.0.8",
            "192.0.0.170",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "250.1.2.3",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",
            "2001:2::1",
            "2001:db8::1",
            "2002:7f00:1::1",
            "2002:a00:1::",
            "3fff::1",
            "5f00::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "ff05::2",
        ];
        for text in internal {
            assert!(is_internal(ip(text)), "{text} should be internal");
        }
    }

    #[test]
    fn public_addresses_are_global_however_they_are_written() {
        let global = [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "192.0.0.9",
            "192.0.0.10",
            "192.0.3.1",
            "198.17.255.255",
            "198.20.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2001:1::1",
            "2001:3::1",
            "2001:20::1",
        ];
        for text in global {
            assert!(is_global(ip(text)), "{text} should be global");
        }
    }
}
