import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { mkdtemp, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Writable } from 'node:stream';
import { createLogger } from '../../shared/logger.ts';
import { NavigatorError } from '../../shared/errors.ts';
import { VmrunSpec } from '../../depot/containers/drivers/driver.ts';
import { createDriver } from '../../depot/containers/drivers/factory.ts';
import { VmrunDriver, parseList } from '../../depot/containers/drivers/vmrun.ts';

// vmrun against the recording stand-in: exact argument lists, output parsing, error handling
// and that the guest password never reaches a log line or an error message.

const STANDIN = resolve(import.meta.dirname, '../fixtures/vmrun-standin');
const PASSWORD = 's3cret-Guest-Pw!';

let root: string;
let stateDir: string;
let vmDir: string;
let vmx: string;
let logText: string;
let prevEnv: string | undefined;

function logger() {
  const sink = new Writable({
    write(chunk, _enc, cb) {
      logText += String(chunk);
      cb();
    },
  });
  return createLogger({ level: 'debug', destination: sink });
}

async function calls(): Promise<string[][]> {
  const text = await readFile(join(stateDir, 'calls'), 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split('\x1f'));
}

function driver(spec: Partial<VmrunSpec> = {}): VmrunDriver {
  return createDriver(VmrunSpec.parse({ driver: 'vmrun', vmx: 'vm/zabbix.vmx', credentialsFile: 'guest.yaml', ...spec }), {
    id: 'c1',
    dir: vmDir,
    logger: logger(),
    vmrunPath: STANDIN,
  }) as VmrunDriver;
}

async function caught(p: Promise<unknown>): Promise<NavigatorError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(NavigatorError);
    return err as NavigatorError;
  }
  throw new Error('expected a rejection');
}

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'nav-vmrun-'));
  stateDir = join(root, 'state');
  vmDir = join(root, 'container');
  await mkdir(stateDir);
  await mkdir(join(vmDir, 'vm'), { recursive: true });
  vmx = join(vmDir, 'vm/zabbix.vmx');
  await writeFile(vmx, 'config.version = "8"\n');
  await writeFile(join(vmDir, 'guest.yaml'), `user: navigator\npassword: "${PASSWORD}"\n`);
  await writeFile(join(stateDir, 'password'), PASSWORD);
  logText = '';
  prevEnv = process.env.VMRUN_STANDIN_DIR;
  process.env.VMRUN_STANDIN_DIR = stateDir;
});

afterEach(async () => {
  if (prevEnv === undefined) delete process.env.VMRUN_STANDIN_DIR;
  else process.env.VMRUN_STANDIN_DIR = prevEnv;
  await rm(root, { recursive: true, force: true });
});

describe('vmrun driver', () => {
  it('starts headless with -T ws start X.vmx nogui after checking the list', async () => {
    const d = driver();
    expect(await d.status()).toBe('stopped');
    await d.start();
    expect(await d.status()).toBe('running');
    expect(await calls()).toEqual([
      ['-T', 'ws', 'list'],
      ['-T', 'ws', 'list'],
      ['-T', 'ws', 'start', vmx, 'nogui'],
      ['-T', 'ws', 'list'],
    ]);
    // Starting a running VM is a no-op, not a second start.
    await d.start();
    expect((await calls()).filter((c) => c[2] === 'start')).toHaveLength(1);
  });

  it('uses -T player for VMware Player', async () => {
    const d = driver({ hostType: 'player' });
    await d.start();
    expect((await calls()).at(-1)).toEqual(['-T', 'player', 'start', vmx, 'nogui']);
  });

  it('stops soft within the timeout', async () => {
    const d = driver();
    await d.start();
    expect(await d.stop({ timeoutMs: 5000 })).toEqual({ forced: false });
    expect((await calls()).at(-1)).toEqual(['-T', 'ws', 'stop', vmx, 'soft']);
    expect(await d.status()).toBe('stopped');
    // A stopped VM needs no stop call.
    const before = (await calls()).length;
    expect(await d.stop()).toEqual({ forced: false });
    expect((await calls()).slice(before)).toEqual([['-T', 'ws', 'list']]);
  });

  it('falls back to stop hard when the guest ignores the soft stop', async () => {
    const d = driver();
    await d.start();
    await writeFile(join(stateDir, 'soft-hangs'), '');
    const t0 = Date.now();
    expect(await d.stop({ timeoutMs: 400 })).toEqual({ forced: true });
    expect(Date.now() - t0).toBeLessThan(5000);
    const stops = (await calls()).filter((c) => c[2] === 'stop');
    expect(stops).toEqual([
      ['-T', 'ws', 'stop', vmx, 'soft'],
      ['-T', 'ws', 'stop', vmx, 'hard'],
    ]);
    expect(await d.status()).toBe('stopped');
    expect(logText).toContain('vmrun-timeout');
  });

  it('timeoutMs 0 powers off hard at once', async () => {
    const d = driver();
    await d.start();
    expect(await d.stop({ timeoutMs: 0 })).toEqual({ forced: true });
    expect((await calls()).filter((c) => c[2] === 'stop')).toEqual([['-T', 'ws', 'stop', vmx, 'hard']]);
  });

  it('reads the guest address with getGuestIPAddress X.vmx -wait and the tools state', async () => {
    const d = driver();
    await d.start();
    expect(await d.guestAddress()).toBe('192.168.56.101');
    expect((await calls()).at(-1)).toEqual(['-T', 'ws', 'getGuestIPAddress', vmx, '-wait']);
    expect(await d.toolsState()).toBe('running');
    expect((await calls()).at(-1)).toEqual(['-T', 'ws', 'checkToolsState', vmx]);
  });

  it('runs a program in the guest with -gu/-gp from the credentials file, never logging the password', async () => {
    const d = driver();
    await d.start();
    const r = await d.exec('/usr/bin/systemctl', ['restart', 'zabbix-server']);
    expect(r.exitCode).toBe(0);
    expect((await calls()).at(-1)).toEqual([
      '-T', 'ws', '-gu', 'navigator', '-gp', PASSWORD, 'runProgramInGuest', vmx, '/usr/bin/systemctl', 'restart', 'zabbix-server',
    ]);
    // The guest program's own non-zero exit is a result, not a driver failure.
    await writeFile(join(stateDir, 'guest-exit'), '3');
    const r3 = await d.exec('/bin/false', []);
    expect(r3.exitCode).toBe(3);
    expect(r3.stderr).not.toContain(PASSWORD);
    expect(logText.length).toBeGreaterThan(0);
    expect(logText).not.toContain(PASSWORD);
  });

  it('a wrong guest password fails with vmrun\'s text and without the password', async () => {
    await writeFile(join(stateDir, 'password'), 'something-else');
    const d = driver();
    await d.start();
    const err = await caught(d.exec('/bin/true', []));
    expect(err.code).toBe('DRIVER_FAILED');
    expect(err.message).toBe('vmrun runProgramInGuest failed: Error: Invalid user name or password for the guest OS');
    expect(err.message).not.toContain(PASSWORD);
    expect(JSON.stringify(err.details)).not.toContain(PASSWORD);
    expect(logText).toContain('vmrun-failed');
    expect(logText).not.toContain(PASSWORD);
  });

  it('refuses exec without credentials, and a credentials file that is not valid', async () => {
    const bare = driver({ credentialsFile: undefined });
    expect((await caught(bare.exec('/bin/true', []))).message).toMatch(/needs guest credentials/);
    await writeFile(join(vmDir, 'guest.yaml'), `user: navigator\npasswd: "${PASSWORD}"\n`);
    const err = await caught(driver().exec('/bin/true', []));
    expect(err.message).toMatch(/guest credentials file guest.yaml is invalid/);
    expect(err.message).not.toContain(PASSWORD);
  });

  it('turns "Error: ..." output and a non-zero exit into a NavigatorError with vmrun\'s text', async () => {
    await rm(vmx);
    const d = driver();
    const err = await caught(d.start());
    expect(err.code).toBe('DRIVER_FAILED');
    expect(err.message).toBe(`vmrun start failed: Error: Cannot open VM: ${vmx}, The virtual machine cannot be found`);
    expect(err.details).toEqual({ command: 'start', exitCode: 255 });

    const err2 = await caught(driver().guestAddress());
    expect(err2.message).toBe(`vmrun getGuestIPAddress failed: Error: The virtual machine is not powered on: ${vmx}`);
  });

  it('reports a missing vmrun binary clearly', async () => {
    const d = createDriver(VmrunSpec.parse({ driver: 'vmrun', vmx: 'vm/zabbix.vmx' }), {
      id: 'c1',
      dir: vmDir,
      logger: logger(),
      vmrunPath: join(root, 'no-such-vmrun'),
    });
    const err = await caught(d.status());
    expect(err.code).toBe('DRIVER_FAILED');
    expect(err.message).toMatch(/cannot run vmrun .*ENOENT/);
  });

  it('refuses a vmx or credentials path outside the container folder', () => {
    for (const vmxPath of ['../other/x.vmx', '/etc/x.vmx', 'vm/../../x.vmx']) {
      expect(() => driver({ vmx: vmxPath })).toThrow(expect.objectContaining({ code: 'PATH_OUTSIDE_STORE' }));
    }
    expect(() => driver({ credentialsFile: '../../etc/shadow' })).toThrow(expect.objectContaining({ code: 'PATH_OUTSIDE_STORE' }));
  });

  it('parses vmrun list output', () => {
    expect(parseList('Total running VMs: 0\n')).toEqual([]);
    expect(parseList('Total running VMs: 2\r\n/vm/a.vmx\r\n/vm/b b.vmx\r\n')).toEqual(['/vm/a.vmx', '/vm/b b.vmx']);
    expect(() => parseList('garbage')).toThrow(/unexpected vmrun list output/);
  });
});
