//! The egress guard: which addresses a tenant's SMTP host may resolve to and be connected to.

use std::net::IpAddr;

use ipnet::IpNet;

/// Ranges that are never a tenant's mail server: this machine, cloud metadata
/// services (link-local), the unspecified address, multicast and broadcast.
const FORBIDDEN: &[&str] = &[
    "0.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "fe80::/10",
    "ff00::/8",
];

/// The operator's egress policy: built-in forbidden ranges, plus a deny list,
/// minus an allow list that overrides both.
#[derive(Clone, Debug)]
pub struct Egress {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl Egress {
    /// A policy with the operator's allow and deny lists.
    pub fn new(allow: Vec<IpNet>, deny: Vec<IpNet>) -> Self {
        let forbidden = FORBIDDEN
            .iter()
            .map(|net| net.parse().expect("the built-in ranges parse"));
        Egress {
            allow,
            deny: forbidden.chain(deny).collect(),
        }
    }

    /// Parses a comma-separated list of CIDRs (a bare address is a single host).
    pub fn parse_list(list: &str) -> Result<Vec<IpNet>, String> {
        list.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                item.parse::<IpNet>()
                    .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{item:?} is not a CIDR range such as 10.0.0.0/8"))
            })
            .collect()
    }

    /// True when Herald may connect to `ip` for a tenant.
    pub fn permits(&self, ip: IpAddr) -> bool {
        // ::ffff:127.0.0.1 is 127.0.0.1: judge the IPv4 address inside.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return true;
        }
        !self.deny.iter().any(|net| net.contains(&ip)) && ip != IpAddr::from([255, 255, 255, 255])
    }
}

impl Default for Egress {
    fn default() -> Self {
        Egress::new(Vec::new(), Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refuses_this_machine_metadata_and_multicast() {
        let egress = Egress::default();
        for bad in [
            "127.0.0.1",
            "::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
            "169.254.169.254",
            "fe80::1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
        ] {
            assert!(!egress.permits(ip(bad)), "{bad} was permitted");
        }
        for good in [
            "10.0.0.25",
            "192.168.1.10",
            "172.16.0.1",
            "203.0.113.7",
            "2001:db8::1",
        ] {
            assert!(egress.permits(ip(good)), "{good} was refused");
        }
    }

    #[test]
    fn the_allow_list_overrides_and_the_deny_list_adds() {
        let allow = Egress::parse_list("127.0.0.0/8").unwrap();
        let deny = Egress::parse_list("10.0.0.0/8, 192.168.1.7").unwrap();
        let egress = Egress::new(allow, deny);
        assert!(egress.permits(ip("127.0.0.1")));
        assert!(egress.permits(ip("::ffff:127.0.0.1")));
        assert!(!egress.permits(ip("10.1.2.3")));
        assert!(!egress.permits(ip("192.168.1.7")));
        assert!(egress.permits(ip("192.168.1.8")));
        assert!(Egress::parse_list("10.0.0.0/33").is_err());
    }
}
