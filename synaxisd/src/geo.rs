//! Client addresses and the countries they come from.
//!
//! [`GeoIp`] reads country codes from a database in MaxMind's format (GeoIP2 or GeoLite2 Country
//! or City, or another vendor's file with the same record layout). [`client_ip`] picks the address
//! to look up when the daemon runs behind a reverse proxy.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use ipnet::IpNet;
use maxminddb::{MaxMindDbError, Reader};

/// A country database in MaxMind's format.
pub struct GeoIp {
    reader: Reader<Vec<u8>>,
    path: PathBuf,
    /// Set after the first failed lookup is logged at warn level. Later failures are logged
    /// at debug level, because a broken file would otherwise log once per request.
    lookup_error_logged: AtomicBool,
}

impl fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let metadata = self.reader.metadata();
        f.debug_struct("GeoIp")
            .field("path", &self.path)
            .field("database_type", &metadata.database_type)
            .field("build_epoch", &metadata.build_epoch)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GeoIpError {
    #[error(
        "cannot read GeoIP database {path}: {source}. Check the configured path and that the daemon may read the file"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "GeoIP database {path} is not a valid MaxMind database: {source}. Replace it with a .mmdb file, such as GeoLite2-Country.mmdb"
    )]
    Invalid {
        path: PathBuf,
        source: MaxMindDbError,
    },
    #[error(
        "GeoIP database {path} has type {database_type:?}, whose records contain no country. Use a Country or City database, such as GeoLite2-Country.mmdb"
    )]
    NoCountries {
        path: PathBuf,
        database_type: String,
    },
}

impl GeoIp {
    /// Reads the whole database at `path` into memory and checks its metadata.
    ///
    /// Rejects databases whose type names no country data (for example GeoLite2-ASN), because
    /// their lookups would all return `None`.
    pub fn open(path: &Path) -> Result<Self, GeoIpError> {
        let bytes = std::fs::read(path).map_err(|source| GeoIpError::Read {
            path: path.to_owned(),
            source,
        })?;

        let reader = Reader::from_source(bytes).map_err(|source| GeoIpError::Invalid {
            path: path.to_owned(),
            source,
        })?;

        let database_type = &reader.metadata().database_type;
        if !has_country_records(database_type) {
            return Err(GeoIpError::NoCountries {
                path: path.to_owned(),
                database_type: database_type.clone(),
            });
        }

        Ok(Self {
            reader,
            path: path.to_owned(),
            lookup_error_logged: AtomicBool::new(false),
        })
    }

    /// ISO 3166-1 alpha-2 code, uppercase, or None when the address is not in the database.
    ///
    /// The code comes from the record's `country.iso_code`, the country MaxMind places the
    /// address in, and not from `registered_country`. An IPv4-mapped IPv6 address is looked up
    /// by its IPv4 form. A record without a two-letter code, and a lookup that fails because
    /// the file is corrupt, also return None, and the failure is logged.
    pub fn country(&self, ip: IpAddr) -> Option<String> {
        let ip = ip.to_canonical();

        // The reader returns an error, not "absent", for an IPv6 address in an IPv4-only file.
        if ip.is_ipv6() && self.reader.metadata().ip_version == 4 {
            return None;
        }

        let iso_code = match self.lookup_iso_code(ip) {
            Ok(iso_code) => iso_code?,
            Err(error) => {
                self.log_lookup_error(&error);
                return None;
            }
        };

        let is_alpha2 = iso_code.len() == 2 && iso_code.bytes().all(|b| b.is_ascii_alphabetic());
        is_alpha2.then(|| iso_code.to_ascii_uppercase())
    }

    fn lookup_iso_code(&self, ip: IpAddr) -> Result<Option<String>, MaxMindDbError> {
        self.reader
            .lookup(ip)?
            .decode_path(&maxminddb::path!["country", "iso_code"])
    }

    fn log_lookup_error(&self, error: &MaxMindDbError) {
        let path = self.path.display();
        if self.lookup_error_logged.swap(true, Ordering::Relaxed) {
            tracing::debug!(%error, %path, "GeoIP lookup failed, so the country is unknown");
        } else {
            tracing::warn!(
                %error,
                %path,
                "GeoIP lookup failed, so the country is unknown. Later failures are logged at debug level"
            );
        }
    }
}

/// Checks by its `database_type` whether a database has `country` in its records, as MaxMind's
/// GeoIP2 and GeoLite2 Country, City and Enterprise databases do.
fn has_country_records(database_type: &str) -> bool {
    let database_type = database_type.to_ascii_lowercase();
    ["country", "city", "enterprise"]
        .iter()
        .any(|kind| database_type.contains(kind))
}

/// Returns the client's address: the peer, or, when the peer is a trusted proxy, the last
/// address of X-Forwarded-For (the one that proxy added). When that entry does not parse, the
/// peer is returned.
///
/// Only the last entry is read, because a client can write any earlier entry itself. So behind
/// two proxies, the address returned is the outer proxy's, not the client's. A request with
/// several X-Forwarded-For headers should pass their values joined with commas, in order. An
/// entry may carry a port (`192.0.2.1:443`, `[2001:db8::1]:443`). IPv4-mapped IPv6 addresses,
/// from the peer or from the header, are returned in their IPv4 form, and a mapped peer such as
/// `::ffff:127.0.0.1` matches a trusted `127.0.0.1/32`.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted_proxies: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    if !is_trusted_proxy(peer, trusted_proxies) {
        return peer;
    }

    forwarded_for
        .and_then(|header| header.rsplit(',').next())
        .and_then(parse_forwarded_entry)
        .unwrap_or(peer)
}

/// Matches `peer`, already in canonical form, against IPv4 networks and also, in its
/// IPv4-mapped form, against IPv6 networks such as `::ffff:0:0/96`.
fn is_trusted_proxy(peer: IpAddr, trusted_proxies: &[IpNet]) -> bool {
    let mapped = match peer {
        IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
        IpAddr::V6(_) => None,
    };

    trusted_proxies.iter().any(|network| {
        network.contains(&peer) || mapped.is_some_and(|mapped| network.contains(&mapped))
    })
}

fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let ip = entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|socket| socket.ip()))
        .ok()?;
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_database_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/geoip/test-country.mmdb")
    }

    fn test_database() -> GeoIp {
        GeoIp::open(&test_database_path()).unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn networks(texts: &[&str]) -> Vec<IpNet> {
        texts.iter().map(|text| text.parse().unwrap()).collect()
    }

    #[test]
    fn country_of_each_test_range() {
        let geo = test_database();
        let cases = [
            ("192.0.2.0", "DE"),
            ("192.0.2.255", "DE"),
            ("198.51.100.0", "BR"),
            ("198.51.100.255", "BR"),
            ("203.0.113.0", "US"),
            ("203.0.113.255", "US"),
            ("2001:db8::", "JP"),
            ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "JP"),
        ];

        for (address, expected) in cases {
            assert_eq!(
                geo.country(ip(address)).as_deref(),
                Some(expected),
                "{address}"
            );
        }
    }

    #[test]
    fn country_outside_test_ranges_is_none() {
        let geo = test_database();
        let addresses = [
            "192.0.1.255",
            "192.0.3.0",
            "8.8.8.8",
            "127.0.0.1",
            "2001:db9::",
            "::1",
        ];

        for address in addresses {
            assert_eq!(geo.country(ip(address)), None, "{address}");
        }
    }

    #[test]
    fn country_of_ipv4_mapped_address() {
        let geo = test_database();

        assert_eq!(
            geo.country(ip("::ffff:198.51.100.7")).as_deref(),
            Some("BR")
        );
    }

    #[test]
    fn open_reads_metadata() {
        let geo = test_database();
        let metadata = geo.reader.metadata();

        assert_eq!(metadata.database_type, "GeoIP2-Country");
        assert_eq!(metadata.ip_version, 6);
    }

    #[test]
    fn open_missing_file_names_path() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("no-such-file.mmdb");

        let error = GeoIp::open(&path).unwrap_err();

        assert!(matches!(error, GeoIpError::Read { .. }), "{error:?}");
        assert!(
            error.to_string().contains(&path.display().to_string()),
            "{error}"
        );
    }

    #[test]
    fn open_rejects_file_not_in_mmdb_format() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");

        let error = GeoIp::open(&path).unwrap_err();

        assert!(matches!(error, GeoIpError::Invalid { .. }), "{error:?}");
        assert!(
            error.to_string().contains(&path.display().to_string()),
            "{error}"
        );
    }

    #[test]
    fn country_database_types() {
        for database_type in [
            "GeoIP2-Country",
            "GeoLite2-Country",
            "GeoIP2-City",
            "GeoLite2-City",
            "GeoIP2-Enterprise",
            "DBIP-Country-Lite",
        ] {
            assert!(has_country_records(database_type), "{database_type}");
        }

        for database_type in ["GeoLite2-ASN", "GeoIP2-ISP", "GeoIP2-Anonymous-IP"] {
            assert!(!has_country_records(database_type), "{database_type}");
        }
    }

    #[test]
    fn client_ip_untrusted_peer_ignores_header() {
        let trusted = networks(&["10.0.0.0/8"]);

        let client = client_ip(ip("192.0.2.9"), Some("198.51.100.1"), &trusted);

        assert_eq!(client, ip("192.0.2.9"));
    }

    #[test]
    fn client_ip_trusted_peer_takes_last_entry() {
        let trusted = networks(&["10.0.0.0/8"]);

        let client = client_ip(ip("10.1.2.3"), Some("203.0.113.5, 198.51.100.1"), &trusted);

        assert_eq!(client, ip("198.51.100.1"));
    }

    #[test]
    fn client_ip_trusted_peer_without_header() {
        let trusted = networks(&["10.0.0.0/8"]);

        assert_eq!(client_ip(ip("10.1.2.3"), None, &trusted), ip("10.1.2.3"));
        assert_eq!(
            client_ip(ip("10.1.2.3"), Some(""), &trusted),
            ip("10.1.2.3")
        );
    }

    #[test]
    fn client_ip_garbage_falls_back_to_peer() {
        let trusted = networks(&["10.0.0.0/8"]);
        let peer = ip("10.1.2.3");

        for header in ["unknown", "198.51.100.1, unknown", "198.51.100.1,", "1.2.3"] {
            assert_eq!(client_ip(peer, Some(header), &trusted), peer, "{header:?}");
        }
    }

    #[test]
    fn client_ip_entries_with_ports_and_spaces() {
        let trusted = networks(&["10.0.0.0/8"]);
        let peer = ip("10.1.2.3");
        let cases = [
            ("  198.51.100.1  ", "198.51.100.1"),
            ("203.0.113.5,198.51.100.1:443", "198.51.100.1"),
            ("[2001:db8::7]:443", "2001:db8::7"),
            ("2001:db8::7", "2001:db8::7"),
        ];

        for (header, expected) in cases {
            assert_eq!(
                client_ip(peer, Some(header), &trusted),
                ip(expected),
                "{header:?}"
            );
        }
    }

    #[test]
    fn client_ip_mapped_peer_matches_ipv4_network() {
        let trusted = networks(&["127.0.0.1/32"]);

        let client = client_ip(ip("::ffff:127.0.0.1"), Some("192.0.2.9"), &trusted);

        assert_eq!(client, ip("192.0.2.9"));
    }

    #[test]
    fn client_ip_ipv4_peer_matches_mapped_network() {
        let trusted = networks(&["::ffff:127.0.0.0/104"]);

        let client = client_ip(ip("127.0.0.1"), Some("192.0.2.9"), &trusted);

        assert_eq!(client, ip("192.0.2.9"));
    }

    #[test]
    fn client_ip_returns_ipv4_form_of_mapped_addresses() {
        let trusted = networks(&["10.0.0.0/8"]);

        assert_eq!(
            client_ip(ip("::ffff:192.0.2.9"), None, &trusted),
            ip("192.0.2.9")
        );
        assert_eq!(
            client_ip(ip("10.1.2.3"), Some("::ffff:198.51.100.1"), &trusted),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn client_ip_no_trusted_proxies() {
        let client = client_ip(ip("10.1.2.3"), Some("198.51.100.1"), &[]);

        assert_eq!(client, ip("10.1.2.3"));
    }
}
