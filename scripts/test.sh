#!/usr/bin/env bash
# Runs every check and test of Petrel on a fresh machine: installs the
# interoperability peers (Debian packages) and staticcheck when missing, then
# gofmt, go vet, staticcheck, go test -race (unit, transcript, attack and
# interop tests), every Go benchmark once, and a short run of every fuzz target.
#
#   scripts/test.sh              # everything (about 5-10 minutes on 2 cores)
#   FUZZTIME=60s scripts/fuzz-smoke.sh   # longer fuzzing, separately
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:$(go env GOPATH)/bin"

step() { printf '\n== %s\n' "$*"; }

step "dependencies"
bash test/interop/install-deps.sh
if ! command -v staticcheck >/dev/null; then
  go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

step "go vet"
go vet ./...

step "staticcheck"
staticcheck ./...

step "go test -race"
PETREL_INTEROP_REQUIRED=1 go test -race -count=1 -shuffle=on -timeout 20m ./...

step "benchmarks, once each (they keep compiling and working; numbers: BENCHMARKS.md)"
go test -run '^$' -bench . -benchtime 1x -count=1 ./...

step "fuzz smoke (FUZZTIME=${FUZZTIME:-3s} per target)"
FUZZTIME="${FUZZTIME:-3s}" bash scripts/fuzz-smoke.sh

step "all checks passed"
