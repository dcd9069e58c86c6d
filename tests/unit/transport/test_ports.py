"""PortPool: even RTP ports with RTCP above, rotation, exhaustion, release."""

from __future__ import annotations

import pytest

from dtmfguard.errors import DtmfguardError
from dtmfguard.transport.ports import PortPool, PortsExhausted


def test_pairs_are_even_rtp_and_rtcp_one_above() -> None:
    pool = PortPool("127.0.0.1", 30000, 30009)
    pairs = [pool.allocate_pair() for _ in range(5)]
    assert pairs == [(30000, 30001), (30002, 30003), (30004, 30005), (30006, 30007), (30008, 30009)]
    assert pool.in_use == 5
    assert pool.capacity == 5


def test_odd_port_min_starts_at_the_next_even_port() -> None:
    pool = PortPool("127.0.0.1", 30001, 30004)
    assert pool.allocate_pair() == (30002, 30003)
    with pytest.raises(PortsExhausted):
        pool.allocate_pair()


def test_exhaustion_raises_the_documented_error() -> None:
    pool = PortPool("127.0.0.1", 40000, 40003)
    pool.allocate_pair()
    pool.allocate_pair()
    with pytest.raises(PortsExhausted, match=r"^Ran out of ports$") as info:
        pool.allocate_pair()
    assert isinstance(info.value, DtmfguardError)


def test_released_pair_goes_to_the_back_of_the_line() -> None:
    pool = PortPool("127.0.0.1", 30000, 30005)
    first, _ = pool.allocate_pair()
    pool.release_pair(first)
    assert pool.in_use == 0
    assert pool.allocate_pair() == (30002, 30003)
    assert pool.allocate_pair() == (30004, 30005)
    assert pool.allocate_pair() == (30000, 30001)


def test_release_of_a_pair_not_lent_out_is_ignored() -> None:
    pool = PortPool("127.0.0.1", 30000, 30003)
    rtp, _ = pool.allocate_pair()
    pool.release_pair(rtp)
    pool.release_pair(rtp)
    pool.release_pair(12345)
    assert pool.in_use == 0
    assert pool.capacity == 2


def test_range_without_a_pair_is_refused() -> None:
    with pytest.raises(ValueError, match="holds no even/odd port pair"):
        PortPool("127.0.0.1", 30000, 30000)
