"""Failover routing rules: where a camera goes while its home executor slot is down, and back."""
import pytest

from stemcell.sharing.failover import FailoverRoutes


def test_cameras_stay_home_while_every_slot_is_up() -> None:
    routes = FailoverRoutes(3)
    assert [routes.host_for(h) for h in range(3)] == [0, 1, 2]


def test_a_down_slot_fails_over_to_the_next_live_one_cyclically() -> None:
    routes = FailoverRoutes(3)
    assert routes.mark_down(2) is True
    assert routes.mark_down(2) is False  # already down: the caller starts one watcher only
    assert routes.host_for(2) == 0
    routes.mark_down(0)
    assert routes.host_for(2) == 1 and routes.host_for(0) == 1 and routes.host_for(1) == 1
    routes.mark_down(1)
    assert routes.host_for(0) is None


def test_guests_go_home_when_their_slot_is_back() -> None:
    routes = FailoverRoutes(3)
    routes.mark_down(0)
    routes.add_guest("cam-a", home=0, host=1)
    routes.add_guest("cam-b", home=0, host=1)
    routes.add_guest("cam-c", home=1, host=1)  # at home: not a guest
    assert routes.guests() == {"cam-a": (0, 1), "cam-b": (0, 1)}
    assert sorted(routes.mark_up(0)) == [("cam-a", 1), ("cam-b", 1)]
    assert routes.guests() == {} and routes.host_for(0) == 0


def test_a_host_that_dies_loses_its_guests_and_they_move_on() -> None:
    routes = FailoverRoutes(3)
    routes.mark_down(0)
    routes.add_guest("cam-a", home=0, host=1)
    routes.mark_down(1)
    assert routes.guests() == {}
    assert routes.host_for(0) == 2
    assert routes.mark_up(1) == []  # nothing of slot 0's was left on slot 1 to remove


def test_forget_returns_the_host_of_a_removed_guest() -> None:
    routes = FailoverRoutes(2)
    routes.mark_down(0)
    routes.add_guest("cam-a", home=0, host=1)
    assert routes.forget("cam-a") == 1
    assert routes.forget("cam-a") is None
    assert routes.mark_up(0) == []


def test_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="at least one"):
        FailoverRoutes(0)


def test_a_down_slots_cameras_spread_over_every_other_slot() -> None:
    from stemcell.scheduling.shares import placement_index

    routes = FailoverRoutes(6)
    homeless = [c for c in (f"cam-{i}" for i in range(600)) if placement_index(c, 6) == 2]
    routes.mark_down(2)
    hosts = {routes.host_for(2, c) for c in homeless}
    assert hosts == {0, 1, 3, 4, 5}  # not all on slot 3, as `home + 1` did
    assert routes.host_for(4, homeless[0]) == 4  # an up home serves its own cameras
