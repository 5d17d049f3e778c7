#!/usr/bin/env bash
# framemd5 of one beats run and one interpolate run with the tiny models and a fixed seed.
# Usage: bash tools/framemd5.sh REPO_DIR OUT_DIR   (writes OUT_DIR/framemd5-{beats,interp}.txt)
# Compare two checkouts (before and after a change that must not change frames): it only calls
# the top-level scripts and `python -m music2video.tiny`.
set -euo pipefail
REPO=$(cd "$1" && pwd)
mkdir -p "$2"
OUT=$(cd "$2" && pwd)
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
export MUSIC2VIDEO_CACHE="$OUT/cache"
FF=$(python -c "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())")
cd "$REPO"
python -m music2video.tiny "$OUT/tiny"
# The first 8 seconds of the committed demo song, as wav.
"$FF" -y -loglevel error -i "$REPO/demo/demo_song.mp3" -t 8 -ac 2 -ar 44100 "$OUT/song.wav"
printf 'timestamp,text\n00:01,a city skyline at dawn\n00:04,a red kite over green hills\n00:06,the sign says: open all night\n' > "$OUT/lyrics.csv"
MODELS=(-conf "$OUT/tiny/vqgan.yaml" -ckpt "$OUT/tiny/vqgan.ckpt" -m "$OUT/tiny/clip.pt"
        --wav2clip_checkpoint "$OUT/tiny/wav2clip.pt")
cd "$OUT"
rm -rf beats interp
python "$REPO/generate.py" -vid -o beats/out.png -ap song.wav -lyr lyrics.csv -ips 3 -s 64 64 \
    -cuts 4 -sd 7 -q "${MODELS[@]}"
python "$REPO/generate_interpolate.py" -vid -o interp/out.png -ap song.wav -lyr lyrics.csv -ips 3 \
    -s 64 64 -cuts 4 -sd 7 -q "${MODELS[@]}"
"$FF" -loglevel error -i beats/out.mp4 -f framemd5 - > "$OUT/framemd5-beats.txt"
"$FF" -loglevel error -i interp/out.mp4 -f framemd5 - > "$OUT/framemd5-interp.txt"
wc -l "$OUT/framemd5-beats.txt" "$OUT/framemd5-interp.txt"
