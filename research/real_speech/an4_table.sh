#!/usr/bin/env bash
# The AN4 fine-tuning table of docs/finetuning.md: five rows at an equal budget (the same cpu_small recipe,
# the same number of updates, 30-minute guard each), dev WER/CER on AN4 speakers absent from pretraining and
# fine-tuning.  Usage:
#   python research/real_speech/make_data.py                      # once: /work/exp/real/an4_{train,dev}.*
#   research/real_speech/an4_table.sh [ROWS]                      # ROWS: any of a b c d e f g (default: a-e)
# Environment: DATA (default /work/exp/real), OUT (default /work/exp/an4_table), DEMO_RUN (the `dinosr demo`
# training run, default /work/exp/demo_head/train), REAL_RUN (the real-speech pretraining run, default
# $DATA/pt_seed1: `dinosr pretrain configs/tiny.toml --set data.manifest=$DATA/pretrain.tsv`), STEPS (1500).
set -euo pipefail
DATA=${DATA:-/work/exp/real}
OUT=${OUT:-/work/exp/an4_table}
DEMO_RUN=${DEMO_RUN:-/work/exp/demo_head/train}
REAL_RUN=${REAL_RUN:-$DATA/pt_seed1}
STEPS=${STEPS:-1500}
MINUTES=${MINUTES:-30}
ROWS=${*:-a b c d e}
common=(--set "data.manifest=$DATA/an4_train.tsv" --set "data.valid_manifest=$DATA/an4_dev.tsv"
        --set "run.max_steps=$STEPS" --set "run.max_minutes=$MINUTES")
mkdir -p "$OUT"
for row in $ROWS; do
  case $row in
    a) args=(--from-scratch) ;;                                   # tiny model, random init, same recipe
    b) args=(--init "$DEMO_RUN") ;;                               # pretrained by `dinosr demo` (synthetic)
    c) args=(--init "$REAL_RUN") ;;                               # pretrained on real unlabelled speech
    d) args=(--from-scratch --set finetune.freeze_finetune_updates=0 --set optim.lr=1e-3) ;;  # log-mel CTC baseline
    e) args=(--init "$REAL_RUN" --set finetune.freeze_finetune_updates=0 --set optim.lr=1e-3) ;;  # (c) with (d)'s recipe
    f) args=(--from-scratch --set 'data.speed_perturb=[0.9,1.1]') ;;       # (d) + speed perturbation
    g) args=(--init "$REAL_RUN" --set 'data.speed_perturb=[0.9,1.1]') ;;   # (e) + speed perturbation
    *) echo "unknown row $row" >&2; exit 2 ;;
  esac
  dinosr finetune cpu_small "${args[@]}" "${common[@]}" --set "run.workdir=$OUT/$row" > "$OUT/$row.log" 2>&1
  rm -f "$OUT/$row.dev.tsv"  # a fresh transcript of the final best checkpoint (transcribe resumes otherwise)
  dinosr transcribe "$OUT/$row" "$DATA/an4_dev.tsv" --out "$OUT/$row.dev.tsv" >> "$OUT/$row.log" 2>&1
  echo "row $row: $(dinosr wer "$OUT/$row/valid_ref.tsv" "$OUT/$row.dev.tsv" | tr '\n' ' ')"
done
