//! The client's address: the connection's peer, unless the peer is one of
//! the configured trusted proxies (a load balancer in front of the
//! gateway); then the nearest address in `X-Forwarded-For` that is not a
//! trusted proxy itself. Behind a load balancer every client would
//! otherwise share its address, and everything keyed on the client address
//! (login lockouts, the `source_ip` of policies) would treat them as one.

use std::net::IpAddr;

/// A block of addresses, `10.0.0.0/8` or `fd00::/8` (a bare address is
/// the block of itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not an address block like 10.0.0.0/8");
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (text, None),
        };
        let network: IpAddr = address.parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(Self { network, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The client's address for a connection from `peer` whose request carried
/// these `X-Forwarded-For` values (in order).
pub fn client_address<'a>(peer: IpAddr, forwarded_for: impl Iterator<Item = &'a str>, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<&str> = forwarded_for.flat_map(|v| v.split(',')).map(str::trim).collect();
    // From the nearest hop outwards: the first that is not ours is the
    // client; anything unreadable ends the walk (it is the client's own say).
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if is_trusted(ip) => client = ip,
            Ok(ip) => return ip,
            Err(_) => return client,
        }
    }
    client
}

/// `ip` as text, as its `Display` writes it; an IPv4 address (the common
/// case, on every request) without the formatting machinery.
pub fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for octet in 0..=255u8 {
            for ip in [
                IpAddr::from([octet, 0, 10, 255]),
                IpAddr::from([1, octet, 99, 100]),
                IpAddr::from([127, 0, octet, 1]),
                IpAddr::from([9, 200, 0, octet]),
            ] {
                assert_eq!(ip_text(ip), ip.to_string());
            }
        }
        for v6 in ["::1", "2001:db8::8a2e:370:7334", "::ffff:10.0.0.1"] {
            assert_eq!(ip_text(ip(v6)), v6);
        }
    }

    #[test]
    fn blocks_parse_and_contain() {
        let lan: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(lan.contains(ip("10.1.2.3")) && !lan.contains(ip("11.0.0.1")) && !lan.contains(ip("::1")));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_client_is_the_nearest_untrusted_hop() {
        let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap()];
        let from = |peer: &str, xff: &[&str]| client_address(ip(peer), xff.iter().copied(), &trusted);
        // Not behind a trusted proxy: the header is the client's own say.
        assert_eq!(from("203.0.113.9", &["198.51.100.1"]), ip("203.0.113.9"));
        // Behind the balancer: the address it saw, not what the client claimed before it.
        assert_eq!(from("10.0.0.5", &["198.51.100.1, 203.0.113.9"]), ip("203.0.113.9"));
        assert_eq!(from("10.0.0.5", &["198.51.100.1", "203.0.113.9, 10.0.0.7"]), ip("203.0.113.9"));
        assert_eq!(from("10.0.0.5", &[]), ip("10.0.0.5"));
        assert_eq!(from("10.0.0.5", &["garbage, 10.0.0.7"]), ip("10.0.0.7"));
    }
}
