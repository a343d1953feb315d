"""Grid throughput: the whole study one stage at a time (`dvc repro`) against Dask running cells side by side.

    python benchmarks/grid_throughput.py                  # the project's study, in two scratch clones
    python benchmarks/grid_throughput.py --jobs 4         # 4 cells at once in the Dask arm
    python benchmarks/grid_throughput.py --gpu            # also k = 1, 2, 4 cells per GPU (needs CUDA)

CPU arms: two git clones of the project at HEAD, outputs and dvc.lock files removed, each with its own
mlflow.db; `stilts study` (= stilts pipeline + dvc repro) in one, `stilts study --cluster local --jobs N`
in the other. Both include starting the warm cell server. The machine's CPU, core count and load average
are printed, since other work on a shared machine slows either arm.

GPU arm (`--gpu`, when CUDA is available): a random-init encoder of RoBERTa-large's shape (24 layers,
1,024 hidden, 16 heads; BERT layout, MiniLM's tokenizer) trained on the study's target and probe tasks
from the pretrained model (baseline cells only), on one GPU with `--cells-per-gpu k` for k = 1, 2, 4;
the same cells each time, so the wall times compare directly.

Last line: grid_speedup=<sequential wall / Dask wall> (CPU arms).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import bounded
import yaml


def _machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from stilts.train import resolve_mixed_precision

    return f"{cpu}, {os.cpu_count()} cores, train.mixed_precision auto = {resolve_mixed_precision('auto')}"


STUDY_LIMIT_S = 6 * 3600  # a study still running after this is taken as hung


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def _clone(root: Path, dest: Path, params: dict | None = None) -> Path:
    bounded.run(["git", "clone", "-q", root, dest], limit=600, check=True)
    for lock in list(dest.glob("dvc.lock")) + list(dest.glob("pipelines/*/dvc.lock")):
        lock.unlink()
    shutil.rmtree(dest / "reports", ignore_errors=True)
    if params is not None:
        (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


def _timed(cwd: Path, *cmd: str, env: dict | None = None, limit: float = STUDY_LIMIT_S) -> float:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", **(env or {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    # this interpreter's stilts and dvc, also when the venv is not activated
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    start = time.perf_counter()
    out = bounded.run(cmd, limit=limit, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return wall


def _large_model(path: Path) -> Path:
    """A random encoder of RoBERTa-large's shape, with the embedded encoder's tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from stilts.config import EMBEDDED_MODEL
    from stilts.modeling import resolve_model_name

    tok = AutoTokenizer.from_pretrained(resolve_model_name(EMBEDDED_MODEL))
    tok.save_pretrained(path)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                        intermediate_size=4096, max_position_embeddings=514)
    BertModel(config).save_pretrained(path, safe_serialization=True)
    return path


def _gpu_params(root: Path, model: Path, steps: int) -> dict:
    """The study's baseline cells (every target and probe task, 2 restarts) on the large model, batch 4."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["model"] = {"name": str(model), "attn_implementation": "sdpa"}
    params["tasks"]["intermediate"] = []
    params["study"] |= {"size_sweep_tasks": [], "size_sweep_sizes": [], "restarts": 2}
    params["sweep"]["enabled"] = False
    params["task_overrides"] = {}
    params["train"] |= {"batch_size": 4, "max_steps": steps, "max_seq_length": 128, "mixed_precision": "bf16"}
    return params


def _gpu_arm(root: Path, scratch: Path, steps: int) -> None:
    import torch

    if not torch.cuda.is_available():
        print("gpu: no CUDA device; skipped")
        return
    print(f"gpu: {torch.cuda.get_device_name(0)}")
    params = _gpu_params(root, _large_model(scratch / "roberta-large-shape"), steps)
    walls = {}
    for k in (1, 2, 4):
        copy = _clone(root, scratch / f"gpu-k{k}", params)
        walls[k] = _timed(copy, "stilts", "study", "--cluster", "local", "--devices", "0", "--cells-per-gpu", str(k))
        print(f"gpu cells_per_gpu={k}: {walls[k]:.1f} s ({walls[1] / walls[k]:.2f}x vs k=1)", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path("."), help="the project (a git repository)")
    ap.add_argument("--jobs", type=int, default=2, help="cells at once in the Dask arm")
    ap.add_argument("--gpu", action="store_true", help="also time k = 1, 2, 4 cells per GPU (needs CUDA)")
    ap.add_argument("--gpu-steps", type=int, default=200, help="optimizer steps per cell in the GPU arm")
    ap.add_argument("--keep", action="store_true", help="keep the scratch clones")
    args = ap.parse_args(argv)
    root = args.root.resolve()
    scratch = Path(tempfile.mkdtemp(prefix="stilts-grid-"))
    print(f"machine: {_machine()}; {_load()}", flush=True)
    try:
        seq = _clone(root, scratch / "sequential")
        grid = _clone(root, scratch / "dask")
        t_seq = _timed(seq, "stilts", "study")
        print(f"sequential (stilts study = dvc repro): {t_seq:.1f} s; {_load()}", flush=True)
        t_grid = _timed(grid, "stilts", "study", "--cluster", "local", "--jobs", str(args.jobs))
        print(f"dask (stilts study --cluster local --jobs {args.jobs}): {t_grid:.1f} s; {_load()}", flush=True)
        if args.gpu:
            _gpu_arm(root, scratch, args.gpu_steps)
        print(f"grid_speedup={t_seq / t_grid:.2f}")
    finally:
        if args.keep:
            print(f"scratch clones kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
