"""Unreadable data files and data that does not fit the recipe: `onnxforge validate` exits 2 with
one line naming the recipe line, the field, the data file and what was expected (no traceback).

Each case builds the model for its shape check but trains nothing."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flows.cli import main
from tests.recipe_files import at, write_recipe

NPZ_EXPECTED = "expected a .npz archive written by numpy.savez or numpy.savez_compressed"
CSV_EXPECTED = "expected comma-separated text with a header row naming the columns"


def _digits_npz(path: Path, labels: int = 60) -> None:
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.random((60, 1, 8, 8), dtype=np.float32), y=np.arange(labels) % 3)


def _truncated_npz(path: Path) -> None:
    _digits_npz(path)
    path.write_bytes(path.read_bytes()[:300])


def _corrupt_member(path: Path) -> None:
    _digits_npz(path)
    raw = bytearray(path.read_bytes())
    raw[200:260] = bytes(60)  # inside x.npy's data: the zip's CRC check fails on reading
    path.write_bytes(bytes(raw))


def _npz(change: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"dataset": {"source": "npz", "path": "data.npz", **(change or {})}}


def _csv(suffix: str = "csv") -> dict[str, Any]:
    dataset = {"source": suffix, "path": f"data.{suffix}", "features": ["a", "b"], "label": "t"}
    return {"dataset": dataset, "model.architecture": "mlp", "model.kwargs": {}}


ROWS = "a,b,t\n" + "1,2,0\n1,3,1\n" * 20

# (id, data file name, writer, recipe change, needle of the blamed line, expected message)
CASES: list[tuple[str, str, Callable[[Path], Any], dict[str, Any], str, str]] = [
    (
        "empty npz",
        "data.npz",
        lambda p: p.write_bytes(b""),
        _npz(),
        "path:",
        "dataset.path: {file} is empty; " + NPZ_EXPECTED,
    ),
    (
        "truncated npz",
        "data.npz",
        _truncated_npz,
        _npz(),
        "path:",
        "dataset.path: {file} is not a readable .npz archive (File is not a zip file); "
        + NPZ_EXPECTED,
    ),
    (
        "text file named .npz",
        "data.npz",
        lambda p: p.write_text("x,y\n1,2\n"),
        _npz(),
        "path:",
        "dataset.path: {file} is not a readable .npz archive (not a zip archive); " + NPZ_EXPECTED,
    ),
    (
        "a single .npy array",
        "data.npz",
        lambda p: p.write_bytes(_npy_bytes(np.zeros((60, 64)))),
        _npz(),
        "path:",
        "dataset.path: {file} holds one .npy array, not named arrays; " + NPZ_EXPECTED,
    ),
    (
        "corrupt npz member",
        "data.npz",
        _corrupt_member,
        _npz(),
        "dataset:",
        "dataset.features: {file} array 'x': it is truncated or corrupt (Bad CRC-32 for file "
        "'x.npy'); " + NPZ_EXPECTED,
    ),
    (
        "object array in npz",
        "data.npz",
        lambda p: np.savez(p, x=np.array([{}] * 60, dtype=object), y=np.arange(60) % 3),
        _npz(),
        "dataset:",
        "dataset.features: {file} array 'x': it holds Python objects, which are not loaded "
        "(no pickles); expected numeric arrays",
    ),
    (
        "labels of another length",
        "data.npz",
        lambda p: _digits_npz(p, labels=50),
        _npz(),
        "dataset:",
        "dataset.labels: {file} array 'y' has 50 labels, but the features have 60 samples; "
        "expected one label per sample",
    ),
    (
        "reshape that does not fit an npz array",
        "data.npz",
        _digits_npz,
        _npz({"sample_shape": [3, 3]}),
        "sample_shape:",
        "dataset.sample_shape: [3, 3] holds 9 values per sample, but {file} array 'x' has 64 "
        "(samples of shape (1, 8, 8)); expected a shape whose sizes multiply to 64",
    ),
    (
        "empty csv",
        "data.csv",
        lambda p: p.write_text(""),
        _csv(),
        "path:",
        "dataset.path: {file} is empty; " + CSV_EXPECTED,
    ),
    (
        "binary csv",
        "data.csv",
        lambda p: p.write_bytes(bytes(range(256)) * 4),
        _csv(),
        "path:",
        "dataset.path: {file} holds binary data (a NUL byte at offset 0), not CSV text; "
        + CSV_EXPECTED,
    ),
    (
        "csv that is not utf-8",
        "data.csv",
        lambda p: p.write_bytes(b"a,b,t\n1,2,0\n\xe9,2,1\n"),
        _csv(),
        "path:",
        "dataset.path: {file} is not UTF-8 text (byte 0xe9 at offset 12); " + CSV_EXPECTED,
    ),
    (
        "ragged csv",
        "data.csv",
        lambda p: p.write_text(ROWS + "1,2,3,4\n"),
        _csv(),
        "path:",
        "dataset.path: {file} is not a well-formed CSV table: line 42 has 4 fields where the "
        "rows before it have 3; " + CSV_EXPECTED,
    ),
    (
        "csv with a header only",
        "data.csv",
        lambda p: p.write_text("a,b,t\n"),
        _csv(),
        "path:",
        "dataset.path: {file} has no data rows; " + CSV_EXPECTED + ", then one row per sample",
    ),
    (
        "garbage parquet",
        "data.parquet",
        lambda p: p.write_text("not parquet"),
        _csv("parquet"),
        "path:",
        "dataset.path: {file} is not a readable Parquet file (Could not open Parquet input "
        "source '{file}': Parquet magic bytes not found in footer. Either the file is corrupted "
        "or this is not a parquet file.); expected a Parquet file (e.g. written by "
        "pandas.DataFrame.to_parquet)",
    ),
    (
        "reshape that does not fit the shipped set",
        None,
        None,
        {"dataset.sample_shape": [5, 5]},
        "sample_shape:",
        "dataset.sample_shape: [5, 5] holds 25 values per sample, but scikit-learn dataset "
        "'digits' has 64 (samples of shape (64,)); expected a shape whose sizes multiply to 64",
    ),
    (
        "negative dataset seed",
        None,
        None,
        {"dataset.seed": -1},
        "seed: -1",
        "dataset.seed: expected an integer 0..4294967295 (2**32 - 1); got -1",
    ),
]


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "write", "change", "needle", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_data_file_is_one_line_exit_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str | None,
    write: Callable[[Path], Any] | None,
    change: dict[str, Any],
    needle: str,
    expected: str,
) -> None:
    monkeypatch.setenv("ONNXFORGE_HOME", str(tmp_path / "home"))
    file = None
    if name is not None:
        file = tmp_path / name
        write(file)
    recipe = write_recipe(tmp_path, change)
    assert main(["validate", str(recipe)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"error: {at(recipe, needle)}: {expected.format(file=file)}"]


def test_the_corrupt_member_case_really_fails_its_crc(tmp_path: Path) -> None:
    """The fixture is what the case says: a zip that opens, with a member that does not read."""
    path = tmp_path / "data.npz"
    _corrupt_member(path)
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() == "x.npy"
