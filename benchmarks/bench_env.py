"""What the benchmarks share: the machine they ran on, the peak they are measured against, and encoders of
the paper's shapes built from a config (random weights, no download).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from stilts.analysis.provenance import cpuinfo  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# encoder shapes (layers, hidden, heads, feed-forward); the vocabulary is the tokenizer's
SHAPES = {"roberta-large": (24, 1024, 16, 4096), "roberta-base": (12, 768, 12, 3072), "tiny": (2, 64, 2, 128)}


def quiet() -> None:
    """No progress bars or load reports: the output is the table."""
    import datasets
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    datasets.disable_progress_bars()


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def device_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU {cpuinfo()[0]}"


def describe_cpu() -> str:
    """The processor: model, cores, the flags that decide bf16 speed (and sha_ni, hashing's)."""
    model, flags = cpuinfo()
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "sha_ni") if f in flags]
    return f"CPU {model}, {os.cpu_count()} cores, flags {' '.join(simd) or 'none of avx2/avx512/amx/sha_ni'}"


def describe_machine() -> str:
    """One line: the processor (model, cores, the flags that decide bf16 speed) and the GPU, if any."""
    import transformers

    line = (f"{describe_cpu()}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads, "
            f"{torch.backends.cpu.get_cpu_capability()}), transformers {transformers.__version__}")
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        line += (f"; GPU {p.name} ({p.total_memory / 2 ** 30:.0f} GiB, {p.multi_processor_count} SMs), "
                 f"CUDA {torch.version.cuda}")
    return line


def matmul_peak(dtype: torch.dtype, dev: str, n: int | None = None, seconds: float = 2.0) -> float:
    """FLOP/s of a dense n×n×n product on random data (8192³ on GPUs: smaller ones read far below the peak)."""
    n = n or (8192 if dev == "cuda" else 2048)
    a = torch.randn(n, n, device=dev).to(dtype)
    b = torch.randn(n, n, device=dev).to(dtype)
    for _ in range(3):
        a @ b
    if dev == "cuda":
        torch.cuda.synchronize()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
        if dev == "cuda" and count % 8 == 0:
            torch.cuda.synchronize()
    if dev == "cuda":
        torch.cuda.synchronize()
    return 2 * n ** 3 * count / (time.perf_counter() - start)


def datasheet_peak() -> tuple[str, float] | None:
    """(GPU class, dense bf16 TFLOP/s) from stilts plan's table, when the GPU's name contains a class there."""
    if not torch.cuda.is_available():
        return None
    from stilts.plan import GPU_PEAK_TFLOPS

    name = torch.cuda.get_device_name(0).upper().replace(" ", "")
    for gpu in sorted(GPU_PEAK_TFLOPS, key=len, reverse=True):  # "H100" before "H10"-like prefixes
        if gpu in name:
            return gpu, GPU_PEAK_TFLOPS[gpu]
    return None


def embedded_tokenizer() -> str:
    from stilts.config import EMBEDDED_MODEL
    from stilts.modeling import resolve_model_name

    return resolve_model_name(EMBEDDED_MODEL)


def shape_model(shape: str, tokenizer: str, out: Path) -> Path:
    """A random-init RoBERTa-type encoder of `shape` with `tokenizer`'s vocabulary, saved to `out` with the
    tokenizer. Segment embeddings for 2 types: the embedded tokenizer is BERT's, which sets token_type_ids."""
    from transformers import AutoTokenizer, RobertaConfig, RobertaModel

    layers, hidden, heads, ff = SHAPES[shape]
    tok = AutoTokenizer.from_pretrained(tokenizer)
    config = RobertaConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers,
                           num_attention_heads=heads, intermediate_size=ff, max_position_embeddings=514,
                           type_vocab_size=2, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    RobertaModel(config, add_pooling_layer=False).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def write_csv(path: Path, rows: list[dict]) -> None:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def compile_counters() -> str:
    """Graphs compiled, graph breaks and CUDA-graph skips in this process (what to look at when a compiled
    step is slow)."""
    from torch._dynamo.utils import counters

    breaks = sum(counters["graph_break"].values())
    return (f"compiled graphs {counters['stats'].get('unique_graphs', 0)}, graph breaks {breaks}, "
            f"cudagraph skips {counters['inductor'].get('cudagraph_skips', 0)}")
