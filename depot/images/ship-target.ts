import type { ImageManifest } from './manifest.ts';
import type { ImageStore } from './catalog.ts';
import type { PrepareResult } from './receive.ts';
import type { CommitResult } from './receive-commit.ts';

// The receiving depot's side of an image transfer as the sender (ship/) sees it: the sshd the
// file data is written through, and the store's prepare/commit/abort — over the control protocol
// in production (control-methods.ts controlShipTarget), or an ImageStore in this process.

/** The target depot's side of a transfer (control protocol in production, ImageStore in tests). */
export interface ShipTarget {
  /** sshd address of the target depot. */
  host: string;
  port: number;
  /**
   * The fingerprint the target's sshd must present (pinned from its heartbeats) and its name;
   * rejects with HOST_KEY_MISMATCH when there is none to trust. Absent: the sender's
   * ship.knownHostsFile decides.
   */
  hostKey?: () => Promise<{ fingerprint: string; depot: string }>;
  prepare(manifest: ImageManifest): Promise<PrepareResult>;
  commit(id: string): Promise<CommitResult>;
  abort(id: string): Promise<void>;
}

/** A ShipTarget that calls an ImageStore in this process (tests, or a depot shipping to itself). */
export function localShipTarget(store: ImageStore, host: string, port: number): ShipTarget {
  return {
    host,
    port,
    prepare: (m) => store.prepareReceive(m),
    commit: (id) => store.commitStaged(id),
    abort: (id) => store.abortStaged(id),
  };
}
