"""Session fixtures shared by every test folder: a tiny simulated marketplace and the model
repository the real trainer builds from it (real Parquet, real PyTorch, real ONNX)."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, settings

# Shared 2-core machines stall for seconds at a time: property tests must not fail on timing.
settings.register_profile("reachrank", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("reachrank")

# Every test process compiles Numba kernels into one cache (CI starts cold, then reuses it).
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".numba_cache"))

from training.models.ctr import CTRSize  # noqa: E402
from training.pipeline import Dataset, TrainConfig, train_all  # noqa: E402
from training.retrieval import RetrievalConfig  # noqa: E402
from training.sequence import SequenceConfig  # noqa: E402
from training.simulate import GroundTruth, SimulatorConfig, write_simulation  # noqa: E402

TINY_SIM = SimulatorConfig(users=300, items=120, days=14, seed=11)
TINY_TRAIN = TrainConfig(
    ctr_models=("lr", "fm", "deepfm", "dcn"),
    ctr_size=CTRSize(dim=4, mlp=(16, 8), cross_layers=1),
    ctr_epochs=2,
    n_buckets=1 << 14,
    # No deadline: what the searches try must not depend on how busy the machine is.
    budget_minutes=None,
    retrieval=RetrievalConfig(
        mf_dim=16,
        mf_epochs=8,
        ials_dim=8,
        ials_iterations=3,
        ease_lambdas=(50.0, 200.0),
        sequence=SequenceConfig(dim=16, max_len=8, layers=1, max_epochs=4, eval_every=2),
        sequence_minutes=None,
        progress=False,
    ),
    progress=False,
)


@pytest.fixture(scope="session")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    write_simulation(out, TINY_SIM)
    return out


@pytest.fixture(scope="session")
def trained_repo(tmp_path_factory: pytest.TempPathFactory, sim_dir: Path) -> Path:
    """A model repository with every CTR and retrieval model type, the profiles bundle and
    the report, trained on the tiny simulated log (with its ground truth)."""
    repo = tmp_path_factory.mktemp("repo")
    data = Dataset(
        events=pl.scan_parquet(sim_dir / "events.parquet"),
        items=pl.read_parquet(sim_dir / "items.parquet"),
        users=pl.read_parquet(sim_dir / "users.parquet"),
        ground_truth=GroundTruth.load(sim_dir),
    )
    train_all(data, repo, TINY_TRAIN)
    return repo


@pytest.fixture(scope="session")
def datasets() -> Path:
    """The read-only public data sets, in the folder beside the checkout (CI has them too)."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
    assert path.is_dir(), f"the shared data sets are expected at {path}"
    return path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`slow` also covers every test that needs the trained repository: building it is a real
    training run (about a minute and a half on two cores), too much for `make test-fast`."""
    for item in items:
        if "trained_repo" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
