"""The onnxforge pipeline: train -> export -> simplify -> quantize -> parity -> benchmark -> register."""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from flows.params import DEFAULT_RECIPE, OverrideValue, RecipePath, run_name
from onnxforge.chatter import route_third_party_output
from onnxforge.pipeline import build_chain, built_artifacts, contenders_of
from onnxforge.records import Registration, RunEvidence
from tasks.approval import await_approval
from tasks.benchmark import benchmark_provider, benchmark_report
from tasks.champions import fetch_champion_versions, score_champions
from tasks.data import materialize_data
from tasks.edge import edge_bundles
from tasks.export import export
from tasks.hooks import MLFLOW_RUN_HOOKS
from tasks.locks import one_run_per_recipe
from tasks.outcome import publish_outcome
from tasks.parity import validate_parity
from tasks.prepare import close_run, open_run, validate_recipe
from tasks.register import log_models, promote, propose_promotion, register, registry_lock
from tasks.report import publish_summary
from tasks.train import log_training, train
from tasks.variants import make_variant


def _flow_run_name() -> str:
    return run_name(flow_run.parameters.get("recipe_path", DEFAULT_RECIPE))


@flow(name="onnx-pipeline", flow_run_name=_flow_run_name, **MLFLOW_RUN_HOOKS)
def onnx_pipeline(
    recipe_path: RecipePath = DEFAULT_RECIPE,
    overrides: dict[str, OverrideValue] | None = None,
    no_cache: bool = False,
) -> Registration:
    """Run a recipe end to end: train, export, build variants, check parity, benchmark, register.

    Args:
        recipe_path: The recipe to run, a YAML file in configs/.
        overrides: Recipe fields to change for this run, by dotted key, e.g.
            {"train.epochs": 5, "benchmark.batch_sizes": [1, 8]}; a string value is read as YAML.
        no_cache: Train, export and build every variant again even when a stored result for the
            same recipe, data and code exists.
    """
    route_third_party_output()  # a deployment's run too: chatter to DEBUG, unless verbose
    recipe = validate_recipe(recipe_path, overrides)
    with one_run_per_recipe(recipe_path):  # deployment runs; held while awaiting approval
        context = open_run(recipe, recipe_path, str(flow_run.id))
        fresh = {"refresh_cache": True} if no_cache else {}
        data = materialize_data(recipe, context)
        champions = fetch_champion_versions(recipe, context)
        trained = train.with_options(**fresh)(recipe, data, context)
        log_training(trained, context)
        fp32 = export.with_options(**fresh)(recipe, trained, data, context)
        builds = build_chain(  # fp32, then simplify, optimize, quantize: each from its parent
            recipe,
            fp32,
            lambda name, parent: make_variant.with_options(**fresh)(
                recipe, name, parent, data, context
            ),
        )
        artifacts = built_artifacts(builds)
        parity = validate_parity(recipe, trained, artifacts, data, context)
        champions = score_champions(recipe, trained, champions, data)
        contenders = contenders_of(trained, artifacts, parity, champions)
        bench = []
        for provider in recipe.benchmark.providers:  # the champion runs in the same rounds
            bench += benchmark_provider(recipe, contenders, provider, data, context)
        bench = benchmark_report(recipe, bench, parity, context)
        bundles = edge_bundles(recipe, contenders, data, context) if recipe.edge else []
        evidence = RunEvidence(
            trained=trained,
            artifacts=tuple(artifacts),
            parity=tuple(parity),
            bench=tuple(bench),
            champions=tuple(champions),
            edge=tuple(bundles),
        )
        model_ids = log_models(evidence, data, context)
        proposal = propose_promotion(recipe, evidence, data, context)
        if recipe.registry.approval == "required":
            decisions = await_approval(list(proposal.decisions), recipe.registry.approval_timeout_s)
            proposal = proposal.model_copy(update={"decisions": tuple(decisions)})
        with registry_lock(recipe.registry.model_name):  # read, create, move: one critical section
            registration = register(recipe, evidence, proposal, model_ids, context)
            summary = publish_summary(trained, builds, parity, bench, registration, context)
            promote(registration, summary, context)  # aliases move last
        outcome = publish_outcome(registration, summary, bench, parity, context)
        # last: a failure before this ends the run FAILED, not FINISHED
        close_run(context, "FINISHED")
        return outcome
