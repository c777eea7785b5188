"""The PLAY RECAP parser the playbook benchmark judges idempotence with, and its plot."""

from __future__ import annotations

from benchmarks.playbook import RUNS, median_run, parse_recap, plot, slowest_tasks

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


def test_slowest_tasks_from_the_profile_summary():
    summary = """
Sunday 22 November 2026  05:43:21 +0000 (0:00:00.030)       0:01:03.120 *******
===============================================================================
lab : Make the lab match the state directory (nodes, pods, dataplane, proxies) -- 21.48s
k8s_control_plane : Render manifests ----------------------------------- 3.02s
Gathering Facts --------------------------------------------------------- 1.50s
"""
    tasks = slowest_tasks(OUTPUT + summary, count=2)
    assert tasks == [
        {"task": "lab : Make the lab match the state directory (nodes, pods, dataplane, proxies)", "seconds": 21.48},
        {"task": "k8s_control_plane : Render manifests", "seconds": 3.02},
    ]


def test_plot_shows_every_run_with_its_changed_count(tmp_path):
    result = {key: {"seconds": 10.0 + i, "cpu_seconds": 9.0 + i, "changed": 3 - i} for i, (key, _) in enumerate(RUNS)}
    svg = plot(result, tmp_path / "playbook.svg").read_text()
    assert [key for key, _ in RUNS] == ["first", "second", "after_lab_down"]
    for changed in (3, 2, 1):
        assert f"changed={changed}" in svg


def test_the_median_run_is_an_actual_run_the_lower_middle_of_an_even_count():
    runs = [{"seconds": s, "changed": 0} for s in (5.0, 4.1, 4.6)]
    assert median_run(runs) is runs[2]
    assert median_run(runs[:2])["seconds"] == 4.1
