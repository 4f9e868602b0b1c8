#!/usr/bin/env bash
# The GPU checks and measurements, about 11 minutes in all on one H100/H200 (fewer steps: less) (needs torch, numpy, pandas,
# pytest; no MLflow or Hydra). Results go to $OUT (or ./gpu_check): gpu_check.log (everything),
# summary.txt (the tables) and one JSON per training measurement.
#   0. the CUDA tests of the loop, precision and generation (bf16 fit, resume, pinned batches,
#      device per local rank, KV-cache tokens equal to recomputation on CUDA)
#   1. Kronos-small predictor, bf16, batch 64, 511 tokens: bare step vs the fit loop, eager
#   2. the same with torch.compile
#   3. Kronos-base predictor, bf16, compile: MFU
#   4. the tokenizer phase (Kronos-Tokenizer-base), bf16, eager and compiled: bare step vs loop
#   5. generation: KV cache vs recomputation, Kronos-small, context 400
# Arguments pick steps by name (tests small_eager small_compile base_compile tokenizer_eager
# tokenizer_compile generation); none runs them all.
set -uo pipefail
steps=" ${*:-tests small_eager small_compile base_compile tokenizer_eager tokenizer_compile generation} "
want() { [[ $steps == *" $1 "* ]]; }
cd "$(dirname "$0")/.."
out="${OUT:-gpu_check}"
mkdir -p "$out"
log="$out/gpu_check.log"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$log" "$out/summary.txt"
python -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" 2>&1 | tee -a "$log" "$out/summary.txt"
if want tests; then
  echo "== tests" | tee -a "$out/summary.txt"
  timeout 120 python -m pytest -q -p no:cacheprovider tests/train/test_gpu.py tests/train/test_precision.py \
    tests/model/test_model_generation.py -rs 2>&1 | tee -a "$log" | tail -4 | tee -a "$out/summary.txt"
fi
common=(--device cuda --precision bf16 --tokenizer base --batch 64 --lookback 511 --predict 1
        --train-rows 12000 --val-rows 1200 --steps 30 --warmup 10 --log-interval 10 --workers 0)
run() {  # name, limit in seconds, args...
  local name=$1 limit=$2; shift 2
  want "$name" || return 0
  echo "== $name" | tee -a "$log" "$out/summary.txt"
  # Into a file, not a pipe: torch.compile's worker processes outlive a timed-out run and would
  # hold a pipe open (and the script with it) long after the limit.
  timeout -k 5 "$limit" python benchmarks/bench_train.py "${common[@]}" "$@" --json "$out/$name.json" \
    > "$out/$name.out" 2>&1
  cat "$out/$name.out" >> "$log"
  grep -v '^{' "$out/$name.out" | tee -a "$out/summary.txt"
  rm -f "$out/$name.out"
}
run small_eager 60 --phase predictor --arch small
run small_compile 120 --phase predictor --arch small --compile --epochs 2
run base_compile 200 --phase predictor --arch base --compile --train-rows 8000 --epochs 2
run tokenizer_eager 50 --phase tokenizer --train-rows 6000 --epochs 2
run tokenizer_compile 90 --phase tokenizer --compile --train-rows 6000 --epochs 2
if want generation; then
  echo "== generation" | tee -a "$log" "$out/summary.txt"
  PYTHONPATH=. timeout -k 5 60 python benchmarks/bench_generate.py --device cuda --arch small --repeats 3 2>&1 \
    | tee -a "$log" | tee -a "$out/summary.txt"
fi
echo "results in $out"
