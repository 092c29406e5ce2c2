# Sourced by the other scripts: settings, paths and small helpers. Every script is called by the
# process driver as `bash scripts/X.sh CONTAINER_DIR DATA_DIR` (container.yaml passes ${dir} and
# ${dataDir}).
set -euo pipefail

if [ "$#" -lt 2 ]; then
  echo "usage: $0 CONTAINER_DIR DATA_DIR" >&2
  exit 2
fi
CONTAINER_DIR=$(cd "$1" && pwd)
mkdir -p "$2"
DATA_DIR=$(cd "$2" && pwd)

log() { printf '%s %s: %s\n' "$(date -u +%FT%T.%3NZ)" "$(basename "$0" .sh)" "$*"; }
die() { log "ERROR: $*" >&2; exit 1; }

# settings.env holds KEY=value lines only; read them as data, never run them as shell code.
SETTINGS="$CONTAINER_DIR/settings.env"
[ -r "$SETTINGS" ] || die "missing $SETTINGS"
while IFS= read -r line || [ -n "$line" ]; do
  case "$line" in '' | '#'*) continue ;; esac
  key=${line%%=*}
  val=${line#*=}
  [[ "$key" =~ ^[A-Z][A-Z0-9_]*$ ]] || die "bad line in settings.env: $line"
  # A value already in the environment wins (tests and one-off overrides).
  if [ -z "${!key:-}" ]; then printf -v "$key" '%s' "$val"; fi
  export "${key?}"
done <"$SETTINGS"

for v in DB_PORT ZBX_LISTEN_PORT ZBX_CACHE_UPDATE_S; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a number (is '${!v}')"
done
# zabbix_server accepts ListenPort 1024-32767 only.
[ "$ZBX_LISTEN_PORT" -ge 1024 ] && [ "$ZBX_LISTEN_PORT" -le 32767 ] || die "ZBX_LISTEN_PORT must be 1024-32767 (is $ZBX_LISTEN_PORT)"
for v in DB_NAME DB_ZABBIX_USER DB_SYNC_USER; do
  [[ "${!v}" =~ ^[A-Za-z0-9_]{1,32}$ ]] || die "$v must be letters, digits or _ (is '${!v}')"
done

secret() {
  local f="$CONTAINER_DIR/secrets/$1"
  [ -s "$f" ] || die "missing secret $f (scripts/prepare-image.sh writes the secrets into a new image)"
  local v
  v=$(head -n 1 "$f")
  [[ "$v" =~ ^[A-Za-z0-9_.-]{8,128}$ ]] || die "secret $f must be 8-128 letters, digits, _ . -"
  printf '%s' "$v"
}

MYSQL_DATA="$DATA_DIR/mysql"
MYSQL_TMP="$DATA_DIR/tmp"
LOG_DIR="$DATA_DIR/log"
ZBX_CONF="$DATA_DIR/zabbix_server.conf"
SCHEMA_MARK="$DATA_DIR/.zabbix-schema-loaded"

# Unix sockets (MariaDB's, zabbix_server's internal ones) must have paths shorter than 108 bytes;
# a deep container folder gets a short private folder under /tmp instead, named after it.
# The choice is kept in the data folder, so every later script finds the same sockets.
if [ -s "$DATA_DIR/.run-dir" ]; then
  RUN_DIR=$(head -n 1 "$DATA_DIR/.run-dir")
else
  RUN_DIR="$DATA_DIR/run"
  if [ "${#RUN_DIR}" -gt 60 ]; then
    RUN_DIR="${TMPDIR:-/tmp}/navzbx-$(printf '%s' "$DATA_DIR" | sha256sum | cut -c1-16)"
  fi
  printf '%s\n' "$RUN_DIR" >"$DATA_DIR/.run-dir"
fi
mkdir -p "$RUN_DIR" "$MYSQL_TMP" "$LOG_DIR"
chmod 700 "$RUN_DIR"
MYSQL_SOCK="$RUN_DIR/mysqld.sock"

# As root (the lab, a test), the servers run as root; as the depot's own user they run as it.
if [ "$(id -u)" -eq 0 ]; then ROOT=1; else ROOT=0; fi

# Admin connection to this copy's MariaDB over the private socket: mariadb-install-db gives the
# OS user that ran it (the depot's user, or root) an all-privilege account with unix_socket auth.
db_admin() {
  mariadb --no-defaults --protocol=socket --socket="$MYSQL_SOCK" -u "$(id -un)" "$@"
}

# Waits until MariaDB accepts connections on its socket (DB_WAIT_S, default 60 s), or dies with
# the end of its error log.
wait_db_ready() {
  local deadline=$((SECONDS + ${DB_WAIT_S:-60}))
  until db_admin -e 'SELECT 1' >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 20 "$LOG_DIR/mariadb.err" >&2 || true
      die "MariaDB did not accept connections on $MYSQL_SOCK within ${DB_WAIT_S:-60} s"
    fi
    sleep 0.2
  done
}
