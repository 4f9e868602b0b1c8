#!/usr/bin/env bash
# The GPU measurements of issue 12 in under 6 minutes on one H100/H200 (needs torch, numpy, pandas;
# no MLflow or Hydra). Results go to $OUT (or ./gpu_check) as JSON plus the printed tables.
#   1. Kronos-small predictor, bf16, batch 64, 511 tokens: bare step vs the fit loop, eager
#   2. the same with torch.compile
#   3. Kronos-base predictor, bf16, compile: MFU
#   4. the tokenizer phase (Kronos-Tokenizer-base), bf16, compile: bare step vs loop
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu_check}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.txt" 2>&1
common=(--device cuda --precision bf16 --tokenizer base --batch 64 --lookback 511 --predict 1
        --train-rows 12000 --val-rows 1200 --steps 30 --warmup 10 --log-interval 10 --workers 0)
run() {  # name, limit in seconds, args...
  local name=$1 limit=$2; shift 2
  echo "== $name" | tee -a "$out/summary.txt"
  timeout "$limit" python benchmarks/bench_train.py "${common[@]}" "$@" --json "$out/$name.json" \
    2>&1 | tee "$out/$name.log" | grep -v '^{' | tee -a "$out/summary.txt"
}
run small_eager 60 --phase predictor --arch small
run small_compile 100 --phase predictor --arch small --compile
run base_compile 100 --phase predictor --arch base --compile --train-rows 8000
run tokenizer_compile 50 --phase tokenizer --compile --train-rows 6000
echo "results in $out"
