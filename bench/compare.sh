#!/usr/bin/env bash
# A reproducible side-by-side benchmark of Petrel against Postfix on
# loopback (issue 5): builds bench/compare and petrel, then runs them. As
# root, with Postfix installed (test/interop/install-deps.sh).
#
#   bench/compare.sh                      # 3 rounds, 15-30 minutes
#   bench/compare.sh --quick              # a smoke run of about a minute
#   bench/compare.sh --rounds 5 --outbound 20000 --out /tmp/report.md
#   bench/compare.sh --petrel /tmp/petrel-head/petrel   # measure another build
#   bench/compare.sh --help               # every flag
#
# The report (Markdown) goes to bench/results/<UTC date-time>.md and to
# standard output; progress goes to standard error. Without --petrel, the
# petrel of the working tree is built and measured; the load generator and
# the sink (petrel bench, petrel bench sink --exit-after) come from the
# working tree's build too, unless --tools gives another binary.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if [[ $(id -u) != 0 ]]; then
	echo "compare.sh: run as root: the throw-away Postfix's master runs as root (sudo bench/compare.sh)" >&2
	exit 2
fi

have_petrel=0 have_tools=0 want_help=0
for a in "$@"; do
	case $a in
	--petrel | --petrel=* | -petrel | -petrel=*) have_petrel=1 ;;
	--tools | --tools=* | -tools | -tools=*) have_tools=1 ;;
	-h | -help | --help) want_help=1 ;;
	esac
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/petrel-compare-bin-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# Ctrl-C: the compare program stops and removes what it started, then this
# script removes its builds.
trap 'exit 130' INT TERM

if ! out=$(go build -o "$tmp/compare" ./bench/compare 2>&1); then
	echo "compare.sh: cannot build bench/compare: $(printf '%s\n' "$out" | grep -m1 -v '^#' || true)" >&2
	exit 1
fi

extra=()
if [[ $want_help == 0 && ($have_petrel == 0 || $have_tools == 0) ]]; then
	if out=$(go build -o "$tmp/petrel" ./cmd/petrel 2>&1); then
		# The commit, for the report: the build information may lack it
		# (GOFLAGS=-buildvcs=false).
		commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
		if [[ -n $(git status --porcelain 2>/dev/null) ]]; then
			commit+="-dirty"
		fi
		commit+=" (the working tree)"
		[[ $have_petrel == 1 ]] || extra+=(--petrel "$tmp/petrel" --petrel-commit "$commit")
		[[ $have_tools == 1 ]] || extra+=(--tools "$tmp/petrel" --tools-commit "$commit")
	elif [[ $have_petrel == 0 ]]; then
		echo "compare.sh: go build ./cmd/petrel failed ($(printf '%s\n' "$out" | grep -m1 -v '^#' || true)); build petrel from a commit that builds and pass it, e.g. git worktree add /tmp/petrel-head HEAD && (cd /tmp/petrel-head && go build -o petrel ./cmd/petrel) && bench/compare.sh --petrel /tmp/petrel-head/petrel --tools PETREL_WITH_BENCH_SINK_EXIT_AFTER" >&2
		exit 1
	fi
fi

cmdline="bench/compare.sh"
for a in "$@"; do
	cmdline+=" $(printf '%q' "$a")"
done
PETREL_COMPARE_CMDLINE=$cmdline "$tmp/compare" "$@" "${extra[@]}"
