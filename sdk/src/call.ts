/**
 * The part of `AbortSignal` a call uses. The browser's and Node's `AbortSignal` both fit;
 * declared here so that the signaling client needs neither DOM nor Node types.
 */
export interface AbortSignalLike {
  readonly aborted: boolean;
  readonly reason?: unknown;
  addEventListener(type: "abort", listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: "abort", listener: () => void): void;
}

/** Options of one request. */
export interface CallOptions {
  /** Rejects with a `DspeakTimeoutError` after this many milliseconds (default: the client's `requestTimeoutMs`). */
  timeoutMs?: number | undefined;
  /** Aborting rejects the call (the server may still have done the work). */
  signal?: AbortSignalLike | undefined;
}
