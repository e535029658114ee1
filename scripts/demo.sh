#!/usr/bin/env bash
# The README's main job: ground one query per modality on the shipped examples with the embedded
# default model (omniground-tiny, offline), print the answers and save a picture of each.
set -euo pipefail
cd "$(dirname "$0")/.."
og=.venv/bin/omniground
mkdir -p out
$og ground examples/scene.jpg "the lowest pizza" --save-viz out/demo-image.png
$og ground examples/clip.mp4 "the yellow sailboat is visible" --save-viz out/demo-video.png
$og ground examples/sounds.wav "the phone rings" --save-viz out/demo-audio.png
echo "pictures of the answers: out/demo-image.png out/demo-video.png out/demo-audio.png"
echo "true answers (examples/README.md): [0.176,0.281,0.320,0.521]; 2.50-4.25 s; 4.01-5.35 s"
