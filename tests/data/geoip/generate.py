"""Writes test-country.mmdb, a small GeoIP2-Country database of documentation address ranges.

Run from the repository root:

    python3 -m venv /tmp/geoip-venv
    /tmp/geoip-venv/bin/pip install mmdb-writer==0.2.7 netaddr==1.3.0
    /tmp/geoip-venv/bin/python tests/data/geoip/generate.py

The database is written next to this script unless a path is given as the only argument.
Its build time is fixed, so the same mmdb-writer version writes the same bytes every run.
"""

import sys
from pathlib import Path

from mmdb_writer import MMDBWriter
from netaddr import IPSet

# The ranges RFC 5737 (IPv4) and RFC 3849 (IPv6) reserve for documentation, so no real client
# sends from them.
COUNTRIES = [
    ("192.0.2.0/24", "DE", "Germany"),
    ("198.51.100.0/24", "BR", "Brazil"),
    ("203.0.113.0/24", "US", "United States"),
    ("2001:db8::/32", "JP", "Japan"),
]

# 2024-01-01T00:00:00Z, stored as the metadata's build_epoch in place of the current time.
BUILD_EPOCH = 1704067200


class FixedEpochWriter(MMDBWriter):
    """An MMDBWriter that stores BUILD_EPOCH, so regenerating leaves the file unchanged."""

    def _build_meta(self):
        # NOTE: _build_meta is private to mmdb-writer (checked in 0.2.7), which has no option for
        # the build time.
        meta = super()._build_meta()
        meta["build_epoch"] = BUILD_EPOCH
        return meta


def main():
    if len(sys.argv) > 2:
        sys.exit(f"usage: {sys.argv[0]} [OUTPUT.mmdb]")
    if len(sys.argv) == 2:
        output = Path(sys.argv[1])
    else:
        output = Path(__file__).with_name("test-country.mmdb")

    # An IPv6 tree with IPv4 networks stored under ::/96, the layout of MaxMind's own databases,
    # so one file contains both address families.
    writer = FixedEpochWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="GeoIP2-Country",
        languages=["en"],
        description={"en": "Synaxis test countries for documentation address ranges"},
    )
    for network, iso_code, name in COUNTRIES:
        record = {"country": {"iso_code": iso_code, "names": {"en": name}}}
        writer.insert_network(IPSet([network]), record)

    writer.to_db_file(str(output))
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
