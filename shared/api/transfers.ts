// GET /api/transfers on a shipping depot: the image transfers it makes (ship/transfers.ts
// TransferTracker), read by `navigator status` and the CLI's progress (cli/transfers-api.ts).

/** One image transfer (etaMs is left out of the JSON when unknown). */
export interface TransferInfo {
  /** Unique per transfer attempt. */
  key: string;
  imageId: string;
  imageName: string;
  /** "host:port" of the target depot's sshd. */
  target: string;
  /** 'full', 'delta' or 'resume' (decided by what the target already holds). */
  kind: 'full' | 'delta' | 'resume' | 'pending';
  state: 'preparing' | 'sending' | 'verifying' | 'done' | 'failed';
  startedAt: number;
  /** Bytes this transfer must send (after delta/resume). */
  bytesToSend: number;
  bytesSent: number;
  imageBytes: number;
  /** Bytes per second since sending started. */
  rateBps: number;
  /** Estimated milliseconds left, undefined before the rate is known. */
  etaMs: number | undefined;
  error?: string;
}

/** The body of GET /api/transfers: transfers in progress first, then recent ones, newest first. */
export interface TransfersResponse {
  transfers: TransferInfo[];
}
