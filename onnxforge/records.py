"""Small frozen records passed between stages: paths, hashes and numbers, never models."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator


class Record(BaseModel):
    """Base for stage records: immutable, JSON-serialisable, safe to persist as Prefect results."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelArtifact(Record):
    """One ONNX file and where it came from."""

    path: str
    sha256: str
    variant: str
    parent: str | None
    producer: str  # the tool (and version) that wrote it
    opset: int
    size_bytes: int  # the .onnx file plus every external-data file it references
    checks: str = ""  # what was checked when it was built (checker, CPU session, inference)
    notes: tuple[str, ...] = ()  # settings changed to make it (an opset upgrade, per_channel off)


class VariantBuild(Record):
    """The outcome of making one variant: its artifact, or why there is none.

    status: built | build_failed (the maker or a build-time check failed; `reason` has the
    tool's message). Left out, it follows from whether there is an artifact.
    """

    variant: str
    artifact: ModelArtifact | None
    reason: str = ""
    status: Literal["built", "build_failed"] = "built"

    @model_validator(mode="before")
    @classmethod
    def _status_from_artifact(cls, data: Any) -> Any:
        if isinstance(data, dict) and "status" not in data:
            built = data.get("artifact") is not None
            data = {**data, "status": "built" if built else "build_failed"}
        return data


class EpochMetrics(Record):
    """One epoch's numbers (loss, accuracy, val_accuracy), kept so a reused training can log them."""

    epoch: int
    metrics: dict[str, float]


class TrainResult(Record):
    """What training left behind."""

    checkpoint: str
    checkpoint_sha256: str
    dataset_hash: str
    epochs_run: int
    val_accuracy: float | None
    test_accuracy: float | None
    seconds: float
    val_rmse: float | None = None  # regression tasks: RMSE instead of accuracy
    test_rmse: float | None = None
    history: tuple[EpochMetrics, ...] = ()
    mlflow_run_id: str = ""  # the run that trained it; another run reusing it logs `history`


class ParityFailure(Record):
    """One broken clause of the parity contract."""

    # output_missing | shape_mismatch | non_finite | tolerance_exceeded | top1_below_floor |
    # accuracy_drop (for one-value-per-sample outputs: an RMSE increase over the same budget) |
    # degenerate_output (the same output for every test sample) |
    # not_run (the variant could not run where parity is measured)
    kind: str
    message: str


class OutputParity(Record):
    """Error numbers of one output."""

    name: str
    max_abs_err: float
    mean_abs_err: float
    rel_err: float  # max abs error / max |reference|
    spread: float | None = None  # std of the reference output's values over the test split
    max_spread_err: float | None = None  # max abs error / spread
    mean_spread_err: float | None = None  # mean abs error / spread


class LayerDrift(Record):
    """How far one intermediate tensor of a quantized model strays from its float parent."""

    tensor: str
    node: str
    sqnr_db: float  # signal-to-quantization-noise ratio; lower drifts more


class ParityResult(Record):
    """A variant measured against the source model on the test split, in a session built by
    one runtime profile (session options can change numerics)."""

    variant: str
    passed: bool
    profile: str = "default"
    failures: tuple[ParityFailure, ...] = ()
    max_abs_err: float | None = None
    mean_abs_err: float | None = None
    top1_agreement: float | None = None
    accuracy: float | None = None
    source_accuracy: float | None = None
    per_output: tuple[OutputParity, ...] = ()
    drifting_layers: tuple[LayerDrift, ...] = ()  # filled for quantized variants that fail
    max_spread_err: float | None = None  # largest max abs error / spread over the outputs
    mean_spread_err: float | None = None  # mean over the outputs of mean abs error / spread
    mae: float | None = None  # one-value-per-sample first output vs float labels
    rmse: float | None = None
    source_mae: float | None = None
    source_rmse: float | None = None


class BenchResult(Record):
    """Latency of one contender on one (provider, batch size), pooled over interleaved rounds.

    status: ok | skipped (provider unavailable) | unsupported (the provider or the model refused)
    | timeout | crashed (the measuring process hung or died) | refused (a dispatched file's
    sha256 did not match) | no-worker | worker-lost | dispatch-failed (a benchmark dispatched
    to a work pool that no worker started, whose worker stopped heartbeating, or whose flow
    run failed); `timeout` also ends a dispatched benchmark that outlives its budget.
    """

    variant: str  # a variant of this run, `champion-v<N>`, or the framework baseline
    provider: str
    batch_size: int
    status: str
    profile: str = "default"  # the runtime profile its session was built with
    reason: str = ""
    size_bytes: int | None = None
    intra_op_threads: int | None = None
    inter_op_threads: int | None = None
    session_ms: float | None = None
    iterations: int | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    std_ms: float | None = None
    cv: float | None = None  # coefficient of variation: std / mean
    throughput: float | None = None  # items per second
    peak_rss_increase_mb: float | None = None
    speedup: float | None = None  # median over rounds of framework p50 / this p50
    speedup_low: float | None = None  # 95% bootstrap interval of that ratio, over rounds
    speedup_high: float | None = None
    source: str = "run"  # run | champion | framework
    group: str = ""  # the provider whose interleaved rounds measured this row
    rounds: int | None = None
    round_p50_ms: tuple[float, ...] = ()  # this contender's p50 in each interleaved round
    round_cv: float | None = None  # std / mean of round_p50_ms: how much the rounds disagree
    noisy: bool = False  # round_cv above benchmark.max_cv: wins only with its whole interval faster
    # Where it was measured: the host's name, and for a benchmark dispatched to a Prefect work
    # pool the pool and the Prefect worker's name.
    host: str = ""
    pool: str = ""
    worker: str = ""


class Comparison(Record):
    """`reference` p50 / `contender` p50 from the same interleaved rounds (> 1: contender faster)."""

    provider: str
    batch_size: int
    contender: str
    reference: str
    ratio: float  # median over rounds of the per-round ratio
    low: float  # 95% bootstrap interval (resampling rounds)
    high: float
    rounds: int
    noisy: bool  # either row is noisy: decides only when the whole interval clears the bar


class ChampionRecord(Record):
    """A version that held an alias when this run started, fetched and checked for this run."""

    version: str
    aliases: tuple[str, ...]
    variant: str
    sha256: str
    path: str | None  # the verified file; None when it could not be fetched or verified
    verified: bool
    tampered: bool = False  # its file differs from the sha256 its version records
    size_bytes: int | None = None
    reason: str = ""  # why it is not verified, or why it could not be evaluated
    evaluation: ParityResult | None = None  # on this run's test split
    # provider short name (cpu, cuda) -> the runtime profile it is deployed with there: its
    # version's `profile.<provider>` tags, as onnxforge.profiles.deployed_profile wrote them
    profiles: dict[str, dict[str, Any]] = {}

    @property
    def label(self) -> str:
        """Its name in benchmark tables."""
        return f"champion-v{self.version}"


class AliasDecision(Record):
    """Whether one alias moves to this run's candidate for one provider, and why."""

    alias: str  # champion, champion-<provider>, challenger
    provider: str
    variant: str | None  # the candidate; None when no variant passed on this provider
    profile: str = "default"  # the runtime profile the candidate was measured under
    version: str | None = None  # filled when the candidate is registered
    against: str | None = None  # the version that held the alias when the evidence was taken
    move: bool
    reason: str


class Registration(Record):
    """What the register stage did: the objective's version, and every alias decision."""

    model_name: str
    version: str | None
    variant: str | None
    model_id: str | None
    champion_moved: bool
    reason: str
    decisions: tuple[AliasDecision, ...] = ()
    versions: dict[str, str] = {}  # variant -> registered version
    floors: tuple[str, ...] = ()  # why the candidate is below a quality floor


class EdgeBundle(Record):
    """The files of one variant's edge bundle, each with its sha256."""

    variant: str  # the variant it was made from (its parity bar)
    label: str  # its row name: the variant, or champion-v<N> for the edge champion's file
    ort_path: str
    ort_sha256: str
    ort_size_bytes: int
    ops_config_path: str
    ops_config_sha256: str
    usability: str  # one line: whether NNAPI / CoreML could take part of the graph
    usability_path: str  # the checker's whole report
    usability_sha256: str
    optimization_style: str
    target_platform: str


class EdgeCandidate(Record):
    """A bundle, its parity against the source, and its single-thread batch-1 row."""

    bundle: EdgeBundle
    parity: ParityResult
    row: BenchResult | None = None  # None when parity failed: not timed


class BenchContenders(Record):
    """What a provider's rounds time: the passing variants, the verified champions, and the
    training whose checkpoint is the framework baseline (in the baseline provider's rounds)."""

    trained: TrainResult
    artifacts: tuple[ModelArtifact, ...]
    champions: tuple[ChampionRecord, ...] = ()
    # (variant, runtime profile) pairs that passed parity; empty: every pair the benchmark's
    # profiles apply to
    passed: tuple[tuple[str, str], ...] = ()


class RunEvidence(Record):
    """Everything one run measured that a promotion rests on: its training, its variants, their
    parity, the benchmark rows (champions timed in the same rounds) and the champions it fetched."""

    trained: TrainResult
    artifacts: tuple[ModelArtifact, ...]
    parity: tuple[ParityResult, ...]
    bench: tuple[BenchResult, ...]
    champions: tuple[ChampionRecord, ...] = ()
    edge: tuple[EdgeCandidate, ...] = ()  # recipes with an `edge` section: the bundles

    def artifact(self, variant: str) -> ModelArtifact:
        """The artifact of one variant."""
        return next(a for a in self.artifacts if a.variant == variant)

    def parity_of(self, variant: str, profile: str = "default") -> ParityResult:
        """The parity result of one variant under one runtime profile."""
        return next(p for p in self.parity if (p.variant, p.profile) == (variant, profile))


class Proposal(Record):
    """The alias decisions a run proposes, and per passing variant why it is below a floor."""

    decisions: tuple[AliasDecision, ...]
    floors: dict[str, tuple[str, ...]] = {}
    # What every version tells a client (onnxforge.deploy_info): preprocessing, class labels
    deployment_tags: dict[str, str] = {}
