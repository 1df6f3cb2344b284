#!/usr/bin/env bash
# Usage: build_options_test.sh SOURCE_DIR
# The documented build options configure: a library-only build (no tests, no binary) must not
# trip over a test target that does not exist; a build without precompiled headers.
set -euo pipefail
source_dir=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
n=0
for flags in "-DCONVERGE_BUILD_TESTS=OFF" "-DCONVERGE_BUILD_TOOLS=OFF" \
             "-DCONVERGE_BUILD_TESTS=OFF -DCONVERGE_BUILD_TOOLS=OFF" "-DCONVERGE_PCH=OFF"; do
  n=$((n + 1))
  # shellcheck disable=SC2086
  if ! cmake -S "$source_dir" -B "$work/b$n" -G Ninja $flags >"$work/log$n" 2>&1; then
    echo "configure with $flags failed:"
    cat "$work/log$n"
    exit 1
  fi
  echo "configure with $flags: ok"
done
