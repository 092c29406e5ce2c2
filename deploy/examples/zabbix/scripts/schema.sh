#!/usr/bin/env bash
# One-shot start step, after MariaDB is started: wait until it accepts connections, make sure
# the accounts exist with the image's passwords, and the first time load the Zabbix schema
# (schema, images, data: about 6 s). A load that did not finish (no marker file) is started over
# from an empty database, so a copy never runs on a half-loaded schema.
source "$(dirname "$0")/common.sh"

SCHEMA_DIR=${ZABBIX_SCHEMA_DIR:-/usr/share/zabbix-server-mysql}
for f in schema images data; do
  [ -r "$SCHEMA_DIR/$f.sql.gz" ] || die "missing $SCHEMA_DIR/$f.sql.gz (install the Debian package zabbix-server-mysql)"
done
zbx_pw=$(secret zabbix.password)
sync_pw=$(secret sync.password)

wait_db_ready

# Accounts (passwords travel on stdin, never on a command line). zabbix_server connects from
# this host only; the sync account is used by the primary's pilot from other hosts too and needs
# ALL on the database and on its __nav_* staging/history schemas (see pilot/dbsync.ts), SET USER
# to recreate definers and READ_ONLY ADMIN for the final sync of a planned switchover; for
# replication (dbsync.mode replicate/semisync) the global privileges of NAVIGATOR_GLOBAL_GRANTS in
# pilot/db/replication.ts (seeding, CHANGE MASTER, the replication account it creates with
# REPLICATION SLAVE only). Not binary-logged: each copy sets up its own accounts.
# LIKE pattern of DB__nav_staging, DB__nav_previous, DB__nav_sync, DB__nav_repl (_ is a wildcard there).
nav_pattern=$(printf '%s__nav_%%' "$DB_NAME" | sed 's/_/\\_/g')
db_admin <<SQL
SET SESSION sql_log_bin = 0;
CREATE USER IF NOT EXISTS '$DB_ZABBIX_USER'@'127.0.0.1' IDENTIFIED BY '$zbx_pw';
CREATE USER IF NOT EXISTS '$DB_ZABBIX_USER'@'localhost' IDENTIFIED BY '$zbx_pw';
ALTER USER '$DB_ZABBIX_USER'@'127.0.0.1' IDENTIFIED BY '$zbx_pw';
ALTER USER '$DB_ZABBIX_USER'@'localhost' IDENTIFIED BY '$zbx_pw';
GRANT ALL PRIVILEGES ON \`$DB_NAME\`.* TO '$DB_ZABBIX_USER'@'127.0.0.1';
GRANT ALL PRIVILEGES ON \`$DB_NAME\`.* TO '$DB_ZABBIX_USER'@'localhost';
CREATE USER IF NOT EXISTS '$DB_SYNC_USER'@'%' IDENTIFIED BY '$sync_pw';
ALTER USER '$DB_SYNC_USER'@'%' IDENTIFIED BY '$sync_pw';
GRANT ALL PRIVILEGES ON \`$DB_NAME\`.* TO '$DB_SYNC_USER'@'%';
GRANT ALL PRIVILEGES ON \`$nav_pattern\`.* TO '$DB_SYNC_USER'@'%';
GRANT RELOAD, PROCESS, BINLOG MONITOR, BINLOG ADMIN, REPLICATION SLAVE, REPLICATION SLAVE ADMIN, REPLICATION MASTER ADMIN, SLAVE MONITOR, CREATE USER, READ_ONLY ADMIN, SET USER ON *.* TO '$DB_SYNC_USER'@'%' WITH GRANT OPTION;
SQL

if [ -f "$SCHEMA_MARK" ]; then
  log "schema already loaded"
  exit 0
fi
t0=$SECONDS
log "loading the Zabbix schema into $DB_NAME"
# Not binary-logged: a standby gets the primary's database by its seed, not by replaying this.
db_admin -e "SET SESSION sql_log_bin = 0; DROP DATABASE IF EXISTS \`$DB_NAME\`; CREATE DATABASE \`$DB_NAME\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;"
# Faster than loading the files as they are, same result: the schema with each table's indexes
# and foreign keys folded into its CREATE TABLE (fold-schema.awk), the data as multi-row INSERTs
# (join-inserts.awk), foreign keys not checked during the load (as mysqldump's output does).
here=$(dirname "$0")
load() {
  db_admin --batch --init-command='SET SESSION foreign_key_checks = 0, unique_checks = 0, sql_log_bin = 0' "$DB_NAME"
}
zcat "$SCHEMA_DIR/schema.sql.gz" >"$MYSQL_TMP/schema.sql"
awk -f "$here/fold-schema.awk" "$MYSQL_TMP/schema.sql" "$MYSQL_TMP/schema.sql" | load || die "loading schema.sql.gz failed"
rm -f "$MYSQL_TMP/schema.sql"
zcat "$SCHEMA_DIR/images.sql.gz" | load || die "loading images.sql.gz failed"
zcat "$SCHEMA_DIR/data.sql.gz" | awk -f "$here/join-inserts.awk" | load || die "loading data.sql.gz failed"
touch "$SCHEMA_MARK"
log "schema loaded in $((SECONDS - t0)) s"
