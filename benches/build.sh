#!/usr/bin/env bash
# Build benchmark (issue 8): the 10-step Dockerfile (5 RUN steps, a COPY of a
# 10 MB context, ENV, WORKDIR, CMD) from a busybox base, built by the release
# binary's daemon in a state root of its own:
#   - a fully cached rebuild (target: at most 50 ms),
#   - a cold build (--no-cache; target: at most 1.3x the time its RUN
#     commands take by themselves, measured by running them with the host's
#     busybox sh).
# With BENCH_DOCKER=1 and dockerd installed, Docker's classic builder
# (DOCKER_BUILDKIT=0) is measured side by side in a dockerd started here
# (own data root and socket, no bridge, no iptables) with the same busybox
# image loaded into it.
# Usage: benches/build.sh   (root; cargo build --release first)
# Recorded 2026-11-29 on the shared 2-core machine (other builds running):
# RUN commands alone 1.03 s; cached rebuild 16-24 ms (docker classic:
# 247 ms); cold build 1.60-1.80 s = 1.55-1.76x the RUN commands (docker
# classic: 4.58 s) -- the 1.3x cold target is not met yet.
set -euo pipefail
cd "$(dirname "$0")/.."
STACK=${STACK:-$PWD/target/release/stack}
[ -x "$STACK" ] || { echo "build the release binary first: cargo build --release" >&2; exit 1; }
command -v hyperfine >/dev/null || { echo "hyperfine is required" >&2; exit 1; }
BUSYBOX=$(command -v busybox)
WORK=$(mktemp -d /tmp/stack-bench-build.XXXXXX)
ROOT=$WORK/root
cleanup() {
  if [ -f "$ROOT/run/stack.pid" ]; then kill "$(cat "$ROOT/run/stack.pid")" 2>/dev/null || true; fi
  if [ -n "${DOCKERD_PID:-}" ]; then kill "$DOCKERD_PID" 2>/dev/null || true; wait "$DOCKERD_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
stack() { "$STACK" --root "$ROOT" "$@"; }

# The busybox image.
mkdir -p "$WORK/bb/bin" "$WORK/bb/etc" "$WORK/bb/tmp"
cp "$BUSYBOX" "$WORK/bb/bin/busybox"
for a in sh echo cat sleep seq sha256sum wc true ls mkdir; do ln -s busybox "$WORK/bb/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$WORK/bb/etc/passwd"
echo 'root:x:0:' > "$WORK/bb/etc/group"
stack import "$WORK/bb" bb:latest >/dev/null

# The context: 10 MB in 10 files, and the Dockerfile.
CTX=$WORK/ctx
mkdir -p "$CTX/data"
for i in $(seq 1 10); do head -c 1048576 /dev/urandom > "$CTX/data/f$i"; done
RUN1='sleep 0.3 && echo one > one'
RUN2='sha256sum data/* > sums'
RUN3='sleep 0.3 && seq 1 10000 > seq'
RUN4='wc -l < seq > count'
RUN5='sleep 0.3 && echo done > done'
cat > "$CTX/Dockerfile" <<DOCKERFILE
FROM bb
ENV MODE=bench
WORKDIR /app
COPY data /app/data
RUN $RUN1
RUN $RUN2
RUN $RUN3
RUN $RUN4
RUN $RUN5
CMD ["cat", "/app/done"]
DOCKERFILE

# The RUN commands by themselves (host busybox sh, in a copy of the data).
mkdir -p "$WORK/alone/app"
cp -r "$CTX/data" "$WORK/alone/app/"
{
  echo "cd $WORK/alone/app"
  for c in "$RUN1" "$RUN2" "$RUN3" "$RUN4" "$RUN5"; do printf '%s sh -c %q\n' "$BUSYBOX" "$c"; done
} > "$WORK/alone.sh"
ALONE="bash $WORK/alone.sh"

stack build -q -t bench "$CTX" >/dev/null   # warms the daemon and the cache
echo "== RUN commands alone"
hyperfine --warmup 1 --runs 5 --export-json "$WORK/alone.json" "$ALONE"
echo "== stack build, fully cached"
hyperfine --warmup 2 --runs 20 --export-json "$WORK/cached.json" "$STACK --root $ROOT build -q -t bench $CTX"
echo "== stack build, cold (--no-cache)"
hyperfine --warmup 1 --runs 5 --export-json "$WORK/cold.json" "$STACK --root $ROOT build -q --no-cache -t bench $CTX"
mean() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['results'][0]['mean'])" "$1"; }
A=$(mean "$WORK/alone.json"); C=$(mean "$WORK/cached.json"); K=$(mean "$WORK/cold.json")
python3 - "$A" "$C" "$K" <<'PY'
import sys
a, c, k = map(float, sys.argv[1:])
print(f"RUN commands alone: {a*1000:.0f} ms")
print(f"cached rebuild:     {c*1000:.0f} ms (target <= 50 ms)")
print(f"cold build:         {k*1000:.0f} ms = {k/a:.2f}x the RUN commands (target <= 1.3x)")
PY

if [ "${BENCH_DOCKER:-0}" = 1 ] && command -v dockerd >/dev/null; then
  DSOCK=$WORK/docker.sock
  dockerd --data-root "$WORK/docker" --exec-root "$WORK/docker-exec" --pidfile "$WORK/docker.pid" \
    -H "unix://$DSOCK" --bridge=none --iptables=false --ip6tables=false >"$WORK/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  for _ in $(seq 1 100); do [ -S "$DSOCK" ] && break; sleep 0.1; done
  export DOCKER_HOST=unix://$DSOCK DOCKER_BUILDKIT=0
  tar -C "$WORK/bb" -c . | docker import - bb:latest >/dev/null
  docker build -q -t bench "$CTX" >/dev/null
  echo "== docker build (classic builder), fully cached"
  hyperfine --warmup 2 --runs 10 "docker build -q -t bench $CTX"
  echo "== docker build (classic builder), cold"
  hyperfine --warmup 1 --runs 5 "docker build -q --no-cache -t bench $CTX"
fi
