"""ReachRank against other Python model servers on the same ONNX CTR model, over the same
protocol (KServe v2 gRPC ModelInfer), measured by the same client (Triton's perf_analyzer).

    python -m bench.peers [--repo model_repo] [--seconds N] [--rounds R] [--quick]
                          [--peers kserve,pytriton,mlserver] [--workdir DIR]
                          [--before CHECKOUT]

The servers, each started in turn on a free loopback port and stopped before the next one:

- ReachRank: ``reachrank serve --repo REPO --port P --metrics-port -1`` (KServe v2 on P; REPO:
  ``model_repo`` when it exists, else a small one trained first, about a minute);
- KServe 0.21: ``kserve.ModelServer`` with a custom ``kserve.Model`` whose ``predict`` runs an
  onnxruntime session (KServe's gRPC v2 server on its ``grpc_port``);
- PyTriton 0.7: Triton bound to a ``@batch`` infer function running onnxruntime (dynamic
  batching, ``max_batch_size`` as ReachRank's ``max_batch_rows``);
- MLServer 1.7.1: a custom ``MLModel`` runtime running onnxruntime (``model-settings.json``,
  MLServer's default single inference worker process, its gRPC port).

Every peer's onnxruntime session gets ReachRank's thread settings (``ort_intra_op_threads``,
``ort_inter_op_threads``, no spinning). perf_analyzer asks the Triton-only ModelConfig RPC
before it sends anything, which KServe and MLServer do not implement: their scripts answer it
with fixed bytes (the config ReachRank would give; it is never called while measuring) and
declare the tensors' metadata, so that ``-b B`` sends the same [B, F] tensors to every server.

Each (batch, in flight) level is one perf_analyzer run (``--input-data zero``, three
``--seconds`` windows); the server's CPU is utime+stime of its process tree from
/proc/PID/stat before and after that run, divided by the requests perf_analyzer counted. With
``--rounds 2`` the servers run twice, the second round in reverse order, and the table shows
each cell's median, and a second table each cell's spread over the rounds. ``--before
CHECKOUT`` adds ReachRank served from another working tree (``git worktree add DIR COMMIT``)
to the same rounds: before/after figures from one run. Writes ``bench/results/peers.json``
and prints the tables in Markdown.

Needs: the `bench` extra (perf_analyzer from tritonclient 2.51.0's wheel, libcudart.so.12),
Debian's ``libb64-0d`` (``make bench`` installs it), PyPI for the peers (each installed into its
own virtualenv under the work folder; pip's default cache makes a second run faster; about
1.5 GB and a few minutes the first time). A peer that fails to install or start is reported in
the table; the suite exits non-zero only when ReachRank itself fails.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BATCHES = (1, 64)
CONCURRENCY = (8, 32)
READY_TIMEOUT_S = 300.0  # ReachRank compiles its Numba kernels on a cold cache (~60 s here).
INSTALL_TIMEOUT_S = 1800.0
DATATYPES = {"int64": "INT64", "float32": "FP32", "int32": "INT32", "float64": "FP64"}


class PeerFailed(Exception):
    """A server that could not be installed, started or measured; the message says why."""


# --- the model -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy name: int64, float32
    dims: tuple[int, ...]  # without the batch axis


@dataclass(frozen=True)
class Model:
    name: str
    version: int
    path: Path
    inputs: tuple[TensorSpec, ...]
    output: TensorSpec


def load_model(repo: Path, name: str) -> Model:
    """The latest version of ``name`` in the repository, from its manifest."""
    versions = [int(p.name) for p in (repo / name).iterdir() if p.name.isdigit()]
    if not versions:
        raise SystemExit(f"no versions of {name} under {repo}")
    folder = repo / name / str(max(versions))
    onnx = json.loads((folder / "manifest.json").read_text())["onnx"]

    def spec(t: dict[str, Any]) -> TensorSpec:
        return TensorSpec(t["name"], t["dtype"], tuple(t["shape"][1:]))

    (output,) = onnx["outputs"]
    return Model(
        name, max(versions), folder / onnx["file"], tuple(map(spec, onnx["inputs"])), spec(output)
    )


def model_config_bytes(model: Model, max_batch_size: int) -> bytes:
    """Triton's ModelConfigResponse for ``model``, as ReachRank writes it (a [batch] output is
    shown as [batch, 1] with an empty reshape)."""
    import tritonclient.grpc.model_config_pb2 as mc
    import tritonclient.grpc.service_pb2 as pb

    def dtype(t: TensorSpec) -> int:
        return mc.DataType.Value("TYPE_" + DATATYPES[t.dtype])

    out = model.output
    config = mc.ModelConfig(
        name=model.name,
        platform="onnxruntime_onnx",
        backend="onnxruntime",
        max_batch_size=max_batch_size,
        input=[mc.ModelInput(name=t.name, data_type=dtype(t), dims=t.dims) for t in model.inputs],
        output=[
            mc.ModelOutput(
                name=out.name,
                data_type=dtype(out),
                dims=out.dims or [1],
                reshape=None if out.dims else mc.ModelTensorReshape(shape=[]),
            )
        ],
    )
    return pb.ModelConfigResponse(config=config).SerializeToString()


def zero_inputs(model: Model, rows: int) -> dict[str, np.ndarray]:
    return {t.name: np.zeros((rows, *t.dims), dtype=t.dtype) for t in model.inputs}


# --- the peers' own code, written into the work folder ---------------------------------------

PEER_COMMON = '''"""Shared by the peer servers (written by bench.peers): the config, ReachRank's onnxruntime
session options, and an answer to Triton's ModelConfig RPC for servers without one."""

import json
import os

import grpc
import grpc.aio
import onnxruntime as ort

CONFIG = json.loads(os.environ["PEER_CONFIG"])


def session() -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = CONFIG["intra_op_threads"]
    options.inter_op_num_threads = CONFIG["inter_op_threads"]
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(CONFIG["model"], options, providers=["CPUExecutionProvider"])


def tensor_metadata() -> tuple[list[dict], list[dict]]:
    """KServe v2 metadata of the inputs and the output, with a -1 batch axis."""
    def meta(t: dict) -> dict:
        return {"name": t["name"], "datatype": t["datatype"], "shape": [-1, *t["dims"]]}
    return [meta(t) for t in CONFIG["inputs"]], [meta(CONFIG["output"])]


def answer_model_config() -> None:
    """Make every grpc.aio server created from now on answer ModelConfig with fixed bytes."""
    reply = bytes.fromhex(CONFIG["model_config"])
    create = grpc.aio.server

    async def model_config(request: bytes, context) -> bytes:
        return reply

    handler = grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService",
        {"ModelConfig": grpc.unary_unary_rpc_method_handler(model_config)},
    )

    def server(*args, **kwargs):
        created = create(*args, **kwargs)
        created.add_generic_rpc_handlers((handler,))
        return created

    grpc.aio.server = server
'''

KSERVE_SERVER = '''"""KServe ModelServer with a custom kserve.Model running onnxruntime (bench.peers)."""

import logging

import kserve
from kserve import InferOutput, InferRequest, InferResponse

from peer_common import CONFIG, answer_model_config, session, tensor_metadata


class CTR(kserve.Model):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.inputs, self.outputs = tensor_metadata()
        self.load()

    def load(self) -> bool:
        self.session = session()
        self.ready = True
        return self.ready

    def get_input_types(self) -> list[dict]:
        return self.inputs

    def get_output_types(self) -> list[dict]:
        return self.outputs

    def predict(self, payload: InferRequest, headers=None) -> InferResponse:
        feeds = {i.name: i.as_numpy() for i in payload.inputs}
        name = CONFIG["output"]["name"]
        (pctr,) = self.session.run([name], feeds)
        out = InferOutput(name=name, shape=list(pctr.shape), datatype="FP32")
        out.set_data_from_numpy(pctr, binary_data=True)
        return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=[out])


if __name__ == "__main__":
    answer_model_config()
    server = kserve.ModelServer(
        http_port=CONFIG["ports"]["http"],
        grpc_port=CONFIG["ports"]["grpc"],
        enable_latency_logging=False,
    )
    # Its gRPC interceptor logs every call at INFO: not part of serving.
    logging.getLogger("kserve").setLevel(logging.WARNING)
    server.start([CTR(CONFIG["name"])])
'''

PYTRITON_SERVER = '''"""PyTriton: Triton bound to a @batch infer function running onnxruntime (bench.peers)."""

import os
import shutil
from pathlib import Path

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import ModelConfig, Tensor
from pytriton.triton import DEFAULT_PROTECTED_ENDPOINTS, Triton, TritonConfig, TritonSecurityConfig

from peer_common import CONFIG, session

SESSION = session()
OUTPUT = CONFIG["output"]["name"]


@batch
def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
    (pctr,) = SESSION.run([OUTPUT], inputs)
    return {OUTPUT: pctr.reshape(len(pctr), -1)}


if __name__ == "__main__":
    ports = CONFIG["ports"]
    config = TritonConfig(
        grpc_address="127.0.0.1",
        grpc_port=ports["grpc"],
        http_address="127.0.0.1",
        http_port=ports["http"],
        metrics_address="127.0.0.1",
        metrics_port=ports["metrics"],
        log_verbose=0,
    )
    workspace = Path(CONFIG["run_dir"]) / f"workspace-{os.getpid()}"
    # perf_analyzer reads ModelStatistics (restricted by default) before and after each run.
    open_stats = [e for e in DEFAULT_PROTECTED_ENDPOINTS if e != "statistics"]
    security = TritonSecurityConfig(restricted_endpoints=open_stats)
    try:
        with Triton(config=config, workspace=workspace, security_config=security) as triton:
            triton.bind(
                model_name=CONFIG["name"],
                infer_func=infer,
                inputs=[
                    Tensor(name=t["name"], dtype=np.dtype(t["dtype"]), shape=tuple(t["dims"]))
                    for t in CONFIG["inputs"]
                ],
                outputs=[Tensor(name=OUTPUT, dtype=np.float32, shape=(1,))],
                config=ModelConfig(max_batch_size=CONFIG["max_batch_size"]),
                strict=False,
            )
            triton.serve()
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
'''

MLSERVER_RUNTIME = '''"""MLServer custom runtime running onnxruntime (bench.peers)."""

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

from peer_common import CONFIG, session


class OnnxCTR(MLModel):
    async def load(self) -> bool:
        self.session = session()
        self.output = CONFIG["output"]["name"]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        (pctr,) = self.session.run([self.output], feeds)
        return InferenceResponse(
            model_name=self.name, outputs=[NumpyCodec.encode_output(self.output, pctr)]
        )
'''

MLSERVER_SERVER = '''"""Writes MLServer's settings.json and model-settings.json, then runs `mlserver start`."""

import json
from pathlib import Path

from peer_common import CONFIG, answer_model_config, tensor_metadata

if __name__ == "__main__":
    root = Path(CONFIG["run_dir"]) / "mlserver"
    (root / CONFIG["name"]).mkdir(parents=True, exist_ok=True)
    ports = CONFIG["ports"]
    settings = {
        "debug": False,
        "host": "127.0.0.1",
        "http_port": ports["http"],
        "grpc_port": ports["grpc"],
        "metrics_port": ports["metrics"],
        "metrics_dir": str(root / "metrics"),
    }
    (root / "settings.json").write_text(json.dumps(settings))
    inputs, outputs = tensor_metadata()
    model = {
        "name": CONFIG["name"],
        "implementation": "mlserver_runtime.OnnxCTR",
        "parameters": {"uri": CONFIG["model"]},
        "inputs": inputs,
        "outputs": outputs,
    }
    (root / CONFIG["name"] / "model-settings.json").write_text(json.dumps(model))
    answer_model_config()
    from mlserver.cli.main import root as cli

    cli(["start", str(root)])
'''


@dataclass(frozen=True)
class Peer:
    key: str
    title: str
    packages: tuple[str, ...]
    files: dict[str, str]  # file name -> source, written into the run folder
    main: str  # the file to run
    ports: tuple[str, ...] = ("grpc", "http", "metrics")
    # Triton's Python backend stub links libpython3.11.so: without this interpreter's own on
    # LD_LIBRARY_PATH it finds the system's (another 3.11 patch release) and fails to load
    # this interpreter's standard library ('_thread.RLock' has no '_recursion_count').
    own_libpython: bool = False
    shm_leftovers: str | None = None
    stop_signal: int = signal.SIGTERM


def onnxruntime_pin() -> str:
    """The CPU wheel of the onnxruntime version ReachRank runs (its GPU build's CPU provider
    is as fast as the CPU wheel)."""
    for dist in ("onnxruntime-gpu", "onnxruntime"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            return f"onnxruntime=={metadata.version(dist)}"
    return "onnxruntime"


def peers() -> dict[str, Peer]:
    ort = onnxruntime_pin()
    common = {"peer_common.py": PEER_COMMON}
    return {
        "kserve": Peer(
            "kserve",
            "KServe 0.21",
            ("kserve==0.21.0", ort),
            {**common, "kserve_server.py": KSERVE_SERVER},
            "kserve_server.py",
            ("grpc", "http"),
        ),
        "pytriton": Peer(
            "pytriton",
            "PyTriton 0.7",
            ("nvidia-pytriton==0.7.0", ort),
            {**common, "pytriton_server.py": PYTRITON_SERVER},
            "pytriton_server.py",
            own_libpython=True,
            shm_leftovers="pytrtion{pid}-*",  # sic
            stop_signal=signal.SIGINT,  # its serve() loop ends on KeyboardInterrupt only
        ),
        "mlserver": Peer(
            "mlserver",
            "MLServer 1.7.1",
            # uvloop 0.22 made get_event_loop() raise in MLServer 1.7.1's fresh worker processes.
            ("mlserver==1.7.1", "uvloop==0.21.0", ort),
            {
                **common,
                "mlserver_runtime.py": MLSERVER_RUNTIME,
                "mlserver_server.py": MLSERVER_SERVER,
            },
            "mlserver_server.py",
        ),
    }


def tail(text: str, lines: int = 3) -> str:
    """The last non-empty lines of an output, on one line (pip's location warnings dropped)."""
    kept = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.startswith("WARNING: Location")
    ]
    return " / ".join(kept[-lines:])[-400:] or "(no output)"


def failure_reason(log: Path) -> str:
    """The log's last error line (a traceback's last line, say), else its last lines."""
    text = log.read_text(errors="replace") if log.exists() else ""
    errors = [line for line in text.splitlines() if re.search(r"Error\b|Exception\b", line)]
    return errors[-1].strip()[-400:] if errors else tail(text)


def install(peer: Peer, workdir: Path) -> Path:
    """The peer's virtualenv python, created and pip-installed once per work folder."""
    venv = workdir / "venvs" / peer.key
    python = venv / "bin" / "python"
    stamp = venv / ".bench-peers-installed"
    wanted = " ".join(peer.packages)
    if stamp.exists() and stamp.read_text() == wanted:
        return python
    log = workdir / f"install-{peer.key}.log"
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *peer.packages],
    ]
    with log.open("w") as out:
        for step in steps:
            try:
                subprocess.run(
                    step,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=INSTALL_TIMEOUT_S,
                    check=True,
                )
            except (subprocess.SubprocessError, OSError) as err:
                raise PeerFailed(f"install failed ({err}): {failure_reason(log)}") from err
    stamp.write_text(wanted)
    return python


# --- servers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Launch:
    command: list[str]
    env: dict[str, str]
    port: int  # KServe v2 gRPC
    shm_leftovers: str | None = None  # /dev/shm glob ({pid}: the server's) to remove after it
    stop_signal: int = signal.SIGTERM  # what makes it shut down cleanly


def reachrank_launch(repo: Path, checkout: Path | None = None) -> Launch:
    """ReachRank's server; from ``checkout`` (another working tree, e.g. a git worktree of an
    older commit, run with this interpreter) instead of this one when given."""
    port = free_port()
    cli = [str(Path(sys.executable).with_name("reachrank"))]
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))
    if checkout is not None:
        cli = [sys.executable, "-c", "import sys; from clients.cli import main; sys.exit(main())"]
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(checkout), env.get("PYTHONPATH"))))
        env["NUMBA_CACHE_DIR"] = str(checkout / ".numba_cache")
    serve = ["serve", "--repo", str(repo), "--port", str(port), "--metrics-port", "-1"]
    return Launch([*cli, *serve], env, port)


def peer_launch(
    peer: Peer, python: Path, run_dir: Path, model: Model, settings: dict[str, int]
) -> Launch:
    """Write the peer's files and say how to start it on fresh ports."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, source in peer.files.items():
        (run_dir / name).write_text(source)
    ports = {name: free_port() for name in peer.ports}

    def spec(t: TensorSpec) -> dict[str, Any]:
        return {"name": t.name, "dtype": t.dtype, "datatype": DATATYPES[t.dtype], "dims": t.dims}

    config = {
        "name": model.name,
        "model": str(model.path),
        "inputs": [spec(t) for t in model.inputs],
        "output": spec(model.output),
        "ports": ports,
        "run_dir": str(run_dir),
        "model_config": model_config_bytes(model, settings["max_batch_size"]).hex(),
        **settings,
    }
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PEER_CONFIG=json.dumps(config), PYTHONPATH=str(run_dir), PYTHONUNBUFFERED="1")
    if peer.own_libpython:
        paths = (sysconfig.get_config_var("LIBDIR"), env.get("LD_LIBRARY_PATH"))
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in paths if p)
    command = [str(python), str(run_dir / peer.main)]
    return Launch(command, env, ports["grpc"], peer.shm_leftovers, peer.stop_signal)


def process_tree_cpu_s(root: int) -> float:
    """utime+stime (and that of reaped children) of ``root`` and all its descendants."""
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        parent[pid] = int(fields[1])  # field 4, ppid
        ticks[pid] = sum(int(f) for f in fields[11:15])  # fields 14-17: u/s time, cu/cs time
    children: dict[int, list[int]] = defaultdict(list)
    for pid, ppid in parent.items():
        children[ppid].append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += ticks.get(pid, 0)
        todo.extend(children.get(pid, ()))
    return total / os.sysconf("SC_CLK_TCK")


def exited(process: subprocess.Popen[bytes], timeout: float) -> bool:
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def stop(process: subprocess.Popen[bytes], stop_signal: int) -> None:
    """Ask the server to shut down (it stops its own children); SIGTERM its process group if
    it takes more than 20 s; at last SIGKILL whatever is left of the group."""
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(stop_signal)
    if not exited(process, 20):
        signal_group(process.pid, signal.SIGTERM)
        exited(process, 5)
    signal_group(process.pid, signal.SIGKILL)
    process.wait()


def remove_shm(pattern: str | None, pid: int) -> None:
    """Shared-memory blocks a server left behind (PyTriton's, when stopped mid-request)."""
    for path in Path("/dev/shm").glob(pattern.format(pid=pid)) if pattern else ():
        with contextlib.suppress(OSError):
            path.unlink()


def wait_ready(process: subprocess.Popen[bytes], port: int, model: str, log: Path) -> None:
    import tritonclient.grpc as triton

    deadline = time.monotonic() + READY_TIMEOUT_S
    with triton.InferenceServerClient(f"127.0.0.1:{port}") as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise PeerFailed(f"exited with {process.returncode}: {failure_reason(log)}")
            with contextlib.suppress(Exception):
                if client.is_model_ready(model):
                    return
            time.sleep(0.5)
    raise PeerFailed(f"not ready after {READY_TIMEOUT_S:.0f} s: {failure_reason(log)}")


@contextlib.contextmanager
def serving(launch: Launch, model: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A started server, ready to answer, stopped (with its children) on the way out."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            launch.command,
            env=launch.env,
            cwd=log.parent,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_ready(process, launch.port, model, log)
        yield process
    finally:
        stop(process, launch.stop_signal)
        remove_shm(launch.shm_leftovers, process.pid)


def check_answer(port: int, model: Model, expected: np.ndarray) -> str:
    """One ModelInfer of 4 zero rows; 'ok' when it matches onnxruntime in this process."""
    import tritonclient.grpc as triton

    feeds = []
    for name, array in zero_inputs(model, len(expected)).items():
        feeds.append(triton.InferInput(name, list(array.shape), DATATYPES[array.dtype.name]))
        feeds[-1].set_data_from_numpy(array)
    try:
        with triton.InferenceServerClient(f"127.0.0.1:{port}") as client:
            got = client.infer(model.name, feeds).as_numpy(model.output.name)
    except Exception as err:  # the measurement will say more
        return f"ModelInfer failed: {err}"
    if got is None or got.size != expected.size:
        return f"wrong output shape {None if got is None else got.shape}"
    error = float(np.max(np.abs(got.reshape(-1) - expected)))
    return "ok" if error < 1e-5 else f"answers differ from onnxruntime by {error:.2g}"


def reference_answer(model: Model, rows: int = 4) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model.path), providers=["CPUExecutionProvider"])
    (out,) = session.run([model.output.name], zero_inputs(model, rows))
    return np.asarray(out).reshape(-1)


# --- measuring -----------------------------------------------------------------------------


@dataclass
class Measurement:
    infer_per_s: float
    requests: int
    p50_ms: float
    p99_ms: float
    cpu_us_per_request: float
    server_cpu_cores: float
    wall_s: float
    load_avg: float


@dataclass
class PerfAnalyzer:
    binary: str
    env: dict[str, str]
    window_ms: int
    folder: Path

    def command(
        self, port: int, model: Model, batch: int, concurrency: int, out: Path
    ) -> list[str]:
        shapes = [f"{t.name}:{','.join(map(str, t.dims))}" for t in model.inputs]
        return [
            self.binary,
            "-i", "grpc",
            "-u", f"127.0.0.1:{port}",
            "-m", model.name,
            "--input-data", "zero",
            *(arg for shape in shapes for arg in ("--shape", shape)),
            "-b", str(batch),
            "--concurrency-range", f"{concurrency}:{concurrency}",
            "--measurement-interval", str(self.window_ms),
            # Three windows, whatever their spread: a fixed-length measurement (perf_analyzer's
            # search for stability rarely ends on a shared 2-core machine).
            "--stability-percentage", "1000",
            "--max-trials", "3",
            "-f", str(out),
        ]  # fmt: skip

    def measure(
        self, server: int, port: int, model: Model, batch: int, concurrency: int, label: str
    ) -> Measurement:
        out = self.folder / f"{label}-b{batch}-c{concurrency}.csv"
        command = self.command(port, model, batch, concurrency, out)
        cpu, start = process_tree_cpu_s(server), time.monotonic()
        timeout = 60 + 10 * self.window_ms / 1000
        try:
            done = subprocess.run(
                command, env=self.env, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as err:
            raise PeerFailed(f"perf_analyzer timed out after {timeout:.0f} s") from err
        cpu, wall = process_tree_cpu_s(server) - cpu, time.monotonic() - start
        with (self.folder / "perf_analyzer.log").open("a") as log:
            log.write(f"$ {' '.join(command)}\n{done.stdout}{done.stderr}\n")
        count = re.search(r"Request count: (\d+)", done.stdout)
        if done.returncode != 0 or count is None or not out.exists():
            raise PeerFailed(f"perf_analyzer: {tail(done.stdout + done.stderr, 2)}")
        with out.open() as f:
            (row,) = list(csv.DictReader(f))
        requests = int(count.group(1))
        return Measurement(
            infer_per_s=float(row["Inferences/Second"]),
            requests=requests,
            p50_ms=int(row["p50 latency"]) / 1000,
            p99_ms=int(row["p99 latency"]) / 1000,
            cpu_us_per_request=cpu * 1e6 / max(requests, 1),
            server_cpu_cores=cpu / wall,
            wall_s=wall,
            load_avg=os.getloadavg()[0],
        )


@dataclass
class Result:
    """One server over all rounds."""

    key: str
    title: str
    failure: str | None = None
    install_s: float | None = None
    start_s: list[float] = field(default_factory=list)
    check: list[str] = field(default_factory=list)
    levels: dict[str, list[Measurement]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))


def level_key(batch: int, concurrency: int) -> str:
    return f"b{batch}-c{concurrency}"


def run_server(
    result: Result, launch: Launch, model: Model, perf: PerfAnalyzer, expected: np.ndarray
) -> None:
    """Start one server, check its answer, warm it up, measure every level, stop it."""
    log = perf.folder / "logs" / f"{result.key}.log"
    log.parent.mkdir(exist_ok=True)
    start = time.monotonic()
    print(f"  {result.title}: starting", flush=True)
    with serving(launch, model.name, log) as process:
        result.start_s.append(round(time.monotonic() - start, 1))
        result.check.append(check_answer(launch.port, model, expected))
        print(f"  ready in {result.start_s[-1]} s; answer: {result.check[-1]}", flush=True)
        warm = PerfAnalyzer(perf.binary, perf.env, 500, perf.folder)
        with contextlib.suppress(PeerFailed):
            warm.measure(process.pid, launch.port, model, max(BATCHES), min(CONCURRENCY), "warm")
        for batch in BATCHES:
            for concurrency in CONCURRENCY:
                key = level_key(batch, concurrency)
                try:
                    m = perf.measure(process.pid, launch.port, model, batch, concurrency, key)
                except PeerFailed as err:
                    result.errors[key].append(str(err))
                    print(f"    {key}: {err}", flush=True)
                    continue
                result.levels[key].append(m)
                print(
                    f"    {key}: {m.infer_per_s:,.0f} infer/s, {m.cpu_us_per_request:,.0f} µs CPU"
                    f"/request, p99 {m.p99_ms:.1f} ms (load {m.load_avg:.1f})",
                    flush=True,
                )


# --- reporting -----------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def cell(result: Result, key: str) -> str:
    if result.failure:
        return f"failed: {result.failure[:120]}"
    runs = result.levels.get(key)
    if not runs:
        return f"error: {(result.errors.get(key) or ['not run'])[-1][:120]}"
    rate = median([m.infer_per_s for m in runs])
    cpu = median([m.cpu_us_per_request for m in runs])
    p99 = median([m.p99_ms for m in runs])
    return f"{rate:,.0f} ({cpu:,.0f} µs) {p99:.1f}"


def spread(result: Result, key: str) -> str:
    """How far the rounds of one cell lie apart: (max - min) / median of infer/s, of CPU per
    request and of p99, in percent."""
    runs = result.levels.get(key, [])
    if len(runs) < 2:
        return "-"
    parts = []
    for name in ("infer_per_s", "cpu_us_per_request", "p99_ms"):
        values = [getattr(m, name) for m in runs]
        parts.append(f"{100 * (max(values) - min(values)) / max(median(values), 1e-9):.0f}")
    return " / ".join(parts) + " %"


def spread_table(results: list[Result]) -> str:
    head = ["batch", "in flight", *(r.title for r in results)]
    lines = ["| " + " | ".join(head) + " |", "|---:|---:|" + "---|" * len(results)]
    for batch in BATCHES:
        for concurrency in CONCURRENCY:
            cells = [spread(r, level_key(batch, concurrency)) for r in results]
            lines.append(f"| {batch} | {concurrency} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(results: list[Result]) -> str:
    head = ["batch", "in flight", *(r.title for r in results)]
    lines = ["| " + " | ".join(head) + " |", "|---:|---:|" + "---|" * len(results)]
    for batch in BATCHES:
        for concurrency in CONCURRENCY:
            cells = [cell(r, level_key(batch, concurrency)).replace("|", "/") for r in results]
            lines.append(f"| {batch} | {concurrency} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes(results: list[Result]) -> list[str]:
    """What the table's cells do not say: answers that differ, rounds that failed."""
    lines = []
    for r in results:
        lines += [f"- {r.title}: answer check: {c}" for c in sorted(set(r.check) - {"ok"})]
        lines += [f"- {r.title}, {k}: {e}" for k, es in r.errors.items() for e in es]
        if r.failure:
            lines.append(f"- {r.title}: {r.failure}")
    return lines


def summary(result: Result) -> dict[str, Any]:
    levels = {
        key: {
            "rounds": [asdict(m) for m in runs],
            "median": {
                name: median([getattr(m, name) for m in runs])
                for name in ("infer_per_s", "cpu_us_per_request", "p50_ms", "p99_ms")
            },
        }
        for key, runs in result.levels.items()
    }
    return {
        "title": result.title,
        "failure": result.failure,
        "install_s": result.install_s,
        "start_s": result.start_s,
        "answer_check": result.check,
        "levels": levels,
        "errors": dict(result.errors),
    }


# --- main ----------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repo", type=Path, help="model repository [model_repo if it exists, else train one]"
    )
    parser.add_argument("--model", default="ctr")
    parser.add_argument("--seconds", type=float, help="perf_analyzer window (3 per level)")
    parser.add_argument("--rounds", type=int, help="times each server is measured")
    parser.add_argument("--quick", action="store_true", help="1 s windows, 1 round")
    parser.add_argument(
        "--peers", default="kserve,pytriton,mlserver", help="comma-separated, '' for none"
    )
    parser.add_argument("--workdir", type=Path, help="work folder to keep (venvs are reused)")
    parser.add_argument(
        "--before",
        type=Path,
        help="also serve ReachRank from this checkout (e.g. `git worktree add DIR COMMIT`)",
    )
    args = parser.parse_args()
    unknown = set(filter(None, args.peers.split(","))) - set(peers())
    if unknown:
        parser.error(f"unknown peer(s) {sorted(unknown)}; known: {sorted(peers())}")
    args.seconds = args.seconds or (1.0 if args.quick else 3.0)
    args.rounds = args.rounds or (1 if args.quick else 2)
    return args


def settings(model: Path) -> dict[str, int]:
    """ReachRank's effective thread and batch settings for ``model`` (environment included;
    the automatic intra-op thread count is the one ReachRank picks for this graph)."""
    import onnxruntime as ort

    from engine.runtime import auto_intra_threads
    from engine.settings import Settings

    s = Settings()
    intra = s.ort_intra_op_threads
    if intra is None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        one = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        intra = auto_intra_threads(one, model)
    return {
        "intra_op_threads": intra,
        "inter_op_threads": s.ort_inter_op_threads,
        "max_batch_size": s.max_batch_rows,
    }


def prepare(
    args: argparse.Namespace, workdir: Path, model: Model, config: dict[str, int]
) -> tuple[list[Result], dict[str, Callable[[], Launch]]]:
    """Install the peers; say how to start every server on fresh ports (a peer that failed to
    install gets no launcher)."""
    table_ = peers()
    results = [Result("reachrank", "ReachRank")]
    launches: dict[str, Callable[[], Launch]] = {
        "reachrank": functools.partial(reachrank_launch, args.repo)
    }
    if args.before is not None:
        results.append(Result("before", f"ReachRank {args.before.name}"))
        launches["before"] = functools.partial(reachrank_launch, args.repo, args.before.resolve())
    for key in [k for k in args.peers.split(",") if k]:
        peer = table_[key]
        result = Result(key, peer.title)
        results.append(result)
        print(f"installing {peer.title}: {' '.join(peer.packages)}", flush=True)
        start = time.monotonic()
        try:
            python = install(peer, workdir)
        except PeerFailed as err:
            result.failure = str(err)
            print(f"  {err}", flush=True)
            continue
        result.install_s = round(time.monotonic() - start, 1)
        run_dir = workdir / "run" / key
        launches[key] = functools.partial(peer_launch, peer, python, run_dir, model, config)
    return results, launches


def run_rounds(
    args: argparse.Namespace,
    results: list[Result],
    launches: dict[str, Callable[[], Launch]],
    model: Model,
    perf: PerfAnalyzer,
) -> None:
    expected = reference_answer(model)
    for round_ in range(args.rounds):
        order = results if round_ % 2 == 0 else results[::-1]
        print(f"round {round_ + 1} of {args.rounds}", flush=True)
        for result in order:
            if result.key not in launches:
                continue
            try:
                run_server(result, launches[result.key](), model, perf, expected)
            except PeerFailed as err:
                print(f"  {result.title}: {err}", flush=True)
                if result.levels:  # measured in an earlier round: keep those figures
                    result.errors[f"round {round_ + 1}"].append(str(err))
                else:
                    result.failure = str(err)
                    launches.pop(result.key)


def terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the servers' clean-up


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, terminate)
    from bench.kserve import perf_analyzer, train_repository

    binary, env = perf_analyzer()
    RESULTS.mkdir(exist_ok=True)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if args.workdir:
            workdir = args.workdir.resolve()
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="peers-")))
        if args.repo is None:
            demo = ROOT / "model_repo"
            args.repo = demo if demo.is_dir() else train_repository(workdir)
        args.repo = args.repo.resolve()
        model = load_model(args.repo, args.model)
        config = settings(model.path)
        results, launches = prepare(args, workdir, model, config)
        perf = PerfAnalyzer(binary, env, int(args.seconds * 1000), workdir)
        (workdir / "perf_analyzer.log").write_text("")
        run_rounds(args, results, launches, model, perf)
    report = {
        "model": {"name": model.name, "version": model.version, "path": str(model.path)},
        "inputs": {t.name: [t.dtype, *t.dims] for t in model.inputs},
        "batches": BATCHES,
        "concurrency": CONCURRENCY,
        "window_s": args.seconds,
        "rounds": args.rounds,
        "onnxruntime": {**config, "peers": onnxruntime_pin()},
        "cores": os.cpu_count(),
        "duration_s": round(time.monotonic() - started),
        "servers": {r.key: summary(r) for r in results},
    }
    (RESULTS / "peers.json").write_text(json.dumps(report, indent=1))
    print(
        f"\nperf_analyzer 2.51.0, KServe v2 gRPC, model {model.name} v{model.version} "
        f"(inputs {', '.join(f'{t.name} {t.dtype}{[-1, *t.dims]}' for t in model.inputs)}), "
        f"{args.rounds} round(s) of 3 x {args.seconds:g} s windows per level, onnxruntime "
        f"intra-op {config['intra_op_threads']} / inter-op {config['inter_op_threads']} threads "
        f"everywhere. Cells: infer/s (server CPU µs per request) p99 ms.\n"
    )
    print(table(results))
    if args.rounds > 1:
        print("\nSpread of the rounds, (max - min) / median: infer/s / CPU per request / p99\n")
        print(spread_table(results))
    print("\n".join(notes(results)))
    reachrank = results[0]
    return 1 if reachrank.failure or reachrank.errors else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the servers are already stopped
        sys.exit(130)
