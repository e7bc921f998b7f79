#!/usr/bin/env bash
# Everything loopkit needs a GPU for, in one command: GPU machines are lent by the minute, so one call checks,
# sanitizes and times it all, within 10 minutes (the timeouts below add up to 570 s). Needs python3 with CUDA PyTorch, pytest and pytest-benchmark; installs nothing.
#
#   OUT=gpu-results bash benchmarks/gpu_session.sh
#
# Writes under $OUT (eight files at most): env.txt, tests.log, sanitizer.log, compile.json, optim.json,
# optim.log, sweep.json, summary.txt (the tables for docs/benchmarks.md, from benchmarks/summarize_optim.py).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
bench=(python3 -m pytest -p no:cacheprovider --benchmark-only --benchmark-columns=median,iqr,rounds)

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
} >"$OUT/env.txt" 2>&1

# 1. Correctness on the GPU: parity with torch.optim (whole beta range, maximize, misaligned views), sync-free
#    scheduled and GradScaler training, launches on the parameters' device and stream, CUDA-graph replay.
timeout 120 python3 -m pytest -p no:cacheprovider -q -rs tests/test_optim.py tests/test_loop_learner.py \
  tests/test_scheduling_scheduler.py 2>&1 | tee "$OUT/tests.log"

# 2. Out-of-bounds and misaligned accesses under compute-sanitizer (memcheck), exit status 1 on any error: the
#    vector path (parity), the scalar path of misaligned views, low precision, GradScaler's skip and unscale, the
#    stream/device placement and the CUDA-graph replay.
sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
timeout 150 "$sanitizer" --tool memcheck --error-exitcode 1 --print-limit 20 python3 -m pytest -p no:cacheprovider -q \
  "tests/test_optim.py::test_adamw_matches_torch_adamw_with_a_moving_schedule[cuda]" \
  "tests/test_optim.py::test_misaligned_views_take_the_scalar_path_on_the_gpu" \
  "tests/test_optim.py::test_low_precision_params_take_one_rounding_of_the_fp32_step[cuda-dtype0]" \
  "tests/test_optim.py::test_gradscaler_steps_unscale_and_skip_on_the_device_as_torch_skips[cuda-0.3]" \
  "tests/test_optim.py::test_the_step_runs_on_the_parameters_device_and_its_current_stream" \
  "tests/test_optim.py::test_the_step_replays_in_a_cuda_graph_while_the_schedule_moves" >"$OUT/sanitizer.log" 2>&1
echo "compute-sanitizer exit $? (0: clean; 1: an error above; 124: timed out; 127: not installed)" >>"$OUT/sanitizer.log"
tail -3 "$OUT/sanitizer.log"

# 3. Timing: compile time, the optimizer suite against torch.optim, then the tuning sweep.
timeout 30 "${bench[@]}" benchmarks/bench_compile.py --benchmark-json="$OUT/compile.json" >/dev/null 2>&1
timeout 150 "${bench[@]}" -s benchmarks/bench_optim.py -k "test_gpu_step or test_gpu_amp_step" --benchmark-json="$OUT/optim.json" \
  2>&1 | tee "$OUT/optim.log"
timeout 120 "${bench[@]}" benchmarks/bench_optim.py -k test_gpu_sweep --benchmark-json="$OUT/sweep.json" >/dev/null 2>&1

python3 benchmarks/summarize_optim.py "$OUT"/optim.json "$OUT"/sweep.json "$OUT"/compile.json \
  | tee "$OUT/summary.txt"
