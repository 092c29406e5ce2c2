import { request } from 'node:http';

// A small HTTP JSON client for the depots' API. It can pick its source address, because the
// depots serve mutating endpoints (bootstrap) only to their admin host, which is this process's
// address on the demo LAN.

export interface ApiRequest {
  method?: 'GET' | 'POST';
  body?: unknown;
  token?: string;
  localAddress?: string;
  timeoutMs?: number;
}

export class ApiError extends Error {
  constructor(message: string, readonly status: number | undefined) {
    super(message);
  }
}

export function httpJson<T>(url: string, opts: ApiRequest = {}): Promise<T> {
  return new Promise((resolve, reject) => {
    const body = opts.body === undefined ? undefined : JSON.stringify(opts.body);
    const req = request(
      url,
      {
        method: opts.method ?? 'GET',
        headers: {
          accept: 'application/json',
          ...(body !== undefined ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } : {}),
          ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}),
        },
        ...(opts.localAddress ? { localAddress: opts.localAddress } : {}),
        timeout: opts.timeoutMs ?? 3000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          if ((res.statusCode ?? 0) >= 400) {
            let msg = text;
            try {
              msg = (JSON.parse(text) as { error?: string }).error ?? text;
            } catch {
              // not JSON
            }
            reject(new ApiError(`${opts.method ?? 'GET'} ${url}: HTTP ${res.statusCode}: ${msg}`, res.statusCode));
            return;
          }
          try {
            resolve(JSON.parse(text) as T);
          } catch {
            reject(new ApiError(`${url}: answer is not JSON`, res.statusCode));
          }
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new ApiError(`${url}: no answer within ${opts.timeoutMs ?? 3000} ms`, undefined)));
    req.on('error', reject);
    req.end(body);
  });
}
