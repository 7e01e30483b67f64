#!/usr/bin/env bash
# The benchmark on a GPU machine (the workplace's device tool), from a bare box:
# that image has torch and pytorch_lightning but not hydra-core/omegaconf/antlr4
# (carried as wheels in .whl/) nor MLflow (so `--tracking csv`), and no network
# (MNIST's .gz files are carried in .gpudata/). Results go to $OUT (or
# bench-results/gpu). Usage there: bash benchmarks/gpu_run.sh
# Prepared here (both folders listed in .git/info/exclude, named in the tool's `carry`):
#   .venv/bin/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux2014_x86_64 -d .whl hydra-core==1.3.8 omegaconf==2.3.1
#   .venv/bin/python -m pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3
#   mkdir -p .gpudata && cp ../shared/data/mnist/*.gz .gpudata/
set -uo pipefail
OUT=${OUT:-bench-results/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
{ nvidia-smi; python3 -V; python3 -c "import torch, pytorch_lightning as pl; print('torch', torch.__version__, 'pl', pl.__version__, torch.cuda.get_device_name())"; } 2>&1 | tee "$OUT/env.txt"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
COMMON=(--device cuda --tracking csv --data-dir /tmp/mnist --mirror "file://$PWD/.gpudata/" --no-startup
        --batches "${BATCHES:-215}" --repeats "${REPEATS:-3}" --matmul-n 8192)
run() { local name=$1; shift; echo "== $name: $*"; timeout "${STEP_TIMEOUT:-150}" python3 benchmarks/bench.py "${COMMON[@]}" "$@" --json "$OUT/$name.json" 2>&1 | grep -v "^\s*$" | grep -v "it/s\]" | sed "/^{\$/,\$d" | tail -12; }
RUNS=${RUNS:-bf16 fp32 tf32 bf16_b4096}  # pick some: RUNS="bf16 fp32" bash benchmarks/gpu_run.sh
for r in $RUNS; do
  case $r in
    bf16) run bf16 "$@" ;;                                     # trainer=gpu: bf16-mixed, data on the GPU
    fp32) run fp32 --precision 32-true "$@" ;;                 # plain fp32
    tf32) run tf32 --precision 32-true --tf32 "$@" ;;          # fp32 with TF32 matmuls
    bf16_b4096) run bf16_b4096 --batch-size 4096 --batches 13 "$@" ;;  # launch overhead amortised
    bf16_compile) run bf16_compile --override performance.compile=true "$@" ;;
  esac
done
ls -la "$OUT"
