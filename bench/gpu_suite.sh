#!/usr/bin/env bash
# The GPU benchmarks in one run (under 6 minutes on one H200 before the two pre-training checks below were added;
# those are capped at 2 + 4 minutes):
#
#   bash bench/gpu_suite.sh OUTDIR              # on the GPU machine
#   bash bench/gpu_suite.sh OUTDIR --dry-run    # the same script on a CPU at tiny sizes: checks all but CUDA
#
# Writes OUTDIR/pretrain_step_<gpu>.json, OUTDIR/encode_vocab_<gpu>.json, OUTDIR/pretrain_cuda_graphs_<gpu>.json
# (CUDA graphs vs eager; not in a dry run), OUTDIR/pretrain_e2e_<gpu>.json (the tool end to end at 1..15 data
# workers; not in a dry run), OUTDIR/environment_<gpu>.txt and one
# .log per benchmark (<gpu>: h200, h100, ... from the device name; cpu-dry-run in a dry run). A failing benchmark
# does not stop the other; the exit status is 1 if any failed.
#
# Needs python with torch (CUDA), torchvision, timm, numpy, tqdm; open_clip_torch 3.3.0, ftfy and wcwidth too:
# if open_clip is not importable, /tmp/site is added to PYTHONPATH, and if it is still missing the wheels in .whl/
# are installed there. The repository goes on PYTHONPATH (no install needed). PYTHON picks the interpreter
# (default: the repository's .venv if there is one, else python3).
set -uo pipefail

OUTDIR=${1:?usage: bash bench/gpu_suite.sh OUTDIR [--dry-run]}
DRY_RUN=0
[ "${2:-}" = "--dry-run" ] && DRY_RUN=1
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${PYTHON:-}" ]; then
  PYTHON=$(command -v python3 || command -v python)
  [ -x "$REPO/.venv/bin/python" ] && PYTHON="$REPO/.venv/bin/python"
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1
mkdir -p "$OUTDIR"
cd "$REPO" || exit 1

if ! "$PYTHON" -c "import open_clip" 2>/dev/null; then
  [ -d /tmp/site ] && export PYTHONPATH="/tmp/site:$PYTHONPATH"
  if ! "$PYTHON" -c "import open_clip" 2>/dev/null && ls "$REPO"/.whl/*.whl >/dev/null 2>&1; then
    echo "installing the carried wheels into /tmp/site"
    "$PYTHON" -m pip install --quiet --no-deps --target /tmp/site "$REPO"/.whl/*.whl
    export PYTHONPATH="/tmp/site:$PYTHONPATH"
  fi
fi

if [ "$DRY_RUN" = 1 ]; then  # SUITE_MODEL=pomp-tiny swaps ViT-B-16 for the tiny model (the tests do)
  DEVICE=cpu GPU=cpu-dry-run
  STEP_ARGS=(--dry-run --compile ${SUITE_MODEL:+--model "$SUITE_MODEL"})
  VOCAB_ARGS=(--limit 200 --repeats 1 ${SUITE_MODEL:+--model "$SUITE_MODEL"})
else
  DEVICE=cuda STEP_ARGS=(--compile) VOCAB_ARGS=()
  GPU=$("$PYTHON" -c "
import re, torch
name = torch.cuda.get_device_name().lower()
model = re.search(r'\b([a-z]{1,2}\d{2,4})\b', name)
print(model.group(1) if model else re.sub(r'[^a-z0-9]+', '-', name).strip('-'))") || {
    echo "error: torch sees no CUDA device; for a CPU check run: bash bench/gpu_suite.sh OUTDIR --dry-run"; exit 1; }
fi

"$PYTHON" - > "$OUTDIR/environment_$GPU.txt" 2>&1 <<'EOF'
import platform, sys
import numpy, open_clip, torch, torchvision
print("python", sys.version.split()[0], platform.platform())
print("torch", torch.__version__, "cuda", torch.version.cuda, "torchvision", torchvision.__version__,
      "open_clip", open_clip.__version__, "numpy", numpy.__version__)
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(), f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.1f} GiB")
import pomp_plugins.pretrain  # noqa: F401  the package imports without an install
EOF
status=$?
command -v nvidia-smi >/dev/null && nvidia-smi >> "$OUTDIR/environment_$GPU.txt" 2>&1
cat "$OUTDIR/environment_$GPU.txt"
if [ $status -ne 0 ]; then echo "error: the environment check failed (above)"; exit 1; fi

failed=0
run() {  # run NAME SECONDS COMMAND...
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  echo "== $name: $*"
  if timeout "$limit" "$@" > "$OUTDIR/$name.log" 2>&1; then
    echo "   ok in $((SECONDS - start)) s"
  else
    echo "   FAILED (exit $?) after $((SECONDS - start)) s; the end of $OUTDIR/$name.log:"
    tail -n 25 "$OUTDIR/$name.log"
    failed=1
  fi
}

run "pretrain_step_$GPU" 230 "$PYTHON" bench/pretrain_step.py --preset gpu --device "$DEVICE" "${STEP_ARGS[@]}" \
  --json "$OUTDIR/pretrain_step_$GPU.json"
run "encode_vocab_$GPU" 90 "$PYTHON" bench/encode_vocab.py --device "$DEVICE" "${VOCAB_ARGS[@]}" \
  --json "$OUTDIR/encode_vocab_$GPU.json"
if [ "$DRY_RUN" = 0 ]; then  # both need CUDA: graphs vs eager (the check that lets --cuda-graphs be the default)
  run "pretrain_cuda_graphs_$GPU" 120 "$PYTHON" bench/pretrain_cuda_graphs.py --json "$OUTDIR/pretrain_cuda_graphs_$GPU.json"
  run "pretrain_e2e_$GPU" 240 "$PYTHON" bench/pretrain_e2e.py --model ViT-B-16 --device cuda --workers 1,4,8,15 \
    --classes 100 --per-class 16 --group-size 32 --global-batch 256 --num-sampled 100 --steps 3 \
    --json "$OUTDIR/pretrain_e2e_$GPU.json"
fi

"$PYTHON" - "$OUTDIR" "$GPU" <<'EOF'
import json, sys
from pathlib import Path
out, gpu = Path(sys.argv[1]), sys.argv[2]
step = out / f"pretrain_step_{gpu}.json"
if step.is_file():
    result = json.loads(step.read_text())
    for name, row in result["results"].items():
        variants = {"ours": row} if name.startswith("feature_cache") else row
        for variant in ("reference_style", "ours_without_cuda_graphs", "ours", "ours_compiled_image_tower"):
            r = variants.get(variant)
            if r is None:
                continue
            if "error" in r:
                print(f"{name:24s} {variant:25s} FAILED: {r['error']}")
                continue
            print(f"{name:24s} {variant:25s} {r['ms_per_step']:8.1f} ms/step {r['images_per_s']:9.0f} img/s "
                  f"{r['peak_gib']:6.2f} GiB")
        if "speedup" in row:
            memory = f", {row['memory_ratio']:.2f}x less memory" if "memory_ratio" in row else ""
            print(f"{name:24s} speedup {row['speedup']:.2f}x{memory}")
        if "speedup_vs_reference_style" in row:
            print(f"{name:24s} {row['speedup_vs_reference_style']:.1f}x the reference-style images/s")
    print("targets:", result.get("targets", "not reached"))
graphs = out / f"pretrain_cuda_graphs_{gpu}.json"
if graphs.is_file():
    result = json.loads(graphs.read_text())
    for dtype in ("fp32", "bf16"):
        r = result[dtype]
        print(f"cuda graphs vs eager, {dtype}: ctx differs by {r['ctx_max_abs_difference']:.2e} after moving "
              f"{r['ctx_max_abs_movement']:.2e}; {r['text_graphs']} text graphs; criteria {r['criteria']}")
    print("cuda graphs check:", "PASSED" if result["passed"] else "FAILED")
e2e = out / f"pretrain_e2e_{gpu}.json"
if e2e.is_file():
    for row in json.loads(e2e.read_text())["results"]:
        print(f"end to end, {row['workers']:2d} workers: {row['images_per_s_all_processes']:7.1f} images/s, "
              f"{100 * row['data_wait_share']:4.1f}% waiting for data")
vocab = out / f"encode_vocab_{gpu}.json"
if vocab.is_file():
    result = json.loads(vocab.read_text())
    ours, reference = result["ours"]["seconds"], result["encode_text_77_tokens"]["seconds"]
    print(f"encode_vocab: ours {ours:.3f} s, encode_text {reference:.3f} s for {result['classes']} names "
          f"({result['speedup']:.2f}x), max difference {result['max_abs_difference']:.2e}")
EOF
exit $failed
