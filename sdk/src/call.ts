/** Options of one request. */
export interface CallOptions {
  /** Rejects with a `DspeakTimeoutError` after this many milliseconds (default: the client's `requestTimeoutMs`). */
  timeoutMs?: number;
  /** Aborting rejects the call (the server may still have done the work). */
  signal?: AbortSignal;
}
