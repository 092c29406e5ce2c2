import type { MetricsRegister } from '@chainsafe/libp2p-gossipsub/metrics';

// Gossipsub reports its internals through a MetricsRegister. We do not want its ~100 series on
// /metrics, only two facts it alone knows: bytes on the wire, and messages it rejected before
// the application saw them (unsigned or badly signed ones under StrictSign). This register
// keeps those and makes every other metric a no-op.

type Labels = Record<string, string | number>;

export interface GossipWireStats {
  rpcSentBytes: number;
  rpcRecvBytes: number;
}

export class GossipMetricsRegister implements MetricsRegister {
  readonly wire: GossipWireStats = { rpcSentBytes: 0, rpcRecvBytes: 0 };

  /** Called for each message gossipsub rejected during validation (error e.g. invalid_signature). */
  constructor(private readonly onInvalid: (error: string) => void) {}

  gauge(config: { name: string }): any {
    const wire = this.wire;
    switch (config.name) {
      case 'gossipsub_rpc_sent_bytes_total':
        return counterInto((v) => (wire.rpcSentBytes += v));
      case 'gossipsub_rpc_recv_bytes_total':
        return counterInto((v) => (wire.rpcRecvBytes += v));
      case 'gossipsub_msg_received_invalid_total':
        return {
          inc: (labels: Labels, v = 1) => {
            for (let i = 0; i < v; i++) this.onInvalid(String(labels?.error ?? 'unknown'));
          },
          set: noop,
          addCollect: noop,
        };
      default:
        return { inc: noop, set: noop, addCollect: noop };
    }
  }

  histogram(): any {
    return { startTimer: () => noop, observe: noop, reset: noop };
  }

  avgMinMax(): any {
    return { set: noop };
  }
}

function counterInto(add: (v: number) => void) {
  return {
    inc: (a?: number | Labels, b?: number) => add(typeof a === 'number' ? a : (b ?? 1)),
    set: noop,
    addCollect: noop,
  };
}

function noop(): void {}
