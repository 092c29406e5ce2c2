import { insideDir } from './paths.ts';
import type { ContainerDriver, ContainerSpec, DriverContext } from './driver.ts';
import { VmrunDriver } from './vmrun.ts';
import { QemuDriver } from './qemu.ts';
import { ProcessDriver } from './process.ts';

// Makes the driver a container spec names (the interface is in driver.ts, which the drivers
// import; this file imports the drivers, so the two never form a cycle).

/** Check every path a spec names, so a bad request is refused before anything starts. */
export function specPaths(spec: ContainerSpec): Array<[string, string]> {
  switch (spec.driver) {
    case 'vmrun':
      return [['vmx', spec.vmx], ...(spec.credentialsFile ? [['credentialsFile', spec.credentialsFile] as [string, string]] : [])];
    case 'qemu':
      return spec.disk ? [['disk', spec.disk]] : [];
    case 'process':
      return [['manifest', spec.manifest]];
  }
}

export function createDriver(spec: ContainerSpec, ctx: DriverContext): ContainerDriver {
  for (const [what, p] of specPaths(spec)) insideDir(ctx.dir, p, what);
  switch (spec.driver) {
    case 'vmrun':
      return new VmrunDriver(spec, ctx);
    case 'qemu':
      return new QemuDriver(spec, ctx);
    case 'process':
      return new ProcessDriver(spec, ctx);
  }
}
