#!/usr/bin/env bash
# The AN4 fine-tuning table of docs/finetuning.md: five rows at an equal budget (the same cpu_small recipe,
# the same number of updates, 30-minute guard each), dev WER/CER on AN4 speakers absent from pretraining and
# fine-tuning.  Usage:
#   python research/real_speech/make_data.py                      # once: /work/exp/real/an4_{train,dev}.*
#   research/real_speech/an4_table.sh [ROWS]                      # ROWS: any of a-g, h-k (default: a-e)
#   python research/real_speech/an4_lm.py --lmplz LMPLZ $OUT/h ... # + a word 3-gram LM of the training text
# Environment: DATA (default /work/exp/real), OUT (default /work/exp/an4_table), DEMO_RUN (the `dinosr demo`
# training run, default /work/exp/demo_head/train), REAL_RUN (the real-speech pretraining run, default
# $DATA/pt_seed1: `dinosr pretrain configs/tiny.toml --set data.manifest=$DATA/pretrain.tsv`), STEPS (1500, rows a-g),
# SEED (fine-tuning seed, default 1; another seed writes $OUT/ROW_sSEED).
set -euo pipefail
DATA=${DATA:-/work/exp/real}
OUT=${OUT:-/work/exp/an4_table}
DEMO_RUN=${DEMO_RUN:-/work/exp/demo_head/train}
REAL_RUN=${REAL_RUN:-$DATA/pt_seed1}
STEPS=${STEPS:-1500}
MINUTES=${MINUTES:-30}
ROWS=${*:-a b c d e}
SEED=${SEED:-1}
common=(--set "data.manifest=$DATA/an4_train.tsv" --set "data.valid_manifest=$DATA/an4_dev.tsv"
        --set "run.max_minutes=$MINUTES" --set "run.seed=$SEED")
# rows h-j use the whole 30-minute budget: as many updates as one thread fits in it (fp32 or bf16 autocast)
fp32_30min=(--set run.max_steps=2800 --set run.validate_every=300)
bf16_30min=(--set run.max_steps=4200 --set run.validate_every=300 --set run.precision=bf16)
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
    h) args=(--init "$REAL_RUN" "${fp32_30min[@]}") ;;             # (e) for the whole budget, fp32
    i) args=(--from-scratch "${bf16_30min[@]}") ;;                 # (d) for the whole budget, bf16
    j) args=(--init "$REAL_RUN" "${bf16_30min[@]}") ;;             # (e) for the whole budget, bf16
    k) args=(--init "$REAL_RUN" "${bf16_30min[@]}" --set ctc.mask_prob=0.2) ;;  # (j), lighter time masking
    *) echo "unknown row $row" >&2; exit 2 ;;
  esac
  case $row in [a-g]) args+=(--set "run.max_steps=$STEPS") ;; esac
  name=$row; [ "$SEED" = 1 ] || name=${row}_s$SEED
  dinosr finetune cpu_small "${args[@]}" "${common[@]}" --set "run.workdir=$OUT/$name" > "$OUT/$name.log" 2>&1
  rm -f "$OUT/$name.dev.tsv"  # a fresh transcript of the final best checkpoint (transcribe resumes otherwise)
  dinosr transcribe "$OUT/$name" "$DATA/an4_dev.tsv" --out "$OUT/$name.dev.tsv" >> "$OUT/$name.log" 2>&1
  echo "row $name: $(dinosr wer "$OUT/$name/valid_ref.tsv" "$OUT/$name.dev.tsv" | tr '\n' ' ')"
done
