#!/usr/bin/env bash
# Usage: package_test.sh BUILD_DIR
# Builds the Debian package from BUILD_DIR (its converge binary must be built) into a temporary
# folder and checks it: control data, contents, the systemd unit, and that the packaged binary
# serves with the packaged config (only its paths and port changed).
set -euo pipefail
build_dir=$1
work=$(mktemp -d)
server=""
cleanup() {
  if [ -n "$server" ]; then kill -KILL "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

cpack --config "$build_dir/CPackConfig.cmake" -G DEB -B "$work/out" >"$work/cpack.log" 2>&1 ||
  { cat "$work/cpack.log"; fail "cpack"; }
debs=("$work"/out/converge_*.deb)
[ ${#debs[@]} -eq 1 ] && [ -f "${debs[0]}" ] || fail "expected one converge_*.deb, got: ${debs[*]}"
deb=${debs[0]}
echo "package: $(basename "$deb")"

# ---- control data ----
info=$(dpkg-deb -I "$deb")
field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = converge ] || fail "Package is '$(field Package)'"
grep -q '\badduser\b' <<<"$(field Depends)" || fail "Depends lacks adduser: $(field Depends)"
grep -q 'libc6' <<<"$(field Depends)" || fail "Depends lacks the shared libraries: $(field Depends)"
# nats.c is a run-time library (the JetStream log backend); the test and bench ones are not.
grep -q 'libnats' <<<"$(field Depends)" || fail "Depends lacks libnats: $(field Depends)"
if grep -qE 'hiredis|gtest|benchmark' <<<"$(field Depends)"; then
  fail "Depends names a test or bench library: $(field Depends)"
fi
for script in postinst prerm postrm conffiles; do
  grep -qE "^ +[0-9]+ bytes, +[0-9]+ lines +\*? +$script" <<<"$info" || fail "no $script in the control archive"
done
dpkg-deb -e "$deb" "$work/control"
[ "$(cat "$work/control/conffiles")" = /etc/converge/converge.yaml ] ||
  fail "conffiles: $(cat "$work/control/conffiles")"
grep -q 'adduser --system --group --home /var/lib/converge' "$work/control/postinst" ||
  fail "postinst does not create the system user"
for script in postinst prerm postrm; do sh -n "$work/control/$script" || fail "$script: syntax"; done
echo "control: ok ($(field Depends | tr -d '\n' | cut -c1-60)...)"

# ---- contents ----
listing=$(dpkg-deb -c "$deb")
contents=$(awk '{print $NF}' <<<"$listing")
for path in ./usr/bin/converge ./lib/systemd/system/converge.service ./etc/converge/converge.yaml; do
  grep -qx -- "$path" <<<"$contents" || fail "$path is not in the package"
done
if grep -E 'converge-bench|conflict_bench|/include/|libconverge|/cmake/' <<<"$contents"; then
  fail "the package holds files that are not the server's (above)"
fi
grep -q '^-rwxr-xr-x root/root .* ./usr/bin/converge$' <<<"$listing" ||
  fail "usr/bin/converge is not an executable owned by root"
echo "contents: ok"

# ---- the unit ----
root="$work/root"
dpkg-deb -x "$deb" "$root"
unit=/lib/systemd/system/converge.service
grep -qx 'ExecStart=/usr/bin/converge serve --config /etc/converge/converge.yaml' "$root$unit" ||
  fail "ExecStart"
grep -qx 'User=converge' "$root$unit" || fail "User"
grep -qx 'StateDirectory=converge' "$root$unit" || fail "StateDirectory"
command -v systemd-analyze >/dev/null || fail "systemd-analyze is missing (scripts/install-deps test installs systemd)"
# verify needs the units the service's dependencies name: the machine's own, next to the
# packaged one in a root folder where ExecStart's /usr/bin/converge is the packaged binary.
# (systemd does not have to run: verify and security --offline read files only.)
for f in /lib/systemd/system/*; do
  [ -e "$root/lib/systemd/system/$(basename "$f")" ] || cp -a "$f" "$root/lib/systemd/system/"
done
verify=$(systemd-analyze verify --root="$root" "$unit" 2>&1) || { echo "$verify"; fail "systemd-analyze verify"; }
[ -z "$verify" ] || { echo "$verify"; fail "systemd-analyze verify warns"; }
security=$(systemd-analyze security --offline=yes --threshold=20 --root="$root" "$unit" 2>&1) ||
  { echo "$security"; fail "systemd-analyze security: exposure above 2.0"; }
echo "unit: systemd-analyze verify ok; $(grep -o 'Overall exposure level.*' <<<"$security")"

# ---- the packaged binary with the packaged config ----
config="$work/converge.yaml"
sed -e "s|^listen: .*|listen: 127.0.0.1:0|" -e "s|^data_dir: .*|data_dir: $work/data|" \
  "$root/etc/converge/converge.yaml" >"$config"
diff <(grep -vE '^(listen|data_dir):' "$root/etc/converge/converge.yaml") \
     <(grep -vE '^(listen|data_dir):' "$config") >/dev/null || fail "config changed beyond paths and port"
"$root/usr/bin/converge" serve --config "$config" >"$work/serve.log" 2>&1 &
server=$!
url=""
for _ in $(seq 300); do
  url=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$work/serve.log" | head -1 || true)
  [ -n "$url" ] && break
  kill -0 "$server" 2>/dev/null || { cat "$work/serve.log"; fail "the packaged binary exited"; }
  sleep 0.1
done
[ -n "$url" ] || { cat "$work/serve.log"; fail "no listening line within 30 s"; }
ready=""
for _ in $(seq 300); do
  ready=$(curl -s -m 5 "$url/readyz" || true)
  [ "$ready" = '{"status":"ready"}' ] && break
  sleep 0.1
done
[ "$ready" = '{"status":"ready"}' ] || { cat "$work/serve.log"; fail "/readyz answered '$ready'"; }
kill -TERM "$server"
status=0
wait "$server" || status=$?
server=""
[ "$status" -eq 0 ] || { cat "$work/serve.log"; fail "exit status $status after SIGTERM"; }
[ -d "$work/data/log" ] || fail "no data written to the configured data_dir"
echo "packaged binary: served $url/readyz with the packaged config, drained on SIGTERM"
