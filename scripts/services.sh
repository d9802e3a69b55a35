#!/usr/bin/env bash
# Start what the test suite needs on this machine, if it is not already running:
#   Redis at 127.0.0.1:6379 (noeviction) and LocalStack S3 at 127.0.0.1:4566.
# LocalStack runs on the host without Docker, from its own Python 3.13 venv.
set -euo pipefail

LOCALSTACK_VENV="${PLANTPIPE_LOCALSTACK_VENV:-$HOME/.cache/plantpipe-localstack}"
LOCALSTACK_LOG="${PLANTPIPE_LOCALSTACK_LOG:-/tmp/plantpipe-localstack.log}"

ensure_redis() {
  if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "services: Redis already running at 127.0.0.1:6379"
  else
    if ! command -v redis-server >/dev/null; then
      echo "services: redis-server not found; installing it with apt-get" >&2
      apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
    fi
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
      --maxmemory-policy noeviction --logfile /tmp/plantpipe-redis.log
    for _ in $(seq 1 50); do redis-cli ping >/dev/null 2>&1 && break; sleep 0.1; done
    echo "services: started Redis at 127.0.0.1:6379"
  fi
}

find_python313() {
  if command -v python3.13 >/dev/null 2>&1 && python3.13 -V >/dev/null 2>&1; then
    command -v python3.13; return
  fi
  for p in "$HOME"/.pyenv/versions/3.13*/bin/python3.13 /usr/bin/python3.13 /usr/local/bin/python3.13; do
    [ -x "$p" ] && { echo "$p"; return; }
  done
  return 1
}

localstack_up() {
  curl -fsS http://127.0.0.1:4566/_localstack/health 2>/dev/null | grep -q '"s3": "\(available\|running\)"'
}

ensure_localstack() {
  if localstack_up; then echo "services: LocalStack already running at 127.0.0.1:4566"; return; fi
  if [ ! -x "$LOCALSTACK_VENV/bin/python" ] || ! "$LOCALSTACK_VENV/bin/python" -c "import localstack" 2>/dev/null; then
    py=$(find_python313) || { echo "services: LocalStack needs Python 3.13 (python3.13 not found); install one (e.g. pyenv install 3.13) and retry" >&2; exit 1; }
    echo "services: installing LocalStack into $LOCALSTACK_VENV (Python $($py -V 2>&1))"
    "$py" -m venv "$LOCALSTACK_VENV"
    "$LOCALSTACK_VENV/bin/pip" install -q 'localstack-core[runtime]' 'cbor2<6' service_identity
  fi
  # LocalStack builds its TLS certificate with an X509 API that current pyOpenSSL removed;
  # handing it a ready certificate (made here with the openssl CLI) skips that code path.
  cert_dir="$LOCALSTACK_VENV/cert"
  if [ ! -s "$cert_dir/server.test.pem" ]; then
    mkdir -p "$cert_dir"
    openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -days 3650 \
      -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
      -keyout "$cert_dir/key.pem" -out "$cert_dir/cert.pem" 2>/dev/null
    cat "$cert_dir/key.pem" "$cert_dir/cert.pem" >"$cert_dir/server.test.pem"
  fi
  echo "services: starting LocalStack (log: $LOCALSTACK_LOG)"
  # exec: the background subshell becomes LocalStack itself, its stdin/stdout/stderr away from
  # ours, so `bash scripts/services.sh | tail` returns (nothing is left holding the pipe).
  (cd /tmp && GATEWAY_LISTEN=127.0.0.1:4566 SERVICES=s3 EAGER_SERVICE_LOADING=1 \
    CUSTOM_SSL_CERT_PATH="$cert_dir/server.test.pem" \
    exec nohup "$LOCALSTACK_VENV/bin/python" -m localstack.runtime.main \
    >"$LOCALSTACK_LOG" 2>&1 </dev/null) &
  echo $! >/tmp/plantpipe-localstack.pid
  for _ in $(seq 1 180); do
    if localstack_up; then echo "services: LocalStack ready"; return; fi
    if ! kill -0 "$(cat /tmp/plantpipe-localstack.pid)" 2>/dev/null; then
      echo "services: LocalStack exited during start-up" >&2; break
    fi
    sleep 1
  done
  echo "services: LocalStack is not healthy; see $LOCALSTACK_LOG" >&2
  tail -20 "$LOCALSTACK_LOG" >&2 || true
  exit 1
}

ensure_redis
ensure_localstack
