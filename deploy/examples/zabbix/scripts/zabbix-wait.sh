#!/usr/bin/env bash
# Primary-only one-shot step after zabbix-run.sh: returns once zabbix_server's trapper accepts
# connections (about a second), so the pilot's first service probe after promotion meets a
# listening server instead of one still starting. Fails if zabbix_server exits or 60 s pass.
source "$(dirname "$0")/common.sh"

deadline=$((SECONDS + ${ZBX_WAIT_S:-60}))
while ! (exec 3<>"/dev/tcp/127.0.0.1/$ZBX_LISTEN_PORT") 2>/dev/null; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    tail -n 20 "$LOG_DIR/zabbix_server.log" >&2 || true
    die "zabbix_server did not listen on port $ZBX_LISTEN_PORT within ${ZBX_WAIT_S:-60} s"
  fi
  sleep 0.1
done
log "zabbix_server listens on port $ZBX_LISTEN_PORT"
