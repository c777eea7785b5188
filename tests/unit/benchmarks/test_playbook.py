"""The PLAY RECAP parser the playbook benchmark judges idempotence with."""

from __future__ import annotations

from benchmarks.playbook import parse_recap

OUTPUT = """
TASK [proxy : start] ************************************************************
changed: [node-1-dpu]

PLAY RECAP *********************************************************************
node-1-dpu                 : ok=31   changed=2    unreachable=0    failed=0    skipped=4    rescued=0    ignored=0
node-1                     : ok=12   changed=0    unreachable=0    failed=0    skipped=1    rescued=0    ignored=0

make: Leaving directory '/work/main'
"""


def test_counts_per_host_of_the_last_recap():
    earlier = OUTPUT.replace("changed=2 ", "changed=9 ").replace("ok=31", "ok=1")
    recap = parse_recap(earlier + OUTPUT)
    assert recap == {
        "node-1-dpu": {"ok": 31, "changed": 2, "unreachable": 0, "failed": 0, "skipped": 4, "rescued": 0, "ignored": 0},
        "node-1": {"ok": 12, "changed": 0, "unreachable": 0, "failed": 0, "skipped": 1, "rescued": 0, "ignored": 0},
    }


def test_no_recap_no_hosts():
    assert parse_recap("ERROR! the playbook could not be found") == {}
