# SPDX-License-Identifier: GPL-2.0-only
"""The control contract, held to the daemon it describes.

crashhpctl reads only crashhpd/control/contract.py and its own render.py,
so whatever they restate of the daemon (the ops, the status fields, the
socket's default and how the configuration gives it, how a header's program
headers are shown) is checked here against the daemon's own code.
"""

import base64
import dataclasses
import hashlib
import os
import typing
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from layouts import fixture_tree
from repo_paths import IOMEM_FIXTURES

from crashhpd import config
from crashhpd.abi.x86_64 import START_KERNEL_MAP
from crashhpd.control import contract, render
from crashhpd.control.client import socket_from_config
from crashhpd.control.contract import OPS, RequestError, parse_reply, parse_request, problem
from crashhpd.control.handlers import HANDLERS
from crashhpd.elfcorehdr.build import build_valid
from crashhpd.elfcorehdr.layout import preset
from crashhpd.elfcorehdr.table import table
from crashhpd.elfcorehdr.validate import SEGMENT_FIELDS, Segment, parse
from crashhpd.errors import ConfigError
from crashhpd.service.status import Status
from crashhpd.sysview.ranges import size_text
from crashhpd.sysview.snapshot import read_snapshot

# --- one table of ops, three readers -------------------------------------------------------------------


def test_the_daemon_and_crashhpctl_know_the_same_ops():
    assert set(HANDLERS) == set(OPS) == set(render.SHOW)
    assert [op for op in OPS if OPS[op].privileged] == ["reconcile"]


def _shape(kind: object) -> object:
    """A type with each TypedDict in it as its keys and their types: the daemon's side and the contract each
    declare theirs (the contract imports nothing of the daemon), and they must agree key for key."""
    if typing.is_typeddict(kind):
        return {key: _shape(value) for key, value in typing.get_type_hints(kind).items()}
    args = typing.get_args(kind)
    return (typing.get_origin(kind), tuple(_shape(arg) for arg in args)) if args else kind


def test_every_status_key_crashhpctl_reads_is_a_status_field_of_that_type():
    fields = typing.get_type_hints(Status)
    reads = typing.get_type_hints(contract.StatusResult)
    assert {key: (kind, fields.get(key)) for key, kind in reads.items()
            if _shape(fields.get(key)) != _shape(kind)} == {}
    assert _shape(fields["readiness"]) == (list, ({"check": str, "ok": _shape(bool | None), "reason": str},))
    optional = contract.StatusResult.__optional_keys__  # what an older daemon may leave out: fields added later
    defaults = {key: Status.__dataclass_fields__[key] for key in optional}
    assert optional and all(f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
                            for f in defaults.values())


def test_what_the_contract_restates_of_the_daemon_is_what_the_daemon_says():
    assert contract.DEFAULT_SOCKET == config.ControlConfig().socket
    assert contract.DEFAULT_CONFIG == config.DEFAULT_PATH
    assert contract.DROPIN_SUFFIX == config.DROPIN_SUFFIX
    assert contract.KERNEL_IMAGE_VADDR == START_KERNEL_MAP
    sent = {name: kind for name, kind in typing.get_type_hints(Segment).items() if name in SEGMENT_FIELDS}
    assert typing.get_type_hints(contract.Segment) == sent  # what to_json sends of each program header


# --- shapes --------------------------------------------------------------------------------------------


def test_a_result_of_the_right_shape_passes_and_keys_it_does_not_know_are_ignored():
    verify = {"in_sync": True, "generation": 3, "changes": [], "cpus": 4, "ram_ranges": 7, "later_key": {"x": 1}}
    assert problem(verify, contract.VerifyResult) is None
    assert problem({**verify, "source": "kernel"}, contract.VerifyResult) is None


@pytest.mark.parametrize(("change", "named"), [
    ({"in_sync": 1}, "in_sync: must be true or false, not int"),
    ({"generation": True}, "generation: must be an integer, not bool"),
    ({"generation": 3.5}, "generation: must be an integer, not float"),
    ({"changes": ["+ RAM", 5]}, "changes.1: must be a string, not int"),
    ({"changes": None}, "changes: must be an array"),
    ({"cpus": None}, "cpus: must be an integer, not null"),
    ({"source": 1}, "source: must be a string, not int"),
])
def test_a_result_of_the_wrong_shape_is_named(change, named):
    verify = {"in_sync": True, "generation": 3, "changes": [], "cpus": 4, "ram_ranges": 7}
    assert problem({**verify, **change}, contract.VerifyResult) == named


def test_a_missing_key_is_named_and_null_is_taken_only_where_allowed():
    header = {"generation": 1, "sha256": "0" * 64, "header_bytes": 4096, "capacity_bytes": None,
              "data_base64": "", "segments": [{"type": "PT_NOTE", "flags": 0, "offset": 0, "vaddr": 0, "paddr": 0,
                                              "filesz": 0, "memsz": 0, "align": 0}]}
    assert problem(header, contract.HeaderResult) is None
    del header["segments"][0]["memsz"]
    assert problem(header, contract.HeaderResult) == "segments.0: memsz: missing"
    assert problem({"errors": {"internal": "1"}}, contract.StatusResult) == "backend: missing"
    assert problem([], contract.StatusResult) == "must be an object"


@pytest.mark.parametrize("line", [b"", b"null", b"[]", b'{"v": 1}', b'{"v": "1", "ok": true, "result": {}}',
                                  b'{"v": 1, "ok": true}', b'{"v": 1, "ok": false, "result": {}}',
                                  b'{"v": 1, "ok": true, "result": {}, "error": {"code": "x", "message": "y"}}',
                                  b'{"v": 1, "ok": false, "error": {"code": "x"}}', b"\xff", b"[" * 100_000])
def test_what_is_not_a_reply_is_said_to_be_none(line):
    with pytest.raises(ValueError, match="^not a crashhpd reply: "):
        parse_reply(line)


def test_a_reply_is_read_with_the_keys_it_may_add():
    reply = parse_reply(b'{"v": 1, "ok": false, "error": {"code": "busy", "message": "later", "retry": 1}, "x": 0}')
    assert (reply.ok, reply.result, reply.error) == (False, None, {"code": "busy", "message": "later"})
    assert parse_reply(contract.encode_result({"text": "é"})).result == {"text": "é"}
    assert parse_reply(contract.encode_error("failed", "no")).error == {"code": "failed", "message": "no"}


@pytest.mark.parametrize(("line", "code", "says"), [
    (b'{"op": "status"}', None, "status"),
    (b'{"v": 1, "op": "verify"}', None, "verify"),
    (b'{"v": 2, "op": "status"}', "unsupported-version", "protocol version 2 is not supported"),
    (b'{"op": "status", "verbose": true}', "bad-request", "verbose: unknown key"),
    (b'{"op": 1}', "bad-request", "op: must be a string"),
    (b'{"v": true, "op": "status"}', "bad-request", "v: must be an integer"),
    (b"[]", "bad-request", "must be a JSON object"),
    (b"", "bad-request", "not JSON"),
    (b"\xff\xfe", "bad-request", "not JSON"),
    (b"[" * 100_000, "bad-request", "not JSON"),
])
def test_a_request_is_read_strictly(line, code, says):
    if code is None:
        assert parse_request(line) == says
        return
    with pytest.raises(RequestError) as raised:
        parse_request(line)
    assert raised.value.code == code and says in raised.value.message


def test_requests_crashhpctl_writes_are_requests_the_daemon_reads():
    for op in OPS:
        assert parse_request(contract.encode_request(op).rstrip(b"\n")) == op


# --- what crashhpctl shows, against the daemon's own way of showing it -----------------------------------


@given(st.integers(min_value=0, max_value=1 << 50) | st.sampled_from([1023, 1024, 1536, 1 << 30, 3 << 40]))
def test_sizes_read_as_the_daemon_writes_them(nbytes):
    assert render.size(nbytes) == size_text(nbytes)


@pytest.mark.parametrize("layout", ["kernel", "kexec-tools"])
@pytest.mark.parametrize("fixture", sorted(p.stem for p in IOMEM_FIXTURES.glob("*.txt")))
def test_a_header_is_shown_from_the_reply_as_the_daemon_shows_its_bytes(tmp_path: Path, fixture, layout):
    data = build_valid(read_snapshot(str(fixture_tree(tmp_path, fixture))), preset(layout)).data
    parsed = parse(data)
    reply = {"generation": 7, "sha256": hashlib.sha256(data).hexdigest(), "header_bytes": len(data),
             "capacity_bytes": 1 << 20, "data_base64": base64.b64encode(data).decode(),
             "segments": parsed.to_json()["segments"]}
    assert problem(reply, contract.HeaderResult) is None
    text, status = render.show_header(reply, 0.0)
    ram = parsed.ram
    assert status == contract.EXIT_OK and text.split("\n", 2) == [
        f"generation 7: {len(data)} bytes of a 1 MiB segment, sha256 {hashlib.sha256(data).hexdigest()}",
        f"{len(parsed.segments)} program headers: {len(parsed.notes)} notes, {len(ram)} RAM ranges "
        f"({sum(end - start + 1 for start, end in ram) / (1 << 30):.2f} GiB)",
        table(parsed),
    ]
    assert "kernel image" in text


# --- where the socket is -------------------------------------------------------------------------------

SOCKETS = st.sampled_from(["/run/a.sock", "/run/b.sock", "/srv/c.sock"])
LAYER = st.one_of(  # what one file says of [control] socket
    st.none(),  # nothing: no [control] at all
    st.just("[control]\ngroup = 'adm'\n"),  # a [control] table without socket
    SOCKETS.map(lambda path: f"[control]\nsocket = '{path}'\n"),
    SOCKETS.map(lambda path: f"control.socket = \"{path}\"\n"),
)


@given(main=LAYER, dropins=st.lists(st.tuples(st.sampled_from(["10-a", "20-b", "90-z", ".hidden", "50-c"]),
                                              LAYER, st.sampled_from([".toml", ".toml.dpkg-old"])),
                                    max_size=5, unique_by=lambda d: d[0]))
def test_the_socket_is_found_as_the_daemon_finds_it(tmp_path_factory, main, dropins):
    directory = tmp_path_factory.mktemp("etc")
    path = directory / "crashhpd.toml"
    (directory / "crashhpd.toml.d").mkdir()
    path.write_text(main or "")  # config.load() of a named file needs it to exist
    for name, text, suffix in dropins:
        (directory / "crashhpd.toml.d" / f"{name}{suffix}").write_text(text or "")
    assert socket_from_config(str(path), required=False) == (config.load(str(path)).control.socket, [])


def test_a_broken_file_is_passed_over_with_one_problem_each(tmp_path, deadline):
    main = tmp_path / "crashhpd.toml"
    main.write_text("[control]\nsocket = '/run/main.sock'\n")
    dropins = tmp_path / "crashhpd.toml.d"
    dropins.mkdir()
    (dropins / "10-moved.toml").write_text("[control]\nsocket = '/run/moved.sock'\n")
    (dropins / "20-syntax.toml").write_text("[control\nsocket = '/run/never.sock'\n")
    (dropins / "30-number.toml").write_text("[control]\nsocket = 5\n")
    (dropins / "40-relative.toml").write_text("[control]\nsocket = 'control.sock'\n")
    (dropins / "50-table.toml").write_text("control = 1\n")
    (dropins / "60-unreadable.toml").mkdir()  # open() fails: a directory
    os.mkfifo(dropins / "70-fifo.toml")  # opened for reading, it would block crashhpctl
    with pytest.raises(ConfigError):  # the daemon refuses this configuration...
        config.load(str(main))
    path, problems = socket_from_config(str(main), required=False)
    assert path == "/run/moved.sock"  # ...and crashhpctl takes what the good files say
    assert [p.split(":")[0] for p in problems] == [str(dropins / f) for f in (
        "20-syntax.toml", "30-number.toml", "40-relative.toml", "50-table.toml", "60-unreadable.toml",
        "70-fifo.toml")]
    assert problems[1].endswith("control.socket: must be an absolute path (got 5)")
    assert problems[-1].endswith(": not a regular file")
    assert all("\n" not in p for p in problems)


def test_a_named_config_must_exist_the_default_one_need_not(tmp_path):
    absent = str(tmp_path / "absent.toml")
    assert socket_from_config(absent, required=False) == (contract.DEFAULT_SOCKET, [])
    assert socket_from_config(absent, required=True) == (contract.DEFAULT_SOCKET, [f"{absent}: no such file"])
