#!/usr/bin/env bash
# Usage: lean_test.sh SOURCE_DIR CONVERGE_BINARY
# The lean install: `make run` asks scripts/install-deps for the run set only, which holds no
# test or benchmark package; the test and bench sets add theirs; a build with none of the
# test and benchmark packages configures (tests and benchmarks skipped); the converge binary
# links nats.c (the JetStream log backend, so libnats-dev is in the run set) but not the
# benchmarks' other clients (hiredis).
set -euo pipefail
source_dir=$1
binary=$2
deps="$source_dir/scripts/install-deps"
fail() { echo "FAIL: $*"; exit 1; }

run_set=$("$deps" run --dry-run)
test_set=$("$deps" test --dry-run)
bench_set=$("$deps" bench --dry-run)
[ "$("$deps" --dry-run)" = "$run_set" ] || fail "the default set is not run"
grep -qx cmake <<<"$run_set" || fail "run set lacks cmake"
grep -qx libnats-dev <<<"$run_set" || fail "run set lacks libnats-dev (the JetStream log backend)"
for p in libgtest-dev libgmock-dev libbenchmark-dev libhiredis-dev postgresql-15 \
         nats-server redis-server json-schema-test-suite systemd; do
  if grep -qx "$p" <<<"$run_set"; then fail "run set holds the test/bench package $p"; fi
done
grep -qx file <<<"$("$deps" package --dry-run)" || fail "package set lacks file (CPack's shlibdeps)"
for p in libgtest-dev postgresql-15 nats-server redis-server systemd file cmake; do
  grep -qx "$p" <<<"$test_set" || fail "test set lacks $p"
done
for p in libbenchmark-dev libnats-dev libhiredis-dev nats-server redis-server cmake; do
  grep -qx "$p" <<<"$bench_set" || fail "bench set lacks $p"
done
if grep -qx libgtest-dev <<<"$bench_set"; then fail "bench set holds GoogleTest"; fi
if "$deps" nonsense --dry-run >/dev/null 2>&1; then fail "an unknown set is accepted"; fi
# The Makefile's goals ask for their sets.
for goal in run:run test:test bench:bench package:package; do
  out=$(make -s -n -C "$source_dir" "${goal%%:*}" 2>/dev/null | grep install-deps || true)
  grep -q "install-deps ${goal##*:}\$" <<<"$out" || fail "make ${goal%%:*} runs '$out'"
done
echo "install-deps sets: ok (run: $(wc -l <<<"$run_set") packages)"

# A machine with the run set only: the test and benchmark packages hidden from CMake.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ! cmake -S "$source_dir" -B "$work/b" -G Ninja -DCMAKE_DISABLE_FIND_PACKAGE_GTest=ON \
     -DCMAKE_DISABLE_FIND_PACKAGE_benchmark=ON >"$work/log" 2>&1; then
  cat "$work/log"
  fail "configure without the test and bench packages"
fi
grep -q "tests not built" "$work/log" || fail "tests were not skipped"
grep -q "benchmarks not built" "$work/log" || fail "benchmarks were not skipped"
if grep -qE 'gtest|hiredis|benchmark' "$work/b/build.ninja"; then
  fail "the run-only build links a test or bench library"
fi
echo "configure with the run set only: ok"

if ldd "$binary" | grep -E 'hiredis'; then fail "$binary links a benchmark client"; fi
# (Not `ldd | grep -q`: with pipefail, grep's early exit makes ldd's SIGPIPE fail the check.)
grep -q libnats <<<"$(ldd "$binary")" || fail "$binary does not link nats.c"
echo "ldd $binary: nats.c, no hiredis"
