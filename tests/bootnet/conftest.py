"""Fixtures of the boot-network tests: ``bootlink`` (tests/bootnet/netns.py)
and ``dnsmasq``, the path of Debian's dnsmasq (in CI its absence fails)."""

from __future__ import annotations

import pytest

from tests.bootnet import netns
from tests.helpers import require_tool


@pytest.fixture
def dnsmasq() -> str:
    return require_tool("dnsmasq", "dnsmasq-base")


@pytest.fixture
def bootlink(request):
    link = netns.make_link()
    request.addfinalizer(lambda: netns.remove(link))
    netns.create(link)
    return link
