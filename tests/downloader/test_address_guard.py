"""AddressPolicy: which addresses the downloader may connect to."""

from __future__ import annotations

import pytest

from winnow.shared.address_guard import AddressPolicy, BlockedAddressError

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.0.1", "private"),
    ("192.168.255.255", "private"),
    ("169.254.1.1", "link-local"),
    ("169.254.169.254", "metadata"),  # AWS, GCP, Azure, OpenStack
    ("169.254.170.2", "metadata"),  # ECS task credentials
    ("100.100.100.200", "metadata"),  # Alibaba Cloud
    ("fd00:ec2::254", "metadata"),  # AWS over IPv6
    ("100.64.0.1", "non-global"),  # carrier-grade NAT
    ("0.0.0.0", ""),  # connects to the local host on Linux
    ("224.0.0.1", ""),
    ("255.255.255.255", ""),
    ("::1", "loopback"),
    ("::", ""),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),  # scoped, as getpeername reports it
    ("fc00::1", "private"),
    ("fdff:ffff::1", "private"),
    ("ff02::1", ""),
    ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
    ("::ffff:169.254.169.254", "metadata"),
    ("::ffff:10.0.0.1", "private"),
    ("::127.0.0.1", "loopback"),  # IPv4-compatible (deprecated)
    ("2002:a00:1::", "private"),  # 6to4 of 10.0.0.1
    ("64:ff9b::a9fe:a9fe", "metadata"),  # NAT64 of 169.254.169.254
]

ALLOWED = ["8.8.8.8", "1.1.1.1", "172.32.0.1", "2001:4860:4860::8888", "::ffff:8.8.8.8", "2002:808:808::1",
           "64:ff9b::808:808"]


@pytest.mark.parametrize(("address", "kind"), REFUSED)
def test_internal_addresses_are_refused(address, kind):
    reason = AddressPolicy().refusal(address)
    assert reason is not None
    assert kind in reason
    with pytest.raises(BlockedAddressError):
        AddressPolicy().check(address)


@pytest.mark.parametrize("address", ALLOWED)
def test_global_addresses_are_allowed(address):
    assert AddressPolicy().refusal(address) is None
    AddressPolicy().check(address)


@pytest.mark.parametrize("address", ["localhost", "example.com", "", "10.0.0.256"])
def test_a_name_or_garbage_is_not_an_address(address):
    assert "not an IP address" in AddressPolicy().refusal(address)


def test_allow_list_exempts_its_networks_only():
    policy = AddressPolicy.from_strings(["127.0.0.0/8", " 10.1.0.0/16 ", ""])
    assert policy.refusal("127.0.0.1") is None
    assert policy.refusal("::ffff:127.0.0.1") is None
    assert policy.refusal("10.1.200.3") is None
    assert policy.refusal("10.2.0.1") is not None
    assert policy.refusal("192.168.1.1") is not None
    assert policy.refusal("169.254.169.254") is not None
    assert policy.refusal("::1") is not None


def test_allow_list_can_exempt_the_metadata_address_explicitly():
    assert AddressPolicy.from_strings(["169.254.169.254/32"]).refusal("169.254.169.254") is None


def test_allow_list_takes_ipv6_networks():
    policy = AddressPolicy.from_strings(["fd00::/8", "::1/128"])
    assert policy.refusal("fd12::5") is None
    assert policy.refusal("::1") is None
    assert policy.refusal("fc00::1") is not None


def test_bad_allow_list_entry_is_a_clear_error():
    with pytest.raises(ValueError, match="not-a-network"):
        AddressPolicy.from_strings(["not-a-network"])
