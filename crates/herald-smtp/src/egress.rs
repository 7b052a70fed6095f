//! The egress guard: which addresses a tenant may make Herald connect to (its
//! SMTP host, its OAuth2 token endpoint), judged on the resolved addresses.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

/// Ranges that are never a tenant's server, each with the rule that refuses
/// it: this machine, link-local (where most clouds serve instance metadata),
/// the unspecified address, multicast, reserved and broadcast, and NAT64's
/// local-use prefix (whose IPv4 address may sit at any of several places, so
/// it cannot be judged reliably). Private ranges (10/8, 172.16/12,
/// 192.168/16, 100.64/10, fc00::/7) stay allowed: an on-premises relay is a
/// normal provider.
const FORBIDDEN: &[(&str, EgressRule)] = &[
    ("0.0.0.0/8", EgressRule::Unspecified),
    ("127.0.0.0/8", EgressRule::Loopback),
    ("169.254.0.0/16", EgressRule::LinkLocal),
    ("224.0.0.0/4", EgressRule::Multicast),
    ("240.0.0.0/4", EgressRule::Reserved),
    ("::/128", EgressRule::Unspecified),
    ("::1/128", EgressRule::Loopback),
    ("fe80::/10", EgressRule::LinkLocal),
    ("ff00::/8", EgressRule::Multicast),
    ("64:ff9b:1::/48", EgressRule::Nat64LocalUse),
];

/// Cloud metadata and instance services outside the forbidden ranges. Those at
/// 169.254.169.254 and other link-local addresses (AWS, GCP's
/// metadata.google.internal, Azure IMDS, Oracle, DigitalOcean, OpenStack,
/// Tencent's 169.254.0.23) are forbidden with link-local already.
const METADATA: &[&str] = &[
    // AWS: instance metadata, the Route 53 resolver, time sync and EKS Pod
    // Identity over IPv6 (Nitro instances).
    "fd00:ec2::254/128",
    "fd00:ec2::253/128",
    "fd00:ec2::123/128",
    "fd00:ec2::23/128",
    // GCP: the metadata server over IPv6.
    "fd20:ce::254/128",
    // Akamai (Linode): the metadata service over IPv6.
    "fd00:a9fe:a9fe::1/128",
    // Alibaba Cloud: instance metadata.
    "100.100.100.200/32",
    // Azure: the wire server (and through it the guest agent's secrets).
    "168.63.129.16/32",
    // Oracle Cloud Infrastructure Classic: instance metadata.
    "192.0.0.192/32",
];

/// The rule by which the egress guard refuses an address, as the API's
/// warnings, a refused delivery and `herald smtp-check` name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EgressRule {
    /// `0.0.0.0/8` and `::`.
    Unspecified,
    /// `127.0.0.0/8` and `::1`: this machine.
    Loopback,
    /// `169.254.0.0/16` and `fe80::/10`, where clouds serve instance metadata.
    LinkLocal,
    /// `224.0.0.0/4` and `ff00::/8`.
    Multicast,
    /// `240.0.0.0/4`, with broadcast.
    Reserved,
    /// NAT64's local-use prefix `64:ff9b:1::/48`.
    Nat64LocalUse,
    /// A cloud's metadata or instance service outside the ranges above.
    CloudMetadata,
    /// A range of the operator's `--egress-deny`.
    OperatorDenied,
}

impl EgressRule {
    /// A stable name of the rule, for programs.
    pub fn code(self) -> &'static str {
        match self {
            EgressRule::Unspecified => "unspecified",
            EgressRule::Loopback => "loopback",
            EgressRule::LinkLocal => "link_local",
            EgressRule::Multicast => "multicast",
            EgressRule::Reserved => "reserved",
            EgressRule::Nat64LocalUse => "nat64_local_use",
            EgressRule::CloudMetadata => "cloud_metadata",
            EgressRule::OperatorDenied => "operator_denied",
        }
    }

    /// The rule from its [`code`](EgressRule::code).
    pub fn from_code(code: &str) -> Option<EgressRule> {
        [
            EgressRule::Unspecified,
            EgressRule::Loopback,
            EgressRule::LinkLocal,
            EgressRule::Multicast,
            EgressRule::Reserved,
            EgressRule::Nat64LocalUse,
            EgressRule::CloudMetadata,
            EgressRule::OperatorDenied,
        ]
        .into_iter()
        .find(|rule| rule.code() == code)
    }
}

/// The rule in words, and what the operator can do about it where allowing
/// the range can make sense (this machine, for a relay on it; a range the
/// operator denied).
impl std::fmt::Display for EgressRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EgressRule::Unspecified => "unspecified addresses (0.0.0.0/8, ::) are refused",
            EgressRule::Loopback => {
                "loopback addresses are refused; the operator may allow them with --egress-allow"
            }
            EgressRule::LinkLocal => {
                "link-local addresses are refused (clouds serve instance metadata there)"
            }
            EgressRule::Multicast => "multicast addresses are refused",
            EgressRule::Reserved => "reserved and broadcast addresses (240.0.0.0/4) are refused",
            EgressRule::Nat64LocalUse => {
                "NAT64 local-use addresses (64:ff9b:1::/48) are refused: the IPv4 address inside cannot be judged"
            }
            EgressRule::CloudMetadata => "cloud metadata service addresses are refused",
            EgressRule::OperatorDenied => {
                "the operator refuses this range with --egress-deny (an --egress-allow range overrides it)"
            }
        })
    }
}

/// The operator's egress policy: built-in forbidden ranges, plus a deny list,
/// minus an allow list that overrides both.
///
/// An IPv6 address that carries an IPv4 address (IPv4-mapped, IPv4-compatible,
/// IPv4-translated, NAT64 `64:ff9b::/96`, 6to4, Teredo) is judged as that IPv4
/// address too: it is refused when the IPv4 address is, so `::ffff:127.0.0.1`,
/// `64:ff9b::a9fe:a9fe` and `2002:7f00:1::` are all this machine or its
/// metadata service. The allow list applies to the embedded address in the
/// same way: allowing `127.0.0.0/8` allows `::ffff:127.0.0.1` as well.
#[derive(Clone, Debug)]
pub struct Egress {
    allow: Vec<IpNet>,
    /// The built-in ranges, then the operator's, each with its rule.
    deny: Vec<(IpNet, EgressRule)>,
}

impl Egress {
    /// A policy with the operator's allow and deny lists.
    pub fn new(allow: Vec<IpNet>, deny: Vec<IpNet>) -> Self {
        let built_in = FORBIDDEN
            .iter()
            .copied()
            .chain(METADATA.iter().map(|net| (*net, EgressRule::CloudMetadata)))
            .map(|(net, rule)| (net.parse().expect("the built-in ranges parse"), rule));
        let operator = deny
            .into_iter()
            .map(|net| (net, EgressRule::OperatorDenied));
        Egress {
            allow,
            deny: built_in.chain(operator).collect(),
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
        self.refusal(ip).is_none()
    }

    /// The rule that refuses `ip`, or `None` when Herald may connect to it.
    pub fn refusal(&self, ip: IpAddr) -> Option<EgressRule> {
        if self.allows(ip) {
            return None;
        }
        // Every address `ip` stands for must pass: the IPv6 address itself and
        // each IPv4 address inside it (Teredo carries two).
        let denied = |ip: IpAddr| {
            if self.allow.iter().any(|net| net.contains(&ip)) {
                return None;
            }
            self.deny
                .iter()
                .find(|(net, _)| net.contains(&ip))
                .map(|(_, rule)| *rule)
        };
        denied(ip).or_else(|| {
            embedded_ipv4(ip)
                .into_iter()
                .flatten()
                .find_map(|v4| denied(v4.into()))
        })
    }

    /// True when the operator's allow list covers `ip` itself, or the IPv4
    /// address it carries. Plain (unencrypted) HTTP goes only to such addresses.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let covered = |ip: IpAddr| self.allow.iter().any(|net| net.contains(&ip));
        covered(ip) || {
            let mut inner = embedded_ipv4(ip).into_iter().flatten().peekable();
            inner.peek().is_some() && inner.all(|v4| covered(v4.into()))
        }
    }

    /// True when the operator has allowed some ranges explicitly (so plain
    /// HTTP to a host name may find an allowed address).
    pub fn has_allow_list(&self) -> bool {
        !self.allow.is_empty()
    }
}

impl Default for Egress {
    fn default() -> Self {
        Egress::new(Vec::new(), Vec::new())
    }
}

/// The IPv4 addresses an IPv6 address carries, by the transition mechanism its
/// prefix names; none for an IPv4 address or a plain IPv6 one.
fn embedded_ipv4(ip: IpAddr) -> [Option<Ipv4Addr>; 2] {
    let IpAddr::V6(v6) = ip else {
        return [None, None];
    };
    let s = v6.segments();
    let last_32 = || Ipv4Addr::from(v6.to_bits() as u32);
    match s {
        // ::ffff:a.b.c.d (IPv4-mapped: how a dual-stack socket spells IPv4).
        [0, 0, 0, 0, 0, 0xffff, _, _] => [Some(last_32()), None],
        // ::ffff:0:a.b.c.d (IPv4-translated, RFC 2765).
        [0, 0, 0, 0, 0xffff, 0, _, _] => [Some(last_32()), None],
        // ::a.b.c.d (IPv4-compatible, deprecated); :: and ::1 are judged as themselves too.
        [0, 0, 0, 0, 0, 0, _, _] => [Some(last_32()), None],
        // 64:ff9b::a.b.c.d (NAT64, the well-known prefix).
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => [Some(last_32()), None],
        // 2002:AABB:CCDD::/48 (6to4): the IPv4 address is bits 16 to 48.
        [0x2002, hi, lo, ..] => [
            Some(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))),
            None,
        ],
        // 2001:0:SSSS:SSSS:flags:port:CCCC:CCCC (Teredo): the server's IPv4
        // address as it is, the client's inverted.
        [0x2001, 0, hi, lo, ..] => [
            Some(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))),
            Some(Ipv4Addr::from(!(v6.to_bits() as u32))),
        ],
        _ => [None, None],
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    fn first_embedded(v6: Ipv6Addr) -> Option<Ipv4Addr> {
        embedded_ipv4(v6.into())[0]
    }

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
            "100.64.0.1",
            "203.0.113.7",
            "2001:db8::1",
            "fd12:3456:789a::25",
            "2a00:1450:4001:80b::201a",
        ] {
            assert!(egress.permits(ip(good)), "{good} was refused");
        }
    }

    #[test]
    fn refuses_cloud_metadata_addresses() {
        let egress = Egress::default();
        for bad in [
            "169.254.169.254",
            "169.254.170.2",
            "169.254.0.23",
            "fd00:ec2::254",
            "fd00:ec2::253",
            "fd00:ec2::123",
            "fd00:ec2::23",
            "fd20:ce::254",
            "fd00:a9fe:a9fe::1",
            "fe80::a9fe:a9fe",
            "100.100.100.200",
            "168.63.129.16",
            "192.0.0.192",
        ] {
            assert!(!egress.permits(ip(bad)), "{bad} was permitted");
        }
        // Their neighbours are ordinary addresses.
        for good in ["fd00:ec2::1", "100.100.100.201", "168.63.129.17"] {
            assert!(egress.permits(ip(good)), "{good} was refused");
        }
    }

    #[test]
    fn finds_the_ipv4_address_inside_each_transition_form() {
        let cases = [
            ("::ffff:169.254.169.254", "169.254.169.254"),
            ("::ffff:0:127.0.0.1", "127.0.0.1"),
            ("::127.0.0.1", "127.0.0.1"),
            ("64:ff9b::a9fe:a9fe", "169.254.169.254"),
            ("64:ff9b::127.0.0.1", "127.0.0.1"),
            ("2002:7f00:1::", "127.0.0.1"),
            ("2002:a9fe:a9fe:1234::5", "169.254.169.254"),
            // Teredo: server 65.54.227.120, client 192.0.2.45 (RFC 4380's example).
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "65.54.227.120"),
        ];
        for (v6, v4) in cases {
            let v6: Ipv6Addr = v6.parse().unwrap();
            assert_eq!(first_embedded(v6), Some(v4.parse().unwrap()), "{v6}");
        }
        let teredo: IpAddr = ip("2001:0:4136:e378:8000:63bf:3fff:fdd2");
        assert_eq!(embedded_ipv4(teredo)[1], Some(ip4("192.0.2.45")));
        assert_eq!(embedded_ipv4(ip("2001:db8::1")), [None, None]);
        assert_eq!(embedded_ipv4(ip("2a00:1450::1")), [None, None]);
    }

    fn ip4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn refuses_forbidden_ipv4_in_every_ipv6_spelling() {
        let egress = Egress::default();
        for bad in [
            // IPv4-mapped and IPv4-translated.
            "::ffff:127.0.0.1",
            "::ffff:a9fe:a9fe",
            "::ffff:0:127.0.0.1",
            "::ffff:100.100.100.200",
            // IPv4-compatible.
            "::127.0.0.1",
            "::a9fe:a9fe",
            "::168.63.129.16",
            // NAT64, the well-known prefix and the local-use one.
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::169.254.169.254",
            "64:ff9b::7f00:1",
            "64:ff9b::6464:64c8",
            "64:ff9b:1::a9fe:a9fe",
            "64:ff9b:1:a9fe:a9:fe00::",
            // 6to4.
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "2002:6464:64c8::",
            "2002:e000:1::1",
            // Teredo: a forbidden server, or a forbidden client (inverted).
            "2001:0:7f00:1::",
            "2001:0:a9fe:a9fe::",
            "2001:0:4136:e378:8000:63bf:80ff:fffe",
            "2001:0:4136:e378:8000:63bf:5601:5601",
        ] {
            assert!(!egress.permits(ip(bad)), "{bad} was permitted");
        }
        for good in [
            "::ffff:203.0.113.7",
            "::ffff:10.0.0.25",
            "64:ff9b::cb00:7107",
            "2002:cb00:7107::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
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
        assert!(!egress.permits(ip("10.1.2.3")));
        assert!(!egress.permits(ip("192.168.1.7")));
        assert!(egress.permits(ip("192.168.1.8")));
        assert!(Egress::parse_list("10.0.0.0/33").is_err());
        // The operator's lists apply to the IPv4 address inside an IPv6 one.
        for spelling in [
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
        ] {
            assert!(egress.permits(ip(spelling)), "{spelling} was refused");
        }
        for spelling in ["::ffff:10.1.2.3", "64:ff9b::a01:203", "2002:a01:203::"] {
            assert!(!egress.permits(ip(spelling)), "{spelling} was permitted");
        }
        // Allowing loopback does not allow the metadata service inside a Teredo address.
        assert!(!egress.permits(ip("2001:0:7f00:1:0:0:5601:5601")));
    }

    #[test]
    fn each_refusal_names_its_rule() {
        let egress = Egress::new(Vec::new(), Egress::parse_list("10.0.0.0/8").unwrap());
        for (address, rule) in [
            ("127.0.0.1", EgressRule::Loopback),
            ("::1", EgressRule::Loopback),
            ("::ffff:127.0.0.1", EgressRule::Loopback),
            ("0.0.0.0", EgressRule::Unspecified),
            ("169.254.169.254", EgressRule::LinkLocal),
            ("64:ff9b::a9fe:a9fe", EgressRule::LinkLocal),
            ("fd00:ec2::254", EgressRule::CloudMetadata),
            ("224.0.0.1", EgressRule::Multicast),
            ("255.255.255.255", EgressRule::Reserved),
            ("64:ff9b:1::1", EgressRule::Nat64LocalUse),
            ("10.1.2.3", EgressRule::OperatorDenied),
        ] {
            assert_eq!(egress.refusal(ip(address)), Some(rule), "{address}");
            assert_eq!(EgressRule::from_code(rule.code()), Some(rule));
        }
        assert_eq!(egress.refusal(ip("203.0.113.7")), None);
        assert!(EgressRule::Loopback.to_string().contains("--egress-allow"));
    }

    #[test]
    fn allows_is_the_allow_list_alone() {
        let egress = Egress::new(
            Egress::parse_list("127.0.0.0/8, 10.9.0.0/16").unwrap(),
            Vec::new(),
        );
        assert!(egress.allows(ip("127.0.0.1")));
        assert!(egress.allows(ip("::ffff:127.0.0.1")));
        assert!(egress.allows(ip("10.9.1.1")));
        assert!(!egress.allows(ip("203.0.113.7")));
        assert!(!egress.allows(ip("2001:db8::1")));
        assert!(!Egress::default().allows(ip("203.0.113.7")));
    }
}
