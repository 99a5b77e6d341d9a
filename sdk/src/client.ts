import type { CallOptions } from "./call.js";
import { DspeakConnectionError, DspeakError, DspeakTimeoutError } from "./errors.js";
import { ErrorCode, EVENT_TYPES, GeneratedMethods, SUBSCRIPTION, type MethodName, type Methods } from "./generated/api.js";
import type {
  Event,
  JoinParams,
  JoinResult,
  ResumeResult,
  SessionEndReason,
  WelcomeEvent,
} from "./generated/types.js";

/** The `type` of an event. */
export type EventType = Event["type"];
/** The event with this `type`. */
export type EventOf<T extends EventType> = Extract<Event, { type: T }>;

/** What `on("disconnected")` receives. */
export interface DisconnectedInfo {
  /** WebSocket close code (1006 when the connection dropped). */
  code: number;
  /** WebSocket close reason, often empty. */
  reason: string;
  /** Whether the client will try to reconnect (the `reconnect` option). */
  willReconnect: boolean;
}

/** What `on("reconnected")` receives: the welcome of the new session. */
export interface ReconnectedInfo {
  /** The new session's id. The old session, its room membership and media are gone. */
  sessionId: string;
  /** The new session's `welcome` event. */
  welcome: WelcomeEvent;
}

/** What `on("reconnecting")` receives: an attempt to get the session back is about to start. */
export interface ReconnectingInfo {
  /** 1 for the first attempt after the connection was lost. */
  attempt: number;
  /**
   * `true`: the attempt resumes the same session (`resume`); `false`: it opens a new
   * session (and joins the room again, if the client was in one).
   */
  resuming: boolean;
}

/**
 * What `on("resumed")` receives: the same session is back on a new connection. Its
 * room, peer id, transports, producers and consumers never went away; the events sent
 * meanwhile were delivered (in order) before this.
 */
export interface ResumedInfo {
  /** The session's id (unchanged). */
  sessionId: string;
  /** The peer id (unchanged). */
  peerId: string;
  /** How many missed events were replayed. */
  replayed: number;
  /** The `welcome` of the new connection. */
  welcome: WelcomeEvent;
}

/**
 * What `on("rejoined")` receives: resuming failed (the grace period passed, or missed
 * events were no longer buffered), so the client opened a new session and joined the
 * same room again. Everything media-related of the old session is gone: create new
 * transports (`joinVoiceRoom` rebuilds its own).
 */
export interface RejoinedInfo {
  /** The new session's `welcome`. */
  welcome: WelcomeEvent;
  /** The new `join` result. */
  joined: JoinResult;
  /** Why resuming was not possible. */
  error: Error;
}

/**
 * What `on("sessionEnded")` receives: the server ended this session's event stream and
 * took it out of its room. The connection stays open; the client subscribes again by
 * itself (a new `welcome` follows) and may join again.
 */
export interface SessionEndedInfo {
  /**
   * Why: `replaced` (the same identity joined from elsewhere), `removed` (the app's
   * backend removed the peer), `roomClosed` (the backend closed the room), `evicted`
   * (events were not read fast enough).
   */
  reason: SessionEndReason;
  /** The error the stream ended with (its message is for humans). */
  error: DspeakError;
}

/**
 * What `on("redirected")` receives: in a cluster, `join` was answered with `wrongNode`,
 * so the client moved to the node that hosts the room (a new session there) and joins
 * again.
 */
export interface RedirectedInfo {
  /** The URL of the node the client moved to (`wrongNode`'s `data.url`). */
  url: string;
  /** The new session's `welcome` event. */
  welcome: WelcomeEvent;
}

/** How many `wrongNode` answers one `join` follows before it gives up. */
export const MAX_JOIN_REDIRECTS = 3;

/** Connection lifecycle notifications, next to the server's events. */
export interface LifecycleEvents {
  /** The server ended the session's membership and event stream (see `SessionEndedInfo`). */
  sessionEnded: SessionEndedInfo;
  /** The connection was lost. Pending calls have been rejected with `DspeakConnectionError`. */
  disconnected: DisconnectedInfo;
  /** A new connection and session are up (with `reconnect`), and the client was in no room. */
  reconnected: ReconnectedInfo;
  /** An attempt to get the session back starts (with `reconnect`). */
  reconnecting: ReconnectingInfo;
  /** The same session is back (with `reconnect`, after `resume`). */
  resumed: ResumedInfo;
  /** Resuming failed; a new session joined the same room (with `reconnect`). */
  rejoined: RejoinedInfo;
  /** The client is closed for good (`close()`, or reconnecting gave up). */
  closed: { reason: string };
  /** `join` moved the client to the node that hosts the room (cluster mode): a new session. */
  redirected: RedirectedInfo;
  /** A message that belongs to no request: an error answered with `id: null`, or unreadable JSON. */
  error: { error: Error };
}

/** Every name `on()` accepts, with what its handlers receive. */
export type ClientEventMap = { [T in EventType]: EventOf<T> } & LifecycleEvents;

/** The part of the WebSocket API the client uses (browser `WebSocket` and `ws` both have it). */
export interface WebSocketLike {
  readonly readyState: number;
  // `any`: browser and `ws` event types differ; the client reads only `data`, `code`, `reason`.
  /* eslint-disable @typescript-eslint/no-explicit-any */
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
  /* eslint-enable @typescript-eslint/no-explicit-any */
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** A WebSocket class: the browser's global `WebSocket`, or `WebSocket` from the `ws` package. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** Automatic reconnection with exponential backoff. */
export interface ReconnectOptions {
  /** First delay before reconnecting (default 250 ms); doubles after each failed attempt. */
  minDelayMs?: number | undefined;
  /** Longest delay between attempts (default 5000 ms). */
  maxDelayMs?: number | undefined;
  /** Attempts before giving up and closing (default: unlimited). */
  maxAttempts?: number | undefined;
  /**
   * How long after losing the connection the client tries to resume its session before
   * it joins afresh (default 20 000 ms: the server's default `--resume-grace`).
   */
  resumeWithinMs?: number | undefined;
}

/** One message on the wire, for logging or validation (`trace` option). */
export type WireTrace =
  | { direction: "send"; message: unknown }
  | { direction: "receive"; message: unknown; method?: string | undefined };

/** Options of a `DspeakClient`. */
export interface DspeakClientOptions {
  /** Server URL, e.g. `wss://voice.example.com` or `ws://127.0.0.1:8080`. */
  url: string;
  /** WebSocket class; default: the global `WebSocket` (browsers, Node 22+). On Node 20 pass `WebSocket` from `ws`. */
  WebSocket?: WebSocketConstructor | undefined;
  /** Default timeout of each request (default 10 000 ms). */
  requestTimeoutMs?: number | undefined;
  /** Timeout of opening the connection and receiving `welcome` (default 10 000 ms). */
  connectTimeoutMs?: number | undefined;
  /**
   * Reconnect after the connection is lost (default: off). In a room, the client first
   * resumes the same session (`resume`, with backoff, within `resumeWithinMs`): the
   * room, media and every event sent meanwhile survive (`reconnecting`, then
   * `resumed`). If that fails it opens a new session and joins the same room again
   * (`rejoined`). Outside a room it opens a new session (`reconnected`). Requests that
   * were pending when the connection dropped are rejected, never replayed.
   */
  reconnect?: boolean | ReconnectOptions | undefined;
  /** Called with every message sent and received. */
  trace?: ((entry: WireTrace) => void) | undefined;
  /**
   * How many of the latest events the client remembers for `waitFor(type, { since })`
   * (default 256).
   */
  eventHistory?: number | undefined;
}

/**
 * A position in the session's event history, from `client.mark()`: what
 * `waitFor(type, { since })` looks back to.
 */
export type EventMark = number;

/** Options of `waitFor`. */
export interface WaitForOptions<T extends EventType> {
  /** Only an event for which this returns `true`. */
  filter?: ((event: EventOf<T>) => boolean) | undefined;
  /** Rejects with a `DspeakTimeoutError` after this long (default: the request timeout). */
  timeoutMs?: number | undefined;
  /**
   * Also accept an event that arrived after this mark (`client.mark()`) but before the
   * call, from the client's recent history (the last `eventHistory` events). Take the
   * mark before the action that causes the event, then wait:
   *
   * ```ts
   * const since = ann.mark();
   * await bob.join({ room: "r1", displayName: "Bob" });
   * const joined = await ann.waitFor("peerJoined", { since });
   * ```
   */
  since?: EventMark | undefined;
}

/** The client's connection state. */
export type ClientState = "idle" | "connecting" | "open" | "reconnecting" | "closed";

interface Pending {
  method: string;
  resolve: (result: unknown) => void;
  reject: (error: Error) => void;
  cleanup: () => void;
}

type Handler = (event: never) => void;

const OPEN = 1;
const knownEventTypes: ReadonlySet<string> = new Set(EVENT_TYPES);

/**
 * A typed dspeak client: one async function per API method (`client.join({ room,
 * displayName })`), the session's events (`client.on("peerJoined", …)`,
 * `for await (const e of client.events())`), typed errors (`DspeakError`).
 *
 * `connect()` opens the WebSocket and subscribes to the event stream before anything
 * else, so `welcome` is always the first event.
 */
export class DspeakClient extends GeneratedMethods {
  /** The URL the client is connected to: `options.url`, or the node `join` moved it to. */
  #url: string;

  readonly #options: DspeakClientOptions;
  readonly #WebSocket: WebSocketConstructor;
  #socket: WebSocketLike | undefined;
  #state: ClientState = "idle";
  #nextId = 1;
  readonly #pending = new Map<number, Pending>();
  readonly #handlers = new Map<string, Set<Handler>>();
  readonly #iterators = new Set<EventQueue>();
  #welcome: WelcomeEvent | undefined;
  #welcomeWaiter: ((welcome: WelcomeEvent) => void) | undefined;
  #reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  #attempts = 0;
  /** Events received so far (over every session of this client): the next event's mark. */
  #received = 0;
  /** The latest events, oldest first, each with its mark. */
  readonly #history: Array<{ mark: EventMark; event: Event }> = [];
  /** The room this session is in, as far as the client knows. */
  #joined: JoinResult | undefined;
  /** The params of the last successful `join` (to join again after a failed resume). */
  #joinParams: JoinParams | undefined;
  /** The session's current resume token (from `welcome` or `resume`). */
  #resumeToken: string | undefined;
  /** The `seq` of the last event of the session received. */
  #lastSeq = 0;
  /** Until when (ms since the epoch) reconnecting resumes instead of joining afresh. */
  #resumeUntil = 0;

  /** Creates a client; call `connect()` next (or use `DspeakClient.connect(options)`). */
  constructor(options: DspeakClientOptions) {
    super();
    this.#url = options.url;
    this.#options = options;
    const WebSocketClass = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WebSocketClass) {
      throw new TypeError("no global WebSocket: pass `WebSocket` from the `ws` package in the options");
    }
    this.#WebSocket = WebSocketClass;
  }

  /** Creates a client and connects it. */
  static async connect(options: DspeakClientOptions): Promise<DspeakClient> {
    const client = new DspeakClient(options);
    await client.connect();
    return client;
  }

  /**
   * The server URL: `options.url`, or in a cluster the node `join` moved the client to
   * (`wrongNode`). Reconnecting tries it first, then `options.url` again.
   */
  get url(): string {
    return this.#url;
  }

  /** The connection state. */
  get state(): ClientState {
    return this.#state;
  }

  /** The current session's `welcome` (session id, server version), once connected. */
  get welcome(): WelcomeEvent | undefined {
    return this.#welcome;
  }

  /** The current session's id, once connected. */
  get sessionId(): string | undefined {
    return this.#welcome?.sessionId;
  }

  /**
   * The `join` result of the room this session is in; `undefined` before joining, after
   * `leave()`, when the connection was lost and when the server ended the session
   * (`sessionEnded`).
   */
  get joined(): JoinResult | undefined {
    return this.#joined;
  }

  /**
   * Opens the connection, subscribes to the session's events and resolves with the
   * `welcome` event. Handlers registered before see `welcome` too.
   */
  async connect(): Promise<WelcomeEvent> {
    if (this.#state === "open" && this.#welcome) return this.#welcome;
    if (this.#state !== "idle") throw new DspeakConnectionError(`cannot connect a client that is ${this.#state}`);
    this.#state = "connecting";
    try {
      return await this.#open();
    } catch (error) {
      this.#shutdown(error instanceof Error ? error.message : String(error));
      throw error;
    }
  }

  /**
   * Closes the connection for good: pending calls reject, event iterators end, no
   * reconnect. The server then leaves the session's room and releases its media.
   */
  async close(): Promise<void> {
    if (this.#state === "closed") return;
    if (this.#joined && this.#state === "open") {
      // Leave explicitly: a connection that just closes keeps the session waiting for
      // a resume (the server's grace period).
      await this.leave({ timeoutMs: 1000 }).catch(() => undefined);
    }
    const socket = this.#socket;
    if (socket && socket.readyState <= OPEN) {
      // Wait (briefly) for the close handshake, so the server has seen it.
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 1000);
        this.#shutdown("closed by the client", () => {
          clearTimeout(timer);
          resolve();
        });
      });
    } else {
      this.#shutdown("closed by the client");
    }
  }

  /** Sends one request (prefer the named methods, e.g. `client.join(…)`). */
  override call<M extends MethodName>(
    method: M,
    params: Methods[M]["params"],
    options?: CallOptions,
  ): Promise<Methods[M]["result"]> {
    if (method === "join") {
      return this.#join(params, options).then((result) => {
        this.#joined = result;
        this.#joinParams = params as JoinParams;
        return result as Methods[M]["result"];
      });
    }
    const answer = this.#request(method, params, options) as Promise<Methods[M]["result"]>;
    if (method === "leave") {
      return answer.then((result) => {
        this.#joined = undefined;
        this.#joinParams = undefined;
        return result;
      });
    }
    return answer;
  }

  /**
   * Registers a handler for one event type (`"peerJoined"`, …) or a lifecycle event
   * (`"disconnected"`, `"reconnected"`, `"closed"`, `"error"`). Returns a function that
   * removes it.
   */
  on<K extends keyof ClientEventMap>(type: K, handler: (event: ClientEventMap[K]) => void): () => void {
    let set = this.#handlers.get(type);
    if (!set) this.#handlers.set(type, (set = new Set()));
    set.add(handler as Handler);
    return () => this.off(type, handler);
  }

  /** Removes a handler added with `on`. */
  off<K extends keyof ClientEventMap>(type: K, handler: (event: ClientEventMap[K]) => void): void {
    this.#handlers.get(type)?.delete(handler as Handler);
  }

  /**
   * The current position in the session's events: every event received from now on comes
   * after this mark. Pass it to `waitFor(type, { since })`.
   */
  mark(): EventMark {
    return this.#received;
  }

  /**
   * Resolves with the next event of `type` (that passes `filter`), or rejects after
   * `timeoutMs` (default: the request timeout) or when the client closes. With `since`
   * (a `mark()` taken earlier), an event that already arrived after the mark counts too,
   * so an event that raced ahead of the call is not missed.
   */
  waitFor<T extends EventType>(type: T, options: WaitForOptions<T> = {}): Promise<EventOf<T>> {
    const timeoutMs = options.timeoutMs ?? this.#options.requestTimeoutMs ?? 10_000;
    const matches = (event: Event): event is EventOf<T> =>
      event.type === type && (!options.filter || options.filter(event as EventOf<T>));
    if (options.since !== undefined) {
      const since = options.since;
      const seen = this.#history.find((entry) => entry.mark >= since && matches(entry.event));
      if (seen) return Promise.resolve(seen.event as EventOf<T>);
    }
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        offEvent();
        offClosed();
      };
      const timer = setTimeout(() => {
        done();
        reject(new DspeakTimeoutError(`waiting for ${type}`, timeoutMs));
      }, timeoutMs);
      const offEvent = this.on(type, ((event: EventOf<T>) => {
        if (!matches(event)) return;
        done();
        resolve(event);
      }) as unknown as (event: ClientEventMap[T]) => void);
      const offClosed = this.on("closed", ({ reason }) => {
        done();
        reject(new DspeakConnectionError(`client closed while waiting for ${type}: ${reason}`));
      });
    });
  }

  /**
   * The session's events from now on, as an async iterator. It survives reconnects (the
   * new session's `welcome` comes through it) and ends when the client closes or the
   * loop breaks. Only event types this SDK knows are delivered.
   */
  events(): AsyncIterableIterator<Event> {
    const queue = new EventQueue(() => this.#iterators.delete(queue));
    if (this.#state === "closed") queue.end();
    else this.#iterators.add(queue);
    return queue;
  }

  /**
   * `join`, following `wrongNode` (cluster mode): the client moves to the node that
   * hosts the room (`data.url`: a new connection and session) and joins there, at most
   * `MAX_JOIN_REDIRECTS` times.
   */
  async #join(params: unknown, options: CallOptions | undefined): Promise<JoinResult> {
    for (let hops = 0; ; hops++) {
      try {
        return (await this.#request("join", params, options)) as JoinResult;
      } catch (error) {
        const url = wrongNodeUrl(error);
        if (url === undefined || hops >= MAX_JOIN_REDIRECTS) throw error;
        await this.#moveTo(url);
      }
    }
  }

  /** Closes the current connection (no reconnect) and opens one to `url`. */
  async #moveTo(url: string): Promise<void> {
    const old = this.#socket;
    if (old) {
      old.onmessage = old.onerror = old.onclose = null;
      try {
        old.close(1000, "redirected to the room's node");
      } catch {
        // Already closing.
      }
    }
    this.#rejectPending(`moved to ${url}`);
    this.#welcome = undefined;
    this.#joined = undefined;
    this.#url = url;
    this.#state = "connecting";
    try {
      const welcome = await this.#open();
      this.#emit("redirected", { url, welcome });
    } catch (error) {
      // The room's node cannot be reached (it may have just died): the client goes back
      // to its first URL, so that a later `join` can place the room again.
      this.#url = this.#options.url;
      try {
        await this.#open();
      } catch (again) {
        this.#shutdown(again instanceof Error ? again.message : String(again));
      }
      throw error;
    }
  }

  // --- connection -------------------------------------------------------------------

  /**
   * Opens a socket, runs `first` on it (`resume`), subscribes, and resolves with the
   * welcome.
   */
  #open(first?: (socket: WebSocketLike) => Promise<void>): Promise<WelcomeEvent> {
    const timeoutMs = this.#options.connectTimeoutMs ?? 10_000;
    return new Promise<WelcomeEvent>((resolve, reject) => {
      let settled = false;
      const fail = (error: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.#welcomeWaiter = undefined;
        socket.onopen = socket.onclose = socket.onerror = socket.onmessage = null;
        try {
          socket.close();
        } catch {
          // Closing a socket that never opened may throw; it is gone either way.
        }
        reject(error);
      };
      const timer = setTimeout(
        () => fail(new DspeakConnectionError(`no welcome from ${this.url} within ${timeoutMs} ms`)),
        timeoutMs,
      );
      let socket: WebSocketLike;
      try {
        socket = new this.#WebSocket(this.url);
      } catch (error) {
        clearTimeout(timer);
        reject(new DspeakConnectionError(`cannot open ${this.url}: ${String(error)}`));
        return;
      }
      this.#socket = socket;
      socket.onerror = () => {
        // `onclose` follows and carries the details.
      };
      socket.onclose = (event: { code?: number; reason?: string }) =>
        fail(new DspeakConnectionError(`connection to ${this.url} closed (${event.code ?? 1006}) before welcome`));
      socket.onmessage = (event: { data: unknown }) => this.#onMessage(event.data);
      socket.onopen = () => {
        this.#welcomeWaiter = (welcome) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          this.#welcomeWaiter = undefined;
          this.#welcome = welcome;
          this.#state = "open";
          socket.onclose = (event: { code?: number; reason?: string }) => this.#onClose(socket, event);
          resolve(welcome);
        };
        // Subscribe before anything else (but `first`): the stream starts with `welcome`.
        (first ? first(socket) : Promise.resolve())
          .then(() => this.#send(socket, SUBSCRIPTION.subscribe, {}, {}))
          .catch((error: unknown) => fail(error instanceof Error ? error : new Error(String(error))));
      };
    });
  }

  #onClose(socket: WebSocketLike, event: { code?: number; reason?: string }): void {
    if (socket !== this.#socket || this.#state === "closed") return;
    const code = event.code ?? 1006;
    const reason = event.reason ?? "";
    this.#rejectPending(`connection lost (${code}${reason ? `: ${reason}` : ""})`);
    const reconnect = this.#reconnectOptions();
    // A session in a room waits on the server for a while: resume it.
    const resumable = reconnect !== undefined && this.#joined !== undefined && this.#resumeToken !== undefined;
    this.#welcome = undefined;
    if (!resumable) this.#joined = undefined;
    this.#emit("disconnected", { code, reason, willReconnect: reconnect !== undefined });
    if (reconnect) {
      this.#state = "reconnecting";
      this.#attempts = 0;
      this.#resumeUntil = resumable ? Date.now() + reconnect.resumeWithinMs : 0;
      this.#scheduleReconnect(reconnect);
    } else {
      this.#shutdown(`connection lost (${code})`);
    }
  }

  #reconnectOptions(): { [K in keyof ReconnectOptions]-?: number } | undefined {
    const r = this.#options.reconnect;
    if (!r) return undefined;
    const o = r === true ? {} : r;
    return {
      minDelayMs: o.minDelayMs ?? 250,
      maxDelayMs: o.maxDelayMs ?? 5000,
      maxAttempts: o.maxAttempts ?? Number.POSITIVE_INFINITY,
      resumeWithinMs: o.resumeWithinMs ?? 20_000,
    };
  }

  #scheduleReconnect(options: { [K in keyof ReconnectOptions]-?: number }): void {
    if (this.#reconnectTimer !== undefined) return; // An attempt is already scheduled.
    if (this.#attempts >= options.maxAttempts) {
      this.#shutdown(`gave up reconnecting after ${this.#attempts} attempts`);
      return;
    }
    const resuming = Date.now() < this.#resumeUntil;
    // The first resume goes at once: the session is waiting.
    const delay = resuming && this.#attempts === 0 ? 0 : Math.min(options.maxDelayMs, options.minDelayMs * 2 ** this.#attempts);
    this.#attempts += 1;
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = undefined;
      if (this.#state !== "reconnecting") return;
      const resuming = Date.now() < this.#resumeUntil;
      this.#emit("reconnecting", { attempt: this.#attempts, resuming });
      const retry = () => {
        if (this.#state === "reconnecting") this.#scheduleReconnect(options);
      };
      if (resuming) {
        this.#resume().then(
          ({ result, welcome }) => {
            this.#attempts = 0;
            this.#resumeUntil = 0;
            this.#emit("resumed", {
              sessionId: result.sessionId,
              peerId: result.peerId,
              replayed: result.replayed,
              welcome,
            });
          },
          (error: unknown) => {
            if (error instanceof DspeakError && error.codeName === "resumeFailed") {
              // The session is gone (or missed too much): join afresh, now.
              this.#resumeUntil = 0;
              this.#lastResumeError = error;
              this.#attempts = 0;
            } else if (this.#attempts >= 2 && this.#url !== this.#options.url) {
              // The node `join` moved to stays unreachable (it may be gone): try the
              // first URL, where a failed resume leads to a fresh join.
              this.#url = this.#options.url;
            }
            retry();
          },
        );
        return;
      }
      this.#open().then(
        (welcome) => this.#afterFreshSession(welcome).then(() => (this.#attempts = 0), retry),
        () => {
          // A node `join` moved to may be gone: the next attempts go to the first URL.
          this.#url = this.#options.url;
          retry();
        },
      );
    }, delay);
  }

  /** The session of the last `welcome` (its `seq`s are counted in `#lastSeq`). */
  #welcomeSession: string | undefined;

  /** Why the last resume failed (for `rejoined`). */
  #lastResumeError: Error | undefined;

  /** Resolved once the event with this `seq` (the last replayed one) has been handled. */
  #seqWaiter: { seq: number; resolve: () => void } | undefined;

  /**
   * `resume` as the first call of a new connection, then the event stream; resolves once
   * the replayed events have been delivered.
   */
  async #resume(): Promise<{ result: ResumeResult; welcome: WelcomeEvent }> {
    let result: ResumeResult | undefined;
    const lastSeq = this.#lastSeq;
    const welcome = await this.#open(async (socket) => {
      result = (await this.#send(socket, "resume", { resumeToken: this.#resumeToken ?? "", lastSeq }, {})) as ResumeResult;
      this.#resumeToken = result.resumeToken;
    });
    // `#open` only resolves after `first` succeeded.
    const resumed = result as ResumeResult;
    // The replayed events follow `welcome`, numbered lastSeq + 1 … lastSeq + replayed.
    const last = lastSeq + resumed.replayed;
    if (this.#lastSeq < last) {
      const timeoutMs = this.#options.connectTimeoutMs ?? 10_000;
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          this.#seqWaiter = undefined;
          reject(new DspeakTimeoutError("resume (replayed events)", timeoutMs));
        }, timeoutMs);
        this.#seqWaiter = {
          seq: last,
          resolve: () => {
            clearTimeout(timer);
            this.#seqWaiter = undefined;
            resolve();
          },
        };
      });
    }
    return { result: resumed, welcome };
  }

  /** A new session is up after a lost connection: join the room again if the client was in one. */
  async #afterFreshSession(welcome: WelcomeEvent): Promise<void> {
    const params = this.#joined ? this.#joinParams : undefined;
    this.#joined = undefined;
    if (!params) {
      this.#emit("reconnected", { sessionId: welcome.sessionId, welcome });
      return;
    }
    let joined: JoinResult;
    try {
      joined = await this.join(params);
    } catch (error) {
      // The room cannot be joined again (e.g. the token expired): a new session, no room.
      this.#joinParams = undefined;
      this.#emit("error", { error: error instanceof Error ? error : new Error(String(error)) });
      this.#emit("reconnected", { sessionId: welcome.sessionId, welcome });
      return;
    }
    const error = this.#lastResumeError ?? new DspeakConnectionError("the session could not be resumed in time");
    this.#lastResumeError = undefined;
    this.#emit("rejoined", { welcome, joined, error });
  }

  /** Final state: nothing pending, no timers, iterators ended, `closed` emitted once. */
  #shutdown(reason: string, onSocketClosed?: () => void): void {
    if (this.#state === "closed") return;
    this.#state = "closed";
    clearTimeout(this.#reconnectTimer);
    this.#rejectPending(reason);
    const socket = this.#socket;
    if (socket) {
      socket.onmessage = socket.onerror = null;
      socket.onclose = onSocketClosed ?? null;
      if (socket.readyState <= OPEN) {
        try {
          socket.close(1000, "client closed");
        } catch {
          // Already closing.
        }
      }
    }
    for (const queue of this.#iterators) queue.end();
    this.#iterators.clear();
    this.#emit("closed", { reason });
  }

  #rejectPending(reason: string): void {
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) {
      p.cleanup();
      p.reject(new DspeakConnectionError(reason, p.method));
    }
  }

  // --- requests ---------------------------------------------------------------------

  #request(method: string, params: unknown, options: CallOptions = {}): Promise<unknown> {
    const socket = this.#socket;
    if (this.#state !== "open" || !socket || socket.readyState !== OPEN) {
      return Promise.reject(new DspeakConnectionError(`not connected (${this.#state})`, method));
    }
    return this.#send(socket, method, params, options);
  }

  #send(socket: WebSocketLike, method: string, params: unknown, options: CallOptions): Promise<unknown> {
    const id = this.#nextId++;
    const timeoutMs = options.timeoutMs ?? this.#options.requestTimeoutMs ?? 10_000;
    const message = { jsonrpc: "2.0", id, method, params: params ?? {} };
    return new Promise((resolve, reject) => {
      if (options.signal?.aborted) {
        reject(options.signal.reason ?? new Error("aborted"));
        return;
      }
      const onAbort = () => {
        this.#pending.delete(id);
        cleanup();
        reject(options.signal?.reason ?? new Error("aborted"));
      };
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        cleanup();
        reject(new DspeakTimeoutError(method, timeoutMs));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        options.signal?.removeEventListener("abort", onAbort);
      };
      options.signal?.addEventListener("abort", onAbort, { once: true });
      this.#pending.set(id, { method, resolve, reject, cleanup });
      try {
        this.#options.trace?.({ direction: "send", message });
        socket.send(JSON.stringify(message));
      } catch (error) {
        this.#pending.delete(id);
        cleanup();
        reject(new DspeakConnectionError(`send failed: ${String(error)}`, method));
      }
    });
  }

  // --- incoming ---------------------------------------------------------------------

  #onMessage(data: unknown): void {
    let message: Record<string, unknown>;
    try {
      const text = typeof data === "string" ? data : new TextDecoder().decode(data as ArrayBuffer);
      message = JSON.parse(text) as Record<string, unknown>;
    } catch (error) {
      this.#emit("error", { error: new Error(`unreadable message from the server: ${String(error)}`) });
      return;
    }
    if (typeof message.method === "string") {
      this.#options.trace?.({ direction: "receive", message });
      if (message.method === SUBSCRIPTION.notification) {
        const params = message.params as { result?: Event; error?: DspeakError } | undefined;
        if (params?.result) this.#onEvent(params.result);
        else if (params?.error) this.#onStreamEnd(new DspeakError(params.error));
      }
      return;
    }
    const id = typeof message.id === "number" ? message.id : undefined;
    const pending = id === undefined ? undefined : this.#pending.get(id);
    this.#options.trace?.({ direction: "receive", message, method: pending?.method });
    if (!pending || id === undefined) {
      if (message.error) {
        this.#emit("error", { error: new DspeakError(message.error as DspeakError) });
      }
      return;
    }
    this.#pending.delete(id);
    pending.cleanup();
    if (message.error) pending.reject(new DspeakError(message.error as DspeakError, pending.method));
    else pending.resolve(message.result);
  }

  /** The server ended the event stream: the session is out of its room. */
  #onStreamEnd(error: DspeakError): void {
    this.#joined = undefined;
    this.#emit("sessionEnded", { reason: sessionEndReason(error), error });
    // The session lives on: subscribe again so that a later join has its events.
    const socket = this.#socket;
    if (this.#state === "open" && socket) {
      this.#send(socket, SUBSCRIPTION.subscribe, {}, {}).catch((e: unknown) =>
        this.#emit("error", { error: e instanceof Error ? e : new Error(String(e)) }),
      );
    }
  }

  #onEvent(event: Event): void {
    if (event.type === "welcome") {
      // A new session starts counting from 1; a resumed one goes on.
      if (event.sessionId !== this.#welcomeSession) this.#lastSeq = 0;
      this.#welcomeSession = event.sessionId;
      this.#resumeToken = event.resumeToken;
    } else if (typeof event.seq === "number" && event.seq > this.#lastSeq) {
      // Counted even when this SDK does not know the type: the server must not replay it.
      this.#lastSeq = event.seq;
      if (this.#seqWaiter && this.#lastSeq >= this.#seqWaiter.seq) this.#seqWaiter.resolve();
    }
    if (!knownEventTypes.has(event.type)) return; // Newer server: ignore what we do not know.
    this.#history.push({ mark: this.#received++, event });
    if (this.#history.length > (this.#options.eventHistory ?? 256)) this.#history.shift();
    if (event.type === "welcome") this.#welcomeWaiter?.(event);
    for (const queue of this.#iterators) queue.push(event);
    this.#emit(event.type, event as never);
  }

  #emit<K extends keyof ClientEventMap>(type: K, event: ClientEventMap[K]): void {
    for (const handler of [...(this.#handlers.get(type) ?? [])]) {
      try {
        (handler as (event: ClientEventMap[K]) => void)(event);
      } catch (error) {
        // A throwing handler must not break the client or the other handlers.
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }
}

/** An unbounded queue of events read by one `for await` loop. */
class EventQueue implements AsyncIterableIterator<Event> {
  readonly #buffer: Event[] = [];
  #waiting: ((result: IteratorResult<Event>) => void) | undefined;
  #done = false;
  readonly #onDone: () => void;

  constructor(onDone: () => void) {
    this.#onDone = onDone;
  }

  push(event: Event): void {
    if (this.#done) return;
    const waiting = this.#waiting;
    if (waiting) {
      this.#waiting = undefined;
      waiting({ value: event, done: false });
    } else {
      this.#buffer.push(event);
    }
  }

  end(): void {
    if (this.#done) return;
    this.#done = true;
    this.#onDone();
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting?.({ value: undefined, done: true });
  }

  next(): Promise<IteratorResult<Event>> {
    const event = this.#buffer.shift();
    if (event) return Promise.resolve({ value: event, done: false });
    if (this.#done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => (this.#waiting = resolve));
  }

  return(): Promise<IteratorResult<Event>> {
    this.end();
    this.#buffer.length = 0;
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<Event> {
    return this;
  }
}

const sessionEndReasons: ReadonlySet<string> = new Set<SessionEndReason>(["replaced", "removed", "evicted", "roomClosed"]);

/** The reason in the error's `data`; from its code and message for older servers. */
function sessionEndReason(error: DspeakError): SessionEndReason {
  const reason = (error.data as { reason?: unknown } | undefined)?.reason;
  if (typeof reason === "string" && sessionEndReasons.has(reason)) return reason as SessionEndReason;
  if (error.message.startsWith("replaced:")) return "replaced";
  if (error.message.startsWith("removed:")) return "removed";
  return "evicted";
}

/** The `data.url` of a `wrongNode` error, or `undefined` for any other error. */
function wrongNodeUrl(error: unknown): string | undefined {
  if (!(error instanceof DspeakError) || error.code !== ErrorCode.wrongNode) return undefined;
  const url = (error.data as { url?: unknown } | undefined)?.url;
  return typeof url === "string" ? url : undefined;
}
