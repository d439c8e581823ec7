"""Artifact store: commit protocol on a local path and on S3 (a local moto server), locks, races, errors."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import pickle
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from s3_server import free_port, s3_location, s3_server  # noqa: F401 - fixtures

from rayflow.store import MARKER, ArtifactStore, StoreError, local_path, open_store


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Object-store builds keep a local copy in the cache: never the user's ~/.cache."""
    monkeypatch.setenv("RAYFLOW_CACHE", str(tmp_path / "own-cache"))


def _writer(calls: list, payload: bytes = b"hello"):
    def build(d: Path) -> dict:
        calls.append(d)
        (d / "a.bin").write_bytes(payload)
        (d / "sub").mkdir()
        (d / "sub" / "b.txt").write_text("nested")
        return {"acc": 0.5}
    return build


# -- local store -------------------------------------------------------------------------------------------
def test_local_build_commits_then_reuses(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = ArtifactStore("out")  # relative: made absolute (Ray workers run in another directory)
    assert store.is_local and store.location == str(tmp_path / "out")
    calls: list = []
    art = store.build("teacher", "abc", _writer(calls), config_doc={"lr": 0.1})
    final = tmp_path / "out" / "artifacts" / "teacher" / "teacher-abc"
    assert art.path == final and art.uri == str(final) and not art.reused and len(calls) == 1
    assert {p.name for p in final.iterdir()} == {"a.bin", "sub", "config.yaml", "metrics.json", MARKER}
    assert json.loads((final / "metrics.json").read_text()) == {"acc": 0.5}
    assert json.loads((final / MARKER).read_text())["metrics"] == {"acc": 0.5}
    again = ArtifactStore(f"file://{tmp_path}/out").build("teacher", "abc", _writer(calls))
    assert len(calls) == 1 and again.reused and again.path == final and again.metrics == {"acc": 0.5}
    found = store.lookup("teacher", "abc")
    assert found is not None and found.file("a.bin").read_bytes() == b"hello"
    assert store.lookup("teacher", "other") is None
    assert not [p for p in final.parent.iterdir() if p.name.startswith(".tmp-")]
    assert store.local_path(art.uri) == final == local_path(art.uri)
    assert open_store(str(tmp_path / "out")) is open_store(str(tmp_path / "out") + "/")


def test_local_failed_build_leaves_nothing(tmp_path):
    store = ArtifactStore(str(tmp_path))

    def build(d: Path) -> dict:
        (d / "half.bin").write_bytes(b"x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        store.build("s", "k", build)
    assert store.lookup("s", "k") is None
    assert [p.name for p in (tmp_path / "artifacts" / "s").iterdir()] == [".lock-k"]


def test_local_leftover_without_marker_is_ignored_and_rebuilt(tmp_path):
    store = ArtifactStore(str(tmp_path))
    final = tmp_path / "artifacts" / "s" / "s-k"
    final.mkdir(parents=True)
    (final / "stale.bin").write_bytes(b"half")  # a killed run, or a copy that lost its marker
    (final.parent / f".tmp-k-{2**22 + 7}-deadbeef").mkdir()  # a killed builder's temp dir
    assert store.lookup("s", "k") is None
    calls: list = []
    art = store.build("s", "k", _writer(calls))
    assert len(calls) == 1 and not art.reused and (final / MARKER).is_file()
    assert not (final / "stale.bin").exists()
    assert sorted(p.name for p in final.parent.iterdir()) == [".lock-k", "s-k"]


def _race_worker(root: str, counter: str, barrier, out: str) -> None:
    waits: list[str] = []

    def build(d: Path) -> dict:
        with open(counter, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(1.0)
        (d / "who").write_text(str(os.getpid()))
        return {"pid": os.getpid()}

    barrier.wait(timeout=60)
    art = ArtifactStore(root).build("s", "k", build, on_wait=waits.append)
    Path(out).write_text(json.dumps({"uri": art.uri, "reused": art.reused, "waits": waits,
                                     "who": art.file("who").read_text()}))


def test_local_concurrent_builders_build_once(tmp_path):
    ctx = mp.get_context("spawn")
    barrier, counter = ctx.Barrier(2), tmp_path / "counter"
    outs = [tmp_path / f"out{i}.json" for i in range(2)]
    procs = [ctx.Process(target=_race_worker, args=(str(tmp_path / "store"), str(counter), barrier, str(o)))
             for o in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    res = [json.loads(o.read_text()) for o in outs]
    assert len(counter.read_text().split()) == 1  # exactly one build ran
    assert res[0]["uri"] == res[1]["uri"] and res[0]["who"] == res[1]["who"]
    assert sorted(r["reused"] for r in res) == [False, True]
    waiter = next(r for r in res if r["reused"])
    assert len(waiter["waits"]) == 1 and "s-k" in waiter["waits"][0]
    assert next(r for r in res if not r["reused"])["waits"] == []


def test_write_and_read_text_local(tmp_path):
    store = ArtifactStore(str(tmp_path))
    loc = store.write_text("results/results.json", '{"a": 1}')
    assert loc == str(tmp_path / "results" / "results.json") and store.read_text("results/results.json") == '{"a": 1}'
    assert store.read_text("missing.txt") is None
    path, fs = store.ray_storage()
    assert path == str(tmp_path / "ray_storage") and fs is None


# -- check_writable ----------------------------------------------------------------------------------------
def _assert_not_writable(location: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(StoreError) as err:
        ArtifactStore(location).check_writable()
    msg = str(err.value)
    assert location in msg and "not writable" in msg and "\n" not in msg, msg
    assert time.monotonic() - t0 < 10, "must fail fast"


def test_check_writable_local(tmp_path):
    ok = tmp_path / "new" / "dir"
    ArtifactStore(str(ok)).check_writable()
    assert ok.is_dir() and list(ok.iterdir()) == []  # root created, probe removed
    (tmp_path / "file").write_text("x")
    _assert_not_writable(str(tmp_path / "file"))  # a file where the directory should be
    _assert_not_writable(str(tmp_path / "file" / "sub"))  # under a file: fails even for root
    _assert_not_writable("/proc/rayflow-no-such-dir")  # procfs: fails even for root


def test_check_writable_read_only_dir(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as root: permissions do not stop writes")
        _assert_not_writable(str(ro))
    finally:
        ro.chmod(0o755)


# -- S3 (moto) ---------------------------------------------------------------------------------------------
def test_s3_build_lookup_reuse_and_download(s3_location, tmp_path, monkeypatch):
    store = ArtifactStore(s3_location)
    assert not store.is_local and store.location == s3_location
    store.check_writable()
    base = f"{store.root}/artifacts/s/s-k"
    with store.fs.open_output_stream(f"{base}/20000101T000000-dead/a.bin") as f:  # killed upload: no marker
        f.write(b"half")
    assert store.lookup("s", "k") is None
    calls: list = []
    payload = os.urandom(300_000)
    art = store.build("s", "k", _writer(calls, payload), config_doc={"lr": 1})
    assert not art.reused and art.uri.startswith(f"{s3_location}/artifacts/s/s-k/") and len(calls) == 1
    assert art.file("a.bin").read_bytes() == payload  # the builder's own copy, adopted into the cache
    again = ArtifactStore(s3_location).build("s", "k", _writer(calls))
    assert len(calls) == 1 and again.reused and again.uri == art.uri and again.metrics == {"acc": 0.5}
    monkeypatch.setenv("RAYFLOW_CACHE", str(tmp_path / "cache"))  # a fresh machine: must download
    dead = tmp_path / "cache" / "tmp" / socket.gethostname() / f".tmp-x-{2**22 + 7}-deadbeef"  # pid > pid_max
    dead.mkdir(parents=True)
    d = local_path(again.uri)
    assert not dead.exists()  # a killed download/build of this host is swept
    assert d.is_relative_to(tmp_path / "cache")
    assert (d / "a.bin").read_bytes() == payload and (d / "sub" / "b.txt").read_text() == "nested"
    assert json.loads((d / "metrics.json").read_text()) == {"acc": 0.5} and (d / "config.yaml").is_file()
    assert again.path == d and store.local_path(again.uri) == d  # cached: downloaded once
    clone = pickle.loads(pickle.dumps(art))
    assert clone._path is None and clone.uri == art.uri  # re-resolved on the node that unpickles it
    with pytest.raises(StoreError, match="not a committed artifact"):
        local_path(f"{base}/20000101T000000-dead".replace(store.root, s3_location, 1))


def test_node_path_resolves_on_the_machine_that_opens_it(s3_location, tmp_path, monkeypatch):
    """What stages hand to other nodes: a pickled NodePath opened under another cache (another machine)
    downloads there, once even when several processes of that machine ask at the same moment; on a local
    store it is the artifact's own path."""
    art = ArtifactStore(s3_location).build("s", "k", _writer([], b"payload"))
    p = art.node_path("sub/b.txt")
    assert str(p) == f"{art.uri}/sub/b.txt" and str(art.node_path()) == art.uri  # a plain string: the location
    monkeypatch.setenv("RAYFLOW_CACHE", str(tmp_path / "node-b"))
    remote = pickle.loads(pickle.dumps(p))
    with ThreadPoolExecutor(4) as ex:  # the actors of one node
        got = set(ex.map(lambda _: os.fspath(remote), range(4)))
    assert got == {str(local_path(art.uri) / "sub" / "b.txt")} and Path(remote).read_text() == "nested"
    assert Path(got.pop()).is_relative_to(tmp_path / "node-b")
    assert len(list((tmp_path / "node-b" / "artifacts").iterdir())) == 2  # one copy (and its lock file)
    local = ArtifactStore(str(tmp_path / "store")).build("s", "k", _writer([]))
    assert os.fspath(local.node_path("a.bin")) == str(local.file("a.bin")) == str(local.node_path("a.bin"))


def test_s3_race_one_winner(s3_location):
    barrier, built = threading.Barrier(2), []

    def build(d: Path) -> dict:
        built.append(d)
        barrier.wait(timeout=30)  # both are building: neither saw the other's marker
        (d / "who").write_text(d.name)
        return {"who": d.name}

    with ThreadPoolExecutor(2) as pool:
        futs = [pool.submit(ArtifactStore(s3_location).build, "s", "k", build) for _ in range(2)]
        res = [f.result(timeout=60) for f in futs]
    assert len(built) == 2
    assert res[0].uri == res[1].uri and res[0].metrics == res[1].metrics
    assert sorted(r.reused for r in res) == [False, True]
    store = ArtifactStore(s3_location)
    base = f"{store.root}/artifacts/s/s-k"
    files = [i.path for i in store.fs.get_file_info(pafs.FileSelector(base, recursive=True))
             if i.type == pafs.FileType.File]
    winner = res[0].uri.rsplit("/", 1)[1]
    assert [f for f in files if f.endswith(MARKER)] == [f"{base}/{winner}/{MARKER}"]
    assert all(f.startswith(f"{base}/{winner}/") for f in files), files  # loser's attempt is gone
    assert res[1].file("who").read_text() == res[0].metrics["who"]
    assert store.lookup("s", "k").uri == res[0].uri


def test_s3_failed_build_commits_nothing(s3_location):
    store = ArtifactStore(s3_location)

    def build(d: Path) -> dict:
        raise ValueError("bad")

    with pytest.raises(ValueError):
        store.build("s", "k", build)
    assert store.lookup("s", "k") is None
    assert store.fs.get_file_info(pafs.FileSelector(store.root, allow_not_found=True, recursive=True)) == []


def test_s3_ray_storage_and_text(s3_location):
    store = ArtifactStore(s3_location)
    path, fs = store.ray_storage()
    assert isinstance(fs, pafs.S3FileSystem) and not path.startswith("s3://") and path.endswith("/ray_storage")
    with fs.open_output_stream(f"{path}/exp/ckpt.txt") as f:
        f.write(b"ckpt")
    with fs.open_input_stream(f"{path}/exp/ckpt.txt") as f:
        assert f.read() == b"ckpt"
    assert ArtifactStore(s3_location).read_text("ray_storage/exp/ckpt.txt") == "ckpt"
    assert store.write_text("results.json", "{}") == f"{s3_location}/results.json"
    assert store.read_text("results.json") == "{}" and store.read_text("nope.json") is None


def test_s3_not_writable(s3_server, monkeypatch):
    _assert_not_writable("s3://no-such-bucket-rayflow/prefix")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    _assert_not_writable(f"s3://{s3_server[1]}/prefix")


def test_s3_uri_options_are_refused():
    with pytest.raises(StoreError, match="environment"):
        ArtifactStore("s3://bucket/p?access_key=AKIA&secret_key=x")


def test_s3_first_committed_marker_wins(s3_location):
    """The order is (marker mtime, token): a later marker loses even with a smaller token."""
    store = ArtifactStore(s3_location)
    first = store.build("s", "k", lambda d: {"n": 1})
    base = f"{store.root}/artifacts/s/s-k"
    time.sleep(1.1)  # mtimes have 1 s resolution
    late = f"{base}/00000000T000000-aaaa"  # sorts before any real token
    with store.fs.open_output_stream(f"{late}/{MARKER}") as f:
        f.write(json.dumps({"metrics": {"n": 2}}).encode())
    found = ArtifactStore(s3_location).lookup("s", "k")
    assert found.uri == first.uri and found.metrics == {"n": 1}
