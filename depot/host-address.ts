import type { HeartbeatMessage } from '../shared/wire.ts';

/** The depot's own address for others to reach its services: its first non-loopback libp2p IPv4. */
export function hostAddressOf(hb: Pick<HeartbeatMessage, 'addresses'>): string | undefined {
  const ips = hb.addresses.map((a) => /^\/ip4\/([\d.]+)\//.exec(a)?.[1]).filter((ip): ip is string => ip !== undefined && ip !== '0.0.0.0');
  return ips.find((ip) => !ip.startsWith('127.')) ?? ips[0];
}
