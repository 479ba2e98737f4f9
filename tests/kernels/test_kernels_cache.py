"""The Numba cache folder is keyed by the kernels' sources, so an upgrade never loads stale code."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import kernels
from kernels._cache import source_digest

ROOT = Path(__file__).resolve().parents[2]


def test_digest_follows_any_source_change(tmp_path):
    copy = tmp_path / "kernels"
    shutil.copytree(ROOT / "kernels", copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = source_digest(copy)
    assert before == source_digest(Path(kernels.__file__).parent)
    helper = copy / "_heap.py"
    helper.write_text(helper.read_text() + "\n# changed\n")
    assert source_digest(copy) != before


def test_kernels_cache_under_keyed_folder(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), PYTHONPATH=str(ROOT))
    code = "import kernels, kernels.exact as e; print(kernels.CACHE_DIR); print(e._stream_scan._cache._cache_path)"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    expected = str(tmp_path / f"kernels-{source_digest()}")
    assert out[0] == expected
    assert out[1].startswith(expected)


def test_python_m_kernels_warms_the_cache(tmp_path):
    # The session's cache when there is one (`make test` sets it): warm, so this stays fast.
    cache = Path(os.environ.get("NUMBA_CACHE_DIR") or tmp_path)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-m", "kernels"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    keyed = cache / f"kernels-{source_digest()}"
    assert "kernels ready" in out and keyed.name in out
    assert any(keyed.rglob("*.nbi"))  # Numba's cache index files were written
