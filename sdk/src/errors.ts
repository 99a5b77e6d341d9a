import { ERROR_CODE_INFO, type ErrorCodeName, type ErrorCodeValue } from "./generated/api.js";
import type { JsonRpcError } from "./generated/types.js";

/**
 * The server answered a request with a JSON-RPC error. `code` is stable (see `ErrorCode`);
 * `message` is for humans and may change.
 *
 * ```ts
 * try { await client.join({ room, displayName }); }
 * catch (e) { if (e instanceof DspeakError && e.code === ErrorCode.roomFull) { … } }
 * ```
 */
export class DspeakError extends Error {
  /**
   * The JSON-RPC error code: one of `ErrorCode` (so comparisons autocomplete and typos
   * fail to compile), or another number from a newer server.
   */
  readonly code: ErrorCodeValue | (number & {});
  /** The documented name of `code` (`"roomFull"`), or `undefined` for an undocumented code. */
  readonly codeName: ErrorCodeName | undefined;
  /** The method that failed (`undefined` for errors answered with `id: null`). */
  readonly method: string | undefined;
  /** The error object's `data`, if any. */
  readonly data: unknown;

  constructor(error: JsonRpcError | { code: number; message: string; data?: unknown }, method?: string) {
    super(error.message);
    this.name = "DspeakError";
    this.code = error.code;
    this.codeName = ERROR_CODE_INFO[error.code]?.name;
    this.method = method;
    this.data = error.data;
  }
}

/** A request got no answer within its timeout. The server may still process it. */
export class DspeakTimeoutError extends Error {
  /** The method that timed out. */
  readonly method: string;

  constructor(method: string, timeoutMs: number) {
    super(`${method}: no answer within ${timeoutMs} ms`);
    this.name = "DspeakTimeoutError";
    this.method = method;
  }
}

/**
 * The connection was lost or closed before the request was answered, or the client is
 * not connected. The request is never sent again; after a reconnect, join again.
 */
export class DspeakConnectionError extends Error {
  /** The method that failed, if the error belongs to a request. */
  readonly method: string | undefined;

  constructor(message: string, method?: string) {
    super(method ? `${method}: ${message}` : message);
    this.name = "DspeakConnectionError";
    this.method = method;
  }
}
