#!/usr/bin/env bash
# Makes a service image folder from this example: copies it to DEST and writes fresh random
# passwords for the two database accounts into DEST/secrets (0600). Bootstrap the service from
# DEST; the image (and so every copy) carries the same passwords.
#   deploy/examples/zabbix/scripts/prepare-image.sh /srv/images/zabbix
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:?usage: prepare-image.sh DEST}
[ -e "$dest" ] && { echo "prepare-image: $dest exists already" >&2; exit 1; }
mkdir -p "$dest"
cp -r "$src/container.yaml" "$src/settings.env" "$src/scripts" "$src/db" "$dest/"
mkdir -m 700 "$dest/secrets"
for name in zabbix sync; do
  (umask 077; head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24 >"$dest/secrets/$name.password")
done
echo "prepare-image: image folder ready in $dest"
