#!/usr/bin/env bash
# Reliance and region selectivity as a function of the scenes' layout prior: for every PRIOR:LAYOUT given
# (default: 0:left-right 0.5:left-right 0.9:left-right 1:left-right 0.9:top-bottom), train a quick-preset
# segmenter, then run `poschan ablate` and `poschan attack` on it (quick presets; the attack's regions are the
# two home halves of the layout). Runs that exist are kept. Results: runs/seg/p<PRIOR>-<LAYOUT>/{train,ablate,attack};
# `python scripts/prior_table.py runs/seg` tabulates them.
set -euo pipefail
ROOT=${ROOT:-runs/seg}
SPECS=${*:-0:left-right 0.5:left-right 0.9:left-right 1:left-right 0.9:top-bottom}
for SPEC in $SPECS; do
  PRIOR=${SPEC%%:*}; LAYOUT=${SPEC##*:}
  DIR=$ROOT/p$PRIOR-$LAYOUT
  [ -d "$DIR/train" ] || poschan seg-train --preset quick --layout-prior "$PRIOR" --layout "$LAYOUT" \
    --no-progress --out "$DIR/train"
  CKPT=$DIR/train/seed0/checkpoint.pt
  [ -d "$DIR/ablate" ] || poschan ablate --preset quick --checkpoint "$CKPT" --no-progress --out "$DIR/ablate"
  REGIONS=$([ "$LAYOUT" = top-bottom ] && echo top,bottom || echo left,right)
  [ -d "$DIR/attack" ] || poschan attack --preset quick --checkpoint "$CKPT" --region "$REGIONS" --no-progress \
    --out "$DIR/attack"
done
