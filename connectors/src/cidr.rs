//! IP address ranges (`10.0.0.0/8`, `fd00::/8`, or one address), for allow-lists of peers.

use std::net::IpAddr;

/// An address range; a single address is a /32 (or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpCidr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl IpCidr {
    /// `addr/prefix`, or a bare address (a /32 or /128); `None` when it is neither.
    pub fn parse(s: &str) -> Option<IpCidr> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = prefix.unwrap_or(max);
        (prefix_len <= max).then_some(IpCidr { addr, prefix_len })
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        fn masked(bits: u128, prefix: u8, width: u8) -> u128 {
            if prefix == 0 {
                0
            } else {
                bits >> (width - prefix)
            }
        }
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(net).into(), self.prefix_len, 32)
                    == masked(u32::from(*ip).into(), self.prefix_len, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), self.prefix_len, 128)
                    == masked(u128::from(*ip), self.prefix_len, 128)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_contains_addresses_in_range_only() {
        let net = IpCidr::parse("10.1.0.0/16").unwrap();
        assert!(net.contains(&"10.1.200.3".parse().unwrap()));
        assert!(!net.contains(&"10.2.0.1".parse().unwrap()));
        assert!(!net.contains(&"::1".parse().unwrap()));
        let one = IpCidr::parse("192.168.1.1").unwrap();
        assert_eq!(one.prefix_len, 32);
        assert!(one.contains(&"192.168.1.1".parse().unwrap()));
        assert!(!one.contains(&"192.168.1.2".parse().unwrap()));
        let all = IpCidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(&"8.8.8.8".parse().unwrap()));
        let v6 = IpCidr::parse("fd00::/8").unwrap();
        assert!(v6.contains(&"fd12::1".parse().unwrap()));
        assert!(!v6.contains(&"fe80::1".parse().unwrap()));
        assert!(IpCidr::parse("10.0.0.0/33").is_none());
        assert!(IpCidr::parse("nope").is_none());
    }
}
