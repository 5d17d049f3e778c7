#!/usr/bin/env bash
# Fetches the model weights into the per-user cache: $MUSIC2VIDEO_HOME, else
# $XDG_CACHE_HOME/music2video, else ~/.cache/music2video (or $MUSIC2VIDEO_CHECKPOINTS, or
# --checkpoints DIR); a model that ./checkpoints already holds (the seed's layout) is checked there.
# The same as `music2video-download` once the package is installed.
# With no arguments: VQGAN ImageNet f16-16384 (the seed's one default), CLIP ViT-B/32 and Wav2CLIP.
#   bash download_models.sh                  # the defaults (~1.4 GB)
#   bash download_models.sh --all            # every VQGAN too
#   bash download_models.sh vqgan_gumbel_f8_8192 ViT-B/16
#   bash download_models.sh --list           # what is offered and what is present
# The files, URLs and checksums live in one place: music2video/models/weights.py.
set -euo pipefail
# Relative folders resolve against where you run it, as the generate commands resolve them.
export PYTHONPATH="$(cd "$(dirname "$0")" && pwd)${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" -m music2video.models.weights "$@"
