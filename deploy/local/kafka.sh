#!/usr/bin/env bash
# A real single-node Apache Kafka broker (KRaft) on loopback, for tests, CI and the demo.
#
#   deploy/local/kafka.sh up | down | status
#
# The broker's jars come from Maven Central (org.apache.kafka:kafka_2.13 and its
# runtime dependencies) through Maven, cached outside the repository.
# Environment: SEPWATCH_KAFKA_PORT (9092), SEPWATCH_CACHE_DIR (~/.cache/sepwatch),
# SEPWATCH_RUN_DIR (~/.cache/sepwatch/run), KAFKA_JAVA_HOME (a JDK 17+).
set -euo pipefail

# Kafka 4.x: KRaft only, runs on Java 17, and aiokafka 0.14 / kafka-python 2.x talk to it.
KAFKA_VERSION="${SEPWATCH_KAFKA_VERSION:-4.1.1}"
PORT="${SEPWATCH_KAFKA_PORT:-9092}"
CONTROLLER_PORT="${SEPWATCH_KAFKA_CONTROLLER_PORT:-$((PORT + 1000))}"
CACHE="${SEPWATCH_CACHE_DIR:-$HOME/.cache/sepwatch}"
RUN="${SEPWATCH_RUN_DIR:-$CACHE/run}/kafka-$PORT"
LIBS="$CACHE/kafka-$KAFKA_VERSION/libs"
PIDFILE="$RUN/kafka.pid"
LOG="$RUN/kafka.log"
JAVA="${KAFKA_JAVA_HOME:+$KAFKA_JAVA_HOME/bin/}java"

usage() { echo "usage: $0 up|down|status   (broker on 127.0.0.1:$PORT)" >&2; exit 2; }

running() { [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

fetch() {
  [[ -f "$LIBS/.complete" ]] && return
  command -v mvn >/dev/null || { echo "kafka.sh: Maven (mvn) is needed to fetch Kafka" >&2; exit 1; }
  echo "fetching Kafka $KAFKA_VERSION from Maven Central into $LIBS ..." >&2
  local build="$CACHE/kafka-$KAFKA_VERSION/build"
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
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>2.24.3</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>2.24.3</version></dependency>
  </dependencies>
</project>
POM
  (cd "$build" && mvn -q -B dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$LIBS") >&2
  touch "$LIBS/.complete"
}

configure() {
  mkdir -p "$RUN/data"
  cat > "$RUN/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$RUN/data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
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
  echo "-Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true -Dkafka.logs.dir=$RUN -Dlog4j2.configurationFile=$RUN/log4j2.properties"
}

up() {
  if running; then echo "kafka already running on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"; return; fi
  fetch
  configure
  if [[ ! -f "$RUN/data/meta.properties" ]]; then
    # shellcheck disable=SC2046
    "$JAVA" $(java_opts) -cp "$LIBS/*" kafka.tools.StorageTool format \
      -t "$("$JAVA" -cp "$LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)" \
      -c "$RUN/server.properties" >>"$LOG" 2>&1 \
      || { echo "kafka.sh: formatting storage failed:" >&2; tail -20 "$LOG" >&2; exit 1; }
  fi
  # shellcheck disable=SC2046
  nohup "$JAVA" $(java_opts) -cp "$LIBS/*" kafka.Kafka "$RUN/server.properties" >>"$LOG" 2>&1 &
  echo $! > "$PIDFILE"
  local deadline=$((SECONDS + ${SEPWATCH_KAFKA_START_TIMEOUT:-90}))
  until python3 - "$PORT" <<'PY' 2>/dev/null
import socket, struct, sys
# An ApiVersions request (key 18, v0): the broker answers only once it serves clients.
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
client = b"probe"
body = struct.pack(">hhih", 18, 0, 1, len(client)) + client
s.sendall(struct.pack(">i", len(body)) + body)
size = struct.unpack(">i", s.recv(4))[0]
data = s.recv(size)
sys.exit(0 if struct.unpack(">ih", data[:6])[1] == 0 else 1)
PY
  do
    if ! running; then echo "kafka.sh: the broker exited:" >&2; tail -30 "$LOG" "$RUN/server.log" 2>/dev/null >&2; exit 1; fi
    if (( SECONDS > deadline )); then echo "kafka.sh: no answer on 127.0.0.1:$PORT in time:" >&2; tail -30 "$LOG" >&2; exit 1; fi
    sleep 0.5
  done
  echo "kafka $KAFKA_VERSION up on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"), data $RUN)"
}

down() {
  if ! running; then echo "kafka not running on port $PORT"; rm -f "$PIDFILE"; return; fi
  local pid; pid=$(cat "$PIDFILE")
  kill -TERM "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  rm -f "$PIDFILE"
  [[ "${SEPWATCH_KAFKA_KEEP_DATA:-0}" == 1 ]] || rm -rf "$RUN/data"
  echo "kafka stopped"
}

status() {
  if running; then echo "kafka running on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"; else echo "kafka not running"; exit 3; fi
}

case "${1:-}" in
  up) up ;; down) down ;; status) status ;; *) usage ;;
esac
