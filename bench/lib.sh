# Shared by bench/run and bench/profile: settings, the suite's environment, and helpers.
# Sourced from the repository's root.
SECONDS_EACH=${BENCH_SECONDS:-20}
USERS=${BENCH_USERS:-64}
PG=${DATABASE_ADMIN_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}
PG_BASE=${PG%/*}
DB=orderflow_bench
ADMIN_EMAIL=bench-admin@example.cl
ADMIN_PASSWORD="bench-admin-$(date +%s)-password"
TAG="bench$(date +%s)"
# Which cargo profile to build and run (bench/profile picks `profiling` for perf's symbols).
CARGO_PROFILE=${BENCH_CARGO_PROFILE:-release}
BIN=target/$CARGO_PROFILE/orderflow
OUT=target/bench
mkdir -p "$OUT"
say() { printf '\033[1mbench:\033[0m %s\n' "$*" >&2; }
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

build_release() {
  say "building the $CARGO_PROFILE binary"
  cargo build --profile "$CARGO_PROFILE" --locked --bin orderflow >&2
}

fresh_db() {
  psql "$PG" -qc "DROP DATABASE IF EXISTS $1 WITH (FORCE)" >/dev/null
  psql "$PG" -qc "CREATE DATABASE $1" >/dev/null
}

# The environment every role of the suite under test shares.
suite_env() {
  # Every role of the suite shares one internal key (it signs their calls' credentials).
  [ -n "${INTERNAL_TOKEN_KEY:-}" ] || INTERNAL_TOKEN_KEY=$("$BIN" internal-key)
  export INTERNAL_TOKEN_KEY
  export DATABASE_URL="$PG_BASE/$DB" REDIS_KEY_PREFIX="$TAG:" AMQP_EXCHANGE="$TAG.events" \
    AMQP_QUEUE_PREFIX="$TAG." RUST_LOG=warn LOG_FORMAT=text SEED_DEMO_DATA=true \
    PAYMENT_PROVIDER=sandbox \
    IAM_BOOTSTRAP_ADMIN_EMAIL=$ADMIN_EMAIL IAM_BOOTSTRAP_ADMIN_PASSWORD=$ADMIN_PASSWORD \
    GATEWAY_RATE_LIMIT_AUTH=100000/s GATEWAY_RATE_LIMIT_AUTH_BURST=100000 \
    GATEWAY_RATE_LIMIT_API=100000/s GATEWAY_RATE_LIMIT_API_BURST=100000 \
    GATEWAY_ADDR=127.0.0.1:18080 \
    IAM_GRPC_ADDR=127.0.0.1:15051 IAM_ADMIN_ADDR=127.0.0.1:19101 \
    CATALOG_GRPC_ADDR=127.0.0.1:15052 CATALOG_ADMIN_ADDR=127.0.0.1:19102 \
    ORDER_GRPC_ADDR=127.0.0.1:15053 ORDER_ADMIN_ADDR=127.0.0.1:19103 \
    ORDER_PROJECTOR_ADMIN_ADDR=127.0.0.1:19104 \
    PAYMENT_GRPC_ADDR=127.0.0.1:15054 PAYMENT_ADMIN_ADDR=127.0.0.1:19105 \
    DTE_GRPC_ADDR=127.0.0.1:15055 DTE_ADMIN_ADDR=127.0.0.1:19106 \
    SII_SIM_ADDR=127.0.0.1:18090 DTE_SII_POLL_INTERVAL=1s \
    GATEWAY_IAM_URL=http://127.0.0.1:15051 GATEWAY_CATALOG_URL=http://127.0.0.1:15052 \
    GATEWAY_ORDER_URL=http://127.0.0.1:15053 GATEWAY_PAYMENT_URL=http://127.0.0.1:15054 \
    GATEWAY_DTE_URL=http://127.0.0.1:15055 \
    ORDER_CATALOG_URL=http://127.0.0.1:15052 PAYMENT_ORDER_URL=http://127.0.0.1:15053
}

# Milliseconds until URL answers 200 (gives up after 60 s).
wait_ready() {
  local url=$1 start=$2
  for _ in $(seq 1 1200); do
    if curl -sf -o /dev/null "$url"; then
      echo $(( ($(date +%s%N) - start) / 1000000 )); return 0
    fi
    sleep 0.05
  done
  say "$url never became ready"; exit 1
}

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
commits() { psql "$PG" -Atc "SELECT xact_commit FROM pg_stat_database WHERE datname = '$DB'"; }
loadgen() {
  "$BIN" loadgen --url http://127.0.0.1:18080 --users "$USERS" --duration "${SECONDS_EACH}s" \
    --admin-email "$ADMIN_EMAIL" --admin-password "$ADMIN_PASSWORD" --max-error-ratio 1 --json "$@"
}


# Starts each role as its own process on a fresh database (the dte role with its own SII
# simulator and development CAFs); fills ROLE_PID and ROLE_READY (ms from start to ready).
declare -A ROLE_PID ROLE_READY
ROLES=(iam catalog order order-projector payment dte gateway)
start_roles() {
  fresh_db $DB
  (suite_env; "$BIN" migrate all >/dev/null)
  suite_env
  # Only `orderflow all` honours IAM_BOOTSTRAP_ADMIN_*; separate roles get the admin this way.
  printf '%s\n' "$ADMIN_PASSWORD" | "$BIN" iam create-admin --email "$ADMIN_EMAIL" --password-stdin >/dev/null
  # The separate dte role talks to a separate SII simulator.
  export DTE_SII_URL=http://127.0.0.1:18090 DTE_SII_BOLETA_URL=http://127.0.0.1:18090/recursos/v1 \
    DTE_SII_BOLETA_UPLOAD_URL=http://127.0.0.1:18090/recursos/v1
  "$BIN" sii-sim >"$OUT/sii-sim.log" 2>&1 & PIDS+=($!); SIM_PID=$!
  # Development CAFs (orderflow all loads them itself).
  for tipo in 33 34 39 41 56 61; do
    "$BIN" dte fake-caf --type $tipo --from 1 --to 100000 >"$OUT/caf-$tipo.xml"
  done
  for role in "${ROLES[@]}"; do
    case $role in
      iam) port=19101;; catalog) port=19102;; order) port=19103;;
      order-projector) port=19104;; payment) port=19105;; dte) port=19106;; gateway) port=18080;;
    esac
    start=$(date +%s%N)
    "$BIN" "$role" >"$OUT/$role.log" 2>&1 & PIDS+=($!); ROLE_PID[$role]=$!
    ROLE_READY[$role]=$(wait_ready "http://127.0.0.1:$port/health/ready" "$start")
  done
}

# Logs the bootstrap admin in and uploads the development CAFs (call after start_roles;
# the login makes IAM allocate argon2's memory, so read idle RSS before).
upload_cafs() {
  ADMIN_TOKEN=$(curl -sf -X POST http://127.0.0.1:18080/v1/auth/login -H 'content-type: application/json' \
    -d "{\"email\":\"$ADMIN_EMAIL\",\"password\":\"$ADMIN_PASSWORD\"}" |
    python3 -c "import json,sys;print(json.load(sys.stdin)['accessToken'])")
  for tipo in 33 34 39 41 56 61; do
    curl -sf -X POST http://127.0.0.1:18080/v1/dte/cafs -H "authorization: Bearer $ADMIN_TOKEN" \
      -H 'content-type: application/xml' --data-binary @"$OUT/caf-$tipo.xml" >/dev/null
  done
}
