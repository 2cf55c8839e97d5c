#!/usr/bin/env bash
# One row of the bundled-corpus table of docs/finetuning.md: fine-tune from scratch on the bundled corpus,
# then score the two sets the model never heard, (1) the bundled valid split (the voice slt) and (2) new
# sentences of the four training voices (a corpus made once here; it needs Festival and flite).
#   research/finetuning/bundled_run.sh NAME SEED [--set section.key=value ...]
#   research/finetuning/bundled_run.sh quick_s1 1                                   # the cpu_quick row
#   PRESET=cpu_small research/finetuning/bundled_run.sh old_s1 1 --set 'data.speed_perturb=[0.8,1.25]' \
#       --set run.max_steps=1000                                                   # the old quick path
#   research/finetuning/bundled_run.sh cvn_s1 1 --set model.logmel_cvn=true        # the other rows likewise
# Environment: PRESET (cpu_quick), INIT ("" = --from-scratch, else a model for --init), OUT (runs/bundled_table),
# SEEN (the new-sentences corpus, default $OUT/seen_voices, synthesised when absent).
# Chance of each set: python research/finetuning/chance_cer.py src/dinosr/assets/corpus/train.wrd SET/valid.wrd
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bundled=$here/../../src/dinosr/assets/corpus
PRESET=${PRESET:-cpu_quick}
OUT=${OUT:-runs/bundled_table}
SEEN=${SEEN:-$OUT/seen_voices}
name=$1; seed=$2; shift 2
run=$OUT/$name
mkdir -p "$OUT"
if [ ! -f "$SEEN/valid.tsv" ]; then
  # the plain training voices (no pseudo-speakers), a seed other than the bundled corpus's 1234: no sentence
  # of these 48 is in the bundled training text (checked when the table was made)
  dinosr corpus synth --out "$SEEN" --num-utterances 48 --voices kal,ked,flite-awb,flite-rms --variants 1 \
      --heldout-voice all --seed 4242 > "$OUT/seen_voices.log" 2>&1
fi
if [ ! -f "$SEEN/valid_ref.tsv" ]; then  # utt<TAB>words, the reference format of `dinosr wer`
  paste <(tail -n +2 "$SEEN/valid.tsv" | cut -f1 | sed 's#.*/##; s#\.[^.]*$##') "$SEEN/valid.wrd" > "$SEEN/valid_ref.tsv"
fi
if [ -n "${INIT:-}" ]; then start=(--init "$INIT"); else start=(--from-scratch); fi
begin=$(date +%s)
dinosr finetune "$PRESET" "${start[@]}" --set "run.seed=$seed" --set "run.workdir=$run" "$@" > "$run.log" 2>&1
minutes=$(( ($(date +%s) - begin) / 60 ))
dinosr transcribe "$run" "$bundled/valid.tsv" --out "$run/valid_hyp.tsv" --no-progress > "$run.transcribe.log" 2>&1
dinosr transcribe "$run" "$SEEN/valid.tsv" --out "$run/seen_hyp.tsv" --no-progress >> "$run.transcribe.log" 2>&1
echo "$name (seed $seed, fine-tuning $minutes min)"
echo "  unheard voice slt:               $(dinosr wer "$run/valid_ref.tsv" "$run/valid_hyp.tsv")"
echo "  new sentences of training voices: $(dinosr wer "$SEEN/valid_ref.tsv" "$run/seen_hyp.tsv")"
