//! Listen addresses (`web.http`, `web.https`, `telemetry.http`, `grpc.addr`), checked as the
//! config is read so that a bad one is refused at load with its YAML path, not when binding.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// A `host:port` to listen on, as Dex's `net.Listen("tcp", …)` reads it: an IP address (IPv6
/// in brackets) or a host name, then a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListenAddr {
    Ip(SocketAddr),
    /// Resolved when the listener is bound, as Go resolves it; the first address is used.
    Host {
        name: String,
        port: u16,
    },
}

impl ListenAddr {
    /// Whether only this machine can reach the address.
    pub fn is_loopback(&self) -> bool {
        match self {
            ListenAddr::Ip(addr) => addr.ip().is_loopback(),
            ListenAddr::Host { name, .. } => name.eq_ignore_ascii_case("localhost"),
        }
    }
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(ListenAddr::Ip(addr));
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(format!("`{text}` is not a host:port address"));
        };
        let Ok(port) = port.parse::<u16>() else {
            return Err(format!("`{text}` has an invalid port"));
        };
        // Go's "all interfaces"; lanyard binds IPv4's, as it always has.
        if host.is_empty() {
            return Ok(ListenAddr::Ip(SocketAddr::from((
                Ipv4Addr::UNSPECIFIED,
                port,
            ))));
        }
        if host.contains(':') {
            return Err(format!(
                "`{text}` is not a host:port address (put IPv6 addresses in brackets: [::1]:5556)"
            ));
        }
        let valid_host = host.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
        if !valid_host {
            return Err(format!("`{text}` has an invalid host"));
        }
        Ok(ListenAddr::Host {
            name: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Ip(addr) => addr.fmt(f),
            ListenAddr::Host { name, port } => write!(f, "{name}:{port}"),
        }
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// For `Option<ListenAddr>` keys: empty text (what an unset `$VAR` leaves) is no address, as
/// in Dex.
pub(super) fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ListenAddr>, D::Error> {
    match Option::<String>::deserialize(d)? {
        Some(text) if !text.is_empty() => text.parse().map(Some).map_err(de::Error::custom),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> String {
        text.parse::<ListenAddr>()
            .unwrap_or_else(|e| panic!("{e}"))
            .to_string()
    }

    #[test]
    fn listen_addresses_are_read_as_go_reads_them() {
        assert_eq!(parsed("127.0.0.1:5556"), "127.0.0.1:5556");
        assert_eq!(parsed("[::1]:5556"), "[::1]:5556");
        assert_eq!(parsed(":5556"), "0.0.0.0:5556");
        assert_eq!(parsed("localhost:80"), "localhost:80");
        assert_eq!(
            parsed("dex.example-1.internal:0"),
            "dex.example-1.internal:0"
        );
        assert!("5556".parse::<ListenAddr>().is_err());
        assert!("host:99999".parse::<ListenAddr>().is_err());
        assert!("host:".parse::<ListenAddr>().is_err());
        assert!("::1:5556".parse::<ListenAddr>().is_err());
        assert!("bad host:1".parse::<ListenAddr>().is_err());
        assert!("a..b:1".parse::<ListenAddr>().is_err());
    }

    #[test]
    fn loopback_addresses() {
        let loopback = |text: &str| text.parse::<ListenAddr>().unwrap().is_loopback();
        assert!(loopback("127.0.0.1:5557"));
        assert!(loopback("[::1]:5557"));
        assert!(loopback("localhost:5557"));
        assert!(loopback("LocalHost:5557"));
        assert!(!loopback("0.0.0.0:5557"));
        assert!(!loopback(":5557"));
        assert!(!loopback("10.0.0.1:5557"));
        assert!(!loopback("dex.example:5557"));
    }
}
