#!/bin/sh
# Guest side, run at boot (navigator-guest-net.service): gives the guest's NIC the LAN address the
# host's qemu driver put on the kernel command line (navigator.ip=ADDR/PREFIX, optional
# navigator.gw=GATEWAY). No DHCP: the guest's address is part of the container spec.
set -eu
ip link set lo up
ip=""; gw=""
for word in $(cat /proc/cmdline); do
  case "$word" in
    navigator.ip=*) ip=${word#navigator.ip=} ;;
    navigator.gw=*) gw=${word#navigator.gw=} ;;
  esac
done
if [ -z "$ip" ]; then
  echo "navigator-guest-net: no navigator.ip= on the kernel command line; no LAN address" >&2
  exit 0
fi
ip link set eth0 up
ip addr replace "$ip" dev eth0
if [ -n "$gw" ]; then ip route replace default via "$gw" dev eth0; fi
echo "navigator-guest-net: eth0 $ip${gw:+ via $gw}"
