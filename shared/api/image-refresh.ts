// POST /api/image-refresh and GET /api/image-refresh on the primary's depot (pilot/image-refresh.ts):
// a changed image of a service shipped to the depots holding the old version; read by
// `navigator image refresh`.

/** The answer of POST /api/image-refresh (inside `result`): the new version and where it goes. */
export interface ImageRefreshResponse {
  service: string;
  /** Content id of the imported folder. */
  image: string;
  /** The version the service runs (receivers build the new one from it by delta). */
  base: string;
  /** The folder is the version already running: nothing shipped. */
  unchanged: boolean;
  /** Depots (names) the new version is shipped to, in order. */
  targets: string[];
  /** Depots holding the old version that already hold the new one. */
  present: string[];
  skipped: Array<{ host: string; reason: string }>;
}

/** One receiving depot of a refresh. */
export interface ImageRefreshTarget {
  host: string;
  peerId: string;
  state: 'pending' | 'shipping' | 'done' | 'failed';
  attempts: number;
  /** 'delta' when the depot built it from the version it holds; 'resume' after a cut-off try; 'present' if it had it. */
  kind?: 'present' | 'full' | 'delta' | 'resume';
  bytesSent?: number;
  imageBytes?: number;
  durationMs?: number;
  error?: string;
}

/** A refresh as GET /api/image-refresh lists it (newest first). */
export interface ImageRefreshView {
  service: string;
  image: string;
  base: string;
  startedAt: number;
  finishedAt?: number;
  importMs: number;
  state: 'shipping' | 'done' | 'failed';
  targets: ImageRefreshTarget[];
  present: string[];
  skipped: Array<{ host: string; reason: string }>;
}

/** The body of GET /api/image-refresh. */
export interface ImageRefreshStatusResponse {
  refreshes: ImageRefreshView[];
}
