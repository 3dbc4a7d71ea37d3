#!/usr/bin/env bash
# Runs every fuzz target in turn for N seconds each (default 600) and writes
# a summary to fuzz/results.md.
#
#   fuzz/run.sh [seconds-per-target]
#   TARGETS="startup pipeline" fuzz/run.sh 60      # only some targets
#   RESULTS=results-rerun.md fuzz/run.sh 120       # summary elsewhere
#
# Seeds are read from corpus/<target>/ and never written to: inputs libFuzzer
# finds go to target/corpus-work/<target>/ (kept between runs, git-ignored).
# Crashes land in artifacts/<target>/; logs in target/logs/<target>.log.
set -euo pipefail
cd "$(dirname "$0")"
FUZZ="$(pwd)"

SECS="${1:-600}"
RESULTS="${RESULTS:-results.md}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz
fi

ALL=$(cargo fuzz list)
TARGETS="${TARGETS:-$ALL}"

nice -n 10 cargo fuzz build >/dev/null

mkdir -p target/logs
rows=()
for t in $TARGETS; do
    work="target/corpus-work/$t"
    mkdir -p "$work" "artifacts/$t" "corpus/$t"
    before=$(ls "artifacts/$t" | wc -l)
    echo "== $t: ${SECS}s" >&2
    start=$(date +%s)
    # With -jobs libFuzzer writes the worker's output to fuzz-0.log in the
    # current directory: give each target its own, so that two run.sh with
    # different TARGETS may run side by side.
    rundir="$FUZZ/target/run/$t"
    mkdir -p "$rundir"
    rm -f "$rundir/fuzz-0.log"
    status=0
    (cd "$rundir" && nice -n 10 cargo fuzz run --fuzz-dir "$FUZZ" "$t" "$FUZZ/$work" "$FUZZ/corpus/$t" -- \
        -max_total_time="$SECS" -jobs=1 -print_final_stats=1) \
        >"target/logs/$t.run.log" 2>&1 || status=$?
    end=$(date +%s)
    if [ -f "$rundir/fuzz-0.log" ]; then
        mv "$rundir/fuzz-0.log" "target/logs/$t.log"
    else
        cp "target/logs/$t.run.log" "target/logs/$t.log"
    fi
    log="target/logs/$t.log"
    execs=$(grep -aoE '^stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1 || true)
    if [ -z "$execs" ]; then
        execs=$(grep -aoE '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)
    fi
    corp=$(grep -aoE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -1 | sed 's/corp: //' || true)
    after=$(ls "artifacts/$t" | wc -l)
    crashes=$((after - before))
    new=$(ls -t "artifacts/$t" | head -n "$crashes" | tr '\n' ' ')
    echo "   $t: $((end - start))s, ${execs:-?} execs, corpus ${corp:-?}, $crashes crash(es) ${new}(exit $status)" >&2
    rows+=("| $t | $((end - start)) | ${execs:-?} | ${corp:-?} (seeds: $(ls "corpus/$t" | wc -l)) | $crashes ${new:+(}${new% }${new:+)} |")
done

{
    echo "# Fuzz run $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "\`fuzz/run.sh $SECS\` on $(nproc) cores, one job per target, \`nice -n 10\`;"
    echo "$(rustc --version), $(cargo fuzz --version)."
    echo
    echo "| target | seconds | executions | corpus (units/bytes) | crashes |"
    echo "|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
} >"$RESULTS"
echo "summary written to fuzz/$RESULTS" >&2
