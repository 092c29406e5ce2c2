#!/usr/bin/env bash
# One-shot start step: create this copy's MariaDB data folder the first time (about 1-3 s).
# A folder left half-made by an interrupted run is made again.
source "$(dirname "$0")/common.sh"

if [ -f "$MYSQL_DATA/.navigator-installed" ]; then
  exit 0
fi
rm -rf "$MYSQL_DATA"
mkdir -p "$MYSQL_DATA"
args=(--no-defaults --datadir="$MYSQL_DATA" --tmpdir="$MYSQL_TMP" --skip-test-db --skip-name-resolve)
[ "$ROOT" -eq 1 ] && args+=(--user=root)
log "installing the MariaDB data folder in $MYSQL_DATA"
mariadb-install-db "${args[@]}" >"$LOG_DIR/mariadb-install-db.log" 2>&1 || {
  tail -n 20 "$LOG_DIR/mariadb-install-db.log" >&2
  die "mariadb-install-db failed"
}
touch "$MYSQL_DATA/.navigator-installed"
log "data folder ready"
