#!/usr/bin/env bash
# Primary-only command: zabbix_server, in the foreground (exec), started by the pilot when this
# copy becomes primary and stopped (SIGTERM to its process group) when it stops being primary.
# On a standby it does not run: the database there only changes by the pilots' sync.
source "$(dirname "$0")/common.sh"

[ -f "$SCHEMA_MARK" ] || die "the Zabbix schema is not loaded (scripts/schema.sh runs at container start)"
zbx_pw=$(secret zabbix.password)

# The configuration is written at each start (it holds the password: 0600, in the copy's data
# folder). Minimal process counts: this is a small server; raise them for a real load.
umask 077
cat >"$ZBX_CONF.tmp" <<CONF
ListenIP=0.0.0.0
ListenPort=$ZBX_LISTEN_PORT
LogType=file
LogFile=$LOG_DIR/zabbix_server.log
LogFileSize=10
PidFile=$RUN_DIR/zabbix_server.pid
SocketDir=$RUN_DIR
TmpDir=$RUN_DIR
DBHost=127.0.0.1
DBPort=$DB_PORT
DBName=$DB_NAME
DBUser=$DB_ZABBIX_USER
DBPassword=$zbx_pw
AllowUnsupportedDBVersions=1
AllowRoot=$ROOT
StartPollers=1
StartPollersUnreachable=1
StartTrappers=2
StartPingers=0
StartDiscoverers=0
StartHTTPPollers=0
StartPreprocessors=1
StartHistoryPollers=1
StartLLDProcessors=1
StartDBSyncers=1
StartTimers=1
StartEscalators=1
StartAlerters=1
StartReportWriters=0
CacheSize=16M
HistoryCacheSize=8M
HistoryIndexCacheSize=4M
TrendCacheSize=4M
TrendFunctionCacheSize=4M
ValueCacheSize=8M
CacheUpdateFrequency=$ZBX_CACHE_UPDATE_S
Timeout=4
StatsAllowedIP=127.0.0.1
CONF
mv "$ZBX_CONF.tmp" "$ZBX_CONF"

# HANodeName stays unset: Zabbix runs standalone (its own HA needs one shared database); the
# pilots' election decides which copy serves. A standalone server takes over the node record
# the old primary left in the synced database (checked: it starts at once).
log "starting zabbix_server on port $ZBX_LISTEN_PORT"
exec zabbix_server -f -c "$ZBX_CONF"
