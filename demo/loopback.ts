import { execa } from 'execa';
import { NavigatorError } from '../shared/errors.ts';
import type { DemoHost, DemoNetwork, SpawnRequest } from './network.ts';
import { DemoProcess } from './process.ts';
import { killMarked } from './marked-processes.ts';
import { removeDemo, writeRecord, type DemoRecord } from './registry.ts';
import { thisOwner } from '../lab/lan/owner-registry.ts';

// The demo's "LAN" without network namespaces: each workstation is a loopback address of this
// machine (127.0.0.2, .3, ...; Linux answers on all of 127.0.0.0/8 without configuration). There
// is no cable to cut: a power cut kills the workstation's processes. The service address
// 127.0.0.100/8 goes on `lo`, which needs CAP_NET_ADMIN: without root the address cannot move,
// so the primary cannot take over (the demo says so).

export class LoopbackNetwork implements DemoNetwork {
  readonly mode = 'loopback' as const;
  readonly serviceIface = 'lo';
  readonly serviceAddress = '127.0.0.100/8';
  readonly adminIp = '127.0.0.1';
  readonly addressMoves: boolean;
  readonly hosts: DemoHost[];
  private destroyed = false;

  private constructor(private readonly rec: DemoRecord, workstations: number) {
    this.addressMoves = process.getuid?.() === 0;
    this.hosts = Array.from({ length: workstations }, (_, i) => ({ name: `ws${i + 1}`, ip: `127.0.0.${2 + i}` }));
  }

  static async create(id: string, dir: string, workstations: number): Promise<LoopbackNetwork> {
    if (workstations > 90) throw new NavigatorError('BAD_REQUEST', 'loopback mode supports at most 90 workstations');
    // Only root can put the service address on lo, so only then is there one to remove.
    const root = process.getuid?.() === 0;
    const rec: DemoRecord = { id, ...(await thisOwner()), dir, namespaces: [], ...(root ? { loAddress: '127.0.0.100/8' } : {}) };
    await writeRecord(rec);
    return new LoopbackNetwork(rec, workstations);
  }

  spawn(host: DemoHost, req: SpawnRequest): DemoProcess {
    return new DemoProcess(`${host.name} ${req.argv[1] ?? req.argv[0]}`, req.argv, req);
  }

  async powerOff(host: DemoHost): Promise<void> {
    await killMarked(this.rec.id, host.name);
    await this.dropServiceAddressOf();
  }

  async powerOn(host: DemoHost): Promise<void> {
    await killMarked(this.rec.id, host.name);
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    await removeDemo(this.rec);
  }

  /** All workstations share `lo`: a dead host's address would stay, so the power cut removes it. */
  private async dropServiceAddressOf(): Promise<void> {
    if (!this.addressMoves) return;
    await execa('ip', ['addr', 'del', this.serviceAddress, 'dev', 'lo'], { reject: false });
  }
}
