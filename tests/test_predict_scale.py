"""`rayflow predict` at scale: Parquet shards (local directory or s3:// prefix) equal the single-file
output; object-store prefixes as input; the marker is written last, so a failed run leaves nothing
readable; Ray Data writes the same shards as the in-process loop. Small images, a few chunks each."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from rayflow.cli import main
from rayflow.data.imageset import DataError
from rayflow.student import shards
from rayflow.student.predict import predict_frame, predict_shards
from s3_server import s3_location, s3_server  # noqa: F401
from test_predict import make_student, write_images

CHUNK, PER = 4, 2  # 18 images -> chunks of 4, shards of 8: three shards, the last one short


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    return make_student(root), write_images(root / "images" / "nested", n=18)


def test_shards_equal_the_single_file_output(student, tmp_path, capsys):
    folder, files = student
    one = predict_frame(folder, files, use_ray=False, chunk=CHUNK)
    done = predict_shards(folder, files, str(tmp_path / "out"), use_ray=False, chunk=CHUNK, per_shard=PER)
    assert done["parts"] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [shards.MARKER, *done["parts"]]
    assert [len(pd.read_parquet(tmp_path / "out" / p)) for p in done["parts"]] == [8, 8, 2]
    marker = json.loads((tmp_path / "out" / shards.MARKER).read_text())
    assert marker["rows"] == 18 and marker["columns"] == list(one.columns)
    pd.testing.assert_frame_equal(shards.read_shards(str(tmp_path / "out")), one, check_exact=True)
    # the CLI: a name without a suffix is a directory of shards; a complete one is refused, then replaced
    out = tmp_path / "cli"
    argv = ["predict", "--model", str(folder), *files, "--out", str(out)]
    assert main(argv) == 0 and (out / shards.MARKER).is_file()
    capsys.readouterr()
    assert main(argv) == 2
    assert "already holds a complete prediction output" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    got = shards.read_shards(str(out))
    np.testing.assert_allclose(got.filter(like="prob_").to_numpy(), one.filter(like="prob_").to_numpy(), atol=1e-6)
    assert list(got["input"]) == list(one["input"])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="holds other files"):
        predict_shards(folder, files, str(tmp_path / "other"), use_ray=False)


def test_a_failed_write_leaves_no_marker_and_nothing_readable(student, tmp_path, monkeypatch):
    folder, files = student
    out = str(tmp_path / "out")
    written, put = [], shards._put

    def failing(location, name, data):
        if name == "part-00001.parquet":
            raise OSError("disk full")
        written.append(name)
        put(location, name, data)

    monkeypatch.setattr(shards, "_put", failing)
    with pytest.raises(OSError, match="disk full"):
        predict_shards(folder, files, out, use_ray=False, chunk=CHUNK, per_shard=PER)
    assert written == ["part-00000.parquet"] and not (tmp_path / "out" / shards.MARKER).exists()
    with pytest.raises(DataError, match="not a complete prediction output"):
        shards.read_shards(out)
    monkeypatch.setattr(shards, "_put", lambda *a: (written.append(a[1]), put(*a)))
    predict_shards(folder, files, out, use_ray=False, chunk=CHUNK, per_shard=PER)  # the leftovers swept
    assert written[-1] == shards.MARKER and sorted(written[1:-1]) == written[1:-1] and len(written) == 5
    assert len(shards.read_shards(out)) == 18


def test_object_store_prefix_as_input_and_output(student, s3_location):
    """Images under a nested s3:// prefix are listed and read through pyarrow.fs by the workers; the
    shards and the marker go to another prefix; the numbers are those of the local files."""
    from rayflow.store_fs import resolve

    folder, files = student
    _, fs, root, _ = resolve(s3_location)
    for i, f in enumerate(files):  # two levels of nesting, sorted as the local files are
        with fs.open_output_stream(f"{root}/in/{'a' if i < 9 else 'b'}/x/{i:03d}.png") as out:
            out.write(open(f, "rb").read())
    local = predict_frame(folder, files, use_ray=False, chunk=CHUNK)
    done = predict_shards(folder, [f"{s3_location}/in"], f"{s3_location}/out", use_ray=False, chunk=CHUNK,
                          per_shard=PER)
    assert done["rows"] == 18 and len(done["parts"]) == 3
    got = shards.read_shards(f"{s3_location}/out")
    assert got["input"].iloc[0] == f"{s3_location}/in/a/x/000.png"
    pd.testing.assert_frame_equal(got.drop(columns="input"), local.drop(columns="input"), check_exact=True)
    with pytest.raises(DataError, match="already holds a complete"):
        predict_shards(folder, [f"{s3_location}/in"], f"{s3_location}/out", use_ray=False)
    with pytest.raises(DataError, match="holds no images"):
        predict_frame(folder, [f"{s3_location}/out"], use_ray=False)


@pytest.mark.slow
def test_ray_data_writes_the_shards_the_local_loop_writes(student, tmp_path, ray_session):
    folder, files = student
    kw = dict(chunk=CHUNK, per_shard=PER, actors=2)
    local = predict_shards(folder, files, str(tmp_path / "local"), use_ray=False, **kw)
    on_ray = predict_shards(folder, files, str(tmp_path / "ray"), use_ray=True, **kw)
    assert on_ray["parts"] == local["parts"]
    for p in local["parts"]:
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "ray" / p), pd.read_parquet(tmp_path / "local" / p),
                                      check_exact=True)
