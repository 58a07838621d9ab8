#!/usr/bin/env bash
# A real Apache Kafka broker (KRaft) on loopback, for tests, CI and the demo; or a cluster
# of several, for replication tests and the fault benchmark.
#
#   deploy/local/kafka.sh up | down | status              one broker on SEPWATCH_KAFKA_PORT
#   deploy/local/kafka.sh up | down | status --brokers 3  three brokers, each its own
#                                                         controller too (a KRaft quorum of 3)
#
# Broker n (1..N) listens on SEPWATCH_KAFKA_PORT + 2(n-1) and its controller 1000 above
# (27192 gives 27192, 27194, 27196 and 28192, 28194, 28196); its data, log and pid file
# are under the run dir's kafka-PORT/ (broker 1, as a single broker) and
# kafka-PORT/node-n/ (the others). `up` starts only the brokers not running, so a test
# that SIGKILLs one restarts it with the same command. `status` takes the same --brokers
# (exits 3 unless all N run); `down` stops every broker of the cluster, with or without
# it. With N brokers the internal topics
# (offsets, transactions) have min(N, 3) replicas and min.insync.replicas N-1.
#
# The broker's jars come from Maven Central (org.apache.kafka:kafka_2.13 and its
# runtime dependencies) through Maven, cached outside the repository.
# Environment: SEPWATCH_KAFKA_PORT (9092), SEPWATCH_CACHE_DIR (~/.cache/sepwatch),
# SEPWATCH_RUN_DIR (~/.cache/sepwatch/run), KAFKA_JAVA_HOME (a JDK 17+),
# SEPWATCH_KAFKA_SECURITY: plaintext (default) or sasl_ssl. With sasl_ssl the port is a
# SASL_SSL listener (TLS, SCRAM-SHA-512): a local CA and a broker certificate are made
# under the run dir, and the client user `sepwatch` gets a generated password, written
# to a 0600 file there (never printed). The controller stays PLAINTEXT on loopback.
set -euo pipefail

# Kafka 4.x: KRaft only, runs on Java 17, and aiokafka 0.14 / kafka-python 2.x talk to it.
KAFKA_VERSION="${SEPWATCH_KAFKA_VERSION:-4.1.1}"
BASE_PORT="${SEPWATCH_KAFKA_PORT:-9092}"
BASE_CONTROLLER_PORT="${SEPWATCH_KAFKA_CONTROLLER_PORT:-$((BASE_PORT + 1000))}"
CACHE="${SEPWATCH_CACHE_DIR:-$HOME/.cache/sepwatch}"
CLUSTER_RUN="${SEPWATCH_RUN_DIR:-$CACHE/run}/kafka-$BASE_PORT"
# The runtime's jars, by the version of the dependency list below: a changed list is
# fetched anew beside the old one, which brokers still running keep using.
RUNTIME=2
LIBS="$CACHE/kafka-$KAFKA_VERSION/libs-$RUNTIME"
BROKERS=1
JAVA="${KAFKA_JAVA_HOME:+$KAFKA_JAVA_HOME/bin/}java"
SECURITY="${SEPWATCH_KAFKA_SECURITY:-plaintext}"
TLS="$CLUSTER_RUN/tls"
CLIENT_USER=sepwatch
case "$SECURITY" in plaintext | sasl_ssl) ;; *)
  echo "kafka.sh: SEPWATCH_KAFKA_SECURITY is plaintext or sasl_ssl, not $SECURITY" >&2; exit 2 ;;
esac

usage() { echo "usage: $0 up|down|status [--brokers N]   (first broker on 127.0.0.1:$BASE_PORT)" >&2; exit 2; }

# Broker n's ports and files (broker 1 keeps the single broker's layout).
node() { # n
  NODE=$1
  PORT=$((BASE_PORT + 2 * (NODE - 1)))
  CONTROLLER_PORT=$((BASE_CONTROLLER_PORT + 2 * (NODE - 1)))
  RUN="$CLUSTER_RUN"
  (( NODE > 1 )) && RUN="$CLUSTER_RUN/node-$NODE"
  PIDFILE="$RUN/kafka.pid"
  LOG="$RUN/kafka.log"
}

voters() {
  local n out=""
  for n in $(seq 1 "$BROKERS"); do
    out+="${out:+,}$n@127.0.0.1:$((BASE_CONTROLLER_PORT + 2 * (n - 1)))"
  done
  echo "$out"
}

bootstrap() {
  local n out=""
  for n in $(seq 1 "$BROKERS"); do out+="${out:+,}127.0.0.1:$((BASE_PORT + 2 * (n - 1)))"; done
  echo "$out"
}

# A process that has exited but is not yet reaped (a zombie) counts as gone.
alive() { kill -0 "$1" 2>/dev/null && [[ "$(ps -o stat= -p "$1" 2>/dev/null)" != Z* ]]; }
running() { [[ -f "$PIDFILE" ]] && alive "$(cat "$PIDFILE")"; }

fetch() {
  [[ -f "$LIBS/.complete" ]] && return
  command -v mvn >/dev/null || { echo "kafka.sh: Maven (mvn) is needed to fetch Kafka" >&2; exit 1; }
  echo "fetching Kafka $KAFKA_VERSION from Maven Central into $LIBS ..." >&2
  local build="$LIBS-build"
  mkdir -p "$build" "$LIBS"
  cat > "$build/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.sepwatch</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-server</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-storage</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <!-- Kafka brings SLF4J 1.7, which does not see log4j-slf4j2-impl: the broker
         logged nothing at all, server.log stayed empty. The 2.x API it binds to. -->
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>2.0.17</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>2.24.3</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>2.24.3</version></dependency>
  </dependencies>
</project>
POM
  (cd "$build" && mvn -q -B dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$LIBS") >&2
  touch "$LIBS/.complete"
}

# A secret of 32 letters and digits, written only to a 0600 file.
new_secret() { # file
  [[ -s "$1" ]] && return
  (umask 077 && openssl rand -base64 48 | tr -dc 'A-Za-z0-9' | head -c 32 > "$1")
}

# A local CA and a broker certificate for 127.0.0.1/localhost, kept across restarts
# so clients configured with the CA file keep working.
make_tls() {
  [[ -f "$TLS/broker.p12" ]] && return
  mkdir -p "$TLS" && chmod 700 "$TLS"
  new_secret "$TLS/keystore.password"
  (
    umask 077
    cd "$TLS"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -keyout ca.key -out ca.crt \
      -subj "/CN=sepwatch local CA" -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout broker.key -out broker.csr \
      -subj "/CN=localhost" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > broker.ext
    openssl x509 -req -in broker.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
      -extfile broker.ext -out broker.crt 2>/dev/null
    # The keystore password goes to openssl through a file, not the command line.
    openssl pkcs12 -export -in broker.crt -inkey broker.key -certfile ca.crt -name broker \
      -passout "file:keystore.password" -out broker.p12
    rm -f broker.csr broker.ext
  )
  chmod 644 "$TLS/ca.crt"
}

listener_properties() {
  if [[ "$SECURITY" == plaintext ]]; then
    cat <<PROPS
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
PROPS
    return
  fi
  cat <<PROPS
listeners=SASL_SSL://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=SASL_SSL://127.0.0.1:$PORT
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
inter.broker.listener.name=SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="$(cat "$CLUSTER_RUN/broker.password")";
ssl.keystore.type=PKCS12
ssl.keystore.location=$TLS/broker.p12
ssl.keystore.password=$(cat "$TLS/keystore.password")
ssl.truststore.type=PEM
ssl.truststore.location=$TLS/ca.crt
ssl.endpoint.identification.algorithm=https
ssl.client.auth=none
PROPS
}

configure() {
  mkdir -p "$CLUSTER_RUN" "$RUN/data"
  chmod 700 "$CLUSTER_RUN" "$RUN"
  local replicas=$(( BROKERS < 3 ? BROKERS : 3 )) min_isr=$(( BROKERS > 1 ? BROKERS - 1 : 1 ))
  if [[ "$SECURITY" == sasl_ssl ]]; then
    make_tls
    new_secret "$CLUSTER_RUN/broker.password"
    new_secret "$CLUSTER_RUN/client.password"
  fi
  # The properties hold the keystore and the broker's own SCRAM password.
  (umask 077 && cat > "$RUN/server.properties") <<PROPS
process.roles=broker,controller
node.id=$NODE
controller.quorum.voters=$(voters)
controller.listener.names=CONTROLLER
$(listener_properties)
log.dirs=$RUN/data
num.partitions=1
offsets.topic.replication.factor=$replicas
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=$replicas
transaction.state.log.min.isr=$min_isr
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
message.max.bytes=2097152
log.retention.hours=24
PROPS
  cat > "$RUN/log4j2.properties" <<'L4J'
status = error
appender.file.type = File
appender.file.name = file
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = WARN
L4J
}

java_opts() {
  # Three brokers share the machine with the workers: a smaller heap each.
  local heap=768m
  (( BROKERS > 1 )) && heap=384m
  echo "-Xms128m -Xmx$heap -XX:+UseG1GC -Djava.awt.headless=true -Dkafka.logs.dir=$RUN -Dlog4j2.configurationFile=$RUN/log4j2.properties"
}

# SCRAM users are created at format time (KRaft). Their passwords reach the storage
# tool through a java @argument file (0600, removed after), never through argv.
format_storage() {
  local id args="$RUN/format.args"
  # Every broker of a cluster is formatted with the same cluster id.
  if [[ ! -s "$CLUSTER_RUN/cluster.id" ]]; then
    "$JAVA" -cp "$LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1 \
      > "$CLUSTER_RUN/cluster.id"
  fi
  id=$(cat "$CLUSTER_RUN/cluster.id")
  (
    umask 077
    # shellcheck disable=SC2046
    printf '%s\n' $(java_opts) -cp "\"$LIBS/*\"" kafka.tools.StorageTool format -t "$id" \
      -c "\"$RUN/server.properties\"" > "$args"
    if [[ "$SECURITY" == sasl_ssl ]]; then
      for user in broker "$CLIENT_USER"; do
        local file="$CLUSTER_RUN/$user.password"
        [[ "$user" == "$CLIENT_USER" ]] && file="$CLUSTER_RUN/client.password"
        printf -- '--add-scram\n"SCRAM-SHA-512=[name=%s,password=%s]"\n' "$user" "$(cat "$file")" >> "$args"
      done
    fi
  )
  local rc=0
  "$JAVA" "@$args" >>"$LOG" 2>&1 || rc=$?
  rm -f "$args"
  return $rc
}

# Ready once the broker answers ApiVersions (key 18, v0) on its port; over TLS in
# sasl_ssl mode (Kafka answers ApiVersions before SASL authentication).
probe() {
  python3 - "$PORT" "$SECURITY" "$TLS/ca.crt" <<'PY' 2>/dev/null
import socket, ssl, struct, sys
port, security, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3]
s = socket.create_connection(("127.0.0.1", port), timeout=2)
if security == "sasl_ssl":
    s = ssl.create_default_context(cafile=ca).wrap_socket(s, server_hostname="127.0.0.1")
client = b"probe"
body = struct.pack(">hhih", 18, 0, 1, len(client)) + client
s.sendall(struct.pack(">i", len(body)) + body)
size = struct.unpack(">i", s.recv(4))[0]
data = b""
while len(data) < size:
    chunk = s.recv(size - len(data))
    if not chunk:
        sys.exit(1)
    data += chunk
if struct.unpack(">ih", data[:6])[1] != 0:
    sys.exit(1)
# Ready once it serves Metadata (key 3): a broker still starting answers
# ApiVersions with fewer keys, and clients then refuse it as incompatible.
count = struct.unpack(">i", data[6:10])[0]
keys = {struct.unpack(">h", data[10 + 6 * i : 12 + 6 * i])[0] for i in range(count)}
sys.exit(0 if 3 in keys else 1)
PY
}

# Where a client finds what it needs; the password itself is never printed.
where_secured() {
  [[ "$SECURITY" == sasl_ssl ]] || return 0
  echo "  SASL_SSL, SCRAM-SHA-512, user $CLIENT_USER"
  echo "  CA file:       $TLS/ca.crt"
  echo "  password file: $CLUSTER_RUN/client.password"
}

# Start broker n unless it runs; does not wait.
start_node() {
  node "$1"
  if running; then return; fi
  configure
  if [[ ! -f "$RUN/data/meta.properties" ]]; then
    format_storage || { echo "kafka.sh: formatting storage failed:" >&2; tail -20 "$LOG" >&2; exit 1; }
  fi
  # shellcheck disable=SC2046
  nohup "$JAVA" $(java_opts) -cp "$LIBS/*" kafka.Kafka "$RUN/server.properties" >>"$LOG" 2>&1 &
  echo $! > "$PIDFILE"
}

# Wait until broker n answers (a cluster's brokers answer once their quorum has formed).
await_node() {
  node "$1"
  local deadline=$((SECONDS + ${SEPWATCH_KAFKA_START_TIMEOUT:-90}))
  until probe
  do
    if ! running; then echo "kafka.sh: broker $NODE exited:" >&2; tail -30 "$LOG" "$RUN/server.log" 2>/dev/null >&2; exit 1; fi
    if (( SECONDS > deadline )); then echo "kafka.sh: no answer on 127.0.0.1:$PORT in time:" >&2; tail -30 "$LOG" >&2; exit 1; fi
    sleep 0.5
  done
}

up() {
  local n up_already=1
  for n in $(seq 1 "$BROKERS"); do node "$n"; running || up_already=0; done
  if (( up_already )); then
    node 1
    echo "kafka already running on $(bootstrap) (pid $(cat "$PIDFILE"))"; where_secured; return
  fi
  fetch
  for n in $(seq 1 "$BROKERS"); do start_node "$n"; done
  for n in $(seq 1 "$BROKERS"); do await_node "$n"; done
  node 1
  if (( BROKERS == 1 )); then
    echo "kafka $KAFKA_VERSION up on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"), data $RUN)"
  else
    echo "kafka $KAFKA_VERSION up: $BROKERS brokers on $(bootstrap) (data $CLUSTER_RUN)"
  fi
  where_secured
}

stop_node() {
  node "$1"
  if ! running; then rm -f "$PIDFILE"; return 1; fi
  local pid; pid=$(cat "$PIDFILE")
  kill -TERM "$pid"
  for _ in $(seq 1 60); do alive "$pid" || break; sleep 0.5; done
  # A broker whose quorum has left already may not finish its controlled
  # shutdown: killed, and awaited, so that `down` returns with it gone.
  if alive "$pid"; then
    kill -KILL "$pid"
    for _ in $(seq 1 20); do alive "$pid" || break; sleep 0.5; done
  fi
  rm -f "$PIDFILE"
}

down() {
  local n stopped=0 nodes dir
  # Every node the cluster has, whatever --brokers says: a plain `down` after
  # `up --brokers 3` stopped the first and left the other two running.
  nodes=$BROKERS
  for dir in "$CLUSTER_RUN"/node-*; do
    n=${dir##*node-}
    if [[ -d $dir && $n =~ ^[0-9]+$ ]] && (( n > nodes )); then nodes=$n; fi
  done
  # The last broker first: the others keep their quorum while it leaves.
  for n in $(seq "$nodes" -1 1); do stop_node "$n" && stopped=$((stopped + 1)); done
  if [[ "${SEPWATCH_KAFKA_KEEP_DATA:-0}" != 1 ]]; then
    for n in $(seq 1 "$nodes"); do node "$n"; rm -rf "$RUN/data"; done
    rm -f "$CLUSTER_RUN/cluster.id"
  fi
  if (( stopped )); then echo "kafka stopped"; else echo "kafka not running on port $BASE_PORT"; fi
}

status() {
  local n missing=0
  for n in $(seq 1 "$BROKERS"); do
    node "$n"
    if running; then echo "kafka running on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"
    else echo "kafka not running on 127.0.0.1:$PORT"; missing=1; fi
  done
  (( missing == 0 )) || exit 3
}

command="${1:-}"
shift || true
while (( $# )); do
  case "$1" in
    --brokers) [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || usage; BROKERS=$2; shift 2 ;;
    *) usage ;;
  esac
done
case "$command" in
  up) up ;; down) down ;; status) status ;; *) usage ;;
esac
