"""Unit tests of the tools' pure parts: segment names, ring and board decoding, process roles, help."""

from __future__ import annotations

import pytest

from schooner.ipc.board import Board, board_nbytes
from schooner.ipc.ring import Ring, ring_nbytes
from tools.processes import role_group, role_of
from tools.profile import main as profile_main
from tools.shm_view import board_text, instances, parse_name, ring_state


def test_segment_names_group_by_instance() -> None:
    names = ["/schooner-123xab12cd-submit-0", "/schooner-123xab12cd-metrics-scheduler", "/schooner-9x00ff00-in-0-0", "/other"]
    found = instances(names)
    assert sorted(found) == ["123xab12cd", "9x00ff00"]
    seg = parse_name("/schooner-123xab12cd-metrics-scheduler")
    assert seg is not None and seg.supervisor_pid == 123 and seg.is_board
    assert parse_name("/schooner-123xab12cd-submit-0").is_board is False
    assert parse_name("/not-ours") is None


def test_ring_state_reads_head_and_tail_without_writing() -> None:
    buf = bytearray(ring_nbytes(8, 64))
    ring = Ring.create(buf, 8, 64)
    for _ in range(3):
        ring.reserve()[:4] = b"abcd"
        ring.publish(4)
    ring.release(1)
    ring.close()
    state = ring_state(memoryview(bytes(buf)))  # read-only, as the tools map it
    assert state is not None
    assert (state.nslots, state.head, state.tail, state.in_use) == (8, 3, 1, 2)
    assert ring_state(memoryview(bytes(256))) is None


def test_board_text_reads_the_snapshot() -> None:
    buf = bytearray(board_nbytes(1024))
    Board(buf).publish(b'schooner_batch_limit{model="w1",replica="0",version="1"} 12')
    assert board_text(memoryview(bytes(buf))).startswith("schooner_batch_limit")


def test_roles_from_spawn_arguments() -> None:
    assert role_of(["python", "-c", '{"role": "frontend", "args": {"index": 1}}'], False) == "frontend[1]"
    assert role_of(["python", '{"role":"scheduler","args":{}}'], False) == "scheduler"
    assert role_of(["python", '{"role":"model","args":{"model":0,"replica":2}}'], False) == "model[0:2]"
    assert role_of(["anything"], True) == "supervisor"
    assert role_of(["python", "x.py"], False) == "other"
    assert [role_group(r) for r in ("frontend[1]", "model[0:2]", "scheduler", "supervisor", "other")] == [
        "frontend", "model", "scheduler", "supervisor", "other"]


def test_profile_help_says_the_bench_extra_installs_py_spy(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        profile_main(["--help"])
    assert exited.value.code == 0
    assert "pip install -e '.[bench]'" in " ".join(capsys.readouterr().out.split())
