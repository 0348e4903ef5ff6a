#!/usr/bin/env bash
# End-to-end tests: the course in JupyterLab, in a real (headless) Chromium.
#
#   e2e/run.sh [playwright args...]        (what `make e2e` runs)
#
# 1. installs what it needs when missing: Debian's chromium (+ an emoji font) with apt-get, the
#    npm packages pinned by e2e/package-lock.json (`npm ci`, no browser download);
# 2. copies notebooks/, exercises/ and e2e/fixtures/ into a scratch server root
#    (e2e/.work/root), so running them never writes outputs into the course files;
# 3. starts JupyterLab from the course's .venv on 127.0.0.1 with a random token;
# 4. runs the Playwright/Galata tests (e2e/tests/); 5. always stops JupyterLab.
# Exits non-zero when anything fails.
#
# Settings (environment):
#   E2E_NOTEBOOKS   which notebooks to run in the browser: "all", or globs/prefixes
#                   separated by commas or spaces (e.g. "notebooks/0[0-4]*.ipynb" or "00,01").
#                   Default: the light notebooks listed in e2e/lib/select.ts;
#                   the other notebooks are opened and checked to render, not run.
#   E2E_OPEN_ONLY   notebooks only opened and checked to render (same syntax; "" for none)
#   E2E_EXERCISE    the exercise notebook for the exercise test (default: picked automatically)
#   E2E_NOTEBOOK_TIMEOUT  seconds per notebook (default 1200)
#   E2E_INSTALL_ONLY=1    install chromium + npm packages, then stop (for CI's online step)
#   CHROMIUM        browser binary (default /usr/bin/chromium)
#   VENV            the course environment (default .venv)
set -euo pipefail

E2E_DIR="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$E2E_DIR/.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
case "$VENV" in /*) ;; *) VENV="$REPO/$VENV" ;; esac
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

log() { echo "== e2e: $*"; }

# --- 1. install --------------------------------------------------------------------------
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
APT_UPDATED=0
apt_install() {
  [ "$APT_UPDATED" = 1 ] || { $SUDO apt-get update -qq && APT_UPDATED=1; }
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}
if [ ! -x "$CHROMIUM" ]; then
  log "installing Debian's chromium"
  apt_install chromium
fi
# Cosmetic: the checks print ✅/❌; without an emoji font the screenshots show boxes.
if command -v fc-list >/dev/null && ! fc-list 2>/dev/null | grep -qi "color emoji"; then
  log "installing an emoji font (for the screenshots)"
  apt_install fonts-noto-color-emoji || log "warning: no emoji font; screenshots will show boxes for ✅"
fi
"$CHROMIUM" --version 2>/dev/null

# npm ci only when node_modules is missing or older than the lockfile.
STAMP="$E2E_DIR/node_modules/.e2e-installed"
if [ ! -f "$STAMP" ] || [ "$E2E_DIR/package-lock.json" -nt "$STAMP" ] || [ "$E2E_DIR/package.json" -nt "$STAMP" ]; then
  log "npm ci (pinned by e2e/package-lock.json)"
  (cd "$E2E_DIR" && npm ci --no-audit --no-fund --loglevel=error)
  touch "$STAMP"
fi
[ "${E2E_INSTALL_ONLY:-0}" = 1 ] && { log "installed"; exit 0; }

test -x "$VENV/bin/jupyter-lab" || { echo "no JupyterLab in $VENV: run 'make install' first" >&2; exit 2; }

# --- 2. scratch server root ----------------------------------------------------------------
WORK="$E2E_DIR/.work"
ROOT="$WORK/root"
rm -rf "$WORK"
mkdir -p "$ROOT/e2e" "$WORK/workspaces" "$E2E_DIR/screenshots"
rm -f "$E2E_DIR"/screenshots/*.png
for d in notebooks exercises solutions; do
  [ -d "$REPO/$d" ] && cp -r "$REPO/$d" "$ROOT/$d"
done
cp -r "$E2E_DIR/fixtures" "$ROOT/e2e/fixtures"
find "$ROOT" -name .ipynb_checkpoints -prune -exec rm -rf {} +

# --- 3. JupyterLab ---------------------------------------------------------------------------
E2E_PORT="${E2E_PORT:-$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
E2E_TOKEN="$("$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(24))')"
export E2E_PORT E2E_TOKEN E2E_ROOT_DIR="$ROOT" E2E_WORKSPACES_DIR="$WORK/workspaces" E2E_REPO="$REPO"
export E2E_SCREENSHOTS="$E2E_DIR/screenshots"

LAB_PID=""
PW_PID=""
stop_lab() {
  local rc=$?
  if [ -n "$PW_PID" ] && kill -0 "$PW_PID" 2>/dev/null; then
    kill -TERM "$PW_PID" 2>/dev/null || true
    wait "$PW_PID" 2>/dev/null || true
  fi
  if [ -n "$LAB_PID" ] && kill -0 "$LAB_PID" 2>/dev/null; then
    log "stopping JupyterLab (pid $LAB_PID)"
    kill -TERM -- "-$LAB_PID" 2>/dev/null || kill -TERM "$LAB_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$LAB_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$LAB_PID" 2>/dev/null || true
  fi
  LAB_PID=""
  return $rc
}
trap stop_lab EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "starting JupyterLab on 127.0.0.1:$E2E_PORT (log: e2e/.work/jupyter.log)"
# Its own process group (setsid) so that stopping it also stops its kernels.
# Learners have no MPLBACKEND set (CI exports Agg): unset it so figures render inline.
env -u MPLBACKEND JUPYTER_CONFIG_DIR="$WORK/jupyter-config" \
  setsid "$VENV/bin/jupyter-lab" --config "$E2E_DIR/jupyter_server_config.py" \
  >"$WORK/jupyter.log" 2>&1 &
LAB_PID=$!

for i in $(seq 120); do
  if curl -fsS -o /dev/null -H "Authorization: token $E2E_TOKEN" "http://127.0.0.1:$E2E_PORT/api/status" 2>/dev/null; then
    break
  fi
  if ! kill -0 "$LAB_PID" 2>/dev/null; then
    echo "JupyterLab exited early:" >&2; tail -n 40 "$WORK/jupyter.log" >&2; exit 1
  fi
  [ "$i" = 120 ] && { echo "JupyterLab did not start in 60 s" >&2; tail -n 40 "$WORK/jupyter.log" >&2; exit 1; }
  sleep 0.5
done
# The token really is required:
code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$E2E_PORT/api/contents")"
[ "$code" = 403 ] || { echo "JupyterLab answered $code without a token" >&2; exit 1; }

# --- 4. tests ----------------------------------------------------------------------------------
log "running the browser tests"
# In the background + wait, so that a TERM/INT to this script is handled at once (trap above).
set +e
(cd "$E2E_DIR" && exec ./node_modules/.bin/playwright test "$@") &
PW_PID=$!
wait "$PW_PID"
rc=$?
PW_PID=""
set -e
log "screenshots: $(ls "$E2E_SCREENSHOTS" | wc -l) in e2e/screenshots/; report: e2e/playwright-report/"
exit $rc
