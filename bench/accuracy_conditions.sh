#!/usr/bin/env bash
# Counting accuracy per condition, before and after, on the same held-out scenes:
#   bash bench/accuracy_conditions.sh [BEFORE_COMMIT] [OUT_DIR]
# (SCENES, default 30 per set at 2000×1500, and SCENES_LARGE, default 10 at 4000×3000, for a
# shorter run.)
# BEFORE_COMMIT (default 9afb632, the last commit before the condition work) is checked out
# in a scratch worktree with today's scene generator and evaluator copied in
# (pipeline/synth, pipeline/evaluation, pipeline/cli/evaluate.py), so both sides are scored on
# the same photos with the same metrics; its own code and models do the counting. The
# checkout itself is "after". Writes OUT_DIR/{before,after}_{2000,4000}.{json,md,log} and the
# before → after tables (python -m bench.accuracy_compare); bench/ACCURACY.md is assembled
# from them. About an hour on 2 idle cores (the old code is slower on these scenes).
set -euo pipefail
cd "$(dirname "$0")/.."
before_commit=${1:-9afb632}
out=$(realpath -m "${2:-bench/.accuracy}")
mkdir -p "$out"
PY=$(realpath .venv/bin/python)
cache="$out/cache"
scratch=$(mktemp -d)
trap 'git worktree remove --force "$scratch/before" >/dev/null 2>&1 || true; rm -rf "$scratch"' EXIT
git worktree add --detach "$scratch/before" "$before_commit" >/dev/null
rm -rf "$scratch/before/pipeline/synth" "$scratch/before/pipeline/evaluation"
cp -r pipeline/synth pipeline/evaluation "$scratch/before/pipeline/"
cp pipeline/cli/evaluate.py "$scratch/before/pipeline/cli/evaluate.py"

conditions="angled trays foliage lighting mixed pots"
run() {  # tree side
  local tree=$1 side=$2 small="" large=""
  for v in $conditions; do small="$small --set $v@2000x1500"; large="$large --set $v@4000x3000"; done
  local ev=(env "PYTHONPATH=$tree" "$PY" -m pipeline.cli evaluate --jobs 2 --cache "$cache" --seed 100000)
  # shellcheck disable=SC2086
  "${ev[@]}" --scenes "${SCENES:-30}" $small --set classic@2000x1500 --set wide@2000x1500 \
    --json "$out/${side}_2000.json" --report "$out/${side}_2000.md" >"$out/${side}_2000.log" 2>&1
  # shellcheck disable=SC2086
  "${ev[@]}" --scenes "${SCENES_LARGE:-10}" $large --set wide@4000x3000 \
    --json "$out/${side}_4000.json" --report "$out/${side}_4000.md" >"$out/${side}_4000.log" 2>&1
}
run "$scratch/before" before
run "$(pwd)" after
for size in 2000 4000; do
  "$PY" -m bench.accuracy_compare "$out/before_$size.json" "$out/after_$size.json" >"$out/compare_$size.md"
done
echo "written: $out"
