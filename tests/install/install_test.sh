#!/usr/bin/env bash
# Usage: install_test.sh BUILD_DIR EXAMPLE_DIR
set -euo pipefail
build_dir=$1
example_dir=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build_dir" --prefix "$work/prefix" >/dev/null
test -f "$work/prefix/include/converge/status.h"
test -f "$work/prefix/lib/cmake/converge/convergeConfig.cmake"
cmake -S "$example_dir" -B "$work/build" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/build" >/dev/null
out=$("$work/build/embed_example")
echo "$out"
grep -q '^embedded converge ok$' <<<"$out"
