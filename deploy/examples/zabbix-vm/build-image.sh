#!/usr/bin/env bash
# Builds the guest image of the VM-packed Zabbix service, offline from Debian's packages only:
#   disk.qcow2   ext4 root (no partition table, the guest's /dev/vda): Debian 12, MariaDB,
#                zabbix-server-mysql with its schema already loaded, qemu-guest-agent, and the
#                process example's scripts (deploy/examples/zabbix/) run by systemd units
#   vmlinuz      the guest kernel (linux-image-cloud-amd64), booted by QEMU's -kernel
#   initrd.img   its initrd (virtio and ext4 modules only)
#   secrets/     the database passwords baked into this image (sync.password for the service
#                spec's database.passwordFile; zabbix.password stays in the guest)
#   container.yaml, image.json  the qemu container spec and what was built
# The result is cached in $NAVIGATOR_VM_CACHE (default /var/tmp/navigator-vm)/<key>, the key being
# the hash of this recipe and every file it puts in the guest, so a test or a bench builds it once
# per machine (about 4-6 min; the packages come from the Debian mirror). The folder's path is the
# last line on stdout.
#   deploy/examples/zabbix-vm/build-image.sh            # build (or find) the image
#   deploy/examples/zabbix-vm/build-image.sh --key      # print the cache folder only, build nothing
# Needs root, debootstrap, qemu-img, e2fsprogs (mkfs.ext4 -d), util-linux (unshare).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
example=$(cd "$here/../zabbix" && pwd)
cache=${NAVIGATOR_VM_CACHE:-/var/tmp/navigator-vm}
mirror=${NAVIGATOR_DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
# Packages of the guest (no recommends). The kernel package builds the initrd in the chroot.
packages=(systemd systemd-sysv udev dbus iproute2 iputils-arping iputils-ping procps kmod
  initramfs-tools linux-image-cloud-amd64 qemu-guest-agent mariadb-server mariadb-client
  zabbix-server-mysql gzip gawk)

log() { printf '%s build-image: %s\n' "$(date -u +%FT%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

key=$( {
  printf '%s\n' "$suite" "$mirror" "${packages[*]}"
  cat "$here/build-image.sh" "$here"/guest/*
  (cd "$example" && cat settings.env db/my.cnf scripts/*)
} | sha256sum | cut -c1-16)
out="$cache/zabbix-vm-$key"
if [ "${1:-}" = "--key" ]; then echo "$out"; exit 0; fi
if [ -f "$out/ready" ]; then echo "$out"; exit 0; fi

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, chroot)"
for c in debootstrap qemu-img mkfs.ext4 unshare chroot; do command -v "$c" >/dev/null || die "missing $c (scripts/setup.sh installs it)"; done
mkdir -p "$cache"
exec 9>"$cache/zabbix-vm-$key.lock"
flock 9
if [ -f "$out/ready" ]; then echo "$out"; exit 0; fi

t0=$SECONDS
work="$cache/zabbix-vm-$key.tmp-$$"
root="$work/root"
rm -rf "$work"
mkdir -p "$work"
mounted=()
cleanup() {
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[$i]}" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

log "debootstrap $suite from $mirror (minbase)"
debootstrap --variant=minbase --include=ca-certificates "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
  { tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }

for m in proc sys dev dev/pts; do
  mount --bind "/$m" "$root/$m"
  mounted+=("$root/$m")
done
in_root() { chroot "$root" env DEBIAN_FRONTEND=noninteractive LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

# Nothing starts while packages install; small initrd with the virtio and ext4 modules only.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
mkdir -p "$root/etc/initramfs-tools/conf.d"
echo 'MODULES=list' >"$root/etc/initramfs-tools/conf.d/navigator.conf"
echo 'COMPRESS=gzip' >>"$root/etc/initramfs-tools/conf.d/navigator.conf"
printf '%s\n' virtio_pci virtio_blk virtio_net virtio_console ext4 crc32c_generic >>"$root/etc/initramfs-tools/modules"
printf 'path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\npath-exclude /usr/share/locale/*\npath-exclude /usr/share/info/*\n' >"$root/etc/dpkg/dpkg.cfg.d/navigator-nodoc"

log "apt-get install ${packages[*]}"
in_root apt-get update -qq >"$work/apt.log" 2>&1 || { tail -n 20 "$work/apt.log" >&2; die "apt-get update failed"; }
in_root apt-get install -y -qq --no-install-recommends "${packages[@]}" >>"$work/apt.log" 2>&1 ||
  { tail -n 30 "$work/apt.log" >&2; die "apt-get install failed"; }
in_root apt-get clean

# The system's own MariaDB and Zabbix units stay off: the example's scripts run this copy's.
in_root systemctl disable mariadb.service zabbix-server.service >/dev/null 2>&1 || true
in_root systemctl mask mariadb.socket mariadb.service zabbix-server.service >/dev/null 2>&1 || true
in_root systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer dpkg-db-backup.timer systemd-timesyncd.service >/dev/null 2>&1 || true

# The service: the process example's scripts, settings and MariaDB settings, unchanged, with this
# image's passwords; systemd units; the address service.
svc="$root/opt/navigator/zabbix"
mkdir -p "$svc" "$root/var/lib/navigator-zabbix"
cp -r "$example/settings.env" "$example/scripts" "$example/db" "$svc/"
mkdir -m 700 "$svc/secrets" "$work/secrets"
for name in zabbix sync; do
  (umask 077; head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24 >"$svc/secrets/$name.password")
done
cp "$svc/secrets/sync.password" "$work/secrets/sync.password"
install -m 755 "$here/guest/navigator-guest-net.sh" "$root/usr/local/sbin/navigator-guest-net"
install -m 755 "$here/guest/navigator-whoami.pl" "$root/usr/local/sbin/navigator-whoami"
for u in navigator-guest-net.service navigator-zabbix-db.service navigator-zabbix.service navigator-whoami.service; do
  install -m 644 "$here/guest/$u" "$root/etc/systemd/system/$u"
done
in_root systemctl enable navigator-guest-net.service navigator-zabbix-db.service navigator-whoami.service >/dev/null 2>&1 || die "systemctl enable failed"

# The schema, loaded once here (in a private network namespace: MariaDB listens on 0.0.0.0), so a
# booted guest serves at once instead of loading it under emulation.
log "loading the Zabbix schema into the image's database"
unshare --net bash -c '
  set -euo pipefail
  ip link set lo up
  root=$1
  run() { chroot "$root" env LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin TMPDIR=/tmp "$@"; }
  run bash /opt/navigator/zabbix/scripts/db-init.sh /opt/navigator/zabbix /var/lib/navigator-zabbix
  run bash /opt/navigator/zabbix/scripts/db-run.sh /opt/navigator/zabbix /var/lib/navigator-zabbix &
  db=$!
  run bash /opt/navigator/zabbix/scripts/schema.sh /opt/navigator/zabbix /var/lib/navigator-zabbix
  kill -TERM "$db"
  wait "$db" || true
' _ "$root" >"$work/schema.log" 2>&1 || { tail -n 20 "$work/schema.log" >&2; die "schema load failed"; }
# The run folder and logs are per boot.
rm -rf "$root/var/lib/navigator-zabbix/run" "$root/var/lib/navigator-zabbix/.run-dir" "$root/var/lib/navigator-zabbix/log"/*
# mysql-bin files of the build: a fresh GTID history for every copy.
rm -f "$root/var/lib/navigator-zabbix/mysql"/mysql-bin.* "$root/var/lib/navigator-zabbix/mysql"/*.pid

# Identity and boot: one ext4 root on /dev/vda; machine-id made at first boot.
echo navigator-guest >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 navigator-guest\n' >"$root/etc/hosts"
echo '/dev/vda / ext4 rw,noatime 0 1' >"$root/etc/fstab"
: >"$root/etc/machine-id"
rm -f "$root/usr/sbin/policy-rc.d"
for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[$i]}"; done
mounted=()

kernel=$(ls "$root"/boot/vmlinuz-* | sort -V | tail -n 1)
initrd=$(ls "$root"/boot/initrd.img-* | sort -V | tail -n 1)
[ -f "$kernel" ] && [ -f "$initrd" ] || die "no kernel or initrd in the root's /boot"
cp "$kernel" "$work/vmlinuz"
cp "$initrd" "$work/initrd.img"
rm -f "$root"/boot/vmlinuz-* "$root"/boot/initrd.img-*
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log "$root"/tmp/*

# Disk: the root's size plus room for the database to grow (DISK_HEADROOM_MB, default 512).
used_mb=$(du -sm "$root" | cut -f1)
size_mb=$((used_mb + used_mb / 5 + ${DISK_HEADROOM_MB:-512}))
log "root file system ${used_mb} MB; disk ${size_mb} MB"
truncate -s "${size_mb}M" "$work/disk.raw"
mkfs.ext4 -q -L navigator-root -d "$root" "$work/disk.raw" >"$work/mkfs.log" 2>&1 || { cat "$work/mkfs.log" >&2; die "mkfs.ext4 -d failed"; }
qemu-img convert -f raw -O qcow2 "$work/disk.raw" "$work/disk.qcow2"
rm -f "$work/disk.raw"
rm -rf "$root"

cp "$here/container.yaml" "$work/container.yaml"
cat >"$work/image.json" <<JSON
{"key":"$key","suite":"$suite","mirror":"$mirror","kernel":"$(basename "$kernel")","rootMb":$used_mb,"diskMb":$size_mb,"builtAt":"$(date -u +%FT%TZ)","buildSeconds":$((SECONDS - t0))}
JSON
touch "$work/ready"
rm -rf "$out"
mv "$work" "$out"
trap - EXIT
log "image ready in $out ($((SECONDS - t0)) s)"
echo "$out"
