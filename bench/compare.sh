#!/usr/bin/env bash
# Compare two commits on `make bench`: each commit is checked out in a
# temporary git worktree, its bench/all.sh runs there (so each side builds
# and measures its own code, one after the other on this machine), and the
# ratio lines of both are printed, first A's then B's, line by line. Ratios
# are against baselines measured in the same run, so they compare better
# than absolute times on a shared machine; run it twice if they disagree.
# Both commits need bench/all.sh (issue 18 and later).
#
# Usage: bench/compare.sh A B     e.g. bench/compare.sh main HEAD
# Env: as bench/all.sh (INGRESS_RATES, HANDOFF_RATES, ...).
set -euo pipefail

[[ $# -eq 2 ]] || { echo "usage: $0 COMMIT_A COMMIT_B" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trees=()
cleanup() {
	for t in "${trees[@]}"; do git -C "$root" worktree remove --force "$t" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

for side in A B; do
	rev=$1
	shift
	sha=$(git -C "$root" rev-parse --short "$rev^{commit}")
	tree=$work/$side-$sha
	git -C "$root" worktree add --detach -q "$tree" "$sha"
	trees+=("$tree")
	[[ -x $tree/bench/all.sh ]] || { echo "$rev ($sha) has no bench/all.sh" >&2; exit 1; }
	[[ -e $root/.cache ]] && ln -sfn "$root/.cache" "$tree/.cache"
	echo "== $side: $rev ($sha)"
	OUT=$work/$side.txt "$tree/bench/all.sh" >"$work/$side.summary" 2>&1 || echo "   ($side: a bench did not complete)"
	sed -n '/^== ratios/,$p' "$work/$side.summary" | tail -n +2 >"$work/$side.ratios"
done
echo
paste -d'\n' <(sed 's/^/A  /' "$work/A.ratios") <(sed 's/^/B  /' "$work/B.ratios")
