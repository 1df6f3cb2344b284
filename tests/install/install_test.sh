#!/usr/bin/env bash
# Usage: install_test.sh BUILD_DIR EXAMPLE_DIR
# Installs libconverge into a temporary prefix and builds examples/embed against it, as a
# service that embeds the library would: with the third-party packages libconverge uses
# internally hidden from the consumer's find_package, so the installed package config must
# not demand them (nor an exact Boost version).
set -euo pipefail
build_dir=$1
example_dir=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build_dir" --prefix "$work/prefix" --component dev >/dev/null
test -f "$work/prefix/include/converge/status.h"
config_dir="$work/prefix/lib/cmake/converge"
test -f "$config_dir/convergeConfig.cmake"
if grep -nE ' EXACT|Boost|PostgreSQL|SQLite|OpenSSL|yaml|xxhash|nats|hiredis' "$config_dir/convergeConfig.cmake"; then
  echo "the installed package config names a library a consumer does not need (above)"
  exit 1
fi
cmake -S "$example_dir" -B "$work/build" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" \
  -DCMAKE_DISABLE_FIND_PACKAGE_Boost=ON -DCMAKE_DISABLE_FIND_PACKAGE_PostgreSQL=ON \
  -DCMAKE_DISABLE_FIND_PACKAGE_SQLite3=ON -DCMAKE_DISABLE_FIND_PACKAGE_OpenSSL=ON \
  -DCMAKE_DISABLE_FIND_PACKAGE_yaml-cpp=ON >/dev/null
cmake --build "$work/build" >/dev/null
out=$("$work/build/embed_example")
echo "$out"
grep -q '^embedded converge ok$' <<<"$out"
