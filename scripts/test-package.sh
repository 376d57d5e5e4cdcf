#!/usr/bin/env bash
# Builds the .deb (packaging/build-deb.sh, in build-pkg/ or $PKG_BUILD_DIR),
# checks its control data and contents, unpacks it into a scratch root and
# runs what it installed: the binary (--version, --help, a server started the
# way the systemd unit starts it, a publish, the history, SIGHUP, SIGTERM, a
# restart that keeps the history), the man page (rendered without warnings),
# the unit (systemd-analyze verify) and the maintainer scripts (secrets made
# once, removed on purge). Prints each check; exits non-zero on the first
# failure. Everything it starts is stopped, and its temporary files removed,
# on exit. About 5-30 s (the build is most of it; 3 s when it is up to date).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${PKG_BUILD_DIR:-build-pkg}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3 || echo /usr/bin/python3)

# Tools (scripts/deps.sh test installs them; man-db renders the man page).
for t in cmake cpack dpkg dpkg-deb dpkg-shlibdeps readelf ldd curl; do
  command -v "$t" >/dev/null 2>&1 || { echo "FAIL: $t is not installed" >&2; exit 1; }
done
[ -x "$PY" ] || { echo "FAIL: python3 is not installed" >&2; exit 1; }

tmp=$(mktemp -d /tmp/agentwire-pkg.XXXXXX)
server_pid=""
cleanup() {
  local rc=$?
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "  ok: $*"; }
section() { echo "== $*"; }

# ------------------------------------------------------------------- build
section "build the .deb ($build)"
deb=$(packaging/build-deb.sh "$build" 2>"$tmp/build.err" | tail -1) || {
  cat "$tmp/build.err" >&2; fail "packaging/build-deb.sh failed"; }
[ -f "$deb" ] || fail "no .deb made (got '$deb')"
ok "$deb ($(stat -c %s "$deb") bytes)"

# ------------------------------------------------------------ control data
section "dpkg-deb -I: control fields"
field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = agentwire ] || fail "Package is '$(field Package)'"
ok "Package: agentwire"
version=$(field Version)
[[ "$version" =~ ^0\.[0-9]+\.[0-9]+(-[0-9A-Za-z.+~]+)?$ ]] || fail "Version '$version' is not 0.x"
ok "Version: $version"
[ "$(field Section)" = net ] || fail "Section is '$(field Section)', not net"
ok "Section: net"
[ "$(field Architecture)" = "$(dpkg --print-architecture)" ] || fail "Architecture is '$(field Architecture)'"
ok "Architecture: $(field Architecture)"
[[ "$(field Maintainer)" =~ ^.+\ \<[^@\ ]+@[^\ ]+\>$ ]] || fail "Maintainer '$(field Maintainer)' is not 'Name <address>'"
ok "Maintainer: $(field Maintainer)"
[ -n "$(field Description)" ] || fail "no Description"
ok "Description: $(field Description | head -1)"
depends=$(field Depends)
[ -n "$depends" ] || fail "no Depends"
dep_names=$(echo "$depends" | tr ',' '\n' | sed 's/^ *//; s/[ (].*//' | sort -u)
for p in libc6 libuv1 libssl3 libjansson4 libhttp-parser2.9 zlib1g libhiredis0.14 libsqlite3-0 libcurl4; do
  grep -qx "$p" <<<"$dep_names" || fail "Depends lacks $p: $depends"
done
ok "Depends: $depends"
grep -qx procps <<<"$dep_names" || fail "Depends lacks procps (the unit's ExecReload runs /bin/kill)"
grep -q '/etc/agentwire/agentwire.env' <(dpkg-deb -I "$deb" conffiles 2>/dev/null) ||
  fail "/etc/agentwire/agentwire.env is not a conffile"
ok "conffiles: $(dpkg-deb -I "$deb" conffiles | tr '\n' ' ')"
for s in postinst prerm postrm; do
  dpkg-deb -I "$deb" "$s" >/dev/null 2>&1 || fail "no $s script"
done
ok "maintainer scripts: postinst prerm postrm"

# ----------------------------------------------------------------- content
section "dpkg-deb -c: contents"
dpkg-deb -c "$deb" | awk '{print $1, $NF}' >"$tmp/contents"
has() { grep -q " \./${1#/}\$" "$tmp/contents" || fail "the package lacks $1"; }
mode_of() { awk -v f="./${1#/}" '$2 == f {print $1}' "$tmp/contents"; }
has /usr/bin/agentwire
[ "$(mode_of /usr/bin/agentwire)" = "-rwxr-xr-x" ] || fail "/usr/bin/agentwire is $(mode_of /usr/bin/agentwire)"
man_page=$(grep -Eo '\./usr/share/man/man1/agentwire\.1(\.gz)?$' "$tmp/contents" | head -1 | sed 's/^\.//')
[ -n "$man_page" ] || fail "the package lacks the man page (/usr/share/man/man1/agentwire.1[.gz])"
unit=$(grep -Eo '\./(usr/)?lib/systemd/system/agentwire\.service$' "$tmp/contents" | head -1 | sed 's/^\.//')
[ -n "$unit" ] || fail "the package lacks agentwire.service in /lib/systemd/system or /usr/lib/systemd/system"
has /etc/agentwire/agentwire.env
has /usr/share/doc/agentwire/operations.md
while read -r _ f; do
  case "$f" in
    ./ | ./etc/ | ./etc/agentwire/* | ./usr/ | ./usr/bin/ | ./usr/bin/agentwire | ./usr/lib/ | \
    ./usr/lib/systemd/* | ./lib/ | ./lib/systemd/* | ./usr/share/ | ./usr/share/man/ | \
    ./usr/share/man/man1/ | ".$man_page" | ./usr/share/doc/ | ./usr/share/doc/agentwire/*) ;;
    *) fail "unexpected file in the package: $f" ;;
  esac
done <"$tmp/contents"
ok "/usr/bin/agentwire, $man_page, $unit, /etc/agentwire/agentwire.env, /usr/share/doc/agentwire/"

# ----------------------------------------------------------------- unpack
section "unpack into a scratch root (dpkg -x)"
root=$tmp/root
dpkg -x "$deb" "$root"
dpkg-deb -e "$deb" "$tmp/control"
bin=$root/usr/bin/agentwire
[ -x "$bin" ] || fail "$bin is not executable"
ok "$root"

section "every library of the binary is in Depends"
while read -r lib; do
  path=$(ldd "$bin" | awk -v l="$lib" '$1 == l {print $3}')
  [ -n "$path" ] && [ "$path" != "not" ] || fail "$lib: not found by ldd"
  owner=$(dpkg -S "$path" 2>/dev/null || dpkg -S "$(readlink -f "$path")" 2>/dev/null ||
          dpkg -S "/usr$path" 2>/dev/null || true)
  pkg=${owner%%:*}
  [ -n "$pkg" ] || fail "$lib ($path): no package owns it"
  grep -qx "$pkg" <<<"$dep_names" || fail "$lib comes from $pkg, which Depends lacks"
  ok "$lib -> $pkg"
done < <(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
readelf -h "$bin" | grep -q 'Type: *DYN' || fail "the binary is not position-independent"
readelf -d "$bin" | grep -Eq 'BIND_NOW|FLAGS_1.*NOW' || fail "the binary is not linked with -z now"
readelf -lW "$bin" | grep -q GNU_RELRO || fail "the binary has no RELRO segment"
ok "hardened: PIE, full RELRO (dpkg-buildflags hardening=+all)"

# ------------------------------------------------------------ the binary
section "installed binary: --version, --help"
upstream=${version%-*}
out=$("$bin" --version) || fail "--version exited $?"
[ "$out" = "agentwire $upstream" ] || fail "--version says '$out', the package is $version"
ok "--version: $out"
"$bin" --help >"$tmp/help" || fail "--help exited $?"
grep -q '^Usage: agentwire' "$tmp/help" || fail "--help has no Usage line"
grep -q -- '--data-dir DIR' "$tmp/help" || fail "--help lacks --data-dir"
ok "--help: $(grep -c '^  --' "$tmp/help") options"
set +e; "$bin" --no-such-option 2>"$tmp/bad.err"; rc=$?; set -e
[ $rc -eq 2 ] || fail "an unknown option exited $rc, not 2"
ok "an unknown option: exit 2 ($(head -1 "$tmp/bad.err"))"

# ------------------------------------------------------------ the man page
section "man page"
zcat -f "$root$man_page" >"$tmp/agentwire.1"
if command -v man >/dev/null 2>&1; then
  MANWIDTH=80 LC_ALL=C.UTF-8 man --warnings -E UTF-8 -l "$root$man_page" >"$tmp/man.txt" 2>"$tmp/man.err" ||
    { cat "$tmp/man.err" >&2; fail "man -l failed"; }
  [ ! -s "$tmp/man.err" ] || { cat "$tmp/man.err" >&2; fail "man -l printed warnings"; }
  ok "man --warnings -l: no warnings"
elif command -v groff >/dev/null 2>&1; then
  LC_ALL=C.UTF-8 groff -man -Tutf8 -P-cbou -ww -rLL=80n "$tmp/agentwire.1" >"$tmp/man.txt" 2>"$tmp/man.err"
  [ ! -s "$tmp/man.err" ] || { cat "$tmp/man.err" >&2; fail "groff printed warnings"; }
  ok "groff -ww: no warnings"
else
  fail "neither man nor groff is installed (apt-get install man-db)"
fi
if command -v groff >/dev/null 2>&1; then
  groff -man -ww -z "$tmp/agentwire.1" 2>"$tmp/groff.err"
  [ ! -s "$tmp/groff.err" ] || { cat "$tmp/groff.err" >&2; fail "groff -man -ww printed warnings"; }
  ok "groff -man -ww: no warnings"
fi
"$PY" - "$tmp/man.txt" "$tmp/help" "$upstream" <<'EOF' || fail "the man page does not match --help"
import re, sys
text = open(sys.argv[1], encoding="utf-8").read()
text = re.sub(r".\x08", "", text)                 # overstrike, if any
for s in ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SIGNALS", "FILES", "ENVIRONMENT",
          "EXIT STATUS", "SEE ALSO"]:
    if not re.search(rf"^{s}$", text, re.M):
        sys.exit(f"section {s} missing")
if f"agentwire {sys.argv[3]}" not in re.sub(r"\s+", " ", text):
    sys.exit(f"the page does not say version {sys.argv[3]}")
help_lines = open(sys.argv[2], encoding="utf-8").read().splitlines()
heads = []
for line in help_lines:
    m = re.match(r"^  (--[a-z0-9-]+(?: \S+)?)\s", line)
    if m:
        heads.append(m.group(1))
# The OPTIONS section, split into entries at their tags (indented 7 columns;
# a short tag shares its line with the start of the text).
section = text[re.search(r"^OPTIONS$", text, re.M).end():re.search(r"^SIGNALS$", text, re.M).start()]
entries, cur = {}, None
for line in section.splitlines():
    tag = line[7:] if line.startswith(" " * 7 + "--") else ""
    found = [h for h in heads if tag == h or tag.startswith(h + " ")]
    if found:
        cur = max(found, key=len)
        entries[cur] = [tag[len(cur):]]
    elif cur:
        entries[cur].append(line)
def flat(lines):
    t = "\n".join(lines)
    t = re.sub(r"\u2010\n\s*", "", t)           # a word hyphenated at a line end
    return re.sub(r"\s+", " ", t).strip()
entries = {k: flat(v) for k, v in entries.items()}
n, seen = 0, set()
for i, line in enumerate(help_lines):
    m = re.match(r"^  (--[a-z0-9-]+)(?: (\S+))?\s+(.*)$", line)
    if not m:
        continue
    flag, metavar, rest = m.groups()
    head = flag + (" " + metavar if metavar else "")
    if head not in entries:
        sys.exit(f"{head} has no entry in OPTIONS")
    entry = entries[head]
    seen.add(head)
    env = re.match(r"^\s+env (AGENTWIRE_\w+)", help_lines[i + 1]) if i + 1 < len(help_lines) else None
    if env and f"Environment: {env.group(1)}." not in entry:
        sys.exit(f"{flag}: its variable {env.group(1)} is not in its entry: {entry!r}")
    d = re.search(r" \[([^\]]*)\]$", rest)
    if d and f"Default: {d.group(1)}." not in entry:
        sys.exit(f"{flag}: its default [{d.group(1)}] is not in its entry: {entry!r}")
    n += 1
if set(entries) - seen:
    sys.exit(f"OPTIONS has entries that --help lacks: {sorted(set(entries) - seen)}")
if n < 20:
    sys.exit(f"only {n} options in --help")
print(f"  ok: all {n} options of --help are in the man page, with their variables and defaults")
EOF
ok "sections NAME SYNOPSIS DESCRIPTION OPTIONS SIGNALS FILES ENVIRONMENT EXIT STATUS SEE ALSO"

# ------------------------------------------------------------ the unit
section "systemd unit"
unit_file=$root$unit
for want in '^DynamicUser=yes$' '^ProtectSystem=strict$' '^NoNewPrivileges=yes$' '^LimitNOFILE=[0-9]+$' \
    '^StateDirectory=agentwire$' '^EnvironmentFile=-/etc/agentwire/agentwire.env$' \
    '^LoadCredential=jwt-secret:/etc/agentwire/jwt-secret$' '^LoadCredential=api-key:/etc/agentwire/api-key$' \
    '^ExecStart=/usr/bin/agentwire .*--data-dir /var/lib/agentwire' \
    '^ExecStart=.*--jwt-secret-file \$\{CREDENTIALS_DIRECTORY\}/jwt-secret' \
    '^ExecStart=.*--api-key-file \$\{CREDENTIALS_DIRECTORY\}/api-key'; do
  grep -Eq "$want" "$unit_file" || fail "the unit has no line matching $want"
done
ok "DynamicUser, ProtectSystem=strict, NoNewPrivileges, LimitNOFILE, StateDirectory, credentials, EnvironmentFile"
if command -v systemd-analyze >/dev/null 2>&1; then
  # The unit as installed, but pointing at the unpacked binary (nothing is started).
  mkdir -p "$tmp/unit"
  sed "s|/usr/bin/agentwire|$bin|g" "$unit_file" >"$tmp/unit/agentwire.service"
  systemd-analyze verify --man=no "$tmp/unit/agentwire.service" >"$tmp/verify.out" 2>&1 ||
    { cat "$tmp/verify.out" >&2; fail "systemd-analyze verify"; }
  [ ! -s "$tmp/verify.out" ] || { cat "$tmp/verify.out" >&2; fail "systemd-analyze verify printed warnings"; }
  ok "systemd-analyze verify: clean"
  if systemd-analyze security --offline=yes "$tmp/unit/agentwire.service" >"$tmp/security.out" 2>&1; then
    ok "systemd-analyze security: $(grep -o 'Overall exposure level.*' "$tmp/security.out" | sed 's/.*: //')"
  fi
else
  echo "  skipped: systemd-analyze verify (no systemd-analyze)"
fi

# ------------------------------------------------- the maintainer scripts
section "maintainer scripts, in the scratch root (DPKG_ROOT)"
DPKG_ROOT=$root sh "$tmp/control/postinst" configure "" >"$tmp/postinst.out" ||
  fail "postinst configure exited $?"
for s in jwt-secret api-key; do
  f=$root/etc/agentwire/$s
  [ -f "$f" ] || fail "postinst made no $f"
  [ "$(stat -c %a "$f")" = 600 ] || fail "$f has mode $(stat -c %a "$f"), not 600"
  grep -Eqx '[0-9a-f]{64}' "$f" || fail "$f is not 64 hex digits"
done
sum=$(cat "$root/etc/agentwire/jwt-secret" "$root/etc/agentwire/api-key" | md5sum)
DPKG_ROOT=$root sh "$tmp/control/postinst" configure "$version" >/dev/null
[ "$(cat "$root/etc/agentwire/jwt-secret" "$root/etc/agentwire/api-key" | md5sum)" = "$sum" ] ||
  fail "postinst replaced existing secrets"
ok "postinst: random root-only jwt-secret and api-key, kept on upgrade"

# ------------------------------------------------------------ smoke run
wait_listening() { # $1: stderr file; prints HOST:PORT
  local i
  for i in $(seq 1 100); do
    if grep -q 'listening addr=' "$1" 2>/dev/null; then
      sed -n 's/.*listening addr=\([^ ]*\).*/\1/p' "$1" | head -1
      return 0
    fi
    kill -0 "$server_pid" 2>/dev/null || { cat "$1" >&2; fail "the server exited before listening"; }
    sleep 0.1
  done
  cat "$1" >&2
  fail "the server did not listen within 10 s"
}
wait_ready() { # $1: base URL
  local i code
  for i in $(seq 1 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1/readyz" || true)
    [ "$code" = 200 ] && return 0
    sleep 0.1
  done
  fail "/readyz did not answer 200 within 10 s (last: $code)"
}
stop_server() { # SIGTERM, then the exit status must be 0 within 20 s
  local i rc
  kill -TERM "$server_pid"
  for i in $(seq 1 200); do
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
    fail "the server did not exit within 20 s of SIGTERM"
  fi
  set +e; wait "$server_pid"; rc=$?; set -e
  server_pid=""
  [ $rc -eq 0 ] || fail "the server exited $rc after SIGTERM, not 0"
  ok "SIGTERM: drained and exited 0"
}
api() { # METHOD URL [BODY]: prints the body, fails unless 200
  local code
  if [ $# -ge 3 ]; then
    code=$(curl -sS -o "$tmp/resp" -w '%{http_code}' --max-time 5 -X "$1" \
      -H "Authorization: Bearer $key" -H 'Content-Type: application/json' -d "$3" "$2") || fail "curl $1 $2"
  else
    code=$(curl -sS -o "$tmp/resp" -w '%{http_code}' --max-time 5 -X "$1" \
      -H "Authorization: Bearer $key" "$2") || fail "curl $1 $2"
  fi
  [ "$code" = 200 ] || { cat "$tmp/resp" >&2; echo >&2; fail "$1 $2 answered $code"; }
  cat "$tmp/resp"
}
json() { "$PY" -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {"d": d}))' "$1"; }

section "smoke run 1: started as the unit starts it (credentials, state directory, env file)"
creds=$tmp/credentials
state=$tmp/state
mkdir -m 700 "$creds" "$state"
cp "$root/etc/agentwire/jwt-secret" "$root/etc/agentwire/api-key" "$creds/"
key=$(cat "$creds/api-key")
# ExecStart= of the installed unit, with the directories systemd would give.
exec_start=$(sed -n 's/^ExecStart=//p' "$unit_file")
exec_start=${exec_start//'${CREDENTIALS_DIRECTORY}'/$creds}
exec_start=${exec_start//\/var\/lib\/agentwire/$state}
exec_start=${exec_start//\/usr\/bin\/agentwire/$bin}
read -r -a cmd <<<"$exec_start"
# EnvironmentFile=: the installed settings (all commented out), then a free port.
(set -a; . "$root/etc/agentwire/agentwire.env"; set +a
 exec env AGENTWIRE_LISTEN=127.0.0.1:0 AGENTWIRE_LOG_FORMAT=text "${cmd[@]}") \
  >"$tmp/run1.out" 2>"$tmp/run1.err" </dev/null &
server_pid=$!
addr=$(wait_listening "$tmp/run1.err")
base=http://$addr
wait_ready "$base"
ok "listening on $addr, /readyz 200"
grep -q "data dir dir=$state" "$tmp/run1.err" || fail "the server does not say it keeps its data in $state"
[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$base/healthz")" = 200 ] || fail "/healthz is not 200"
ok "/healthz 200"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H 'Authorization: Bearer wrong' \
  -d '{"user_id":"pkg-smoke","type":"note"}' "$base/api/v1/publish")
[ "$code" = 401 ] || fail "a publish with a wrong key answered $code, not 401"
ok "publish with a wrong API key: 401"
receipt=$(api POST "$base/api/v1/publish" '{"user_id":"pkg-smoke","type":"note","text":"hello from test-package"}')
seq=$(json 'd["seq"]' <<<"$receipt")
epoch=$(json 'd["epoch"]' <<<"$receipt")
event_id=$(json 'd["event_id"]' <<<"$receipt")
[ "$seq" = 1 ] || fail "the first publish got seq $seq: $receipt"
ok "POST /api/v1/publish: $receipt"
history=$(api GET "$base/api/v1/history?user_id=pkg-smoke&since=0")
[ "$(json '[(e["event_id"], e["type"], e["text"], e["seq"]) for e in d["events"]]' <<<"$history")" = \
  "[('$event_id', 'note', 'hello from test-package', 1)]" ] || fail "history: $history"
[ "$(json 'd["epoch"]' <<<"$history")" = "$epoch" ] || fail "history epoch differs: $history"
ok "GET /api/v1/history: the event ($event_id, epoch $epoch)"
kill -HUP "$server_pid"
for _ in $(seq 1 50); do grep -q 'SIGHUP' "$tmp/run1.err" && break; sleep 0.1; done
grep -q 'SIGHUP' "$tmp/run1.err" || fail "SIGHUP was not logged within 5 s"
kill -0 "$server_pid" 2>/dev/null || fail "the server died of SIGHUP (the unit's ExecReload)"
wait_ready "$base"
ok "SIGHUP (ExecReload): logged, still ready"
stop_server
[ -s "$state/agentwire.db" ] || fail "no $state/agentwire.db"
ok "$state/agentwire.db kept"

section "smoke run 2: --jwt-secret/--api-key flags, same --data-dir: the history survived"
"$bin" --listen 127.0.0.1:0 --jwt-secret "$(cat "$creds/jwt-secret")" --api-key "$key" \
  --data-dir "$state" >"$tmp/run2.out" 2>"$tmp/run2.err" </dev/null &
server_pid=$!
addr=$(wait_listening "$tmp/run2.err")
base=http://$addr
wait_ready "$base"
ok "listening on $addr, /readyz 200"
history=$(api GET "$base/api/v1/history?user_id=pkg-smoke&since=0")
[ "$(json '[(e["event_id"], e["seq"], e["epoch"]) for e in d["events"]]' <<<"$history")" = \
  "[('$event_id', 1, '$epoch')]" ] || fail "after the restart, history: $history"
ok "GET /api/v1/history after the restart: the same event, same epoch"
receipt=$(api POST "$base/api/v1/publish" '{"user_id":"pkg-smoke","type":"note","text":"second"}')
[ "$(json '(d["seq"], d["epoch"])' <<<"$receipt")" = "(2, '$epoch')" ] || fail "second publish: $receipt"
ok "POST /api/v1/publish after the restart: seq 2 in the same epoch"
stop_server

section "postrm purge, in the scratch root"
mkdir -p "$root/var/lib/private/agentwire"
DPKG_ROOT=$root sh "$tmp/control/postrm" purge || fail "postrm purge exited $?"
[ ! -e "$root/etc/agentwire/jwt-secret" ] && [ ! -e "$root/etc/agentwire/api-key" ] ||
  fail "postrm purge left the secrets"
[ ! -e "$root/var/lib/private/agentwire" ] || fail "postrm purge left the state directory"
ok "postrm purge: secrets and state removed"

echo "== package test passed: $deb"
