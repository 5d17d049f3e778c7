#!/usr/bin/env bash
# The GPU report (python -m tools.gpureport) on a lent GPU machine, in one call. See
# BENCHMARKS.md, "GPU". Two steps:
#
#   bash .ci/gpu-report.sh wheels   # here, where pip reaches PyPI: the packages the GPU machine's
#                                   # image lacks, as wheels for its Python 3.12, into .whl/
#   bash .ci/gpu-report.sh [FLAGS]  # there (the device tool's run, carrying .whl): installs them
#                                   # into /tmp/site, then runs the report into $OUT/gpu under
#                                   # `timeout`; FLAGS go to gpureport (e.g. --parts bench profile)
#
# The GPU machine reaches no network, so pip cannot install requirements.txt there, and this
# machine's virtual environment (7+ GB) cannot travel (64 MiB a call). Its image's python3 has
# torch, torchvision, torchaudio, numpy, scipy, numba, scikit-learn, pillow, imageio, einops,
# tqdm, regex, requests and pyyaml; the rest travels as the wheels below (about 42 MB).
# imageio-ffmpeg is 0.7.0 there, not requirements.txt's 0.8.1: 0.8.1's wheel (68 MB, ffmpeg 9)
# alone is over the limit; 0.7.0's (29 MB) has the same API and an ffmpeg 7 with libx264.
# Environment: PYTHON (default python3), WHEEL_DIR (.whl), SITE (/tmp/site), BUDGET (420
# seconds, the report's --budget-seconds; the run is stopped BUDGET + 120 s after it starts),
# OUT (set by the device tool; elsewhere outputs/gpu-report).
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=(
  clip-anytorch==2.6.0 ftfy==6.3.1 wcwidth==0.9.4
  wav2clip==0.1.0 taming-transformers-rom1504==0.0.6
  kornia==0.9.0 kornia-rs==0.2.0
  imageio-ffmpeg==0.7.0
  librosa==0.11.0 audioread==3.1.0 soxr==1.1.0 soundfile==0.14.0 cffi==2.1.1 pycparser==3.12
  pooch==1.9.0 platformdirs==4.14.8 decorator==5.3.1
  omegaconf==2.4.0 torch-optimizer==0.3.0 pytorch-ranger==0.1.1
  setuptools==80.10.2  # clip imports pkg_resources, which setuptools 81 dropped
)
PYTHON=${PYTHON:-python3}
WHEEL_DIR=${WHEEL_DIR:-.whl}
SITE=${SITE:-/tmp/site}
BUDGET=${BUDGET:-420}
LIMIT_MIB=62  # what travels: the working tree plus the wheels, under the tool's 64 MiB
NEEDED="import clip, kornia, taming.modules.diffusionmodules.model, wav2clip.model.encoder, \
librosa, soundfile, soxr, imageio_ffmpeg, omegaconf, torch_optimizer"

fetch_wheels() {
  set -e
  if [ "$WHEEL_DIR" = .whl ]; then  # keep it out of git, as the device tool's notes say
    exclude="$(git rev-parse --git-path info/exclude)"
    mkdir -p "$(dirname "$exclude")"
    grep -qxF "/.whl/" "$exclude" 2>/dev/null || echo "/.whl/" >>"$exclude"
  fi
  rm -rf "$WHEEL_DIR"
  mkdir -p "$WHEEL_DIR"
  "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d "$WHEEL_DIR" "${WHEELS[@]}"
  wheels=$(du -cb "$WHEEL_DIR"/*.whl | tail -1 | cut -f1)
  tree=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } | sort -zu |
          xargs -0 du -cb 2>/dev/null | awk '$2 == "total" {s += $1} END {print s + 0}')
  total=$(( (wheels + tree) / 1048576 ))
  echo "gpu-report: $(ls "$WHEEL_DIR"/*.whl | wc -l) wheels, $((wheels / 1048576)) MiB; with the" \
       "working tree $total MiB of the ${LIMIT_MIB} MiB that may travel"
  if [ "$total" -gt "$LIMIT_MIB" ]; then
    echo "gpu-report: too much to carry; remove large untracked files from the tree" >&2
    exit 1
  fi
}

if [ "${1:-}" = wheels ]; then
  fetch_wheels
  exit 0
fi

OUT=${OUT:-$PWD/outputs/gpu-report}  # outputs/ is git-ignored
DEST="$OUT/gpu"
mkdir -p "$DEST"
SETUP="$DEST/setup.log"
: >"$SETUP"
if ! "$PYTHON" -c "$NEEDED" >>"$SETUP" 2>&1; then
  if ! ls "$WHEEL_DIR"/*.whl >/dev/null 2>&1; then
    echo "gpu-report: the packages are missing and there are no wheels in $WHEEL_DIR; run" \
         "'bash .ci/gpu-report.sh wheels' where pip works and carry $WHEEL_DIR" | tee -a "$SETUP" >&2
    exit 3
  fi
  # setuptools only where the image's own has no pkg_resources (setuptools 81 and later).
  wheels=("$WHEEL_DIR"/*.whl)
  if "$PYTHON" -c "import pkg_resources" >/dev/null 2>&1; then
    wheels=($(ls "$WHEEL_DIR"/*.whl | grep -v '/setuptools-'))
  fi
  echo "gpu-report: installing ${#wheels[@]} wheels into $SITE" | tee -a "$SETUP"
  if ! "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" "${wheels[@]}" >>"$SETUP" 2>&1; then
    tail -5 "$SETUP" >&2
    echo "gpu-report: pip could not install the wheels (see $SETUP)" >&2
    exit 3
  fi
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  if ! "$PYTHON" -c "$NEEDED" >>"$SETUP" 2>&1; then
    tail -5 "$SETUP" >&2
    echo "gpu-report: still cannot import the project's packages (see $SETUP)" >&2
    exit 3
  fi
fi
{ "$PYTHON" -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__,
'cuda', torch.version.cuda, torch.cuda.is_available())"; nvidia-smi; } >>"$SETUP" 2>&1

export PYTHONUNBUFFERED=1
timeout --kill-after=20 $((BUDGET + 120)) "$PYTHON" -m tools.gpureport "$DEST" \
  --budget-seconds "$BUDGET" "$@" 2>&1 | tee "$DEST/run.log"
status=${PIPESTATUS[0]}
[ "$status" = 124 ] && echo "gpu-report: stopped after $((BUDGET + 120)) s; $DEST has the parts that finished"
ls -la "$DEST"
exit "$status"
