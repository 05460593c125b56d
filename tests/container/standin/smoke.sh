#!/usr/bin/env bash
# End-to-end check of the stand-in Lambda Python image.
#
# Builds the stand-in (build.sh, a no-op when up to date), builds a throwaway
# function image FROM it, runs it under the Runtime Interface Emulator on
# loopback and invokes it with curl, then removes everything it created.
#
# Modes (LMS_SMOKE_MODES, default "bridge host runtime-api"):
#   bridge  docker run -p 127.0.0.1:PORT:8080 (RIE on 0.0.0.0:8080 inside the
#           container's own network namespace; the host side binds loopback)
#   host    docker run --network host with RIE and its Runtime API on
#           127.0.0.1 ports of the host, and -w / to show that the handler is
#           resolved from LAMBDA_TASK_ROOT, not from the working directory
#   runtime-api  the entrypoint with AWS_LAMBDA_RUNTIME_API set (as on AWS):
#           it must run the runtime directly; an outer RIE provides the API
#
# Uses DOCKER_HOST when it answers; otherwise starts the private engine with
# .ci/docker-up and stops it again at the end (LMS_SMOKE_KEEP_ENGINE=1 keeps it).
set -Eeuo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
MODES="${LMS_SMOKE_MODES:-bridge host runtime-api}"
STANDIN_TAG="${LMS_STANDIN_TAG:-lambda-ml-serve/standin-python:3.11}"
SMOKE_TAG="lambda-ml-serve/standin-smoke:$$"
INVOKE_PATH=/2015-03-31/functions/function/invocations
READY_TIMEOUT="${LMS_SMOKE_TIMEOUT:-60}"

say() { printf 'smoke: %s\n' "$*" >&2; }
die() { printf 'smoke: FAILED: %s\n' "$*" >&2; exit 1; }
trap 'say "command at line $LINENO exited with status $?"' ERR

T0=$SECONDS
WORK="$(mktemp -d "${TMPDIR:-/tmp}/lms-standin-smoke.XXXXXX")"
containers=()
image_built=0
engine_started=0

cleanup() {
  local rc=$? c
  trap - ERR
  for c in "${containers[@]}"; do
    [[ -n "$c" ]] || continue
    docker rm -f "$c" >/dev/null 2>&1 || say "could not remove container $c"
  done
  if ((image_built)); then
    docker rmi -f "$SMOKE_TAG" >/dev/null 2>&1 || say "could not remove image $SMOKE_TAG"
  fi
  rm -rf "$WORK"
  if ((engine_started)) && [[ "${LMS_SMOKE_KEEP_ENGINE:-0}" != 1 ]]; then
    "$ROOT/.ci/docker-down" || say "docker-down failed"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

command -v curl >/dev/null 2>&1 ||
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o DPkg::Lock::Timeout=600 curl >&2 || die "curl is missing and could not be installed"

# ------------------------------------------------------------------ engine ---
if ! { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }; then
  sock="${LMS_DOCKER_SOCK:-/run/lms-docker.sock}"
  if ! { command -v docker >/dev/null 2>&1 && docker -H "unix://$sock" info >/dev/null 2>&1; }; then
    engine_started=1
  fi
  eval "$("$ROOT/.ci/docker-up")"
  export DOCKER_HOST
fi
say "engine: ${DOCKER_HOST:-default socket}"

# ----------------------------------------------------------------- images ---
t=$SECONDS
"$HERE/build.sh" >/dev/null
say "stand-in ready in $((SECONDS - t))s"

mkdir -p "$WORK/ctx"
cat >"$WORK/ctx/app.py" <<'EOF'
def handler(event, context):
    return {"ok": True, "echo": event}
EOF
cat >"$WORK/ctx/Dockerfile" <<EOF
FROM $STANDIN_TAG
COPY app.py \${LAMBDA_TASK_ROOT}/
CMD ["app.handler"]
EOF
t=$SECONDS
DOCKER_BUILDKIT=0 docker build --quiet -t "$SMOKE_TAG" "$WORK/ctx" >"$WORK/build.log" 2>&1 ||
  { cat "$WORK/build.log" >&2; die "building the function image failed"; }
image_built=1
say "function image built in $((SECONDS - t))s"

# --------------------------------------------------------------- contract ---
run_none() { docker run --rm --network none "$@"; }
v="$(run_none --entrypoint python "$SMOKE_TAG" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[[ "$v" == 3.11 ]] || die "python is $v, expected 3.11"
v="$(run_none --entrypoint python3 "$SMOKE_TAG" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[[ "$v" == 3.11 ]] || die "python3 is $v, expected 3.11"
# shellcheck disable=SC2016  # expanded inside the container
v="$(run_none --entrypoint /bin/sh "$SMOKE_TAG" -c 'echo "$LAMBDA_TASK_ROOT $LAMBDA_RUNTIME_DIR $(pwd) $(ls /var/task)"')"
[[ "$v" == "/var/task /var/runtime /var/task app.py" ]] || die "unexpected layout: $v"
rc=0
run_none --entrypoint /lambda-entrypoint.sh "$SMOKE_TAG" >/dev/null 2>&1 || rc=$?
[[ "$rc" == 142 ]] || die "entrypoint without a handler exited $rc, expected 142"
say "contract: python/python3 3.11, LAMBDA_TASK_ROOT=/var/task, entrypoint exit 142 without handler"

# ----------------------------------------------------------------- invoke ---
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# invoke NAME URL: retries until the emulator answers, then checks the body.
invoke() {
  local name="$1" url="$2" body="" deadline=$((SECONDS + READY_TIMEOUT)) t0=$SECONDS
  while :; do
    if body="$(curl -sS -m 20 -XPOST "$url" -d '{"a":1}' 2>"$WORK/curl.err")"; then
      break
    fi
    if ((SECONDS >= deadline)); then
      cat "$WORK/curl.err" >&2
      say "container logs:"
      docker logs "$name" 2>&1 | tail -n 30 >&2
      die "no answer from $url within ${READY_TIMEOUT}s"
    fi
    if [[ "$(docker inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" != true ]]; then
      docker logs "$name" 2>&1 | tail -n 30 >&2
      die "container $name exited"
    fi
    sleep 0.3
  done
  python3 -c '
import json, sys
got = json.loads(sys.argv[1])
want = {"ok": True, "echo": {"a": 1}}
sys.exit(0 if got == want else "handler returned %r, expected %r" % (got, want))
' "$body" || { docker logs "$name" 2>&1 | tail -n 30 >&2; die "wrong answer from $url"; }
  say "  POST $url -> $body ($((SECONDS - t0))s)"
}

# listeners PORT...: every TCP listener on these ports is on 127.0.0.1.
check_loopback_only() {
  command -v ss >/dev/null 2>&1 || { say "  (ss not installed; listener check skipped)"; return 0; }
  local p lines
  for p in "$@"; do
    lines="$(ss -Hltn "( sport = :$p )")"
    [[ -n "$lines" ]] || die "nothing listens on port $p"
    if awk '{ print $4 }' <<<"$lines" | grep -qv '^127\.0\.0\.1:'; then
      printf '%s\n' "$lines" >&2
      die "port $p is not bound to 127.0.0.1 only"
    fi
  done
  say "  listeners on port(s) $* are bound to 127.0.0.1 only"
}

for mode in $MODES; do
  name="lms-standin-smoke-$mode-$$"
  case "$mode" in
    bridge)
      port="$(free_port)"
      say "mode bridge: -p 127.0.0.1:$port:8080"
      containers+=("$name")
      docker run -d --name "$name" -p "127.0.0.1:$port:8080" "$SMOKE_TAG" >/dev/null 2>"$WORK/run.err" ||
        { cat "$WORK/run.err" >&2; die "docker run ($mode) failed"; }
      invoke "$name" "http://127.0.0.1:$port$INVOKE_PATH"
      check_loopback_only "$port"
      ;;
    host)
      port="$(free_port)"
      api_port="$(free_port)"
      [[ "$api_port" != "$port" ]] || api_port="$(free_port)"
      say "mode host: RIE on 127.0.0.1:$port, Runtime API on 127.0.0.1:$api_port, workdir /"
      containers+=("$name")
      docker run -d --name "$name" --network host -w / \
        -e "LMS_RIE_ADDRESS=127.0.0.1:$port" -e "LMS_RIE_RUNTIME_API_ADDRESS=127.0.0.1:$api_port" \
        "$SMOKE_TAG" >/dev/null 2>"$WORK/run.err" ||
        { cat "$WORK/run.err" >&2; die "docker run ($mode) failed"; }
      invoke "$name" "http://127.0.0.1:$port$INVOKE_PATH"
      check_loopback_only "$port" "$api_port"
      ;;
    runtime-api)
      # The entrypoint's other branch: with AWS_LAMBDA_RUNTIME_API set it runs
      # the runtime directly (as on AWS). Here the emulator, started as the
      # container's command, provides that API and sets the variable.
      port="$(free_port)"
      api_port="$(free_port)"
      [[ "$api_port" != "$port" ]] || api_port="$(free_port)"
      say "mode runtime-api: entrypoint under an outer RIE (127.0.0.1:$port, API 127.0.0.1:$api_port)"
      containers+=("$name")
      docker run -d --name "$name" --network host --entrypoint /usr/local/bin/aws-lambda-rie \
        "$SMOKE_TAG" --runtime-interface-emulator-address="127.0.0.1:$port" \
        --runtime-api-address="127.0.0.1:$api_port" /lambda-entrypoint.sh app.handler \
        >/dev/null 2>"$WORK/run.err" || { cat "$WORK/run.err" >&2; die "docker run ($mode) failed"; }
      invoke "$name" "http://127.0.0.1:$port$INVOKE_PATH"
      check_loopback_only "$port" "$api_port"
      ;;
    *) die "unknown mode '$mode' (use bridge, host, runtime-api)" ;;
  esac
  docker rm -f "$name" >/dev/null
  containers=("${containers[@]/$name/}")
done

say "OK: stand-in $STANDIN_TAG answered in mode(s): $MODES ($((SECONDS - T0))s total)"
