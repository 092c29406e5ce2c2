#!/usr/bin/env bash
# Runs SQL from stdin in this copy's Zabbix database, as the database's admin (over the private
# socket; no password involved). For operators and tests, e.g. on the primary's host:
#   bash scripts/sql.sh CONTAINER_DIR CONTAINER_DIR/data <<<'SELECT host FROM hosts'
# Output: tab-separated rows, no header.
source "$(dirname "$0")/common.sh"
exec mariadb --no-defaults --protocol=socket --socket="$MYSQL_SOCK" -u "$(id -un)" --batch --skip-column-names "$DB_NAME"
