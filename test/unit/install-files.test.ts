import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { DEFAULT_LAYOUT, directories, purgedPaths } from '../../depot/install/layout.ts';
import { renderPolkitRule } from '../../depot/install/system-files.ts';
import { DEPENDS, renderControl, renderPostinst, renderPostrm, renderPrerm } from '../../depot/install/debian/maintainer-scripts.ts';
import { runtimeClosure, type Lockfile } from '../../depot/install/debian/runtime-modules.ts';

// The install's generated files, checked without installing anything: the polkit rule as polkit
// would run it, the maintainer scripts through the shell's parser, the control file, and which
// node_modules the package carries.

describe('polkit rule', () => {
  it("grants the depot's user exactly its containers' units", () => {
    const rules: Array<(action: unknown, subject: unknown) => string> = [];
    const polkit = { Result: { YES: 'yes', NO: 'no', NOT_HANDLED: 'not-handled' }, addRule: (f: (a: unknown, s: unknown) => string) => rules.push(f) };
    new Function('polkit', renderPolkitRule(DEFAULT_LAYOUT))(polkit);
    expect(rules).toHaveLength(1);
    const ask = (id: string, user: string, unit: string | undefined) => rules[0]!({ id, lookup: (k: string) => (k === 'unit' ? unit : undefined) }, { user });
    expect(ask('org.freedesktop.systemd1.manage-units', 'navigator', 'navigator-ctr@echo-1a2b3c:start0.service')).toBe('yes');
    expect(ask('org.freedesktop.systemd1.manage-units', 'navigator', 'navigator-ctr-once@echo-1a2b3c:health-12-3.service')).toBe('yes');
    expect(ask('org.freedesktop.systemd1.manage-units', 'navigator', 'ssh.service')).toBe('not-handled');
    expect(ask('org.freedesktop.systemd1.manage-units', 'navigator', 'navigator-depot.service')).toBe('not-handled');
    // StartTransientUnit (systemd-run) on systemd 252 names no unit: never granted.
    expect(ask('org.freedesktop.systemd1.manage-units', 'navigator', undefined)).toBe('not-handled');
    expect(ask('org.freedesktop.systemd1.manage-units', 'navigator', 'navigator-ctr@x.service; rm')).toBe('not-handled');
    expect(ask('org.freedesktop.systemd1.manage-units', 'someone', 'navigator-ctr@echo:start0.service')).toBe('not-handled');
    expect(ask('org.freedesktop.systemd1.manage-unit-files', 'navigator', 'navigator-ctr@echo:start0.service')).toBe('not-handled');
  });
});

describe('maintainer scripts', () => {
  it('parse as POSIX shell and purge exactly the layout', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'nav-scripts-'));
    try {
      for (const [name, text] of Object.entries({ postinst: renderPostinst(), prerm: renderPrerm(DEFAULT_LAYOUT), postrm: renderPostrm(DEFAULT_LAYOUT) })) {
        writeFileSync(join(dir, name), text);
        expect((await execa('sh', ['-n', join(dir, name)], { reject: false })).exitCode, name).toBe(0);
        expect(text.startsWith('#!/bin/sh\n')).toBe(true);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(renderPostinst()).toContain('/usr/lib/navigator/bin/node /usr/lib/navigator/bin/navigator.mjs depot install --packaged');
    expect(renderPostrm(DEFAULT_LAYOUT)).toContain(`rm -rf ${purgedPaths(DEFAULT_LAYOUT).join(' ')}`);
    expect(renderPostrm(DEFAULT_LAYOUT)).toContain('for u in navigator-recv navigator-svc navigator; do');
    // Every folder the install makes is under one that purge removes.
    for (const d of directories(DEFAULT_LAYOUT)) expect(purgedPaths(DEFAULT_LAYOUT).some((p) => d.path === p || d.path.startsWith(`${p}/`)), d.path).toBe(true);
  });

  it('the control file names the package, its version, size and dependencies', () => {
    const c = renderControl({ version: '1.2.3+lab1', installedKiB: 4242 });
    expect(c).toMatch(/^Package: navigator\nVersion: 1\.2\.3\+lab1\nArchitecture: amd64\n/);
    expect(c).toContain('Installed-Size: 4242\n');
    expect(c).toContain(`Depends: ${DEPENDS.join(', ')}\n`);
    // Continuation lines start with a space; an empty one is " .".
    for (const line of c.split('\n').slice(c.split('\n').findIndex((l) => l.startsWith('Description:')) + 1).filter(Boolean)) expect(line).toMatch(/^ \S/);
  });
});

describe('runtime node_modules', () => {
  const lock: Lockfile = {
    packages: {
      '': { dependencies: { a: '1', b: '1' } },
      'node_modules/a': { dependencies: { c: '1' }, optionalDependencies: { 'a-native-other-os': '1' } },
      'node_modules/a/node_modules/c': { dependencies: { d: '1' } },
      'node_modules/c': {},
      'node_modules/d': {},
      'node_modules/b': { dependencies: { missing: '1' } },
      'node_modules/a-native-other-os': {},
    },
  };

  it("follows Node's resolution (nested first, then up) and skips optional packages not installed here", () => {
    const present = (p: string) => p !== 'node_modules/a-native-other-os';
    expect(runtimeClosure(lock, ['a'], present)).toEqual(['node_modules/a', 'node_modules/a/node_modules/c', 'node_modules/d']);
  });

  it('names a required package that is not installed', () => {
    expect(() => runtimeClosure(lock, ['b'])).toThrow('package-lock.json: node_modules/b needs missing, which is not installed');
    expect(() => runtimeClosure(lock, ['nope'])).toThrow('package-lock.json: nope is not installed');
  });
});
