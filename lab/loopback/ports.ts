import { createServer } from 'node:net';

// A free TCP port for a server a test starts. Ports come from 20000-32767, below the kernel's
// ephemeral range (32768-60999), so a port handed out here cannot be taken meanwhile by some
// other test's outgoing connection or `listen(0)`; tests running in parallel pick at random
// and the bind check skips ports in use.
export async function freePort(host = '127.0.0.1'): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_768);
    const ok = await new Promise<boolean>((resolve) => {
      const srv = createServer();
      srv.once('error', () => resolve(false));
      srv.listen(port, host, () => srv.close(() => resolve(true)));
    });
    if (ok) return port;
  }
  throw new Error('no free TCP port found in 20000-32767');
}
