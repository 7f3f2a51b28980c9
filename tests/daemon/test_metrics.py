# SPDX-License-Identifier: GPL-2.0-only
"""Prometheus metrics: the exposition a real daemon serves, its histograms after real uevents, the textfile."""

import logging
import os
import stat
import threading
import time
from pathlib import Path

import pytest
from control_env import ask, env, iomem, result  # noqa: F401
from daemonproc import generated, generation, inject, segment_header, wait_for
from faketree import replace_iomem
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from crashhpd.service.metrics import ERROR_KINDS, TEXTFILE, Metrics, families
from crashhpd.service.status import Status


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition by name and labels; raises if the text does not parse."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, tuple(sorted(labels.items())))]


# --- what a real daemon serves ----------------------------------------------------------------------


@pytest.mark.root
def test_the_exposition_parses_and_agrees_with_status(env):
    env.start()
    text = result(env.socket, "metrics")["text"]
    status = result(env.socket, "status")
    assert value(text, "crashhpd_generation") == status["generation"] == 1
    assert value(text, "crashhpd_applies_total") == status["applies"] == 1
    assert value(text, "crashhpd_ram_ranges") == status["ram_ranges"]
    assert value(text, "crashhpd_cpus") == status["cpus"] == 4
    assert value(text, "crashhpd_in_sync") == 1
    assert value(text, "crashhpd_segment_fill_ratio") == pytest.approx(status["fill_ratio"])
    assert value(text, "crashhpd_info", version=status["version"], backend="sandbox", layout="kernel") == 1
    assert all(value(text, "crashhpd_errors_total", kind=kind) == 0 for kind in ERROR_KINDS)
    assert 0 <= value(text, "crashhpd_seconds_since_last_apply") < 60
    assert value(text, "crashhpd_apply_duration_seconds_count") == 1  # the start-up apply
    assert value(text, "crashhpd_event_to_apply_seconds_count") == 0  # no event started it


@pytest.mark.root
def test_a_hot_add_lands_in_both_histograms(env):
    env.start(debounce={"quiet_ms": 100, "max_delay_ms": 1000})
    replace_iomem(env.root, iomem(hot_added=1))
    inject("online")
    wait_for(lambda: segment_header(env.state_dir) == generated(env.root), 10, "the apply")
    text = result(env.socket, "metrics")["text"]
    assert value(text, "crashhpd_apply_duration_seconds_count") >= 2
    assert value(text, "crashhpd_event_to_apply_seconds_count") >= 1
    # the burst waited at least the quiet window before its apply
    assert value(text, "crashhpd_event_to_apply_seconds_sum") >= 0.1
    assert value(text, "crashhpd_event_to_apply_seconds_bucket", le="0.05") == 0
    assert value(text, "crashhpd_uevents_total") >= 1


@pytest.mark.root
def test_errors_are_counted_by_kind(env):
    env.start()
    replace_iomem(env.root, "garbage\n")
    assert ask(env.socket, "reconcile")["ok"] is False
    text = result(env.socket, "metrics")["text"]
    assert value(text, "crashhpd_errors_total", kind="snapshot-failed") == 1
    assert value(text, "crashhpd_in_sync") == 0


# --- the textfile ------------------------------------------------------------------------------------


@pytest.mark.root
def test_the_textfile_is_never_seen_half_written(env, tmp_path):
    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    env.start(debounce={"quiet_ms": 10, "max_delay_ms": 50}, metrics={"textfile_dir": str(prom_dir)})
    path = prom_dir / TEXTFILE
    expected = {f.name for f in text_string_to_metric_families(path.read_text())}
    failures: list[str] = []
    reads = 0
    stop = threading.Event()

    def poll() -> None:
        nonlocal reads
        while not stop.is_set():
            text = path.read_text()
            try:
                names = {f.name for f in text_string_to_metric_families(text)}
            except ValueError as err:
                failures.append(f"unparsable: {err}")
                continue
            if names != expected:
                failures.append(f"families missing: {sorted(expected - names)}")
            reads += 1
            time.sleep(0.001)  # leave the GIL to the test driving the applies

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        for i in range(30):
            before = generation(env.state_dir)
            replace_iomem(env.root, iomem(hot_added=(i + 1) % 2))
            inject("online")
            wait_for(lambda before=before: generation(env.state_dir) > before, 10, f"apply {i + 1}")
    finally:
        stop.set()
        reader.join()
    assert not failures, failures[:3]
    assert reads > 100, "the reader must have raced the writer often"
    wait_for(lambda: value(path.read_text(), "crashhpd_generation") == generation(env.state_dir), 5,
             "the textfile of the last apply")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in prom_dir.iterdir()) == [TEXTFILE], "no temporary left behind"


@pytest.mark.root
def test_a_textfile_dir_that_does_not_exist_is_one_warning_and_nothing_else(env, tmp_path):
    d = env.start(debounce={"quiet_ms": 10, "max_delay_ms": 50}, metrics={"textfile_dir": str(tmp_path / "gone")})
    for hot_added in (1, 0):
        before = generation(env.state_dir)
        replace_iomem(env.root, iomem(hot_added=hot_added))
        inject("online")
        wait_for(lambda before=before: generation(env.state_dir) > before, 10, "an apply")
    assert d.stderr().count("metrics textfile not written") == 1
    assert f"{tmp_path}/gone/{TEXTFILE}" in d.stderr()
    assert d.proc.poll() is None


def textfile_problem(directory: Path, why: str) -> str:
    return f"{directory}/{TEXTFILE}: metrics textfile not written: {why}"


def write_textfile(directory: Path, caplog: pytest.LogCaptureFixture, times: int = 1) -> list[str]:
    """The warnings of `times` writes of a status's textfile into `directory`."""
    metrics = Metrics(lambda: 1010.0)
    with caplog.at_level(logging.WARNING, logger="crashhpd"):
        for _ in range(times):
            metrics.write_textfile(str(directory), status())
    return [r.getMessage() for r in caplog.records]


def test_write_textfile_replaces_the_file_whole_0644_whatever_the_umask(tmp_path, caplog):
    target = tmp_path / TEXTFILE
    target.write_text("old\n")
    os.chmod(target, 0o600)
    old = os.umask(0o077)
    try:
        assert write_textfile(tmp_path, caplog) == []
    finally:
        os.umask(old)
    assert value(target.read_text(), "crashhpd_generation") == 3
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == [TEXTFILE]


def test_write_textfile_leaves_everything_as_it_was_when_it_fails_and_says_so_once(tmp_path, caplog):
    (tmp_path / TEXTFILE).mkdir()  # never replaced, nor written into
    assert write_textfile(tmp_path, caplog, times=2) == [textfile_problem(
        tmp_path, f"{tmp_path}/{TEXTFILE} is not a regular file; crashhpd refuses to replace it")]
    assert [p.name for p in tmp_path.iterdir()] == [TEXTFILE] and not os.listdir(tmp_path / TEXTFILE)


def test_write_textfile_never_creates_the_directory(tmp_path, caplog):
    assert write_textfile(tmp_path / "gone", caplog) == [
        textfile_problem(tmp_path / "gone", f"{tmp_path}/gone: No such file or directory")]
    assert not (tmp_path / "gone").exists()


def test_write_textfile_refuses_a_symlinked_directory(tmp_path, caplog):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert write_textfile(tmp_path / "link", caplog) == [
        textfile_problem(tmp_path / "link", f"{tmp_path}/link is a symlink; crashhpd refuses to follow it")]
    assert not os.listdir(tmp_path / "real")


def test_write_textfile_refuses_a_directory_anyone_may_replace_files_in(tmp_path, caplog):
    shared = tmp_path / "prom"
    shared.mkdir()
    shared.chmod(0o777)
    why = "is writable by everyone without the sticky bit (mode 0777); crashhpd refuses to write there"
    assert write_textfile(shared, caplog) == [textfile_problem(shared, f"{shared} {why}")]
    assert not os.listdir(shared)


@pytest.mark.parametrize(("mode", "owner"), [(0o1777, 0), (0o775, 65534)])
def test_write_textfile_writes_into_node_exporters_directory_whoever_owns_it(tmp_path, caplog, mode, owner):
    if owner != os.geteuid() and os.geteuid() != 0:
        pytest.skip("another owner needs root")
    shared = tmp_path / "prom"
    shared.mkdir()
    os.chown(shared, owner, owner)
    shared.chmod(mode)
    assert write_textfile(shared, caplog) == []
    assert stat.S_IMODE((shared / TEXTFILE).stat().st_mode) == 0o644


# --- families: pure ------------------------------------------------------------------------------------


def status(**changes: object) -> Status:
    base = dict(version="0.1.0", pid=1, started_at=1000.0, uptime_s=5.0, backend="sandbox", backend_ok=True,
                backend_detail="ok", layout="kernel", generation=3, in_sync=True, events_received=10,
                events_coalesced=7, updates=3, applies=2, skipped_noop=1, rescans=1, errors={"apply-failed": 2},
                pending_events=0, next_update_in_s=None, cpus=4, ram_ranges=7, ram_bytes=1 << 30,
                capacity_bytes=1000, header_bytes=250, fill_ratio=0.25, crash_hotplug_cpu=None,
                crash_hotplug_memory=None, last_apply_at=1003.0, last_apply_reason="events", last_changes=[],
                last_update_duration_s=0.001, last_error=None, last_error_at=None)
    return Status(**{**base, **changes})


class _Fixed:
    def __init__(self, s: Status, now: float) -> None:
        self.s, self.now = s, now

    def collect(self):
        return families(self.s, self.now)


def exposition(s: Status, now: float) -> str:
    """The families through prometheus_client's own writer, as a scrape would see them."""
    registry = CollectorRegistry()
    registry.register(_Fixed(s, now))
    return generate_latest(registry).decode()


def test_families_carry_every_counter_and_gauge_of_a_status():
    text = exposition(status(), now=1010.0)
    assert value(text, "crashhpd_uevents_total") == 10
    assert value(text, "crashhpd_events_coalesced_total") == 7
    assert value(text, "crashhpd_noop_skips_total") == 1
    assert value(text, "crashhpd_rescans_total") == 1
    assert value(text, "crashhpd_errors_total", kind="apply-failed") == 2
    assert value(text, "crashhpd_errors_total", kind="events-lost") == 0  # exported before it ever happens
    assert value(text, "crashhpd_segment_fill_ratio") == 0.25
    assert value(text, "crashhpd_seconds_since_last_apply") == 7
    assert value(text, "crashhpd_last_apply_timestamp_seconds") == 1003


def test_families_leave_out_what_is_unknown():
    names = {f.name for f in families(status(last_apply_at=None, capacity_bytes=None, fill_ratio=None), 0)}
    assert not names & {"crashhpd_seconds_since_last_apply", "crashhpd_last_apply_timestamp_seconds",
                        "crashhpd_segment_fill_ratio", "crashhpd_segment_capacity_bytes"}
    assert "crashhpd_generation" in names
