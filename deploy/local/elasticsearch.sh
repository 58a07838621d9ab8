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
#
# SEPWATCH_ES_SECURITY=tls starts a secured node instead of the plain one: security on,
# HTTPS with a local CA (PEM, made with openssl under the run dir), and the built-in
# superuser `elastic` with a generated password kept in a 0600 file there (never printed),
# and file-realm users sepwatch-writer / sepwatch-analyst / sepwatch-reader with the least-privilege roles
# `sepwatch elasticsearch roles` prints for SEPWATCH_ES_INDEX (needs the repo's .venv).
# Its settings live in a config dir of its own (ES_PATH_CONF under the run dir), so a
# plain node of the same ES home on another port is unaffected.
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
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SEPWATCH="${SEPWATCH_BIN:-$ROOT/.venv/bin/sepwatch}"
PIDFILE="$RUN/es.pid"
LOG="$RUN/es.out"
SECURITY="${SEPWATCH_ES_SECURITY:-none}"
CONF="$RUN/config"
CERTS="$CONF/certs"
PASSWORD_FILE="$RUN/admin-password"
[[ "$SECURITY" == none || "$SECURITY" == tls ]] || {
  echo "elasticsearch.sh: SEPWATCH_ES_SECURITY is none or tls, not $SECURITY" >&2; exit 2; }

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

# A local CA and a node certificate for 127.0.0.1/localhost, made once per run dir.
certificates() {
  [[ -f "$CERTS/node.crt" ]] && return
  mkdir -p "$CERTS"
  openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=sepwatch local CA" \
    -keyout "$CERTS/ca.key" -out "$CERTS/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$CERTS/node.key" -out "$CERTS/node.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' >"$CERTS/node.ext"
  openssl x509 -req -in "$CERTS/node.csr" -CA "$CERTS/ca.crt" -CAkey "$CERTS/ca.key" \
    -CAcreateserial -days 825 -extfile "$CERTS/node.ext" -out "$CERTS/node.crt" 2>/dev/null
  chmod 600 "$CERTS/ca.key" "$CERTS/node.key"
}

# A file-realm user with one role; its generated password goes to a 0600 file
# and to the tool on stdin (asked twice), never on a command line.
file_user() {
  local user=$1 role=$2 file="$RUN/$1-password"
  grep -q "^$user:" "$CONF/users" && [[ -s "$file" ]] && return
  (umask 077; python3 -c 'import secrets; print(secrets.token_urlsafe(24))' >"$file")
  local tool=(env ES_PATH_CONF="$CONF" ES_JAVA_HOME="$(java_home)" "$HOME_DIR/bin/elasticsearch-users")
  "${tool[@]}" userdel "$user" >/dev/null 2>&1 || true
  { cat "$file"; cat "$file"; } | "${tool[@]}" useradd "$user" -r "$role" >/dev/null 2>&1 ||
    { echo "elasticsearch.sh: could not add the file-realm user $user" >&2; exit 1; }
}

# The secured node's own config dir: the ES home's files, its certificates, and a
# keystore holding the `elastic` user's bootstrap password (given on stdin, not argv).
secured_config() {
  if [[ ! -f "$CONF/elasticsearch.yml" ]]; then
    mkdir -p "$CONF"
    cp -r "$HOME_DIR/config/jvm.options" "$HOME_DIR/config/jvm.options.d" \
      "$HOME_DIR/config/log4j2.properties" "$CONF/"
    # Empty, so no setting of the shared file leaks in; everything else is -E below.
    : >"$CONF/elasticsearch.yml"
  fi
  certificates
  if [[ ! -s "$PASSWORD_FILE" ]]; then
    (umask 077; python3 -c 'import secrets; print(secrets.token_urlsafe(24))' >"$PASSWORD_FILE")
    rm -f "$CONF/elasticsearch.keystore"
  fi
  chmod 600 "$PASSWORD_FILE"
  [[ -x "$SEPWATCH" ]] || {
    echo "elasticsearch.sh: tls mode needs $SEPWATCH (make install, or set SEPWATCH_BIN)" >&2; exit 1; }
  # The least-privilege roles come from the project (streams/elastic.py), for the
  # findings alias $SEPWATCH_ES_INDEX (default sepwatch-findings); the node reloads
  # roles.yml and the users files when they change.
  (cd "$ROOT" && "$SEPWATCH" elasticsearch roles) >"$CONF/roles.yml"
  touch "$CONF/users" "$CONF/users_roles"
  file_user sepwatch-writer sepwatch_findings_writer
  file_user sepwatch-analyst sepwatch_findings_analyst
  file_user sepwatch-reader sepwatch_findings_reader
  if [[ ! -f "$CONF/elasticsearch.keystore" ]]; then
    ES_PATH_CONF="$CONF" ES_JAVA_HOME="$(java_home)" "$HOME_DIR/bin/elasticsearch-keystore" create >/dev/null
    ES_PATH_CONF="$CONF" ES_JAVA_HOME="$(java_home)" "$HOME_DIR/bin/elasticsearch-keystore" \
      add --stdin --force bootstrap.password <"$PASSWORD_FILE" >/dev/null
  fi
}

# Is the node answering? Over HTTPS with the CA and the admin password when secured.
healthy() {
  python3 - "$PORT" "$SECURITY" "$CERTS/ca.crt" "$PASSWORD_FILE" <<'PY'
import base64, json, ssl, sys, urllib.request
port, security, ca, password_file = sys.argv[1:]
path = "/_cluster/health?wait_for_status=yellow&timeout=2s"
if security == "tls":
    with open(password_file) as f:
        token = base64.b64encode(b"elastic:" + f.read().strip().encode()).decode()
    req = urllib.request.Request(f"https://127.0.0.1:{port}{path}")
    req.add_header("Authorization", f"Basic {token}")
    ctx = ssl.create_default_context(cafile=ca)
    resp = urllib.request.urlopen(req, timeout=5, context=ctx)
else:
    resp = urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5)
sys.exit(0 if json.load(resp)["status"] in ("yellow", "green") else 1)
PY
}

up() {
  if running; then
    echo "elasticsearch already running on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"
    # The roles follow SEPWATCH_ES_INDEX of this call; the node reloads the file.
    if [[ "$SECURITY" == tls ]]; then (cd "$ROOT" && "$SEPWATCH" elasticsearch roles) >"$CONF/roles.yml"; where; fi
    return
  fi
  fetch
  mkdir -p "$RUN/data" "$RUN/logs"
  local mode=(-E xpack.security.enabled=false) conf=() scheme=http
  if [[ "$SECURITY" == tls ]]; then
    secured_config
    conf=(ES_PATH_CONF="$CONF")
    scheme=https
    # Relative paths resolve against the node's config dir.
    mode=(-E xpack.security.enabled=true -E xpack.security.http.ssl.enabled=true
      -E xpack.security.http.ssl.key=certs/node.key
      -E xpack.security.http.ssl.certificate=certs/node.crt
      -E xpack.security.http.ssl.certificate_authorities=certs/ca.crt
      -E xpack.security.transport.ssl.enabled=true
      -E xpack.security.transport.ssl.verification_mode=certificate
      -E xpack.security.transport.ssl.key=certs/node.key
      -E xpack.security.transport.ssl.certificate=certs/node.crt
      -E xpack.security.transport.ssl.certificate_authorities=certs/ca.crt
      -E xpack.security.authc.api_key.enabled=true
      -E xpack.security.enrollment.enabled=false)
  fi
  local as=()
  if [[ $(id -u) == 0 ]]; then
    id sepwatch-es >/dev/null 2>&1 || useradd --system --no-create-home sepwatch-es
    chown -R sepwatch-es "$HOME_DIR" "$RUN"
    # The node reads its keystore, not this file: it stays the operator's.
    chown root "$RUN"/*password 2>/dev/null || true
    as=(runuser -u sepwatch-es --)
  fi
  : > "$LOG"
  [[ $(id -u) == 0 ]] && chown sepwatch-es "$LOG"
  env "${conf[@]}" ES_JAVA_HOME="$(java_home)" ES_JAVA_OPTS="-Xms512m -Xmx512m" nohup "${as[@]}" \
    "$HOME_DIR/bin/elasticsearch" \
      -E http.host=127.0.0.1 -E transport.host=127.0.0.1 -E "http.port=$PORT" \
      -E discovery.type=single-node -E "path.data=$RUN/data" -E "path.logs=$RUN/logs" \
      -E cluster.name=sepwatch-local -E cluster.routing.allocation.disk.threshold_enabled=false \
      -E action.destructive_requires_name=false "${mode[@]}" \
      >>"$LOG" 2>&1 &
  echo $! > "$PIDFILE"
  local deadline=$((SECONDS + ${SEPWATCH_ES_START_TIMEOUT:-180}))
  until healthy 2>/dev/null; do
    if ! running; then echo "elasticsearch.sh: the node exited:" >&2; tail -30 "$LOG" >&2; exit 1; fi
    if (( SECONDS > deadline )); then echo "elasticsearch.sh: no answer on 127.0.0.1:$PORT in time:" >&2; tail -30 "$LOG" >&2; exit 1; fi
    sleep 1
  done
  echo "elasticsearch $ES_VERSION up on $scheme://127.0.0.1:$PORT (pid $(cat "$PIDFILE"), data $RUN)"
  [[ "$SECURITY" != tls ]] || where
}

# Where a secured node's CA and password files are (the files, never their contents).
where() {
  echo "  CA certificate: $CERTS/ca.crt"
  echo "  user elastic (superuser), password in: $PASSWORD_FILE"
  echo "  user sepwatch-writer (worker's sink), password in: $RUN/sepwatch-writer-password"
  echo "  user sepwatch-analyst (findings, report), password in: $RUN/sepwatch-analyst-password"
  echo "  user sepwatch-reader (findings, read-only), password in: $RUN/sepwatch-reader-password"
  echo "  roles for the findings alias ${SEPWATCH_ES_INDEX:-sepwatch-findings}: $CONF/roles.yml"
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
