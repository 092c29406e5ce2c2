#!/usr/bin/env node
// Entry point: refuse old Node before anything else loads (libp2p's dependencies need 22), then
// run the CLI from the bundled build of the current sources (bin/build.mjs: built on first use
// after a change, ~1 s). NAVIGATOR_BUNDLE=0, or a checkout where the build cannot be written,
// runs the TypeScript sources through tsx instead (TypeScript lines in stack traces, ~15 MB more
// per depot).
//
// Why tsx and not Node 22's own --experimental-transform-types for the sources: Node's
// transformer is a WebAssembly build of swc whose memory grows with what it compiled and never
// shrinks; a depot run through it held ~60 MB more RSS than through tsx.
import { createRequire } from 'node:module';

const major = Number(process.versions.node.split('.')[0]);
if (major < 22) {
  process.stderr.write(
    `navigator: Node.js 22 or later is required, this is ${process.version}.\n` +
      `Run it through npm (npm start, npm run navigator -- ARGS), which uses the Node 22 pinned in ` +
      `node_modules/.bin, or install Node.js 22.\n`,
  );
  process.exit(1);
}

let main;
if (process.env.NAVIGATOR_BUNDLE !== '0') {
  const { ensureBuild } = await import('./build.mjs');
  const build = await ensureBuild();
  if (build.main) ({ main } = await import(build.main));
  else {
    process.stderr.write(
      `navigator: running from the TypeScript sources (slower start, more memory): the bundled build could not be made: ${build.error}\n` +
        `  make it as the owner of this checkout with \`npm run build\` (or \`navigator depot install\`); NAVIGATOR_BUNDLE=0 silences this.\n`,
    );
  }
}
if (main) {
  await main(process.argv);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  ({ main } = await import('../cli/main.ts'));
  await main(process.argv);
  // The command has started (a depot runs on from here). tsx compiles through an esbuild child
  // process that would otherwise stay for the life of the process (~12 MB, woken by its pings);
  // a later import of a TypeScript module starts it again.
  try {
    await createRequire(import.meta.resolve('tsx/esm/api'))('esbuild').stop();
  } catch {
    // another esbuild layout: nothing to stop
  }
}
