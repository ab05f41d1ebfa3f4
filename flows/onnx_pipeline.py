"""The onnxforge pipeline: train -> export -> simplify -> quantize -> parity -> benchmark -> register."""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from onnxforge.records import (
    Registration,
    VariantBuild,
    built_artifacts,
    parent_for,
    passing_artifacts,
)
from tasks.approval import await_approval
from tasks.benchmark import benchmark_provider, benchmark_report
from tasks.champions import fetch_champion_versions, score_champions
from tasks.export import export
from tasks.parity import validate_parity
from tasks.prepare import close_run, open_run, validate_recipe
from tasks.register import log_models, promote, propose_promotion, register, registry_lock
from tasks.report import publish_summary
from tasks.train import train
from tasks.variants import make_variant

DEFAULT_RECIPE = "configs/digits_cnn.yaml"


@flow(name="onnx-pipeline")
def onnx_pipeline(
    recipe_path: str = DEFAULT_RECIPE, overrides: dict[str, str] | None = None
) -> Registration:
    """Run a recipe end to end; `overrides` are dotted keys, e.g. {"train.epochs": "5"}."""
    recipe = validate_recipe(recipe_path, overrides)
    context = open_run(recipe, recipe_path, str(flow_run.id))
    try:
        champions = fetch_champion_versions(recipe, context)
        trained = train(recipe, context)
        fp32 = export(recipe, trained, context)
        builds = [VariantBuild(variant="fp32", artifact=fp32)]
        for name, _ in recipe.requested_variants():  # simplify, optimize, quantize, in build order
            builds.append(make_variant(recipe, name, parent_for(name, builds), context))
        artifacts = built_artifacts(builds)
        parity = validate_parity(recipe, trained, artifacts, context)
        champions = score_champions(recipe, trained, champions)
        passing = passing_artifacts(artifacts, parity)
        bench = []
        for provider in recipe.benchmark.providers:  # the champion runs in the same rounds
            bench += benchmark_provider(recipe, trained, passing, champions, provider, context)
        bench = benchmark_report(recipe, bench, parity, context)
        model_ids = log_models(recipe, artifacts, parity, bench, context)
        proposal = propose_promotion(recipe, artifacts, parity, bench, champions, context)
        if recipe.registry.approval == "required":
            decisions = await_approval(proposal[0], recipe.registry.approval_timeout_s)
            proposal = (decisions, proposal[1])
        with registry_lock(recipe.registry.model_name):  # read, create, move: one critical section
            registration = register(
                recipe, trained, artifacts, parity, bench, proposal, model_ids, context
            )
            summary = publish_summary(trained, builds, parity, bench, registration, context)
            promote(registration, summary, context)  # aliases move last
    except BaseException:
        close_run(context, "FAILED")
        raise
    close_run(context, "FINISHED")
    return registration
