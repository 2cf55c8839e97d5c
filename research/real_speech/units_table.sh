#!/usr/bin/env bash
# The units ablation table of docs/real_speech.md: pretrain the tiny recipe on the real unlabelled mix with
# an option (or none) and a seed, then evaluate its units and features on the three dev sets, all absent
# from training: (a) 10 AN4 speakers, (b) the MBROLA voices us1/us2, (c) FSDD's test takes (6 speakers).
# MFCC k-means (64 units) is fit on the same AN4 training speech in every evaluation.
#   python research/real_speech/make_data.py                  # once: $DATA/{pretrain,an4_*,fsdd_*}
#   dinosr corpus synth --voices mbrola-us1,mbrola-us2 --heldout-voice all --num-utterances 300 --out $MBROLA
#   research/real_speech/units_table.sh NAME SEED [--set model.OPTION=VALUE ...]
#   python research/real_speech/units_summary.py $OUT             # the table of every run in $OUT
# Environment: DATA (/work/exp/real), OUT (/work/exp/units), MBROLA (/work/exp/corpus/mbrola_dev),
# SHARED (../shared beside the repository), CONFIG (configs/tiny.toml), SKIP_TRAIN=1 (evaluate only).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
DATA=${DATA:-/work/exp/real}
OUT=${OUT:-/work/exp/units}
MBROLA=${MBROLA:-/work/exp/corpus/mbrola_dev}
SHARED=${SHARED:-$here/../../../shared}
CONFIG=${CONFIG:-$here/../../configs/tiny.toml}
name=$1; seed=$2; shift 2
run=$OUT/$name
mkdir -p "$OUT"
start=$(date +%s)
if [ -z "${SKIP_TRAIN:-}" ]; then
  dinosr pretrain "$CONFIG" --set "data.manifest=$DATA/pretrain.tsv" --set "run.workdir=$run" \
      --set "run.seed=$seed" "$@" > "$run.pretrain.log" 2>&1
fi
trained=$(( $(date +%s) - start ))
train=(--train-manifest "$DATA/an4_train.tsv" --train-alignments "$SHARED/data/real/an4/alignments.tsv"
       --train-speakers "$DATA/an4_speakers.tsv")
dinosr evaluate "$run" --manifest "$DATA/an4_dev.tsv" --alignments "$SHARED/data/real/an4/alignments.tsv" \
    --speakers "$DATA/an4_speakers.tsv" "${train[@]}" --out "$run.eval_a" > "$run.eval_a.log" 2>&1
dinosr evaluate "$run" --corpus "$MBROLA" --split valid "${train[@]}" --out "$run.eval_b" > "$run.eval_b.log" 2>&1
dinosr evaluate "$run" --manifest "$DATA/fsdd_dev.tsv" --alignments "$SHARED/data/fsdd/phones_pocketsphinx.tsv" \
    --speakers "$DATA/fsdd_speakers.tsv" "${train[@]}" --out "$run.eval_c" > "$run.eval_c.log" 2>&1
echo "$name seed $seed: pretraining ${trained} s, total $(( $(date +%s) - start )) s"
