//! `[trust]`: which relays may hand mail on as internal, and what becomes of mail that comes
//! from anywhere else (spec.md "Trust").
//!
//! Guarantees: every network is a valid IPv4 or IPv6 CIDR block (or a bare address, meaning
//! that one host) without host bits set, `untrusted` is one of its three modes, and
//! `authserv_id` and `domains` come together; every error names its key and position. The
//! walk that uses this is `classify::trust`.

use std::fmt;
use std::net::IpAddr;

use toml::Spanned;

use super::spans::Context;
use super::ConfigError;

/// `[trust]` as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTrust {
    #[serde(default)]
    networks: Vec<Spanned<String>>,
    authserv_id: Option<Spanned<String>>,
    domains: Option<Spanned<Vec<Spanned<String>>>>,
    untrusted: Option<Spanned<String>>,
}

/// What happens to an alert whose mail came from outside the trusted networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Untrusted {
    /// Severity capped at `info`, title prefixed with `[unverified] `, after the rules.
    #[default]
    Mark,
    /// Not delivered at all (kept in the history like a rule's drop).
    Drop,
    /// Only `trusted = false` is set; rules decide the rest.
    Keep,
}

impl Untrusted {
    /// The name used in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Untrusted::Mark => "mark",
            Untrusted::Drop => "drop",
            Untrusted::Keep => "keep",
        }
    }
}

/// One CIDR block of `networks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    /// Parses `10.0.0.0/8`, `2001:db8::/32` or a bare address (that one host). Host bits
    /// must be clear: `10.1.2.3/8` is almost certainly a typo, and which was meant is unclear.
    pub fn parse(text: &str) -> Result<Network, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| format!("invalid network {text:?}: expected an address or CIDR block such as \"10.0.0.0/8\" or \"2001:db8::/32\""))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => {
                    return Err(format!(
                        "invalid network {text:?}: the prefix length must be 0 to {max}"
                    ))
                }
            },
        };
        let network = Network { address, prefix };
        let base = network.masked(address);
        if base != address {
            return Err(format!(
                "invalid network {text:?}: host bits are set (the block is {base}/{prefix})"
            ));
        }
        Ok(network)
    }

    /// Whether `ip` is in the block. An IPv4-mapped IPv6 address counts as its IPv4 form, as
    /// a dual-stack listener reports IPv4 peers that way.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.address.is_ipv4() && self.masked(ip) == self.address
    }

    /// `ip` with the bits past the prefix cleared (same family as the block).
    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::from(std::net::Ipv4Addr::from(u32::from(v4) & mask))
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::from(std::net::Ipv6Addr::from(u128::from(v6) & mask))
            }
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// A validated `[trust]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustConfig {
    /// The MTAs allowed to hand internal mail on (SpamAssassin's `trusted_networks`).
    pub networks: Vec<Network>,
    /// The server whose `Authentication-Results` are believed, lower-cased; `None`: none are.
    pub authserv_id: Option<String>,
    /// The domains whose `dkim=pass` (`header.d`) or `dmarc=pass` (`header.from`) by that
    /// server make mail trusted; lower-cased, without a trailing dot.
    pub domains: Vec<String>,
    /// What becomes of untrusted mail.
    pub untrusted: Untrusted,
}

impl TrustConfig {
    /// Whether `ip` is in one of the trusted networks.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|n| n.contains(ip))
    }
}

impl RawTrust {
    /// The validated table; errors are located at the offending value.
    pub(super) fn validate(self, ctx: &Context<'_>) -> Result<TrustConfig, ConfigError> {
        let mut networks = Vec::with_capacity(self.networks.len());
        for (i, text) in self.networks.iter().enumerate() {
            let network = Network::parse(text.get_ref())
                .map_err(|m| ctx.error(text.span(), &format!("trust.networks[{i}]"), m))?;
            networks.push(network);
        }
        let authserv_id = match &self.authserv_id {
            Some(id) if !is_name(id.get_ref()) => {
                return Err(ctx.error(
                    id.span(),
                    "trust.authserv_id",
                    format!(
                        "invalid authserv-id {:?}: expected the server's name as its Authentication-Results headers begin with, e.g. \"mx1.example.net\"",
                        id.get_ref()
                    ),
                ))
            }
            Some(id) => Some(id.get_ref().to_ascii_lowercase()),
            None => None,
        };
        let written: &[Spanned<String>] = self.domains.as_ref().map_or(&[], |d| d.get_ref());
        let mut domains = Vec::with_capacity(written.len());
        for (i, domain) in written.iter().enumerate() {
            let name = domain.get_ref().trim_end_matches('.');
            if !is_name(name) {
                return Err(ctx.error(
                    domain.span(),
                    &format!("trust.domains[{i}]"),
                    format!("invalid domain {:?}", domain.get_ref()),
                ));
            }
            domains.push(name.to_ascii_lowercase());
        }
        match (&self.authserv_id, &self.domains) {
            (Some(id), None) => {
                return Err(ctx.error(
                    id.span(),
                    "trust.authserv_id",
                    "authserv_id needs `domains`: the domains whose dkim=pass or dmarc=pass it vouches for",
                ))
            }
            (Some(id), Some(list)) if list.get_ref().is_empty() => {
                return Err(ctx.error(
                    id.span(),
                    "trust.authserv_id",
                    "authserv_id needs `domains`: the domains whose dkim=pass or dmarc=pass it vouches for",
                ))
            }
            (None, Some(list)) => {
                return Err(ctx.error(
                    list.span(),
                    "trust.domains",
                    "domains needs `authserv_id`: the server whose Authentication-Results are believed",
                ))
            }
            _ => {}
        }
        let untrusted = match &self.untrusted {
            None => Untrusted::default(),
            Some(mode) => [Untrusted::Mark, Untrusted::Drop, Untrusted::Keep]
                .into_iter()
                .find(|m| m.as_str() == mode.get_ref())
                .ok_or_else(|| {
                    ctx.error(
                        mode.span(),
                        "trust.untrusted",
                        format!(
                            "unknown mode {:?}: expected \"mark\", \"drop\" or \"keep\"",
                            mode.get_ref()
                        ),
                    )
                })?,
        };
        Ok(TrustConfig {
            networks,
            authserv_id,
            domains,
            untrusted,
        })
    }
}

/// A DNS name as an authserv-id or a DKIM/DMARC domain: letters, digits, `-`, `_` and `.`.
fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    const HEAD: &str =
        "[imap]\nhost = \"127.0.0.1\"\ntls = \"none\"\nusername = \"u\"\npassword = \"p\"\n";

    fn parse(trust: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("t.toml"), &format!("{HEAD}{trust}"), &|_| None)
    }

    fn net(text: &str) -> Network {
        Network::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn networks_contain_their_addresses() {
        assert!(net("10.0.0.0/8").contains(ip("10.200.3.4")));
        assert!(!net("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(net("192.0.2.25/32").contains(ip("192.0.2.25")));
        assert!(!net("192.0.2.25/32").contains(ip("192.0.2.26")));
        assert!(
            net("192.0.2.25").contains(ip("192.0.2.25")),
            "a bare address"
        );
        assert!(net("0.0.0.0/0").contains(ip("203.0.113.5")));
        assert!(
            !net("0.0.0.0/0").contains(ip("2001:db8::1")),
            "families differ"
        );
        assert!(net("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
        assert!(!net("2001:db8::/32").contains(ip("2001:db9::1")));
        assert!(net("::/0").contains(ip("2001:db8::1")));
        assert!(
            net("10.0.0.0/8").contains(ip("::ffff:10.1.2.3")),
            "IPv4-mapped IPv6 is IPv4"
        );
        assert_eq!(net("2001:db8::/32").to_string(), "2001:db8::/32");
    }

    #[test]
    fn a_full_trust_table_loads() {
        let c = parse(
            "[trust]\nnetworks = [\"10.0.0.0/8\", \"192.0.2.25/32\", \"2001:db8::/48\"]\n\
             authserv_id = \"MX1.example.net\"\ndomains = [\"Example.NET.\"]\nuntrusted = \"drop\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let trust = c.trust.expect("[trust]");
        assert_eq!(trust.networks.len(), 3);
        assert_eq!(trust.authserv_id.as_deref(), Some("mx1.example.net"));
        assert_eq!(trust.domains, ["example.net"]);
        assert_eq!(trust.untrusted, Untrusted::Drop);
        assert!(trust.trusts(ip("2001:db8:0:1::25")));
    }

    #[test]
    fn the_example_block_loads_uncommented() {
        let example = include_str!("../../config.example.toml");
        let block: String = example
            .lines()
            .skip_while(|l| *l != "# [trust]")
            .take_while(|l| !l.is_empty())
            .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
            .collect();
        assert!(block.starts_with("[trust]\n"), "{block}");
        let trust = parse(&block)
            .unwrap_or_else(|e| panic!("{e}\n{block}"))
            .trust
            .expect("[trust]");
        assert_eq!(trust.networks.len(), 2);
        assert_eq!(trust.untrusted, Untrusted::Mark);
        assert_eq!(trust.domains, ["example.net"]);
    }

    #[test]
    fn defaults_and_absence() {
        assert!(parse("").unwrap_or_else(|e| panic!("{e}")).trust.is_none());
        let trust = parse("[trust]\n")
            .unwrap_or_else(|e| panic!("{e}"))
            .trust
            .expect("[trust]");
        assert!(trust.networks.is_empty() && trust.authserv_id.is_none());
        assert_eq!(trust.untrusted, Untrusted::Mark);
    }

    #[test]
    fn errors_are_located() {
        let cases = [
            (
                "[trust]\nnetworks = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n",
                "trust.networks[1]",
                (7, 27),
                "prefix length must be 0 to 32",
            ),
            (
                "[trust]\nnetworks = [\"10.1.2.3/8\"]\n",
                "trust.networks[0]",
                (7, 13),
                "host bits are set (the block is 10.0.0.0/8)",
            ),
            (
                "[trust]\nnetworks = [\"mx.example.net\"]\n",
                "trust.networks[0]",
                (7, 13),
                "invalid network \"mx.example.net\"",
            ),
            (
                "[trust]\nnetworks = [\"2001:db8::1/129\"]\n",
                "trust.networks[0]",
                (7, 13),
                "0 to 128",
            ),
            (
                "[trust]\nuntrusted = \"page\"\n",
                "trust.untrusted",
                (7, 13),
                "expected \"mark\", \"drop\" or \"keep\"",
            ),
            (
                "[trust]\nauthserv_id = \"mx1.example.net\"\n",
                "trust.authserv_id",
                (7, 15),
                "needs `domains`",
            ),
            (
                "[trust]\ndomains = [\"example.net\"]\n",
                "trust.domains",
                (7, 11),
                "needs `authserv_id`",
            ),
            (
                "[trust]\nauthserv_id = \"mx1; dkim=pass\"\ndomains = [\"example.net\"]\n",
                "trust.authserv_id",
                (7, 15),
                "invalid authserv-id",
            ),
            (
                "[trust]\nauthserv_id = \"mx1\"\ndomains = [\"a b\"]\n",
                "trust.domains[0]",
                (8, 12),
                "invalid domain",
            ),
            (
                "[trust]\nnetwork = [\"10.0.0.0/8\"]\n",
                "trust.network",
                (7, 1),
                "unknown field `network`",
            ),
        ];
        for (text, key, position, message) in cases {
            let error = parse(text).unwrap_err();
            assert_eq!(error.key.as_deref(), Some(key), "{error}");
            assert_eq!(error.position, Some(position), "{error}");
            assert!(error.message.contains(message), "{error}");
        }
    }
}
