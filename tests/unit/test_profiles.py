"""Runtime profiles in a recipe: what is refused before any work, what a profile sets, and
which earlier version an identical candidate re-confirms instead of registering a twin."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from onnxforge.errors import RecipeError
from onnxforge.profiles import DEFAULT_PROFILES, RuntimeProfile, labelled
from onnxforge.recipe import load_recipe
from tests.recipe_files import write_recipe


def test_the_default_list_is_the_pinned_runtime_plus_the_layernorm_remedy(digits_recipe) -> None:
    assert [p.name for p in digits_recipe.benchmark.profiles] == ["default", "no-skiplayernorm"]
    assert list(digits_recipe.benchmark.profiles) == list(DEFAULT_PROFILES)
    remedy = DEFAULT_PROFILES[1]
    assert remedy.settings() == {"disabled_optimizers": ["SkipLayerNormFusion"]}
    assert remedy.applies_to({"LayerNormalization", "MatMul"}, "CPUExecutionProvider")
    assert not remedy.applies_to({"Conv", "Relu"}, "CPUExecutionProvider")
    assert not remedy.applies_to({"LayerNormalization"}, "CUDAExecutionProvider")


def test_a_profile_sets_only_what_it_names() -> None:
    profile = RuntimeProfile(
        name="tuned",
        graph_optimization_level="ORT_ENABLE_EXTENDED",
        session_config={"session.set_denormal_as_zero": True, "session.intra_op.allow_spinning": 0},
        execution_mode="parallel",
    )
    assert profile.settings() == {
        "graph_optimization_level": "ORT_ENABLE_EXTENDED",
        "session_config": {
            "session.set_denormal_as_zero": "1",
            "session.intra_op.allow_spinning": "0",
        },
        "execution_mode": "parallel",
    }
    assert RuntimeProfile(name="default").settings() == {}
    assert labelled("int8-dynamic", "default") == "int8-dynamic"
    assert labelled("int8-dynamic", "tuned") == "int8-dynamic/tuned"


@pytest.mark.parametrize(
    ("profiles", "message"),
    [
        ([{"name": "a"}, {"name": "a"}], "profiles: names must be unique; a repeated"),
        ([{"name": "x", "providers": ["FooEP"]}], "unknown provider 'FooEP'"),
        ([{"name": "Upper Case"}], "benchmark.profiles[0].name"),
        ([{"name": "x", "graph_optimization_level": "fast"}], "graph_optimization_level"),
        ([{"name": "x", "execution_mode": "async"}], "execution_mode"),
        ([{"name": "x", "threads": 4}], "benchmark.profiles[0].threads: unknown key"),
        ([], "benchmark.profiles"),
    ],
)
def test_a_bad_profile_is_refused_with_its_field(tmp_path: Path, profiles, message) -> None:
    with pytest.raises(RecipeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_recipe(write_recipe(tmp_path, {"benchmark.profiles": profiles}))


def test_an_interpreter_path_is_read_against_the_recipe_folder(tmp_path: Path) -> None:
    recipe = load_recipe(
        write_recipe(
            tmp_path, {"benchmark.profiles": [{"name": "ov", "python": "venv/bin/python"}]}
        )
    )
    assert recipe.benchmark.profiles[0].python == str(tmp_path / "venv" / "bin" / "python")


def test_a_missing_interpreter_is_refused_before_any_work(tmp_path: Path) -> None:
    from onnxforge.preflight import check_profiles

    path = write_recipe(tmp_path, {"benchmark.profiles": [{"name": "ov", "python": "/no/python"}]})
    with pytest.raises(RecipeError, match=r"benchmark.profiles\[0\].python: /no/python does not"):
        check_profiles(load_recipe(path), str(path))
    ok = write_recipe(tmp_path, {"benchmark.profiles": [{"name": "me", "python": sys.executable}]})
    check_profiles(load_recipe(ok), str(ok))  # this interpreter imports onnxruntime


def _version(
    number: int, sha: str, state: str = "done", profile: str = "default"
) -> SimpleNamespace:
    tags = {"sha256": sha, "onnxforge.state": state, "profile.cpu": json.dumps({"name": profile})}
    return SimpleNamespace(version=str(number), tags=tags)


def test_an_identical_file_and_profile_re_confirms_the_latest_finished_version() -> None:
    from onnxforge.registration import identical_versions

    wanted = {"int8-dynamic": {"sha256": "a" * 64, "profile.cpu": json.dumps({"name": "default"})}}
    existing = [_version(1, "a" * 64), _version(2, "b" * 64), _version(3, "a" * 64)]
    assert identical_versions(existing, wanted)["int8-dynamic"].version == "3"
    # another profile, an unfinished version, or another file: a new version is registered
    assert not identical_versions([_version(1, "a" * 64, profile="tuned")], wanted)
    assert not identical_versions([_version(1, "a" * 64, state="pending")], wanted)
    assert not identical_versions([_version(1, "c" * 64)], wanted)
