// The lab's "small real service": a TCP server that answers every connection with its host's
// name and closes. Run inside a workstation namespace; listening on 0.0.0.0 means it answers on
// the service address exactly when that host holds it.
//   node --import tsx lab/echo-service.ts --name w1 --port 7000
//   ECHO_NAME=w1 node lab/echo-service.ts --port 7000   (Node's own type stripping)
//   node lab/echo-service.ts --port 7000                (answers with the host name)
import { createServer } from 'node:net';
import { hostname } from 'node:os';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    name: { type: 'string' },
    port: { type: 'string', default: '7000' },
    host: { type: 'string', default: '0.0.0.0' },
  },
});
// Inside a service container the name comes from the depot's environment (ECHO_NAME), since
// every copy runs the same image; where the depot passes no environment (an installed package),
// from the host name.
values.name ??= process.env.ECHO_NAME ?? hostname();
if (!values.name) {
  process.stderr.write('echo-service: --name (or ECHO_NAME) is required\n');
  process.exit(2);
}
const port = Number(values.port);
if (!Number.isInteger(port) || port < 1 || port > 65535) {
  process.stderr.write(`echo-service: --port ${values.port} is not a TCP port\n`);
  process.exit(2);
}
const reply = `${values.name}\n`;
const server = createServer((sock) => {
  sock.on('error', () => sock.destroy());
  sock.end(reply);
});
server.on('error', (err) => {
  process.stderr.write(`echo-service: ${err.message}\n`);
  process.exit(1);
});
server.listen({ port, host: values.host, backlog: 1024 }, () => {
  process.stdout.write(`${JSON.stringify({ event: 'listening', name: values.name, port })}\n`);
});
const stop = (): void => {
  server.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
