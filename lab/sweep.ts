// Removes namespaces, processes and temp dirs of lab runs whose owner process is gone:
//   node --import tsx lab/sweep.ts
// (Lab.create() does this on its own; this is for after an interrupted benchmark.)
import { sweepLabs } from './lab-registry.ts';

const removed = await sweepLabs();
console.log(removed.length ? `removed ${removed.join(' ')}` : 'nothing left over');
