"""The call registry: legs by tag, the tag swaps of late offers and re-INVITEs, idleness."""

from typing import Any

import pytest

from dtmfguard.control.registry import Call, CallRegistry, Side, other_side


class StillMedia:
    """A media session whose last packet time the test sets."""

    def __init__(self, last_packet_s: float = 0.0) -> None:
        self.last_packet_s = last_packet_s
        self.masking_enabled = True

    def set_endpoint(self, leg: Side, endpoint: Any) -> None:
        pass

    def set_masking(self, enabled: bool) -> None:
        self.masking_enabled = enabled

    def idle_s(self, now_s: float) -> float:
        return now_s - self.last_packet_s

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> dict[str, Any]:
        return {}


def new_call(call_id: str = "c1", *, created_s: float = 0.0) -> Call:
    return Call(call_id, created_s=created_s, created_wall_s=1.7e9, caller="offer", media=StillMedia(created_s))


class TestOtherSide:
    def test_offer_and_answer_are_each_others_peer(self) -> None:
        assert other_side("offer") == "answer"
        assert other_side("answer") == "offer"


class TestOfferTags:
    """rtpengine semantics: an offer's from-tag is the party whose SDP it carries."""

    def test_first_offer_tags_the_offer_leg(self) -> None:
        call = new_call()
        assert call.offer_side("alice", None) == "offer"
        assert call.legs["offer"].tag == "alice"
        assert call.legs["answer"].tag is None

    def test_reoffer_from_the_same_party(self) -> None:
        call = new_call()
        call.offer_side("alice", None)
        assert call.offer_side("alice", None) == "offer"

    def test_reinvite_from_the_callee_is_an_offer_from_the_answer_leg(self) -> None:
        call = new_call()
        call.offer_side("alice", None)
        call.answer_side("alice", "bob")
        # Kamailio: re-INVITE From=bob To=alice -> from-tag=bob, to-tag=alice
        assert call.offer_side("bob", "alice") == "answer"

    def test_offer_with_to_tag_on_a_new_call_tags_both_legs(self) -> None:
        # A late offer (SDP in the 200 OK): Kamailio swaps tags, from-tag is the callee.
        call = new_call()
        assert call.offer_side("bob", "alice") == "offer"
        assert call.legs["offer"].tag == "bob"
        assert call.legs["answer"].tag == "alice"

    def test_offer_from_an_unknown_tag_toward_a_known_one_names_the_other_leg(self) -> None:
        call = new_call()
        call.offer_side("alice", None)
        assert call.offer_side("bob", "alice") == "answer"
        assert call.legs["answer"].tag == "bob"

    def test_new_from_tag_before_any_answer_retags_the_offer_leg(self) -> None:
        call = new_call()
        call.offer_side("alice", None)
        assert call.offer_side("alice-2", None) == "offer"
        assert call.legs["offer"].tag == "alice-2"

    def test_strange_tags_on_an_established_call_are_refused(self) -> None:
        call = new_call()
        call.offer_side("alice", None)
        call.answer_side("alice", "bob")
        assert call.offer_side("mallory", "eve") is None
        assert call.tags == ["alice", "bob"]


class TestAnswerTags:
    """An answer's to-tag is the party whose SDP it carries; from-tag is the offerer."""

    def test_answer_tags_the_answer_leg(self) -> None:
        call = new_call()
        call.offer_side("alice", None)
        assert call.answer_side("alice", "bob") == "answer"
        assert call.legs["answer"].tag == "bob"

    def test_answer_from_another_fork_retags_the_answer_leg(self) -> None:
        call = new_call()
        call.offer_side("alice", None)
        call.answer_side("alice", "bob-phone")
        assert call.answer_side("alice", "bob-softphone") == "answer"
        assert call.legs["answer"].tag == "bob-softphone"

    def test_answer_to_the_callees_reinvite_is_from_the_offer_leg(self) -> None:
        call = new_call()
        call.offer_side("alice", None)
        call.answer_side("alice", "bob")
        call.offer_side("bob", "alice")
        assert call.answer_side("bob", "alice") == "offer"

    def test_unknown_from_tag_is_refused(self) -> None:
        call = new_call()
        call.offer_side("alice", None)
        assert call.answer_side("mallory", "bob") is None
        assert call.legs["answer"].tag is None


class TestDeleteTags:
    def test_absent_tags_match(self) -> None:
        call = new_call()
        call.offer_side("alice", None)
        assert call.matches_tags(None, None)

    def test_known_tags_match(self) -> None:
        call = new_call()
        call.offer_side("alice", None)
        call.answer_side("alice", "bob")
        assert call.matches_tags("alice", "bob")
        assert call.matches_tags("bob", "alice")

    def test_unknown_from_tag_does_not_match(self) -> None:
        call = new_call()
        call.offer_side("alice", None)
        assert not call.matches_tags("mallory", None)

    def test_to_tag_of_a_failed_branch_matches_while_unanswered(self) -> None:
        call = new_call()
        call.offer_side("alice", None)
        assert call.matches_tags("alice", "busy-branch")

    def test_unknown_to_tag_on_an_answered_call_does_not_match(self) -> None:
        call = new_call()
        call.offer_side("alice", None)
        call.answer_side("alice", "bob")
        assert not call.matches_tags("alice", "carol")


class TestIdleness:
    def test_signal_refreshes_a_call_without_media(self) -> None:
        call = new_call(created_s=100.0)
        call.last_signal_s = 150.0
        assert call.idle_s(160.0) == pytest.approx(10.0)

    def test_media_refreshes_a_call(self) -> None:
        call = new_call(created_s=100.0)
        assert isinstance(call.media, StillMedia)
        call.media.last_packet_s = 158.0
        assert call.idle_s(160.0) == pytest.approx(2.0)

    def test_answered_needs_both_endpoints(self) -> None:
        call = new_call()
        call.legs["offer"].has_endpoint = True
        assert not call.answered
        call.legs["answer"].has_endpoint = True
        assert call.answered


class TestRegistry:
    def test_add_get_remove(self) -> None:
        registry = CallRegistry()
        call = new_call("c1")
        registry.add(call)
        assert registry.get("c1") is call
        assert "c1" in registry
        assert len(registry) == 1
        assert registry.remove("c1") is call
        assert registry.get("c1") is None
        assert registry.remove("c1") is None

    def test_duplicate_call_id_is_refused(self) -> None:
        registry = CallRegistry()
        registry.add(new_call("c1"))
        with pytest.raises(ValueError, match="already registered"):
            registry.add(new_call("c1"))

    def test_call_ids_oldest_first_up_to_limit(self) -> None:
        registry = CallRegistry()
        for name in ("a", "b", "c"):
            registry.add(new_call(name))
        assert registry.call_ids(2) == ["a", "b"]
        assert registry.call_ids(32) == ["a", "b", "c"]

    def test_iteration_survives_removal(self) -> None:
        registry = CallRegistry()
        for name in ("a", "b"):
            registry.add(new_call(name))
        for call in registry:
            registry.remove(call.call_id)
        assert len(registry) == 0

    def test_expired_answered_call_uses_the_media_timeout(self) -> None:
        registry = CallRegistry()
        call = new_call("c1", created_s=0.0)
        for leg in call.legs.values():
            leg.has_endpoint = True
        registry.add(call)
        assert registry.expired(60.0, timeout_s=60.0, setup_timeout_s=3600.0) == []
        assert registry.expired(60.5, timeout_s=60.0, setup_timeout_s=3600.0) == [call]

    def test_unanswered_call_gets_the_setup_timeout(self) -> None:
        registry = CallRegistry()
        call = new_call("c1", created_s=0.0)
        registry.add(call)
        assert registry.expired(600.0, timeout_s=60.0, setup_timeout_s=3600.0) == []
        assert registry.expired(3601.0, timeout_s=60.0, setup_timeout_s=3600.0) == [call]

    def test_a_sweep_can_look_at_some_calls_only(self) -> None:
        registry = CallRegistry()
        calls = [new_call(f"call-{i}", created_s=0.0) for i in range(20)]
        for call in calls:
            registry.add(call)
        snapshot = list(registry)
        parts = [registry.expired(7200.0, timeout_s=60.0, setup_timeout_s=3600.0, among=snapshot[k::10])
                 for k in range(10)]
        assert [c.call_id for part in parts for c in part] == [c.call_id for k in range(10) for c in calls[k::10]]
        registry.remove("call-0")  # ended meanwhile: not handed out again
        assert registry.expired(7200.0, timeout_s=60.0, setup_timeout_s=3600.0, among=snapshot[:2]) == [calls[1]]
