#!/usr/bin/env bash
# One-shot start step of the lab's DB service (lab/db-service.ts), after MariaDB is started: wait
# until it accepts connections, make sure the accounts exist with the image's passwords, and the
# first time create the service's database with its one table. Like the Zabbix example's
# schema.sh (whose common.sh, db-init.sh and db-run.sh this image reuses), nothing here is
# binary-logged: a standby gets the primary's rows by its seed and by replication.
#
# Accounts: DB_ZABBIX_USER (here the write front's account: local connections, ALL on the
# database and SELECT on its term fence, no global privilege — so, unlike the sync account, it
# cannot write past read_only) and DB_SYNC_USER (the pilots' account, as in the example).
source "$(dirname "$0")/common.sh"

app_pw=$(secret zabbix.password)
sync_pw=$(secret sync.password)

wait_db_ready

nav_pattern=$(printf '%s__nav_%%' "$DB_NAME" | sed 's/_/\\_/g')
fence_db=$(printf '%s__nav_sync' "$DB_NAME" | sed 's/_/\\_/g')
db_admin <<SQL
SET SESSION sql_log_bin = 0;
CREATE USER IF NOT EXISTS '$DB_ZABBIX_USER'@'127.0.0.1' IDENTIFIED BY '$app_pw';
ALTER USER '$DB_ZABBIX_USER'@'127.0.0.1' IDENTIFIED BY '$app_pw';
GRANT ALL PRIVILEGES ON \`$DB_NAME\`.* TO '$DB_ZABBIX_USER'@'127.0.0.1';
GRANT SELECT ON \`$fence_db\`.* TO '$DB_ZABBIX_USER'@'127.0.0.1';
CREATE USER IF NOT EXISTS '$DB_SYNC_USER'@'%' IDENTIFIED BY '$sync_pw';
ALTER USER '$DB_SYNC_USER'@'%' IDENTIFIED BY '$sync_pw';
GRANT ALL PRIVILEGES ON \`$DB_NAME\`.* TO '$DB_SYNC_USER'@'%';
GRANT ALL PRIVILEGES ON \`$nav_pattern\`.* TO '$DB_SYNC_USER'@'%';
GRANT RELOAD, PROCESS, BINLOG MONITOR, BINLOG ADMIN, REPLICATION SLAVE, REPLICATION SLAVE ADMIN, REPLICATION MASTER ADMIN, SLAVE MONITOR, CREATE USER, READ_ONLY ADMIN, SET USER ON *.* TO '$DB_SYNC_USER'@'%' WITH GRANT OPTION;
SQL

mark="$DATA_DIR/.db-service-schema"
if [ -f "$mark" ]; then
  log "schema already made"
  exit 0
fi
db_admin <<SQL
SET SESSION sql_log_bin = 0;
CREATE DATABASE IF NOT EXISTS \`$DB_NAME\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
CREATE TABLE IF NOT EXISTS \`$DB_NAME\`.writes (
  seq BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  writer_ms BIGINT UNSIGNED NOT NULL,
  host VARCHAR(64) NOT NULL,
  server_id INT UNSIGNED NOT NULL,
  term BIGINT UNSIGNED NOT NULL,
  committed_at DATETIME(6) NOT NULL
) ENGINE=InnoDB;
SQL
touch "$mark"
log "schema made"
