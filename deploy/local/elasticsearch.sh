#!/usr/bin/env bash
# A real single-node Elasticsearch on loopback, for tests, CI and the demo.
#
#   deploy/local/elasticsearch.sh up | down | status
#
# The server comes from Maven Central (org.elasticsearch.distribution.integ-test-zip:
# elasticsearch, zip: the real server with its core modules) through Maven, unpacked
# outside the repository. ES 9 needs Java 21+: the newest JDK under /usr/lib/jvm is used.
# Environment: SEPWATCH_ES_PORT (9200), SEPWATCH_CACHE_DIR (~/.cache/sepwatch),
# SEPWATCH_RUN_DIR (~/.cache/sepwatch/run), ES_JAVA_HOME (a JDK 21+).
set -euo pipefail

# The newest 9.x integ-test-zip Maven resolves here (9.3+ did not); the Python client is
# elasticsearch 9.x: bulk, search, count and index templates work against it. This
# distribution does not serve `GET /` (client.info()): use _cluster/health to probe.
ES_VERSION="${SEPWATCH_ES_VERSION:-9.2.4}"
PORT="${SEPWATCH_ES_PORT:-9200}"
CACHE="${SEPWATCH_CACHE_DIR:-$HOME/.cache/sepwatch}"
# Elasticsearch refuses to run as root; as root it runs as a system user, which
# cannot enter root's home, so its files live under /var/tmp instead.
if [[ $(id -u) == 0 && -z "${SEPWATCH_CACHE_DIR:-}" ]]; then CACHE=/var/tmp/sepwatch; fi
RUN="${SEPWATCH_RUN_DIR:-$CACHE/run}/elasticsearch-$PORT"
HOME_DIR="$CACHE/elasticsearch-$ES_VERSION"
PIDFILE="$RUN/es.pid"
LOG="$RUN/es.out"

usage() { echo "usage: $0 up|down|status   (node on 127.0.0.1:$PORT)" >&2; exit 2; }
running() { [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

java_home() {
  if [[ -n "${ES_JAVA_HOME:-}" ]]; then echo "$ES_JAVA_HOME"; return; fi
  local best="" v
  for jdk in /usr/lib/jvm/*/; do
    [[ -x "$jdk/bin/java" ]] || continue
    v=$("$jdk/bin/java" -XshowSettings:properties -version 2>&1 | awk -F' = ' '/java.specification.version/ {print $2}')
    if [[ "${v%%.*}" -ge 21 ]]; then best="${jdk%/}"; fi
  done
  [[ -n "$best" ]] || { echo "elasticsearch.sh: ES $ES_VERSION needs a JDK 21+ (set ES_JAVA_HOME)" >&2; exit 1; }
  echo "$best"
}

fetch() {
  [[ -x "$HOME_DIR/bin/elasticsearch" ]] && return
  command -v mvn >/dev/null || { echo "elasticsearch.sh: Maven (mvn) is needed to fetch Elasticsearch" >&2; exit 1; }
  echo "fetching Elasticsearch $ES_VERSION from Maven Central ..." >&2
  local dl="$CACHE/downloads"
  mkdir -p "$dl"
  mvn -q -B dependency:copy \
    -Dartifact="org.elasticsearch.distribution.integ-test-zip:elasticsearch:$ES_VERSION:zip" \
    -DoutputDirectory="$dl" >&2
  local tmp="$CACHE/.unpack-$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  (cd "$tmp" && jar xf "$dl/elasticsearch-$ES_VERSION.zip" 2>/dev/null || unzip -q "$dl/elasticsearch-$ES_VERSION.zip")
  mv "$tmp"/elasticsearch-* "$HOME_DIR"
  rm -rf "$tmp"
  chmod +x "$HOME_DIR"/bin/* "$HOME_DIR"/jdk/bin/* 2>/dev/null || true
}

up() {
  if running; then echo "elasticsearch already running on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"; return; fi
  fetch
  mkdir -p "$RUN/data" "$RUN/logs"
  local as=()
  if [[ $(id -u) == 0 ]]; then
    id sepwatch-es >/dev/null 2>&1 || useradd --system --no-create-home sepwatch-es
    chown -R sepwatch-es "$HOME_DIR" "$RUN"
    as=(runuser -u sepwatch-es --)
  fi
  : > "$LOG"
  [[ $(id -u) == 0 ]] && chown sepwatch-es "$LOG"
  ES_JAVA_HOME="$(java_home)" ES_JAVA_OPTS="-Xms512m -Xmx512m" nohup "${as[@]}" \
    "$HOME_DIR/bin/elasticsearch" \
      -E http.host=127.0.0.1 -E transport.host=127.0.0.1 -E "http.port=$PORT" \
      -E discovery.type=single-node -E "path.data=$RUN/data" -E "path.logs=$RUN/logs" \
      -E cluster.name=sepwatch-local -E cluster.routing.allocation.disk.threshold_enabled=false \
      -E action.destructive_requires_name=false -E xpack.security.enabled=false \
      >>"$LOG" 2>&1 &
  echo $! > "$PIDFILE"
  local deadline=$((SECONDS + ${SEPWATCH_ES_START_TIMEOUT:-180}))
  until python3 - "$PORT" <<'PY' 2>/dev/null
import json, sys, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/_cluster/health?wait_for_status=yellow&timeout=2s"
sys.exit(0 if json.load(urllib.request.urlopen(url, timeout=5))["status"] in ("yellow", "green") else 1)
PY
  do
    if ! running; then echo "elasticsearch.sh: the node exited:" >&2; tail -30 "$LOG" >&2; exit 1; fi
    if (( SECONDS > deadline )); then echo "elasticsearch.sh: no answer on 127.0.0.1:$PORT in time:" >&2; tail -30 "$LOG" >&2; exit 1; fi
    sleep 1
  done
  echo "elasticsearch $ES_VERSION up on http://127.0.0.1:$PORT (pid $(cat "$PIDFILE"), data $RUN)"
}

down() {
  if ! running; then echo "elasticsearch not running on port $PORT"; rm -f "$PIDFILE"; return; fi
  local pid; pid=$(cat "$PIDFILE")
  # The pid file holds the launcher; stop the whole process group it leads.
  pkill -TERM -f "http.port=$PORT" 2>/dev/null || kill -TERM "$pid"
  for _ in $(seq 1 60); do pgrep -f "http.port=$PORT" >/dev/null || break; sleep 0.5; done
  pkill -KILL -f "http.port=$PORT" 2>/dev/null || true
  rm -f "$PIDFILE"
  [[ "${SEPWATCH_ES_KEEP_DATA:-0}" == 1 ]] || rm -rf "$RUN/data"
  echo "elasticsearch stopped"
}

status() {
  if running; then echo "elasticsearch running on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"; else echo "elasticsearch not running"; exit 3; fi
}

case "${1:-}" in
  up) up ;; down) down ;; status) status ;; *) usage ;;
esac
