#!/usr/bin/env node
// Entry point: refuse old Node before anything else loads (libp2p's dependencies need 22),
// then load the TypeScript CLI through tsx so there is no build step.
const major = Number(process.versions.node.split('.')[0]);
if (major < 22) {
  process.stderr.write(
    `navigator: Node.js 22 or later is required, this is ${process.version}.\n` +
      `Run it through npm (npm start, npm run navigator -- ARGS), which uses the Node 22 pinned in ` +
      `node_modules/.bin, or install Node.js 22.\n`,
  );
  process.exit(1);
}
const { register } = await import('tsx/esm/api');
register();
const { main } = await import('../cli/main.ts');
await main(process.argv);
