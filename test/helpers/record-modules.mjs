// Loaded with `node --import` into a process under test: appends the URL of every module the
// process loads to the file named by NAVIGATOR_TEST_MODULES_FILE (what an idle depot holds).
import { appendFileSync } from 'node:fs';
import { registerHooks } from 'node:module';

const out = process.env.NAVIGATOR_TEST_MODULES_FILE;
if (out) {
  const seen = new Set();
  registerHooks({
    load(url, context, nextLoad) {
      if (!seen.has(url)) {
        seen.add(url);
        appendFileSync(out, `${url}\n`);
      }
      return nextLoad(url, context);
    },
  });
}
