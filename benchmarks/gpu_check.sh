#!/usr/bin/env bash
# One prepared GPU check: on one H100/H200, ≤ 8 minutes, no network, nothing installed from it.
#   1. parity       the compiled step (length buckets, torch.compile, CUDA graphs) trains like the eager one
#   2. throughput   RoBERTa-large shape (random init), RTE, max length 256, batch 32 and 4:
#                   stilts defaults vs stilts with the eager step vs tuned HF Trainer vs run_glue defaults
#   3. concurrency  1, 2 and 4 cells at once on the GPU (batch 4): aggregate examples/s
#   4. summary      $OUT/gpu_check.md (the table, with the targets, and whether any run's compiled step
#                   fell back to the eager one: then the exit status is 1) and $OUT/calibration.csv (rows for
#                   src/stilts/gpu_calibration.csv, which `stilts plan` reads)
# Results go to $OUT when set (a folder the caller collects), else .gpu_check/out; each step's log beside them.
#
# Prepare once, on a machine with pip and ../shared/data: wheels of what the GPU machine lacks (datasets, dill,
# multiprocess) into .whl/, the embedded model's tokenizer and RTE into .gpu_check/ (both in .gitignore):
#     bash benchmarks/gpu_check.sh --prepare
# Then on the GPU machine, from the repository root, with .whl/ and .gpu_check/ copied along (≤ 510 s):
#     bash benchmarks/gpu_check.sh
# Rehearsal on CPU with a tiny shape and the generated syn_rte (under a minute; tests/test_gpu_check.py):
#     bash benchmarks/gpu_check.sh --dry-run
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=gpu
case "${1:-}" in
  "") ;;
  --dry-run) MODE=dry ;;
  --prepare) MODE=prepare ;;
  *) echo "usage: bash benchmarks/gpu_check.sh [--dry-run | --prepare]" >&2; exit 2 ;;
esac
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}

if [ "$MODE" = prepare ]; then
  set -e
  pins=$(grep -iE '^(datasets|dill|multiprocess)==' requirements.lock)
  # shellcheck disable=SC2086
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl $pins
  mkdir -p .gpu_check/tokenizer .gpu_check/data/rte
  tok=$(PYTHONPATH=src:benchmarks "$PY" -c 'import bench_env; print(bench_env.embedded_tokenizer())')
  for f in tokenizer.json tokenizer_config.json special_tokens_map.json vocab.txt config.json; do
    [ -f "$tok/$f" ] && cp "$tok/$f" .gpu_check/tokenizer/
  done
  cp ../shared/data/rte/train.jsonl ../shared/data/rte/val.jsonl .gpu_check/data/rte/
  du -sh .whl .gpu_check
  echo "prepared: copy the repository with .whl/ and .gpu_check/ to the GPU machine, then run 'bash benchmarks/gpu_check.sh' there"
  exit 0
fi

OUT_DIR=${OUT:-$PWD/.gpu_check/out}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ "$MODE" = gpu ] && compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/stilts-site \
    .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/stilts-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}

if [ "$MODE" = gpu ]; then
  DATA=$([ -d .gpu_check/data/rte ] && echo .gpu_check/data || echo ../shared/data)
  TOK=$([ -f .gpu_check/tokenizer/tokenizer_config.json ] && echo "--tokenizer .gpu_check/tokenizer")
  SHAPE="--shape roberta-large $TOK"
  BENCH="--task rte --data-dir $DATA --max-length 256 --batch-size 32 4 --steps 40 80 --repeats 2"
  CELLS="--task rte --data-dir $DATA --max-length 256 --batch-size 4 --steps 60 --cells 1 2 4"
  PARITY="--shape tiny $TOK --task rte --data-dir $DATA --precision no"
  LIMITS=(75 260 130)  # seconds; with start-up and the summary, under 8 minutes
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv
else  # the same steps on CPU, tiny and short
  export CUDA_VISIBLE_DEVICES=""
  SHAPE="--shape tiny"
  BENCH="--task syn_rte --max-length 64 --batch-size 8 4 --steps 6 6 --repeats 1"
  CELLS="--task syn_rte --max-length 64 --batch-size 4 --steps 6 --cells 1 2"
  PARITY="--shape tiny --task syn_rte --max-length 64 --steps 4"
  LIMITS=(300 300 300)  # generous: CPUs in CI are slow and shared
fi
"$PY" -c 'import torch, transformers, accelerate, datasets, stilts
print("# gpu_check:", "torch", torch.__version__, "transformers", transformers.__version__, "accelerate",
      accelerate.__version__, "datasets", datasets.__version__, "cuda", torch.cuda.is_available())' || exit 1

status=0
step() {  # name, time limit (s), command...: runs it with its log under $OUT_DIR; a failure is reported, not fatal
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  echo "## $name (limit ${limit}s)"
  timeout --signal=INT --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT_DIR/$name.log" | grep -v '^#   '
  local rc=${PIPESTATUS[0]}
  echo "## $name: exit $rc after $((SECONDS - t0)) s"
  [ "$rc" = 0 ] || status=1
}
# shellcheck disable=SC2086
step parity "${LIMITS[0]}" "$PY" benchmarks/compiled_parity.py $PARITY
# shellcheck disable=SC2086
step throughput "${LIMITS[1]}" "$PY" benchmarks/train_throughput.py $SHAPE $BENCH \
  --arms stilts stilts_eager_step trainer_tuned run_glue --out "$OUT_DIR/throughput.csv"
# shellcheck disable=SC2086
step concurrency "${LIMITS[2]}" "$PY" benchmarks/concurrent_cells.py $SHAPE $CELLS --out "$OUT_DIR/concurrency.csv"
"$PY" benchmarks/gpu_check_summary.py "$OUT_DIR" || status=1
echo "gpu_check: $([ $status = 0 ] && echo ok || echo 'a step FAILED (see its log)'); results in $OUT_DIR"
exit $status
