"""RFC 4733 telephone-events: payload bytes in, key presses out, exactly once."""

import pytest

from dtmfguard.errors import ProtocolError
from dtmfguard.protocol.rfc4733 import KEYS, EventReceiver, KeyDown, KeyUp, TelephoneEvent


def payload(event: int, duration: int, end: bool = False, volume: int = 10) -> bytes:
    return TelephoneEvent(event, end, volume, duration).serialize()


class TestPayloadFormat:
    """Section 2.3: event, E, R, volume, duration."""

    def test_parse(self) -> None:
        assert TelephoneEvent.parse(b"\x05\x8a\x03\x20") == TelephoneEvent(event=5, end=True, volume=10, duration=800)

    def test_reserved_bit_is_ignored(self) -> None:
        assert TelephoneEvent.parse(b"\x05\x4a\x00\xa0") == TelephoneEvent(5, False, 10, 160)

    def test_serialize(self) -> None:
        assert TelephoneEvent(11, True, 63, 0xFFFF).serialize() == b"\x0b\xbf\xff\xff"

    def test_trailing_bytes_are_ignored(self) -> None:
        assert TelephoneEvent.parse(b"\x01\x0a\x00\xa0\x00\x00") == TelephoneEvent(1, False, 10, 160)

    def test_short(self) -> None:
        with pytest.raises(ProtocolError) as excinfo:
            TelephoneEvent.parse(b"\x05\x8a")
        assert str(excinfo.value) == "rfc4733: payload of 2 bytes is shorter than the 4-byte event"

    @pytest.mark.parametrize(
        ("event", "message"),
        [
            (TelephoneEvent(256, False, 0, 0), "event 256 is not 0-255"),
            (TelephoneEvent(1, False, 64, 0), "volume 64 is not 0-63"),
            (TelephoneEvent(1, False, 0, 65536), "duration 65536 is not 0-65535"),
        ],
    )
    def test_serialize_ranges(self, event: TelephoneEvent, message: str) -> None:
        with pytest.raises(ValueError, match=f"^{message}$"):
            event.serialize()


class TestEventCodes:
    """Section 3.2: events 0-15 are the DTMF keys."""

    def test_keys(self) -> None:
        assert [TelephoneEvent(code, False, 0, 0).key for code in range(17)] == [*"0123456789*#ABCD", None]

    def test_every_key_is_reported(self) -> None:
        receiver = EventReceiver()
        keys = []
        for code in range(16):
            for event in receiver.receive(10_000 * code, code, True, payload(code, 800, end=True)):
                if isinstance(event, KeyDown):
                    keys.append(event.key)
        assert "".join(keys) == KEYS

    def test_other_events_are_counted_not_reported(self) -> None:
        receiver = EventReceiver()
        assert receiver.receive(1000, 1, True, payload(16, 160)) == []
        assert receiver.receive(1000, 2, False, payload(16, 320)) == []
        assert receiver.receive(1000, 3, False, payload(16, 480, end=True)) == []
        assert receiver.ignored_events == 1

    def test_other_event_ends_a_key_press(self) -> None:
        receiver = EventReceiver()
        receiver.receive(1000, 1, True, payload(7, 400))
        assert receiver.receive(3000, 2, True, payload(32, 160)) == [KeyUp("7", 1000, 400)]


class TestKeyPress:
    """Section 2.5.2: start, updates, the end packet sent three times; reported once."""

    def test_normal_press(self) -> None:
        receiver = EventReceiver()
        results = [
            receiver.receive(8000, 100, True, payload(5, 160)),
            receiver.receive(8000, 101, False, payload(5, 400)),
            receiver.receive(8000, 102, False, payload(5, 800)),
            receiver.receive(8000, 103, False, payload(5, 960, end=True)),
            receiver.receive(8000, 104, False, payload(5, 960, end=True)),
            receiver.receive(8000, 105, False, payload(5, 960, end=True)),
        ]
        assert results == [[KeyDown("5", 8000)], [], [], [KeyUp("5", 8000, 960)], [], []]
        assert receiver.duplicates == 2
        assert receiver.lost_starts == 0

    def test_active_key(self) -> None:
        receiver = EventReceiver()
        assert receiver.active_key is None
        receiver.receive(8000, 1, True, payload(11, 160))
        assert receiver.active_key == "#"
        receiver.receive(8000, 2, False, payload(11, 320, end=True))
        assert receiver.active_key is None

    def test_same_key_twice(self) -> None:
        receiver = EventReceiver()
        events = [
            *receiver.receive(1000, 1, True, payload(1, 800, end=True)),
            *receiver.receive(1000, 2, False, payload(1, 800, end=True)),
            *receiver.receive(2600, 3, True, payload(1, 800, end=True)),
        ]
        assert events == [KeyDown("1", 1000), KeyUp("1", 1000, 800), KeyDown("1", 2600), KeyUp("1", 2600, 800)]


class TestLoss:
    """Lost start packets, lost end packets."""

    def test_first_packet_is_an_update(self) -> None:
        receiver = EventReceiver()
        assert receiver.receive(8000, 5, False, payload(9, 400)) == [KeyDown("9", 8000)]
        assert receiver.lost_starts == 1

    def test_only_end_packets_arrive(self) -> None:
        receiver = EventReceiver()
        assert receiver.receive(8000, 9, False, payload(0, 1040, end=True)) == [
            KeyDown("0", 8000),
            KeyUp("0", 8000, 1040),
        ]
        assert receiver.receive(8000, 10, False, payload(0, 1040, end=True)) == []

    def test_next_event_ends_one_whose_end_was_lost(self) -> None:
        receiver = EventReceiver()
        receiver.receive(1000, 1, True, payload(4, 400))
        assert receiver.receive(3000, 4, True, payload(6, 160)) == [KeyUp("4", 1000, 400), KeyDown("6", 3000)]
        # the lost end turns up late: not a second press of 4
        assert receiver.receive(1000, 3, False, payload(4, 640, end=True)) == []


class TestReordering:
    """Reordering and duplicates within the 60 ms window."""

    def test_update_after_later_update(self) -> None:
        receiver = EventReceiver()
        receiver.receive(8000, 1, True, payload(2, 160))
        receiver.receive(8000, 3, False, payload(2, 480))
        receiver.receive(8000, 2, False, payload(2, 320))
        assert receiver.receive(8000, 4, False, payload(2, 640, end=True)) == [KeyUp("2", 8000, 640)]

    def test_update_after_end(self) -> None:
        receiver = EventReceiver()
        receiver.receive(8000, 1, True, payload(2, 160))
        receiver.receive(8000, 3, False, payload(2, 480, end=True))
        assert receiver.receive(8000, 2, False, payload(2, 320)) == []
        assert receiver.duplicates == 1

    def test_start_after_update(self) -> None:
        receiver = EventReceiver()
        assert receiver.receive(8000, 2, False, payload(3, 320)) == [KeyDown("3", 8000)]
        assert receiver.receive(8000, 1, True, payload(3, 160)) == []
        assert receiver.receive(8000, 3, False, payload(3, 480, end=True)) == [KeyUp("3", 8000, 480)]

    def test_stale_event_is_not_a_press(self) -> None:
        # an earlier event's only packet, delivered after the next event began
        receiver = EventReceiver()
        receiver.receive(5000, 10, True, payload(8, 160))
        assert receiver.receive(4000, 9, False, payload(7, 800, end=True)) == []
        assert receiver.stale == 1
        assert receiver.active_key == "8"

    def test_far_older_timestamp_is_a_restart(self) -> None:
        receiver = EventReceiver()
        receiver.receive(800_000, 10, True, payload(8, 160, end=True))
        assert receiver.receive(1000, 11, True, payload(7, 160)) == [KeyDown("7", 1000)]

    def test_timestamp_wraparound(self) -> None:
        receiver = EventReceiver()
        receiver.receive(0xFFFF_FF00, 1, True, payload(1, 160, end=True))
        assert receiver.receive(0x0000_0100, 2, True, payload(2, 160)) == [KeyDown("2", 0x100)]


class TestLongDuration:
    """Section 2.5.1.3: events longer than the 16-bit duration field."""

    def test_new_segment_with_new_timestamp(self) -> None:
        receiver = EventReceiver()
        events = [
            *receiver.receive(1000, 1, True, payload(5, 400)),
            *receiver.receive(1000, 2, False, payload(5, 65_000)),
            *receiver.receive(1000, 3, False, payload(5, 0xFFFF)),
            *receiver.receive(1000 + 0xFFFF, 4, False, payload(5, 400)),
            *receiver.receive(1000 + 0xFFFF, 5, False, payload(5, 1200, end=True)),
            *receiver.receive(1000 + 0xFFFF, 6, False, payload(5, 1200, end=True)),
        ]
        assert events == [KeyDown("5", 1000), KeyUp("5", 1000, 0xFFFF + 1200)]
        assert receiver.lost_starts == 0

    def test_late_packet_of_first_segment(self) -> None:
        receiver = EventReceiver()
        receiver.receive(1000, 1, True, payload(5, 65_200))
        receiver.receive(1000 + 0xFFFF, 3, False, payload(5, 400))
        assert receiver.receive(1000, 2, False, payload(5, 0xFFFF)) == []
        assert receiver.active_key == "5"

    def test_short_event_then_same_key_is_two_presses(self) -> None:
        receiver = EventReceiver()
        receiver.receive(1000, 1, True, payload(5, 800))  # end lost
        assert receiver.receive(2000, 2, True, payload(5, 160)) == [KeyUp("5", 1000, 800), KeyDown("5", 2000)]

    def test_duration_wraps_under_same_timestamp(self) -> None:
        receiver = EventReceiver()
        events = [
            *receiver.receive(1000, 1, True, payload(6, 65_000)),
            *receiver.receive(1000, 2, False, payload(6, 65_400)),
            *receiver.receive(1000, 3, False, payload(6, 264)),
            *receiver.receive(1000, 4, False, payload(6, 664, end=True)),
        ]
        assert events == [KeyDown("6", 1000), KeyUp("6", 1000, 0x10000 + 664)]

    def test_late_packet_from_before_the_wrap(self) -> None:
        receiver = EventReceiver()
        receiver.receive(1000, 1, True, payload(6, 65_400))
        receiver.receive(1000, 3, False, payload(6, 264))
        assert receiver.receive(1000, 2, False, payload(6, 65_500)) == []
        assert receiver.receive(1000, 4, False, payload(6, 500, end=True)) == [KeyUp("6", 1000, 0x10000 + 500)]


class TestTimeout:
    """The end packets never arrive: tick() with the media time ends the press."""

    def test_timeout(self) -> None:
        receiver = EventReceiver(timeout_ms=250)
        receiver.receive(8000, 1, True, payload(7, 400))
        # covered until 8400; 250 ms is 2000 samples
        assert receiver.tick(10_400) == []
        assert receiver.tick(10_401) == [KeyUp("7", 8000, 400)]
        assert receiver.timeouts == 1
        assert receiver.tick(20_000) == []

    def test_updates_keep_it_alive(self) -> None:
        receiver = EventReceiver(timeout_ms=250)
        receiver.receive(8000, 1, True, payload(7, 400))
        receiver.receive(8000, 2, False, payload(7, 2400))
        assert receiver.tick(12_000) == []

    def test_late_end_after_timeout_is_ignored(self) -> None:
        receiver = EventReceiver(timeout_ms=250)
        receiver.receive(8000, 1, True, payload(7, 400))
        receiver.tick(20_000)
        assert receiver.receive(8000, 2, False, payload(7, 800, end=True)) == []

    def test_nothing_in_progress(self) -> None:
        assert EventReceiver().tick(123) == []


class TestReset:
    def test_reset_forgets_the_stream(self) -> None:
        receiver = EventReceiver()
        receiver.receive(8000, 1, True, payload(1, 800, end=True))
        receiver.reset()
        assert receiver.receive(8000, 1, True, payload(1, 800, end=True)) == [KeyDown("1", 8000), KeyUp("1", 8000, 800)]

    def test_malformed_packet(self) -> None:
        with pytest.raises(ProtocolError, match=r"^rfc4733: payload of 0 bytes is shorter than the 4-byte event$"):
            EventReceiver().receive(0, 0, True, b"")
