#!/usr/bin/env bash
# Browser check of the static course site (what `make site-check` runs, after `make site`):
# serves site/ with Python's static file server on 127.0.0.1, runs e2e/site-tests/ in Debian's
# headless chromium (Playwright, e2e/site.config.ts), always stops the server. Non-zero on failure.
#
#   SITE_DIR    the built site (default: site/)     SITE_PAGES  notebook pages to open (default "01_,02_")
#   CHROMIUM    browser binary (default /usr/bin/chromium)   VENV  the course environment (default .venv)
# Installs chromium and the npm packages the same way as e2e/run.sh (E2E_INSTALL_ONLY=1) when missing.
set -euo pipefail

E2E_DIR="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$E2E_DIR/.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
case "$VENV" in /*) ;; *) VENV="$REPO/$VENV" ;; esac
SITE_DIR="${SITE_DIR:-$REPO/site}"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

log() { echo "== site check: $*"; }

test -f "$SITE_DIR/index.html" || { echo "no site in $SITE_DIR: run 'make site' first" >&2; exit 2; }
if [ ! -x "$CHROMIUM" ] || [ ! -f "$E2E_DIR/node_modules/.e2e-installed" ]; then
  E2E_INSTALL_ONLY=1 VENV="$VENV" "$E2E_DIR/run.sh"
fi

PORT="$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
SERVER_PID=""
stop_server() {
  local rc=$?
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  return $rc
}
trap stop_server EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$VENV/bin/python" -m http.server "$PORT" --bind 127.0.0.1 --directory "$SITE_DIR" >/dev/null 2>&1 &
SERVER_PID=$!
for i in $(seq 50); do
  curl -fsS -o /dev/null "http://127.0.0.1:$PORT/index.html" 2>/dev/null && break
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "the static server exited" >&2; exit 1; }
  [ "$i" = 50 ] && { echo "the static server did not start" >&2; exit 1; }
  sleep 0.2
done
log "serving $SITE_DIR on http://127.0.0.1:$PORT"
export SITE_URL="http://127.0.0.1:$PORT"
(cd "$E2E_DIR" && ./node_modules/.bin/playwright test -c site.config.ts "$@")
