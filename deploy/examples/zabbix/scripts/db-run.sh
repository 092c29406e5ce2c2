#!/usr/bin/env bash
# Long-running start command: this copy's MariaDB, in the foreground (exec), so the process
# driver's SIGTERM to the process group is a clean shutdown.
#
# Address: NAVIGATOR_HOST_IP (the depot host's LAN address, when the depot passes it) plus
# 127.0.0.1; without it, every address. The primary's pilot dumps from 127.0.0.1:DB_PORT and
# loads into each standby's server at that standby's host address, so other hosts must reach it.
source "$(dirname "$0")/common.sh"

bind=0.0.0.0
if [ -n "${NAVIGATOR_HOST_IP:-}" ]; then
  [[ "$NAVIGATOR_HOST_IP" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || die "NAVIGATOR_HOST_IP is not an IPv4 address: $NAVIGATOR_HOST_IP"
  bind="127.0.0.1,$NAVIGATOR_HOST_IP"
fi
args=(
  --defaults-file="$CONTAINER_DIR/db/my.cnf"
  --datadir="$MYSQL_DATA"
  --tmpdir="$MYSQL_TMP"
  --socket="$MYSQL_SOCK"
  --pid-file="$RUN_DIR/mysqld.pid"
  --log-error="$LOG_DIR/mariadb.err"
  --port="$DB_PORT"
  --bind-address="$bind"
  --innodb-buffer-pool-size="$DB_BUFFER_POOL"
)
[ "$ROOT" -eq 1 ] && args+=(--user=root)
log "starting mariadbd on $bind:$DB_PORT"
exec mariadbd "${args[@]}"
