import type { DemoProcess } from './process.ts';

// Where the demo's workstations live: network namespaces on a private bridge (root), or
// loopback addresses of this machine (no root). Both give each workstation its own address, a
// way to start its processes, and a "power cut" and "power on" for the chaos loop.

export interface DemoHost {
  /** Workstation name, also the depot's name: ws1, ws2, ... */
  name: string;
  /** The workstation's own address (no prefix). */
  ip: string;
}

export interface SpawnRequest {
  argv: readonly string[];
  env: Record<string, string>;
  logPath: string;
  cwd: string;
}

export interface DemoNetwork {
  readonly mode: 'netns' | 'loopback';
  readonly hosts: readonly DemoHost[];
  /** Service address with prefix, e.g. 10.78.3.100/24. */
  readonly serviceAddress: string;
  /** Interface the service address goes on, on every workstation. */
  readonly serviceIface: string;
  /** Address this process uses to reach the workstations (the depots' admin host). */
  readonly adminIp: string;
  /** Whether the service address can move (needs CAP_NET_ADMIN). */
  readonly addressMoves: boolean;
  /** Start a long-running process on a workstation (in its namespace). */
  spawn(host: DemoHost, req: SpawnRequest): DemoProcess;
  /** Power loss: the cable goes first, then every process of the workstation dies. */
  powerOff(host: DemoHost): Promise<void>;
  /** The workstation boots again: only its own address, no neighbour cache; cable back in. */
  powerOn(host: DemoHost): Promise<void>;
  /** Kill everything, remove every namespace, link and address made. Safe to call twice. */
  destroy(): Promise<void>;
}
