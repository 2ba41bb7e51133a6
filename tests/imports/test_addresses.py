"""Where imports may connect."""

from __future__ import annotations

import ipaddress

import pytest

from pxed.imports.addresses import AddressPolicy, Refused

ip = ipaddress.ip_address


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0",  # noqa: S104
        "224.0.0.1", "240.0.0.1", "100.64.0.1", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1",
    ],
)  # fmt: skip
def test_private_addresses_are_refused_by_default(address):
    policy = AddressPolicy(False)
    assert policy.why_not(ip(address)) is not None
    with pytest.raises(Refused, match="import_allow_private"):
        policy.check("mirror.example", [ip("93.184.215.14"), ip(address)])


def test_public_addresses_allowed_and_settings_open_the_rest():
    assert AddressPolicy(False).check("x", [ip("93.184.215.14")]) == ip("93.184.215.14")
    assert AddressPolicy(True).why_not(ip("127.0.0.1")) is None
    lab = AddressPolicy(False, ["10.9.0.0/16"])
    assert lab.why_not(ip("10.9.1.1")) is None
    assert lab.why_not(ip("10.8.1.1")) is not None
    with pytest.raises(Refused, match="does not resolve"):
        lab.check("x", [])


def test_the_refusal_names_the_host_the_address_and_the_setting():
    policy = AddressPolicy(False)
    with pytest.raises(Refused) as e:
        policy.check("metadata.internal", [ip("169.254.169.254")])
    assert str(e.value) == (
        "metadata.internal resolves to 169.254.169.254, a link-local address "
        "(import_allow_private is off)"
    )
    with pytest.raises(Refused) as e:
        policy.check("10.0.0.1", [ip("10.0.0.1")])
    assert str(e.value) == "10.0.0.1 is a private address (import_allow_private is off)"
