import { z } from 'zod';
import { parseParams } from '../../shared/params.ts';
import type { ControlRegistrar } from '../control/server.ts';
import { ContainerId, type ContainerManager } from './manager.ts';

// The container methods of the control protocol: start, stop, status and exec of the copies this
// depot hosts, for the primary's pilot on another depot.

const StopParams = z
  .object({
    id: ContainerId,
    timeoutMs: z.number().int().min(0).max(600_000).optional().describe('Graceful stop deadline; 0 forces at once'),
  })
  .strict();
const StatusParams = z.object({ id: ContainerId.optional().describe('One container; all when absent') }).strict();
const ExecParams = z
  .object({
    id: ContainerId,
    cmd: z.string().min(1).max(4096),
    args: z.array(z.string().max(4096)).max(256).default([]),
    timeoutMs: z.number().int().positive().max(600_000).optional(),
  })
  .strict();

/** Output of container.exec is cut to this many bytes per stream so the reply fits a frame. */
const EXEC_OUTPUT_MAX = 256 * 1024;

export function registerContainerControl(control: ControlRegistrar, containers: ContainerManager): void {
  control.register('container.start', async (params) => containers.startContainer(params));
  control.register('container.stop', async (params) => {
    const p = parseParams('container.stop', StopParams, params);
    return containers.stopContainer(p.id, { timeoutMs: p.timeoutMs });
  });
  control.register('container.status', async (params) => {
    const p = parseParams('container.status', StatusParams, params);
    return p.id ? containers.status(p.id) : containers.list();
  });
  control.register('container.exec', async (params) => {
    const p = parseParams('container.exec', ExecParams, params);
    const r = await containers.exec(p.id, p.cmd, p.args, { timeoutMs: p.timeoutMs });
    return { exitCode: r.exitCode, stdout: cut(r.stdout), stderr: cut(r.stderr) };
  });
}

function cut(s: string): string {
  return Buffer.byteLength(s) <= EXEC_OUTPUT_MAX ? s : `${Buffer.from(s).subarray(0, EXEC_OUTPUT_MAX).toString('utf8')}\n[output cut at ${EXEC_OUTPUT_MAX} bytes]`;
}
