#!/usr/bin/env bash
# Reproduce omniground-tiny: generate the data, train the three stages, evaluate on the held-out
# splits (test: seeds never used in training; unseen: held-out combinations), and install the model
# where `omniground.load("omniground-tiny")` finds it.
#
#   scripts/train_default.sh            # training about 67 min on two CPU threads (stage 0 27, stages 1-3 12.5, stage 3b 5.5, the pointer refit 19), peak 8.9 GB RSS, plus making the data (6 min) and evaluation (4 min); minutes on a GPU
#   scripts/train_default.sh small      # the same recipe on SmolLM2-135M + Whisper base (configs/omniground-small):
#                                       # for a GPU (30x slower than tiny per sample on CPU); evaluated, not installed
#
# The shipped checkpoint records the commit it was trained from in TRAINED_FROM.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
# each stage's output goes through tee into its log; in a terminal, rich would otherwise draw a stage's progress
# bars only once they end (27 min of silence in stage 0), as it does for a pipe
if [ -t 1 ]; then export TTY_COMPATIBLE=1; fi
VARIANT=${1:-tiny}
RUN=runs/omniground-$VARIANT
DATA=runs/data/synth
[ -f configs/omniground-$VARIANT/stage0.yaml ] || { echo "no variant '$VARIANT' (tiny or small)" >&2; exit 2; }
# the code it is trained from, taken now (the install below rewrites the tracked checkpoint files)
COMMIT="$(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"

for f in train extra/train extra2/train extra3/train extra14/train test-images/test test-large/test; do
    [ -f $DATA/$f.jsonl ] || { scripts/make_default_data.sh $DATA; break; }
done

# a variant's own config where it has one (small: stage 0), omniground-tiny's otherwise, chained through $RUN
STAGES="stage0 stage1 stage2 stage2b stage3 stage3b pointers"  # pointers: the pointer heads refitted on stage 3b's model
prev=
for stage in $STAGES; do
    config=configs/omniground-$VARIANT/$stage.yaml
    [ -f $config ] || config=configs/omniground-tiny/$stage.yaml
    chain=(--set output_dir=$RUN/$stage)
    [ -z "$prev" ] || chain+=(--set model.from_checkpoint=$RUN/$prev/model)
    python -m omniground.train $config "${chain[@]}" --resume 2>&1 | tee $RUN.$stage.log
    prev=$stage
done

RUN=$RUN STAGES=$STAGES python - <<'PY'
import json
import os
from pathlib import Path
from omniground.train.report import plot_stages
run = Path(os.environ["RUN"])
stages = []
for name in os.environ["STAGES"].split()[1:-1]:  # the LM's stages: stage 0 and the refit keep other figures
    m = json.loads((run / name / "metrics.json").read_text())
    stages.append((name, m["history"], m["evals"]))
plot_stages(run / "curve.png", stages, title=f"{run.name}: all stages")
PY

# test-images/test: the bigger image draw (seed 4) for REC, negatives and sound localisation
for split in test unseen test-images/test; do
    name=${split%/test}  # eval-test, eval-unseen, eval-test-images
    python -m omniground eval run --data $DATA/$split.jsonl --model $RUN/pointers/model --out $RUN/eval-$name
    # REC again with the phrase given as the answer's start (Kosmos-2's protocol; what `omniground ground` does)
    python -m omniground eval run --data $DATA/$split.jsonl --task rec --model $RUN/pointers/model --answer-start \
        --out $RUN/eval-$name-rec-phrase
done

# test-large/test (seed 40): sound localisation on 559 questions, and REC on 2000, both ways
python -m omniground eval run --data $DATA/test-large/test.jsonl --task sound_localization --model $RUN/pointers/model \
    --out $RUN/eval-test-large-sound
python -m omniground eval run --data $DATA/test-large/test.jsonl --task rec --limit 2000 --model $RUN/pointers/model \
    --out $RUN/eval-test-large-rec
python -m omniground eval run --data $DATA/test-large/test.jsonl --task rec --limit 2000 --model $RUN/pointers/model \
    --answer-start --out $RUN/eval-test-large-rec-phrase

# this run's held-out figures beside the shipped model's and the targets, kept as $RUN/eval.json
RUN=$RUN python - <<'PY'
import json
import os
from pathlib import Path
from rich.console import Console
from omniground.train.report import recipe_figures, recipe_table, write_metrics
run = Path(os.environ["RUN"])
figures = recipe_figures(run)
write_metrics(run / "eval.json", figures)
card = Path("omniground/checkpoints/omniground-tiny/eval.json")
shipped = json.loads(card.read_text()) if card.is_file() else None
Console().print(recipe_table(figures, shipped, title=f"{run.name}: held out (seeds never used in training)"))
PY

[ "$VARIANT" = tiny ] || { echo "evaluated $RUN/pointers/model (only omniground-tiny is installed)"; exit 0; }
DEST=omniground/checkpoints/omniground-tiny
if [ ! -f $DEST/model.safetensors ]; then same="nothing was installed before"
elif cmp -s $RUN/pointers/model/model.safetensors $DEST/model.safetensors; then same="the weights installed before, byte for byte"
else same="not the weights installed before: git checkout -- $DEST brings the shipped ones back"; fi
rm -rf $DEST && mkdir -p $DEST
cp $RUN/pointers/model/* $RUN/eval.json $DEST/
{
    echo "commit: $COMMIT"
    echo "data: scripts/make_default_data.sh (train seed 0, extra seed 3, extra2 seed 5, extra3 seed 6, extra5..extra14 seeds 8..17, val seed 1, test/unseen seed 2, test-images seed 4, test-large seed 40)"
    echo "configs: configs/omniground-tiny/stage{0,1,2,2b,3,3b}.yaml, then configs/omniground-tiny/pointers.yaml"
    echo "eval.json: the held-out figures of these weights, from this script's evaluations"
} > $DEST/TRAINED_FROM.txt
echo "installed $DEST ($same)"
