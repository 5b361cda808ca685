"""Ray's stop order for `handoff down`'s head: pure parts (parsing `ps`, the phases)."""

from cluster.ray_head_stop import GroupMember, parse_ps, stop_phases

PS = """\
  511   511 Ss   ray
  514   511 Sl   gcs_server
  546   511 Sl   python3
  600   511 Z    ray-dashboard-M
  806   511 Sl   raylet
  900   900 Ss   bash
  901   511 Sl   /opt/ray/core/src/ray/raylet/raylet
"""


def test_ps_output_gives_the_groups_members_with_zombies_marked():
    members = parse_ps(PS, 511)
    assert [m.pid for m in members] == [511, 514, 546, 600, 806, 901]
    assert [m.pid for m in members if m.zombie] == [600]
    assert parse_ps(PS, 4242) == [] and parse_ps("", 511) == []


def test_raylets_stop_first_the_gcs_last_and_zombies_are_not_waited_for():
    # a macOS `comm` is the executable's path: the base name decides
    assert stop_phases(parse_ps(PS, 511)) == [[806, 901], [511, 546], [514]]


def test_empty_phases_are_left_out():
    assert stop_phases([GroupMember(7, "gcs_server", False)]) == [[7]]
    assert stop_phases([GroupMember(7, "python3", True)]) == []
